// The sidebar's webview: renders the view model the extension posts; the loss chart is uPlot.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import "./style.css";
import type { ViewModel } from "../src/logic/viewModel";
import { alignSeries } from "../src/logic/curve";

declare function acquireVsCodeApi(): { postMessage(m: unknown): void };
const vscode = acquireVsCodeApi();
const app = document.getElementById("app")!;

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

function cssVar(name: string, fallback: string): string {
  return getComputedStyle(document.body).getPropertyValue(name).trim() || fallback;
}

let chart: uPlot | undefined;
let chartHost: HTMLElement | undefined;

function ensureChart(host: HTMLElement): uPlot {
  if (chart && chartHost === host) return chart;
  chart?.destroy();
  const fg = cssVar("--vscode-foreground", "#ccc");
  const grid = cssVar("--vscode-editorWidget-border", "rgba(128,128,128,.25)");
  const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, font: "11px sans-serif" };
  chart = new uPlot({
    width: Math.max(160, host.clientWidth),
    height: 170,
    legend: { show: true, live: false },
    cursor: { show: false },
    scales: { x: { time: false } },
    axes: [{ ...axis, label: "seconds of budget", labelSize: 14, labelFont: "11px sans-serif", size: 30 }, { ...axis, size: 40 }],
    series: [
      {},
      { label: "incumbent", stroke: cssVar("--vscode-charts-green", "#89d185"), width: 1.5, dash: [5, 4], spanGaps: true, points: { show: false } },
      { label: "current", stroke: cssVar("--vscode-charts-blue", "#3794ff"), width: 2, spanGaps: true, points: { show: false } },
    ],
  }, [[], [], []], host);
  chartHost = host;
  new ResizeObserver(() => chart?.setSize({ width: Math.max(160, host.clientWidth), height: 170 })).observe(host);
  return chart;
}

const FILTERS = ["all", "keep", "discard", "crash", "timeout", "invalid", "running", "interrupted"];
let root: { skeleton: boolean } = { skeleton: false };

function skeleton(): void {
  app.innerHTML = `
  <section id="conn"></section>
  <section id="loop"></section>
  <section id="running"><h3>Running</h3><div id="run-info"></div><div id="chart" class="chart"></div></section>
  <section id="suggestions"></section>
  <section id="experiments"><h3>Experiments <span id="exp-total"></span>
    <select id="filter" aria-label="Filter by status">${FILTERS.map((f) => `<option value="${f}">${f}</option>`).join("")}</select></h3>
    <table id="exp-table" role="grid"></table></section>
  <section id="detail"></section>`;
  (document.getElementById("filter") as HTMLSelectElement).addEventListener("change", (e) =>
    vscode.postMessage({ type: "filter", value: (e.target as HTMLSelectElement).value }));
  app.addEventListener("click", (e) => {
    const el = (e.target as HTMLElement).closest<HTMLElement>("[data-cmd],[data-exp]");
    if (!el) return;
    if (el.dataset.exp) vscode.postMessage({ type: "select", id: Number(el.dataset.exp) });
    else vscode.postMessage({ type: "command", command: el.dataset.cmd, args: el.dataset.args ? JSON.parse(el.dataset.args) : [] });
  });
  root.skeleton = true;
}

function button(label: string, cmd: string, args: unknown[] = [], cls = ""): string {
  return `<button class="${cls}" data-cmd="${esc(cmd)}" data-args="${esc(JSON.stringify(args))}">${esc(label)}</button>`;
}

function render(vm: ViewModel): void {
  if (!root.skeleton) skeleton();
  const conn = document.getElementById("conn")!;
  conn.innerHTML = vm.connection === "connected" ? "" : `<div class="banner ${vm.connection}">
    <strong>${vm.connection === "connecting" ? "Connecting…" : "Disconnected"}</strong> ${esc(vm.connectionMessage)}
    <div class="row">${button("Start the daemon", "overnight.startDaemon")}${button("Retry", "overnight.connect", [], "secondary")}</div></div>`;
  const loop = document.getElementById("loop")!;
  if (vm.state) {
    const paused = vm.state.value === "paused";
    loop.innerHTML = `<div class="state state-${esc(vm.state.value)}" id="loop-state">${esc(vm.state.label)}</div>
      ${vm.state.message ? `<div class="message">${esc(vm.state.message)}</div>` : ""}
      <div class="row controls">${paused ? button("Resume", "overnight.resume") : button("Pause", "overnight.pause")}
        ${button("Stop after this experiment", "overnight.stopAfterCurrent", [], "secondary")}
        ${button("Redirect…", "overnight.redirect", [], "secondary")}</div>
      <dl class="summary">${vm.summary.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("")}</dl>`;
  } else loop.innerHTML = "";
  const info = document.getElementById("run-info")!;
  info.innerHTML = vm.running
    ? `<div class="run-title"><strong>${esc(vm.running.title)}</strong> ${esc(vm.running.description)}</div>
       <div class="bar"><div style="width:${(100 * vm.running.progress).toFixed(1)}%"></div></div>
       <div class="muted">${esc(vm.running.detail)}</div>`
    : `<div class="muted">No experiment in flight.</div>`;
  const host = document.getElementById("chart")!;
  const c = ensureChart(host);
  c.setData(alignSeries(vm.curve.incumbent, vm.curve.current) as uPlot.AlignedData);
  c.setSeries(1, { show: true });
  host.dataset.points = String(vm.curve.current.length);
  host.dataset.incumbentPoints = String(vm.curve.incumbent.length);
  const sug = document.getElementById("suggestions")!;
  sug.innerHTML = vm.suggestions.length === 0 ? "" : `<h3>Suggestions <span class="count">${vm.suggestions.length}</span></h3>
    ${vm.suggestions.map((s) => `<div class="suggestion"><div><strong>${esc(s.file)}</strong> ${esc(s.experiments)} · ${s.hunks} change${s.hunks === 1 ? "" : "s"}</div>
      <div class="muted">${esc(s.evidence)}</div>
      <div class="row">${button("Go to", "overnight.revealSuggestion", [s.id])}${button("Accept all", "overnight.acceptSuggestion", [s.id], "secondary")}
      ${button("Reject…", "overnight.rejectSuggestion", [s.id], "secondary")}${button("Diff", "overnight.showSuggestionDiff", [s.id], "secondary")}</div></div>`).join("")}`;
  document.getElementById("exp-total")!.textContent = `(${vm.total})`;
  (document.getElementById("filter") as HTMLSelectElement).value = vm.filter;
  document.getElementById("exp-table")!.innerHTML = `<tr><th>#</th><th>description</th><th>Δbpb</th><th>status</th></tr>` +
    vm.experiments.map((e) => `<tr class="exp ${e.selected ? "selected" : ""}" data-exp="${e.id}" tabindex="0" title="${esc(e.description)} · val_bpb ${esc(e.bpb)}">
      <td>${esc(e.label.replace(" baseline", ""))}</td><td class="desc">${esc(e.description)}</td>
      <td class="delta ${e.tone}">${esc(e.delta)}</td><td><span class="status status-${e.status}">${esc(e.status)}</span></td></tr>`).join("");
  const d = vm.detail;
  document.getElementById("detail")!.innerHTML = d ? `<h3>${esc(d.title)}</h3>
    <dl class="summary">${d.metrics.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("")}</dl>
    ${d.decision ? `<h4>Decision</h4><p>${esc(d.decision)}</p>` : ""}
    ${d.error ? `<h4>Error</h4><pre>${esc(d.error)}</pre>` : ""}
    ${d.hypothesis ? `<h4>Hypothesis</h4><p>${esc(d.hypothesis)}</p>` : ""}
    <h4>Agent's reasoning</h4><p>${d.reasoning ? esc(d.reasoning) : '<span class="muted">none recorded</span>'}</p>
    <div class="row">${button("Open diff", "overnight.showExperiment", [d.id])}</div>` : "";
}

window.addEventListener("message", (e: MessageEvent<{ type: string; model: ViewModel }>) => {
  if (e.data.type === "model") render(e.data.model);
});
vscode.postMessage({ type: "ready" });
