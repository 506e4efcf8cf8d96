// An experiment's page in an editor tab: its numbers, the decision and its evidence, every run, the agent's
// reasoning, and its loss curve against the incumbent's it was judged against. Static HTML (no script): the
// chart is inline SVG drawn here, links are command URIs the panel allows. Pure: no vscode import.
import type { DetailView } from "./viewModel";
import type { Point } from "./curve";
import { downsample } from "./curve";

const escapes: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Text as HTML: everything the agent or the user wrote is data, never markup. */
export function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => escapes[c]);
}

export interface Curves {
  /** The experiment's first measured run: (seconds of budget, train loss). */
  current: Point[];
  /** The incumbent's it was compared with, when known. */
  incumbent: Point[];
  incumbentLabel: string;
}

/** Two loss curves on shared axes as an SVG (viewBox units; it scales with the page). */
export function lossChart(curves: Curves, width = 640, height = 240): string {
  const series = [curves.current, curves.incumbent].map((s) => downsample(s.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])), 400));
  const all = series.flat();
  if (all.length < 2) return `<p class="muted" id="no-curve">No loss curve was recorded for this experiment.</p>`;
  const pad = { l: 48, r: 12, t: 10, b: 30 };
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x: number) => pad.l + ((x - x0) / (x1 - x0 || 1)) * (width - pad.l - pad.r);
  const sy = (y: number) => pad.t + (1 - (y - y0) / (y1 - y0 || 1)) * (height - pad.t - pad.b);
  const line = (pts: Point[], cls: string) => pts.length < 2 ? ""
    : `<polyline class="${cls}" fill="none" points="${pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ")}"/>`;
  const ticks = [0, 0.5, 1].map((f) => {
    const x = x0 + f * (x1 - x0);
    const y = y0 + f * (y1 - y0);
    return `<text x="${sx(x).toFixed(1)}" y="${height - 10}" text-anchor="middle">${x.toFixed(x1 - x0 < 10 ? 1 : 0)}</text>`
      + `<text x="${pad.l - 6}" y="${(sy(y) + 4).toFixed(1)}" text-anchor="end">${y.toFixed(2)}</text>`;
  }).join("");
  return `<svg id="loss-chart" viewBox="0 0 ${width} ${height}" role="img" aria-label="train loss over the budget">
  <rect class="frame" x="${pad.l}" y="${pad.t}" width="${width - pad.l - pad.r}" height="${height - pad.t - pad.b}" fill="none"/>
  ${ticks}${line(series[1], "incumbent")}${line(series[0], "current")}
</svg>
<div class="legend"><span class="key current"></span> this experiment
  ${series[1].length >= 2 ? `<span class="key incumbent"></span> ${esc(curves.incumbentLabel)}` : ""}
  <span class="muted">· train loss over seconds of budget</span></div>`;
}

/** The whole page. `csp` is the webview's cspSource; `diffLink` a command URI that opens the experiment's diff. */
export function experimentPage(d: DetailView, curves: Curves, csp: string, diffLink: string): string {
  const dl = (rows: [string, string][]) => `<dl>${rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("")}</dl>`;
  const runs = d.runs.map((r) => `<li class="run run-${esc(r.status)}"><strong>${esc(r.label)}</strong> ${esc(r.status)}
    ${r.values ? ` · ${esc(r.values)}` : ""}${r.accounting ? `<div class="muted">${esc(r.accounting)}</div>` : ""}
    ${r.checks.map((c) => `<span class="check">${c.ok === false ? "\u2717" : c.ok ? "\u2713" : "?"} ${esc(c.name)}</span>`).join(" ")}
    ${r.flags.map((f) => `<div class="flag">\u26a0 ${esc(f)}</div>`).join("")}
    ${r.error ? `<div class="error">${esc(r.error)}</div>` : ""}</li>`).join("");
  return `<!DOCTYPE html><html lang="en"><head><meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src ${csp} 'unsafe-inline'; img-src ${csp} data:;">
<meta name="viewport" content="width=device-width, initial-scale=1.0"><title>${esc(d.title)}</title>
<style>
body { font-family: var(--vscode-font-family); color: var(--vscode-foreground); padding: 0 20px 20px; max-width: 900px; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 1.4em; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; } dt { color: var(--vscode-descriptionForeground); }
.muted { color: var(--vscode-descriptionForeground); }
svg text { fill: var(--vscode-descriptionForeground); font-size: 11px; }
svg .frame { stroke: var(--vscode-editorWidget-border, #8884); }
svg .current { stroke: var(--vscode-charts-blue, #3794ff); stroke-width: 1.6; }
svg .incumbent { stroke: var(--vscode-charts-green, #89d185); stroke-width: 1.4; stroke-dasharray: 5 3; }
.legend .key { display: inline-block; width: 18px; height: 0; vertical-align: middle; margin-left: 10px; }
.legend .key.current { border-top: 2px solid var(--vscode-charts-blue, #3794ff); }
.legend .key.incumbent { border-top: 2px dashed var(--vscode-charts-green, #89d185); }
ul.runs { padding-left: 1.2em; } .run { margin-bottom: 6px; } .error, .flag { color: var(--vscode-errorForeground); }
.check { margin-right: 8px; } pre { white-space: pre-wrap; }
</style></head><body id="experiment-detail" data-experiment="${d.id}">
<h1>${esc(d.title)}</h1>
<p><a href="${esc(diffLink)}">Open the diff</a></p>
${dl(d.metrics)}
<h2>Loss curve</h2>
${lossChart(curves)}
${d.decision ? `<h2>Decision</h2><p>${esc(d.decision)}</p>` : ""}
${d.evidence.length ? dl(d.evidence) : ""}
${d.runs.length ? `<h2>Runs</h2><ul class="runs">${runs}</ul>` : ""}
${d.error ? `<h2>Error</h2><pre>${esc(d.error)}</pre>` : ""}
${d.hypothesis ? `<h2>Hypothesis</h2><p>${esc(d.hypothesis)}</p>` : ""}
<h2>Agent's reasoning</h2>${d.reasoning ? `<pre>${esc(d.reasoning)}</pre>` : `<p class="muted">none recorded</p>`}
</body></html>`;
}
