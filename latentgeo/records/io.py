"""The run dir's file I/O: atomic writes (temp file, fsync, rename) and the disk-full wording
of a failed write; the JSON and JSONL readers, which count what they parse in ``PARSED``.

Foundation layer: the standard library only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import math
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# files parsed by the run-dir readers, by file name: the growth test counts the work per run
PARSED: Counter[str] = Counter()


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def file_mode() -> int:
    """The mode a new file gets from this process's umask (0644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# errnos of a full disk (or a full quota): the run records it as its reason, in one line
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """An OSError inside the block names ``path``: a failed write or fsync names no file, and
    mkstemp names its temp file, while the reason must say which file could not be written."""
    try:
        yield
    except OSError as error:
        if error.errno is None or error.filename == str(path):
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error


def write_problem(error: OSError, root: Path) -> str:
    """``no space left on device while writing checkpoints/last.pt`` (relative to ``root``)."""
    name = Path(error.filename) if error.filename else None
    if name is not None and name.is_relative_to(root):
        name = name.relative_to(root)
    what = (error.strerror or str(error)).lower()
    return f"{what} while writing {name}" if name is not None else what


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``. The file
    gets the umask's mode, as ``open`` would give it (mkstemp alone makes it 0600)."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fchmod(f.fileno(), file_mode())
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def rewrite_in_place(path: Path, data: bytes) -> None:
    """Overwrite an existing file's own blocks (not atomic): the last resort on a full disk,
    where no temp file can be made but a small file's block can be reused."""
    with writing(path), open(path, "r+b") as f:
        f.write(data)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def jsonable(value: Any) -> Any:
    """Plain JSON: NaN/inf -> null, tensors/arrays -> lists, numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # torch.Tensor, np.ndarray, numpy scalars
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def read_json_or_none(path: Path) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, why)`` when the file is missing or not JSON."""
    name = os.path.basename(path)  # os.path: a listing of 10,000 runs feels pathlib's cost
    try:
        with open(path) as f:
            text = f.read()
        PARSED[name] += 1
        return json.loads(text), None
    except FileNotFoundError:
        return None, f"no {name}"
    except (OSError, ValueError) as error:
        return None, f"unreadable {name}: {error}"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Events of a metrics.jsonl. A line that is not a JSON object (a torn last line after a
    crash mid-write, garbage, an empty line) is skipped, and said on stderr in one line that
    names the file and the line numbers."""
    events, skipped = [], []
    if not Path(path).is_file():
        return events
    PARSED[Path(path).name] += 1
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, start=1):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = None
            epoch = event.get("epoch", 0) if isinstance(event, dict) else None
            if isinstance(epoch, int) and not isinstance(epoch, bool):
                events.append(event)
            else:  # not an object, or an epoch that is not a whole number: not an event
                skipped.append(number)
    if skipped:
        shown = ", ".join(map(str, skipped[:10])) + (", ..." if len(skipped) > 10 else "")
        print(f"warning: {path}: skipped {len(skipped)} line(s) that are not JSON events "
              f"(torn, garbage or empty): line {shown}", file=sys.stderr)
    return events


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b": value}``; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat
