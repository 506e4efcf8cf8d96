// The connection to the workspace's daemon: find it through its discovery file, attach with
// vscode-languageclient over loopback TCP with the token, offer to start one, reconnect after restarts.
import { spawn } from "node:child_process";
import * as net from "node:net";
import * as vscode from "vscode";
import {
  CloseAction, ErrorAction, InlayHintRequest, LanguageClient, State, type LanguageClientOptions, type StreamInfo,
} from "vscode-languageclient/node";
import { daemonCommand, pythonFor, readDiscovery, reconnectDelay } from "./logic/discovery";
import { Commands, ErrorCodes, type Notifications, PROTOCOL_VERSION, type Requests } from "./protocol";

export type ConnectionState = "connecting" | "connected" | "disconnected";

/** Restricted mode: what the extension does not do, and what the user can do instead. */
const NOT_TRUSTED = "This folder is not trusted: Overnight does not start its daemon here (it would run the folder's Python). "
  + "Trust the folder, or run `overnight daemon --detach` yourself.";

export class DaemonConnection implements vscode.Disposable {
  private client?: LanguageClient;
  private attempt = 0;
  private timer?: NodeJS.Timeout;
  private disposed = false;
  private offered = false;
  private starting = false;
  private readonly handlers = new Map<string, ((params: unknown) => void)[]>();
  private readonly stateEmitter = new vscode.EventEmitter<{ state: ConnectionState; message: string }>();
  readonly onDidChangeState = this.stateEmitter.event;
  state: ConnectionState = "connecting";
  message = "";
  /** Whether the daemon serves CodeLens itself (else the extension draws its own). */
  serverCodeLens = false;

  constructor(
    readonly root: string,
    private readonly log: vscode.LogOutputChannel,
    private readonly middleware: LanguageClientOptions["middleware"],
  ) {}

  start(): void {
    void this.tryConnect();
  }

  get connected(): boolean {
    return this.state === "connected" && this.client !== undefined;
  }

  private setState(state: ConnectionState, message = ""): void {
    if (state === this.state && message === this.message) return;
    this.state = state;
    this.message = message;
    void vscode.commands.executeCommand("setContext", "overnight.connected", state === "connected");
    this.stateEmitter.fire({ state, message });
  }

  /** Typed request to the daemon; throws when disconnected. */
  async request<M extends keyof Requests>(method: M, params: Requests[M]["params"]): Promise<Requests[M]["result"]> {
    if (!this.client || !this.connected) throw new Error("not connected to the Overnight daemon");
    return (await this.client.sendRequest(method, params)) as Requests[M]["result"];
  }

  on<M extends keyof Notifications>(method: M, handler: (params: Notifications[M]) => void): void {
    const list = this.handlers.get(method) ?? [];
    list.push(handler as (p: unknown) => void);
    this.handlers.set(method, list);
  }

  /** Asks VS Code to re-query the daemon's inlay hints in every open document. */
  refreshInlayHints(): void {
    const feature = this.client?.getFeature(InlayHintRequest.method);
    for (const doc of vscode.workspace.textDocuments) {
      try {
        feature?.getProvider(doc)?.onDidChangeInlayHints.fire();
      } catch (e) {
        this.log.debug(`inlay hint refresh: ${String(e)}`);
      }
    }
  }

  private schedule(delay = reconnectDelay(this.attempt++)): void {
    if (this.disposed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.tryConnect(), delay);
  }

  /** Connect now if a daemon runs; otherwise say so, offer to start one (once), and keep watching. */
  async tryConnect(): Promise<void> {
    if (this.disposed || this.client) return;
    const info = readDiscovery(this.root);
    if (!info) {
      this.setState("disconnected", vscode.workspace.isTrusted ? "No Overnight daemon runs for this workspace." : NOT_TRUSTED);
      if (!this.offered && !this.starting) {
        this.offered = true;
        void this.offerStart();
      }
      this.schedule(2000);
      return;
    }
    this.setState("connecting", `Connecting to 127.0.0.1:${info.port}…`);
    const serverOptions = (): Promise<StreamInfo> =>
      new Promise((resolve, reject) => {
        const socket = net.connect({ host: "127.0.0.1", port: info.port }, () => resolve({ reader: socket, writer: socket }));
        socket.once("error", reject);
      });
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: "file", language: "python" }],
      // commandLinks: the hovers may link to the experiment (a command link this client runs).
      // showMessages false: the extension announces kept experiments itself (with buttons and a badge).
      initializationOptions: { token: info.token, protocolVersion: PROTOCOL_VERSION, commandLinks: true, showMessages: false },
      markdown: { isTrusted: { enabledCommands: [Commands.showExperiment] } },
      outputChannel: this.log,
      middleware: this.middleware,
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue, handled: true }),
        // Never let the client restart on its own: the daemon may have moved to another port.
        closed: () => {
          void this.dropped("The connection to the daemon closed.");
          return { action: CloseAction.DoNotRestart, handled: true };
        },
      },
      initializationFailedHandler: (error) => {
        const code = (error as { code?: number }).code;
        const why = code === ErrorCodes.unauthorized ? "the daemon refused the token"
          : code === ErrorCodes.versionMismatch ? "the daemon speaks another protocol version" : String(error);
        this.log.error(`initialize failed: ${why}`);
        return false;
      },
    };
    const client = new LanguageClient("overnight", "Overnight daemon", serverOptions, clientOptions);
    // The status bar item and the sidebar already show the run in flight: a second, LSP work-done progress bar
    // in the status bar would say the same thing twice. Declared last, this overrides the client's default.
    client.registerFeature({
      fillClientCapabilities: (caps) => { caps.window = { ...(caps.window ?? {}), workDoneProgress: false }; },
      initialize: () => undefined,
      getState: () => ({ kind: "static" }),
      clear: () => undefined,
    });
    for (const [method, list] of this.handlers) {
      client.onNotification(method, (params: unknown) => {
        for (const h of list) {
          try {
            h(params);
          } catch (e) {
            this.log.error(`handler of ${method} failed: ${String(e)}`);
          }
        }
      });
    }
    client.onDidChangeState((e) => {
      if (e.newState === State.Stopped && this.client === client) void this.dropped("The daemon went away.");
    });
    this.client = client;
    try {
      await client.start();
    } catch (e) {
      this.log.warn(`could not attach to the daemon on port ${info.port}: ${String(e)}`);
      await this.dropped(`Could not attach to the daemon: ${String(e)}`);
      return;
    }
    if (this.client !== client) return;
    this.attempt = 0;
    this.serverCodeLens = client.initializeResult?.capabilities.codeLensProvider !== undefined;
    this.log.info(`attached to the daemon (pid ${info.pid}, 127.0.0.1:${info.port})`);
    this.setState("connected");
  }

  private async dropped(message: string): Promise<void> {
    const client = this.client;
    if (!client) return;
    this.client = undefined;
    this.log.info(`disconnected: ${message}`);
    this.setState("disconnected", message + " Reconnecting when it is back…");
    try {
      // Called from the client's own close handler: let it finish first (it marks itself stopped), so a stop
      // request is never sent down a closed connection ("Connection is disposed" in the Output channel).
      await new Promise((resolve) => setTimeout(resolve, 0));
      if (client.state === State.Running) await client.stop(2000);
    } catch {
      /* it is gone already */
    }
    this.schedule();
  }

  private async offerStart(): Promise<void> {
    if (!vscode.workspace.isTrusted) {
      this.setState("disconnected", NOT_TRUSTED);
      return;
    }
    if (vscode.workspace.getConfiguration("overnight").get<boolean>("daemon.autoStart")) {
      await this.startDaemon();
      return;
    }
    // A notification, not a modal: it never takes the focus from the editor.
    const choice = await vscode.window.showInformationMessage(
      "No Overnight daemon runs for this workspace.", "Start the Daemon", "Always Start It",
    );
    if (choice === "Always Start It") {
      await vscode.workspace.getConfiguration("overnight").update("daemon.autoStart", true, vscode.ConfigurationTarget.Workspace);
    }
    if (choice) await this.startDaemon();
  }

  /** Starts a detached daemon for the workspace (`overnight daemon --detach`) and attaches to it. */
  async startDaemon(): Promise<void> {
    if (readDiscovery(this.root)) {
      void this.tryConnect();
      return;
    }
    // Restricted mode: starting the daemon runs the folder's own Python (its .venv) and its training code.
    if (!vscode.workspace.isTrusted) {
      const choice = await vscode.window.showWarningMessage(
        "Overnight: this folder is not trusted, so the extension will not start its daemon (it would run the folder's Python and training code). Trust the folder, or start the daemon yourself: overnight daemon --detach.",
        "Manage Workspace Trust");
      if (choice) await vscode.commands.executeCommand("workbench.trust.manage");
      return;
    }
    if (this.starting) return;
    this.starting = true;
    const python = pythonFor(this.root, vscode.workspace.getConfiguration("overnight").get<string>("pythonPath") ?? "");
    const [cmd, ...args] = daemonCommand(python, this.root);
    this.log.info(`starting the daemon: ${[cmd, ...args].join(" ")}`);
    this.setState("connecting", "Starting the daemon…");
    try {
      const code = await new Promise<number>((resolve, reject) => {
        const child = spawn(cmd, args, { cwd: this.root, stdio: ["ignore", "pipe", "pipe"] });
        child.stdout.on("data", (d: Buffer) => this.log.info(d.toString().trimEnd()));
        child.stderr.on("data", (d: Buffer) => this.log.warn(d.toString().trimEnd()));
        child.on("error", reject);
        child.on("exit", (c) => resolve(c ?? 1));
      });
      if (code !== 0) throw new Error(`exited with code ${code}`);
    } catch (e) {
      this.log.error(`the daemon did not start: ${String(e)}`);
      this.setState("disconnected", `The daemon did not start (${String(e)}); see the Overnight log.`);
      void vscode.window.showErrorMessage(`Overnight: the daemon did not start (${String(e)}).`, "Show Log").then((c) => {
        if (c) this.log.show(true);
      });
      return;
    } finally {
      this.starting = false;
    }
    clearTimeout(this.timer);
    await this.tryConnect();
  }

  /** Drops the connection and attaches again (after the daemon restarted elsewhere, say). */
  async reconnect(): Promise<void> {
    if (this.client) await this.dropped("Reconnecting on request.");
    clearTimeout(this.timer);
    this.attempt = 0;
    await this.tryConnect();
  }

  dispose(): void {
    this.disposed = true;
    clearTimeout(this.timer);
    void this.client?.stop(2000).catch(() => undefined);
    this.stateEmitter.dispose();
  }

  async stop(): Promise<void> {
    this.disposed = true;
    clearTimeout(this.timer);
    const c = this.client;
    this.client = undefined;
    if (c) await c.stop(2000).catch(() => undefined);
  }
}
