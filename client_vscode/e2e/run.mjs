// The real-VS-Code suite: a real daemon with a replayed agent and tiny budgets on a scratch workspace,
// code-server (VS Code 1.100.3) with this extension loaded, driven through Debian's chromium with
// playwright-core. Checks what a user sees, saves screenshots, exits non-zero on the first failure.
//
//   node e2e/run.mjs            (from client_vscode/; needs `npm run build` inputs, e2e/install.sh, chromium)
//   E2E_UPDATE_DOCS=1 ...       also copies the screenshots the README shows into ../docs/
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as net from "node:net";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const EXT = path.resolve(HERE, "..");
const REPO = path.resolve(EXT, "..");
const WORK = process.env.E2E_WORK ?? path.join(HERE, ".work");
const SHOTS = path.join(WORK, "shots");
const WS = path.join(WORK, "ws");
const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");
const CODE_SERVER = path.join(HERE, "node_modules", ".bin", "code-server");
const CHROMIUM = process.env.CHROMIUM ?? ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => fs.existsSync(p));
const PY = process.env.OVERNIGHT_PYTHON ?? [path.join(REPO, ".venv", "bin", "python")].find((p) => fs.existsSync(p)) ?? "python3";
const SKIP_SUGGESTIONS = process.env.E2E_SKIP_SUGGESTIONS === "1";
const DATA_DIR = process.env.OVERNIGHT_TEST_DATA_DIR ?? path.join(WORK, "data");
const REASON = "the comment churn is noise";
const THOUGHT = "An LR of 1e-5 is far too low for AdamW at this size: the loss barely moves. 3e-3 is the usual choice.";

const t0 = Date.now();
const lap = (m) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${m}`);
const children = [];
let detachedDaemon; // the daemon the extension started (its own session): stopped by pid at the end

function freePort() {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function git(...args) {
  return execFileSync("git", ["-C", WS, "-c", "user.name=E2E", "-c", "user.email=e2e@localhost", ...args], { encoding: "utf8" });
}

// ---- the scratch workspace: a bad LR the replayed fix is certain to beat, frequent progress frames ----
function makeWorkspace() {
  fs.rmSync(WORK, { recursive: true, force: true });
  fs.mkdirSync(SHOTS, { recursive: true });
  execFileSync(PY, ["-m", "overnight.daemon.cli", "init", WS], { stdio: "inherit" });
  fs.writeFileSync(path.join(WS, "overnight.toml"), [
    'agent = "replay"', 'replay_file = "proposals.jsonl"', "budget = 4.0", "grace = 120.0", "baseline_runs = 2",
    // The browser and code-server keep the machine busy on purpose: runs do not wait for it; no re-runs of the
    // incumbent or transfer checks, so what the suite sees is the replayed proposals alone.
    "machine_share = 0.0", "rerun_every = 0", "transfer_every = 0", "",
  ].join("\n"));
  const trainPath = path.join(WS, "trainer", "train.py");
  const good = fs.readFileSync(trainPath, "utf8");
  const base = good.replace(/^LR = 3e-3 /m, "LR = 1e-5 ").replace(/^REPORT_EVERY_S = 1\.0/m, "REPORT_EVERY_S = 0.1");
  if (base === good) throw new Error("train.py changed shape: update the e2e workspace set-up");
  fs.writeFileSync(trainPath, base);
  fs.writeFileSync(path.join(WS, ".gitignore"), ".overnight/\n");
  git("add", "-A");
  git("commit", "-qm", "e2e workspace");
  // The fix: three distant hunks (the learning rate and two comments): one is accepted from its lens, one from the
  // diff editor's title, one rejected.
  const fixed = base.replace(/^LR = 1e-5 /m, "LR = 3e-3 ").replace("# AdamW beta2\n", "# AdamW beta2 (0.99 is the usual choice)\n")
    .replace("# Setup and data\n", "# Setup and data (bytes in, bytes out)\n");
  // The fix states the hypotheses it means to test next (the queue the user curates in the sidebar).
  const ideas = [
    { direction: "optimizer", text: "a sane learning rate (3e-3) trains far faster", key: "lr" },
    { direction: "optimizer", text: "lower beta2 to 0.95 for the short budget", key: "beta2" },
    { direction: "model size", text: "a wider MLP (MLP_MULT 4 to 6)", key: "mlp" },
  ];
  const proposals = [{ description: "restore a sane learning rate", reasoning: THOUGHT, files: { "trainer/train.py": fixed }, ideas, idea: "lr" }];
  for (let i = 1; i <= 12; i++) proposals.push({ description: `note ${i}`, files: { "trainer/train.py": fixed + `\n# note ${i}\n` } });
  fs.writeFileSync(path.join(WS, "proposals.jsonl"), proposals.map((p) => JSON.stringify(p)).join("\n") + "\n");
  git("add", "-A");
  git("commit", "-qm", "replay proposals");
}

function startDaemon(...extra) {
  const out = fs.openSync(path.join(WORK, "daemon.out"), "a");
  const env = { ...process.env, OVERNIGHT_DATA_DIR: DATA_DIR };
  const p = spawn(PY, ["-m", "overnight.daemon.cli", "-C", WS, "daemon", ...extra], { stdio: ["ignore", out, out], env, detached: true });
  children.push({ name: "daemon", proc: p });
  return p;
}

// `trust`: false opens the folder with workspace trust on (a fresh profile asks whether to trust it).
async function startCodeServer(port, folder = WS, name = "cs-data", trust = true) {
  const data = path.join(WORK, name);
  fs.mkdirSync(path.join(data, "User"), { recursive: true });
  fs.writeFileSync(path.join(data, "User", "settings.json"), JSON.stringify({
    "files.autoSave": "off", // web builds default to afterDelay: an accepted edit would be saved behind our back
    "workbench.startupEditor": "none",
    "workbench.colorTheme": "Default Dark Modern",
    "telemetry.telemetryLevel": "off",
    "security.workspace.trust.enabled": !trust,
    // In the restricted-mode check: asked to auto-start, which restricted mode must ignore.
    ...(trust ? {} : { "overnight.daemon.autoStart": true }),
    "extensions.ignoreRecommendations": true,
    "workbench.tips.enabled": false,
    "editor.minimap.enabled": false,
    "chat.commandCenter.enabled": false,
    "workbench.secondarySideBar.defaultVisibility": "hidden",
    "overnight.pythonPath": PY,
  }, null, 2));
  const xdg = path.join(WORK, "xdg");
  const env = { ...process.env, OVERNIGHT_DATA_DIR: DATA_DIR, XDG_CONFIG_HOME: `${xdg}/config`, XDG_DATA_HOME: `${xdg}/data`, XDG_CACHE_HOME: `${xdg}/cache` };
  const out = fs.openSync(path.join(WORK, `${name}.log`), "w");
  const p = spawn(CODE_SERVER, ["--bind-addr", `127.0.0.1:${port}`, "--auth", "none", "--user-data-dir", data,
    "--extensions-dir", path.join(WORK, "cs-ext"), "--disable-telemetry", "--disable-update-check",
    ...(trust ? ["--disable-workspace-trust"] : []), folder], { stdio: ["ignore", out, out], env, detached: true });
  children.push({ name: "code-server", proc: p });
  for (let i = 0; i < 120; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (r.ok) return p;
    } catch { /* not yet */ }
    await sleep(250);
  }
  throw new Error("code-server did not come up (see code-server.log)");
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, fn, ms = 60000, every = 250) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    const daemon = children.find((c) => c.name === "daemon");
    if (daemon && daemon.proc.exitCode !== null) {
      throw new Error(`the daemon exited (code ${daemon.proc.exitCode}) while waiting for ${what}; see ${path.join(WS, ".overnight", "daemon.log")}`);
    }
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out after ${ms / 1000}s waiting for ${what}${last ? ` (${last.message ?? last})` : ""}`);
    await sleep(every);
  }
}

function cli(...args) {
  return execFileSync(PY, ["-m", "overnight.daemon.cli", "-C", WS, ...args], { encoding: "utf8" });
}

function journalDump() {
  return execFileSync(PY, ["-c", "import sqlite3,sys; print('\\n'.join(sqlite3.connect(sys.argv[1]).iterdump()))",
    path.join(WS, ".overnight", "journal.db")], { encoding: "utf8" });
}

async function sidebarFrame(page) {
  for (const f of page.frames()) {
    try { if (await f.$("#loop-state")) return f; } catch { /* detached */ }
  }
  return undefined;
}

async function editorText(page) {
  return (await page.$eval(".editor-instance .monaco-editor .view-lines", (e) => e.innerText)).replace(/\u00a0/g, " ");
}

// Enter only once the quick pick has filtered down to the wanted item: under load the list lags the
// typing, and Enter would run whatever row was highlighted before.
async function pickWhenFocused(page, label) {
  const row = page.locator(".quick-input-list .monaco-list-row.focused", { hasText: label }).first();
  await row.waitFor({ timeout: 15000 });
  await page.keyboard.press("Enter");
}

async function palette(page, text) {
  await page.keyboard.press("F1");
  await page.waitForSelector(".quick-input-widget input", { state: "visible", timeout: 15000 });
  await page.keyboard.type(text);
  await pickWhenFocused(page, text);
}

const results = [];
async function step(page, name, fn) {
  const s = Date.now();
  try {
    await fn();
    results.push({ name, ok: true, s: (Date.now() - s) / 1000 });
    lap(`PASS ${name}`);
  } catch (e) {
    results.push({ name, ok: false, s: (Date.now() - s) / 1000, err: String(e?.message ?? e) });
    lap(`FAIL ${name}: ${e?.message ?? e}`);
    await page?.screenshot({ path: path.join(SHOTS, `fail-${name.replace(/\W+/g, "-")}.png`) }).catch(() => {});
    throw e;
  }
}

async function shot(page, name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file });
  lap(`screenshot ${file}`);
}

async function main() {
  if (!CHROMIUM) throw new Error("chromium is not installed (apt-get install chromium)");
  if (!fs.existsSync(CODE_SERVER)) throw new Error("code-server is not installed: run client_vscode/e2e/install.sh");
  if (!fs.existsSync(path.join(EXT, "dist", "extension.js"))) throw new Error("the extension is not built: npm run build");
  makeWorkspace();
  lap("workspace ready");
  startDaemon();
  const port = await freePort();
  await startCodeServer(port);
  lap(`code-server up on ${port}`);
  await until("the daemon's discovery file", () => fs.existsSync(path.join(WS, ".overnight", "daemon.json")), 60000);
  lap("daemon up");

  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true,
    env: { ...process.env, XDG_CONFIG_HOME: path.join(WORK, "xdg", "chromium") },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"] });
  const page = await browser.newPage({ viewport: { width: 1360, height: 820 } });
  page.on("pageerror", (e) => console.log("  [page error]", String(e).slice(0, 200)));
  const payload = [["extensionDevelopmentPath", `vscode-remote://127.0.0.1:${port}${EXT}`]];
  try {
    await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(WS)}&payload=${encodeURIComponent(JSON.stringify(payload))}`,
      { waitUntil: "domcontentloaded" });
    let frame;
    await step(page, "the activity bar has Overnight and the sidebar fills", async () => {
      const icon = page.locator('.activitybar [aria-label^="Overnight"]').first();
      await icon.waitFor({ timeout: 90000 });
      await icon.click();
      await page.mouse.move(700, 600); // no tooltip over the sidebar
      frame = await until("the sidebar webview", () => sidebarFrame(page), 30000);
      await until("a loop state in the sidebar", async () => (await frame.textContent("#loop-state"))?.trim(), 30000);
      await until("an experiment row", async () => (await frame.$$("tr.exp")).length > 0, 120000);
    });
    await step(page, "the status bar shows the loop", async () => {
      await page.locator(".statusbar-item", { hasText: "Overnight:" }).first().waitFor({ timeout: 30000 });
    });
    await step(page, "the live loss curve runs against the incumbent's", async () => {
      await until("a running experiment with an incumbent curve", async () => {
        const chart = await frame.$("#chart");
        const cur = Number(await chart.getAttribute("data-points"));
        const inc = Number(await chart.getAttribute("data-incumbent-points"));
        const state = (await frame.textContent("#loop-state"))?.trim();
        return cur >= 8 && inc > 0 && state === "running" && (await frame.textContent("#run-info")).includes("step");
      }, 420000, 100);
      await page.mouse.move(700, 600);
      await sleep(300);
      await shot(page, "vscode-sidebar");
    });
    await step(page, "the agent's thought shows in the sidebar", async () => {
      await until("the thought in the Agent section", async () => (await frame.textContent("#agent"))?.includes("far too low"), 30000);
    });
    await step(page, "Pause in the sidebar asks the loop to pause", async () => {
      // While the fix is in flight: the loop decides it, then waits (no further runs to wait for).
      await frame.click('button[data-cmd="overnight.pause"]', { timeout: 10000 });
      // The click reached the daemon (the sidebar re-renders several times a second meanwhile).
      await until("the pause in the journal", () => journalDump().includes("paused from VS Code"), 15000, 300);
      // The sidebar says so at once ("pausing" while the experiment in flight finishes), not "running" until it ends.
      await until("the sidebar to say pausing", async () => ["pausing", "paused"].includes((await frame.textContent("#loop-state"))?.trim() ?? ""), 5000, 100);
      if (!/pausing after #\d+|paused/.test((await frame.textContent("#loop")) ?? "")) throw new Error("the sidebar does not say what the pause waits for");
    });
    await step(page, "the training script opens", async () => {
      await page.keyboard.press("F1");
      await page.waitForSelector(".quick-input-widget input", { state: "visible" });
      await page.keyboard.press("Backspace");
      await page.keyboard.type("trainer/train.py");
      await pickWhenFocused(page, "train.py");
      await until("train.py in the editor", async () => (await editorText(page)).includes("Byte-level GPT"), 30000);
    });
    if (!SKIP_SUGGESTIONS) {
      const lens = (t) => page.locator(".editor-instance .codelens-decoration a", { hasText: t });
      await step(page, "the suggestion appears inline with its CodeLens", async () => {
        await lens("Accept").first().waitFor({ timeout: 180000 });
        await until("three hunks", async () => (await lens("Accept").count()) === 3, 15000);
        for (const t of ["Reject", "Show diff"]) await lens(t).first().waitFor({ timeout: 5000 });
        await page.mouse.move(5, 400);
        await shot(page, "vscode-suggestion");
      });
      await step(page, "the keep raised a notification", async () => {
        const kept = /Overnight: #\d+ kept: \u2212[0-9.]+ bpb/;
        const toast = page.locator(".notification-toast", { hasText: kept }).first();
        if (!(await toast.isVisible())) {
          // Toasts hide after a few seconds: the notification centre keeps it.
          await palette(page, "Notifications: Show Notifications");
          await page.locator(".notifications-center", { hasText: kept }).first().waitFor({ timeout: 10000 });
          await palette(page, "Notifications: Hide Notifications");
        }
      });
      await step(page, "Next Suggestion puts the cursor on a suggested change", async () => {
        await page.keyboard.press("Control+Home");
        await page.locator(".statusbar-item", { hasText: "Ctrl+Alt+N reject" }).first().waitFor({ state: "hidden", timeout: 10000 });
        await palette(page, "Overnight: Next Suggestion");
        await page.locator(".statusbar-item", { hasText: "Ctrl+Alt+N reject" }).first().waitFor({ timeout: 15000 });
        await until("the cursor on the LR hunk", async () =>
          /Ln 19,/.test((await page.locator(".statusbar-item", { hasText: /^Ln \d+/ }).first().textContent()) ?? ""), 10000);
      });
      await step(page, "Accept changes the buffer, as one edit, without saving", async () => {
        if (!(await editorText(page)).includes("LR = 1e-5")) throw new Error("the buffer did not hold the old LR");
        // The user types a line directly above the hunk while it is pending: the daemon re-anchors it in the live
        // buffer (it is not withdrawn: the user's line touches none of the lines it changes).
        await page.keyboard.press("Control+g");
        await page.keyboard.type("19");
        await page.keyboard.press("Enter");
        await page.keyboard.press("Home");
        await page.keyboard.type("# typed while a suggestion is pending");
        await page.keyboard.press("Enter");
        await sleep(1500);
        await until("every hunk still pending", async () => (await lens("Accept").count()) === 3, 15000);
        // An Accept lens (view zones are not in DOM order) sits between the typed line and the LR line.
        const tops = (await lens("Accept").evaluateAll((els) => els.map((e) => e.getBoundingClientRect().top)));
        const typedBox = await page.locator(".editor-instance .view-line", { hasText: "# typed while a suggestion is pending" }).first().boundingBox();
        const lrBox = await page.locator(".editor-instance .view-line", { hasText: "LR = 1e-5" }).first().boundingBox();
        const lrLens = tops.findIndex((top) => typedBox !== null && lrBox !== null && typedBox.y < top && top < lrBox.y);
        if (lrLens < 0) {
          throw new Error(`no Accept lens between the typed line and the LR line (${typedBox?.y} < [${tops.join(", ")}] < ${lrBox?.y})`);
        }
        await lens("Accept").nth(lrLens).click();
        await until("LR = 3e-3 in the buffer", async () => (await editorText(page)).includes("LR = 3e-3"), 20000);
        const text = await editorText(page);
        if (text.includes("LR = 1e-5") || !text.includes("# typed while a suggestion is pending")) throw new Error("the accept landed in the wrong place");
        const disk = fs.readFileSync(path.join(WS, "trainer", "train.py"), "utf8");
        if (!disk.includes("LR = 1e-5")) throw new Error("the accepted edit was written to disk");
        await until("the accepted hunk's CodeLens gone", async () => (await lens("Accept").count()) === 2, 20000);
      });
      await step(page, "per-line annotations show on the lines experiments touched", async () => {
        await page.keyboard.press("Control+g");
        await page.keyboard.type("19");
        await page.keyboard.press("Enter");
        await until("an inlay hint with a kept experiment", async () => /#\d+ [\u2212+][0-9.]+ keep/.test(await editorText(page)), 180000, 500);
        const lenses = await page.locator(".editor-instance .codelens-decoration a", { hasText: "Accept" }).count();
        lap(`the hint shows; the suggestion's CodeLens ${lenses ? "is already there" : "has not landed yet"}`);
        if (!SKIP_SUGGESTIONS) {
          // The keep that brings the hint also brings its suggestion, whose CodeLens lands above the LR
          // line moments later and moves it down: point at the line once the layout has settled.
          await page.locator(".editor-instance .codelens-decoration a", { hasText: "Accept" }).first().waitFor({ timeout: 60000 });
        }
        const hover = page.locator(".monaco-hover", { hasText: "Experiments that touched this line" })
          .filter({ hasText: "restore a sane learning rate" }).first();
        await until("the hover on the LR line", async () => {
          // As a user would: point again if the line moved under the pointer (a re-render hides a hover).
          await page.mouse.move(5, 400);
          const box = await page.locator(".editor-instance .view-line", { hasText: "LR = " }).first().boundingBox();
          await page.mouse.move(box.x + 30, box.y + box.height / 2, { steps: 3 });
          return hover.waitFor({ timeout: 4000 }).then(() => true);
        }, 30000, 0);
        await sleep(500); // the hover fades in
        await shot(page, "vscode-annotations");
        await page.keyboard.press("Escape");
      });
      await step(page, "a command toggles the annotations", async () => {
        await page.mouse.move(5, 400);
        await palette(page, "Overnight: Toggle Per-Line Metric Annotations");
        lap("toggled off");
        await until("the hints gone", async () => !/#\d+ [\u2212+][0-9.]+ keep/.test(await editorText(page)), 15000);
        lap("the hints are gone");
        await palette(page, "Overnight: Toggle Per-Line Metric Annotations");
        lap("toggled back on");
        await until("the hints back", async () => /#\d+ [\u2212+][0-9.]+ keep/.test(await editorText(page)), 15000);
      });
      await step(page, "Show diff opens the diff editor, whose title accepts the change", async () => {
        // The cursor on the data comment's hunk (line 98, one down for the typed line); the status bar's hint for
        // the hunk at the cursor opens its diff.
        await page.keyboard.press("Control+g");
        await page.keyboard.type("99");
        await page.keyboard.press("Enter");
        const keysHint = page.locator(".statusbar-item", { hasText: "Ctrl+Alt+N reject" }).first();
        await keysHint.waitFor({ timeout: 15000 });
        await keysHint.click();
        const accept = page.locator('.editor-actions [aria-label*="Accept This Suggestion"]').first();
        await accept.waitFor({ timeout: 15000 });
        await shot(page, "vscode-diff");
        await accept.click();
        await until("the diff closed and the change in the buffer", async () =>
          (await page.locator(".monaco-diff-editor").count()) === 0 && (await editorText(page)).includes("(bytes in, bytes out)"), 20000);
        // One hunk left (its lens is off screen from here: the sidebar counts it).
        await until("one change left in the sidebar", async () => /1 change\b/.test((await frame.textContent("#suggestions")) ?? ""), 20000);
      });
      await step(page, "Go to puts the cursor on the hunk; Ctrl+Alt+N rejects it with a reason (Escape cancels)", async () => {
        await frame.click('#suggestions button[data-cmd="overnight.revealSuggestion"]', { timeout: 10000 });
        await until("the cursor on the BETA2 hunk", async () =>
          /Ln 25,/.test((await page.locator(".statusbar-item", { hasText: /^Ln \d+/ }).first().textContent()) ?? ""), 10000);
        // The status bar names the keys once the hunk-at-cursor context key is set.
        const keysHint = page.locator(".statusbar-item", { hasText: "Ctrl+Alt+N reject" }).first();
        await keysHint.waitFor({ timeout: 15000 });
        // Escape cancels: nothing is rejected, the hunk stays.
        await page.keyboard.press("Control+Alt+n");
        await page.waitForSelector(".quick-input-widget input", { state: "visible", timeout: 10000 });
        await page.keyboard.type("changed my mind");
        await page.keyboard.press("Escape");
        await page.waitForSelector(".quick-input-widget", { state: "hidden", timeout: 10000 });
        await sleep(1000);
        if ((await lens("Accept").count()) !== 1 || journalDump().includes("changed my mind")) throw new Error("Escape rejected the hunk");
        await page.keyboard.press("Control+Alt+n");
        await page.waitForSelector(".quick-input-widget input", { state: "visible", timeout: 10000 });
        await page.keyboard.type(REASON);
        await page.keyboard.press("Enter");
        await until("no CodeLens left", async () => (await lens("Accept").count()) === 0, 20000);
        await keysHint.waitFor({ state: "hidden", timeout: 15000 });
        await until("the reason in the journal", () => journalDump().includes(REASON), 15000, 500);
      });
    }
    await step(page, "the loop pauses after the experiment in flight and stays paused", async () => {
      frame = await until("the sidebar webview", () => sidebarFrame(page), 30000);
      await until("the sidebar to say paused", async () => (await frame.textContent("#loop-state"))?.trim() === "paused", 150000, 500);
      await page.locator(".statusbar-item", { hasText: "Overnight: paused" }).first().waitFor({ timeout: 10000 });
      if (!/paused/i.test(cli("status"))) throw new Error("`overnight status` does not say paused");
      const before = cli("results", "--format", "tsv").trim().split("\n").length;
      await sleep(6000);
      if (cli("results", "--format", "tsv").trim().split("\n").length !== before) throw new Error("experiments ran while paused");
      await shot(page, "vscode-paused");
    });
    await step(page, "Redirect sends the agent an instruction", async () => {
      await frame.click('button[data-cmd="overnight.redirect"]');
      await page.waitForSelector(".quick-input-widget input", { state: "visible", timeout: 10000 });
      await page.keyboard.type("try a wider model next");
      await page.keyboard.press("Enter");
      await page.locator(".notification-toast", { hasText: "the agent will see it" }).first().waitFor({ timeout: 15000 });
      if (!journalDump().includes("try a wider model next")) throw new Error("the instruction is not in the journal");
    });
    await step(page, "the idea queue: approve one, veto one with a reason, add one of yours", async () => {
      await until("the agent's ideas in the sidebar", async () => (await frame.$$("li.idea")).length >= 3, 20000);
      const idea = (text) => frame.locator("li.idea", { hasText: text }).first();
      await idea("lower beta2").locator('button[data-cmd="overnight.approveIdea"]').click();
      await until("beta2 approved", async () => (await idea("lower beta2").getAttribute("class")).includes("idea-approved"), 15000, 200);
      await idea("a wider MLP").locator('button[data-cmd="overnight.vetoIdea"]').click();
      await page.waitForSelector(".quick-input-widget input", { state: "visible", timeout: 10000 });
      await page.keyboard.type("too slow for this budget");
      await page.keyboard.press("Enter");
      await until("the MLP idea vetoed, its reason shown", async () => {
        const li = idea("a wider MLP");
        return (await li.getAttribute("class")).includes("idea-vetoed") && (await li.textContent()).includes("too slow for this budget");
      }, 15000, 200);
      await frame.click('button[data-cmd="overnight.addIdea"]');
      await page.waitForSelector(".quick-input-widget input", { state: "visible", timeout: 10000 });
      await page.keyboard.type("a cosine learning-rate schedule");
      await page.keyboard.press("Enter");
      await pickWhenFocused(page, "optimizer");
      await until("your idea in the queue", async () => (await idea("a cosine learning-rate schedule").textContent()).includes("(yours)"), 15000, 200);
      const listed = cli("ideas");
      for (const want of ["too slow", "a cosine learning-rate schedule", "approved", "vetoed"]) {
        if (!listed.includes(want)) throw new Error(`\`overnight ideas\` lacks ${JSON.stringify(want)}`);
      }
      if (!journalDump().includes("too slow for this budget")) throw new Error("the veto's reason is not in the journal");
      await frame.locator("#ideas").scrollIntoViewIfNeeded();
      await page.mouse.move(700, 600);
      await sleep(300);
      await shot(page, "vscode-ideas");
    });
    await step(page, "clicking an experiment opens its page: numbers, reasoning, its loss curve against the incumbent's; then its diff", async () => {
      await frame.click('tr.exp[data-exp="2"]');
      await page.locator(".tabs-container .tab", { hasText: "Experiment #2" }).first().waitFor({ timeout: 20000 });
      const pageFrame = await until("the experiment page", async () => {
        for (const f of page.frames()) {
          try { if (await f.$("#experiment-detail")) return f; } catch { /* detached */ }
        }
        return undefined;
      }, 20000);
      const text = (await pageFrame.textContent("body")) ?? "";
      for (const want of ["val_bpb", "Agent's reasoning", "restore a sane learning rate", "far too low", "your review", "mixed"]) {
        if (!text.includes(want)) throw new Error(`the experiment page lacks ${JSON.stringify(want)}`);
      }
      if ((await pageFrame.$$("#loss-chart polyline")).length !== 2) throw new Error("the page's chart lacks a curve (the experiment's or the incumbent's)");
      // The experiment list marks the review: one hunk accepted from its lens, one from the diff editor, one rejected.
      if (!/\u00b1/.test((await frame.textContent('tr.exp[data-exp="2"]')) ?? "")) throw new Error("the list does not mark the mixed review");
      await shot(page, "vscode-experiment");
      await pageFrame.click("a");
      await page.locator(".tabs-container .tab", { hasText: "#2 keep" }).first().waitFor({ timeout: 20000 });
      await until("both sides of the diff", async () => {
        const sides = await page.$$eval(".monaco-diff-editor .view-lines", (els) => els.map((e) => e.innerText.replace(/\u00a0/g, " ")));
        return sides.some((t) => t.includes("LR = 1e-5")) && sides.some((t) => t.includes("LR = 3e-3"));
      }, 15000);
      await frame.selectOption("#filter", "keep");
      await until("only kept experiments listed", async () => {
        const st = await frame.$$eval("tr.exp .status", (els) => els.map((e) => e.textContent));
        return st.length === 2 && st.every((x) => x === "keep");
      }, 10000);
      await frame.selectOption("#filter", "all");
    });
    await step(page, "Set the Training Budget checks the input and starts a new session", async () => {
      const tag = /session (\S+)/.exec(cli("status"))?.[1];
      if (!tag) throw new Error("`overnight status` names no session");
      await palette(page, "Overnight: Set the Training Budget");
      await page.waitForSelector(".quick-input-widget input", { state: "visible", timeout: 10000 });
      await page.keyboard.press("Control+a");
      await page.keyboard.type("soon");
      await page.locator(".quick-input-message", { hasText: "greater than 0" }).first().waitFor({ timeout: 10000 });
      await page.keyboard.press("Control+a");
      await page.keyboard.type("5");
      await page.keyboard.press("Enter");
      await page.locator(".notification-toast", { hasText: "budget 5 s" }).first().waitFor({ timeout: 15000 });
      // Paused, the new session starts at once and waits: the sidebar shows it with its budget.
      await until("the new session in the sidebar", async () => {
        const t = (await frame.textContent("#loop")) ?? "";
        return t.includes("5s ·") && t.includes(`${tag}-5s`);
      }, 60000, 500);
    });
    await step(page, "when the daemon dies the extension says so, offers to start one, and attaches to it", async () => {
      const old = children.find((c) => c.name === "daemon");
      children.splice(children.indexOf(old), 1);
      process.kill(-old.proc.pid, "SIGTERM");
      await page.locator(".statusbar-item", { hasText: "Overnight: disconnected" }).first().waitFor({ timeout: 90000 });
      await until("the sidebar to say disconnected", async () => (await frame.textContent("#conn"))?.includes("Disconnected"), 10000);
      // The last state is shown as such, and its controls are off until a daemon answers again.
      await until("the loop's controls disabled", async () =>
        (await frame.$$eval('#loop-body .controls button', (bs) => bs.length > 0 && bs.every((b) => b.disabled)))
        && (await frame.textContent("#loop-state"))?.startsWith("last seen:"), 10000);
      await shot(page, "vscode-disconnected");
      await until("the old daemon gone", () => old.proc.exitCode !== null || old.proc.signalCode !== null, 60000);
      // The extension offers to start one: the user clicks, it runs `overnight daemon --detach` and attaches.
      const toast = page.locator(".notification-toast", { hasText: "No Overnight daemon runs for this workspace" }).first();
      await toast.waitFor({ timeout: 30000 });
      await toast.locator(".monaco-button", { hasText: "Start the Daemon" }).first().click();
      await until("a new daemon", () => {
        try {
          const info = JSON.parse(fs.readFileSync(path.join(WS, ".overnight", "daemon.json"), "utf8"));
          if (info.pid !== old.proc.pid) detachedDaemon = info.pid;
          return detachedDaemon !== undefined;
        } catch { return false; }
      }, 90000, 500);
      await until("the status bar connected again", async () => {
        const t = await page.locator(".statusbar-item", { hasText: "Overnight:" }).first().textContent();
        return t && !/disconnected|connecting/.test(t);
      }, 60000, 500);
    });
    await step(page, "with overnight.daemon.autoStart on, a window opened without a daemon starts one unasked", async () => {
      cli("shutdown");
      const stopped = detachedDaemon;
      await until("the daemon gone", () => { try { process.kill(stopped, 0); return false; } catch { return true; } }, 60000, 500);
      const settings = path.join(WORK, "cs-data", "User", "settings.json");
      fs.writeFileSync(settings, JSON.stringify({ ...JSON.parse(fs.readFileSync(settings, "utf8")), "overnight.daemon.autoStart": true }, null, 2));
      await page.reload(); // the window opens again: the extension activates and finds no daemon
      await until("a daemon started by the extension", () => {
        try {
          const info = JSON.parse(fs.readFileSync(path.join(WS, ".overnight", "daemon.json"), "utf8"));
          if (info.pid !== stopped) detachedDaemon = info.pid;
          return detachedDaemon !== stopped;
        } catch { return false; }
      }, 90000, 500);
      await until("the status bar connected", async () => {
        const t = await page.locator(".statusbar-item", { hasText: "Overnight:" }).first().textContent({ timeout: 2000 });
        return t && !/disconnected|connecting/.test(t);
      }, 60000, 500);
      if (await page.locator(".notification-toast", { hasText: "No Overnight daemon runs" }).count()) throw new Error("it asked anyway");
    });
    await step(page, "a daemon shut down leaves no error trace in the Output channel", async () => {
      const settings = path.join(WORK, "cs-data", "User", "settings.json");
      fs.writeFileSync(settings, JSON.stringify({ ...JSON.parse(fs.readFileSync(settings, "utf8")), "overnight.daemon.autoStart": false }, null, 2));
      await sleep(1500);
      cli("shutdown");
      await page.locator(".statusbar-item", { hasText: "Overnight: disconnected" }).first().waitFor({ timeout: 60000 });
      await sleep(2000); // the log is written behind
      const logs = [];
      const walk = (dir) => { for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p); else if (e.name.endsWith(".log")) logs.push(p);
      } };
      walk(path.join(WORK, "cs-data", "logs"));
      const ours = logs.filter((f) => /overnight/i.test(path.basename(f)) || fs.readFileSync(f, "utf8").includes("[overnight"));
      const noisy = logs.filter((f) => fs.readFileSync(f, "utf8").includes("Connection is disposed"));
      lap(`${logs.length} log files, ${ours.length} of the extension`);
      if (noisy.length) throw new Error(`"Connection is disposed" in ${noisy.join(", ")}`);
    });
    await step(undefined, "in a folder the user does not trust, the extension never starts a daemon", async () => {
      const folder = path.join(WORK, "untrusted");
      execFileSync(PY, ["-m", "overnight.daemon.cli", "init", folder], { stdio: "ignore" });
      const port2 = await freePort();
      await startCodeServer(port2, folder, "cs-untrusted", false);
      const p2 = await browser.newPage({ viewport: { width: 1360, height: 820 } });
      const dev = [["extensionDevelopmentPath", `vscode-remote://127.0.0.1:${port2}${EXT}`]];
      await p2.goto(`http://127.0.0.1:${port2}/?folder=${encodeURIComponent(folder)}&payload=${encodeURIComponent(JSON.stringify(dev))}`,
        { waitUntil: "domcontentloaded" });
      const no = p2.locator(".monaco-dialog-box .monaco-button", { hasText: "No, I don't trust the authors" }).first();
      await no.waitFor({ timeout: 90000 });
      await no.click();
      const icon = p2.locator('.activitybar [aria-label^="Overnight"]').first();
      await icon.waitFor({ timeout: 60000 });
      await icon.click();
      // No daemon, so no loop state yet: the sidebar is the frame with the connection banner.
      const f2 = await until("the sidebar in restricted mode", async () => {
        for (const f of p2.frames()) {
          try { if (await f.$("#conn")) return f; } catch { /* detached */ }
        }
        return undefined;
      }, 30000);
      try {
        await until("the sidebar to say the folder is not trusted", async () => (await f2.textContent("#conn"))?.includes("not trusted"), 30000);
      } catch (e) {
        await p2.screenshot({ path: path.join(SHOTS, "fail-untrusted.png") }).catch(() => {});
        throw e;
      }
      await sleep(8000); // autoStart is on in this profile: restricted mode must still start nothing
      if (fs.existsSync(path.join(folder, ".overnight", "daemon.json"))) throw new Error("a daemon was started in an untrusted folder");
      if (!(await f2.textContent("#conn"))?.includes("not trusted")) throw new Error("the sidebar stopped saying why nothing runs");
      await p2.screenshot({ path: path.join(SHOTS, "vscode-untrusted.png") });
      await p2.close();
    });
  } finally {
    await browser.close().catch(() => {});
  }
}

function cleanup() {
  if (detachedDaemon) { try { process.kill(detachedDaemon, "SIGTERM"); } catch { /* gone */ } }
  // And whichever daemon runs for the workspace now (the extension may have started one again).
  try {
    const info = JSON.parse(fs.readFileSync(path.join(WS, ".overnight", "daemon.json"), "utf8"));
    if (info.pid) process.kill(info.pid, "SIGTERM");
  } catch { /* none */ }
  for (const { proc } of children.reverse()) {
    try { process.kill(-proc.pid, "SIGTERM"); } catch { /* gone */ }
  }
}

for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => { cleanup(); process.exit(130); });

let code = 0;
try {
  await main();
} catch (e) {
  code = 1;
  console.error(`e2e failed: ${e?.stack ?? e}`);
} finally {
  cleanup();
  await sleep(1500);
  for (const { proc } of children) {
    try { process.kill(-proc.pid, "SIGKILL"); } catch { /* gone */ }
  }
}
console.log(`\n${results.filter((r) => r.ok).length} passed, ${results.filter((r) => !r.ok).length} failed, ${((Date.now() - t0) / 1000).toFixed(0)}s`);
for (const r of results) console.log(`  ${r.ok ? "PASS" : "FAIL"} ${r.name} (${r.s.toFixed(1)}s)${r.err ? `: ${r.err}` : ""}`);
if (code === 0 && process.env.E2E_UPDATE_DOCS === "1") {
  for (const n of ["vscode-sidebar", "vscode-suggestion", "vscode-annotations", "vscode-diff", "vscode-experiment", "vscode-ideas",
    "vscode-disconnected"]) {
    const f = path.join(SHOTS, `${n}.png`);
    if (fs.existsSync(f)) fs.copyFileSync(f, path.join(REPO, "docs", `${n}.png`));
  }
}
process.exit(code);
