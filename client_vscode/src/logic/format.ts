// Formatting shared by the status bar, the sidebar and the inline suggestions. No vscode import.
import type { ExperimentSummary, JsonValue, LoopState, LoopStatus, Phase, RunProgress, Status } from "../protocol";

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
  pausing: "pausing",
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
  pausing: "debug-pause",
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
  held: "warning",
  pruned: "debug-step-over",
};

/** What each status means, for tooltips: a held experiment in particular is waiting for the user. */
export const STATUS_TITLE: Partial<Record<Status, string>> = {
  held: "held for you: val improved, but the holdout got worse beyond noise; the branch did not advance",
  invalid: "refused: a frozen file, a bad patch, a broken seal or a failed harness check",
  pruned: "stopped early: its training loss clearly trailed the incumbent's at the same share of the budget",
};

/** Where the run in flight is, in words. */
export const PHASE_LABEL: Record<Phase, string> = {
  starting: "starting the run",
  training: "training",
  exporting: "exporting the model",
  evaluating: "evaluating (pinned harness)",
  waiting: "waiting for the machine",
};

/** What an unsealed session means (LoopStatus.sealed === false): the sidebar's banner says this. */
export const UNSEALED_TEXT =
  "Runs are NOT sealed (sandbox = \"none\" in overnight.toml): a training run can read the validation data, " +
  "write the journal and reach the network, so this session's numbers are not protected against a run that games them. " +
  "Set sandbox = \"bwrap\" for sealed runs (a new session).";

/** What a reported-metric session means (LoopStatus.reportedMetric set): the sidebar's banner says this. */
export function reportedText(metric: string): string {
  return `This session's ${metric} is the training script's own printout (measure = "reported" in overnight.toml), ` +
    "not measured by Overnight's pinned harness: nothing stops the code under test from printing any number it likes. " +
    "Kept changes rest on that number.";
}

/** The share of the gain that survived a transfer check: "62% of the gain survived (ratio 0.62)". */
export function transferText(ratio: number | undefined): string {
  if (ratio === undefined || !Number.isFinite(ratio)) return "\u2014";
  return `${Math.round(100 * ratio)}% of the gain survived (ratio ${ratio.toFixed(2)})`;
}

function num(v: JsonValue | undefined): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

function minus(v: number, places: number): string {
  return v.toFixed(places).replace("-", MINUS);
}

function signed(v: number, places = 4): string {
  return (v < 0 || Object.is(v, -0) ? MINUS : "+") + Math.abs(v).toFixed(places);
}

type Evidence = { [key: string]: JsonValue };

/**
 * The one formatting of a decision's numbers, as the daemon's `decide.describe` writes it:
 * "2.4120 → 2.3801 bpb (Δ −0.0319, t = 4.1 on 9 df, bar 2.9)"; a baseline's "2.4120 ± 0.0070 bpb over 3 runs";
 * the old judge's z and keep_sigma; "" when there is nothing to state.
 */
export function describeEvidence(ev: Evidence | undefined | null): string {
  if (!ev) return "";
  const unit = typeof ev.unit === "string" ? ev.unit : "bpb";
  const inc = num(ev.incumbent_mean);
  const cand = num(ev.candidate_mean);
  if (inc === undefined || cand === undefined) {
    const mean = num(ev.mean);
    const sigma = num(ev.sigma);
    if (mean === undefined) return "";
    const over = Array.isArray(ev.runs) ? ` over ${ev.runs.length} runs` : "";
    return sigma !== undefined ? `${mean.toFixed(4)} \u00b1 ${sigma.toFixed(4)} ${unit}${over}` : `${mean.toFixed(4)} ${unit}${over}`;
  }
  const parts = [`\u0394 ${signed(cand - inc)}`];
  const t = num(ev.t);
  const df = num(ev.df);
  const z = num(ev.z);
  if (t !== undefined) parts.push(`t = ${minus(t, 1)}` + (df !== undefined ? ` on ${df.toFixed(0)} df` : ""));
  else if (z !== undefined) parts.push(`z = ${minus(z, 1)}`);
  let bar = num(ev.bar);
  if (bar === undefined) {
    const threshold = num(ev.threshold);
    const stderr = num(ev.stderr);
    bar = threshold !== undefined && stderr ? threshold / stderr : num(ev.keep_sigma);
  }
  if (bar !== undefined) parts.push(`bar ${minus(bar, 1)}`);
  return `${inc.toFixed(4)} \u2192 ${cand.toFixed(4)} ${unit} (${parts.join(", ")})`;
}

/** The tests behind a decision, each in describe()'s words: val, and a keep's holdout and OOD tests. */
export function evidenceLines(ev: Evidence | undefined | null): [string, string][] {
  if (!ev) return [];
  const out: [string, string][] = [];
  const val = describeEvidence(ev);
  if (val) out.push([ev.incumbent_mean === undefined ? "baseline" : "val test", val]);
  for (const [key, label] of [["holdout", "holdout test"], ["ood", "OOD test"]] as const) {
    const test = ev[key];
    if (!test || typeof test !== "object" || Array.isArray(test)) continue;
    const text = describeEvidence(test);
    if (!text) continue;
    const t = num(test.t);
    const bar = num(test.bar);
    out.push([label, text + (t !== undefined && bar !== undefined ? (t < bar ? ": worse beyond noise" : ": not worse beyond noise") : "")]);
  }
  return out;
}

export interface CheckMark {
  name: string;
  ok: boolean | undefined;
  /** A failed check's evidence: "window_start 512, cut 64". */
  evidence: string;
}

function plain(v: JsonValue): string {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(4);
  if (Array.isArray(v)) return v.map(plain).join(", ");
  if (v && typeof v === "object") return Object.entries(v).map(([k, x]) => `${k} ${plain(x)}`).join(", ");
  return String(v);
}

/** The harness's self-checks of a run: each with ✓ / ✗, a failed one with its evidence. */
export function checkMarks(checks: Evidence | undefined): CheckMark[] {
  return Object.entries(checks ?? {}).map(([name, v]) => {
    const ok = v && typeof v === "object" && !Array.isArray(v) ? v.ok : v;
    const evidence = ok === false && v && typeof v === "object" && !Array.isArray(v)
      ? Object.entries(v).filter(([k]) => k !== "ok").map(([k, x]) => `${k} ${plain(x)}`).join(", ")
      : "";
    return { name, ok: typeof ok === "boolean" ? ok : undefined, evidence };
  });
}

/** Fraction of the budget a run has used, clamped to [0, 1]. */
export function budgetFraction(p: Pick<RunProgress, "elapsed" | "budget">): number {
  if (!(p.budget > 0)) return 0;
  return Math.min(1, Math.max(0, p.elapsed / p.budget));
}

export function experimentLabel(e: Pick<ExperimentSummary, "id" | "kind">): string {
  return e.kind === "baseline" ? `#${e.id} baseline` : `#${e.id}`;
}

/** The description to show after experimentLabel: a baseline's is usually just "baseline" (not said twice). */
export function labelledDescription(e: Pick<ExperimentSummary, "kind" | "description">): string {
  return e.kind === "baseline" && e.description.trim().toLowerCase() === "baseline" ? "" : e.description;
}

/** What the status bar says. `progress` is the latest frame of the experiment in flight, if any. */
export function statusBarText(status: LoopStatus | undefined, connected: boolean, progress?: RunProgress): string {
  if (!connected) return "$(debug-disconnect) Overnight: disconnected";
  if (!status) return "$(loading~spin) Overnight: connecting";
  const parts = [`$(${STATE_ICON[status.state]}) Overnight: ${STATE_LABEL[status.state]}`];
  const cur = status.current;
  if (cur && (status.state === "running" || status.state === "baseline" || status.state === "paused")) {
    let run = experimentLabel(cur);
    // Past training (exporting, evaluating) or before it (waiting for the machine), the phase says more than a %.
    if (status.phase && status.phase !== "training" && status.phase !== "starting") run += ` ${status.phase}`;
    else if (progress && progress.experimentId === cur.id) run += ` ${Math.round(100 * budgetFraction(progress))}%`;
    parts.push(run);
  }
  if (status.best) parts.push(`best ${bpb(status.best.valBpb)}`);
  if (status.sealed === false) parts.push("$(unlock) unsealed");
  if (status.reportedMetric) parts.push(`$(warning) reported ${status.reportedMetric}`);
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
  if (status.sigma !== undefined) lines.push(`Noise σ (pooled over the session's unchanged code): ${status.sigma.toFixed(4)}`);
  if (status.phase && status.current) lines.push(`Run in flight: ${PHASE_LABEL[status.phase]}`);
  if (status.transferRatio !== undefined) lines.push(`Transfer check: ${transferText(status.transferRatio)}`);
  if (status.flags?.length) lines.push(`Flagged for you: ${status.flags[status.flags.length - 1]}`);
  if (status.sealed === false) lines.push(UNSEALED_TEXT);
  if (status.reportedMetric) lines.push(reportedText(status.reportedMetric));
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

/** The notification for a decided experiment: a keep (the night's news) or a held keep (the user's call); none
 * for discards, crashes and baselines. */
export function decisionNotice(e: Pick<ExperimentSummary, "id" | "kind" | "status" | "delta" | "description">):
  { level: "info" | "warning"; text: string } | undefined {
  if (e.kind !== "experiment") return undefined;
  const d = delta(e.delta);
  const gain = d ? ` ${d} bpb` : "";
  if (e.status === "keep") return { level: "info", text: `Overnight: #${e.id} kept:${gain} \u2014 ${e.description}` };
  if (e.status === "held") {
    return { level: "warning", text: `Overnight: #${e.id} held for you:${gain} on val, but its holdout got worse \u2014 ${e.description}` };
  }
  return undefined;
}
