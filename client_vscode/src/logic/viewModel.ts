// The sidebar's state, fed by the daemon's replies and notifications, and the plain view model the
// webview draws. Pure: the extension feeds it, the webview renders `view()`.
import type {
  AgentThought, ExperimentDetail, ExperimentStartedParams, ExperimentSummary, IdeaQueue, LiveRun, LoopStatus, Phase, Review,
  RunProgress, RunStatus, RunSummary, Status, Suggestion,
} from "../protocol";
import { appendPoint, downsample, fromRunCurve, type Point } from "./curve";
import { ideasView, type IdeasView } from "./ideas";
import {
  bpb, budgetFraction, type CheckMark, checkMarks, delta, duration, evidenceLines, experimentLabel, labelledDescription, PHASE_LABEL, STATE_ICON,
  reportedText, STATE_LABEL, STATUS_ICON, STATUS_TITLE, transferText, UNSEALED_TEXT,
} from "./format";

export type Connection = "connecting" | "connected" | "disconnected";
export type Filter = "all" | Status;

const REVIEW_MARK: Record<Review, string> = { accepted: "\u2713", rejected: "\u2717", mixed: "\u00b1" };

export interface ExperimentRow {
  id: number;
  label: string;
  description: string;
  status: Status;
  icon: string;
  bpb: string;
  delta: string;
  /** better / worse / none: colours the Δ column. */
  tone: "better" | "worse" | "none";
  selected: boolean;
  /** What the status means, when it needs saying (held: waiting for the user). */
  statusTitle: string;
  /** ✓ accepted, ✗ rejected, ± mixed: what the user did with its suggested changes ("" while undecided). */
  review: string;
  reviewTitle: string;
}

/** One run of the experiment in the detail: starved and invalid runs are not measurements, and say so. */
export interface RunRow {
  label: string;
  status: RunStatus;
  /** An ok run: a measurement. */
  measured: boolean;
  /** "val 2.412 · holdout 2.430 · OOD 3.310 · train 2.310". */
  values: string;
  /** "410/450 steps · 58.2 CPU s". */
  accounting: string;
  checks: CheckMark[];
  flags: string[];
  /** Why it was not a measurement (starved, invalid, crash, timeout). */
  error: string;
}

export interface SuggestionRow {
  id: string;
  file: string;
  experiments: string;
  evidence: string;
  hunks: number;
}

export interface DetailView {
  id: number;
  title: string;
  status: Status;
  metrics: [string, string][];
  /** The decision's tests, each as describe() states them (val, holdout, OOD). */
  evidence: [string, string][];
  runs: RunRow[];
  hypothesis: string;
  reasoning: string;
  decision: string;
  error: string;
}

export interface ViewModel {
  connection: Connection;
  connectionMessage: string;
  state?: { value: string; label: string; icon: string; message: string };
  /** Set when the session's runs are not sealed: what that means. */
  unsealed?: string;
  /** Set when the session's number is the script's own printout (reported mode): what that means. */
  reported?: string;
  /** What the loop flagged for the user, newest first (a few). */
  flags: string[];
  summary: [string, string][];
  running?: { title: string; description: string; progress: number; detail: string; phase?: Phase; phaseLabel?: string;
    /** The others in flight: a model scored while this one trains (overlap), or other slots' runs. */
    also?: string };
  curve: { current: Point[]; incumbent: Point[]; incumbentLabel: string; currentLabel: string };
  filter: Filter;
  total: number;
  experiments: ExperimentRow[];
  suggestions: SuggestionRow[];
  /** More experiments than listed: the sidebar offers the next page. */
  more: boolean;
  /** The agent's reasoning as it streams (the newest part), or its last finished thought. */
  agent?: { text: string; streaming: boolean };
  /** The hypothesis queue: absent until the daemon answered. */
  ideas?: IdeasView;
  detail?: DetailView;
}

const MAX_CURVE_POINTS = 400;
/** The sidebar shows the end of the agent's thought; long plans keep their newest part. */
export const THOUGHT_TAIL = 1200;
/** The newest flags the sidebar shows. */
export const FLAGS_SHOWN = 3;

/** The flags in `after` that `before` did not have: what to notify the user of. Nothing on the first status
 * (a client attaching sees the session's flags in the sidebar, not as a burst of notifications). */
export function newFlags(before: LoopStatus | undefined, after: LoopStatus): string[] {
  if (!before) return [];
  const seen = new Set(before.tag === after.tag ? before.flags ?? [] : []);
  return (after.flags ?? []).filter((f) => !seen.has(f));
}

function runRow(r: RunSummary): RunRow {
  const values = ([["val", r.valBpb], ["holdout", r.holdoutBpb], ["OOD", r.oodBpb], ["train", r.trainBpb]] as const)
    .filter(([, v]) => v !== undefined).map(([k, v]) => `${k} ${bpb(v)}`).join(" \u00b7 ");
  const steps = r.steps !== undefined || r.stepsPlanned !== undefined
    ? `${r.steps ?? "\u2014"}${r.stepsPlanned !== undefined ? `/${r.stepsPlanned}` : ""} steps` : "";
  const cpu = r.cpuSeconds !== undefined ? `${r.cpuSeconds.toFixed(1)} CPU s` : "";
  const why = r.status === "starved" ? "starved: not a measurement, it ran again" : r.status === "invalid" ? "invalid" : r.status;
  return {
    label: `run ${r.run + 1} \u00b7 seed ${r.seed}`,
    status: r.status,
    measured: r.status === "ok",
    values,
    accounting: [steps, cpu].filter(Boolean).join(" \u00b7 "),
    checks: checkMarks(r.checks),
    flags: r.flags ?? [],
    error: r.status === "ok" ? "" : [why, r.error].filter(Boolean).join(": "),
  };
}

/** An experiment's detail as the experiment page shows it (and the tests read it). */
export function detailView(d: ExperimentDetail): DetailView {
  const e = d.experiment;
  const metrics: [string, string][] = [
    ["val_bpb", bpb(e.valBpb)],
    ["\u0394 vs incumbent", delta(e.delta) || "\u2014"],
    ["holdout bpb", bpb(d.holdoutBpb)],
    ["OOD bpb", bpb(d.oodBpb)],
    ["runs", d.runs.map((r) => `seed ${r.seed}: ${r.status === "ok" ? bpb(r.valBpb) : r.status}${r.steps ? ` (${r.steps} steps)` : ""}`).join("; ") || "\u2014"],
  ];
  if (e.commit) metrics.push(["commit", e.commit.slice(0, 10)]);
  if (e.review) metrics.push(["your review", e.review]);
  return {
    id: e.id,
    title: [experimentLabel(e), e.status, labelledDescription(e)].filter(Boolean).join(" \u00b7 "),
    status: e.status,
    metrics,
    evidence: evidenceLines(d.evidence),
    runs: d.runs.map(runRow),
    hypothesis: d.hypothesis,
    reasoning: d.reasoning,
    decision: [d.decisionReason, d.decidedBy ? `(decided by ${d.decidedBy})` : ""].filter(Boolean).join(" "),
    error: d.error ?? "",
  };
}

export class SidebarModel {
  connection: Connection = "connecting";
  connectionMessage = "";
  status?: LoopStatus;
  filter: Filter = "all";
  total = 0;
  experiments: ExperimentSummary[] = [];
  suggestions = new Map<string, Suggestion>();
  detail?: ExperimentDetail;
  private runsPlanned = 1;
  private lastProgress?: RunProgress;
  private liveCurve: Point[] = [];
  private liveRun = -1;
  incumbentId?: number;
  private incumbentCurve: Point[] = [];
  private thoughtText = "";
  private thoughtDone = true;
  ideas?: IdeaQueue;

  setConnection(c: Connection, message = ""): void {
    this.connection = c;
    this.connectionMessage = message;
  }

  setStatus(s: LoopStatus): void {
    this.status = s;
    if (!s.current) this.lastProgress = undefined;
    if (s.live) this.adoptLive(s.live, s.budget);
  }

  /** The daemon's record of the run in flight: a client that attached mid-run draws it from the start. */
  private adoptLive(live: LiveRun, budget: number): void {
    this.runsPlanned = live.runsPlanned;
    const same = this.lastProgress?.experimentId === live.experimentId && this.liveRun === live.run;
    if (same && this.liveCurve.length >= live.curve.length) return; // ours is as complete already
    this.liveRun = live.run;
    this.liveCurve = downsample(fromRunCurve(live.curve), MAX_CURVE_POINTS);
    const last = live.curve[live.curve.length - 1];
    this.lastProgress = last
      ? { experimentId: live.experimentId, run: live.run, step: last[0], elapsed: last[1], budget, trainLoss: last[2] }
      : undefined;
  }

  /** The incumbent whose curve the chart should show, when it differs from the one loaded. */
  wantedIncumbent(): number | undefined {
    const id = this.status?.best?.id;
    return id !== undefined && id !== this.incumbentId ? id : undefined;
  }

  setIncumbent(detail: ExperimentDetail): void {
    this.incumbentId = detail.experiment.id;
    const run = detail.runs.find((r) => r.curve.length > 0);
    this.incumbentCurve = run ? downsample(fromRunCurve(run.curve), MAX_CURVE_POINTS) : [];
  }

  experimentStarted(p: ExperimentStartedParams): void {
    this.runsPlanned = p.runsPlanned;
    this.liveCurve = [];
    this.liveRun = -1;
    this.lastProgress = undefined;
    if (this.status) this.status = { ...this.status, current: p.experiment };
    this.upsert(p.experiment);
  }

  /** A training frame; false (and ignored) when it is not the current experiment's: with overlap or several
   * slots another run may still be training, and the live curve follows the experiment started last. */
  progress(p: RunProgress): boolean {
    const current = this.status?.current;
    if (current && current.id !== p.experimentId) return false;
    if (p.run !== this.liveRun || (this.lastProgress && p.experimentId !== this.lastProgress.experimentId)) {
      this.liveCurve = [];
      this.liveRun = p.run;
    }
    this.lastProgress = p;
    this.liveCurve = appendPoint(this.liveCurve, [p.elapsed, p.trainLoss]);
    return true;
  }

  experimentFinished(e: ExperimentSummary): void {
    this.upsert(e);
    if (!this.status) return;
    // Decided: no longer in flight, whether it was the current one or one beside it (the daemon's next status says
    // which of the others is current now).
    const also = (this.status.alsoInFlight ?? []).filter((f) => f.experiment.id !== e.id);
    this.status = { ...this.status, current: this.status.current?.id === e.id ? undefined : this.status.current,
      alsoInFlight: also.length ? also : undefined };
  }

  setExperiments(total: number, items: ExperimentSummary[]): void {
    this.total = total;
    this.experiments = items;
  }

  /** The next page (older experiments), appended below the ones listed. */
  appendExperiments(total: number, items: ExperimentSummary[]): void {
    const seen = new Set(this.experiments.map((e) => e.id));
    this.total = total;
    this.experiments = [...this.experiments, ...items.filter((e) => !seen.has(e.id))];
  }

  /** A chunk of the agent's streamed reasoning: appended, or the start of a new thought after a done one. */
  thought(p: AgentThought): void {
    if (this.thoughtDone) this.thoughtText = "";
    this.thoughtText = (this.thoughtText + p.text).slice(-4 * THOUGHT_TAIL);
    this.thoughtDone = p.done;
  }

  setSuggestions(items: Suggestion[]): void {
    this.suggestions = new Map(items.filter((s) => s.state === "pending").map((s) => [s.id, s]));
  }

  suggestionAdded(s: Suggestion): void {
    if (s.state === "pending") this.suggestions.set(s.id, s);
    else this.suggestions.delete(s.id);
  }

  suggestionRemoved(id: string): void {
    this.suggestions.delete(id);
  }

  private upsert(e: ExperimentSummary): void {
    if (this.filter !== "all" && e.status !== this.filter) {
      this.experiments = this.experiments.filter((x) => x.id !== e.id);
      return;
    }
    const i = this.experiments.findIndex((x) => x.id === e.id);
    if (i >= 0) this.experiments[i] = e;
    else {
      this.experiments = [e, ...this.experiments].sort((a, b) => b.id - a.id);
      this.total += 1;
    }
  }

  /** Experiment deltas by id, for attributing suggestions. */
  deltas(): Map<number, number | undefined> {
    return new Map(this.experiments.map((e) => [e.id, e.delta]));
  }

  view(): ViewModel {
    const s = this.status;
    const vm: ViewModel = {
      connection: this.connection,
      connectionMessage: this.connectionMessage,
      summary: [],
      curve: {
        current: this.liveCurve,
        incumbent: this.incumbentCurve,
        incumbentLabel: this.incumbentId !== undefined ? `incumbent #${this.incumbentId}` : "incumbent",
        currentLabel: this.lastProgress ? `#${this.lastProgress.experimentId} run ${this.lastProgress.run + 1}` : "current",
      },
      filter: this.filter,
      total: this.total,
      experiments: this.experiments.map((e) => ({
        id: e.id,
        label: experimentLabel(e),
        description: e.description,
        status: e.status,
        icon: STATUS_ICON[e.status],
        bpb: bpb(e.valBpb),
        delta: delta(e.delta),
        tone: e.delta === undefined ? "none" : e.delta < 0 ? "better" : "worse",
        selected: this.detail?.experiment.id === e.id,
        statusTitle: STATUS_TITLE[e.status] ?? "",
        review: e.review ? REVIEW_MARK[e.review] : "",
        reviewTitle: e.review ? `you ${e.review === "mixed" ? "accepted some of its changes and rejected others" : `${e.review} its changes`}` : "",
      })),
      suggestions: [...this.suggestions.values()].map((x) => ({
        id: x.id,
        file: x.uri.split("/").pop() ?? x.uri,
        experiments: x.experimentIds.map((i) => `#${i}`).join(" "),
        evidence: x.evidence,
        hunks: x.hunks.length,
      })),
      more: this.experiments.length < this.total,
      ideas: ideasView(this.ideas),
      flags: [],
    };
    const thought = this.thoughtText.trim();
    if (thought) {
      vm.agent = { text: thought.length > THOUGHT_TAIL ? `…${thought.slice(-THOUGHT_TAIL)}` : thought, streaming: !this.thoughtDone };
    }
    if (s) {
      vm.state = { value: s.state, label: STATE_LABEL[s.state], icon: STATE_ICON[s.state], message: s.message ?? "" };
      if (s.sealed === false) vm.unsealed = UNSEALED_TEXT;
      if (s.reportedMetric) vm.reported = reportedText(s.reportedMetric);
      vm.flags = (s.flags ?? []).slice(-FLAGS_SHOWN).reverse();
      vm.summary = [
        ["best val_bpb", s.best ? `${bpb(s.best.valBpb)} (#${s.best.id})` : "\u2014"],
        ["experiments", `${s.experiments} (${s.kept} kept)`],
        ["noise σ (pooled)", s.sigma !== undefined ? s.sigma.toFixed(4) : "\u2014"],
        ["budget", `${s.budget}s · ${s.clock} clock`],
        ["agent", s.agent],
        ["session", s.tag ?? "\u2014"],
      ];
      if (s.transferRatio !== undefined) vm.summary.push(["transfer", transferText(s.transferRatio)]);
      const cur = s.current;
      if (cur) {
        const p = this.lastProgress && this.lastProgress.experimentId === cur.id ? this.lastProgress : undefined;
        // Past training the budget is spent: the bar shows it full while the model is exported and evaluated.
        const past = s.phase === "exporting" || s.phase === "evaluating";
        vm.running = {
          title: experimentLabel(cur),
          description: labelledDescription(cur),
          progress: past ? 1 : p ? budgetFraction(p) : 0,
          detail: p
            ? `run ${p.run + 1}/${Math.max(this.runsPlanned, p.run + 1)} · step ${p.step} · ${duration(p.elapsed)} of ${duration(p.budget)} · loss ${p.trainLoss.toFixed(3)}`
            : s.phase ? PHASE_LABEL[s.phase] : "starting",
        };
        if (s.phase) {
          vm.running.phase = s.phase;
          vm.running.phaseLabel = PHASE_LABEL[s.phase];
        }
        const others = (s.alsoInFlight ?? []).map((f) => `${experimentLabel(f.experiment)}${f.phase ? ` ${PHASE_LABEL[f.phase]}` : ""}`);
        if (others.length) vm.running.also = `also in flight: ${others.join(", ")}`;
      }
    }
    if (this.detail) vm.detail = detailView(this.detail);
    return vm;
  }
}
