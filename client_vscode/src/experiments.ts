// An experiment's diff in VS Code's diff editor, on virtual documents read from the experiment's git
// commit (every experiment is a commit under its own ref in the workspace's repository).
import { execFile } from "node:child_process";
import * as vscode from "vscode";
import type { ExperimentDetail } from "./protocol";

export const EXPERIMENT_SCHEME = "overnight-experiment";

/** The files a unified diff touches, in order ("b/" side; deleted files by their "a/" path). */
export function diffFiles(diff: string): string[] {
  const files: string[] = [];
  for (const m of diff.matchAll(/^diff --git a\/(.+?) b\/(.+)$/gm)) if (!files.includes(m[2])) files.push(m[2]);
  if (files.length === 0) for (const m of diff.matchAll(/^\+\+\+ b\/(.+)$/gm)) files.push(m[1]);
  return files;
}

export class ExperimentDocuments implements vscode.TextDocumentContentProvider, vscode.Disposable {
  private readonly registration: vscode.Disposable;
  private readonly diffs = new Map<string, string>();

  constructor(private readonly root: string) {
    this.registration = vscode.workspace.registerTextDocumentContentProvider(EXPERIMENT_SCHEME, this);
  }

  // overnight-experiment:/<path>?<rev>  (rev "" = empty file); overnight-experiment:/exp-<id>.diff?diff=<id>
  provideTextDocumentContent(uri: vscode.Uri): Promise<string> | string {
    if (uri.query.startsWith("diff=")) return this.diffs.get(uri.query.slice(5)) ?? "";
    if (!uri.query) return "";
    return new Promise((resolve) => {
      execFile("git", ["show", `${uri.query}:${uri.path.replace(/^\//, "")}`], { cwd: this.root, maxBuffer: 32 << 20 },
        (err, stdout) => resolve(err ? "" : stdout));
    });
  }

  /** Opens the experiment's change: the diff editor on its first file, or its unified diff as text. */
  async open(detail: ExperimentDetail): Promise<void> {
    const e = detail.experiment;
    const files = diffFiles(detail.diff);
    const options = { preserveFocus: true, preview: true };
    if (!detail.diff.trim()) {
      void vscode.window.showInformationMessage(`Overnight: #${e.id} changed nothing (${e.kind}).`);
      return;
    }
    if (e.commit && files.length > 0) {
      const before = vscode.Uri.from({ scheme: EXPERIMENT_SCHEME, path: "/" + files[0], query: `${e.commit}^` });
      const after = vscode.Uri.from({ scheme: EXPERIMENT_SCHEME, path: "/" + files[0], query: e.commit });
      await vscode.commands.executeCommand("vscode.diff", before, after, `#${e.id} ${e.status}: ${e.description}`, options);
      return;
    }
    this.diffs.set(String(e.id), detail.diff);
    const uri = vscode.Uri.from({ scheme: EXPERIMENT_SCHEME, path: `/experiment-${e.id}.diff`, query: `diff=${e.id}` });
    const doc = await vscode.languages.setTextDocumentLanguage(await vscode.workspace.openTextDocument(uri), "diff");
    await vscode.window.showTextDocument(doc, options);
  }

  dispose(): void {
    this.registration.dispose();
  }
}
