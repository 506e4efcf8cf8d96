// What the sidebar says about how a session measures: the phase of the run in flight, unsealed runs, flags,
// the transfer check, held experiments, starved and invalid runs, holdout and OOD, the decision's numbers.
import { strict as assert } from "node:assert";
import { test } from "node:test";
import type { ExperimentDetail, ExperimentSummary, LoopStatus } from "../../src/protocol";
import { checkMarks, describeEvidence, evidenceLines, reportedText, statusBarText, statusBarTooltip, UNSEALED_TEXT } from "../../src/logic/format";
import { newFlags, SidebarModel } from "../../src/logic/viewModel";

const exp = (id: number, status: ExperimentSummary["status"], d?: number): ExperimentSummary => ({
  id, kind: id === 1 ? "baseline" : "experiment", status, description: `e${id}`, agent: "replay", created: id, delta: d,
});
const running: LoopStatus = {
  state: "running", tag: "t", agent: "replay", budget: 60, clock: "steps", experiments: 3, kept: 1, protocolVersion: "1.3",
  best: { id: 2, valBpb: 2.37 }, current: exp(4, "running"), sigma: 0.0052,
};

test("describeEvidence states a decision exactly as the daemon's describe() does", () => {
  // The expected strings are the output of overnight.daemon.decide.describe for the same evidence.
  assert.equal(describeEvidence({ incumbent_mean: 2.412, candidate_mean: 2.3801, t: 4.1234, df: 9, bar: 2.912 }),
    "2.4120 \u2192 2.3801 bpb (\u0394 \u22120.0319, t = 4.1 on 9 df, bar 2.9)");
  assert.equal(describeEvidence({ incumbent_mean: 2.4303, candidate_mean: 2.523, t: -19.82, df: 3, bar: -3.48 }),
    "2.4303 \u2192 2.5230 bpb (\u0394 +0.0927, t = \u221219.8 on 3 df, bar \u22123.5)");
  assert.equal(describeEvidence({ incumbent_mean: 2.41, candidate_mean: 2.37, z: 3.1, keep_sigma: 2.0 }),
    "2.4100 \u2192 2.3700 bpb (\u0394 \u22120.0400, z = 3.1, bar 2.0)");
  assert.equal(describeEvidence({ incumbent_mean: 2.41, candidate_mean: 2.37, z: 3.1, threshold: 0.02, stderr: 0.01 }),
    "2.4100 \u2192 2.3700 bpb (\u0394 \u22120.0400, z = 3.1, bar 2.0)");
  assert.equal(describeEvidence({ runs: [1, 2, 3], mean: 2.41, sigma: 0.007 }), "2.4100 \u00b1 0.0070 bpb over 3 runs");
  assert.equal(describeEvidence({ mean: 2.41 }), "2.4100 bpb");
  assert.equal(describeEvidence({ check: "causal" }), "");
  assert.equal(describeEvidence(undefined), "");
});

test("evidenceLines: the val test and a keep's holdout test, with its verdict", () => {
  const ev = {
    incumbent_mean: 2.41, candidate_mean: 2.359, t: 11.2, df: 3, bar: 6.7,
    holdout: { incumbent_mean: 2.4303, candidate_mean: 2.523, t: -19.8, df: 3, bar: -3.5 },
  };
  assert.deepEqual(evidenceLines(ev), [
    ["val test", "2.4100 \u2192 2.3590 bpb (\u0394 \u22120.0510, t = 11.2 on 3 df, bar 6.7)"],
    ["holdout test", "2.4303 \u2192 2.5230 bpb (\u0394 +0.0927, t = \u221219.8 on 3 df, bar \u22123.5): worse beyond noise"],
  ]);
  assert.deepEqual(evidenceLines({ runs: [1, 2], mean: 2.4, sigma: 0.01 }), [["baseline", "2.4000 \u00b1 0.0100 bpb over 2 runs"]]);
});

test("checkMarks: each check ✓ or ✗, a failed one with its evidence", () => {
  assert.deepEqual(checkMarks({ load: { ok: true, format: "x" }, causal: { ok: false, cut: 64, replaced_with: "random bytes", deviation: 0.25 } }), [
    { name: "load", ok: true, evidence: "" },
    { name: "causal", ok: false, evidence: "cut 64, replaced_with random bytes, deviation 0.2500" },
  ]);
  assert.deepEqual(checkMarks(undefined), []);
});

test("the sidebar shows the phase, an unsealed banner, the newest flags first and the transfer ratio", () => {
  const m = new SidebarModel();
  m.setConnection("connected");
  m.setStatus({ ...running, phase: "evaluating", sealed: false, flags: ["f1", "f2", "f3", "f4"], transferRatio: 0.625 });
  m.progress({ experimentId: 4, run: 0, step: 410, elapsed: 59, budget: 60, trainLoss: 2.1 });
  const v = m.view();
  assert.equal(v.running?.phase, "evaluating");
  assert.equal(v.running?.phaseLabel, "evaluating (pinned harness)");
  assert.equal(v.running?.progress, 1); // the budget is spent while the harness evaluates
  assert.equal(v.unsealed, UNSEALED_TEXT);
  assert.match(v.unsealed!, /NOT sealed/);
  assert.deepEqual(v.flags, ["f4", "f3", "f2"]);
  assert.deepEqual(v.summary.find(([k]) => k === "transfer"), ["transfer", "63% of the gain survived (ratio 0.63)"]);
  assert.deepEqual(v.summary.find(([k]) => k.startsWith("noise")), ["noise σ (pooled)", "0.0052"]);
  m.setStatus({ ...running, phase: "waiting", sealed: true });
  const w = m.view();
  assert.equal(w.unsealed, undefined);
  assert.deepEqual(w.flags, []);
  assert.equal(w.running?.phaseLabel, "waiting for the machine");
  assert.equal(w.summary.find(([k]) => k === "transfer"), undefined);
});

test("a reported-metric session gets a banner, a status-bar mark and a tooltip line", () => {
  const m = new SidebarModel();
  m.setConnection("connected");
  m.setStatus({ ...running, reportedMetric: "val_bpb" });
  const v = m.view();
  assert.equal(v.reported, reportedText("val_bpb"));
  assert.match(v.reported!, /script's own printout/);
  assert.match(statusBarText({ ...running, reportedMetric: "val_bpb" }, true), /reported val_bpb$/);
  assert.match(statusBarTooltip({ ...running, reportedMetric: "val_bpb" }, true), /not measured by Overnight's pinned harness/);
  m.setStatus(running);
  assert.equal(m.view().reported, undefined);
});

test("the status bar says the phase past training and an unsealed session; the tooltip explains", () => {
  const s: LoopStatus = { ...running, phase: "evaluating", sealed: false, transferRatio: 0.5, flags: ["gap grew"] };
  assert.equal(statusBarText(s, true), "$(sync~spin) Overnight: running \u00b7 #4 evaluating \u00b7 best 2.370 \u00b7 $(unlock) unsealed");
  const tip = statusBarTooltip(s, true);
  assert.match(tip, /Run in flight: evaluating/);
  assert.match(tip, /Transfer check: 50% of the gain survived/);
  assert.match(tip, /Flagged for you: gap grew/);
  assert.match(tip, /NOT sealed/);
  assert.equal(statusBarText({ ...running, phase: "training" }, true, { experimentId: 4, run: 0, step: 1, elapsed: 30, budget: 60, trainLoss: 3 }),
    "$(sync~spin) Overnight: running \u00b7 #4 50% \u00b7 best 2.370");
});

test("held experiments are listed distinctly; the detail shows holdout, OOD, the tests and starved/invalid runs", () => {
  const m = new SidebarModel();
  m.setExperiments(3, [exp(3, "held", -0.05), exp(2, "keep", -0.04), exp(1, "keep")]);
  const rows = m.view().experiments;
  assert.equal(rows[0].status, "held");
  assert.equal(rows[0].icon, "warning");
  assert.match(rows[0].statusTitle, /held for you/);
  assert.equal(rows[1].statusTitle, "");
  const detail: ExperimentDetail = {
    experiment: { ...exp(5, "invalid"), valBpb: undefined }, hypothesis: "", reasoning: "", diff: "",
    decisionReason: "run 2 refused: the model looks at future bytes", decidedBy: "loop",
    evidence: { check: "causal" }, holdoutBpb: 2.43, oodBpb: 3.31,
    runs: [
      { run: 0, seed: 500, status: "starved", error: "too little CPU", stepsPlanned: 450, cpuSeconds: 12.25, curve: [], started: 0, finished: 1 },
      { run: 1, seed: 501, status: "invalid", error: "the model looks at future bytes", checks: { causal: { ok: false, cut: 64 } },
        curve: [], started: 1, finished: 2 },
      { run: 2, seed: 502, status: "ok", valBpb: 2.36, holdoutBpb: 2.52, oodBpb: 3.26, trainBpb: 2.26, steps: 410, stepsPlanned: 450,
        cpuSeconds: 58.2, checks: { load: { ok: true } }, flags: ["val far below train"], curve: [], started: 2, finished: 3 },
    ],
  };
  m.detail = detail;
  const d = m.view().detail!;
  assert.deepEqual(d.metrics.find(([k]) => k === "holdout bpb"), ["holdout bpb", "2.430"]);
  assert.deepEqual(d.metrics.find(([k]) => k === "OOD bpb"), ["OOD bpb", "3.310"]);
  assert.deepEqual(d.evidence, []);
  assert.deepEqual(d.runs.map((r) => [r.label, r.status, r.measured]), [
    ["run 1 \u00b7 seed 500", "starved", false], ["run 2 \u00b7 seed 501", "invalid", false], ["run 3 \u00b7 seed 502", "ok", true]]);
  assert.equal(d.runs[0].error, "starved: not a measurement, it ran again: too little CPU");
  assert.equal(d.runs[0].accounting, "\u2014/450 steps \u00b7 12.3 CPU s");
  assert.equal(d.runs[1].error, "invalid: the model looks at future bytes");
  assert.deepEqual(d.runs[1].checks, [{ name: "causal", ok: false, evidence: "cut 64" }]);
  assert.equal(d.runs[2].values, "val 2.360 \u00b7 holdout 2.520 \u00b7 OOD 3.260 \u00b7 train 2.260");
  assert.equal(d.runs[2].accounting, "410/450 steps \u00b7 58.2 CPU s");
  assert.deepEqual(d.runs[2].flags, ["val far below train"]);
  assert.equal(d.runs[2].error, "");
});

test("newFlags: only flags the client has not seen, none on the first status, all of a new session's", () => {
  assert.deepEqual(newFlags(undefined, { ...running, flags: ["a"] }), []);
  assert.deepEqual(newFlags({ ...running, flags: ["a"] }, { ...running, flags: ["a", "b"] }), ["b"]);
  assert.deepEqual(newFlags(running, { ...running, flags: ["a"] }), ["a"]);
  assert.deepEqual(newFlags({ ...running, flags: ["a"] }, { ...running, flags: ["a"] }), []);
  assert.deepEqual(newFlags({ ...running, flags: ["a"] }, { ...running, tag: "t2", flags: ["a"] }), ["a"]);
});

test("overlapping experiments: the sidebar follows the one started last and names the one being scored", () => {
  const m = new SidebarModel();
  m.setConnection("connected");
  m.setStatus({ ...running, current: exp(5, "running"), phase: "training",
    alsoInFlight: [{ experiment: exp(4, "running"), runsPlanned: 2, phase: "evaluating" }] });
  assert.equal(m.progress({ experimentId: 5, run: 0, step: 10, elapsed: 6, budget: 60, trainLoss: 3.1 }), true);
  // A late frame of #4's training is not #5's: the live curve and bar stay #5's.
  assert.equal(m.progress({ experimentId: 4, run: 0, step: 99, elapsed: 59, budget: 60, trainLoss: 2.0 }), false);
  const v = m.view();
  assert.equal(v.running?.title, "#5");
  assert.equal(v.running?.phase, "training");
  assert.equal(v.running?.progress, 0.1); // #5's own frame, not #4's spent budget
  assert.equal(v.running?.also, "also in flight: #4 evaluating (pinned harness)");
  m.experimentFinished({ ...exp(4, "discard"), valBpb: 2.4 }); // #4 decided: #5 stays the one in flight, alone
  assert.equal(m.view().running?.title, "#5");
  assert.equal(m.view().running?.also, undefined);
});
