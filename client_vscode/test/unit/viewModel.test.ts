import { strict as assert } from "node:assert";
import { test } from "node:test";
import type { ExperimentSummary, LoopStatus } from "../../src/protocol";
import { SidebarModel, THOUGHT_TAIL } from "../../src/logic/viewModel";

const exp = (id: number, status: ExperimentSummary["status"], d?: number): ExperimentSummary => ({
  id, kind: id === 1 ? "baseline" : "experiment", status, description: `e${id}`, agent: "replay", created: id, delta: d,
});
const status: LoopStatus = { state: "running", agent: "replay", budget: 2, clock: "cpu", experiments: 1, kept: 1, protocolVersion: "1.0", best: { id: 2, valBpb: 2.5 } };

test("the sidebar fills from status, the list and live notifications", () => {
  const m = new SidebarModel();
  m.setConnection("connected");
  m.setStatus(status);
  m.setExperiments(2, [exp(2, "keep", -0.4), exp(1, "keep")]);
  assert.equal(m.wantedIncumbent(), 2);
  m.setIncumbent({ experiment: exp(2, "keep", -0.4), hypothesis: "", reasoning: "", diff: "", runs: [
    { run: 0, seed: 1, status: "ok", curve: [[1, 0.1, 5], [2, 0.2, 4]], started: 0, finished: 1 }] });
  assert.equal(m.wantedIncumbent(), undefined);
  m.experimentStarted({ experiment: exp(3, "running"), runsPlanned: 2 });
  m.progress({ experimentId: 3, run: 0, step: 5, elapsed: 1, budget: 2, trainLoss: 4.5 });
  m.progress({ experimentId: 3, run: 0, step: 9, elapsed: 1.5, budget: 2, trainLoss: 4.0 });
  let v = m.view();
  assert.equal(v.running?.title, "#3");
  assert.equal(v.running?.progress, 0.75);
  assert.match(v.running!.detail, /run 1\/2 · step 9/);
  assert.deepEqual(v.curve.current, [[1, 4.5], [1.5, 4.0]]);
  assert.deepEqual(v.curve.incumbent, [[0.1, 5], [0.2, 4]]);
  assert.deepEqual(v.experiments.map((e) => [e.label, e.status, e.delta, e.tone]), [
    ["#3", "running", "", "none"], ["#2", "keep", "\u22120.400", "better"], ["#1 baseline", "keep", "", "none"]]);
  m.experimentFinished(exp(3, "discard", 0.1));
  v = m.view();
  assert.equal(v.running, undefined);
  assert.equal(v.experiments[0].tone, "worse");
  assert.equal(v.total, 3);
});

test("a second run of the same experiment restarts the live curve", () => {
  const m = new SidebarModel();
  m.progress({ experimentId: 3, run: 0, step: 5, elapsed: 1, budget: 2, trainLoss: 4.5 });
  m.progress({ experimentId: 3, run: 1, step: 1, elapsed: 0.1, budget: 2, trainLoss: 5 });
  assert.deepEqual(m.view().curve.current, [[0.1, 5]]);
});

test("suggestions come and go; a filtered list ignores other statuses", () => {
  const m = new SidebarModel();
  const s = { id: "s1", uri: "file:///ws/trainer/train.py", experimentIds: [2], hunks: [], evidence: "ev", state: "pending" as const };
  m.setSuggestions([s]);
  assert.deepEqual(m.view().suggestions.map((x) => [x.file, x.experiments]), [["train.py", "#2"]]);
  m.suggestionRemoved("s1");
  assert.equal(m.view().suggestions.length, 0);
  m.filter = "keep";
  m.setExperiments(1, [exp(2, "keep")]);
  m.experimentStarted({ experiment: exp(3, "running"), runsPlanned: 1 });
  assert.deepEqual(m.view().experiments.map((e) => e.id), [2]);
});

test("the agent's thought streams in chunks; the next thought replaces a finished one; long ones keep their end", () => {
  const m = new SidebarModel();
  assert.equal(m.view().agent, undefined);
  m.thought({ text: "Try a ", done: false });
  m.thought({ text: "wider MLP.", done: false });
  assert.deepEqual(m.view().agent, { text: "Try a wider MLP.", streaming: true });
  m.thought({ text: "", done: true });
  assert.deepEqual(m.view().agent, { text: "Try a wider MLP.", streaming: false });
  m.thought({ text: "Now warmup.", done: false });
  assert.equal(m.view().agent?.text, "Now warmup.");
  m.thought({ text: "x".repeat(THOUGHT_TAIL * 2) + "END", done: true });
  const t = m.view().agent!.text;
  assert.equal(t.length, THOUGHT_TAIL + 1);
  assert.ok(t.startsWith("…") && t.endsWith("END"));
});

test("older experiments page in below the listed ones, without duplicates", () => {
  const m = new SidebarModel();
  m.setExperiments(5, [exp(5, "keep"), exp(4, "discard")]);
  assert.equal(m.view().more, true);
  m.appendExperiments(5, [exp(4, "discard"), exp(3, "crash"), exp(2, "keep"), exp(1, "keep")]);
  assert.deepEqual(m.view().experiments.map((e) => e.id), [5, 4, 3, 2, 1]);
  assert.equal(m.view().more, false);
});

test("a client attaching mid-run draws the run's curve so far from the status", () => {
  const m = new SidebarModel();
  m.setStatus({ ...status, current: exp(3, "running"), live: { experimentId: 3, run: 1, runsPlanned: 2,
    curve: [[0, 0, 5.5], [10, 0.5, 4.2], [20, 1.0, 3.9]] } });
  let v = m.view();
  assert.deepEqual(v.curve.current, [[0, 5.5], [0.5, 4.2], [1.0, 3.9]]);
  assert.match(v.running!.detail, /run 2\/2 · step 20/);
  assert.equal(v.running?.progress, 0.5);
  // Live frames continue the adopted curve; a later status with fewer points does not cut it back.
  m.progress({ experimentId: 3, run: 1, step: 30, elapsed: 1.5, budget: 2, trainLoss: 3.7 });
  m.setStatus({ ...status, current: exp(3, "running"), live: { experimentId: 3, run: 1, runsPlanned: 2, curve: [[0, 0, 5.5]] } });
  v = m.view();
  assert.equal(v.curve.current.length, 4);
  assert.deepEqual(v.curve.current[3], [1.5, 3.7]);
});

test("the experiment list marks what the user did with each experiment's changes", () => {
  const m = new SidebarModel();
  const base = { kind: "experiment" as const, status: "keep" as const, agent: "sweep", created: 0 };
  m.setExperiments(3, [
    { ...base, id: 3, description: "c", review: "mixed" },
    { ...base, id: 2, description: "b", review: "rejected" },
    { ...base, id: 1, description: "a" },
  ]);
  const rows = m.view().experiments;
  assert.deepEqual(rows.map((r) => r.review), ["\u00b1", "\u2717", ""]);
  assert.match(rows[0].reviewTitle, /accepted some/);
});
