// Pending suggestions in the training script: shown in place without touching the buffer (removed
// lines marked, the added text previewed after the first line), CodeLens Accept · Reject · Show diff,
// a hover with the hunk as a diff, commands with keybindings for the hunk at the cursor.
import * as vscode from "vscode";
import type { DaemonConnection } from "./connection";
import { hunkKeysText } from "./logic/format";
import { applyHunks, type HunkView, hunkAtLine, hunkViews, nextHunk } from "./logic/hunks";
import type { SidebarModel } from "./logic/viewModel";
import { Commands, type Suggestion } from "./protocol";

export const SUGGESTION_SCHEME = "overnight-suggestion";

export class SuggestionController implements vscode.Disposable {
  // The lines a hunk would replace: painted like a deletion only when the user asks (a setting); by default a thin
  // bar in the margin, since nothing is decided yet (Show diff has the whole change).
  private readonly removed = vscode.window.createTextEditorDecorationType({
    isWholeLine: true,
    backgroundColor: new vscode.ThemeColor("diffEditor.removedLineBackground"),
    overviewRulerColor: new vscode.ThemeColor("editorOverviewRuler.deletedForeground"),
    overviewRulerLane: vscode.OverviewRulerLane.Left,
  });
  private readonly marked = vscode.window.createTextEditorDecorationType({
    isWholeLine: true,
    borderColor: new vscode.ThemeColor("editorOverviewRuler.modifiedForeground"),
    borderStyle: "none none none solid",
    borderWidth: "0 0 0 2px",
    overviewRulerColor: new vscode.ThemeColor("editorOverviewRuler.modifiedForeground"),
    overviewRulerLane: vscode.OverviewRulerLane.Left,
  });
  private readonly summary = vscode.window.createTextEditorDecorationType({
    after: { margin: "0 0 0 2em", color: new vscode.ThemeColor("editorCodeLens.foreground"), fontStyle: "italic" },
  });
  private readonly insertion = vscode.window.createTextEditorDecorationType({
    isWholeLine: true,
    borderColor: new vscode.ThemeColor("diffEditor.insertedTextBorder"),
    borderStyle: "none none dashed none",
    borderWidth: "1px",
  });
  // While the cursor is on a suggested change: the keys that act on it (click: its diff).
  private readonly keysHint = vscode.window.createStatusBarItem("overnight.hunkAtCursor", vscode.StatusBarAlignment.Left, 49);
  private readonly lensEmitter = new vscode.EventEmitter<void>();
  private readonly disposables: vscode.Disposable[] = [];
  private timer?: NodeJS.Timeout;

  constructor(private readonly model: SidebarModel, private readonly conn: DaemonConnection, private readonly log: vscode.LogOutputChannel) {
    this.disposables.push(
      this.removed, this.marked, this.summary, this.insertion, this.lensEmitter, this.keysHint,
      vscode.window.onDidChangeVisibleTextEditors(() => this.refresh()),
      vscode.workspace.onDidChangeTextDocument((e) => {
        if (this.forUri(e.document.uri).length) this.refreshSoon();
      }),
      vscode.window.onDidChangeTextEditorSelection((e) => this.updateContext(e.textEditor)),
      vscode.workspace.registerTextDocumentContentProvider(SUGGESTION_SCHEME, { provideTextDocumentContent: (uri) => this.proposed(uri) }),
      // Used only when the daemon does not serve CodeLens itself.
      vscode.languages.registerCodeLensProvider({ scheme: "file", language: "python" }, {
        onDidChangeCodeLenses: this.lensEmitter.event,
        provideCodeLenses: (doc) => (this.conn.serverCodeLens ? [] : this.lenses(doc)),
      }),
      vscode.languages.registerHoverProvider({ scheme: "file" }, { provideHover: (doc, pos) => this.hover(doc, pos) }),
    );
  }

  private forUri(uri: vscode.Uri): Suggestion[] {
    const key = uri.toString();
    return [...this.model.suggestions.values()].filter((s) => vscode.Uri.parse(s.uri).toString() === key);
  }

  views(doc: vscode.TextDocument): HunkView[] {
    const text = doc.getText();
    const deltas = this.model.deltas();
    return this.forUri(doc.uri).flatMap((s) => hunkViews(text, s, deltas));
  }

  refreshSoon(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), 150);
  }

  refresh(): void {
    // Next/previous suggestion (keys, the editor title) only while there is one.
    void vscode.commands.executeCommand("setContext", "overnight.hasSuggestions", this.model.suggestions.size > 0);
    for (const editor of vscode.window.visibleTextEditors) this.decorate(editor);
    this.lensEmitter.fire();
    if (vscode.window.activeTextEditor) this.updateContext(vscode.window.activeTextEditor);
  }

  private decorate(editor: vscode.TextEditor): void {
    if (editor.document.uri.scheme !== "file") return;
    const views = this.views(editor.document);
    const removed: vscode.Range[] = [];
    const inserted: vscode.Range[] = [];
    const summaries: vscode.DecorationOptions[] = [];
    for (const v of views) {
      if (v.removed) removed.push(new vscode.Range(v.removed[0], 0, v.removed[1], 0));
      else inserted.push(new vscode.Range(v.anchor, 0, v.anchor, 0));
      const line = editor.document.lineAt(Math.min(v.anchor, editor.document.lineCount - 1));
      const text = v.stale
        ? `  \u29d6 suggestion out of date: waiting for the daemon to re-anchor it`
        : `${v.summary}${v.preview ? `   \u2192 ${v.preview}` : ""}`;
      summaries.push({ range: new vscode.Range(line.range.end, line.range.end), renderOptions: { after: { contentText: text } } });
    }
    const paint = vscode.workspace.getConfiguration("overnight").get<boolean>("suggestions.highlightRemoved", false);
    editor.setDecorations(this.removed, paint ? removed : []);
    editor.setDecorations(this.marked, paint ? [] : removed);
    editor.setDecorations(this.insertion, inserted);
    editor.setDecorations(this.summary, summaries);
  }

  private updateContext(editor: vscode.TextEditor): void {
    const v = this.hunkAt(editor);
    // The hint shows once the context key is set, so the keys it names work when it is seen.
    void vscode.commands.executeCommand("setContext", "overnight.hunkAtCursor", v !== undefined).then(() => {
      if (!v) return this.keysHint.hide();
      this.keysHint.name = "Overnight suggestion at the cursor";
      this.keysHint.text = hunkKeysText(process.platform);
      this.keysHint.tooltip = `Overnight suggestion (${v.evidence}) at the cursor: accept or reject it with these keys; click to see its diff.`;
      this.keysHint.command = { title: "Show diff", command: "overnight.showSuggestionDiff", arguments: [v.suggestionId, v.hunkId] };
      this.keysHint.show();
    });
  }

  hunkAt(editor: vscode.TextEditor | undefined): HunkView | undefined {
    if (!editor) return undefined;
    return hunkAtLine(this.views(editor.document), editor.selection.active.line);
  }

  private lenses(doc: vscode.TextDocument): vscode.CodeLens[] {
    return this.views(doc).flatMap((v) => {
      const r = new vscode.Range(v.anchor, 0, v.anchor, 0);
      const ids = v.experimentIds;
      return [
        new vscode.CodeLens(r, { title: "$(check) Accept", command: Commands.acceptSuggestion, arguments: [v.suggestionId, v.hunkId] }),
        new vscode.CodeLens(r, { title: "$(close) Reject", command: Commands.rejectSuggestion, arguments: [v.suggestionId, v.hunkId] }),
        new vscode.CodeLens(r, { title: "Show diff", command: "overnight.showSuggestionDiff", arguments: [v.suggestionId, v.hunkId] }),
        ...(ids.length ? [new vscode.CodeLens(r, { title: v.evidence, command: Commands.showExperiment, arguments: [ids[ids.length - 1]] })] : []),
      ];
    });
  }

  private hover(doc: vscode.TextDocument, pos: vscode.Position): vscode.Hover | undefined {
    const v = hunkAtLine(this.views(doc), pos.line);
    if (!v) return undefined;
    const args = encodeURIComponent(JSON.stringify([v.suggestionId, v.hunkId]));
    const md = new vscode.MarkdownString(undefined, true);
    md.isTrusted = { enabledCommands: [Commands.acceptSuggestion, Commands.rejectSuggestion, "overnight.showSuggestionDiff"] };
    const who = v.experimentIds.map((i) => `#${i}`).join(" ");
    md.appendMarkdown(`**Overnight suggestion** \u00b7 ${v.evidence.startsWith("#") ? v.evidence : `${who}: ${v.evidence}`}\n\n`);
    md.appendMarkdown(v.diffMarkdown + "\n\n");
    md.appendMarkdown(`[Accept](command:${Commands.acceptSuggestion}?${args}) · [Reject](command:${Commands.rejectSuggestion}?${args}) · [Show diff](command:overnight.showSuggestionDiff?${args})`);
    return new vscode.Hover(md);
  }

  private proposed(uri: vscode.Uri): string {
    // overnight-suggestion:/<file path>?<suggestion id>#<hunk id or empty>
    const s = this.model.suggestions.get(uri.query);
    if (!s) return "";
    const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === vscode.Uri.parse(s.uri).toString());
    const hunks = uri.fragment ? s.hunks.filter((h) => h.id === uri.fragment) : s.hunks;
    return doc ? applyHunks(doc.getText(), hunks) : "";
  }

  /** True when the change landed in the buffer. */
  async accept(suggestionId?: string, hunkId?: string): Promise<boolean> {
    if (suggestionId === undefined) {
      const v = this.hunkAt(vscode.window.activeTextEditor);
      if (!v) {
        void vscode.window.showInformationMessage("Overnight: no suggested change at the cursor.");
        return false;
      }
      [suggestionId, hunkId] = [v.suggestionId, v.hunkId];
    }
    try {
      const res = await this.conn.request("overnight/suggestions/accept", hunkId ? { id: suggestionId, hunkId } : { id: suggestionId });
      this.log.info(`accept ${suggestionId}/${hunkId ?? "*"}: ${JSON.stringify(res)}`);
      if (!res.applied) void vscode.window.showWarningMessage(`Overnight: the suggestion was not applied${res.message ? `: ${res.message}` : "."}`);
      // The change is in the buffer, not on disk: say so (the loop measures the file once it is saved).
      else vscode.window.setStatusBarMessage("$(check) Overnight: accepted into the editor — not saved yet", 8000);
      return res.applied;
    } catch (e) {
      this.log.error(`accept failed: ${String(e)}`);
      void vscode.window.showErrorMessage(`Overnight: accept failed: ${(e as Error).message ?? String(e)}`);
      return false;
    }
  }

  /** True when the rejection was recorded (false: cancelled or failed). */
  async reject(suggestionId?: string, hunkId?: string): Promise<boolean> {
    if (suggestionId === undefined) {
      const v = this.hunkAt(vscode.window.activeTextEditor);
      if (!v) {
        void vscode.window.showInformationMessage("Overnight: no suggested change at the cursor.");
        return false;
      }
      [suggestionId, hunkId] = [v.suggestionId, v.hunkId];
    }
    const reason = await vscode.window.showInputBox({
      title: "Reject the suggestion",
      prompt: "Why? (optional: the agent sees it; Escape cancels)",
      placeHolder: "e.g. too slow on my GPU",
      ignoreFocusOut: true,
    });
    if (reason === undefined) return false;
    const params = { id: suggestionId, ...(hunkId ? { hunkId } : {}), ...(reason.trim() ? { reason: reason.trim() } : {}) };
    try {
      await this.conn.request("overnight/suggestions/reject", params);
      this.log.info(`reject ${suggestionId}/${hunkId ?? "*"}: ${reason}`);
      return true;
    } catch (e) {
      this.log.error(`reject failed: ${String(e)}`);
      void vscode.window.showErrorMessage(`Overnight: reject failed: ${(e as Error).message ?? String(e)}`);
      return false;
    }
  }

  /** VS Code's diff editor: the live buffer against it with the hunk applied. Never takes the focus. */
  async showDiff(suggestionId?: string, hunkId?: string): Promise<void> {
    if (suggestionId === undefined) {
      const v = this.hunkAt(vscode.window.activeTextEditor);
      if (!v) return;
      [suggestionId, hunkId] = [v.suggestionId, v.hunkId];
    }
    const s = this.model.suggestions.get(suggestionId);
    if (!s) return;
    const left = vscode.Uri.parse(s.uri);
    if (!vscode.workspace.textDocuments.some((d) => d.uri.toString() === left.toString())) await vscode.workspace.openTextDocument(left);
    const right = vscode.Uri.from({ scheme: SUGGESTION_SCHEME, path: left.path, query: suggestionId, fragment: hunkId ?? "" });
    const name = left.path.split("/").pop();
    await vscode.commands.executeCommand("vscode.diff", left, right, `${name} \u2194 suggestion ${s.experimentIds.map((i) => `#${i}`).join(" ")}`,
      { preserveFocus: true, preview: true });
  }

  /** Moves the cursor to the next (or previous) suggested change in the file, wrapping around; from a file without
   * one, opens the first suggestion. */
  async go(direction: 1 | -1): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    const target = editor && nextHunk(this.views(editor.document), editor.selection.active.line, direction);
    if (!editor || !target) {
      const first = [...this.model.suggestions.values()][0];
      if (first) await this.reveal(first.id);
      else void vscode.window.showInformationMessage("Overnight: no pending suggestions.");
      return;
    }
    const at = new vscode.Position(target.anchor, 0);
    editor.selection = new vscode.Selection(at, at);
    editor.revealRange(new vscode.Range(at, at), vscode.TextEditorRevealType.InCenterIfOutsideViewport);
    this.updateContext(editor);
  }

  /** The suggestion (and hunk) the active diff editor shows, from its right side's URI. */
  shown(): { suggestionId: string; hunkId?: string } | undefined {
    const input = vscode.window.tabGroups.activeTabGroup.activeTab?.input;
    const uri = input instanceof vscode.TabInputTextDiff ? input.modified : vscode.window.activeTextEditor?.document.uri;
    if (!uri || uri.scheme !== SUGGESTION_SCHEME || !this.model.suggestions.has(uri.query)) return undefined;
    return { suggestionId: uri.query, ...(uri.fragment ? { hunkId: uri.fragment } : {}) };
  }

  /** Accept or reject what the diff editor shows, then close it (its right side is what was decided). */
  async decideShown(accept: boolean): Promise<void> {
    const shown = this.shown();
    if (!shown) return void vscode.window.showInformationMessage("Overnight: this diff no longer shows a pending suggestion.");
    const decided = accept ? await this.accept(shown.suggestionId, shown.hunkId) : await this.reject(shown.suggestionId, shown.hunkId);
    if (decided) await vscode.commands.executeCommand("workbench.action.closeActiveEditor");
  }

  /** Opens the file at a suggestion's first hunk (from the sidebar), keeping the sidebar's focus. */
  async reveal(suggestionId: string): Promise<void> {
    const s = this.model.suggestions.get(suggestionId);
    if (!s) return;
    const doc = await vscode.workspace.openTextDocument(vscode.Uri.parse(s.uri));
    const h = s.hunks[0];
    // The user asked to go there: the editor takes focus with the cursor on the hunk, so the
    // accept/reject keybindings act on it at once.
    const at = h ? new vscode.Position(h.range.start.line, 0) : undefined;
    const editor = await vscode.window.showTextDocument(doc, { preview: true, selection: at && new vscode.Range(at, at) });
    if (h) editor.revealRange(new vscode.Range(h.range.start.line, 0, h.range.end.line, 0), vscode.TextEditorRevealType.InCenterIfOutsideViewport);
  }

  dispose(): void {
    clearTimeout(this.timer);
    for (const d of this.disposables) d.dispose();
  }
}
