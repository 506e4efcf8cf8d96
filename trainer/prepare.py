"""Overnight training harness: data, budget clock, progress channel, model hand-off, metric.

DO NOT CHANGE — this file is the fixed harness and metric; the daemon hash-checks it.
Agents edit train.py only. Everything that decides *how a run is scored* lives here.

Usage:
    python prepare.py [--corpus sympy|fineweb] [--source PATH_OR_URL[,...]] [--rebuild]
    python prepare.py evaluate --model PATH [--splits val,holdout]

Dependencies: Python stdlib + torch + msgpack (pyarrow only for optional .parquet input).
See README.md in this folder for the full contract.
"""

from __future__ import annotations

import os

# Idle OpenMP threads must sleep rather than spin, otherwise spinning is billed by the
# "cpu" budget clock. Only effective if torch has not been imported yet (train.py imports
# this module first); the daemon also sets it in the child's environment.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import gzip
import hashlib
import json
import math
import random
import resource
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import msgpack
import torch

# ---------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------

VOCAB_SIZE = 256                 # byte-level models: one token per byte
CHUNK_BYTES = 4096               # corpus is cut into chunks of this size before splitting
SPLITS = ("train", "val", "holdout")
SPLIT_PERCENT = {"train": 90, "val": 5, "holdout": 5}
SYMPY_PINNED_VERSION = "1.14.0"  # the reference corpus; other versions give other bytes
DEFAULT_CORPUS = "sympy"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
EXIT_DATA_ERROR = 2              # missing / corrupt data
EXIT_TRAIN_ERROR = 3             # NaN loss or other training failure reported via fail()
EVAL_BATCH = 64                  # windows per forward pass in evaluation (fixed; last batch padded)
WALL_CAP_FACTOR = 2.0            # the "cpu" clock also stops at this multiple of wall time

# DO NOT CHANGE — this is the fixed metric.
# Every evaluation scores exactly EVAL_BYTES target bytes: bytes 1..EVAL_BYTES of a split
# (byte 0 is only ever context). 131072 bytes take ~1 s on 2 CPU cores for the default model.
EVAL_BYTES = 131072


class HarnessError(Exception):
    """A problem the user can fix (bad data, bad model file). Printed without traceback."""

    def __init__(self, message: str, code: int = EXIT_DATA_ERROR) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------
# Data directory, corpus building and verification
# ---------------------------------------------------------------------------------------

def data_dir(corpus: str | None = None) -> Path:
    """$OVERNIGHT_DATA_DIR if set, else ~/.cache/overnight/data/<corpus>.

    The corpus defaults to $OVERNIGHT_CORPUS, else "sympy".
    """
    env = os.environ.get("OVERNIGHT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    corpus = corpus or os.environ.get("OVERNIGHT_CORPUS") or DEFAULT_CORPUS
    return Path.home() / ".cache" / "overnight" / "data" / corpus


def split_of(index: int, chunk: bytes) -> str:
    """Deterministic split assignment of chunk number `index` by sha256(index || content)."""
    digest = hashlib.sha256(index.to_bytes(8, "little") + chunk).digest()
    bucket = int.from_bytes(digest[:8], "little") % 100
    if bucket < SPLIT_PERCENT["train"]:
        return "train"
    if bucket < SPLIT_PERCENT["train"] + SPLIT_PERCENT["val"]:
        return "val"
    return "holdout"


def chunked(pieces: Iterator[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Re-cut a stream of byte pieces into fixed-size chunks (the last one may be short)."""
    buf = bytearray()
    for piece in pieces:
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def sympy_version() -> str | None:
    try:
        return metadata.version("sympy")
    except metadata.PackageNotFoundError:
        return None


def sympy_pieces() -> tuple[Iterator[bytes], dict[str, Any]]:
    """The .py files of the installed SymPy, sorted by relative path, with a separator line."""
    version = sympy_version()
    if version is None:
        raise HarnessError("SymPy is not installed; it is the source of the default corpus.")
    if version != SYMPY_PINNED_VERSION:
        print(f"warning: SymPy {version} is installed but the reference corpus is SymPy "
              f"{SYMPY_PINNED_VERSION}; bpb figures will not be comparable.", file=sys.stderr)
    import importlib.util
    spec = importlib.util.find_spec("sympy")
    assert spec is not None and spec.origin is not None
    root = Path(spec.origin).parent
    files = sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix())

    def gen() -> Iterator[bytes]:
        for path in files:
            rel = path.relative_to(root).as_posix()
            yield f"\n# ===== sympy/{rel} =====\n".encode()
            yield path.read_bytes()

    info = {"source": "sympy", "source_version": version, "licence": "BSD-3-Clause (SymPy)",
            "n_source_files": len(files)}
    return gen(), info


def _download(url: str, dest_dir: Path) -> Path:
    """Download one URL into dest_dir (only ever called for an explicit http(s) --source)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "download"
    dest = dest_dir / name
    if dest.exists():
        print(f"using cached download {dest}")
        return dest
    tmp = dest.with_suffix(dest.suffix + ".part")
    print(f"downloading {url}")
    with urllib.request.urlopen(url) as resp, open(tmp, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0)
        done, last = 0, 0.0
        while True:
            block = resp.read(1 << 20)
            if not block:
                break
            out.write(block)
            done += len(block)
            if time.monotonic() - last > 1.0:
                last = time.monotonic()
                pct = f" ({100 * done / total:.1f}%)" if total else ""
                print(f"  {done / 1e6:.1f} MB{pct}", flush=True)
    tmp.rename(dest)
    print(f"  done: {done / 1e6:.1f} MB -> {dest}")
    return dest


FINEWEB_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".txt")
DOC_SEPARATOR = b"\n\n"


def _fineweb_docs(path: Path) -> Iterator[bytes]:
    name = path.name
    if name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise HarnessError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow), "
                               "or convert the shards to .jsonl/.jsonl.gz/.txt") from None
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(columns=["text"]):
            for text in batch.column(0).to_pylist():
                if text:
                    yield text.encode("utf-8")
    elif name.endswith(".jsonl") or name.endswith(".jsonl.gz"):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise HarnessError(f"{path}:{lineno}: expected a JSON object with a "
                                       "'text' field") from None
                if text:
                    yield text.encode("utf-8")
    elif name.endswith(".txt"):
        yield path.read_bytes()


def fineweb_files(source: str, download_dir: Path) -> list[Path]:
    """Resolve --source (comma-separated local files/directories or explicit http(s) URLs)."""
    files: list[Path] = []
    for item in [s.strip() for s in source.split(",") if s.strip()]:
        if item.startswith(("http://", "https://")):
            files.append(_download(item, download_dir))
            continue
        p = Path(item).expanduser()
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*")
                                if f.is_file() and f.name.endswith(FINEWEB_SUFFIXES)))
        elif p.is_file():
            files.append(p)
        else:
            raise HarnessError(f"--source {item}: no such file or directory")
    bad = [f for f in files if not f.name.endswith(FINEWEB_SUFFIXES)]
    if bad:
        raise HarnessError(f"unsupported file type: {bad[0]} (want {', '.join(FINEWEB_SUFFIXES)})")
    if not files:
        raise HarnessError(f"--source {source}: no {', '.join(FINEWEB_SUFFIXES)} files found")
    return files


def fineweb_pieces(source: str, download_dir: Path,
                   max_bytes: int | None) -> tuple[Iterator[bytes], dict[str, Any]]:
    files = fineweb_files(source, download_dir)

    def gen() -> Iterator[bytes]:
        total = 0
        for f in files:
            for doc in _fineweb_docs(f):
                piece = doc + DOC_SEPARATOR
                if max_bytes is not None and total + len(piece) > max_bytes:
                    yield piece[: max_bytes - total]
                    return
                total += len(piece)
                yield piece

    info = {"source": source, "source_version": None, "licence": "see the source dataset "
            "(FineWeb: ODC-By 1.0)", "n_source_files": len(files),
            "source_files": [f.name for f in files]}
    return gen(), info


def build(corpus: str = DEFAULT_CORPUS, source: str | None = None, rebuild: bool = False,
          directory: Path | None = None, max_bytes: int | None = None) -> dict[str, Any]:
    """Build train/val/holdout .bin files + manifest.json. Idempotent unless rebuild=True."""
    directory = directory or data_dir(corpus)
    if not rebuild and (directory / MANIFEST_NAME).exists():
        # Data that does not verify is reported, never silently rebuilt: a rebuild under another
        # SymPy release would change the splits, and results measured on them would not compare.
        manifest = verify(directory)
        if manifest["corpus"] != corpus:
            raise HarnessError(f"{directory} holds corpus {manifest['corpus']!r}, not "
                               f"{corpus!r}; use another OVERNIGHT_DATA_DIR or --rebuild")
        return manifest
    if corpus == "sympy":
        pieces, info = sympy_pieces()
    elif corpus == "fineweb":
        if not source:
            raise HarnessError("--corpus fineweb needs --source PATH_OR_URL (directory or "
                               "files of .parquet/.jsonl/.jsonl.gz/.txt)")
        pieces, info = fineweb_pieces(source, directory / "download", max_bytes)
    else:
        raise HarnessError(f"unknown corpus {corpus!r} (sympy or fineweb)")

    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST_NAME).unlink(missing_ok=True)  # invalid until fully written
    outs: dict[str, BinaryIO] = {s: open(directory / f"{s}.bin.tmp", "wb") for s in SPLITS}
    hashes = {s: hashlib.sha256() for s in SPLITS}
    sizes = {s: 0 for s in SPLITS}
    chunks = {s: 0 for s in SPLITS}
    try:
        for index, chunk in enumerate(chunked(pieces)):
            s = split_of(index, chunk)
            outs[s].write(chunk)
            hashes[s].update(chunk)
            sizes[s] += len(chunk)
            chunks[s] += 1
    finally:
        for f in outs.values():
            f.close()
    for s in SPLITS:
        os.replace(directory / f"{s}.bin.tmp", directory / f"{s}.bin")
    manifest = {
        "format": MANIFEST_FORMAT,
        "corpus": corpus,
        **info,
        "chunk_bytes": CHUNK_BYTES,
        "split_rule": "chunk i (CHUNK_BYTES bytes, in corpus order) goes to bucket "
                      "int.from_bytes(sha256(i.to_bytes(8,'little') + chunk)[:8],'little') % 100"
                      ": <90 train, <95 val, else holdout",
        "files": {f"{s}.bin": {"bytes": sizes[s], "chunks": chunks[s],
                               "sha256": hashes[s].hexdigest()} for s in SPLITS},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = directory / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, directory / MANIFEST_NAME)
    return manifest


def _rebuild_hint(directory: Path, corpus: str | None = None) -> str:
    corpus_arg = f" --corpus {corpus}" if corpus and corpus != DEFAULT_CORPUS else ""
    env = f"OVERNIGHT_DATA_DIR={directory} " if os.environ.get("OVERNIGHT_DATA_DIR") else ""
    return f"rebuild it with: {env}python trainer/prepare.py{corpus_arg} --rebuild"


def verify(directory: Path | None = None, check_hashes: bool = True) -> dict[str, Any]:
    """Check manifest, file sizes and (by default) sha256 of every split file.

    Raises HarnessError (exit code 2) with a message saying how to rebuild.
    """
    directory = directory or data_dir()
    mpath = directory / MANIFEST_NAME
    if not mpath.exists():
        raise HarnessError(f"no corpus at {directory} (missing {MANIFEST_NAME}); build it with: "
                           "python trainer/prepare.py")
    try:
        manifest: dict[str, Any] = json.loads(mpath.read_text())
        files = manifest["files"]
        corpus = manifest["corpus"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise HarnessError(f"{mpath} is unreadable; {_rebuild_hint(directory)}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise HarnessError(f"{mpath} has an old format; {_rebuild_hint(directory, corpus)}")
    if corpus == "sympy":
        installed = sympy_version()
        if installed != manifest.get("source_version"):
            raise HarnessError(f"corpus was built from SymPy {manifest.get('source_version')} "
                               f"but SymPy {installed} is installed; "
                               f"{_rebuild_hint(directory, corpus)}")
    for s in SPLITS:
        name = f"{s}.bin"
        path = directory / name
        if name not in files:
            raise HarnessError(f"{mpath} lists no {name}; {_rebuild_hint(directory, corpus)}")
        if not path.exists():
            raise HarnessError(f"missing data file {path}; {_rebuild_hint(directory, corpus)}")
        if path.stat().st_size != files[name]["bytes"]:
            raise HarnessError(f"corrupt data file {path}: size {path.stat().st_size} != "
                               f"{files[name]['bytes']} in manifest; "
                               f"{_rebuild_hint(directory, corpus)}")
        if check_hashes:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
            if h.hexdigest() != files[name]["sha256"]:
                raise HarnessError(f"corrupt data file {path}: sha256 mismatch; "
                                   f"{_rebuild_hint(directory, corpus)}")
    return manifest


_verified: set[Path] = set()


def load_split(name: str, directory: Path | None = None) -> torch.Tensor:
    """A split ("train", "val", "holdout") as a 1-D uint8 CPU tensor.

    Verifies the data directory first (once per process); on failure prints the reason
    and exits with code 2.
    """
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
    directory = directory or data_dir()
    try:
        if directory not in _verified:
            verify(directory)
            _verified.add(directory)
        raw = (directory / f"{name}.bin").read_bytes()
    except HarnessError as e:
        _die(str(e), e.code)
    except OSError as e:
        _die(f"cannot read {directory / (name + '.bin')}: {e}; {_rebuild_hint(directory)}",
             EXIT_DATA_ERROR)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def get_batch(data: torch.Tensor, batch_size: int, seq_len: int, device: str | torch.device,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (x, y) windows from a uint8 split: y is x shifted left by one byte. Optional."""
    ix = torch.randint(len(data) - seq_len - 1, (batch_size,), generator=generator)
    offs = torch.arange(seq_len + 1)
    win = data[ix[:, None] + offs].long()
    x, y = win[:, :-1], win[:, 1:]
    if str(device).startswith("cuda"):
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device,
                                                                                non_blocking=True)
    return x.to(device), y.to(device)


# ---------------------------------------------------------------------------------------
# Runtime: device, threads, seed
# ---------------------------------------------------------------------------------------

def get_device() -> str:
    """"cuda" if a GPU is available, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def setup_threads() -> int:
    """torch.set_num_threads($OVERNIGHT_THREADS or os.cpu_count()); returns the count."""
    threads = int(os.environ.get("OVERNIGHT_THREADS") or os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return threads


def seed_everything(seed: int | None = None) -> int:
    """Seed python, torch (and CUDA) from $OVERNIGHT_SEED (default 0); returns the seed."""
    if seed is None:
        seed = int(os.environ.get("OVERNIGHT_SEED") or 0)
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds all CUDA devices
    return seed


# ---------------------------------------------------------------------------------------
# Budget clock
# ---------------------------------------------------------------------------------------

class Budget:
    """Time budget for the training loop only.

    clock ($OVERNIGHT_BUDGET_CLOCK):
      wall - wall-clock seconds (torch.cuda.synchronize() first on CUDA)
      cpu  - this process's CPU time (user+sys, all threads) / the thread count, so 60 s is
             ~60 wall seconds on an idle machine but does not shrink when another process
             steals a core. Stops also at WALL_CAP_FACTOR x budget of wall time.
      auto - wall on CUDA, cpu otherwise (default)
    """

    def __init__(self, seconds: float | None = None, clock: str | None = None,
                 device: str | None = None, threads: int | None = None) -> None:
        self.seconds = float(seconds if seconds is not None
                             else os.environ.get("OVERNIGHT_BUDGET_S") or 60.0)
        self.device = device or get_device()
        clock = clock or os.environ.get("OVERNIGHT_BUDGET_CLOCK") or "auto"
        if clock == "auto":
            clock = "wall" if self.device.startswith("cuda") else "cpu"
        if clock not in ("wall", "cpu"):
            raise ValueError(f"OVERNIGHT_BUDGET_CLOCK={clock!r}: expected wall, cpu or auto")
        self.clock = clock
        self.threads = threads or torch.get_num_threads()
        self._t0_wall: float | None = None
        self._t0_cpu = 0.0

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def start(self) -> None:
        self._sync()
        self._t0_wall = time.perf_counter()
        self._t0_cpu = time.process_time()

    def wall(self) -> float:
        """Wall seconds since start()."""
        if self._t0_wall is None:
            return 0.0
        return time.perf_counter() - self._t0_wall

    def elapsed(self) -> float:
        """Budget-clock seconds since start()."""
        if self._t0_wall is None:
            return 0.0
        self._sync()
        if self.clock == "wall":
            return time.perf_counter() - self._t0_wall
        return (time.process_time() - self._t0_cpu) / self.threads

    def fraction(self) -> float:
        """elapsed / budget, clipped to [0, 1] (handy for LR schedules)."""
        return min(1.0, self.elapsed() / self.seconds) if self.seconds > 0 else 1.0

    def done(self) -> bool:
        if self.elapsed() >= self.seconds:
            return True
        return self.clock == "cpu" and self.wall() >= WALL_CAP_FACTOR * self.seconds


# ---------------------------------------------------------------------------------------
# Progress channel
# ---------------------------------------------------------------------------------------

def peak_mem_mb(device: str | None = None) -> float:
    """Peak memory: CUDA max allocated on GPU, else the process's max RSS."""
    if (device or get_device()).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Reporter:
    """Writes msgpack frames to the fd in $OVERNIGHT_CHANNEL_FD, or prints when it is unset."""

    def __init__(self) -> None:
        fd = os.environ.get("OVERNIGHT_CHANNEL_FD")
        self._out: BinaryIO | None = None
        if fd:
            self._out = os.fdopen(int(fd), "wb", buffering=0, closefd=False)

    def send(self, frame: dict[str, Any]) -> None:
        if self._out is None:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in frame.items()), flush=True)
            return
        try:
            self._out.write(msgpack.packb(frame, use_bin_type=True))
            self._out.flush()
        except (BrokenPipeError, OSError):
            self._out = None  # the reader went away; keep training, print instead

    def start(self, n_params: int, budget: Budget) -> None:
        self.send({"type": "start", "n_params": int(n_params), "device": budget.device.split(":")[0],
                   "budget_s": budget.seconds, "clock": budget.clock,
                   "threads": torch.get_num_threads()})

    def progress(self, step: int, budget: Budget, train_loss: float, tokens_per_s: float,
                 lr: float) -> None:
        self.send({"type": "progress", "step": int(step), "elapsed": budget.elapsed(),
                   "wall": budget.wall(), "train_loss": float(train_loss),
                   "tokens_per_s": float(tokens_per_s), "lr": float(lr)})

    def end(self, steps: int, budget: Budget, tokens: int) -> None:
        self.send({"type": "end", "steps": int(steps), "elapsed": budget.elapsed(),
                   "wall": budget.wall(), "tokens": int(tokens),
                   "peak_mem_mb": float(peak_mem_mb(budget.device))})

    def error(self, message: str) -> None:
        self.send({"type": "error", "message": str(message)})


def fail(message: str, reporter: Reporter | None = None,
         code: int = EXIT_TRAIN_ERROR) -> NoReturn:
    """Send an error frame (if a reporter is given), print to stderr, exit with `code`."""
    if reporter is not None:
        reporter.error(message)
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _die(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


# ---------------------------------------------------------------------------------------
# Model hand-off
# ---------------------------------------------------------------------------------------

META_FILE = "overnight_meta.json"


def model_out_path() -> Path:
    return Path(os.environ.get("OVERNIGHT_MODEL_OUT") or "model.pt2")


def save_model(model: torch.nn.Module, seq_len: int, path: str | os.PathLike[str] | None = None
               ) -> Path:
    """Export `model` to a self-contained artifact that evaluation loads without train.py.

    Contract: model(idx: LongTensor[B, T]) -> logits FloatTensor[B, T, 256], T = seq_len.
    Uses torch.export (dynamic batch) + torch.export.save; falls back to torch.jit.trace.
    The model is copied to CPU float32 in eval mode first; the caller's model is untouched.
    """
    path = Path(path) if path is not None else model_out_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    m = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    m = copy.deepcopy(m).to("cpu", torch.float32).eval()
    example = torch.randint(0, VOCAB_SIZE, (EVAL_BATCH, seq_len), dtype=torch.long)
    meta: dict[str, Any] = {"seq_len": int(seq_len), "vocab_size": VOCAB_SIZE,
                            "n_params": sum(p.numel() for p in m.parameters())}
    t0 = time.perf_counter()
    tmp = path.with_name(".tmp-" + path.name)
    with torch.no_grad():
        try:
            batch = torch.export.Dim("batch", min=1, max=1 << 16)
            ep = torch.export.export(m, (example,), dynamic_shapes=({0: batch},))
            meta["format"] = "torch.export"
            torch.export.save(ep, tmp, extra_files={META_FILE: json.dumps(meta)})
        except Exception as e:  # noqa: BLE001 - any export failure -> try TorchScript
            first_line = (str(e).strip().splitlines() or [""])[0][:300]
            print(f"torch.export failed ({type(e).__name__}: {first_line}); falling back to "
                  "torch.jit.trace (data-dependent Python branches get frozen)", file=sys.stderr)
            traced = torch.jit.trace(m, (example,), check_trace=False)  # type: ignore[no-untyped-call]
            meta["format"] = "torchscript"
            torch.jit.save(traced, str(tmp), _extra_files={META_FILE: json.dumps(meta)})
    os.replace(tmp, path)
    print(f"saved model ({meta['format']}, {time.perf_counter() - t0:.1f}s) to {path}")
    return path


def load_model(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """Load an artifact written by save_model -> (callable model, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"model file {path} does not exist", code=1)
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise HarnessError(f"model file {path} is not a saved model ({e})", code=1) from None
    extra: dict[str, Any] = {META_FILE: ""}
    try:
        if any(n.endswith("/archive_format") for n in names):
            model: Any = torch.export.load(path, extra_files=extra).module()
        elif any(n.endswith("/data.pkl") for n in names):
            model = torch.jit.load(str(path), map_location="cpu",  # type: ignore[no-untyped-call]
                                   _extra_files=extra)
            model.eval()
        else:
            raise ValueError("neither a torch.export nor a TorchScript archive")
    except Exception as e:  # noqa: BLE001
        raise HarnessError(f"cannot load model file {path}: {type(e).__name__}: {e}",
                           code=1) from None
    try:
        meta = json.loads(extra[META_FILE])
        seq_len = int(meta["seq_len"])
        assert int(meta["vocab_size"]) == VOCAB_SIZE and seq_len > 0
    except Exception:  # noqa: BLE001
        raise HarnessError(f"model file {path} lacks valid {META_FILE} metadata "
                           "(was it written by prepare.save_model?)", code=1) from None
    return model, meta


# ---------------------------------------------------------------------------------------
# The metric. DO NOT CHANGE — this is the fixed metric.
# ---------------------------------------------------------------------------------------

def eval_windows(n_data: int, seq_len: int, n_bytes: int) -> list[tuple[int, int]]:
    """Windows (start, n_scored) covering target bytes 1..n_bytes exactly once.

    Window i feeds bytes data[start : start+seq_len] and predicts data[start+1 : start+seq_len+1].
    Full windows are non-overlapping: start = 0, T, 2T, ... If n_bytes is not a multiple of T,
    the last window is a full-length window that ENDS at target byte n_bytes
    (start = n_bytes - T) and only its last n_bytes % T predictions are scored, so no byte is
    scored twice and every window the model sees is exactly seq_len long.
    """
    if n_bytes + 1 > n_data:
        raise ValueError(f"need {n_bytes + 1} bytes, split has {n_data}")
    if n_bytes < seq_len:
        raise ValueError(f"n_bytes={n_bytes} < seq_len={seq_len}")
    full, rem = divmod(n_bytes, seq_len)
    windows = [(i * seq_len, seq_len) for i in range(full)]
    if rem:
        windows.append((n_bytes - seq_len, rem))
    return windows


@torch.no_grad()
def bits_per_byte(model: Any, data: torch.Tensor, seq_len: int,
                  n_bytes: int = EVAL_BYTES) -> float:
    """bpb = mean cross-entropy (nats) over target bytes 1..n_bytes of `data`, / ln 2.

    The model predicts byte t+1 from the bytes <= t within its window (see eval_windows).
    """
    windows = eval_windows(len(data), seq_len, n_bytes)
    total_nats = 0.0
    scored = 0
    offs = torch.arange(seq_len + 1)
    pos = torch.arange(seq_len)
    for b in range(0, len(windows), EVAL_BATCH):
        group = windows[b: b + EVAL_BATCH]
        group = group + [(group[-1][0], 0)] * (EVAL_BATCH - len(group))  # pad, scores nothing
        starts = torch.tensor([s for s, _ in group])
        n_scored = torch.tensor([n for _, n in group])
        win = data[starts[:, None] + offs].long()
        x, y = win[:, :-1], win[:, 1:]
        logits = model(x)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (EVAL_BATCH, seq_len,
                                                                            VOCAB_SIZE):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise HarnessError(f"model returned {shape}, expected "
                               f"({EVAL_BATCH}, {seq_len}, {VOCAB_SIZE})", code=1)
        logp = torch.log_softmax(logits.double(), dim=-1)  # model runs in fp32; sum in fp64
        nll = -logp.gather(-1, y[..., None]).squeeze(-1)  # [B, T] nats
        mask = pos[None, :] >= (seq_len - n_scored)[:, None]  # the last n_scored positions
        total_nats += float(nll[mask].sum())
        scored += int(mask.sum())
    assert scored == n_bytes
    return total_nats / scored / math.log(2)


def evaluate(model_path: str | os.PathLike[str], splits: tuple[str, ...] = ("val",),
             directory: Path | None = None) -> dict[str, Any]:
    """Load an exported model and compute bpb on the requested splits (float32, no grad)."""
    setup_threads()
    t0 = time.perf_counter()
    directory = directory or data_dir()
    verify(directory)
    model, meta = load_model(model_path)
    seq_len = int(meta["seq_len"])
    result: dict[str, Any] = {}
    n_val = EVAL_BYTES
    for split in splits:
        if split not in ("val", "holdout"):
            raise HarnessError(f"cannot evaluate on split {split!r} (val or holdout)", code=1)
        data = torch.frombuffer(bytearray((directory / f"{split}.bin").read_bytes()),
                                dtype=torch.uint8)
        n = min(EVAL_BYTES, len(data) - 1)
        if n < EVAL_BYTES:
            print(f"warning: {split} split has only {len(data)} bytes; scoring {n} bytes "
                  f"instead of {EVAL_BYTES}", file=sys.stderr)
        bpb = bits_per_byte(model, data, seq_len, n)
        if not math.isfinite(bpb):
            raise HarnessError(f"{split} bpb is not finite ({bpb})", code=1)
        result[f"{split}_bpb"] = bpb
        if split == "val":
            n_val = n
    result["val_bytes"] = n_val
    result["eval_seconds"] = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["evaluate"]:
        ap = argparse.ArgumentParser(prog="prepare.py evaluate",
                                     description="Print val/holdout bpb of an exported model "
                                                 "as one JSON line.")
        ap.add_argument("--model", required=True, help="artifact written by save_model")
        ap.add_argument("--splits", default="val", help="comma-separated: val,holdout")
        args = ap.parse_args(argv[1:])
        splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
        try:
            result = evaluate(args.model, splits)
        except HarnessError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.code
        print(json.dumps(result), flush=True)
        return 0

    ap = argparse.ArgumentParser(prog="prepare.py",
                                 description="Build (or verify) the train/val/holdout corpus.")
    ap.add_argument("--corpus", default=os.environ.get("OVERNIGHT_CORPUS") or DEFAULT_CORPUS,
                    choices=["sympy", "fineweb"])
    ap.add_argument("--source", help="fineweb: local directory/files or http(s) URL(s), "
                                     "comma-separated (.parquet/.jsonl/.jsonl.gz/.txt)")
    ap.add_argument("--max-bytes", type=int, default=None,
                    help="fineweb: stop after this many corpus bytes")
    ap.add_argument("--rebuild", action="store_true", help="rebuild even if the data verifies")
    ap.add_argument("--json", action="store_true",
                    help="end with one JSON line {data_dir, manifest_sha256} for the daemon, which "
                         "pins the manifest for the session and re-checks it before every evaluation")
    args = ap.parse_args(argv)
    directory = data_dir(args.corpus)
    t0 = time.perf_counter()
    try:
        manifest = build(args.corpus, args.source, args.rebuild, directory, args.max_bytes)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    files = manifest["files"]
    print(f"corpus {manifest['corpus']} ({manifest['source']} "
          f"{manifest.get('source_version') or ''}) at {directory} "
          f"[{time.perf_counter() - t0:.1f}s]")
    for s in SPLITS:
        f = files[f"{s}.bin"]
        print(f"  {s + '.bin':12s} {f['bytes']:>12,d} bytes  sha256 {f['sha256'][:16]}…")
    if args.json:
        digest = hashlib.sha256((directory / MANIFEST_NAME).read_bytes()).hexdigest()
        print(json.dumps({"data_dir": str(directory), "manifest_sha256": digest}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
