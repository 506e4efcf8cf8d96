"""The sealed run: bubblewrap sandboxes for training (sandbox A) and evaluation (sandbox B).

The daemon measures untrusted, agent-written code, so a run must not be able to read what it is
measured on (the val/holdout bytes, the sources the corpus was built from), the daemon's state
(``.overnight/``: journal, token), the user's files or secrets, nor reach the network. The view
is fail-closed: a fresh root holds only what a Python + torch process needs, read-only, plus the
paths the caller names. Everything here only *builds* the command; the caller starts it, so
supervision (budget, memory, kill) stays in the executor.

Paths as a run sees them (bwrap): ``/overnight/tree`` (its commit, read-only), ``/overnight/scratch``
(the only writable place that outlives it; HOME and TMPDIR live there), ``/overnight/data/<name>``
(data files bound one by one), and for evaluation ``/overnight/harness`` and ``/overnight/model``.

Runnable as a script only for its own use: ``python sandbox.py build-bytecode SRC DEST`` builds a
bytecode-only package copy with the interpreter that will import it (see ``bytecode_copy``).
"""

from __future__ import annotations

import ast
import ctypes
import errno
import gc
import glob
import hashlib
import importlib.util
import json
import marshal
import os
import resource
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

KINDS = ("bwrap", "none")

# Where a run finds things inside the sandbox: fixed, so nothing about the host leaks through them.
ROOT = "/overnight"
TREE = f"{ROOT}/tree"
SCRATCH = f"{ROOT}/scratch"
DATA = f"{ROOT}/data"
HARNESS = f"{ROOT}/harness"
MODEL = f"{ROOT}/model"
# Placeholder in an evaluation command for the model file as the evaluator sees it.
MODEL_TOKEN = "{model}"

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_MAX_FILE_BYTES = 4 << 30
DEFAULT_TMPFS_BYTES = 1 << 30
_MAX_OPEN_FILES = 4096
# Tasks (processes and threads) a non-root run may add to its user's count before fork fails.
_TASK_ALLOWANCE = 8192

# Inherited from the daemon's environment when set: locale, time zone, BLAS threading, GPU choice.
_PASS_NAMES = frozenset({"LANG", "LANGUAGE", "TZ", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"})
_PASS_PREFIXES = ("LC_", "OMP_", "MKL_", "OPENBLAS_")

# Readable by uid 0 as their owner even with every capability dropped: hidden inside /etc.
_ETC_SECRET_FILES = ("shadow", "shadow-", "gshadow", "gshadow-", "sudoers")
_ETC_SECRET_DIRS = ("ssh", "ssl/private", "sudoers.d")

# A bytecode copy leaves out the package's tests (a third of SymPy's bytes, never imported by a run).
_DROPPED_DIRS = frozenset({"__pycache__", "tests"})
# Part of the cache key: bump when the copy's contents change for the same source.
_BYTECODE_FORMAT = 1


class SandboxUnavailable(Exception):
    """The sandbox asked for cannot be created here; the message says why and what to do."""


class UnsafeFile(ValueError):
    """A file a run left in its scratch cannot be taken out safely."""


@dataclass(frozen=True)
class Launch:
    """What to hand to ``subprocess.Popen``: ``Popen(launch.argv, env=launch.env, cwd=launch.cwd,
    pass_fds=launch.pass_fds, preexec_fn=launch.preexec, start_new_session=True, ...)``."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    pass_fds: tuple[int, ...]
    sealed: bool
    # (resource, (soft, hard)) pairs, prepared here so that the child only makes system calls.
    rlimits: tuple[tuple[int, tuple[int, int]], ...]

    # The process that builds the launch is the one that starts it: the child checks it still has this parent.
    parent: int = field(default_factory=os.getpid)

    def preexec(self) -> None:
        """For ``preexec_fn``, in the forked child before exec: setrlimit on prepared tuples and the
        parent-death signal, nothing else (no import, no lock but the GIL, which CPython re-creates in the
        child), so it is safe although the daemon has threads. Set before exec, the limits bind bwrap and
        all it starts; prlimit on the pid after start would race bwrap's own fork into the sandbox."""
        for res, limits in self.rlimits:
            resource.setrlimit(res, limits)
        die_with_parent(self.parent)


def _load_prctl() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None  # not Linux: a run started here outlives a killed daemon (the executor still kills it on exit)
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


# Resolved once, in the parent: the child only calls it.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """In a forked child before exec: SIGKILL this process when the thread that started it dies (the daemon
    killed, even with -9). A parent that died before the signal was armed is caught by the ppid check."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(125)


@dataclass(frozen=True)
class _Bwrap:
    path: str
    # --unshare-user: not for a setuid bwrap (it makes its own namespaces), nor for root where user
    # namespaces are off (root is sealed by its dropped capabilities alone).
    userns: bool
    disable_userns: bool  # --disable-userns (bwrap >= 0.8): no nested user namespace to rearrange mounts
    size: bool  # --size (bwrap >= 0.8): a bounded tmpfs


@dataclass(frozen=True)
class _Interpreter:
    """Where one Python interpreter lives: what must be visible for it to start and import torch."""

    executable: str
    roots: tuple[str, ...]
    magic: str
    version: str


# --------------------------------------------------------------------------------------------
# Finding and probing bubblewrap
# --------------------------------------------------------------------------------------------

_probe_lock = threading.Lock()
_probed: dict[str, _Bwrap] = {}
_interpreters: dict[str, _Interpreter] = {}


def _find_bwrap() -> str | None:
    # The daemon may run with a thin PATH (a service): look in the default one too.
    return shutil.which("bwrap") or shutil.which("bwrap", path=os.defpath)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else "no message"


def _hint(message: str) -> str:
    """What to do about a failed probe, from bwrap's own words."""
    lowered = message.lower()
    # "loopback: Failed RTM_NEWADDR" is Ubuntu 24.04's AppArmor leaving the new namespace powerless.
    if any(word in lowered for word in ("namespace", "uid map", "rtm_newaddr", "loopback")):
        return ("user namespaces look disabled: check `sysctl kernel.unprivileged_userns_clone` (must be 1), "
                "`sysctl user.max_user_namespaces` (> 0) and, on Ubuntu 24.04, "
                "`sysctl kernel.apparmor_restrict_unprivileged_userns` (0, or an AppArmor profile that allows bwrap)")
    if "proc" in lowered or "mount" in lowered:
        return "this looks like a container that forbids new mounts: run Overnight outside it, or allow nested namespaces"
    return "check that bubblewrap works here (`bwrap --ro-bind / / true`)"


def _unavailable(path: str, message: str) -> SandboxUnavailable:
    return SandboxUnavailable(
        f"bubblewrap ({path}) cannot create the sandbox: {message}; {_hint(message)}; "
        'or set sandbox = "none" in overnight.toml to run training unsealed '
        "(a run can then read the validation data, your files and secrets, and the network)"
    )


def _features(path: str) -> _Bwrap:
    try:
        proc = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _unavailable(path, str(exc)) from None
    if proc.returncode != 0:
        raise _unavailable(path, _first_line(proc.stderr or proc.stdout))
    userns = not os.stat(path).st_mode & stat.S_ISUID
    return _Bwrap(path, userns, userns and "--disable-userns" in proc.stdout, "--size" in proc.stdout)


def _namespace_flags(bw: _Bwrap, network: bool) -> list[str]:
    """The isolation every sandbox gets; the probe runs with exactly these."""
    flags = ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "overnight",
             "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if bw.userns:
        # Explicit even as root: a user namespace is what lets --disable-userns forbid nested ones.
        flags.append("--unshare-user")
    if bw.disable_userns:
        flags.append("--disable-userns")
    if not network:
        flags.append("--unshare-net")
    return flags


def _try(bw: _Bwrap) -> str | None:
    """Why a trivial command fails in the namespaces and base filesystem a real run gets, or None."""
    argv = [bw.path, *_namespace_flags(bw, network=False), *_base_fs(bw, gpu=False, tmpfs_bytes=1 << 20), "--", "/bin/true"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env={"PATH": SAFE_PATH})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode != 0:
        return _first_line(proc.stderr) if proc.stderr.strip() else f"exit code {proc.returncode}"
    return None


def _probe(path: str) -> _Bwrap:
    """The sandbox checked for real, once per process (a failure is not cached: the admin may fix it)."""
    with _probe_lock:
        if path in _probed:
            return _probed[path]
        bw = _features(path)
        error = _try(bw)
        if error is not None and bw.userns and os.geteuid() == 0:
            without = replace(bw, userns=False, disable_userns=False)
            if _try(without) is None:
                bw, error = without, None
        if error is not None:
            raise _unavailable(path, error)
        _probed[path] = bw
        return bw


def detect(kind: str) -> Sandbox:
    """The sandbox of ``kind`` ("bwrap" or "none"), checked for real: raises SandboxUnavailable."""
    if kind == "none":
        return Sandbox(kind="none", sealed=False, bwrap=None)
    if kind != "bwrap":
        raise ValueError(f"sandbox must be one of {', '.join(KINDS)}, got {kind!r}")
    path = _find_bwrap()
    if path is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed: install it (`apt install bubblewrap`), "
            'or set sandbox = "none" in overnight.toml to run training unsealed '
            "(a run can then read the validation data, your files and secrets, and the network)"
        )
    return Sandbox(kind="bwrap", sealed=True, bwrap=_probe(path))


# --------------------------------------------------------------------------------------------
# The filesystem a sandbox sees
# --------------------------------------------------------------------------------------------


def _gpu_devices() -> list[str]:
    return sorted(glob.glob("/dev/nvidia*"))


def _gpu_present() -> bool:
    return any(name[len("/dev/nvidia"):].isdigit() for name in _gpu_devices())


def _sized(bw: _Bwrap, tmpfs_bytes: int) -> list[str]:
    return ["--size", str(tmpfs_bytes)] if bw.size else []


def _system_dirs() -> list[str]:
    """The system half of the view: /usr, the top-level lib/bin dirs (symlinks on merged-usr), /etc, /sys."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += ["--ro-bind", "/etc", "/etc"]
    for name in _ETC_SECRET_FILES:
        if os.path.isfile(f"/etc/{name}"):
            args += ["--ro-bind", "/dev/null", f"/etc/{name}"]
    for name in _ETC_SECRET_DIRS:
        if os.path.isdir(f"/etc/{name}"):
            args += ["--tmpfs", f"/etc/{name}", "--remount-ro", f"/etc/{name}"]
    return [*args, "--ro-bind", "/sys", "/sys"]


def _base_fs(bw: _Bwrap, gpu: bool, tmpfs_bytes: int) -> list[str]:
    """Every sandbox's fail-closed base: system dirs read-only, its own /proc and /dev, a fresh /tmp."""
    args = [*_system_dirs(), "--proc", "/proc", "--dev", "/dev"]
    if gpu:
        for dev in _gpu_devices():
            args += ["--dev-bind", dev, dev]
        args += ["--ro-bind-try", "/proc/driver/nvidia", "/proc/driver/nvidia"]
    # /dev/shm and /tmp are memory the RSS watch does not see: bounded when bwrap can.
    args += [*_sized(bw, tmpfs_bytes), "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    return [*args, *_sized(bw, tmpfs_bytes), "--tmpfs", "/tmp"]


def _covered(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


_INTERPRETER_PROBE = (
    "import importlib.util, json, os, site, sys, sysconfig\n"
    "paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *site.getsitepackages(),\n"
    "         *(sysconfig.get_paths()[k] for k in ('stdlib', 'platstdlib', 'purelib', 'platlib')),\n"
    "         os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))]\n"
    "print(json.dumps({'paths': paths, 'magic': importlib.util.MAGIC_NUMBER.hex(), 'version': sys.version}))\n"
)


def _interpreter(python: str) -> _Interpreter:
    """The directories ``python`` needs (its prefixes and site-packages), asked of it once per process.
    Not sys.path: a .pth or an editable install may point into a repository that must stay hidden."""
    with _probe_lock:
        if python in _interpreters:
            return _interpreters[python]
    try:
        proc = subprocess.run([python, "-I", "-c", _INTERPRETER_PROBE], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL, env={"PATH": SAFE_PATH})
        info = json.loads(proc.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot ask {python} where it is installed: {exc}") from None
    roots: list[str] = []
    # Shortest first, so that a site-packages inside its prefix is not bound twice.
    for raw in sorted({os.path.abspath(p) for p in info["paths"] if p and os.path.isdir(p)}, key=len):
        if not _covered(raw, ["/usr", *roots]):
            roots.append(raw)
    found = _Interpreter(python, tuple(roots), str(info["magic"]), str(info["version"]))
    with _probe_lock:
        _interpreters[python] = found
    return found


def _resolve_python(command: Sequence[str]) -> str:
    if not command:
        raise ValueError("empty command")
    exe = command[0] if os.path.isabs(command[0]) else shutil.which(command[0], path=SAFE_PATH)
    if exe is None:
        raise ValueError(f"{command[0]!r} is not on the sandbox's PATH ({SAFE_PATH}): give its absolute path")
    return exe


def _check_roots(roots: Sequence[str], protected: Sequence[Path]) -> None:
    """An interpreter living above the data or the workspace (a venv in $HOME) would expose them."""
    for root in roots:
        if root == "/":
            raise ValueError("the interpreter's prefix is /: the sandbox would show the whole machine")
        for path in protected:
            if _covered(str(path), [root]):
                raise ValueError(f"the interpreter directory {root} contains {path}: the sandbox would expose it; "
                                 "use a Python installed elsewhere (a venv outside the workspace and data)")


# --------------------------------------------------------------------------------------------
# Environment and limits
# --------------------------------------------------------------------------------------------


def _passes(name: str) -> bool:
    return name in _PASS_NAMES or name.startswith(_PASS_PREFIXES)


def _environment(run_env: Mapping[str, str], fixed: Mapping[str, str]) -> dict[str, str]:
    """An allow-list, not a deny-list: API keys, tokens, PYTHONPATH, LD_PRELOAD, agent sockets never pass."""
    env = {name: value for name, value in os.environ.items() if _passes(name)}
    for name, value in run_env.items():
        if name in fixed:
            raise ValueError(f"{name} is set by the sandbox (to {fixed[name]!r}); do not pass it")
        if not (name.startswith("OVERNIGHT_") or name == "PYTHONHASHSEED" or _passes(name)):
            raise ValueError(f"{name} is not in the sandbox's environment allow-list")
        env[name] = value
    return {**env, **fixed}


def _search_path(python: str) -> str:
    # The interpreter's own bin dir first, so that a run's `python` is the one it was started with.
    return f"{os.path.dirname(python)}:{SAFE_PATH}"


def _tasks_of(uid: int) -> int:
    """Tasks (threads included) that RLIMIT_NPROC already counts against ``uid``."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid:
                count += len(os.listdir(f"/proc/{entry.name}/task"))
        except OSError:
            continue
    return count


def _clamped(res: int, value: int) -> tuple[int, tuple[int, int]]:
    # Soft = hard, so the run cannot raise it back; never above the daemon's own hard limit.
    hard = resource.getrlimit(res)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    return res, (value, value)


def _rlimits(memory_limit_gb: float, gpu: bool, max_file_bytes: int) -> tuple[tuple[int, tuple[int, int]], ...]:
    limits = [_clamped(resource.RLIMIT_CORE, 0), _clamped(resource.RLIMIT_FSIZE, max_file_bytes),
              _clamped(resource.RLIMIT_NOFILE, _MAX_OPEN_FILES)]
    if os.geteuid() != 0:
        # The kernel never enforces RLIMIT_NPROC for uid 0; for a user it counts all their tasks.
        limits.append(_clamped(resource.RLIMIT_NPROC, _tasks_of(os.getuid()) + _TASK_ALLOWANCE))
    if not gpu:
        # A backstop for an allocation spike between two RSS samples. Not on CUDA: the driver
        # maps address space far beyond what the process uses.
        limits.append(_clamped(resource.RLIMIT_DATA, int((2 * memory_limit_gb + 2) * 2**30)))
    return tuple(limits)


# --------------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------------


def _plain_name(name: str) -> None:
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"{name!r} must be a plain file name")


def _training_env(python: str, scratch: str, data_dir: str | None, model_name: str) -> dict[str, str]:
    """What the sandbox itself sets for a training run, with paths as the run sees them."""
    env = {"HOME": f"{scratch}/home", "TMPDIR": f"{scratch}/tmp", "PATH": _search_path(python),
           "OVERNIGHT_MODEL_OUT": f"{scratch}/{model_name}", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    if data_dir is not None:
        env["OVERNIGHT_DATA_DIR"] = data_dir
    return env


def _evaluation_env(python: str, data_dir: str, tmp: str) -> dict[str, str]:
    return {"OVERNIGHT_DATA_DIR": data_dir, "HOME": tmp, "TMPDIR": tmp, "PATH": _search_path(python),
            "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _default_cache_dir() -> Path:
    # Shared by every workspace: a copy depends only on the package and the interpreter.
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "overnight" / "bytecode"


def _data_binds(data_files: Mapping[str, Path]) -> list[str]:
    args = ["--dir", DATA]
    for name, host in sorted(data_files.items()):
        _plain_name(name)
        if not Path(host).is_file():
            raise ValueError(f"data file {host} does not exist")
        args += ["--ro-bind", str(host), f"{DATA}/{name}"]
    return args


def _readable(paths: Sequence[str]) -> list[tuple[str, Path]]:
    """(path as the run names it, host folder) for each readable folder; a missing one is an error, not a silent gap."""
    shown = []
    for path in paths:
        host = Path(path).expanduser()
        if not host.is_dir():
            raise ValueError(f"readable folder {path} does not exist (create it, or remove it from readable)")
        shown.append((path, host.resolve()))
    return shown


def _workdir(tree: Path, workdir: str) -> str:
    rel = PurePosixPath(workdir)
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"workdir {workdir!r} must be relative and inside the tree")
    if not (tree / rel).is_dir():
        raise ValueError(f"workdir {tree / rel} is not a directory")
    return str(rel)


def _prepare_scratch(scratch: Path) -> None:
    if scratch.is_symlink() or not scratch.is_dir():
        raise ValueError(f"scratch {scratch} must be an existing directory (not a symlink)")
    for sub in ("home", "tmp"):
        (scratch / sub).mkdir(exist_ok=True)


def _common_dir(data_files: Mapping[str, Path]) -> str:
    parents = {str(Path(p).absolute().parent) for p in data_files.values()}
    if len(parents) > 1:
        raise ValueError(f"unsealed runs need their data files in one directory, got {sorted(parents)}")
    return parents.pop()


@dataclass(frozen=True)
class Sandbox:
    """How runs are sealed: ``kind`` "bwrap" (sealed) or "none" (only the environment and rlimits)."""

    kind: str
    sealed: bool
    bwrap: _Bwrap | None

    def training(
        self,
        command: Sequence[str],
        *,
        tree: Path,
        workdir: str,
        scratch: Path,
        data_files: Mapping[str, Path],
        env: Mapping[str, str],
        memory_limit_gb: float = 8.0,
        pass_fds: Sequence[int] = (),
        hidden_sources: Sequence[Path] = (),
        cache_dir: Path | None = None,
        network: bool = False,
        gpu: bool | None = None,
        model_name: str = "model.pt2",
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        tmpfs_bytes: int = DEFAULT_TMPFS_BYTES,
        readable: Sequence[str] = (),
    ) -> Launch:
        """Sandbox A: ``command`` (already resolved, e.g. [sys.executable, "train.py"]) in ``tree``/``workdir``.

        ``data_files`` maps file names to host files, bound one by one (only what training may read);
        ``hidden_sources`` names package directories the corpus was built from, replaced by a
        bytecode-only copy built under ``cache_dir`` (default: the user's cache). ``env`` holds the run's
        variables (``OVERNIGHT_*``, ``OMP_*``...; anything else is refused); ``pass_fds`` the fds it
        inherits (the progress pipe). The run writes its model to ``$OVERNIGHT_MODEL_OUT``, which is
        ``scratch/model_name`` on the host: take it out with ``copy_out``. ``command[0]`` must be the
        Python interpreter (its prefixes are what the view shows). ``readable`` names host folders the
        run may read (absolute, or ``~/...``: shown under the run's own home). Unsealed ("none"), only the
        environment, HOME/TMPDIR and rlimits apply: the run sees the host, ``hidden_sources`` is ignored.
        """
        gpu = _gpu_present() if gpu is None else gpu
        workdir = _workdir(tree, workdir)
        _plain_name(model_name)
        _prepare_scratch(scratch)
        python = _resolve_python(command)
        rlimits = _rlimits(memory_limit_gb, gpu, max_file_bytes)
        shown = _readable(readable)
        if self.bwrap is None:
            for inside, host in shown:
                if inside.startswith("~/"):  # the run's home is the scratch's: link the folder in
                    link = scratch / "home" / inside[2:]
                    link.parent.mkdir(parents=True, exist_ok=True)
                    if not link.is_symlink():
                        link.symlink_to(host)
            data_dir = _common_dir(data_files) if data_files else None
            run_env = _environment(env, _training_env(python, str(scratch), data_dir, model_name))
            return Launch(tuple(command), run_env, str(tree / workdir), tuple(pass_fds), False, rlimits)
        interp = _interpreter(python)
        _check_roots(interp.roots, [tree, scratch, *(Path(p).parent for p in data_files.values())])
        overlays = _hidden_binds(hidden_sources, interp, cache_dir or _default_cache_dir())
        args = [
            self.bwrap.path, *_namespace_flags(self.bwrap, network), *_base_fs(self.bwrap, gpu, tmpfs_bytes),
            *_ro_binds(interp.roots), *overlays,
            "--ro-bind", str(tree), TREE, "--bind", str(scratch), SCRATCH, *_data_binds(data_files),
            *[arg for inside, host in shown
              for arg in ("--ro-bind", str(host), f"{SCRATCH}/home/{inside[2:]}" if inside.startswith("~/") else inside)],
            # Last: the new root itself (where /overnight was made) becomes read-only too.
            "--remount-ro", "/", "--chdir", str(PurePosixPath(TREE) / workdir), "--", *command,
        ]
        run_env = _environment(env, _training_env(python, SCRATCH, DATA if data_files else None, model_name))
        return Launch(tuple(args), run_env, "/", tuple(pass_fds), True, rlimits)

    def evaluation(
        self,
        command: Sequence[str],
        *,
        harness_dir: Path,
        model_file: Path,
        data_dir: Path,
        env: Mapping[str, str],
        workdir: str = ".",
        memory_limit_gb: float = 8.0,
        gpu: bool | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        tmpfs_bytes: int = DEFAULT_TMPFS_BYTES,
    ) -> Launch:
        """Sandbox B: the pinned harness (``harness_dir``, read-only; cwd ``workdir`` in it) scores ``model_file``
        on the whole ``data_dir``. No network ever, and nothing writable but a fresh /tmp.

        The model's path as the evaluator sees it replaces ``MODEL_TOKEN`` ("{model}") in ``command``,
        or, without one, is appended as ``--model PATH``. ``model_file`` may also be a folder (the warm evaluator's:
        models the daemon places there appear in it, read-only); then the token is the folder's path.
        """
        gpu = _gpu_present() if gpu is None else gpu
        workdir = _workdir(harness_dir, workdir)
        if not (model_file.is_file() or model_file.is_dir()) or model_file.is_symlink():
            raise ValueError(f"model file {model_file} does not exist")
        python = _resolve_python(command)
        rlimits = _rlimits(memory_limit_gb, gpu, max_file_bytes)
        if self.bwrap is None:
            run_env = _environment(env, _evaluation_env(python, str(data_dir), os.environ.get("TMPDIR") or "/tmp"))
            return Launch(_with_model(command, str(model_file)), run_env, str(harness_dir / workdir), (), False, rlimits)
        interp = _interpreter(python)
        _check_roots(interp.roots, [harness_dir, model_file.parent, data_dir])
        inside = MODEL if model_file.is_dir() else f"{MODEL}/{model_file.name}"
        args = [
            self.bwrap.path, *_namespace_flags(self.bwrap, network=False), *_base_fs(self.bwrap, gpu, tmpfs_bytes),
            *_ro_binds(interp.roots), "--ro-bind", str(harness_dir), HARNESS, "--ro-bind", str(model_file), inside,
            "--ro-bind", str(data_dir), DATA, "--remount-ro", "/", "--chdir", str(PurePosixPath(HARNESS) / workdir),
            "--", *_with_model(command, inside),
        ]
        run_env = _environment(env, _evaluation_env(python, DATA, "/tmp"))
        return Launch(tuple(args), run_env, "/", (), True, rlimits)


def _with_model(command: Sequence[str], model: str) -> tuple[str, ...]:
    if MODEL_TOKEN in command:
        return tuple(model if part == MODEL_TOKEN else part for part in command)
    return (*command, "--model", model)


def _ro_binds(paths: Sequence[str]) -> list[str]:
    return [arg for path in paths for arg in ("--ro-bind", path, path)]


# Where else a package's sources sit below a bound root: another interpreter's site-packages (a venv's
# base, Debian's dist-packages) or conda's package cache. Globs, not a walk: cheap enough for every run.
_COPY_PATTERNS = ("lib*/python3*/*-packages/{name}", "local/lib*/python3*/*-packages/{name}",
                  "pkgs/*/lib/python3*/site-packages/{name}")


def _other_copies(source: Path, roots: Sequence[str]) -> list[str]:
    """Other installs of the hidden package that the view would show, with their sources."""
    found: set[str] = set()
    for root in roots:
        if root.endswith(("site-packages", "dist-packages")):
            found.update(glob.glob(f"{glob.escape(root)}/{glob.escape(source.name)}"))
        for pattern in _COPY_PATTERNS:
            found.update(glob.glob(f"{glob.escape(root)}/{pattern.format(name=glob.escape(source.name))}"))
    real = os.path.realpath(source)
    return sorted(path for path in found if os.path.isdir(path) and os.path.realpath(path) != real)


def _hidden_binds(hidden: Sequence[Path], interp: _Interpreter, cache_dir: Path) -> list[str]:
    """Each hidden package the run could see is replaced, at the same path, by its bytecode copy; any
    other install of it in the view (say the base interpreter's) by an empty directory."""
    args: list[str] = []
    roots = ["/usr", *interp.roots]
    for source in hidden:
        source = Path(source).absolute()
        for other in _other_copies(source, roots):
            args += ["--tmpfs", other, "--remount-ro", other]
        if not _covered(str(source), roots):
            continue  # not in the view at all: nothing to replace
        args += ["--ro-bind", str(bytecode_copy(source, cache_dir, interp.executable)), str(source)]
    return args


# --------------------------------------------------------------------------------------------
# Bytecode-only copies of hidden packages
# --------------------------------------------------------------------------------------------


def _fingerprint(source: Path) -> str:
    """Every file's path, size and mtime: a reinstall or an edit anywhere changes it."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            digest.update(f"{os.path.relpath(path, source)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_dead_builds(cache_dir: Path) -> None:
    """A killed build leaves only its temp dir behind (never a half-made copy): remove those of dead builders."""
    for entry in cache_dir.glob(".tmp-*"):
        try:
            pid = int(entry.name.split("-")[-2])
        except (ValueError, IndexError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(entry, ignore_errors=True)


def bytecode_copy(source: Path, cache_dir: Path, python: str = sys.executable) -> Path:
    """A copy of package directory ``source`` with its ``.py`` files compiled for ``python`` and removed.

    Docstrings are blanked (``__doc__`` stays a string, so code that edits docstrings still runs)
    and ``tests`` dirs are left out: a run can import the package but not read back the text a
    corpus was built from. Cached under ``cache_dir`` by source fingerprint and interpreter; built in
    a temp dir and renamed into place, so a killed build leaves no half-made copy. The first build of
    SymPy takes seconds: the daemon can call this at start instead of on the first run.
    """
    source = Path(source).absolute()
    interp = _interpreter(python)
    key_text = json.dumps([_BYTECODE_FORMAT, str(source), _fingerprint(source), interp.magic, interp.version])
    final = cache_dir / f"{source.name}-{hashlib.sha256(key_text.encode()).hexdigest()[:16]}"
    if final.is_dir():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    _sweep_dead_builds(cache_dir)
    tmp = cache_dir / f".tmp-{source.name}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        # In the interpreter that will import the copy (its bytecode format), and off the daemon's GIL.
        proc = subprocess.run([python, "-I", "-B", __file__, "build-bytecode", str(source), str(tmp)],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, env={"PATH": SAFE_PATH})
        if proc.returncode != 0:
            raise RuntimeError(f"building the bytecode copy of {source} failed: {_first_line(proc.stderr)}")
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            # Another builder got there first; its copy is as good as ours.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _blank_docstrings(tree: ast.Module) -> None:
    """Empty every module, class and function docstring in place (``__doc__`` stays a str: SymPy edits some).

    Walks statements only, iteratively: expressions hold no docstrings, and SymPy has expressions
    deep enough to overflow a recursive visitor.
    """
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0].value if isinstance(body[0], ast.Expr) else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                first.value = ""
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            children = getattr(node, name, None)
            if isinstance(children, list):
                todo += [child for child in children if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case))]


def _compile_file(src: Path, pyc: Path) -> bool:
    """``src`` as a legacy ``.pyc`` (what a sourceless import loads), docstrings blanked; False if it does not compile."""
    try:
        tree = ast.parse(src.read_bytes(), filename=str(src))
        _blank_docstrings(tree)
        code = compile(tree, str(src), "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False  # it could not be imported from source either
    st = src.stat()
    header = importlib.util.MAGIC_NUMBER + bytes(4) + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
    pyc.write_bytes(header + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little") + marshal.dumps(code))
    return True


def _build_bytecode(source: Path, dest: Path) -> None:
    # Parsing makes millions of AST objects and no cycles: the collector would only triple the time.
    gc.disable()
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = [d for d in dirnames if d not in _DROPPED_DIRS]
        out = dest / os.path.relpath(dirpath, source)
        out.mkdir(parents=True, exist_ok=True)
        for name in filenames:
            src = Path(dirpath, name)
            if src.is_symlink() or name.endswith((".pyc", ".pyo")):
                continue  # a link could lead back to sources; stale bytecode is not ours
            if name.endswith(".py"):
                _compile_file(src, out / (name + "c"))
            else:
                shutil.copy2(src, out / name)


# --------------------------------------------------------------------------------------------
# Watching and cleaning up after a run
# --------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(child) for child in fh.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def count_processes(pid: int) -> int:
    """Processes in the tree under ``pid`` (the started bwrap), itself included: for a fork-bomb watch.

    Reads only that tree's /proc/<pid>/task/*/children files. Within a PID namespace orphans are
    re-parented to the sandbox's init, which bwrap keeps as its child, so double-forked processes
    are counted too. 0 once the process is gone.
    """
    if not os.path.exists(f"/proc/{pid}"):
        return 0
    seen, todo = {pid}, [pid]
    while todo:
        for child in _children(todo.pop()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return len(seen)


def _open_below(within: Path, relative: PurePosixPath) -> int:
    """Open ``within/relative`` following no link at any step below ``within`` (a run controls every name there)."""
    fd = os.open(within, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for part in relative.parts[:-1]:
            step = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = step
        # O_NONBLOCK: opening a FIFO the run left must not hang the daemon.
        return os.open(relative.parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        reason = "a symbolic link" if exc.errno in (errno.ELOOP, errno.ENOTDIR) else (exc.strerror or str(exc))
        raise UnsafeFile(f"{relative} in the run's scratch cannot be taken: {reason}") from None
    finally:
        os.close(fd)


def _copy_fd(fd: int, dest: Path, max_bytes: int) -> int:
    tmp = dest.with_name(f".{dest.name}.tmp-{secrets.token_hex(4)}")
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    total = 0
    try:
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > max_bytes:
                raise UnsafeFile(f"the run's file grew past {max_bytes} bytes")
            os.write(out, chunk)
        os.close(out)
        out = -1
        os.replace(tmp, dest)
    finally:
        if out >= 0:
            os.close(out)
        tmp.unlink(missing_ok=True)
    return total


def copy_out(source: Path, dest: Path, *, max_bytes: int, within: Path | None = None) -> int:
    """Copy a file a run wrote (its model) out of its scratch to ``dest`` (the daemon's), safely; returns the size.

    No link is followed below ``within`` (default: ``source``'s directory, the daemon-made scratch),
    and the file must be a regular file with one link and at most ``max_bytes``: anything else raises
    UnsafeFile (a ValueError); a missing file raises FileNotFoundError. Call it after the sandbox exited.
    """
    within = within if within is not None else source.parent
    try:
        relative = PurePosixPath(source.relative_to(within))
    except ValueError:
        raise UnsafeFile(f"{source} is not inside {within}") from None
    if not relative.parts or ".." in relative.parts:
        raise UnsafeFile(f"{source} is not a file inside {within}")
    fd = _open_below(within, relative)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{relative} in the run's scratch is not a regular file")
        if st.st_nlink > 1:
            raise UnsafeFile(f"{relative} in the run's scratch has {st.st_nlink} hard links")
        if st.st_size > max_bytes:
            raise UnsafeFile(f"{relative} in the run's scratch is {st.st_size} bytes, over the {max_bytes}-byte limit")
        os.set_blocking(fd, True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        return _copy_fd(fd, dest, max_bytes)
    finally:
        os.close(fd)


def _make_removable(path: str) -> None:
    """Give every directory back its owner's rwx (a run may chmod 000 its dirs), without following links."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return
        os.chmod(path, 0o700)
        with os.scandir(path) as entries:
            subdirs = [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for sub in subdirs:
        _make_removable(sub)


def remove_tree(path: Path) -> None:
    """Delete a run's scratch without following any link it left (rmtree's fd-based walk), even chmod'ed dirs."""
    if path.is_symlink():
        path.unlink()
        return
    if not path.exists():
        return
    _make_removable(str(path))
    shutil.rmtree(path)


if __name__ == "__main__":
    # Only for bytecode_copy, run with the target interpreter: python sandbox.py build-bytecode SRC DEST
    if len(sys.argv) != 4 or sys.argv[1] != "build-bytecode":
        sys.exit("usage: sandbox.py build-bytecode SRC DEST")
    _build_bytecode(Path(sys.argv[2]), Path(sys.argv[3]))
