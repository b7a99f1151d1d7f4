"""Schwartz-Ziv & Tishby's 12-bit toy dataset (SZT; arXiv 1703.00810).

Inputs are all 2^12 = 4096 binary patterns of 12 bits; labels are binary. The original labels
come from a file (TH's ``data/SZT.pt`` or the IB paper's ``var_u.mat``, see :func:`load_szt`);
:func:`szt_synthetic_labels` is an offline stand-in with a rule of our own, NOT the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

NUM_BITS = 12
NUM_PATTERNS = 2**NUM_BITS
# Where load_szt looks, relative to its root, in this order.
SZT_CANDIDATES = ("SZT.pt", "szt/SZT.pt", "var_u.mat", "szt/var_u.mat")


def szt_inputs() -> torch.Tensor:
    """All 4096 12-bit patterns, uint8 ``[4096, 12]``, row ``i`` = binary digits of ``i``.

    Most significant bit first, so rows are in lexicographic order, exactly as the X of TH's
    ``data/SZT.pt``.
    """
    values = torch.arange(NUM_PATTERNS)
    shifts = torch.arange(NUM_BITS - 1, -1, -1)
    return ((values[:, None] >> shifts) & 1).to(torch.uint8)


def _pattern_values(bits: torch.Tensor) -> torch.Tensor:
    """Integer value of each row of 0/1 bits, most significant first."""
    weights = 2 ** torch.arange(NUM_BITS - 1, -1, -1)
    return (bits.to(torch.int64) * weights).sum(dim=1)


def szt_synthetic_labels() -> torch.Tensor:
    """Offline labels for :func:`szt_inputs`, int64 ``[4096]``; NOT Schwartz-Ziv & Tishby's.

    Rule: put the 12 bits ``b_0..b_11`` on a circle (``b_11`` next to ``b_0``);
    label = 1 iff ``sum_i b_i + sum_i b_i * b_{(i+1) mod 12} >= 9``, i.e. the number of ones
    plus the number of cyclically adjacent pairs of ones is at least 9 (a ring "energy" with a
    field and a nearest-neighbour coupling). It is invariant under the 12 cyclic rotations and
    under reversal of the circle, deterministic, and nearly balanced: 1936 patterns of class 0
    and 2160 of class 1 (the original file has 1978 / 2118).
    """
    bits = szt_inputs().to(torch.int64)
    adjacent_ones = (bits * bits.roll(-1, dims=1)).sum(dim=1)
    return (bits.sum(dim=1) + adjacent_ones >= 9).to(torch.int64)


def as_images(x: torch.Tensor) -> torch.Tensor:
    """SZT inputs ``[N, 12]`` as float32 one-channel images ``[N, 1, 1, 12]`` with values 0/1.

    One row of 12 "pixels" keeps the bits in order (flattening gives back the 12 inputs, which
    is all an MLP sees). Float rather than uint8 so that a loader that scales uint8 pixels by
    1/255 cannot turn the bits into 0 and 1/255.
    """
    if x.ndim != 2 or x.shape[1] != NUM_BITS:
        raise ValueError(f"dataset.szt: inputs must have shape [N, 12], got {tuple(x.shape)}")
    return x.to(torch.float32).reshape(x.shape[0], 1, 1, NUM_BITS)


def _read_torch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    content = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(content, Sequence) or len(content) != 2:
        raise ValueError(f"{path}: expected a saved tuple (X, y), got {type(content).__name__}")
    return torch.as_tensor(content[0]), torch.as_tensor(content[1])


def _read_matlab(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        import scipy.io
    except ImportError as error:
        raise ImportError(f"reading {path} needs scipy (pip install scipy)") from error
    content = scipy.io.loadmat(path)
    if "F" not in content or "y" not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise ValueError(f"{path}: expected MATLAB variables 'F' and 'y', found {found}")
    return torch.as_tensor(content["F"]), torch.as_tensor(content["y"])


def _validated(path: Path, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes and values; put the rows in lexicographic order. x uint8, y int64."""
    if tuple(x.shape) != (NUM_PATTERNS, NUM_BITS):
        raise ValueError(f"{path}: inputs must have shape (4096, 12), got {tuple(x.shape)}")
    if y.numel() != NUM_PATTERNS:
        raise ValueError(f"{path}: expected 4096 labels, got shape {tuple(y.shape)}")
    y = y.reshape(-1)
    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{path}: inputs must be 0/1 bits")
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"{path}: labels must be in {{0, 1}}, got values {y.unique().tolist()}")
    values = _pattern_values(x)
    if torch.unique(values).numel() != NUM_PATTERNS:
        raise ValueError(f"{path}: inputs must be the 4096 distinct 12-bit patterns")
    order = torch.argsort(values)  # values are a permutation of 0..4095
    return x[order].to(torch.uint8), y[order].to(torch.int64)


def load_szt(root: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Schwartz-Ziv & Tishby's original data: ``(x uint8 [4096, 12], y int64 [4096])``.

    Looks under ``root`` for, in order: ``SZT.pt``, ``szt/SZT.pt`` (TH's format: a torch-saved
    tuple ``(X uint8 [4096, 12], y uint8 [4096])``), ``var_u.mat``, ``szt/var_u.mat`` (the
    IB paper's MATLAB file, variables ``F`` = inputs and ``y`` = labels; needs scipy). Rows are
    reordered by pattern value so that ``x`` equals :func:`szt_inputs` whatever the file's row
    order (labels move with their rows). TH's file holds 1978 / 2118 labels of class 0 / 1.
    """
    root = Path(root)
    for name in SZT_CANDIDATES:
        path = root / name
        if path.is_file():
            reader = _read_torch if path.suffix == ".pt" else _read_matlab
            return _validated(path, *reader(path))
    looked = ", ".join(str(root / name) for name in SZT_CANDIDATES)
    raise FileNotFoundError(
        f"SZT data not found under {root} (looked for {looked}). Get data/SZT.pt from TH's "
        "repository (github.com/ziyong-was-taken/Compression-In-DNNs) or var_u.mat from the "
        "IB paper's code (github.com/ravidziv/IDNNs, data/var_u.mat) and put it in that "
        "folder; dataset=szt_synthetic needs no file (labels of our own rule, not the original)."
    )
