"""The sealed run (daemon/sandbox.py) against the real bubblewrap: what a run can and cannot do.

Each test starts real sandboxes. They are skipped only where bubblewrap is missing or cannot
create a sandbox here, with bwrap's own reason.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from overnight.daemon import sandbox as sb

REPO = Path(__file__).resolve().parents[2]
SYMPY = Path(str(__import__("sympy").__file__)).parent


@pytest.fixture(scope="module")
def sandbox() -> sb.Sandbox:
    if sb._find_bwrap() is None:
        pytest.skip("bubblewrap (bwrap) is not installed")
    try:
        return sb.detect("bwrap")
    except sb.SandboxUnavailable as exc:
        pytest.skip(f"bubblewrap cannot create a sandbox here: {exc}")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bytecode cache for the module: the SymPy copy is built once (seconds), then reused."""
    return tmp_path_factory.mktemp("sandbox-cache")


@dataclass
class World:
    """A stand-in for a workspace: a commit's tree, the daemon's state dir, split data, a run's scratch."""

    root: Path
    tree: Path
    state: Path
    data: Path
    scratch: Path

    @property
    def train_files(self) -> dict[str, Path]:
        return {"manifest.json": self.data / "manifest.json", "train.bin": self.data / "train.bin"}


@pytest.fixture
def world(tmp_path: Path) -> World:
    tree, state, data, scratch = (tmp_path / name for name in ("tree", ".overnight", "data", "scratch"))
    (tree / "trainer").mkdir(parents=True)
    (tree / "trainer" / "train.py").write_text("print('the agent file')\n")
    state.mkdir()
    (state / "daemon.json").write_text('{"token": "secret-token"}')
    data.mkdir()
    (data / "train.bin").write_bytes(bytes(range(256)) * 64)
    (data / "val.bin").write_bytes(b"VALIDATION BYTES" * 64)
    (data / "holdout.bin").write_bytes(b"HOLDOUT BYTES" * 64)
    (data / "manifest.json").write_text("{}")
    scratch.mkdir()
    return World(tmp_path, tree, state, data, scratch)


def training(box: sb.Sandbox, w: World, code: str, **kwargs: Any) -> sb.Launch:
    """Sandbox A around ``python -c code``, with the train files only."""
    options: dict[str, Any] = {"env": {"OVERNIGHT_SEED": "3"}, "memory_limit_gb": 4.0, "gpu": False, **kwargs}
    return box.training([sys.executable, "-c", textwrap.dedent(code)], tree=w.tree, workdir="trainer", scratch=w.scratch,
                        data_files=w.train_files, **options)


def run(launch: sb.Launch, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(launch.argv), env=launch.env, cwd=launch.cwd, pass_fds=launch.pass_fds,
                          preexec_fn=launch.preexec, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def result(launch: sb.Launch, timeout: float = 120) -> Any:
    """The JSON a sandboxed script printed last."""
    proc = run(launch, timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# What every probe script starts with: what an open() or a write attempt gives.
PROBE = """
import errno, json, os
def reads(path):
    try:
        with open(path, "rb") as fh:
            fh.read(1)
        return True
    except OSError:
        return False
def writes(path):
    try:
        with open(path, "wb") as fh:
            fh.write(b"x")
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
"""


def probe(body: str) -> str:
    return PROBE + textwrap.dedent(body)


# --------------------------------------------------------------------------------------------
# What a training run cannot do
# --------------------------------------------------------------------------------------------


def _allowed_top_entries(under: Path) -> set[str]:
    """The names directly under ``under`` that the sandbox needs: only those on the way to the interpreter."""
    names = set()
    for root in sb._interpreter(sys.executable).roots:
        if Path(root).is_relative_to(under) and Path(root) != under:
            names.add(Path(root).relative_to(under).parts[0])
    return names


def test_a_run_sees_only_what_it_was_given(sandbox: sb.Sandbox, world: World) -> None:
    home = Path.home()
    out = result(training(sandbox, world, probe(f"""
        def listing(path):
            return sorted(os.listdir(path)) if os.path.isdir(path) else []
        print(json.dumps({{
            "state": reads({str(world.state / "daemon.json")!r}),
            "state_dir": os.path.exists({str(world.state)!r}),
            "val_host": reads({str(world.data / "val.bin")!r}),
            "val_inside": os.path.exists("/overnight/data/val.bin"),
            "holdout_inside": os.path.exists("/overnight/data/holdout.bin"),
            "data": listing("/overnight/data"),
            "train": open("/overnight/data/train.bin", "rb").read(3).hex(),
            "tree": open("/overnight/tree/trainer/train.py").read(),
            "cwd": os.getcwd(),
            "repo": listing({str(REPO)!r}),
            "home": listing({str(home)!r}),
            "readme": reads({str(REPO / "README.md")!r}),
            "tmp_host": listing({str(world.root)!r}),
            "root": listing("/"),
            "overnight": listing("/overnight"),
            "proc": [p for p in os.listdir("/proc") if p.isdigit()],
        }}))
    """)))
    assert out["state"] is False and out["state_dir"] is False
    assert out["val_host"] is False and out["val_inside"] is False and out["holdout_inside"] is False
    assert out["data"] == ["manifest.json", "train.bin"] and out["train"] == "000102"
    assert out["tree"].startswith("print(") and out["cwd"] == "/overnight/tree/trainer"
    assert out["readme"] is False and out["tmp_host"] == []
    assert set(out["repo"]) <= _allowed_top_entries(REPO)
    assert set(out["home"]) <= _allowed_top_entries(home)
    assert set(out["root"]) <= {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "sys", "proc", "dev", "tmp",
                                "overnight", *(Path(r).parts[1] for r in sb._interpreter(sys.executable).roots)}
    assert out["overnight"] == ["data", "scratch", "tree"]
    # Its own PID namespace: bwrap's init, the run, nothing of the host's.
    assert len(out["proc"]) <= 3


def test_a_run_writes_nowhere_but_its_scratch(sandbox: sb.Sandbox, world: World) -> None:
    marker = f"overnight-{uuid.uuid4().hex}"
    site = sb._interpreter(sys.executable).roots[-1]
    out = result(training(sandbox, world, probe(f"""
        print(json.dumps({{
            "tree": writes("/overnight/tree/trainer/train.py"),
            "tree_new": writes("/overnight/tree/new.py"),
            "data": writes("/overnight/data/train.bin"),
            "usr": writes("/usr/overnight-test"),
            "etc": writes("/etc/overnight-test"),
            "site": writes({site + "/overnight-test"!r}),
            "root": writes("/overnight-test"),
            "overnight": writes("/overnight/new"),
            "dev": writes("/dev/overnight-test"),
            "scratch": writes("/overnight/scratch/out.txt"),
            "home": writes(os.environ["HOME"] + "/x"),
            "tmp": writes("/tmp/{marker}"),
        }}))
    """)))
    refused = {k: v for k, v in out.items() if k not in ("scratch", "home", "tmp")}
    assert all(v in ("EROFS", "EACCES", "EPERM", "ENOENT") for v in refused.values()), refused
    assert out["scratch"] == out["home"] == out["tmp"] == "ok"
    assert (world.scratch / "out.txt").read_bytes() == b"x"
    assert (world.tree / "trainer" / "train.py").read_text().startswith("print(")
    assert not Path(f"/tmp/{marker}").exists()  # a private /tmp, gone with the sandbox


def _listener() -> tuple[socket.socket, list[bytes]]:
    server = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def accept() -> None:
        try:
            conn, _ = server.accept()
            got.append(conn.recv(16))
            conn.close()
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    return server, got


CONNECT = """
import json, socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).sendall(b"hello")
    print(json.dumps("connected"))
except OSError as exc:
    print(json.dumps(type(exc).__name__))
"""


def test_no_network_unless_asked(sandbox: sb.Sandbox, world: World) -> None:
    server, got = _listener()
    with server:
        port = server.getsockname()[1]
        assert result(training(sandbox, world, CONNECT.format(port=port))) != "connected"
        assert got == []
        assert result(training(sandbox, world, CONNECT.format(port=port), network=True)) == "connected"
        for _ in range(50):
            if got:
                break
            time.sleep(0.05)
        assert got == [b"hello"]


def test_the_environment_is_an_allow_list(sandbox: sb.Sandbox, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {"ANTHROPIC_API_KEY": "sk-ant-secret", "GITHUB_TOKEN": "ghp_secret", "AWS_SECRET_ACCESS_KEY": "aws",
               "SSH_AUTH_SOCK": "/tmp/agent.sock", "PYTHONPATH": "/tmp/evil", "LD_PRELOAD": "/tmp/evil.so",
               "OVERNIGHT_CORPUS": "fineweb"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    read_fd, write_fd = os.pipe()
    try:
        launch = training(sandbox, world, """
            import json, os
            os.write(int(os.environ["OVERNIGHT_CHANNEL_FD"]), b"frame")
            print(json.dumps(dict(os.environ)))
        """, pass_fds=(write_fd,), env={"OVERNIGHT_CHANNEL_FD": str(write_fd), "OVERNIGHT_SEED": "3",
                                       "OVERNIGHT_BUDGET_S": "2.0", "OMP_WAIT_POLICY": "PASSIVE"})
        env = result(launch)
        os.close(write_fd)
        write_fd = -1
        assert os.read(read_fd, 100) == b"frame"
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    assert not set(secrets) & set(env), env
    assert not [name for name in env if name.startswith("LD_")]
    assert env["OVERNIGHT_SEED"] == "3" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env["OMP_NUM_THREADS"] == "1" and env["LC_ALL"] == "C.UTF-8"
    assert env["HOME"].startswith("/overnight/scratch/") and env["TMPDIR"].startswith("/overnight/scratch/")
    assert env["OVERNIGHT_DATA_DIR"] == "/overnight/data" and env["OVERNIGHT_MODEL_OUT"] == "/overnight/scratch/model.pt2"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    allowed = {"PATH", "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "LANG", "LANGUAGE", "TZ",
               "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "PWD"}
    extra = {n for n in env if n not in allowed and not n.startswith(("OVERNIGHT_", "OMP_", "MKL_", "OPENBLAS_", "LC_"))}
    assert not extra, extra
    # A secret passed on purpose is refused loudly, and so is a variable the sandbox sets itself.
    with pytest.raises(ValueError, match="allow-list"):
        training(sandbox, world, "pass", env={"ANTHROPIC_API_KEY": "x"})
    with pytest.raises(ValueError, match="set by the sandbox"):
        training(sandbox, world, "pass", env={"OVERNIGHT_DATA_DIR": "/elsewhere"})


def test_hidden_sources_are_bytecode_only_and_still_import(sandbox: sb.Sandbox, world: World, cache_dir: Path) -> None:
    # Other installs of the package in the view (here: the base interpreter's site-packages, if any).
    others = sb._other_copies(SYMPY, ["/usr", *sb._interpreter(sys.executable).roots])
    out = result(training(sandbox, world, probe(f"""
        import sympy
        x = sympy.Symbol("x")
        pkg = {str(SYMPY)!r}
        print(json.dumps({{
            "others": [n for other in {others!r} for _, _, files in os.walk(other) for n in files],
            "file": sympy.__file__,
            "init_py": reads(pkg + "/__init__.py"),
            "basic_py": reads(pkg + "/core/basic.py"),
            "py_files": [n for _, _, files in os.walk(pkg) for n in files if n.endswith(".py")],
            "tests": os.path.exists(pkg + "/core/tests"),
            "doc": sympy.Symbol.__doc__,
            "integral": str(sympy.integrate(x**2, x)),
            "dist_info": __import__("importlib.metadata").metadata.version("sympy"),
        }}))
    """), hidden_sources=[SYMPY], cache_dir=cache_dir))
    assert out["file"] == str(SYMPY / "__init__.pyc")
    assert out["init_py"] is False and out["basic_py"] is False and out["py_files"] == []
    assert out["tests"] is False and out["doc"] == ""
    assert out["others"] == []
    assert out["integral"] == "x**3/3" and out["dist_info"] == sympy_version()
    # The host's package is untouched.
    assert (SYMPY / "__init__.py").is_file()


def sympy_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("sympy")


MARKED_SLEEPER = """
import os, sys, time
def sleeper(marker):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(300)", marker])
        os._exit(0)
    os.wait()
    for _ in range(100):  # until the grandchild has exec'd, so the test is not vacuous
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if marker.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                    return
            except OSError:
                pass
        time.sleep(0.05)
    sys.exit("the sleeper never started")
"""


def _marked(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if marker in (proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _gone(marker: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while _marked(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_double_forked_child_dies_with_the_sandbox(sandbox: sb.Sandbox, world: World) -> None:
    marker = f"overnight-marker-{uuid.uuid4().hex}"
    proc = run(training(sandbox, world, MARKED_SLEEPER + f"sleeper({marker!r})\nprint('started')"))
    assert proc.returncode == 0 and "started" in proc.stdout, proc.stderr
    assert _gone(marker), "a process the run double-forked outlived the sandbox"


def test_killing_bwrap_kills_the_whole_sandbox_and_the_tree_can_be_counted(sandbox: sb.Sandbox, world: World) -> None:
    marker = f"overnight-marker-{uuid.uuid4().hex}"
    code = MARKED_SLEEPER + f"sleeper({marker!r})\nprint('ready', flush=True)\ntime.sleep(300)"
    launch = training(sandbox, world, code)
    proc = subprocess.Popen(list(launch.argv), env=launch.env, cwd=launch.cwd, preexec_fn=launch.preexec,
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert _marked(marker)
        # bwrap, its init, the run and the (re-parented) sleeper.
        assert sb.count_processes(proc.pid) >= 4
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert _gone(marker), "killing bwrap left the sandbox's processes alive"
        assert sb.count_processes(proc.pid) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_run_cannot_remount_or_gain_capabilities(sandbox: sb.Sandbox, world: World) -> None:
    out = result(training(sandbox, world, """
        import ctypes, json, os
        libc = ctypes.CDLL(None, use_errno=True)
        MS_REMOUNT, MS_BIND, MS_RDONLY = 32, 4096, 1
        def call(rc):
            return "ok" if rc == 0 else os.strerror(ctypes.get_errno())
        caps = {l.split(":")[0]: int(l.split()[1], 16) for l in open("/proc/self/status") if l.startswith("Cap")}
        print(json.dumps({
            "nnp": [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")],
            "remount": call(libc.mount(b"none", b"/overnight/tree", None, MS_REMOUNT | MS_BIND, None)),
            "bind": call(libc.mount(b"/overnight/scratch", b"/overnight/tree", None, MS_BIND, None)),
            "userns": call(libc.unshare(0x10000000)),
            "caps": caps,
            "uid": os.getuid(),
        }))
    """))
    assert out["remount"] != "ok" and out["bind"] != "ok"
    assert set(out["caps"].values()) == {0}, out["caps"]  # the bounding set too: nothing to regain by an exec
    assert out["nnp"] == ["1"]
    if sandbox.bwrap is not None and sandbox.bwrap.disable_userns:
        assert out["userns"] != "ok"


def test_rlimits_bind_the_run(sandbox: sb.Sandbox, world: World) -> None:
    code = """
        import json, resource
        names = ("RLIMIT_CORE", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_DATA")
        limits = {n: resource.getrlimit(getattr(resource, n)) for n in names}
        try:
            with open("/overnight/scratch/big", "wb") as fh:
                fh.write(b"x" * (2 << 20))
            big = "written"
        except OSError as exc:
            big = exc.strerror
        print(json.dumps({"limits": limits, "big": big}))
    """
    out = result(training(sandbox, world, code, max_file_bytes=1 << 20, memory_limit_gb=1.0))
    assert out["limits"]["RLIMIT_CORE"] == [0, 0]
    assert out["limits"]["RLIMIT_FSIZE"] == [1 << 20, 1 << 20] and out["big"] != "written"
    assert out["limits"]["RLIMIT_NOFILE"][1] <= 4096
    assert out["limits"]["RLIMIT_DATA"] == [4 << 30, 4 << 30]
    on_gpu = result(training(sandbox, world, code, gpu=True))
    assert on_gpu["limits"]["RLIMIT_DATA"] == list(resource.getrlimit(resource.RLIMIT_DATA))


# --------------------------------------------------------------------------------------------
# What runs can do: train, export, be evaluated
# --------------------------------------------------------------------------------------------

TRAIN = """
import os, torch
data = torch.frombuffer(bytearray(open(os.environ["OVERNIGHT_DATA_DIR"] + "/train.bin", "rb").read()), dtype=torch.uint8)
torch.manual_seed(int(os.environ["OVERNIGHT_SEED"]))
model = torch.nn.Sequential(torch.nn.Embedding(256, 16), torch.nn.Linear(16, 256))
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
losses = []
for step in range(5):
    ix = torch.randint(len(data) - 9, (8,))
    x = torch.stack([data[i:i + 8] for i in ix]).long()
    y = torch.stack([data[i + 1:i + 9] for i in ix]).long()
    loss = torch.nn.functional.cross_entropy(model(x).view(-1, 256), y.view(-1))
    opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())
batch = torch.export.Dim("batch", min=1, max=1024)
ep = torch.export.export(model.eval(), (torch.zeros(2, 8, dtype=torch.long),), dynamic_shapes=({0: batch},))
torch.export.save(ep, os.environ["OVERNIGHT_MODEL_OUT"])
print(losses)
"""

EVALUATE = """
import argparse, json, os, sys, torch
ap = argparse.ArgumentParser(); ap.add_argument("--model"); args = ap.parse_args()
def writes(path):
    try:
        open(path, "wb").close(); return "ok"
    except OSError as exc:
        return exc.strerror
model = torch.export.load(args.model).module()
val = torch.frombuffer(bytearray(open(os.environ["OVERNIGHT_DATA_DIR"] + "/val.bin", "rb").read()), dtype=torch.uint8)
logits = model(val[:16].long().view(2, 8))
print(json.dumps({
    "shape": list(logits.shape), "model": args.model, "cwd": os.getcwd(), "isolated": sys.flags.isolated,
    "data": sorted(os.listdir(os.environ["OVERNIGHT_DATA_DIR"])), "scratch": os.path.exists("/overnight/scratch"),
    "harness_w": writes("eval.py"), "data_w": writes(os.environ["OVERNIGHT_DATA_DIR"] + "/val.bin"),
    "model_w": writes(args.model), "tmp_w": writes("/tmp/x"), "root": sorted(os.listdir("/overnight")),
}))
"""


@pytest.mark.slow
def test_a_run_trains_and_exports_then_the_harness_evaluates_it(sandbox: sb.Sandbox, world: World, cache_dir: Path) -> None:
    launch = training(sandbox, world, TRAIN, hidden_sources=[SYMPY], cache_dir=cache_dir,
                      env={"OVERNIGHT_SEED": "1", "OMP_NUM_THREADS": "1"})
    proc = run(launch, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(json.loads(proc.stdout.strip().splitlines()[-1])) == 5
    model = world.root / "models" / "candidate.pt2"
    assert sb.copy_out(world.scratch / "model.pt2", model, max_bytes=64 << 20) > 0

    # Like the session's pinned harness: .overnight/harness/<tag>/trainer/prepare.py, run from trainer/.
    harness = world.root / "harness"
    (harness / "trainer").mkdir(parents=True)
    (harness / "trainer" / "eval.py").write_text(EVALUATE)
    server, got = _listener()
    with server:
        out = result(sandbox.evaluation([sys.executable, "-I", "eval.py"], harness_dir=harness, workdir="trainer",
                                        model_file=model, data_dir=world.data, env={"OVERNIGHT_THREADS": "1"},
                                        memory_limit_gb=4.0, gpu=False), timeout=240)
    assert out["shape"] == [2, 8, 256] and out["model"] == "/overnight/model/candidate.pt2"
    assert out["cwd"] == "/overnight/harness/trainer" and out["isolated"] == 1
    assert out["data"] == ["holdout.bin", "manifest.json", "train.bin", "val.bin"] and out["scratch"] is False
    assert out["root"] == ["data", "harness", "model"]
    assert out["tmp_w"] == "ok"
    assert "ok" not in (out["harness_w"], out["data_w"], out["model_w"])
    assert got == []


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def test_a_missing_bwrap_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sb.shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(sb.SandboxUnavailable) as info:
        sb.detect("bwrap")
    message = str(info.value)
    assert "apt install bubblewrap" in message and 'sandbox = "none"' in message and "\n" not in message


def _fake_bwrap(tmp_path: Path, help_ok: bool) -> str:
    fake = tmp_path / "bwrap"
    help_line = 'if [ "$1" = "--help" ]; then echo "usage: bwrap --unshare-user --size"; exit 0; fi\n' if help_ok else ""
    fake.write_text(f"#!/bin/sh\n{help_line}echo 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    return str(fake)


@pytest.mark.parametrize("help_ok", [True, False], ids=["probe-fails", "help-fails"])
def test_a_failing_bwrap_is_reported_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, help_ok: bool) -> None:
    fake = _fake_bwrap(tmp_path, help_ok)
    monkeypatch.setattr(sb.shutil, "which", lambda *args, **kwargs: fake)
    with pytest.raises(sb.SandboxUnavailable) as info:
        sb.detect("bwrap")
    message = str(info.value)
    assert "setting up uid map: Permission denied" in message and fake in message
    assert "kernel.unprivileged_userns_clone" in message and "kernel.apparmor_restrict_unprivileged_userns" in message
    assert 'sandbox = "none"' in message and "\n" not in message
    assert fake not in sb._probed


REMOUNT = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.mount(b"none", b"/overnight/tree", None, 32 | 4096, None)  # MS_REMOUNT | MS_BIND
status = dict(l.split(":", 1) for l in open("/proc/self/status"))
caps = {k: int(v, 16) for k, v in status.items() if k.startswith("Cap")}
print(json.dumps({"remount": rc == 0, "caps": caps, "no_new_privs": int(status["NoNewPrivs"])}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback without a user namespace is for root only")
def test_root_without_user_namespaces_is_still_sealed(sandbox: sb.Sandbox, world: World, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert sandbox.bwrap is not None
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --unshare-user ] && "
                    "{ echo 'bwrap: No permissions to creating new namespace' >&2; exit 1; }; done\n"
                    f"exec {sandbox.bwrap.path} \"$@\"\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sb.shutil, "which", lambda *args, **kwargs: str(fake))
    box = sb.detect("bwrap")
    assert box.bwrap is not None and not box.bwrap.userns and not box.bwrap.disable_userns
    out = result(training(box, world, REMOUNT))
    # No capability now and, with no_new_privs, none from an exec (the bounding set stays: no user namespace).
    assert out["remount"] is False and out["no_new_privs"] == 1
    assert out["caps"]["CapEff"] == out["caps"]["CapPrm"] == out["caps"]["CapInh"] == out["caps"]["CapAmb"] == 0


def test_detect_probes_once_and_knows_its_kinds(sandbox: sb.Sandbox) -> None:
    assert sandbox.sealed and sandbox.kind == "bwrap" and sandbox.bwrap is not None
    assert sb.detect("bwrap") == sandbox  # cached: no second probe
    with pytest.raises(ValueError, match="bwrap, none"):
        sb.detect("docker")


def test_the_unsealed_sandbox_still_filters_the_environment(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    box = sb.detect("none")
    assert not box.sealed
    launch = training(box, world, "import json, os; print(json.dumps(dict(os.environ)))")
    assert launch.argv[0] == sys.executable and launch.cwd == str(world.tree / "trainer")
    env = result(launch)
    assert "ANTHROPIC_API_KEY" not in env and env["OVERNIGHT_DATA_DIR"] == str(world.data)
    assert env["OVERNIGHT_MODEL_OUT"] == str(world.scratch / "model.pt2") and env["HOME"] == str(world.scratch / "home")
    model = world.root / "m.pt2"
    model.write_bytes(b"m")
    evaluation = box.evaluation([sys.executable, "-I", "x.py", "--model", sb.MODEL_TOKEN, "--splits", "val"],
                                harness_dir=world.tree, workdir="trainer", model_file=model, data_dir=world.data, env={})
    assert evaluation.argv[-3:] == (str(model), "--splits", "val") and evaluation.cwd == str(world.tree / "trainer")
    assert evaluation.env["OVERNIGHT_DATA_DIR"] == str(world.data)
    appended = box.evaluation([sys.executable, "-I", "x.py", "evaluate"], harness_dir=world.tree, model_file=model,
                              data_dir=world.data, env={})
    assert appended.argv[-3:] == ("evaluate", "--model", str(model))


def test_gpu_devices_are_bound_and_free_of_the_data_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sb, "_gpu_devices", lambda: ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"])
    bw = sb._Bwrap("/usr/bin/bwrap", userns=True, disable_userns=True, size=True)
    args = sb._base_fs(bw, gpu=True, tmpfs_bytes=1 << 20)
    for dev in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"):
        assert ["--dev-bind", dev, dev] == args[args.index(dev) - 1: args.index(dev) + 2]
    assert "/proc/driver/nvidia" in args and args.index("--dev") < args.index("/dev/nvidia0") < args.index("/dev/shm")
    assert sb._gpu_present()
    assert resource.RLIMIT_DATA not in dict(sb._rlimits(8.0, gpu=True, max_file_bytes=1 << 30))
    assert resource.RLIMIT_DATA in dict(sb._rlimits(8.0, gpu=False, max_file_bytes=1 << 30))


def test_an_interpreter_above_the_data_is_refused() -> None:
    with pytest.raises(ValueError, match="would expose"):
        sb._check_roots(["/home/user"], [Path("/home/user/project/.overnight/data")])
    sb._check_roots(["/home/user/venv"], [Path("/home/user/project/data")])


# --------------------------------------------------------------------------------------------
# The bytecode copy
# --------------------------------------------------------------------------------------------


@pytest.fixture
def package(tmp_path: Path) -> Path:
    pkg = tmp_path / "src" / "secretpkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "tests").mkdir()
    (pkg / "__pycache__").mkdir()
    (pkg / "__init__.py").write_text('"""THE SECRET DOCSTRING."""\nfrom .sub.mod import f\nVALUE = "kept"\n')
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text('def f():\n    """ANOTHER SECRET."""\n    return f.__doc__ + "!"\n')
    (pkg / "tests" / "test_x.py").write_text("SECRET_TEST = 1\n")
    (pkg / "__pycache__" / "stale.cpython-311.pyc").write_bytes(b"junk")
    (pkg / "data.txt").write_text("a data file")
    (pkg / "broken.py").write_text("def (:\n")
    (tmp_path / "outside.py").write_text("OUTSIDE = 1\n")
    (pkg / "link.py").symlink_to(tmp_path / "outside.py")
    return pkg


def test_other_installs_of_a_hidden_package_are_found(tmp_path: Path) -> None:
    venv, base, conda = tmp_path / "venv", tmp_path / "base", tmp_path / "conda"
    source = venv / "lib" / "python3.11" / "site-packages" / "sympy"
    others = [base / "lib" / "python3.11" / "site-packages" / "sympy",
              base / "local" / "lib" / "python3.11" / "dist-packages" / "sympy",
              conda / "pkgs" / "sympy-1.14.0-py_0" / "lib" / "python3.11" / "site-packages" / "sympy"]
    for path in (source, *others, base / "lib" / "python3.11" / "site-packages" / "sympy-1.14.0.dist-info"):
        path.mkdir(parents=True)
    found = sb._other_copies(source, [str(venv), str(base), str(conda), str(source.parent)])
    assert found == sorted(map(str, others))


def test_a_bytecode_copy_has_no_sources_and_imports(package: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    copy = sb.bytecode_copy(package, cache)
    files = sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file())
    assert files == ["__init__.pyc", "data.txt", "sub/__init__.pyc", "sub/mod.pyc"]
    blob = b"".join((copy / f).read_bytes() for f in files)
    assert b"SECRET" not in blob
    site = tmp_path / "site"
    site.mkdir()
    (site / package.name).symlink_to(copy)
    proc = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); import secretpkg as p; "
                           "print(p.VALUE, repr(p.__doc__), p.f())", str(site)], capture_output=True, text=True)
    assert proc.stdout.split() == ["kept", "''", "!"], proc.stderr


def test_a_bytecode_copy_is_cached_and_rebuilt_when_the_source_changes(package: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = sb.bytecode_copy(package, cache)
    real_run = subprocess.run
    builds: list[list[str]] = []

    def counting(argv: list[str], **kwargs: Any) -> Any:
        if "build-bytecode" in argv:
            builds.append(argv)
        return real_run(argv, **kwargs)

    monkeypatch.setattr(sb.subprocess, "run", counting)
    assert sb.bytecode_copy(package, cache) == first and builds == []
    (package / "sub" / "mod.py").write_text("def f():\n    return 'changed'\n")
    second = sb.bytecode_copy(package, cache)
    assert second != first and len(builds) == 1 and second.is_dir()


def test_a_killed_bytecode_build_leaves_nothing_behind(package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    # A leftover of a builder that was killed with the daemon (its pid no longer runs).
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = cache / f".tmp-{package.name}-{dead.pid}-abcd1234"
    (leftover / "half").mkdir(parents=True)
    real_run = subprocess.run

    def killed(argv: list[str], **kwargs: Any) -> Any:
        if "build-bytecode" not in argv:
            return real_run(argv, **kwargs)
        Path(argv[-1], "half-made.pyc").parent.mkdir(parents=True)
        Path(argv[-1], "half-made.pyc").write_bytes(b"x")
        return subprocess.CompletedProcess(argv, -9, "", "")

    monkeypatch.setattr(sb.subprocess, "run", killed)
    with pytest.raises(RuntimeError, match="failed"):
        sb.bytecode_copy(package, cache)
    assert list(cache.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Taking the model out, cleaning up, counting
# --------------------------------------------------------------------------------------------


def test_copy_out_takes_a_regular_file(tmp_path: Path) -> None:
    scratch, dest = tmp_path / "scratch", tmp_path / "daemon" / "model.pt2"
    (scratch / "out").mkdir(parents=True)
    (scratch / "out" / "model.pt2").write_bytes(b"weights" * 100)
    assert sb.copy_out(scratch / "out" / "model.pt2", dest, max_bytes=1000, within=scratch) == 700
    assert dest.read_bytes() == b"weights" * 100
    assert [p.name for p in dest.parent.iterdir()] == ["model.pt2"]


def test_copy_out_refuses_what_a_run_could_use_to_exfiltrate_or_hang(tmp_path: Path) -> None:
    scratch, dest = tmp_path / "scratch", tmp_path / "daemon" / "model.pt2"
    scratch.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("daemon token")
    (scratch / "link.pt2").symlink_to(secret)
    (scratch / "dirlink").symlink_to(tmp_path)
    (scratch / "big.pt2").write_bytes(b"x" * 2000)
    (scratch / "hard.pt2").write_bytes(b"x")
    os.link(scratch / "hard.pt2", scratch / "hard2.pt2")
    os.mkfifo(scratch / "fifo.pt2")
    (scratch / "dir.pt2").mkdir()
    cases = {"link.pt2": "symbolic link", "dirlink/secret.txt": "symbolic link", "big.pt2": "limit",
             "hard.pt2": "hard links", "fifo.pt2": "not a regular file", "dir.pt2": "not a regular file",
             "../secret.txt": "not a file inside", "/etc/passwd": "not inside"}
    for name, reason in cases.items():
        with pytest.raises(sb.UnsafeFile, match=reason):
            sb.copy_out(scratch / name, dest, max_bytes=1000, within=scratch)
    with pytest.raises(sb.UnsafeFile, match="symbolic link"):
        sb.copy_out(scratch / "link.pt2", dest, max_bytes=1000)  # within: its own directory
    with pytest.raises(FileNotFoundError):
        sb.copy_out(scratch / "missing.pt2", dest, max_bytes=1000)
    assert not dest.exists()


def test_remove_tree_does_not_follow_links_and_removes_locked_dirs(tmp_path: Path) -> None:
    scratch, outside = tmp_path / "scratch", tmp_path / "outside"
    (scratch / "locked" / "deep").mkdir(parents=True)
    (scratch / "locked" / "deep" / "f").write_text("x")
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (scratch / "escape").symlink_to(outside)
    (scratch / "locked" / "escape-file").symlink_to(outside / "keep.txt")
    (scratch / "locked" / "deep").chmod(0)
    (scratch / "locked").chmod(0)
    sb.remove_tree(scratch)
    assert not scratch.exists() and (outside / "keep.txt").read_text() == "keep"
    sb.remove_tree(scratch)  # already gone: nothing to do


def test_count_processes_counts_a_tree() -> None:
    proc = subprocess.Popen(["/bin/sh", "-c", "sleep 30 & sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 5
        while sb.count_processes(proc.pid) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sb.count_processes(proc.pid) == 3
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()
    assert sb.count_processes(proc.pid) == 0


# --------------------------------------------------------------------------------------------
# A figure, not an assertion: what sealing costs at start-up
# --------------------------------------------------------------------------------------------


def _timed(argv: list[str], env: Mapping[str, str], cwd: str, preexec: Any = None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=dict(env), cwd=cwd, preexec_fn=preexec, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


@pytest.mark.slow
def test_start_up_overhead_of_the_sandbox(sandbox: sb.Sandbox, world: World, cache_dir: Path) -> None:
    """Prints (with -s) sandboxed vs plain `python -c 'import torch'`, interleaved; asserts only that both ran."""
    code = "import torch"
    launch = training(sandbox, world, code, hidden_sources=[SYMPY], cache_dir=cache_dir)
    plain_env = {"PATH": os.environ.get("PATH", sb.SAFE_PATH), "HOME": str(world.scratch)}
    _timed(list(launch.argv), launch.env, launch.cwd, launch.preexec)  # warm the page cache for both
    _timed([sys.executable, "-c", code], plain_env, str(world.tree))
    sealed, plain = [], []
    for _ in range(3):
        sealed.append(_timed(list(launch.argv), launch.env, launch.cwd, launch.preexec))
        plain.append(_timed([sys.executable, "-c", code], plain_env, str(world.tree)))
    started = time.perf_counter()
    training(sandbox, world, code, hidden_sources=[SYMPY], cache_dir=cache_dir)
    build_s = time.perf_counter() - started
    print(f"\nimport torch, 3 interleaved runs, load average {os.getloadavg()}: "
          f"sandboxed median {statistics.median(sealed):.3f} s (min {min(sealed):.3f}), "
          f"plain median {statistics.median(plain):.3f} s (min {min(plain):.3f}), "
          f"overhead {statistics.median(sealed) - statistics.median(plain):+.3f} s; "
          f"building the launch (cached SymPy copy) {build_s * 1000:.0f} ms")
    assert len(sealed) == len(plain) == 3
