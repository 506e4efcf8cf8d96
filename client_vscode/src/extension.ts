// Overnight for VS Code: attaches to the workspace's daemon and shows the loop (sidebar, status bar,
// inline suggestions, per-line metric annotations). The parts live in controller.ts and below.
import * as vscode from "vscode";
import { Controller } from "./controller";
import { pickWorkspaceRoot } from "./logic/discovery";

let controller: Controller | undefined;

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel("Overnight", { log: true });
  context.subscriptions.push(log);
  const local = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === "file").map((f) => f.uri.fsPath);
  const root = pickWorkspaceRoot(local);
  if (!root) {
    log.warn("Overnight needs a local workspace folder (one with overnight.toml)");
    return;
  }
  log.info(`activating for ${root}`);
  controller = new Controller(context, root, log);
  context.subscriptions.push(controller);
  controller.start();
}

export function deactivate(): Promise<void> | undefined {
  return controller?.stop();
}
