"""Process-level state: device, threads, seeding, RNG state and checkpoint I/O.

Foundation layer: torch, numpy and ``latentgeo.records`` (atomic writes) only.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import re
import select
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentgeo.records import RunDamaged, atomic_write_bytes

PAUSE_DIR = "LATENTGEO_PAUSE_DIR"  # tests only: see pause_point


def pausing() -> bool:
    return bool(os.environ.get(PAUSE_DIR))


def pause_point(name: str) -> None:
    """A named point of a run where a test can hold it (``tests/conftest.py`` ``Pause``): with
    ``$LATENTGEO_PAUSE_DIR`` set and a FIFO called ``name`` in it, announce
    ``<name>.reached.<pid>`` there and block until the test writes a byte into the FIFO (or a
    signal ends the wait). Tests then act at an exact point of a run, whatever the CPU's
    speed, instead of racing it. Without the variable it costs one environment lookup."""
    folder = os.environ.get(PAUSE_DIR)
    if not folder:
        return
    fifo = Path(folder) / name
    if not fifo.is_fifo():
        return
    fd = os.open(fifo, os.O_RDWR)  # never blocks, and keeps the FIFO open before announcing
    try:
        (Path(folder) / f"{name}.reached.{os.getpid()}").touch()
        # until the test writes; waking 10 times a second, because a signal the kernel hands
        # to another thread (torch's) would not end a read blocked in this one
        while not select.select([fd], [], [], 0.1)[0]:
            pass
        os.read(fd, 1)
    finally:
        os.close(fd)


class CheckpointDamaged(RunDamaged):
    """A checkpoint file that torch cannot read (truncated, overwritten, another format)."""


def separate_compile_cache() -> None:
    """torch.compile's kernel cache (TorchInductor, torch 2.14.1) is keyed without
    ``ATEN_CPU_CAPABILITY``: kernels compiled under one capability are reused under another.
    Measured here: a cache filled natively (AVX-512) gave a tiny MLP's compiled loss 2 % off
    eager under ``avx2`` and a C++ compile error under ``default``. With the variable set and
    no cache dir chosen (``TORCHINDUCTOR_CACHE_DIR``), compile into that capability's own."""
    capability = os.environ.get("ATEN_CPU_CAPABILITY")
    if capability and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(
            Path(tempfile.gettempdir()) / f"torchinductor_{os.getuid()}_aten_{capability}")


def select_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_threads(num_threads: int | None) -> None:
    """Slurm does not limit torch's threads: follow SLURM_CPUS_PER_TASK unless configured."""
    threads = num_threads or int(os.environ.get("SLURM_CPUS_PER_TASK", 0))
    if threads:
        torch.set_num_threads(threads)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32),
                         state["numpy_pos"], 0, 0.0))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, obj: dict[str, Any]) -> None:
    """torch.save into memory, then one atomic write: a crash never leaves half a file."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path``; CheckpointDamaged (naming it and the damage) when it cannot
    be read."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - torch raises many types for a damaged file
        raise CheckpointDamaged(f"{path} is damaged ({checkpoint_damage(error)})") from error


def checkpoint_damage(error: Exception) -> str:
    """What is wrong with a checkpoint, in our words: torch's own message advises loading with
    ``weights_only=False``, which would run whatever code the file holds."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in text.lower():
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        first = re.split(r"[.] |\n", detail.group(1))[0] if detail else ""
        found = f": {first[:120]}" if first else ""
        return (f"it holds something other than tensors and plain values{found}; such a file "
                "is not loaded, as loading it could run code")
    if "zip archive" in text or "central directory" in text:
        return "not a complete checkpoint archive: truncated or overwritten"
    if isinstance(error, EOFError) or not text.strip():
        return f"empty or truncated ({type(error).__name__})"
    return f"{type(error).__name__}: {text.strip().splitlines()[0][:200]}"
