import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { daemonCommand, parseDiscovery, pickWorkspaceRoot, pythonFor, readDiscovery, reconnectDelay } from "../../src/logic/discovery";

const good = { host: "127.0.0.1", port: 4567, pid: 42, token: "s3cret" };

test("a sane discovery record parses; anything else does not", () => {
  assert.deepEqual(parseDiscovery(JSON.stringify(good)), good);
  assert.equal(parseDiscovery("{"), undefined);
  assert.equal(parseDiscovery(JSON.stringify({ ...good, port: 0 })), undefined);
  assert.equal(parseDiscovery(JSON.stringify({ ...good, token: "" })), undefined);
  // never send the token off the machine
  assert.equal(parseDiscovery(JSON.stringify({ ...good, host: "10.0.0.1" })), undefined);
});

test("the workspace's discovery file is read only while its process lives", () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "ovn-"));
  assert.equal(readDiscovery(root), undefined);
  fs.mkdirSync(path.join(root, ".overnight"));
  fs.writeFileSync(path.join(root, ".overnight", "daemon.json"), JSON.stringify({ ...good, pid: process.pid }));
  assert.equal(readDiscovery(root)?.port, 4567);
  assert.equal(readDiscovery(root, () => false), undefined);
  fs.rmSync(root, { recursive: true });
});

test("the python that starts the daemon, and its command line", () => {
  assert.equal(pythonFor("/ws", " /opt/py/bin/python "), "/opt/py/bin/python");
  assert.equal(pythonFor("/ws", "", (p) => p === "/ws/.venv/bin/python"), "/ws/.venv/bin/python");
  assert.equal(pythonFor("/ws", "", () => false), "python3");
  assert.deepEqual(daemonCommand("py", "/ws"), ["py", "-m", "overnight.daemon.cli", "-C", "/ws", "daemon", "--detach"]);
});

test("reconnection backs off to five seconds", () => {
  assert.deepEqual([0, 1, 2, 3, 4, 10].map(reconnectDelay), [500, 1000, 2000, 4000, 5000, 5000]);
});

test("in a multi-root window the folder with overnight.toml or .overnight/ is the workspace", () => {
  const has = new Set(["/b/overnight.toml", "/c/.overnight"]);
  const exists = (p: string) => has.has(p);
  assert.equal(pickWorkspaceRoot(["/a", "/b", "/c"], exists), "/b");
  assert.equal(pickWorkspaceRoot(["/a", "/c"], exists), "/c");
  assert.equal(pickWorkspaceRoot(["/a", "/d"], exists), "/a");
  assert.equal(pickWorkspaceRoot([], exists), undefined);
});
