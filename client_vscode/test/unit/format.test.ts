import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import type { LoopStatus } from "../../src/protocol";
import { bpb, decisionNotice, delta, duration, hunkKeysText, parseBudget, statusBarText } from "../../src/logic/format";

const status: LoopStatus = {
  state: "running", tag: "t", agent: "replay", budget: 2, clock: "cpu", experiments: 3, kept: 1, protocolVersion: "1.0",
  best: { id: 2, valBpb: 2.3312 },
  current: { id: 4, kind: "experiment", status: "running", description: "x", agent: "replay", created: 0 },
};

test("numbers: three decimals, true minus, unknown as a dash", () => {
  assert.equal(bpb(2.33119), "2.331");
  assert.equal(bpb(undefined), "\u2014");
  assert.equal(delta(-0.0123), "\u22120.012");
  assert.equal(delta(0.04), "+0.040");
  assert.equal(delta(0.00001), "\u00b10.000");
  assert.equal(delta(undefined), "");
});

test("durations", () => {
  assert.equal(duration(42.4), "42s");
  assert.equal(duration(185), "3m 05s");
  assert.equal(duration(3720), "1h 02m");
});

test("status bar: state, the current experiment's progress, the best so far; disconnected says so", () => {
  const p = { experimentId: 4, run: 0, step: 10, elapsed: 1, budget: 2, trainLoss: 3 };
  assert.equal(statusBarText(status, true, p), "$(sync~spin) Overnight: running \u00b7 #4 50% \u00b7 best 2.331");
  assert.equal(statusBarText(status, true), "$(sync~spin) Overnight: running \u00b7 #4 \u00b7 best 2.331");
  assert.equal(statusBarText({ ...status, state: "paused", current: undefined }, true), "$(debug-pause) Overnight: paused \u00b7 best 2.331");
  assert.equal(statusBarText(status, false), "$(debug-disconnect) Overnight: disconnected");
});

test("a typed budget: seconds > 0, an optional s; anything else is not one", () => {
  for (const [text, want] of [["90", 90], ["90s", 90], [" 1.5 ", 1.5], [".5", 0.5], ["300 S", 300]] as const) {
    assert.equal(parseBudget(text), want, text);
  }
  for (const text of ["", "0", "-5", "abc", "1e3", "5 min", "NaN", "Infinity", "0.0s"]) assert.equal(parseBudget(text), undefined, text);
});

test("the hunk-at-cursor hint names the keybindings of package.json, per platform", () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "..", "package.json"), "utf8"));
  const keys = Object.fromEntries(pkg.contributes.keybindings.map((k: { command: string; key: string }) => [k.command, k.key]));
  assert.equal(keys["overnight.acceptHunkAtCursor"], "ctrl+alt+y");
  assert.equal(keys["overnight.rejectHunkAtCursor"], "ctrl+alt+n");
  assert.equal(hunkKeysText("linux"), "$(check) Ctrl+Alt+Y accept  $(close) Ctrl+Alt+N reject");
  assert.equal(hunkKeysText("darwin"), "$(check) \u2318\u2325Y accept  $(close) \u2318\u2325N reject");
});

test("a keep and a held keep are announced; discards and baselines are not", () => {
  const base = { id: 17, kind: "experiment" as const, description: "LR 3e-3 \u2192 4e-3", delta: -0.0123 };
  assert.deepEqual(decisionNotice({ ...base, status: "keep" }), { level: "info", text: "Overnight: #17 kept: \u22120.012 bpb \u2014 LR 3e-3 \u2192 4e-3" });
  assert.equal(decisionNotice({ ...base, status: "held" })?.level, "warning");
  assert.equal(decisionNotice({ ...base, status: "discard" }), undefined);
  assert.equal(decisionNotice({ ...base, kind: "baseline", status: "keep" }), undefined);
  assert.equal(decisionNotice({ ...base, delta: undefined, status: "keep" })?.text, "Overnight: #17 kept: \u2014 LR 3e-3 \u2192 4e-3");
});
