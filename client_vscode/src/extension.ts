// Overnight for VS Code: attaches to the workspace's daemon and shows the loop (sidebar, status bar,
// inline suggestions, per-line metric annotations). The parts live in controller.ts and below.
import * as vscode from "vscode";
import { Controller } from "./controller";

let controller: Controller | undefined;

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel("Overnight", { log: true });
  context.subscriptions.push(log);
  const folder = vscode.workspace.workspaceFolders?.[0];
  if (!folder || folder.uri.scheme !== "file") {
    log.warn("Overnight needs a local workspace folder (one with overnight.toml)");
    return;
  }
  log.info(`activating for ${folder.uri.fsPath}`);
  controller = new Controller(context, folder.uri.fsPath, log);
  context.subscriptions.push(controller);
  controller.start();
}

export function deactivate(): Promise<void> | undefined {
  return controller?.stop();
}
