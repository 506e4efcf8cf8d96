import { strict as assert } from "node:assert";
import { test } from "node:test";
import { alignSeries, appendPoint, downsample, fromRunCurve, type Point } from "../../src/logic/curve";

test("downsampling keeps the ends and the budget", () => {
  const pts: Point[] = Array.from({ length: 1001 }, (_, i) => [i, 1000 - i]);
  const d = downsample(pts, 11);
  assert.equal(d.length, 11);
  assert.deepEqual(d[0], [0, 1000]);
  assert.deepEqual(d[10], [1000, 0]);
  assert.equal(downsample(pts.slice(0, 5), 11).length, 5);
});

test("a run curve becomes (elapsed, loss) points sorted by time", () => {
  assert.deepEqual(fromRunCurve([[2, 0.5, 3.1], [1, 0.2, 4.0], [3, NaN, 1]]), [[0.2, 4.0], [0.5, 3.1]]);
});

test("two series share one x axis, with gaps as null", () => {
  assert.deepEqual(alignSeries([[0, 5], [2, 3]], [[1, 4], [2, 2.5]]), [[0, 1, 2], [5, null, 3], [null, 4, 2.5]]);
});

test("live points: time going back starts a new run", () => {
  let pts: Point[] = [];
  pts = appendPoint(pts, [0.1, 5]);
  pts = appendPoint(pts, [0.2, 4]);
  assert.equal(pts.length, 2);
  pts = appendPoint(pts, [0.05, 5.5]);
  assert.deepEqual(pts, [[0.05, 5.5]]);
});
