// The daemon's discovery file, `.overnight/daemon.json` (mode 0600): where it listens and its token.
import * as fs from "node:fs";
import * as path from "node:path";

export interface DaemonInfo {
  host: string;
  port: number;
  pid: number;
  token: string;
}

export const DISCOVERY_RELATIVE = path.join(".overnight", "daemon.json");

export function discoveryPath(workspaceRoot: string): string {
  return path.join(workspaceRoot, DISCOVERY_RELATIVE);
}

/** Parses the file's text; undefined when it is not a complete, sane record. */
export function parseDiscovery(text: string): DaemonInfo | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof raw !== "object" || raw === null) return undefined;
  const r = raw as Record<string, unknown>;
  const { host, port, pid, token } = r;
  if (typeof host !== "string" || typeof token !== "string" || token.length === 0) return undefined;
  if (typeof port !== "number" || !Number.isInteger(port) || port <= 0 || port > 65535) return undefined;
  if (typeof pid !== "number" || !Number.isInteger(pid) || pid <= 0) return undefined;
  // The daemon listens on loopback only; never send the token anywhere else.
  if (!["127.0.0.1", "::1", "localhost"].includes(host)) return undefined;
  return { host, port, pid, token };
}

/** Whether a process with this pid exists (signal 0 checks without touching it). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The running daemon of a workspace, or undefined (no file, unreadable, garbled, or its process is gone). */
export function readDiscovery(workspaceRoot: string, alive: (pid: number) => boolean = pidAlive): DaemonInfo | undefined {
  let text: string;
  try {
    text = fs.readFileSync(discoveryPath(workspaceRoot), "utf8");
  } catch {
    return undefined;
  }
  const info = parseDiscovery(text);
  return info && alive(info.pid) ? info : undefined;
}

/** The interpreter that starts the daemon: the setting, else the workspace's .venv, else python3. */
export function pythonFor(workspaceRoot: string, setting: string, exists: (p: string) => boolean = fs.existsSync): string {
  if (setting.trim()) return setting.trim();
  for (const candidate of [path.join(workspaceRoot, ".venv", "bin", "python"), path.join(workspaceRoot, ".venv", "Scripts", "python.exe")]) {
    if (exists(candidate)) return candidate;
  }
  return process.platform === "win32" ? "python" : "python3";
}

/** The command line that starts a detached daemon for the workspace. */
export function daemonCommand(python: string, workspaceRoot: string): string[] {
  return [python, "-m", "overnight.daemon.cli", "-C", workspaceRoot, "daemon", "--detach"];
}

/** Backoff between reconnection attempts: 0.5 s doubling up to 5 s. */
export function reconnectDelay(attempt: number): number {
  return Math.min(5000, 500 * 2 ** Math.max(0, attempt));
}

/** The Overnight workspace among the window's folders: the first with overnight.toml or .overnight/
 * (a multi-root window may list others first); the first folder when none has them. */
export function pickWorkspaceRoot(folders: readonly string[], exists: (p: string) => boolean = fs.existsSync): string | undefined {
  return folders.find((f) => exists(path.join(f, "overnight.toml")) || exists(path.join(f, ".overnight"))) ?? folders[0];
}
