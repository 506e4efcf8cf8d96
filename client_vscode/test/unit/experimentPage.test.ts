import { strict as assert } from "node:assert";
import { test } from "node:test";
import { esc, experimentPage, lossChart } from "../../src/logic/experimentPage";
import { detailView } from "../../src/logic/viewModel";
import type { ExperimentDetail } from "../../src/protocol";

const detail: ExperimentDetail = {
  experiment: { id: 7, kind: "experiment", status: "keep", description: "LR <b>up</b> & \"warm\"", valBpb: 2.2, delta: -0.03,
    agent: "claude", created: 0, finished: 1, review: "accepted" },
  hypothesis: "", reasoning: "<script>alert(1)</script>", diff: "", evidence: { incumbent_id: 3 },
  runs: [{ run: 0, seed: 1, status: "ok", valBpb: 2.2, curve: [[1, 0.5, 5.0], [2, 1.0, 4.0], [3, 1.5, 3.5]], started: 0, finished: 1 }],
};

test("the page escapes everything the agent wrote and links only to the diff", () => {
  const html = experimentPage(detailView(detail), { current: [[0, 5], [1, 4]], incumbent: [[0, 5.1], [1, 4.2]], incumbentLabel: "incumbent #3" },
    "vscode-resource:", "command:overnight.showExperimentDiff?%5B7%5D");
  assert.ok(!html.includes("<script>") && html.includes("&lt;script&gt;alert(1)&lt;/script&gt;"));
  assert.ok(html.includes("LR &lt;b&gt;up&lt;/b&gt; &amp; &quot;warm&quot;"));
  assert.ok(html.includes("default-src 'none'") && !/script-src/.test(html));
  assert.equal((html.match(/href="/g) ?? []).length, 1);
  assert.ok(html.includes("your review") && html.includes("incumbent #3"));
});

test("the chart draws the experiment against the incumbent, and says when there is no curve", () => {
  const svg = lossChart({ current: [[0, 5], [0.5, 4], [1, 3]], incumbent: [[0, 5], [1, 3.2]], incumbentLabel: "incumbent #3" });
  assert.equal((svg.match(/<polyline/g) ?? []).length, 2);
  assert.ok(svg.includes('class="current"') && svg.includes('class="incumbent"'));
  assert.match(lossChart({ current: [], incumbent: [], incumbentLabel: "" }), /No loss curve/);
  assert.equal((lossChart({ current: [[0, 5], [1, 4]], incumbent: [], incumbentLabel: "" }).match(/<polyline/g) ?? []).length, 1);
  assert.equal(esc(`<&>"'`), "&lt;&amp;&gt;&quot;&#39;");
});
