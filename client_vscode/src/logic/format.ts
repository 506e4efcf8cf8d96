// Formatting shared by the status bar, the sidebar and the inline suggestions. No vscode import.
import type { ExperimentSummary, LoopState, LoopStatus, RunProgress, Status } from "../protocol";

const MINUS = "\u2212";

/** val_bpb with three decimals, or an em dash when unknown. */
export function bpb(value: number | undefined | null): string {
  return value === undefined || value === null || !Number.isFinite(value) ? "\u2014" : value.toFixed(3);
}

/** A signed bpb difference: "−0.012" (better) or "+0.040" (worse), a true minus sign. */
export function delta(value: number | undefined | null): string {
  if (value === undefined || value === null || !Number.isFinite(value)) return "";
  const s = Math.abs(value).toFixed(3);
  if (s === "0.000") return "\u00b10.000";
  return (value < 0 ? MINUS : "+") + s;
}

/** Seconds as "42s", "3m 05s", "1h 02m". */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

export const STATE_LABEL: Record<LoopState, string> = {
  idle: "idle",
  preparing: "preparing data",
  baseline: "measuring the baseline",
  proposing: "agent proposing",
  running: "running",
  paused: "paused",
  stopping: "stopping",
  stopped: "stopped",
  error: "error",
};

/** A codicon per loop state. */
export const STATE_ICON: Record<LoopState, string> = {
  idle: "circle-large-outline",
  preparing: "database",
  baseline: "pulse",
  proposing: "lightbulb",
  running: "sync~spin",
  paused: "debug-pause",
  stopping: "loading~spin",
  stopped: "debug-stop",
  error: "error",
};

/** A codicon per experiment status. */
export const STATUS_ICON: Record<Status, string> = {
  running: "sync~spin",
  interrupted: "debug-disconnect",
  keep: "pass-filled",
  discard: "circle-slash",
  crash: "flame",
  timeout: "watch",
  invalid: "error",
};

/** Fraction of the budget a run has used, clamped to [0, 1]. */
export function budgetFraction(p: Pick<RunProgress, "elapsed" | "budget">): number {
  if (!(p.budget > 0)) return 0;
  return Math.min(1, Math.max(0, p.elapsed / p.budget));
}

export function experimentLabel(e: Pick<ExperimentSummary, "id" | "kind">): string {
  return e.kind === "baseline" ? `#${e.id} baseline` : `#${e.id}`;
}

/** What the status bar says. `progress` is the latest frame of the experiment in flight, if any. */
export function statusBarText(status: LoopStatus | undefined, connected: boolean, progress?: RunProgress): string {
  if (!connected) return "$(debug-disconnect) Overnight: disconnected";
  if (!status) return "$(loading~spin) Overnight: connecting";
  const parts = [`$(${STATE_ICON[status.state]}) Overnight: ${STATE_LABEL[status.state]}`];
  const cur = status.current;
  if (cur && (status.state === "running" || status.state === "baseline" || status.state === "paused")) {
    let run = experimentLabel(cur);
    if (progress && progress.experimentId === cur.id) run += ` ${Math.round(100 * budgetFraction(progress))}%`;
    parts.push(run);
  }
  if (status.best) parts.push(`best ${bpb(status.best.valBpb)}`);
  return parts.join(" \u00b7 ");
}

export function statusBarTooltip(status: LoopStatus | undefined, connected: boolean): string {
  if (!connected) return "No Overnight daemon is connected. Click to open the sidebar; the command 'Overnight: Start the Daemon' starts one.";
  if (!status) return "Connecting to the Overnight daemon";
  const lines = [
    `Loop: ${STATE_LABEL[status.state]}${status.message ? ` (${status.message})` : ""}`,
    `Session: ${status.tag ?? "none yet"} · agent ${status.agent} · budget ${status.budget}s (${status.clock} clock)`,
    `Experiments: ${status.experiments}, kept ${status.kept}`,
  ];
  if (status.best) lines.push(`Best val_bpb: ${bpb(status.best.valBpb)} (#${status.best.id})`);
  if (status.sigma !== undefined) lines.push(`Noise floor σ: ${status.sigma.toFixed(4)}`);
  return lines.join("\n");
}

/** A training budget typed by the user: seconds > 0 ("90", "90s", "1.5"); undefined when it is not one. */
export function parseBudget(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d*)?|\.\d+)\s*s?\s*$/i.exec(text);
  if (!m) return undefined;
  const seconds = Number(m[1]);
  return Number.isFinite(seconds) && seconds > 0 ? seconds : undefined;
}

/** The status-bar hint while the cursor is on a suggested change: the keys that act on it. */
export function hunkKeysText(platform: string): string {
  const mod = platform === "darwin" ? "\u2318\u2325" : "Ctrl+Alt+";
  return `$(check) ${mod}Y accept  $(close) ${mod}N reject`;
}
