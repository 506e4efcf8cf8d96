"""Overnight training harness: data, budget clock, progress channel, model hand-off, metric.

DO NOT CHANGE — this file is the fixed harness and metric; the daemon hash-checks it.
Agents edit train.py only. Everything that decides *how a run is scored* lives here.

Usage:
    python prepare.py [--corpus sympy|fineweb] [--source PATH_OR_URL[,...]] [--rebuild] [--json]
    python prepare.py evaluate --model PATH [--splits val,holdout,ood]

Dependencies: Python stdlib + torch + msgpack (pyarrow only for optional .parquet input).
See README.md in this folder for the full contract.
"""

from __future__ import annotations

import os

# Idle OpenMP threads must sleep rather than spin, otherwise spinning is billed as CPU time.
# Only effective if torch has not been imported yet (train.py imports this module first);
# the daemon also sets it in the child's environment.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import ast
import copy
import functools
import gzip
import hashlib
import heapq
import importlib.util
import io
import json
import math
import operator
import platform
import random
import re
import resource
import sys
import sysconfig
import time
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
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
SPLITS = ("train", "val", "holdout")  # the corpus' own splits (chunk rule below)
SPLIT_PERCENT = {"train": 90, "val": 5, "holdout": 5}
OOD_SPLIT = "ood"                # out-of-distribution text: the Python standard library
ALL_SPLITS = (*SPLITS, OOD_SPLIT)
# The files a training run may see; everything else in the data directory is the measurement.
TRAINING_FILES = ("manifest.json", "train.bin")
MEASUREMENT_SPLITS = ("val", "holdout", OOD_SPLIT)
SYMPY_PINNED_VERSION = "1.14.0"  # the reference corpus; other versions give other bytes
DEFAULT_CORPUS = "sympy"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 2              # 2: adds ood.bin, drops the build timestamp (reproducible manifest)
OOD_BYTES = 262144               # size of ood.bin: 64 chunks sampled from the whole stdlib
STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3",
                              "__pycache__"})
OOD_LICENCE = "PSF-2.0 (Python standard library)"
EXIT_DATA_ERROR = 2              # missing / corrupt data
EXIT_TRAIN_ERROR = 3             # NaN loss, a model that cannot be exported, other training failures
EXIT_REFUSED = 4                 # evaluate refused the model (unsafe file or a failed self-check)
EVAL_BATCH = 64                  # windows per forward pass in evaluation (fixed; last batch padded)

# DO NOT CHANGE — this is the fixed metric.
# Every evaluation scores exactly EVAL_BYTES target bytes of val and holdout: bytes 1..EVAL_BYTES
# of the split (byte 0 is only ever context). ~1 s per split on 2 CPU cores for the default model.
EVAL_BYTES = 131072
OOD_EVAL_BYTES = 65536           # bytes 1..65536 of ood.bin
# The reference for the train/val gap flag: TRAIN_EVAL_CHUNKS chunks spread evenly over train.bin
# (chunk i * n_chunks // TRAIN_EVAL_CHUNKS), scored like a split. Not a prefix: the first 32 KiB of
# the SymPy corpus (sympy/__init__.py, abc.py) score ~0.5 bpb worse than val for an honest model.
TRAIN_EVAL_CHUNKS = 16
TRAIN_EVAL_BYTES = TRAIN_EVAL_CHUNKS * CHUNK_BYTES - 1  # every byte of the sample but the first is a target
TRAIN_GAP_FLAG_BPB = 0.5         # flag (not refuse) when val_bpb < train_bpb - this


class HarnessError(Exception):
    """A problem the user can fix (bad data, bad model file). Printed without traceback."""

    def __init__(self, message: str, code: int = EXIT_DATA_ERROR) -> None:
        super().__init__(message)
        self.code = code


class ModelRefused(HarnessError):
    """The evaluation refuses the model: an unsafe or malformed file, or a failed self-check.

    `check` names what failed ("load", "finite", "batch" or "causal"); `evidence` is JSON-able.
    """

    def __init__(self, reason: str, check: str, evidence: dict[str, Any] | None = None) -> None:
        super().__init__(reason, code=EXIT_REFUSED)
        self.check = check
        self.evidence = evidence or {}


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


def _bucket(index: int, chunk: bytes, salt: bytes = b"") -> int:
    digest = hashlib.sha256(salt + index.to_bytes(8, "little") + chunk).digest()
    return int.from_bytes(digest[:8], "little")


def split_of(index: int, chunk: bytes) -> str:
    """Deterministic split assignment of chunk number `index` by sha256(index || content)."""
    bucket = _bucket(index, chunk) % 100
    if bucket < SPLIT_PERCENT["train"]:
        return "train"
    if bucket < SPLIT_PERCENT["train"] + SPLIT_PERCENT["val"]:
        return "val"
    return "holdout"


def chunked(pieces: Iterable[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
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


def sympy_root() -> Path:
    """The directory of the importable sympy package (what the default corpus is built from)."""
    spec = importlib.util.find_spec("sympy")
    if spec is None or spec.origin is None:
        raise HarnessError("SymPy is not installed; it is the source of the default corpus.")
    return Path(spec.origin).parent.absolute()


def _sources(root: Path, what: str, files: list[Path]) -> list[Path]:
    # A source tree without .py files is what a training run sees (a bytecode-only copy): say so
    # rather than build an empty corpus that would verify.
    if not files:
        raise HarnessError(f"{root} holds no .py files, so {what} cannot be built from it (a training "
                           "run sees only a bytecode copy of its sources); build the corpus outside "
                           "the sandbox with: python trainer/prepare.py")
    return files


def sympy_pieces() -> tuple[Iterator[bytes], dict[str, Any]]:
    """The .py files of the installed SymPy, sorted by relative path, with a separator line."""
    version = sympy_version()
    if version is None:
        raise HarnessError("SymPy is not installed; it is the source of the default corpus.")
    if version != SYMPY_PINNED_VERSION:
        print(f"warning: SymPy {version} is installed but the reference corpus is SymPy "
              f"{SYMPY_PINNED_VERSION}; bpb figures will not be comparable.", file=sys.stderr)
    root = sympy_root()
    files = _sources(root, "the SymPy corpus",
                     sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()))

    def gen() -> Iterator[bytes]:
        for path in files:
            rel = path.relative_to(root).as_posix()
            yield f"\n# ===== sympy/{rel} =====\n".encode()
            yield path.read_bytes()

    info = {"source": "sympy", "source_version": version, "licence": "BSD-3-Clause (SymPy)",
            "n_source_files": len(files)}
    return gen(), info


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"]).absolute()


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's own .py files, without third-party packages, test suites, IDLE, lib2to3."""
    root = root or stdlib_root()
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruned while walking: site-packages alone can hold more files than the stdlib.
        dirnames[:] = [d for d in dirnames if d not in STDLIB_SKIP_DIRS]
        files.extend(Path(dirpath, f) for f in filenames if f.endswith(".py"))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def build_ood(root: Path | None = None) -> tuple[bytes, dict[str, Any]]:
    """ood.bin: OOD_BYTES of the running interpreter's standard library sources.

    The stdlib .py files (sorted by relative path, each after a `# ===== stdlib/<rel> =====`
    line) are cut into CHUNK_BYTES chunks like the corpus; the OOD_BYTES / CHUNK_BYTES full chunks
    with the smallest sha256(b"ood" || index || chunk) key are kept, in stream order, so the
    sample spreads over the whole library and depends only on the Python version.
    """
    root = root or stdlib_root()
    files = _sources(root, "the out-of-distribution split (ood.bin)", stdlib_files(root))

    def gen() -> Iterator[bytes]:
        for path in files:
            yield f"\n# ===== stdlib/{path.relative_to(root).as_posix()} =====\n".encode()
            yield path.read_bytes()

    # Short tail chunk excluded, so the split is exactly OOD_BYTES whenever the library is big enough.
    full = ((i, c) for i, c in enumerate(chunked(gen())) if len(c) == CHUNK_BYTES)
    picked = heapq.nsmallest(OOD_BYTES // CHUNK_BYTES, full, key=lambda ic: _bucket(ic[0], ic[1], b"ood"))
    data = b"".join(c for _, c in sorted(picked, key=lambda ic: ic[0]))
    info = {"source": "Python standard library", "python_version": platform.python_version(),
            "licence": OOD_LICENCE, "n_source_files": len(files),
            "rule": "stdlib .py files (not site-packages/dist-packages/test/tests/idlelib/lib2to3) sorted by "
                    "relative path, each after '\\n# ===== stdlib/<rel> =====\\n', cut into CHUNK_BYTES chunks; "
                    "the OOD_BYTES/CHUNK_BYTES full chunks i with the smallest "
                    "int.from_bytes(sha256(b'ood' + i.to_bytes(8,'little') + chunk)[:8],'little'), in stream order"}
    return data, info


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
            "source_files": [f.name for f in files],
            "source_paths": fineweb_source_paths(source, download_dir)}
    return gen(), info


def fineweb_source_paths(source: str, download_dir: Path) -> list[str]:
    """Absolute paths a training run must not see: the local --source items and the download cache."""
    paths: list[str] = []
    for item in [s.strip() for s in source.split(",") if s.strip()]:
        p = download_dir if item.startswith(("http://", "https://")) else Path(item).expanduser()
        if str(p.absolute()) not in paths:
            paths.append(str(p.absolute()))
    return paths



def build(corpus: str = DEFAULT_CORPUS, source: str | None = None, rebuild: bool = False,
          directory: Path | None = None, max_bytes: int | None = None) -> dict[str, Any]:
    """Build train/val/holdout/ood .bin files + manifest.json. Idempotent unless rebuild=True."""
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
    ood, ood_info = build_ood()  # before anything is written: a missing stdlib leaves the old data alone

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
    (directory / f"{OOD_SPLIT}.bin.tmp").write_bytes(ood)
    for s in ALL_SPLITS:
        os.replace(directory / f"{s}.bin.tmp", directory / f"{s}.bin")
    files = {f"{s}.bin": {"bytes": sizes[s], "chunks": chunks[s], "sha256": hashes[s].hexdigest()}
             for s in SPLITS}
    files[f"{OOD_SPLIT}.bin"] = {"bytes": len(ood), "chunks": -(-len(ood) // CHUNK_BYTES),
                                 "sha256": hashlib.sha256(ood).hexdigest()}
    # No timestamps or absolute paths (except fineweb's own --source): the manifest, and so the
    # manifest_sha256 the daemon pins, is the same wherever and whenever the corpus is rebuilt.
    manifest = {
        "format": MANIFEST_FORMAT,
        "corpus": corpus,
        **info,
        "chunk_bytes": CHUNK_BYTES,
        "split_rule": "chunk i (CHUNK_BYTES bytes, in corpus order) goes to bucket "
                      "int.from_bytes(sha256(i.to_bytes(8,'little') + chunk)[:8],'little') % 100"
                      ": <90 train, <95 val, else holdout",
        "ood": ood_info,
        "training_files": list(TRAINING_FILES),
        "files": files,
    }
    tmp = directory / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, directory / MANIFEST_NAME)
    return manifest


def hidden_sources(manifest: dict[str, Any]) -> list[str]:
    """Absolute paths the corpus was built from, which a training run must not see.

    With them a run could rebuild the val split (e.g. prepare.build(directory=...)). The
    standard library behind ood.bin cannot be hidden from Python, so ood.bin is a diagnostic.
    """
    if manifest.get("corpus") == "sympy":
        return [str(sympy_root())]
    return [str(p) for p in manifest.get("source_paths") or []]


def _rebuild_hint(directory: Path, corpus: str | None = None) -> str:
    corpus_arg = f" --corpus {corpus}" if corpus and corpus != DEFAULT_CORPUS else ""
    env = f"OVERNIGHT_DATA_DIR={directory} " if os.environ.get("OVERNIGHT_DATA_DIR") else ""
    return f"rebuild it with: {env}python trainer/prepare.py{corpus_arg} --rebuild"


def verify(directory: Path | None = None, check_hashes: bool = True,
           splits: Iterable[str] | None = None) -> dict[str, Any]:
    """Check the manifest and, for each named split (default: all four), its size and sha256.

    `splits=()` checks the manifest only. Raises HarnessError (exit code 2) with a message
    saying how to rebuild.
    """
    directory = directory or data_dir()
    names = ALL_SPLITS if splits is None else tuple(splits)
    for s in names:
        if s not in ALL_SPLITS:
            raise ValueError(f"unknown split {s!r}; expected one of {ALL_SPLITS}")
    mpath = directory / MANIFEST_NAME
    if not mpath.exists():
        raise HarnessError(f"no corpus at {directory} (missing {MANIFEST_NAME}); build it with: "
                           "python trainer/prepare.py")
    try:
        manifest: dict[str, Any] = json.loads(mpath.read_text())
        files = manifest["files"]
        corpus = manifest["corpus"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise HarnessError(f"{mpath} is unreadable; {_rebuild_hint(directory)}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise HarnessError(f"{mpath} has format {manifest.get('format')!r} but this harness needs format "
                           f"{MANIFEST_FORMAT} (it adds the out-of-distribution split ood.bin); "
                           f"{_rebuild_hint(directory, corpus)}")
    if corpus == "sympy":
        # Without SymPy's metadata (a sealed training run may not see it) the sha256s alone vouch
        # for the data; a different installed release would build different splits.
        installed = sympy_version()
        if installed is not None and installed != manifest.get("source_version"):
            raise HarnessError(f"corpus was built from SymPy {manifest.get('source_version')} "
                               f"but SymPy {installed} is installed; "
                               f"{_rebuild_hint(directory, corpus)}")
    for s in names:
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


_verified: set[tuple[Path, str]] = set()


def load_split(name: str, directory: Path | None = None) -> torch.Tensor:
    """A split ("train", "val", "holdout", "ood") as a 1-D uint8 CPU tensor.

    Verifies the manifest and that split only (once per process and split); on failure
    prints the reason and exits with code 2. A training run sees only train.bin: asking for
    a measurement split there says so.
    """
    if name not in ALL_SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {ALL_SPLITS}")
    directory = directory or data_dir()
    path = directory / f"{name}.bin"
    try:
        if (directory, name) not in _verified:
            verify(directory, splits=())
            if name in MEASUREMENT_SPLITS and not path.exists():
                raise HarnessError(f"the {name} split is not available to training runs: it is the "
                                   f"measurement ({directory} has no {name}.bin; outside a training run, "
                                   f"{_rebuild_hint(directory)})")
            verify(directory, splits=(name,))
            _verified.add((directory, name))
        raw = path.read_bytes()
    except HarnessError as e:
        _die(str(e), e.code)
    except OSError as e:
        _die(f"cannot read {path}: {e}; {_rebuild_hint(directory)}", EXIT_DATA_ERROR)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def _read_prefix(directory: Path, name: str, n: int) -> torch.Tensor:
    """The first n bytes of a split file (after verify()) as a uint8 tensor."""
    with open(directory / f"{name}.bin", "rb") as f:
        raw = f.read(n)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def train_sample(directory: Path) -> torch.Tensor:
    """TRAIN_EVAL_CHUNKS whole chunks of train.bin, spread evenly over it, concatenated (like a split)."""
    path = directory / "train.bin"
    n_chunks = path.stat().st_size // CHUNK_BYTES
    if n_chunks < TRAIN_EVAL_CHUNKS:
        return _read_prefix(directory, "train", TRAIN_EVAL_BYTES + 1)
    raw = bytearray()
    with open(path, "rb") as f:
        for i in range(TRAIN_EVAL_CHUNKS):
            f.seek(i * n_chunks // TRAIN_EVAL_CHUNKS * CHUNK_BYTES)
            raw += f.read(CHUNK_BYTES)
    return torch.frombuffer(raw, dtype=torch.uint8)


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
# Runtime: device, threads, seed, scale
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


def scale() -> float:
    """$OVERNIGHT_SCALE (default 1): how much bigger the daemon's transfer check wants the model.

    train.py decides what it scales (the default widens and deepens by this factor).
    """
    raw = os.environ.get("OVERNIGHT_SCALE") or "1"
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"OVERNIGHT_SCALE={raw!r}: expected a positive number") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"OVERNIGHT_SCALE={raw!r}: expected a positive number")
    return value


# ---------------------------------------------------------------------------------------
# Budget clock
# ---------------------------------------------------------------------------------------

CLOCKS = ("steps", "wall", "cpu")
CALIBRATION_WARMUP_STEPS = 5     # not timed: first steps pay for allocation, lazy init, compilation
# Consecutive steps per timed window. Short windows find the clean stretches between a neighbour's
# bursts; on CUDA every window boundary is a synchronize, which drains the launch queue, so windows
# are longer there.
CALIBRATION_WINDOW_STEPS = {"cpu": 2, "cuda": 5}
CALIBRATION_MIN_STEPS = 20       # timed steps before the step count is fixed, at least ...
# ... and at least this share of the budget (budget-clock time). A CPU shared with other work is
# slowed for seconds at a time, and only a long calibration sees its clean speed: on this 2-vCPU VM
# at load 5-10, the fastest 2-step window of 100 steps varied by 7.3 % (CV), of 300 by 3.9 %, of
# 500 by 1.9 %. A GPU is not shared that way.
CALIBRATION_FRACTION = {"cpu": 0.25, "cuda": 0.05}
# Only when nobody supervises the run (no OVERNIGHT_CHANNEL_FD, i.e. by hand): stop at this
# multiple of the budget in wall time. Under the daemon the limits are enforced from outside.
HAND_WALL_CAP_FACTOR = 3.0
# Anchored calibration: the daemon passes the step count and calibrated step time of the code this run derives
# from (the same code's first run, or the parent a candidate was made from). A run whose own calibrated step time is
# within this share of the anchor's trains exactly the anchor's step count: timing noise (±1-3 % between processes;
# one thread's calibrated step time rose 5-6 % with both cores busy, and 10 % beside a memory-heavy neighbour) never
# changes the step count of equal code, and the LR schedule follows the same N from step 0. (10 % fewer steps cost
# the default model 0.17 bpb at 60 s: a step count that followed the machine would decide experiments.)
# A change that makes steps faster or slower by more than that gets N scaled by the ratio.
ANCHOR_TOLERANCE = 0.12
# ... for a calibration of ANCHOR_STEPS timed steps or more; a shorter one (a short budget) times its fastest window
# less precisely, so its tolerance widens as 1/sqrt(steps), up to ANCHOR_TOLERANCE_MAX.
ANCHOR_STEPS = 400
ANCHOR_TOLERANCE_MAX = 0.25


def _anchor() -> tuple[int | None, float | None]:
    """$OVERNIGHT_ANCHOR_STEPS and $OVERNIGHT_ANCHOR_STEP_S: the step count and step time to anchor to, if given."""
    try:
        steps = int(os.environ.get("OVERNIGHT_ANCHOR_STEPS") or 0)
        seconds = float(os.environ.get("OVERNIGHT_ANCHOR_STEP_S") or 0.0)
    except ValueError:
        return None, None
    if steps > 0 and math.isfinite(seconds) and seconds > 0:
        return steps, seconds
    return None, None


class Budget:
    """The training loop's budget. train.py's contract: `while not budget.done():`, one call per step.

    clock ($OVERNIGHT_BUDGET_CLOCK):
      steps - (default; "auto") the budget becomes a step count N fixed from the code's own speed:
              after CALIBRATION_WARMUP_STEPS untimed steps, windows of CALIBRATION_WINDOW_STEPS
              (2 on CPU, 5 on CUDA) consecutive steps are timed (CPU: process CPU time / threads; CUDA: wall time with
              torch.cuda.synchronize() at window boundaries only) until at least
              CALIBRATION_MIN_STEPS steps and CALIBRATION_FRACTION (25 % on CPU, 5 % on CUDA) of the budget are timed; the
              fastest window's mean step time t gives N = round(budget / t). The fastest window
              ignores time lost to a neighbour, so equal code trains the same number of steps.
              fraction() = step / N (a provisional N while calibrating), done() = step >= N.
              Anchored ($OVERNIGHT_ANCHOR_STEPS, $OVERNIGHT_ANCHOR_STEP_S, set by the daemon from the same code's
              first run or the parent's): N is the anchor's from step 0, and stays it when the calibrated step time
              is within ANCHOR_TOLERANCE of the anchor's; otherwise N = anchor N x anchor t / t.
      wall  - wall-clock seconds (torch.cuda.synchronize() first on CUDA)
      cpu   - this process's CPU time (user+sys, all threads) / the thread count
    """

    def __init__(self, seconds: float | None = None, clock: str | None = None,
                 device: str | None = None, threads: int | None = None,
                 reporter: Reporter | None = None) -> None:
        self.seconds = float(seconds if seconds is not None
                             else os.environ.get("OVERNIGHT_BUDGET_S") or 60.0)
        self.device = device or get_device()
        clock = clock or os.environ.get("OVERNIGHT_BUDGET_CLOCK") or "auto"
        if clock == "auto":
            clock = "steps"
        if clock not in CLOCKS:
            raise ValueError(f"OVERNIGHT_BUDGET_CLOCK={clock!r}: expected steps, wall, cpu or auto")
        self.clock = clock
        self.threads = threads or torch.get_num_threads()
        self.reporter = reporter
        self.supervised = bool(os.environ.get("OVERNIGHT_CHANNEL_FD"))
        self.steps_planned: int | None = None   # N, once fixed (steps clock)
        self.step_seconds: float | None = None  # the calibrated step time t
        self.calibration_steps: int | None = None
        self.capped = False                     # stopped by HAND_WALL_CAP_FACTOR
        self._t0_wall: float | None = None
        self._t0_cpu = 0.0
        self._calls = 0
        self._best: float | None = None          # fastest window mean so far
        self._window_start = 0.0
        self._window_step = 0
        self._calibration_start = 0.0
        kind = "cuda" if self._cuda() else "cpu"
        self.window_steps = CALIBRATION_WINDOW_STEPS[kind]
        self.calibration_fraction = CALIBRATION_FRACTION[kind]
        self.anchor_steps, self.anchor_step_seconds = _anchor()
        self.anchored: bool | None = None        # whether N is the anchor's (None: no anchor given)

    def _cuda(self) -> bool:
        return self.device.startswith("cuda")

    def _sync(self) -> None:
        if self._cuda():
            torch.cuda.synchronize()

    def start(self) -> None:
        self._sync()
        self._t0_wall = time.perf_counter()
        self._t0_cpu = time.process_time()
        self._calls = 0

    @property
    def step(self) -> int:
        """Training steps completed: done() calls so far minus the one that started step 0."""
        return max(0, self._calls - 1)

    def wall(self) -> float:
        """Wall seconds since start()."""
        if self._t0_wall is None:
            return 0.0
        return time.perf_counter() - self._t0_wall

    def cpu(self) -> float:
        """Process CPU seconds (user+sys, all threads) since start(), divided by the thread count."""
        if self._t0_wall is None:
            return 0.0
        return (time.process_time() - self._t0_cpu) / self.threads

    def _measure(self) -> float:
        """What calibration times: wall after a sync on CUDA, CPU time per thread otherwise."""
        if self._cuda():
            self._sync()
            return self.wall()
        return self.cpu()

    def _planned(self) -> int | None:
        if self.steps_planned is not None:
            return self.steps_planned
        if self.anchor_steps is not None:
            return self.anchor_steps  # the anchor's N until calibration says the code's speed differs
        if self._best is None:
            return None
        return max(0, round(self.seconds / self._best))

    def _anchored_plan(self, t: float) -> int:
        """N from the calibrated step time t and the anchor: the anchor's N when t is within ANCHOR_TOLERANCE of the
        anchor's step time, else the anchor's N scaled by how much faster or slower this code is."""
        assert self.anchor_steps is not None and self.anchor_step_seconds is not None
        ratio = t / self.anchor_step_seconds
        timed = max(1, self.step - CALIBRATION_WARMUP_STEPS)
        tolerance = min(ANCHOR_TOLERANCE_MAX, ANCHOR_TOLERANCE * math.sqrt(max(1.0, ANCHOR_STEPS / timed)))
        self.anchored = abs(ratio - 1.0) <= tolerance
        return self.anchor_steps if self.anchored else max(1, round(self.anchor_steps / ratio))

    def elapsed(self) -> float:
        """Budget-clock seconds since start(); for `steps`: steps done x the calibrated step time."""
        if self._t0_wall is None:
            return 0.0
        if self.clock == "wall":
            self._sync()
            return self.wall()
        if self.clock == "cpu":
            return self.cpu()
        planned = self._planned()
        if planned is None:
            return self._measure() if not self._cuda() else self.wall()
        return self.step / planned * self.seconds if planned > 0 else self.seconds

    def fraction(self) -> float:
        """Share of the budget used, in [0, 1] (handy for LR schedules)."""
        if self.seconds <= 0:
            return 1.0
        return min(1.0, self.elapsed() / self.seconds)

    def done(self) -> bool:
        """Call exactly once per training step, before it: True once the budget is spent."""
        if self._t0_wall is None:
            self.start()
        self._calls += 1
        if self.seconds <= 0:
            finished = True
        elif self.clock == "steps":
            finished = self._steps_done()
        else:
            finished = self.elapsed() >= self.seconds
        if not finished and not self.supervised and self.wall() >= HAND_WALL_CAP_FACTOR * max(self.seconds, 1.0):
            print(f"budget: stopping after {self.wall():.0f} s wall ({HAND_WALL_CAP_FACTOR:g} x the budget); "
                  "runs by hand are capped because no supervisor is watching", file=sys.stderr, flush=True)
            self.capped = finished = True
        if finished and self.clock == "steps" and self.steps_planned is None:
            self._fix(self.step)  # ended before calibration could: what it ran is the plan
        return finished

    def _steps_done(self) -> bool:
        step = self.step
        if self.steps_planned is not None:
            return step >= self.steps_planned
        if step == CALIBRATION_WARMUP_STEPS:
            self._window_start = self._calibration_start = self._measure()
            self._window_step = step
        elif step > CALIBRATION_WARMUP_STEPS and step - self._window_step >= self.window_steps:
            now = self._measure()
            mean = (now - self._window_start) / (step - self._window_step)
            if mean > 0 and (self._best is None or mean < self._best):
                self._best = mean
            self._window_start, self._window_step = now, step
            timed = step - CALIBRATION_WARMUP_STEPS
            planned = self._planned()
            if planned is not None and (step >= planned or (
                    timed >= CALIBRATION_MIN_STEPS and now - self._calibration_start >= self.calibration_fraction * self.seconds)):
                if self.anchor_steps is not None and self._best is not None:
                    planned = self._anchored_plan(self._best)
                planned = max(planned, step)  # steps already run are part of the plan
                self._fix(planned)
                return step >= planned
        planned = self._planned()
        if planned is not None:
            return step >= planned
        # No window timed yet (tiny budget or very slow steps): the budget's seconds of raw clock.
        return self.elapsed() >= self.seconds

    def _fix(self, planned: int) -> None:
        self.steps_planned = planned
        self.calibration_steps = self.step
        if self._best is not None:
            self.step_seconds = self._best
        else:
            self.step_seconds = self._measure() / self.step if self.step else None
        if self.reporter is None:
            self.reporter = Reporter()
        self.reporter.calibrated(self)


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

    def calibrated(self, budget: Budget) -> None:
        """Sent once by Budget (steps clock) when the step count is fixed."""
        self.send({"type": "calibrated", "steps": int(budget.steps_planned or 0),
                   "step_seconds": float(budget.step_seconds or 0.0),
                   "calibration_steps": int(budget.calibration_steps or 0),
                   "anchored": budget.anchored})

    def progress(self, step: int, budget: Budget, train_loss: float, tokens_per_s: float,
                 lr: float) -> None:
        self.send({"type": "progress", "step": int(step), "elapsed": budget.elapsed(),
                   "wall": budget.wall(), "train_loss": float(train_loss),
                   "tokens_per_s": float(tokens_per_s), "lr": float(lr)})

    def end(self, steps: int, budget: Budget, tokens: int) -> None:
        self.send({"type": "end", "steps": int(steps), "elapsed": budget.elapsed(),
                   "wall": budget.wall(), "tokens": int(tokens),
                   "peak_mem_mb": float(peak_mem_mb(budget.device)),
                   "steps_planned": budget.steps_planned})

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
# Model hand-off: the Overnight model archive
# ---------------------------------------------------------------------------------------
#
# The model file is written by train.py, which the harness does not trust, so loading it must
# never run code from it. torch.export.load is not enough: it falls back to pickle
# (torch.load(weights_only=False)) when the safe load fails, resolves node targets by attribute
# lookup under `torch` (a target "torch.os.system" becomes a callable), parses symbolic shapes
# with sympy.sympify (eval) and executes the program's guard code. So the archive keeps the
# program as JSON, checked before anything is deserialised, and the tensors as plain
# weights-only torch files.

MODEL_FORMAT = "overnight-model/1"
# The archive's members and their size limits: any other member, or a bigger one, is refused
# before it is read (zip bombs included: a member is read up to its limit and no further).
MODEL_MEMBERS: dict[str, int] = {
    "meta.json": 1 << 16,
    "program.json": 64 << 20,
    "state_dict.pt": 4 << 30,
    "constants.pt": 1 << 30,
    "example_inputs.pt": 64 << 20,
}
MODEL_MAX_BYTES = sum(MODEL_MEMBERS.values()) + (1 << 20)
MAX_SEQ_LEN = 8192  # a batch of 64 windows' logits is then 0.5 GiB in float32, 1 GiB in float64

# Which aten operators a model may not use, by name, and why. Everything else in aten may be
# used, provided it is functional (no writes to its inputs) and not random (see _op_problem).
_DENIED_OPS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"from_file|save|load|mmap"), "reads or writes files"),
    (re.compile(r"print|warn"), "writes to the evaluation's output"),
    (re.compile(r"empty|resize"), "returns uninitialised memory, which can hold bytes the harness read "
                                  "(such as the split being scored)"),
    (re.compile(r"seed|rand|bernoulli|multinomial|normal|poisson|uniform|exponential|cauchy|geometric|gamma"),
     "draws random numbers, and the evaluation must be deterministic"),
    (re.compile(r"_assert_async"), "is a device-side assert, which can leave the evaluation process unusable"),
    (re.compile(r"^set_|_set_|record_stream|^wait$|cufft|cudnn_init"), "changes process or device state"),
)
# Argument kinds of the serialised program that a plain feed-forward graph never needs.
_REFUSED_KEYS = {"as_graph": "a subgraph (control flow or a higher-order op)",
                 "as_custom_obj": "a custom (torchbind) object", "custom_obj": "a custom (torchbind) object",
                 "as_operator": "an operator passed as a value", "as_string_to_argument": "a higher-order op's kwargs",
                 "as_nested_tensors": "nested tensors", "token": "an effect token (a side-effecting op)",
                 "constant_input": "a constant input"}
# Random operators whose randomness an argument switches off: allowed when it is off, as a literal
# (attention and RNNs with dropout 0 or train=False, dropout itself in eval mode).
_RANDOM_UNLESS: dict[str, tuple[str, float | bool]] = {
    "scaled_dot_product_attention": ("dropout_p", 0.0), "_scaled_dot_product_flash_attention_for_cpu": ("dropout_p", 0.0),
    "_scaled_dot_product_flash_attention": ("dropout_p", 0.0), "_scaled_dot_product_efficient_attention": ("dropout_p", 0.0),
    "lstm": ("train", False), "gru": ("train", False), "rnn_tanh": ("train", False), "rnn_relu": ("train", False),
    "dropout": ("train", False), "native_dropout": ("train", False), "alpha_dropout": ("train", False),
    "feature_dropout": ("train", False), "feature_alpha_dropout": ("train", False)}
_UNKNOWN = object()  # an argument that is not a literal
_INPUT_KINDS = {"user_input", "parameter", "buffer", "tensor_constant"}
_IDENT = re.compile(r"(?!__)[A-Za-z_][A-Za-z0-9_]*\Z")
_DOTTED = re.compile(r"(?!__)[A-Za-z_][A-Za-z0-9_]*(?:\.(?!__)[A-Za-z0-9_]+)*\Z")
_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.((?!__)[A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z][A-Za-z0-9_]*)\Z")
# Symbolic shapes are sympy srepr strings that torch parses with sympify (i.e. eval), so they must
# be nothing but calls of these constructors on literals (a string only as a Symbol's name).
_SYMPY_CALLS = frozenset({
    "Symbol", "Integer", "Rational", "Add", "Mul", "Pow", "Max", "Min", "Mod", "floor", "ceiling",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan",
    "Equality", "Unequality", "And", "Or", "Not", "FloorDiv", "ModularIndexing", "PythonMod", "CleanDiv",
    "CeilToInt", "FloorToInt", "CeilDiv", "IntTrueDiv", "TruncToInt", "PowByNatural"})
_SYMPY_NAMES = frozenset({"oo", "true", "false"})
_SYMPY_KEYWORDS = frozenset({"integer", "positive", "nonnegative", "negative", "nonpositive", "real", "finite",
                             "zero", "nonzero", "even", "odd"})
_TREESPEC_TYPES = {None, "builtins.tuple", "builtins.list", "builtins.dict"}


def model_out_path() -> Path:
    return Path(os.environ.get("OVERNIGHT_MODEL_OUT") or "model.ovm")


def _one_line(text: object, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


@functools.cache
def _python_targets() -> dict[str, Any]:
    """The Python callables an exported graph may call: getitem and the symbolic-int helpers."""
    from torch._export.serde.serialize import _SYM_OPS
    targets: dict[str, Any] = {f"{op.__module__}.{op.__name__}": op for op in _SYM_OPS}
    targets["_operator.getitem"] = operator.getitem
    return targets


def _op_problem(op: Any, literal: Callable[[str], Any] = lambda name: _UNKNOWN) -> str | None:
    """Why an operator is refused, or None. `literal(name)` gives an argument's value if it is a literal."""
    if not isinstance(op, torch._ops.OpOverload):
        return f"{_one_line(repr(op), 80)} is not an aten operator"
    if op.namespace != "aten":
        return f"{op._schema.name} is not an aten operator (custom and extension operators are refused)"
    name = op._schema.name.split("::", 1)[-1]
    label = f"aten.{name}.{op._overloadname}"
    if name in _RANDOM_UNLESS:
        param, off = _RANDOM_UNLESS[name]
        value = literal(param)
        # bool is an int subclass: train=0 must not pass for train=False, nor dropout_p=False for 0.0.
        off_ok = value is off if isinstance(off, bool) else type(value) in (int, float) and value == off
        if not off_ok:
            shown = "a value computed in the graph" if value is _UNKNOWN else _one_line(repr(value), 40)
            return f"{label} is random unless {param}={off} (here: {shown})"
    else:
        for pattern, why in _DENIED_OPS:
            if pattern.search(name):
                return f"{label} {why}"
        if torch.Tag.nondeterministic_seeded in op.tags:
            return f"{label} draws random numbers, and the evaluation must be deterministic"
    if op._schema.is_mutable:
        return (f"{label} writes to its inputs; the evaluated graph must be functional "
                "(nothing may carry over from one batch to the next)")
    return None


def _schema_default(op: Any, param: str) -> Any:
    for a in op._schema.arguments:
        if a.name == param:
            return a.default_value if a.has_default_value() else _UNKNOWN
    return _UNKNOWN


def _resolve_target(target: str) -> Any:
    """The aten overload a serialised target names (None when it names none), by checked lookup only."""
    m = _ATEN_TARGET.match(target)
    if m is None:
        return None
    try:
        op = getattr(getattr(torch.ops.aten, m.group(1)), m.group(2))
    except (AttributeError, RuntimeError):
        return None
    return op if isinstance(op, torch._ops.OpOverload) else None


def _node_problem(node: dict[str, Any]) -> str | None:
    """Why a serialised node is refused, or None (decided before anything is resolved by torch)."""
    target = node["target"]
    if target in _python_targets():
        return None
    op = _resolve_target(target)
    if op is None:
        return f"node target {_one_line(repr(target), 100)} is not an aten operator or an allowed Python builtin"
    given = {i.get("name"): i.get("arg") for i in node.get("inputs") or [] if isinstance(i, dict)}

    def literal(param: str) -> Any:
        if param not in given:
            return _schema_default(op, param)
        arg = given[param]
        if isinstance(arg, dict) and len(arg) == 1 and next(iter(arg)) in ("as_float", "as_int", "as_bool"):
            return next(iter(arg.values()))
        return _UNKNOWN
    return _op_problem(op, literal)


def _graph_problem(graph: torch.fx.Graph) -> str | None:
    """Why a deserialised (or freshly exported) graph is refused, or None."""
    python = set(map(id, _python_targets().values()))
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.op != "call_function":
            return f"node {node.name} is a {node.op}; only operator calls are allowed"
        if id(node.target) in python:
            continue
        op = node.target

        def literal(param: str, node: torch.fx.Node = node, op: Any = op) -> Any:
            if param in node.kwargs:
                value = node.kwargs[param]
            else:
                index = next((i for i, a in enumerate(op._schema.arguments) if a.name == param), None)
                if index is None or index >= len(node.args):
                    return _schema_default(op, param)
                value = node.args[index]
            return _UNKNOWN if isinstance(value, torch.fx.Node) else value
        problem = _op_problem(op, literal if isinstance(op, torch._ops.OpOverload) else lambda name: _UNKNOWN)
        if problem:
            return problem
    return None


def _sympy_problem(text: str) -> str | None:
    """Why a symbolic-shape expression is refused, or None."""
    if len(text) > 2000:
        return "a symbolic shape expression is too long"
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return f"a symbolic shape expression does not parse: {_one_line(repr(text), 80)}"
    names: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS):
                return f"a symbolic shape expression calls something else than sympy constructors: {_one_line(text, 80)}"
            if node.func.id == "Symbol" and node.args and isinstance(node.args[0], ast.Constant):
                names.add(id(node.args[0]))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.Call, ast.Load, ast.USub)):
            continue
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            continue
        if isinstance(node, ast.Name) and (node.id in _SYMPY_CALLS or node.id in _SYMPY_NAMES):
            continue
        if isinstance(node, ast.keyword) and node.arg in _SYMPY_KEYWORDS and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, bool):
            continue
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, (bool, int)) or (isinstance(value, str) and id(node) in names and _IDENT.match(value)):
                continue
        return f"a symbolic shape expression holds more than sympy literals: {_one_line(text, 80)}"
    return None


def _treespec_problem(text: Any) -> str | None:
    try:
        spec = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return "a module signature's tree spec is not JSON"
    stack = [spec]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("type") not in _TREESPEC_TYPES:
                return f"a module signature uses the type {_one_line(repr(item.get('type')), 80)}"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _program_problem(doc: Any) -> str | None:
    """Check the serialised program (program.json, parsed) before torch sees it; None when it is acceptable.

    Also strips the nodes' metadata (stack traces, module stacks, source functions), which the
    deserialiser would resolve by attribute lookup and which scoring does not need.
    """
    try:
        gm, graph = doc["graph_module"], doc["graph_module"]["graph"]
        nodes, signature = graph["nodes"], gm["signature"]
        inputs, outputs = signature["input_specs"], signature["output_specs"]
    except (KeyError, TypeError):
        return "program.json is not a serialised exported program"
    if not (isinstance(nodes, list) and isinstance(inputs, list) and isinstance(outputs, list)):
        return "program.json is not a serialised exported program"
    if doc.get("guards_code"):
        return "the program carries guard code, which torch would execute"
    if not set(doc.get("verifiers") or []) <= {"ATEN", "TRAINING"}:
        return f"unknown program dialect {_one_line(repr(doc.get('verifiers')), 80)}"
    if graph.get("custom_obj_values") or gm.get("treespec_namedtuple_fields"):
        return "the program holds custom objects or named tuples"
    kinds = [next(iter(spec)) if isinstance(spec, dict) and len(spec) == 1 else None for spec in inputs]
    if not set(kinds) <= _INPUT_KINDS or kinds.count("user_input") != 1:
        return f"the program's inputs must be one tensor plus parameters, buffers and constants (got {kinds})"
    out_kinds = [next(iter(spec)) if isinstance(spec, dict) and len(spec) == 1 else None for spec in outputs]
    if out_kinds != ["user_output"]:
        return f"the program must return one tensor and update no state (outputs: {out_kinds})"
    user_in = inputs[kinds.index("user_input")]["user_input"]
    if not (isinstance(user_in, dict) and isinstance(user_in.get("arg"), dict) and "as_tensor" in user_in["arg"]
            and isinstance(outputs[0]["user_output"], dict) and isinstance(outputs[0]["user_output"].get("arg"), dict)
            and "as_tensor" in outputs[0]["user_output"]["arg"]):
        return "the program's input and output must be tensors"
    for node in nodes:
        if not isinstance(node, dict) or not isinstance(node.get("target"), str):
            return "a node of the program has no target"
        problem = _node_problem(node)
        if problem:
            return problem
        node["metadata"] = {}
    gm["metadata"] = {}
    for entry in gm.get("module_call_graph") or []:
        sig = entry.get("signature") if isinstance(entry, dict) else None
        if isinstance(sig, dict):
            for key in ("in_spec", "out_spec"):
                problem = _treespec_problem(sig.get(key))
                if problem:
                    return problem
    stack: list[Any] = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        for key, value in item.items():
            if key in _REFUSED_KEYS and value is not None:
                return f"the program uses {_REFUSED_KEYS[key]}"
            if key in ("name", "as_name") and isinstance(value, str) and not _IDENT.match(value):
                return f"the program has a malformed name {_one_line(repr(value), 80)}"
            if key in ("parameter_name", "buffer_name", "tensor_constant_name", "fqn") and isinstance(value, str) \
                    and value and not _DOTTED.match(value):
                return f"the program has a malformed attribute path {_one_line(repr(value), 80)}"
            if key in ("tensor_values", "sym_int_values", "sym_bool_values", "sym_float_values") and isinstance(value, dict):
                bad = next((k for k in value if not _IDENT.match(k)), None)
                if bad is not None:
                    return f"the program has a malformed name {_one_line(repr(bad), 80)}"
            if key == "expr_str":
                problem = _sympy_problem(value) if isinstance(value, str) else "a symbolic shape is not a string"
                if problem:
                    return problem
            if key in ("device", "as_device") and isinstance(value, dict) and value.get("type") != "cpu":
                return f"the program places tensors on {_one_line(repr(value.get('type')), 40)}; it must be saved on the CPU"
            stack.append(value)
    return None


def _require_safe_torch() -> None:
    # weights_only=True could run code before torch 2.6 (CVE-2025-32434): no safe load is possible there.
    major, minor = (int(x) for x in re.findall(r"\d+", torch.__version__)[:2])
    if (major, minor) < (2, 6):
        raise HarnessError(f"torch {torch.__version__} cannot load an untrusted model safely (its weights_only "
                           "loader could run code before 2.6); the evaluation needs torch >= 2.6", code=1)


def _read_archive(path: Path) -> dict[str, bytes]:
    """The archive's members, after checking their names and sizes (refused otherwise)."""
    size = path.stat().st_size
    if size > MODEL_MAX_BYTES:
        raise ModelRefused(f"the model file is {size:,} bytes, more than the {MODEL_MAX_BYTES:,} allowed", "load",
                           {"bytes": size})
    members: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            if sorted(names) != sorted(MODEL_MEMBERS):
                raise ModelRefused(f"the model file is not an {MODEL_FORMAT} archive: its members are "
                                   f"{_one_line(names, 200)}, expected exactly {sorted(MODEL_MEMBERS)}", "load",
                                   {"members": [_one_line(n, 100) for n in names[:20]]})
            for info in infos:
                limit = MODEL_MEMBERS[info.filename]
                if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise ModelRefused(f"member {info.filename} is encrypted or uses an unsupported compression",
                                       "load", {"member": info.filename})
                if info.file_size > limit:
                    raise ModelRefused(f"member {info.filename} is {info.file_size:,} bytes, more than the "
                                       f"{limit:,} allowed", "load", {"member": info.filename, "bytes": info.file_size})
                with z.open(info) as f:
                    data = f.read(limit + 1)
                if len(data) > limit:  # the header lied about the size
                    raise ModelRefused(f"member {info.filename} unpacks to more than the {limit:,} bytes allowed",
                                       "load", {"member": info.filename})
                members[info.filename] = data
    except ModelRefused:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError, zlib.error) as e:
        raise ModelRefused(f"the model file is not a readable {MODEL_FORMAT} archive ({type(e).__name__}: "
                           f"{_one_line(e, 150)})", "load") from None
    return members


def _plain_tensor(value: Any) -> bool:
    return (type(value) in (torch.Tensor, torch.nn.Parameter) and value.layout == torch.strided
            and not value.is_quantized and not value.is_nested and value.device.type == "cpu")


def _load_member(raw: bytes, member: str) -> Any:
    """torch.load with weights_only=True and no fallback: tensors and containers, never code."""
    if not raw:
        return {}
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever the unpickler refused, the file is refused
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # torch's message carries terminal escapes
        what = re.search(r"Unsupported (?:global|operand)[^.\n]*", text)
        raise ModelRefused(f"member {member} is not a plain tensor file (the weights-only loader refused it: "
                           f"{_one_line(what.group(0) if what else f'{type(e).__name__}: {text}', 150)})",
                           "load", {"member": member}) from None


def _load_tensor_dict(raw: bytes, member: str) -> dict[str, torch.Tensor]:
    value = _load_member(raw, member)
    if not (isinstance(value, dict) and all(isinstance(k, str) and _DOTTED.match(k) and _plain_tensor(v)
                                            for k, v in value.items())):
        raise ModelRefused(f"member {member} must map attribute names to dense CPU tensors", "load", {"member": member})
    return value


def _parse_meta(raw: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
        ok = (isinstance(meta, dict) and meta.get("format") == MODEL_FORMAT and type(meta.get("seq_len")) is int
              and 0 < meta["seq_len"] <= MAX_SEQ_LEN and meta.get("vocab_size") == VOCAB_SIZE
              and type(meta.get("n_params")) is int)
    except (ValueError, RecursionError):
        ok = False
    if not ok:
        raise ModelRefused(f"meta.json must be {{format: {MODEL_FORMAT}, seq_len (1..{MAX_SEQ_LEN}), "
                           f"vocab_size: {VOCAB_SIZE}, n_params}}", "load", {"member": "meta.json"})
    return dict(meta)


def save_model(model: torch.nn.Module, seq_len: int, path: str | os.PathLike[str] | None = None
               ) -> Path:
    """Export `model` to an Overnight model archive that evaluation loads without train.py.

    Contract: model(idx: LongTensor[B, T]) -> logits FloatTensor[B, T, 256], T = seq_len, any B.
    The model is copied to CPU float32 in eval mode (the caller's model is untouched), exported
    with torch.export (dynamic batch), and made functional (run_decompositions({}): no in-place
    ops) when the exported graph is not already. A model that cannot be exported, or that uses an
    operator the evaluation refuses, ends the run with one error line and exit code 3.
    """
    from torch._export.serde.serialize import serialize
    path = Path(path) if path is not None else model_out_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    m = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    m = copy.deepcopy(m).to("cpu", torch.float32).eval()
    # Its own generator: saving must not move the caller's random state.
    example = torch.randint(0, VOCAB_SIZE, (EVAL_BATCH, seq_len), dtype=torch.long,
                            generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            batch = torch.export.Dim("batch", min=1, max=1 << 16)
            ep = torch.export.export(m, (example,), dynamic_shapes=({0: batch},))
            # The exported graph of an eval-mode model is usually functional already; decomposing it costs
            # ~0.5 s of every run for nothing. A graph the evaluation would refuse (in-place ops, a buffer
            # update) gets its functional form, which is then checked like any other.
            if _graph_problem(ep.graph) is not None:
                ep = ep.run_decompositions({})
    except Exception as e:  # noqa: BLE001 - any export failure is the model's, said in one line
        _die(f"cannot export the model with torch.export ({type(e).__name__}: {_one_line(e, 300)}); the harness "
             "scores only exported programs, so forward() must be traceable with a dynamic batch size "
             "(no Python branches on tensor values)", EXIT_TRAIN_ERROR)
    # Guards are input checks that torch turns into Python source and executes, so the loader
    # refuses any; the shape contract is checked by the evaluation itself.
    ep._guards_code = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecations, not the user's
        artifact = serialize(ep)
    problem = _graph_problem(ep.graph) or _program_problem(json.loads(artifact.exported_program))
    if problem:
        _die(f"the evaluation would refuse this model: {problem}", EXIT_TRAIN_ERROR)
    meta = {"format": MODEL_FORMAT, "seq_len": int(seq_len), "vocab_size": VOCAB_SIZE,
            "n_params": sum(p.numel() for p in m.parameters())}
    members = {"meta.json": json.dumps(meta).encode(), "program.json": artifact.exported_program,
               "state_dict.pt": artifact.state_dict, "constants.pt": artifact.constants,
               "example_inputs.pt": artifact.example_inputs}
    tmp = path.with_name(".tmp-" + path.name)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    os.replace(tmp, path)
    print(f"saved model ({MODEL_FORMAT}, {path.stat().st_size:,} bytes, {time.perf_counter() - t0:.1f}s) to {path}")
    return path


def load_model(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """Load an archive written by save_model -> (callable model, metadata), never running code from it.

    Before anything is deserialised: member names and sizes, meta.json, and every node target,
    argument kind, name and symbolic shape of program.json are checked (see _program_problem);
    the tensors are loaded with torch.load(weights_only=True) only, and handed to the
    deserialiser already loaded so that it never unpickles. After: every call in the graph
    must again be an allowed aten operator or Python builtin. Raises ModelRefused ("load")
    with a one-line reason, or HarnessError (exit 1) when there is no file.
    """
    from torch._export.serde import serialize as serde
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"model file {path} does not exist", code=1)
    _require_safe_torch()
    members = _read_archive(path)
    meta = _parse_meta(members["meta.json"])
    try:
        doc = json.loads(members["program.json"])
    except (ValueError, RecursionError):
        raise ModelRefused("program.json is not JSON", "load", {"member": "program.json"}) from None
    problem = _program_problem(doc)
    if problem:
        raise ModelRefused(problem, "load", {"member": "program.json"})
    state_dict = _load_tensor_dict(members["state_dict.pt"], "state_dict.pt")
    constants = _load_tensor_dict(members["constants.pt"], "constants.pt")
    example = _load_member(members["example_inputs.pt"], "example_inputs.pt")
    if not (isinstance(example, tuple) and len(example) == 2 and isinstance(example[0], tuple)
            and isinstance(example[1], dict) and not example[1] and len(example[0]) == 1
            and _plain_tensor(example[0][0]) and example[0][0].dtype == torch.long):
        raise ModelRefused("member example_inputs.pt must hold ((LongTensor,), {})", "load",
                           {"member": "example_inputs.pt"})
    try:
        # Already loaded: deserialize_torch_artifact returns dicts and tuples as they are, never unpickles.
        artifact = serde.SerializedArtifact(json.dumps(doc).encode(), state_dict, constants, example)  # type: ignore[arg-type]
        ep = serde.deserialize(artifact)
    except Exception as e:  # noqa: BLE001 - a program torch cannot rebuild is refused, whatever the reason
        raise ModelRefused(f"the program does not deserialise ({type(e).__name__}: {_one_line(e, 200)})",
                           "load", {"member": "program.json"}) from None
    problem = _graph_problem(ep.graph)
    if problem:
        raise ModelRefused(problem, "load", {"member": "program.json"})
    try:
        model = ep.module(check_guards=False)
    except Exception as e:  # noqa: BLE001
        raise ModelRefused(f"the program does not build a module ({type(e).__name__}: {_one_line(e, 200)})",
                           "load") from None
    meta["ops"] = sorted({str(n.target) for n in ep.graph.nodes if n.op == "call_function"})
    return model, meta


# ---------------------------------------------------------------------------------------
# The metric and its self-checks. DO NOT CHANGE — this is the fixed metric.
# ---------------------------------------------------------------------------------------

EVAL_SPLITS = ("val", "holdout", OOD_SPLIT, "train")
DEFAULT_EVAL_SPLITS = ("val", "holdout", OOD_SPLIT)
# Self-check tolerance on log-probabilities (nats): |lp' - lp| <= CHECK_ATOL + CHECK_RTOL * |lp|.
# Compared after log_softmax, so a constant shift of the logits cannot widen it. Float noise of
# honest models is far below (see README); a leak inside it is worth < 0.001 bpb.
CHECK_ATOL = 2e-4
CHECK_RTOL = 1e-4
CHECK_SEED = 0x0DDBA11
CAUSAL_WINDOWS = 8               # windows of the scored split probed for causality
NORMALIZED = "the harness takes log_softmax of the logits in float64, so probabilities sum to one by construction"


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


def eval_order(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The windows in scoring order: sorted by sha256 of their index (fixed, version-independent).

    Consecutive windows of a split are consecutive text, so a model that looked across the batch
    could read the next window, i.e. the future; shuffled, neighbours are rarely in one batch.
    """
    return [w for _, w in sorted((hashlib.sha256(b"overnight-eval-order" + i.to_bytes(8, "little")).digest(), w)
                                 for i, w in enumerate(windows))]


def _inputs(data: torch.Tensor, starts: list[int], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    win = data[torch.tensor(starts)[:, None] + torch.arange(seq_len + 1)].long()
    return win[:, :-1], win[:, 1:]


def _log_probs(model: Any, x: torch.Tensor, what: str) -> torch.Tensor:
    """log_softmax (float64) of the model's logits for x; refuses non-finite logits."""
    try:
        logits = model(x)
    except Exception as e:  # noqa: BLE001 - the model's failure, reported in one line
        raise HarnessError(f"the model failed on a batch of {x.shape[0]} windows ({what}): {type(e).__name__}: "
                           f"{_one_line(e, 200)}", code=1) from None
    want = (x.shape[0], x.shape[1], VOCAB_SIZE)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != want or not logits.is_floating_point() \
            or logits.device.type != "cpu":
        got = (tuple(logits.shape), str(logits.dtype), str(logits.device)) if isinstance(logits, torch.Tensor) \
            else type(logits).__name__
        raise HarnessError(f"model returned {got}, expected float logits of shape {want} on the CPU", code=1)
    bad = ~torch.isfinite(logits)
    if bool(bad.any()):
        raise ModelRefused("the model's logits are not finite", "finite",
                           {"where": what, "nonfinite": int(bad.sum()), "of": int(bad.numel())})
    return torch.log_softmax(logits.double(), dim=-1)  # model runs in fp32; normalised and summed in fp64


def _deviation(new: torch.Tensor, ref: torch.Tensor) -> tuple[float, float, tuple[int, ...]]:
    """(worst excess over the tolerance, its deviation, index) of new vs ref log-probabilities."""
    dev = (new - ref).abs()
    excess = dev - (CHECK_ATOL + CHECK_RTOL * ref.abs())
    flat = int(excess.argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), excess.shape))
    return float(excess.flatten()[flat]), float(dev.flatten()[flat]), index


@torch.no_grad()
def bits_per_byte(model: Any, data: torch.Tensor, seq_len: int,
                  n_bytes: int = EVAL_BYTES) -> float:
    """bpb = mean cross-entropy (nats) over target bytes 1..n_bytes of `data`, / ln 2.

    The model predicts byte t+1 from the bytes <= t within its window (see eval_windows). The
    windows go through the model EVAL_BATCH at a time in eval_order; non-finite logits are refused.
    """
    windows = eval_order(eval_windows(len(data), seq_len, n_bytes))
    total_nats = 0.0
    scored = 0
    pos = torch.arange(seq_len)
    for b in range(0, len(windows), EVAL_BATCH):
        group = windows[b: b + EVAL_BATCH]
        group = group + [(group[-1][0], 0)] * (EVAL_BATCH - len(group))  # pad, scores nothing
        x, y = _inputs(data, [s for s, _ in group], seq_len)
        n_scored = torch.tensor([n for _, n in group])
        logp = _log_probs(model, x, f"scoring batch {b // EVAL_BATCH}")
        nll = -logp.gather(-1, y[..., None]).squeeze(-1)  # [B, T] nats
        mask = pos[None, :] >= (seq_len - n_scored)[:, None]  # the last n_scored positions
        total_nats += float(nll[mask].sum())
        scored += int(mask.sum())
    assert scored == n_bytes
    return total_nats / scored / math.log(2)


@torch.no_grad()
def check_batch(model: Any, data: torch.Tensor, seq_len: int, n_bytes: int = EVAL_BYTES) -> dict[str, Any]:
    """A window's logits must not depend on the other windows of its batch.

    The first scoring batch is run as scored, then with its other rows replaced by random bytes,
    then by other real text, then each probed row alone (batch of 1). Raises ModelRefused("batch").
    """
    windows = eval_order(eval_windows(len(data), seq_len, n_bytes))[:EVAL_BATCH]
    windows += [windows[-1]] * (EVAL_BATCH - len(windows))
    starts = [s for s, _ in windows]
    x, _ = _inputs(data, starts, seq_len)
    ref = _log_probs(model, x, "batch check")
    rows = sorted({0, EVAL_BATCH // 3, 2 * EVAL_BATCH // 3, EVAL_BATCH - 1})
    others = [r for r in range(EVAL_BATCH) if r not in rows]
    gen = torch.Generator().manual_seed(CHECK_SEED)
    noise = x.clone()
    noise[others] = torch.randint(0, VOCAB_SIZE, (len(others), seq_len), generator=gen)
    # Other real text: the same rows' windows moved by half a window (never the text they held).
    shifted = [min(s + seq_len // 2, len(data) - seq_len - 1) for s in starts]
    text = _inputs(data, shifted, seq_len)[0]
    text[rows] = x[rows]
    # (label, batch, [(row of the scored batch, row of this batch)])
    variants = [("other rows random bytes", noise, [(r, r) for r in rows]),
                ("other rows other text", text, [(r, r) for r in rows])]
    variants += [(f"row {r} alone", x[r:r + 1], [(r, 0)]) for r in rows]
    worst = (-math.inf, 0.0)
    for label, batch, pairs in variants:
        lp = _log_probs(model, batch, "batch check")
        for r, p in pairs:
            excess, dev, (pos, byte) = _deviation(lp[p], ref[r])
            if excess > 0:
                raise ModelRefused("the model's output for a window depends on the other windows in its batch "
                                   "(it could read the next window, i.e. the future)", "batch",
                                   {"variant": label, "row": r, "position": pos, "byte": byte, "deviation": dev,
                                    "tolerance": dev - excess})
            worst = max(worst, (excess, dev))
    return {"ok": True, "rows": len(rows), "variants": [v[0] for v in variants[:2]] + ["each row alone"],
            "max_deviation": worst[1]}


@torch.no_grad()
def check_causal(model: Any, data: torch.Tensor, seq_len: int, n_bytes: int = EVAL_BYTES) -> dict[str, Any]:
    """The logits at positions <= t must not change when the bytes after t change.

    CAUSAL_WINDOWS real windows of the scored range, spread over it; for each, several cut
    points t from the start to the end of the window, and two replacements of the bytes after
    t: random bytes and the same positions of another real window. Raises ModelRefused("causal").
    """
    windows = [s for s, n in eval_windows(len(data), seq_len, n_bytes) if n == seq_len]
    picked = sorted({windows[round(i * (len(windows) - 1) / max(1, CAUSAL_WINDOWS - 1))]
                     for i in range(CAUSAL_WINDOWS)})
    x, _ = _inputs(data, picked, seq_len)
    cuts = sorted({t for t in (0, 1, seq_len // 4, seq_len // 2, 3 * seq_len // 4, seq_len - 2) if 0 <= t <= seq_len - 2})
    gen = torch.Generator().manual_seed(CHECK_SEED + 1)
    probes: list[tuple[int, int, str]] = []
    rows: list[torch.Tensor] = []
    for w in range(len(picked)):
        donor = x[(w + 1) % len(picked)] if len(picked) > 1 else torch.roll(x[w], 1)
        for t in cuts:
            for label in ("random bytes", "another window"):
                row = x[w].clone()
                row[t + 1:] = (torch.randint(0, VOCAB_SIZE, (seq_len - t - 1,), generator=gen)
                               if label == "random bytes" else donor[t + 1:])
                probes.append((w, t, label))
                rows.append(row)
    if not rows:  # seq_len 1: a window has no future to look at
        return {"ok": True, "windows": len(picked), "cuts": cuts, "probes": 0, "max_deviation": 0.0}
    ref = _log_probs(model, x, "causality check")
    allx = torch.stack(rows)
    lps = [_log_probs(model, allx[i:i + EVAL_BATCH], "causality check") for i in range(0, len(rows), EVAL_BATCH)]
    lp = torch.cat(lps)
    worst = (-math.inf, 0.0)
    for i, (w, t, label) in enumerate(probes):
        excess, dev, (pos, byte) = _deviation(lp[i, :t + 1], ref[w, :t + 1])
        if excess > 0:
            raise ModelRefused("the model looks at future bytes: its prediction at a position changes when "
                               "only later bytes of the window change", "causal",
                               {"window_start": picked[w], "cut": t, "replaced_with": label, "position": pos,
                                "byte": byte, "deviation": dev, "tolerance": dev - excess})
        worst = max(worst, (excess, dev))
    return {"ok": True, "windows": len(picked), "cuts": cuts, "probes": len(probes), "max_deviation": worst[1]}


def _eval_splits(splits: Iterable[str]) -> tuple[str, ...]:
    asked = [s for s in splits if s]
    for s in asked:
        if s not in EVAL_SPLITS:
            raise HarnessError(f"cannot evaluate on split {s!r} ({', '.join(EVAL_SPLITS)})", code=1)
    # val is the metric and train its reference (the train/val gap flag): both always scored.
    return tuple(s for s in EVAL_SPLITS if s in asked or s in ("val", "train"))


def evaluate(model_path: str | os.PathLike[str], splits: Iterable[str] = DEFAULT_EVAL_SPLITS,
             directory: Path | None = None) -> dict[str, Any]:
    """Load a saved model, check it, and compute bpb on the requested splits (float32 model, no grad).

    Raises ModelRefused (unsafe file, or a failed check: finite, batch, causal) or HarnessError.
    """
    setup_threads()
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    names = _eval_splits(splits)
    directory = directory or data_dir()
    verify(directory, splits=names)
    timing["verify"] = time.perf_counter() - t0
    t = time.perf_counter()
    model, meta = load_model(model_path)
    seq_len = int(meta["seq_len"])
    timing["load"] = time.perf_counter() - t
    budget = {"val": EVAL_BYTES, "holdout": EVAL_BYTES, OOD_SPLIT: OOD_EVAL_BYTES, "train": TRAIN_EVAL_BYTES}
    data: dict[str, torch.Tensor] = {}
    n_bytes: dict[str, int] = {}
    for split in names:
        data[split] = train_sample(directory) if split == "train" else _read_prefix(directory, split, budget[split] + 1)
        n_bytes[split] = min(budget[split], len(data[split]) - 1)
        if n_bytes[split] < seq_len:
            raise HarnessError(f"the {split} split has {len(data[split])} bytes, too few for windows of "
                               f"{seq_len}", code=1)
        if n_bytes[split] < budget[split]:
            print(f"warning: {split} split has only {len(data[split])} bytes; scoring {n_bytes[split]} bytes "
                  f"instead of {budget[split]}", file=sys.stderr)
    checks: dict[str, dict[str, Any]] = {"load": {"ok": True, "format": meta["format"], "ops": meta["ops"]}}
    t = time.perf_counter()
    checks["batch"] = check_batch(model, data["val"], seq_len, n_bytes["val"])
    timing["check_batch"] = time.perf_counter() - t
    t = time.perf_counter()
    checks["causal"] = check_causal(model, data["val"], seq_len, n_bytes["val"])
    timing["check_causal"] = time.perf_counter() - t
    result: dict[str, Any] = {}
    for split in names:
        t = time.perf_counter()
        result[f"{split}_bpb"] = bits_per_byte(model, data[split], seq_len, n_bytes[split])
        timing[split] = time.perf_counter() - t
    checks["finite"] = {"ok": True, "how": "every logit of every forward pass of the evaluation"}
    checks["normalized"] = {"ok": True, "how": NORMALIZED}
    gap = result["val_bpb"] - result["train_bpb"]
    checks["train_gap"] = {"ok": gap >= -TRAIN_GAP_FLAG_BPB, "val_minus_train_bpb": gap,
                           "flag_below": -TRAIN_GAP_FLAG_BPB}
    flags = []
    if gap < -TRAIN_GAP_FLAG_BPB:
        flags.append(f"val far below train: the model may have seen the validation bytes "
                     f"(val_bpb {result['val_bpb']:.3f}, train_bpb {result['train_bpb']:.3f})")
    result["val_bytes"] = n_bytes["val"]
    result["eval_seconds"] = time.perf_counter() - t0
    result["checks"] = checks
    result["flags"] = flags
    result["timing"] = {k: round(v, 3) for k, v in timing.items()}
    return result


# ---------------------------------------------------------------------------------------
# The evaluator process: once per model, or warm for a whole session
# ---------------------------------------------------------------------------------------

def _evaluate_once(model: str | os.PathLike[str], splits: str) -> tuple[int, str | None]:
    """(exit code, the one JSON line to print) of evaluating ``model``: 0 and the result, EXIT_REFUSED and why,
    or a HarnessError's code (its message on stderr)."""
    try:
        result = evaluate(model, [s.strip() for s in splits.split(",")])
    except ModelRefused as e:
        print(f"refused ({e.check}): {_one_line(e, 500)}", file=sys.stderr)
        return EXIT_REFUSED, json.dumps({"refused": _one_line(e, 500), "check": e.check, "evidence": e.evidence})
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code, None
    return 0, json.dumps(result)


SERVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def serve(models: Path) -> int:
    """Evaluate models for a whole session, paying the imports once.

    Each stdin line is a request ``{"id": int, "model": "<file name in models>", "splits": "val,holdout,ood",
    "threads": int}``; each answer is one stdout line ``{"id", "code", "result"}`` (code and result as
    ``evaluate`` exits and prints; result null on an error, whose message went to stderr). Every request is
    evaluated in a child forked from this process after the imports and before any tensor work: a model that
    subverts its evaluator cannot touch the next one's. The parent never loads a model.
    """
    from torch._export.serde import serialize as _warm  # noqa: F401  (the slow import, paid once)

    for line in sys.stdin:
        try:
            req = json.loads(line)
            rid, name = int(req["id"]), str(req["model"])
            splits, threads = str(req.get("splits") or ",".join(DEFAULT_EVAL_SPLITS)), int(req.get("threads") or 1)
            if not SERVE_NAME.fullmatch(name) or threads < 1:
                raise ValueError(f"bad request {line.strip()[:200]!r}")
        except (ValueError, KeyError, TypeError) as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            continue
        print(json.dumps({"id": rid, **_in_child(models / name, splits, threads)}), flush=True)
    return 0


def _in_child(model: Path, splits: str, threads: int) -> dict[str, Any]:
    """Evaluate in a forked child; {"code", "result"} from what it reports, or why it died."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: evaluate, report through the pipe, never return into the parent's loop
        code, out = 1, None
        try:
            os.close(read_fd)
            os.environ["OVERNIGHT_THREADS"] = str(threads)
            code, out = _evaluate_once(model, splits)
        except BaseException as e:  # noqa: BLE001 - whatever happens, the parent gets an answer
            print(f"error: the evaluation failed: {type(e).__name__}: {_one_line(e, 300)}", file=sys.stderr)
        finally:
            try:
                os.write(write_fd, json.dumps({"code": code, "result": out}).encode())
                sys.stderr.flush()
            finally:
                os._exit(0)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as pipe:
        while chunk := pipe.read(1 << 16):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    try:
        answer = json.loads(b"".join(chunks))
        code, out = int(answer["code"]), answer["result"]
    except (ValueError, KeyError, TypeError):
        why = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit code {os.waitstatus_to_exitcode(status)}"
        print(f"error: the evaluation process died ({why})", file=sys.stderr, flush=True)
        return {"code": 1, "result": None}
    return {"code": code, "result": json.loads(out) if isinstance(out, str) else None}


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["evaluate"]:
        ap = argparse.ArgumentParser(prog="prepare.py evaluate",
                                     description="Check a saved model and print its bpb as one JSON line "
                                                 "(exit 0), or why it is refused (one JSON line, exit 4).")
        ap.add_argument("--model", required=True, help="archive written by save_model")
        ap.add_argument("--splits", default=",".join(DEFAULT_EVAL_SPLITS),
                        help="comma-separated, of val,holdout,ood,train (val and train are always scored)")
        args = ap.parse_args(argv[1:])
        code, line = _evaluate_once(args.model, args.splits)
        if line is not None:
            print(line, flush=True)
        return code
    if argv[:1] == ["serve"]:
        ap = argparse.ArgumentParser(prog="prepare.py serve",
                                     description="A session-long evaluator: one JSON request per stdin line, "
                                                 "one JSON answer per stdout line (see README.md).")
        ap.add_argument("--models", required=True, help="the folder the models to evaluate are placed in")
        return serve(Path(ap.parse_args(argv[1:]).models))

    ap = argparse.ArgumentParser(prog="prepare.py",
                                 description="Build (or verify) the train/val/holdout/ood corpus.")
    ap.add_argument("--corpus", default=os.environ.get("OVERNIGHT_CORPUS") or DEFAULT_CORPUS,
                    choices=["sympy", "fineweb"])
    ap.add_argument("--source", help="fineweb: local directory/files or http(s) URL(s), "
                                     "comma-separated (.parquet/.jsonl/.jsonl.gz/.txt)")
    ap.add_argument("--max-bytes", type=int, default=None,
                    help="fineweb: stop after this many corpus bytes")
    ap.add_argument("--rebuild", action="store_true", help="rebuild even if the data verifies")
    ap.add_argument("--json", action="store_true",
                    help="end with one JSON line {data_dir, manifest_sha256, training_files, hidden_sources} "
                         "for the daemon, which pins the manifest for the session, shows training runs only "
                         "training_files and hides hidden_sources from them")
    args = ap.parse_args(argv)
    directory = data_dir(args.corpus)
    t0 = time.perf_counter()
    try:
        manifest = build(args.corpus, args.source, args.rebuild, directory, args.max_bytes)
        hidden = hidden_sources(manifest)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    files = manifest["files"]
    print(f"corpus {manifest['corpus']} ({manifest['source']} "
          f"{manifest.get('source_version') or ''}) at {directory} "
          f"[{time.perf_counter() - t0:.1f}s]")
    for s in ALL_SPLITS:
        f = files[f"{s}.bin"]
        print(f"  {s + '.bin':12s} {f['bytes']:>12,d} bytes  sha256 {f['sha256'][:16]}…")
    if args.json:
        digest = hashlib.sha256((directory / MANIFEST_NAME).read_bytes()).hexdigest()
        print(json.dumps({"data_dir": str(directory.absolute()), "manifest_sha256": digest,
                          "training_files": list(TRAINING_FILES), "hidden_sources": hidden}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
