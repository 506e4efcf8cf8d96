import { strict as assert } from "node:assert";
import { test } from "node:test";
import type { Suggestion } from "../../src/protocol";
import { anchorLine, applyHunks, countLines, coveredLines, hunkAtLine, type HunkView, hunkViews, isStale, nextHunk, textIn } from "../../src/logic/hunks";

const doc = "import math\nLR = 1e-5\nBATCH = 16\n\ndef f():\n    return 1\n";
const r = (sl: number, sc: number, el: number, ec: number) => ({ start: { line: sl, character: sc }, end: { line: el, character: ec } });
const suggestion = (hunks: Suggestion["hunks"]): Suggestion => ({
  id: "s1", uri: "file:///ws/trainer/train.py", experimentIds: [2], hunks, evidence: "−0.41 bpb, 2 runs", state: "pending",
});

test("line counting follows the editor", () => {
  assert.equal(countLines(""), 0);
  assert.equal(countLines("a"), 1);
  assert.equal(countLines("a\n"), 1);
  assert.equal(countLines("a\nb"), 2);
});

test("a whole-line replacement marks exactly its lines and anchors on the first", () => {
  assert.deepEqual(coveredLines(r(1, 0, 2, 0)), [1, 1]);
  assert.deepEqual(coveredLines(r(1, 0, 3, 0)), [1, 2]);
  assert.deepEqual(coveredLines(r(1, 2, 1, 7)), [1, 1]);
  assert.equal(anchorLine(r(1, 0, 3, 0)), 1);
});

test("a pure insertion marks nothing and anchors on the line before", () => {
  assert.equal(coveredLines(r(3, 0, 3, 0)), undefined);
  assert.equal(anchorLine(r(3, 0, 3, 0)), 2);
  assert.equal(anchorLine(r(0, 0, 0, 0)), 0);
  assert.equal(anchorLine(r(3, 4, 3, 4)), 3);
});

test("text in a range, UTF-16 offsets and clamping", () => {
  assert.equal(textIn(doc, r(1, 0, 2, 0)), "LR = 1e-5\n");
  assert.equal(textIn(doc, r(1, 5, 1, 99)), "1e-5");
  assert.equal(textIn("é€😀x\n", r(0, 2, 0, 4)), "😀");
});

test("a hunk is stale once the buffer no longer holds its old text", () => {
  const h = { id: "h1", range: r(1, 0, 2, 0), oldText: "LR = 1e-5\n", newText: "LR = 3e-3\n" };
  assert.equal(isStale(doc, h), false);
  assert.equal(isStale(doc.replace("1e-5", "2e-5"), h), true);
  assert.equal(isStale(doc.replace(/\n/g, "\r\n"), { ...h, oldText: "LR = 1e-5\r\n" }), false);
});

test("applying hunks (bottom-up) gives the proposed file", () => {
  const out = applyHunks(doc, [
    { id: "a", range: r(1, 0, 2, 0), oldText: "LR = 1e-5\n", newText: "LR = 3e-3\n" },
    { id: "b", range: r(3, 0, 3, 0), oldText: "", newText: "# warm-up\n" },
    { id: "c", range: r(5, 11, 5, 12), oldText: "1", newText: "2" },
  ]);
  assert.equal(out, "import math\nLR = 3e-3\nBATCH = 16\n# warm-up\n\ndef f():\n    return 2\n");
});

test("hunk views: summary with attribution, preview, diff, and the hunk at a line", () => {
  const s = suggestion([
    { id: "h1", range: r(1, 0, 2, 0), oldText: "LR = 1e-5\n", newText: "LR = 3e-3\n" },
    { id: "h2", range: r(4, 0, 6, 0), oldText: "def f():\n    return 1\n", newText: "def f():\n    return 2\n    # done\n" },
  ]);
  const views = hunkViews(doc, s, new Map([[2, -0.4123]]));
  assert.equal(views[0].summary, "+1 \u22121 \u00b7 #2 \u22120.412 bpb");
  assert.equal(views[0].preview, "LR = 3e-3");
  assert.equal(views[0].diffMarkdown, "```diff\n-LR = 1e-5\n+LR = 3e-3\n```");
  assert.equal(views[1].summary, "+3 \u22122 \u00b7 #2 \u22120.412 bpb");
  assert.equal(hunkAtLine(views, 1)?.hunkId, "h1");
  assert.equal(hunkAtLine(views, 5)?.hunkId, "h2");
  assert.equal(hunkAtLine(views, 3), undefined);
  assert.equal(hunkViews(doc, s)[0].summary, "+1 \u22121 \u00b7 #2");
  assert.equal(views[0].evidence, "\u22120.41 bpb, 2 runs");
  const own = hunkViews(doc, suggestion([{ id: "h3", range: r(1, 0, 2, 0), oldText: "LR = 1e-5\n", newText: "LR = 3e-3\n",
    experimentIds: [5, 7], evidence: "#7: 2.41 \u2192 2.38 bpb" }]), new Map([[5, -0.1], [7, -0.02]]));
  assert.equal(own[0].summary, "+1 \u22121 \u00b7 #5 #7 \u22120.120 bpb");
  assert.equal(own[0].evidence, "#7: 2.41 \u2192 2.38 bpb");
});

test("next and previous suggestion wrap around the file", () => {
  const v = (anchor: number) => ({ anchor } as unknown as HunkView);
  const views = [v(30), v(5), v(18)];
  assert.equal(nextHunk(views, 0, 1)?.anchor, 5);
  assert.equal(nextHunk(views, 5, 1)?.anchor, 18);
  assert.equal(nextHunk(views, 30, 1)?.anchor, 5);
  assert.equal(nextHunk(views, 18, -1)?.anchor, 5);
  assert.equal(nextHunk(views, 5, -1)?.anchor, 30);
  assert.equal(nextHunk([], 3, 1), undefined);
});
