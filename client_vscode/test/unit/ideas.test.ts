// The hypothesis queue in the sidebar: grouped by direction with its numbers, each idea with what the user may do.
import { strict as assert } from "node:assert";
import { test } from "node:test";
import { ideasView } from "../../src/logic/ideas";
import type { IdeaQueue } from "../../src/protocol";

const queue: IdeaQueue = {
  tag: "nov30", policy: "not-vetoed", plateauAfter: 5,
  ideas: [
    { id: 3, direction: "optimizer", text: "raising LR", source: "agent", state: "approved", experimentIds: [14, 16] },
    { id: 4, direction: "optimizer", text: "lowering BETA2", source: "agent", state: "proposed", experimentIds: [] },
    { id: 5, direction: "model size", text: "doubling N_LAYER", source: "agent", state: "vetoed", reason: "too slow", experimentIds: [] },
    { id: 6, direction: "yours", text: "cosine schedule", source: "human", state: "approved", experimentIds: [] },
  ],
  directions: [
    { name: "optimizer", state: "pinned", ideas: 2, tries: 2, keeps: 1, gain: 0.0131, plateau: false },
    { name: "model size", state: "closed", ideas: 1, tries: 5, keeps: 0, gain: 0, plateau: true },
    { name: "yours", state: "open", ideas: 1, tries: 0, keeps: 0, gain: 0, plateau: false },
  ],
};

test("the queue is grouped by direction with tries, keeps, gain and the plateau", () => {
  const v = ideasView(queue)!;
  assert.equal(v.policy, "The agent draws every idea you have not vetoed.");
  assert.equal(v.undecided, 1);
  assert.deepEqual(v.groups.map((g) => [g.name, g.state, g.stats, g.plateau]), [
    ["optimizer", "pinned", "2 tries \u00b7 1 kept \u00b7 gain +0.0131", false],
    ["model size", "closed", "5 tries \u00b7 0 kept \u00b7 gain +0.0000", true],
    ["yours", "open", "0 tries \u00b7 0 kept \u00b7 gain +0.0000", false],
  ]);
  assert.deepEqual(v.groups[0].ideas.map((i) => i.id), [3, 4]);
});

test("each idea offers what can change: approve, veto, reopen", () => {
  const rows = ideasView(queue)!.groups.flatMap((g) => g.ideas);
  const by = new Map(rows.map((r) => [r.id, r]));
  assert.deepEqual([by.get(3)!.canApprove, by.get(3)!.canVeto, by.get(3)!.tested], [false, true, "#14 #16"]);
  assert.deepEqual([by.get(4)!.canApprove, by.get(4)!.canVeto, by.get(4)!.approveLabel], [true, true, "Approve"]);
  assert.deepEqual([by.get(5)!.canApprove, by.get(5)!.canVeto, by.get(5)!.approveLabel, by.get(5)!.reason],
    [true, false, "Reopen", "too slow"]);
  assert.equal(by.get(6)!.source, "yours");
});

test("an approved-only policy says so; no queue yet is no section", () => {
  assert.equal(ideasView({ ...queue, policy: "approved" })!.policy, "The agent draws only ideas you approved.");
  assert.equal(ideasView(undefined), undefined);
  assert.equal(ideasView({ ...queue, ideas: [], directions: [] })!.empty, true);
});
