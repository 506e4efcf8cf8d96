// The sidebar: a webview view that draws the SidebarModel (loop state and controls, the running
// experiment with its live loss curve against the incumbent's, suggestions, the experiment list).
import * as crypto from "node:crypto";
import * as vscode from "vscode";
import type { SidebarModel } from "./logic/viewModel";

/** What the webview asks the extension to do. */
export type WebviewMessage =
  | { type: "ready" }
  | { type: "command"; command: string; args?: unknown[] }
  | { type: "filter"; value: string }
  | { type: "more" }
  | { type: "select"; id: number };

export class SidebarProvider implements vscode.WebviewViewProvider {
  static readonly viewId = "overnight.sidebar";
  private view?: vscode.WebviewView;
  private pending = false;

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly model: SidebarModel,
    private readonly onMessage: (m: WebviewMessage) => void,
  ) {}

  resolveWebviewView(view: vscode.WebviewView): void {
    this.view = view;
    const dist = vscode.Uri.joinPath(this.extensionUri, "dist");
    view.webview.options = { enableScripts: true, enableCommandUris: false, localResourceRoots: [dist] };
    const nonce = crypto.randomBytes(16).toString("base64");
    const script = view.webview.asWebviewUri(vscode.Uri.joinPath(dist, "webview.js"));
    const style = view.webview.asWebviewUri(vscode.Uri.joinPath(dist, "webview.css"));
    const csp = view.webview.cspSource;
    view.webview.html = `<!DOCTYPE html><html lang="en"><head><meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src ${csp} 'unsafe-inline'; script-src 'nonce-${nonce}'; img-src ${csp} data:; font-src ${csp};">
<meta name="viewport" content="width=device-width, initial-scale=1.0"><link rel="stylesheet" href="${style}"><title>Overnight</title></head>
<body><div id="app" aria-live="polite">Loading…</div><script nonce="${nonce}" src="${script}"></script></body></html>`;
    view.webview.onDidReceiveMessage((m: WebviewMessage) => this.onMessage(m));
    view.onDidChangeVisibility(() => {
      if (view.visible) this.clearUnread();
      this.post();
    });
    this.showBadge();
  }

  /** Decisions the user has not seen yet (a keep while the view was hidden): a badge on the Overnight view. */
  private unread = 0;

  markUnread(): void {
    if (this.view?.visible) return;
    this.unread += 1;
    this.showBadge();
  }

  private clearUnread(): void {
    this.unread = 0;
    this.showBadge();
  }

  private showBadge(): void {
    if (!this.view) return;
    this.view.badge = this.unread > 0
      ? { value: this.unread, tooltip: `${this.unread} new kept experiment${this.unread === 1 ? "" : "s"}` }
      : undefined;
  }

  /** Sends the view model, at most every 100 ms (progress frames come several a second). */
  post(): void {
    if (this.pending) return;
    this.pending = true;
    setTimeout(() => {
      this.pending = false;
      if (this.view?.visible) void this.view.webview.postMessage({ type: "model", model: this.model.view() });
    }, 100);
  }
}
