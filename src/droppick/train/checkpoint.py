"""Checkpoint files: atomic, verified by SHA-256, loaded without running code.

A checkpoint ``checkpoint-EEEE.pt`` has a digest file beside it, ``checkpoint-EEEE.pt.sha256``,
in ``sha256sum`` format (``sha256sum -c`` checks it; exports use the same). The digest is written first and both files are
replaced atomically, so a checkpoint in place always has its digest; a crash between the two
leaves only a digest without a checkpoint, which nothing reads. A checkpoint without a digest
(copied alone, or from an older droppick) is loaded unverified.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write_bytes, atomic_write_text
from .config import TrainConfig, training_differences

DIGEST_SUFFIX = ".sha256"
# 5: retention records losses; 4: DaP state format 3 (policies as objects); 3: + retention, RNG
# states, world size, LR schedule, digest files
CHECKPOINT_FORMAT = 5


def check_format(checkpoint: dict) -> None:
    """Refuse a checkpoint whose layout another droppick version wrote."""
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {checkpoint.get('format')!r} is not {CHECKPOINT_FORMAT}; it was written "
                         "by another droppick version: use that version with it, or start a new run")


def check_resumable(checkpoint: dict, cfg: TrainConfig) -> None:
    """Refuse to resume ``checkpoint`` under a ``cfg`` that would train otherwise."""
    check_format(checkpoint)
    # config.json is what a resume reads; any key that shapes the run must still match the
    # checkpoint's copy, or the "resumed equals uninterrupted" promise would silently break.
    # A key the checkpoint lacks came with a later droppick release of the same checkpoint format;
    # new keys default to the behaviour before them, so the checkpoint ran with the default.
    saved, now = TrainConfig().to_dict() | checkpoint["config"], cfg.to_dict()
    differ = training_differences(saved, now)
    if differ:
        key = differ[0]
        raise ValueError(f"checkpoint was made with {key}={saved.get(key)!r}, the run config says {now[key]!r}: "
                         f"restore {key} in config.json, or start a new run with the new value")


def digest_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + DIGEST_SUFFIX)


def read_digest(path: str | os.PathLike) -> str | None:
    """The SHA-256 (lower-case hex) that ``PATH.sha256`` records, or None without one.

    Reads ``sha256sum`` lines ("HASH  NAME" or "HASH *NAME", either case) and the JSON digests
    droppick wrote before 2026-11-27. A digest file that is neither is a ValueError naming it.
    """
    sidecar = digest_path(path)
    if not sidecar.is_file():
        return None
    try:
        text = sidecar.read_text()
        sha256 = str(json.loads(text)["sha256"]) if text.lstrip().startswith("{") else (text.split() or [""])[0]
    except (ValueError, KeyError, TypeError) as e:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"{Path(path).name}: its digest file {sidecar} is unreadable ({e})") from e
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ValueError(f"{Path(path).name}: its digest file {sidecar} holds no SHA-256 (64 hex digits) but "
                         f"{text[:80]!r}; delete it to load the file unverified")
    return sha256.lower()


def write_digest(path: str | os.PathLike, sha256: str) -> None:
    """``PATH.sha256`` holding "HASH  NAME", the ``sha256sum`` format."""
    path = Path(path)
    atomic_write_text(digest_path(path), f"{sha256}  {path.name}\n")


def write_with_digest(path: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically, its SHA-256 to the digest file first; return the SHA-256.

    Digest first: a crash between the two leaves a digest without its file (read by nothing),
    never a new file beside an old digest.
    """
    sha256 = hashlib.sha256(data).hexdigest()
    write_digest(path, sha256)
    atomic_write_bytes(path, lambda f: f.write(data))
    return sha256


def verify_digest(path: str | os.PathLike, data: bytes, advice: str) -> None:
    """Refuse ``data`` (the bytes of ``path``) if ``PATH.sha256`` records another SHA-256;
    the ValueError ends with ``advice``. Without a digest file nothing is checked."""
    sha256 = read_digest(path)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{path} ({len(data)} bytes) does not match the SHA-256 in {digest_path(path).name}: {advice}")


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically, its SHA-256 first to the digest file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_with_digest(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Verify against the digest file (when present), then load with ``weights_only=True``:
    a checkpoint that would run code is refused. Any damage is a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    data = path.read_bytes()
    verify_digest(path, data, "the checkpoint is truncated or corrupt")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); it may be truncated or corrupt") from e



# -- global RNG states -------------------------------------------------------------------------
# droppick itself draws every random number from generators seeded by (seed, epoch, purpose),
# so it needs none of these. The trainer still saves and restores them so that code sharing
# the process (hooks, a custom loop built on these helpers) resumes with the same random stream.

def rng_states() -> dict:
    """This process's global RNG states: torch CPU, CUDA (once initialised), random, numpy."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": random.getstate(),
        # As plain values and a tensor: weights_only loading refuses numpy arrays.
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
    }


def restore_rng_states(states: dict) -> None:
    """Undo ``rng_states``: set every global RNG it saved (CUDA: the devices both have)."""
    torch.set_rng_state(states["torch"])
    cuda = list(states["cuda"])
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
