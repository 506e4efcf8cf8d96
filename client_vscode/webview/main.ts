// The sidebar's webview: renders the view model the extension posts; the loss chart is uPlot.
import { html, nothing, render, type TemplateResult } from "lit-html";
import { repeat } from "lit-html/directives/repeat.js";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import "./style.css";
import type { ViewModel } from "../src/logic/viewModel";
import { alignSeries } from "../src/logic/curve";

declare function acquireVsCodeApi(): { postMessage(m: unknown): void };
const vscode = acquireVsCodeApi();
const app = document.getElementById("app")!;

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

const FILTERS = ["all", "keep", "held", "discard", "pruned", "crash", "timeout", "invalid", "running", "interrupted"];

const post = (m: unknown) => vscode.postMessage(m);

function button(label: string, command: string, args: unknown[] = [], cls = "", disabled = false): TemplateResult {
  // data-cmd names the command for tests and for anyone reading the DOM; the handler is bound directly.
  return html`<button class=${cls} data-cmd=${command} ?disabled=${disabled}
    @click=${() => post({ type: "command", command, args })}>${label}</button>`;
}

function connection(vm: ViewModel): TemplateResult | typeof nothing {
  if (vm.connection === "connected") return nothing;
  return html`<div class="banner ${vm.connection}">
    <strong>${vm.connection === "connecting" ? "Connecting…" : "Disconnected"}</strong> ${vm.connectionMessage}
    <div class="row">${button("Start the daemon", "overnight.startDaemon")}${button("Retry", "overnight.connect", [], "secondary")}</div></div>`;
}

function reported(vm: ViewModel): TemplateResult | typeof nothing {
  if (!vm.reported) return nothing;
  return html`<div class="banner unsealed" id="reported" role="alert"><strong>Reported metric.</strong> ${vm.reported}</div>`;
}

function unsealed(vm: ViewModel): TemplateResult | typeof nothing {
  if (!vm.unsealed) return nothing;
  return html`<div class="banner unsealed" id="unsealed" role="alert"><strong>Unsealed runs.</strong> ${vm.unsealed}</div>`;
}

function flags(vm: ViewModel): TemplateResult | typeof nothing {
  if (vm.flags.length === 0) return nothing;
  return html`<ul class="flags" id="flags" aria-label="Flagged for you">
    ${vm.flags.map((f) => html`<li class="flag">\u26a0 ${f}</li>`)}</ul>`;
}

function loop(vm: ViewModel): TemplateResult | typeof nothing {
  if (!vm.state) return nothing;
  const paused = vm.state.value === "paused";
  // Without a daemon the last state is history, not the loop: greyed, its controls off (the banner says what to do).
  const offline = vm.connection !== "connected";
  return html`<div class=${offline ? "offline" : ""} id="loop-body">
    <div class="state state-${vm.state.value}" id="loop-state">${offline ? "last seen: " : ""}${vm.state.label}</div>
    ${vm.state.message ? html`<div class="message">${vm.state.message}</div>` : nothing}
    ${unsealed(vm)}${reported(vm)}${flags(vm)}
    <div class="row controls">${paused ? button("Resume", "overnight.resume", [], "", offline) : button("Pause", "overnight.pause", [], "", offline)}
      ${button("Stop after this experiment", "overnight.stopAfterCurrent", [], "secondary", offline)}
      ${button("Redirect…", "overnight.redirect", [], "secondary", offline)}</div>
    <dl class="summary">${vm.summary.map(([k, v]) => html`<dt>${k}</dt><dd>${v}</dd>`)}</dl></div>`;
}

function running(vm: ViewModel): TemplateResult {
  const r = vm.running;
  if (vm.connection !== "connected") return html`<div class="muted">Not connected: nothing live to show.</div>`;
  if (!r) return html`<div class="muted">No experiment in flight.</div>`;
  return html`<div class="run-title"><strong>${r.title}</strong> ${r.description}</div>
    ${r.phase ? html`<div class="phase phase-${r.phase}" id="run-phase">${r.phaseLabel}</div>` : nothing}
    <div class="bar"><div style="width:${(100 * r.progress).toFixed(1)}%"></div></div>
    <div class="muted">${r.detail}</div>
    ${r.also ? html`<div class="muted" id="run-also">${r.also}</div>` : nothing}`;
}

function agent(vm: ViewModel): TemplateResult | typeof nothing {
  if (!vm.agent) return nothing;
  return html`<h3>Agent <span class="muted">${vm.agent.streaming ? "thinking…" : "last thought"}</span></h3>
    <pre class="thought">${vm.agent.text}</pre>`;
}

function suggestions(vm: ViewModel): TemplateResult | typeof nothing {
  if (vm.connection !== "connected") return nothing;
  if (vm.suggestions.length === 0) {
    // An empty state, not a vanished section: the user who just accepted the last change sees why it is gone.
    return html`<h3>Suggestions</h3><div class="muted" id="no-suggestions">No pending suggestions: the kept changes you
      do not have yet appear here, and inline in the training script.</div>`;
  }
  return html`<h3>Suggestions <span class="count">${vm.suggestions.length}</span></h3>
    ${repeat(vm.suggestions, (s) => s.id, (s) => html`<div class="suggestion">
      <div><strong>${s.file}</strong> ${s.experiments} · ${s.hunks} change${s.hunks === 1 ? "" : "s"}</div>
      <div class="muted">${s.evidence}</div>
      <div class="row">${button("Go to", "overnight.revealSuggestion", [s.id])}${button("Accept all", "overnight.acceptSuggestion", [s.id], "secondary")}
        ${button("Reject…", "overnight.rejectSuggestion", [s.id], "secondary")}${button("Diff", "overnight.showSuggestionDiff", [s.id], "secondary")}</div>
    </div>`)}`;
}

function ideas(vm: ViewModel): TemplateResult | typeof nothing {
  const q = vm.ideas;
  if (vm.connection !== "connected" || !q) return nothing;
  const add = button("Add…", "overnight.addIdea", [], "secondary");
  if (q.empty) {
    return html`<h3>Ideas</h3><div class="muted" id="no-ideas">The agent states what it means to try before its next
      proposal; approve, veto or add your own here.</div><div class="row">${add}</div>`;
  }
  return html`<h3>Ideas ${q.undecided ? html`<span class="count" title="waiting for your decision">${q.undecided}</span>` : nothing}</h3>
    <div class="muted" id="ideas-policy">${q.policy}</div><div class="row">${add}</div>
    ${repeat(q.groups, (g) => g.name, (g) => html`<div class="direction direction-${g.state}" data-direction=${g.name}>
      <div class="direction-head"><strong>${g.name}</strong> <span class="muted">${g.state === "open" ? "" : `${g.state} · `}${g.stats}</span>
        ${g.plateau ? html`<span class="plateau" title="many tries without a keep">plateau</span>` : nothing}
        <span class="actions">${g.state === "pinned" || g.state === "closed"
          ? button(g.state === "pinned" ? "Unpin" : "Reopen", "overnight.openDirection", [g.name], "link")
          : html`${button("Pin", "overnight.pinDirection", [g.name], "link")}${button("Close", "overnight.closeDirection", [g.name], "link")}`}</span></div>
      <ul class="ideas">${repeat(g.ideas, (i) => i.id, (i) => html`<li class="idea idea-${i.state}" data-idea=${i.id}>
        <span class="idea-state" title=${i.state}>${i.state === "approved" ? "✓" : i.state === "vetoed" ? "✗" : "?"}</span>
        <span class="idea-text"><span class="text">${i.text}</span>${i.source ? html` <span class="mine">(${i.source})</span>` : nothing}${i.reason
          ? html` <span class="muted">— ${i.reason}</span>` : nothing}${i.tested ? html` <span class="muted">${i.tested}</span>` : nothing}</span>
        <span class="actions">${i.canApprove ? button(i.approveLabel, "overnight.approveIdea", [i.id], "link") : nothing}${i.canVeto
          ? button("Veto…", "overnight.vetoIdea", [i.id], "link") : nothing}${button("↑", "overnight.moveIdeaToTop", [i.id], "link icon")}</span>
      </li>`)}</ul></div>`)}`;
}

function experiments(vm: ViewModel): TemplateResult {
  const select = (id: number) => post({ type: "select", id });
  return html`<h3>Experiments <span id="exp-total">(${vm.total})</span>
      <select id="filter" aria-label="Filter by status" .value=${vm.filter}
        @change=${(e: Event) => post({ type: "filter", value: (e.target as HTMLSelectElement).value })}>
        ${FILTERS.map((f) => html`<option value=${f} ?selected=${f === vm.filter}>${f}</option>`)}</select></h3>
    <table id="exp-table" role="grid"><tr><th>#</th><th>description</th><th>Δbpb</th><th>status</th></tr>
      ${repeat(vm.experiments, (e) => e.id, (e) => html`<tr class="exp ${e.selected ? "selected" : ""}" data-exp=${e.id} tabindex="0"
          title="${e.description} · val_bpb ${e.bpb}${e.statusTitle ? ` · ${e.statusTitle}` : ""}" @click=${() => select(e.id)}
          @keydown=${(k: KeyboardEvent) => { if (k.key === "Enter") select(e.id); }}>
        <td>${e.label.replace(" baseline", "")}</td><td class="desc">${e.description}</td>
        <td class="delta ${e.tone}">${e.delta}</td><td><span class="status status-${e.status}" title=${e.statusTitle}>${e.status}</span>${e.review
          ? html` <span class="review" title=${e.reviewTitle} aria-label=${e.reviewTitle}>${e.review}</span>` : nothing}</td></tr>`)}</table>
    ${vm.more ? html`<div class="row"><button id="more" class="secondary" @click=${() => post({ type: "more" })}>Older experiments…</button></div>` : nothing}`;
}

// lit-html patches only the parts whose values changed: progress frames arrive several times a second,
// and re-creating the controls on each would swallow a click (mousedown and mouseup on different
// buttons) and drop keyboard focus. The chart host is a stable element that uPlot fills.
function view(vm: ViewModel): TemplateResult {
  return html`<section id="conn">${connection(vm)}</section>
    <section id="loop">${loop(vm)}</section>
    <section id="running"><h3>Running</h3><div id="run-info">${running(vm)}</div>
      <div id="chart" class="chart" data-points=${vm.curve.current.length} data-incumbent-points=${vm.curve.incumbent.length}></div></section>
    <section id="agent">${agent(vm)}</section>
    <section id="suggestions">${suggestions(vm)}</section>
    <section id="ideas">${ideas(vm)}</section>
    <section id="experiments">${experiments(vm)}</section>`;
}

let drawn = false;

function draw(vm: ViewModel): void {
  if (!drawn) app.replaceChildren(); // the "Loading…" placeholder; lit-html renders after existing content
  drawn = true;
  render(view(vm), app);
  const c = ensureChart(document.getElementById("chart")!);
  c.setData(alignSeries(vm.curve.incumbent, vm.curve.current) as uPlot.AlignedData);
}

window.addEventListener("message", (e: MessageEvent<{ type: string; model: ViewModel }>) => {
  if (e.data.type === "model") draw(e.data.model);
});
vscode.postMessage({ type: "ready" });
