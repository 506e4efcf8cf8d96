// Wires the daemon connection to the sidebar, the status bar, the inline suggestions and the commands.
import * as vscode from "vscode";
import type { Middleware } from "vscode-languageclient/node";
import { DaemonConnection } from "./connection";
import { ExperimentPanel, incumbentOf, SHOW_EXPERIMENT_DIFF } from "./experimentPanel";
import { ExperimentDocuments } from "./experiments";
import { decisionNotice, parseBudget } from "./logic/format";
import { hunkAtLine } from "./logic/hunks";
import { type Filter, newFlags, SidebarModel } from "./logic/viewModel";
import { Commands, type ExperimentSummary, type IdeaQueue, ServerCommands, type Status } from "./protocol";
import { SidebarProvider, type WebviewMessage } from "./sidebar";
import { StatusBar } from "./statusBar";
import { SuggestionController } from "./suggestions";

const PAGE = 200;

/** The commands the sidebar's buttons run; anything else a webview message names is refused. */
const WEBVIEW_COMMANDS: ReadonlySet<string> = new Set([
  "overnight.connect", "overnight.startDaemon", "overnight.pause", "overnight.resume", "overnight.stopAfterCurrent",
  "overnight.redirect", Commands.acceptSuggestion, Commands.rejectSuggestion, Commands.showExperiment,
  "overnight.revealSuggestion", "overnight.showSuggestionDiff",
  "overnight.addIdea", "overnight.approveIdea", "overnight.vetoIdea", "overnight.moveIdeaToTop", "overnight.pinDirection",
  "overnight.closeDirection", "overnight.openDirection",
]);

/** The extension's own command for each server command the daemon's lenses carry: its richer flow
 * (a reason prompt for reject, the experiment in an editor tab) on top of the same requests. */
const clientCommand: Record<string, string> = {
  [ServerCommands.acceptSuggestion]: Commands.acceptSuggestion,
  [ServerCommands.rejectSuggestion]: Commands.rejectSuggestion,
  [ServerCommands.showExperiment]: Commands.showExperiment,
};

/** Maps the daemon's lens commands onto the extension's, and adds a "Show diff" lens after each Reject. */
export function withShowDiff(lenses: vscode.CodeLens[]): vscode.CodeLens[] {
  return lenses.flatMap((l) => {
    const mapped = l.command && clientCommand[l.command.command];
    if (l.command && mapped) l.command = { ...l.command, command: mapped };
    return l.command?.command === Commands.rejectSuggestion
      ? [l, new vscode.CodeLens(l.range, { title: "Show diff", command: "overnight.showSuggestionDiff", arguments: l.command.arguments })]
      : [l];
  });
}

export class Controller implements vscode.Disposable {
  readonly model = new SidebarModel();
  readonly conn: DaemonConnection;
  private readonly statusBar: StatusBar;
  private readonly sidebar: SidebarProvider;
  private readonly suggestions: SuggestionController;
  private readonly experiments: ExperimentDocuments;
  private readonly panel = new ExperimentPanel();
  private readonly disposables: vscode.Disposable[] = [];

  constructor(context: vscode.ExtensionContext, root: string, private readonly log: vscode.LogOutputChannel) {
    const annotationsOn = () => vscode.workspace.getConfiguration("overnight").get<boolean>("annotations.enabled", true);
    // Per-line metric annotations are the daemon's inlay hints and hovers; the setting gates them here.
    const middleware: Middleware = {
      // One annotation per line: a line with a pending suggestion shows the suggestion's, not also its history.
      provideInlayHints: async (doc, range, token, next) => {
        if (!annotationsOn()) return [];
        const hints = (await next(doc, range, token)) ?? [];
        const views = this.suggestions.views(doc);
        return hints.filter((h) => !hunkAtLine(views, h.position.line));
      },
      provideHover: (doc, pos, token, next) => (annotationsOn() ? next(doc, pos, token) : undefined),
      // The daemon's hunk lenses are Accept · Reject · evidence; "Show diff" is the client's own view.
      provideCodeLenses: async (doc, token, next) => withShowDiff((await next(doc, token)) ?? []),
    };
    this.conn = new DaemonConnection(root, log, middleware);
    this.statusBar = new StatusBar(this.model);
    this.sidebar = new SidebarProvider(context.extensionUri, this.model, (m) => void this.onWebview(m));
    this.suggestions = new SuggestionController(this.model, this.conn, log);
    this.experiments = new ExperimentDocuments(root);
    this.disposables.push(this.conn, this.statusBar, this.suggestions, this.experiments, this.panel,
      vscode.window.registerWebviewViewProvider(SidebarProvider.viewId, this.sidebar, { webviewOptions: { retainContextWhenHidden: true } }),
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (e.affectsConfiguration("overnight.annotations.enabled")) this.conn.refreshInlayHints();
        if (e.affectsConfiguration("overnight.suggestions.highlightRemoved")) this.suggestions.refresh();
      }),
      // Trusted now: the daemon may be started (restricted mode never starts it).
      vscode.workspace.onDidGrantWorkspaceTrust(() => this.conn.reconnect()),
    );
    this.listen();
    this.registerCommands(context);
  }

  start(): void {
    this.conn.start();
  }

  private changed(): void {
    this.sidebar.post();
    this.statusBar.update();
    void vscode.commands.executeCommand("setContext", "overnight.state", this.model.status?.state ?? "");
  }

  private listen(): void {
    const c = this.conn;
    c.onDidChangeState(({ state, message }) => {
      this.model.setConnection(state, message);
      if (state === "connected") void this.loadAll();
      if (state === "disconnected") this.statusBar.progress = undefined;
      this.changed();
    });
    c.on("overnight/loopStateChanged", (s) => {
      // What the loop flags for the user (a keep held for its holdout, a growing val-holdout gap) is a warning.
      for (const flag of newFlags(this.model.status, s)) void vscode.window.showWarningMessage(`Overnight: ${flag}`);
      this.model.setStatus(s);
      if (!s.current) this.statusBar.progress = undefined;
      void this.loadIncumbent();
      this.changed();
    });
    c.on("overnight/experimentStarted", (p) => {
      this.model.experimentStarted(p);
      this.statusBar.progress = undefined;
      this.changed();
    });
    c.on("overnight/progress", (p) => {
      if (!this.model.progress(p)) return; // another experiment's run, not the one the sidebar follows
      this.statusBar.progress = p;
      this.changed();
    });
    c.on("overnight/experimentFinished", (p) => {
      this.model.experimentFinished(p.experiment);
      this.changed();
      void this.announce(p.experiment);
      // The per-line history moved: ask for fresh inlay hints (the daemon may also send a refresh).
      this.conn.refreshInlayHints();
      void this.loadExperiments();
    });
    c.on("overnight/suggestionAdded", (p) => {
      this.model.suggestionAdded(p.suggestion);
      this.suggestions.refresh();
      this.changed();
    });
    c.on("overnight/suggestionRemoved", (p) => {
      this.model.suggestionRemoved(p.id);
      this.log.info(`suggestion ${p.id} ${p.state}: ${p.reason}`);
      this.suggestions.refresh();
      this.changed();
      // A decision shows in the experiment list (its review mark).
      if (p.state === "accepted" || p.state === "rejected") void this.loadExperiments();
    });
    c.on("overnight/ideasChanged", (q) => {
      this.model.ideas = q;
      this.changed();
    });
    c.on("overnight/agentThought", (p) => {
      this.model.thought(p);
      this.changed();
    });
  }

  /** A keep (or a held keep) raises a notification, if the user wants them, and an unread badge on the view. */
  /** Experiments whose decision was announced: an incumbent's re-run or a transfer check's run finishes a kept
   * experiment again, which is no new decision. */
  private readonly announced = new Set<number>();

  private async announce(e: ExperimentSummary): Promise<void> {
    const notice = decisionNotice(e);
    if (!notice || this.announced.has(e.id)) return;
    this.announced.add(e.id);
    this.sidebar.markUnread();
    if (!vscode.workspace.getConfiguration("overnight").get<boolean>("notifications.decisions", true)) return;
    // The keep's suggestion is pushed right after the decision: a moment's wait lets the notice offer to review it.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const show = notice.level === "info" ? vscode.window.showInformationMessage : vscode.window.showWarningMessage;
    const review = [...this.model.suggestions.values()].find((s) => s.experimentIds.includes(e.id));
    const pick = await show(notice.text, "Show", ...(review ? ["Review Suggestion"] : []));
    if (pick === "Show") await vscode.commands.executeCommand(Commands.showExperiment, e.id);
    else if (pick === "Review Suggestion" && review) await this.suggestions.reveal(review.id);
  }

  private async guard(what: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      this.log.warn(`${what}: ${(e as Error).message ?? String(e)}`);
    }
  }

  private async loadAll(): Promise<void> {
    await this.guard("status", async () => this.model.setStatus(await this.conn.request("overnight/status", {})));
    this.changed();
    await Promise.all([this.loadExperiments(), this.loadIncumbent(), this.loadSuggestions(), this.loadIdeas()]);
  }

  private async loadIdeas(): Promise<void> {
    await this.guard("ideas/list", async () => {
      this.model.ideas = await this.conn.request("overnight/ideas/list", {});
      this.changed();
    });
  }

  /** A change to the queue; the daemon answers with the queue as it now stands (and tells every other client). */
  private async curate(what: string, fn: () => Promise<IdeaQueue>): Promise<void> {
    await this.control(what, async () => {
      this.model.ideas = await fn();
    });
  }

  private async loadExperiments(): Promise<void> {
    await this.guard("experiments/list", async () => {
      // As many as the user has paged in (the daemon caps a page), so a refresh does not fold the list back to one page.
      const list = await this.listExperiments(0, Math.max(PAGE, this.model.experiments.length));
      this.model.setExperiments(list.total, list.items);
      this.suggestions.refresh();
      this.changed();
    });
  }

  private async loadMoreExperiments(): Promise<void> {
    await this.guard("experiments/list", async () => {
      const list = await this.listExperiments(this.model.experiments.length, PAGE);
      this.model.appendExperiments(list.total, list.items);
      this.changed();
    });
  }

  /** A page of the experiment list under the sidebar's status filter. */
  private listExperiments(offset: number, limit: number) {
    const f = this.model.filter;
    return this.conn.request("overnight/experiments/list", { offset, limit, ...(f === "all" ? {} : { status: [f as Status] }) });
  }

  private async loadIncumbent(): Promise<void> {
    const id = this.model.wantedIncumbent();
    if (id === undefined) return;
    await this.guard("incumbent", async () => {
      this.model.setIncumbent(await this.conn.request("overnight/experiments/get", { id }));
      this.changed();
    });
  }

  private async loadSuggestions(): Promise<void> {
    await this.guard("suggestions/list", async () => {
      this.model.setSuggestions((await this.conn.request("overnight/suggestions/list", {})).items);
      this.suggestions.refresh();
      this.changed();
    });
  }

  private async onWebview(m: WebviewMessage): Promise<void> {
    if (m.type === "ready") this.changed();
    else if (m.type === "command") {
      // The webview is a page: it may ask only for the commands its buttons stand for.
      if (WEBVIEW_COMMANDS.has(m.command)) await vscode.commands.executeCommand(m.command, ...(m.args ?? []));
      else this.log.warn(`the sidebar asked for a command it may not run: ${String(m.command)}`);
    }
    else if (m.type === "filter") {
      this.model.filter = m.value as Filter;
      await this.loadExperiments();
    } else if (m.type === "more") await this.loadMoreExperiments();
    else if (m.type === "select") await vscode.commands.executeCommand(Commands.showExperiment, m.id);
  }

  private async control(what: string, fn: () => Promise<unknown>): Promise<void> {
    if (!this.conn.connected) {
      void vscode.window.showWarningMessage("Overnight: not connected to a daemon.", "Start the Daemon").then((c) => {
        if (c) void this.conn.startDaemon();
      });
      return;
    }
    try {
      const res = await fn();
      if (res && typeof res === "object" && "state" in res) this.model.setStatus(res as never);
      this.changed();
    } catch (e) {
      this.log.error(`${what} failed: ${String(e)}`);
      void vscode.window.showErrorMessage(`Overnight: ${what} failed: ${(e as Error).message ?? String(e)}`);
    }
  }

  private registerCommands(context: vscode.ExtensionContext): void {
    const reg = (id: string, fn: (...args: never[]) => unknown) => context.subscriptions.push(vscode.commands.registerCommand(id, fn));
    reg("overnight.connect", () => this.conn.reconnect());
    reg("overnight.startDaemon", () => this.conn.startDaemon());
    reg("overnight.showSidebar", () => vscode.commands.executeCommand("workbench.view.extension.overnight"));
    reg("overnight.showLog", () => this.log.show(true));
    reg("overnight.pause", () => this.control("pause", () => this.conn.request("overnight/pause", { reason: "paused from VS Code" })));
    reg("overnight.resume", () => this.control("resume", () => this.conn.request("overnight/resume", {})));
    reg("overnight.stopAfterCurrent", () => this.control("stop", () => this.conn.request("overnight/stop", { when: "afterCurrent" })));
    reg("overnight.redirect", async () => {
      const instruction = await vscode.window.showInputBox({
        title: "Redirect the agent", prompt: "What should it try or avoid from its next proposal on?",
        placeHolder: "e.g. try rotary embeddings; leave the batch size alone", ignoreFocusOut: true,
      });
      if (!instruction?.trim()) return;
      await this.control("redirect", async () => {
        const r = await this.conn.request("overnight/redirect", { instruction: instruction.trim() });
        void vscode.window.showInformationMessage(`Overnight: the agent will see it (feedback #${r.feedbackId}).`);
      });
    });
    reg("overnight.addIdea", async () => {
      const text = await vscode.window.showInputBox({
        title: "Add an idea to the queue", prompt: "What should the agent try? (The sweep agent carries out settings such as LR = 0.002.)",
        placeHolder: "e.g. a cosine learning-rate schedule", ignoreFocusOut: true,
      });
      if (!text?.trim()) return;
      const known = [...new Set((this.model.ideas?.directions ?? []).map((d) => d.name))];
      const direction = known.length
        ? await vscode.window.showQuickPick([...known, "yours"], { title: "Its direction", placeHolder: "yours" })
        : "yours";
      if (direction === undefined) return;
      await this.curate("add an idea", () => this.conn.request("overnight/ideas/add", { text: text.trim(), direction }));
    });
    reg("overnight.approveIdea", (id: number) =>
      this.curate("approve", () => this.conn.request("overnight/ideas/curate", { action: "approve", id: Number(id) })));
    reg("overnight.vetoIdea", async (id: number) => {
      const reason = await vscode.window.showInputBox({
        title: `Veto idea #${id}`, prompt: "Why not? The agent reads your reason.", placeHolder: "e.g. too slow for this budget",
        ignoreFocusOut: true,
      });
      if (reason === undefined) return;
      await this.curate("veto", () => this.conn.request("overnight/ideas/curate", { action: "veto", id: Number(id), reason: reason.trim() }));
    });
    reg("overnight.moveIdeaToTop", (id: number) =>
      this.curate("move", () => this.conn.request("overnight/ideas/curate", { action: "move", id: Number(id), index: 0 })));
    for (const [command, action] of [["overnight.pinDirection", "pin"], ["overnight.closeDirection", "close"],
      ["overnight.openDirection", "open"]] as const) {
      reg(command, (direction: string) =>
        this.curate(action, () => this.conn.request("overnight/ideas/curate", { action, direction: String(direction) })));
    }
    reg("overnight.ablate", async () => {
      await this.control("ablate", async () => {
        // The cost first (a dry run), then the user's go: an ablation runs the training script many times.
        const cost = await this.conn.request("overnight/ablate", { dryRun: true });
        const go = await vscode.window.showWarningMessage(
          `Ablate the session's kept changes? ${cost.message}. Each is removed from the final code and measured; the loop ` +
          "pauses afterwards, and overnight/<tag>-final holds the changes that carry the gain.", { modal: true }, "Ablate");
        if (go !== "Ablate") return;
        const r = await this.conn.request("overnight/ablate", {});
        void vscode.window.showInformationMessage(`Overnight: ${r.message}`);
      });
    });
    reg("overnight.setBudget", async () => {
      const current = this.model.status?.budget;
      const input = await vscode.window.showInputBox({
        title: "Set the training budget",
        prompt: "Seconds of training per run. Results under another budget do not compare: a new session with a new baseline starts after the experiment in flight.",
        value: current !== undefined ? String(current) : "", ignoreFocusOut: true,
        validateInput: (v) => parseBudget(v) === undefined ? "a number of seconds greater than 0" : undefined,
      });
      const seconds = input === undefined ? undefined : parseBudget(input);
      if (seconds === undefined) return;
      await this.control("set budget", async () => {
        const r = await this.conn.request("overnight/setBudget", { seconds });
        void vscode.window.showInformationMessage(`Overnight: budget ${seconds} s from the next session on.`);
        return r;
      });
    });
    reg("overnight.toggleAnnotations", async () => {
      const cfg = vscode.workspace.getConfiguration("overnight");
      const next = !cfg.get<boolean>("annotations.enabled", true);
      await cfg.update("annotations.enabled", next, vscode.ConfigurationTarget.Global);
      this.conn.refreshInlayHints();
      vscode.window.setStatusBarMessage(`Overnight: annotations ${next ? "on" : "off"}`, 3000);
    });
    reg(Commands.acceptSuggestion, (id?: string, hunkId?: string) => this.suggestions.accept(id, hunkId));
    reg(Commands.rejectSuggestion, (id?: string, hunkId?: string) => this.suggestions.reject(id, hunkId));
    reg("overnight.acceptHunkAtCursor", () => this.suggestions.accept());
    reg("overnight.rejectHunkAtCursor", () => this.suggestions.reject());
    reg("overnight.showSuggestionDiff", (id?: string, hunkId?: string) => this.suggestions.showDiff(id, hunkId));
    reg("overnight.revealSuggestion", (id: string) => this.suggestions.reveal(id));
    reg("overnight.nextSuggestion", () => this.suggestions.go(1));
    reg("overnight.previousSuggestion", () => this.suggestions.go(-1));
    reg("overnight.acceptShownSuggestion", () => this.suggestions.decideShown(true));
    reg("overnight.rejectShownSuggestion", () => this.suggestions.decideShown(false));
    reg(Commands.showExperiment, async (id?: number) => {
      if (id === undefined) {
        const pick = await vscode.window.showQuickPick(this.model.experiments.map((e) => ({
          label: `#${e.id} ${e.description}`, description: `${e.status} ${e.valBpb?.toFixed(3) ?? ""}`, id: e.id })), { title: "Show an experiment" });
        if (!pick) return;
        id = pick.id;
      }
      const expId = Number(id);
      await this.guard("experiments/get", async () => {
        // The experiment's page in an editor tab (numbers, decision, runs, reasoning, its loss curve against the
        // incumbent's); its diff one click away.
        const detail = await this.conn.request("overnight/experiments/get", { id: expId });
        const incumbentId = incumbentOf(detail);
        const incumbent = incumbentId !== undefined
          ? await this.conn.request("overnight/experiments/get", { id: incumbentId }).catch(() => undefined) : undefined;
        this.model.detail = detail;
        this.changed();
        this.panel.show(detail, incumbent);
      });
    });
    reg(SHOW_EXPERIMENT_DIFF, async (id?: number) => {
      if (id === undefined) return;
      await this.guard("experiments/get", async () => this.experiments.open(await this.conn.request("overnight/experiments/get", { id: Number(id) })));
    });
  }

  async stop(): Promise<void> {
    await this.conn.stop();
  }

  dispose(): void {
    for (const d of this.disposables) d.dispose();
  }
}
