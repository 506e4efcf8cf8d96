// The status bar item: loop state, the current experiment's progress, the best val_bpb; click opens the sidebar.
import * as vscode from "vscode";
import { statusBarText, statusBarTooltip } from "./logic/format";
import type { SidebarModel } from "./logic/viewModel";
import type { RunProgress } from "./protocol";

export class StatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem("overnight.status", vscode.StatusBarAlignment.Left, 50);
  progress?: RunProgress;

  constructor(private readonly model: SidebarModel) {
    this.item.name = "Overnight";
    this.item.command = "overnight.showSidebar";
    this.update();
    this.item.show();
  }

  update(): void {
    const connected = this.model.connection === "connected";
    this.item.text = statusBarText(connected ? this.model.status : undefined, this.model.connection !== "disconnected", this.progress);
    this.item.tooltip = statusBarTooltip(this.model.status, connected) + (this.model.connectionMessage ? `\n${this.model.connectionMessage}` : "");
    this.item.backgroundColor = this.model.status?.state === "error" && connected ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  }

  dispose(): void {
    this.item.dispose();
  }
}
