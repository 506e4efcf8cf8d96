// The experiment page: one editor tab (a webview without scripts) reused for whichever experiment the user opens.
import * as vscode from "vscode";
import { fromRunCurve, type Point } from "./logic/curve";
import { experimentPage } from "./logic/experimentPage";
import { detailView } from "./logic/viewModel";
import type { ExperimentDetail } from "./protocol";

export const SHOW_EXPERIMENT_DIFF = "overnight.showExperimentDiff";

/** The first measured run's loss curve, as (seconds of budget, train loss). */
export function firstCurve(d: ExperimentDetail | undefined): Point[] {
  const run = d?.runs.find((r) => r.status === "ok" && r.curve.length > 1) ?? d?.runs.find((r) => r.curve.length > 1);
  return run ? fromRunCurve(run.curve) : [];
}

/** The incumbent an experiment was judged against (its decision's evidence names it). */
export function incumbentOf(d: ExperimentDetail): number | undefined {
  const id = (d.evidence as Record<string, unknown> | undefined)?.["incumbent_id"];
  return typeof id === "number" && Number.isInteger(id) && id !== d.experiment.id ? id : undefined;
}

export class ExperimentPanel implements vscode.Disposable {
  private panel?: vscode.WebviewPanel;

  show(detail: ExperimentDetail, incumbent?: ExperimentDetail): void {
    if (!this.panel) {
      this.panel = vscode.window.createWebviewPanel("overnight.experiment", "Experiment", { viewColumn: vscode.ViewColumn.Active, preserveFocus: true },
        // No scripts: the page is static. The one link it has opens the experiment's diff.
        { enableScripts: false, enableCommandUris: [SHOW_EXPERIMENT_DIFF], localResourceRoots: [] });
      this.panel.onDidDispose(() => { this.panel = undefined; });
    }
    const e = detail.experiment;
    this.panel.title = `Experiment #${e.id}`;
    const link = `command:${SHOW_EXPERIMENT_DIFF}?${encodeURIComponent(JSON.stringify([e.id]))}`;
    this.panel.webview.html = experimentPage(detailView(detail), {
      current: firstCurve(detail), incumbent: firstCurve(incumbent),
      incumbentLabel: incumbent ? `incumbent #${incumbent.experiment.id}` : "incumbent",
    }, this.panel.webview.cspSource, link);
    this.panel.reveal(undefined, true);
  }

  dispose(): void {
    this.panel?.dispose();
  }
}
