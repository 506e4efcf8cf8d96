// Loss curves for the sidebar's chart: the run in flight against the incumbent's. Pure.

export type Point = [x: number, y: number];

/** At most `max` points, evenly picked, always keeping the first and the last. */
export function downsample(points: readonly Point[], max: number): Point[] {
  if (points.length <= max || max < 2) return points.slice();
  const out: Point[] = [];
  const stride = (points.length - 1) / (max - 1);
  for (let i = 0; i < max; i++) out.push(points[Math.round(i * stride)]);
  return out;
}

/** [step, elapsed, loss] triples (RunSummary.curve) → (elapsed, loss) points, sorted by elapsed. */
export function fromRunCurve(curve: readonly (readonly [number, number, number])[]): Point[] {
  return curve.filter((c) => Number.isFinite(c[1]) && Number.isFinite(c[2])).map((c): Point => [c[1], c[2]]).sort((a, b) => a[0] - b[0]);
}

/**
 * uPlot wants one shared x array and one y array per series: the union of both series' x values,
 * with null where a series has no point at that x.
 */
export function alignSeries(a: readonly Point[], b: readonly Point[]): [number[], (number | null)[], (number | null)[]] {
  const xs = Array.from(new Set([...a.map((p) => p[0]), ...b.map((p) => p[0])])).sort((p, q) => p - q);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ya: (number | null)[] = xs.map(() => null);
  const yb: (number | null)[] = xs.map(() => null);
  for (const [x, y] of a) ya[index.get(x)!] = y;
  for (const [x, y] of b) yb[index.get(x)!] = y;
  return [xs, ya, yb];
}

/** Appends a live point, keeping x increasing (a frame that goes back in time starts a new run). */
export function appendPoint(points: Point[], p: Point, max = 2000): Point[] {
  if (points.length > 0 && p[0] < points[points.length - 1][0]) return [p];
  const next = points.concat([p]);
  return next.length > max ? downsample(next, Math.ceil(max / 2)) : next;
}
