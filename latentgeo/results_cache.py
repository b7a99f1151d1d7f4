"""Caches of what the results commands read from run dirs, so that a second ``aggregate``,
``load_runs`` or ``load_history`` over thousands of runs reads only what changed.

- **Run records** (``warm``): each run's status.json, summary.json, config and eval/ results,
  kept in one JSON file per folder read, keyed on each run's files (inode, size, mtime_ns: every
  writer replaces a file atomically, i.e. with a new inode, or appends to it). A run whose key
  differs is read again; nothing is served from a file that changed.
- **History** (``history_table``): each run's metrics.jsonl as one Arrow IPC file (a column per
  metric), keyed the same way on metrics.jsonl; a load reads only the metrics asked for,
  memory-mapped. pyarrow: the columnar format pandas itself reads natively, a wheel with no
  further dependencies, and IPC files map without a copy; duckdb or polars would add a second
  data-frame engine beside pandas for the same job.

The caches live in ``<folder>/.latentgeo-cache/`` (hidden: never taken for a run), else, when
that folder is not writable, in ``$XDG_CACHE_HOME/latentgeo/<hash of the folder>/``; nothing is
ever written inside a run dir, and when neither place is writable everything is read from the
run dirs as before. Every cache file is written atomically (``records.atomic_write_*``). The
run dirs stay the source of truth: deleting the cache changes nothing but the time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from latentgeo.records import (
    ARTIFACTS,
    HYDRA_CONFIG,
    PARSED,
    RunDir,
    atomic_write_bytes,
    atomic_write_text,
    read_metrics,
)

CACHE_DIR = ".latentgeo-cache"
VERSION = 1  # of the cache files' layout: a cache of another version is ignored
# the files a run's records come from; a change to any of them re-reads the run
RECORD_FILES = (ARTIFACTS["config"], ARTIFACTS["config_json"], str(HYDRA_CONFIG),
                ARTIFACTS["status"], ARTIFACTS["summary"], ARTIFACTS["eval"])
DROPPED = "\0dropped"  # a tree_diff key: keys of the base that the tree lacks


def cache_dir(root: Path | str) -> Path | None:
    """Where the caches of a folder live (created); None when no place is writable."""
    root = Path(root).resolve()
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "latentgeo"
    for place in (root / CACHE_DIR,
                  home / hashlib.sha1(str(root).encode()).hexdigest()[:16]):
        try:
            place.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(place, os.W_OK):
            return place
    return None


def file_key(path: Path | str) -> list[int] | None:
    """(inode, size, mtime_ns) of a file or folder; None when it does not exist."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns]


def run_key(run: RunDir) -> list[Any]:
    folder = str(run.dir)  # plain strings: pathlib costs more than the stat at 10,000 runs
    return [file_key(os.path.join(folder, name)) for name in RECORD_FILES]


def run_name(run: RunDir) -> str:
    """The run's absolute path: its name in the caches (no syscall, unlike ``resolve``)."""
    return os.path.abspath(run.dir)


def tree_diff(base: Any, tree: Any) -> dict[str, Any]:
    """What turns ``base`` into ``tree`` (nested dicts): changed keys, recursing into dicts, and
    the dropped ones. Configs of a sweep differ in a few keys: the cache stores only those."""
    changed: dict[str, Any] = {}
    for key, value in tree.items():
        if key in base and base[key] == value:
            continue
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            changed[key] = {"diff": tree_diff(base[key], value)}
        else:
            changed[key] = {"value": value}
    dropped = [key for key in base if key not in tree]
    return {**changed, DROPPED: dropped} if dropped else changed


def tree_patch(base: dict[str, Any], diff: dict[str, Any]) -> dict[str, Any]:
    """``tree_diff``'s inverse; unchanged sub-trees are shared with ``base`` (read-only use)."""
    tree = {key: value for key, value in base.items() if key not in diff.get(DROPPED, ())}
    for key, change in diff.items():
        if key != DROPPED:
            tree[key] = (tree_patch(base[key], change["diff"]) if "diff" in change
                         else change["value"])
    return tree


def _reads(run: RunDir) -> dict[str, Any]:
    """The run's records as ``RunDir`` caches them (``RunDir.preload``)."""
    status, summary = run.status_read(), run.summary_read()
    reads: dict[str, Any] = {"status": {"value": status[0], "problem": status[1]},
                             "summary": {"value": summary[0], "problem": summary[1]},
                             "evaluations": run.evaluations()}
    try:
        reads["config"] = run.config()
    except ValueError:
        pass  # unreadable: not cached, each call says why
    return reads


def _load(path: Path) -> dict[str, Any]:
    try:
        cache = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) and cache.get("version") == VERSION else {}


def warm(runs: Sequence[RunDir], root: Path | str) -> None:
    """Give each run its records from the cache of ``root`` when its files are unchanged;
    read the others from their run dirs and update the cache."""
    place = cache_dir(root)
    if place is None or not runs:
        return
    path = place / "runs.json"
    cache = _load(path)
    base = cache.get("base")
    entries = cache.get("runs") or {}
    fresh: dict[str, Any] = {}
    changed = False
    for run in runs:
        name = run_name(run)
        key = run_key(run)  # before reading: a file changing meanwhile is re-read next time
        entry = entries.get(name)
        if entry is not None and entry["key"] == key:
            reads = tree_patch(base, entry["diff"])
            run.preload({"status": (reads["status"]["value"], reads["status"]["problem"]),
                         "summary": (reads["summary"]["value"], reads["summary"]["problem"]),
                         "evaluations": reads["evaluations"],
                         **({"config": reads["config"]} if "config" in reads else {})})
            fresh[name] = entry
            continue
        reads = _reads(run)
        base = reads if base is None else base  # the first run's: the others differ little
        fresh[name] = {"key": key, "diff": tree_diff(base, reads)}
        changed = True
    if changed or len(fresh) != len(entries):
        try:
            atomic_write_text(path, json.dumps({"version": VERSION, "base": base,
                                                "runs": fresh}))
        except OSError:
            pass  # a cache that cannot be written costs time, never a result


# ----------------------------------------------------------------------------- commands


def command_key(runs: Sequence[RunDir], parts: dict[str, Any]) -> dict[str, Any]:
    """What a command's output depends on: its arguments, every run's files (metrics.jsonl
    too), and latentgeo's own code (a new version recomputes)."""
    code = sorted(Path(__file__).parent.rglob("*.py"))
    return {"version": VERSION, "parts": parts,
            "code": [[path.name, file_key(path)] for path in code],
            "runs": [[run_name(run), run_key(run),
                      file_key(os.path.join(run.dir, ARTIFACTS["metrics"]))] for run in runs]}


def _memo_path(place: Path, name: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha1(json.dumps([name, key["parts"]], sort_keys=True).encode())
    return place / f"{name}-{digest.hexdigest()[:16]}.json"


def replay(name: str, root: Path | str, key: dict[str, Any]) -> tuple[str, str] | None:
    """The stdout and stderr of the same command over the same files when its outputs are
    still as it wrote them; else None (compute)."""
    place = cache_dir(root)
    if place is None:
        return None
    try:
        memo = json.loads(_memo_path(place, name, key).read_bytes())
    except (OSError, ValueError):
        return None
    if memo.get("key") != key or any(file_key(Path(path)) != written
                                     for path, written in memo.get("outputs", {}).items()):
        return None
    return memo["stdout"], memo["stderr"]


def remember(name: str, root: Path | str, key: dict[str, Any], outputs: Sequence[Path],
             stdout: str, stderr: str) -> None:
    """Keep a command's printed output and its files' keys for ``replay``."""
    place = cache_dir(root)
    if place is None:
        return
    try:
        atomic_write_text(_memo_path(place, name, key), json.dumps({
            "key": key, "outputs": {str(Path(p).resolve()): file_key(Path(p)) for p in outputs},
            "stdout": stdout, "stderr": stderr}))
    except OSError:
        pass


def frame_replay(name: str, root: Path | str, key: dict[str, Any]):
    """The DataFrame the same call returned over the same files (``remember_frame``), or
    None."""
    import pyarrow as pa

    place = cache_dir(root)
    if place is None or replay(name, root, key) is None:
        return None
    try:
        table = pa.ipc.open_file(pa.memory_map(str(_memo_path(place, name, key).with_suffix(
            ".arrow")))).read_all()
        as_json = json.loads(table.schema.metadata[b"json_columns"])
    except (OSError, KeyError, ValueError, pa.ArrowInvalid):
        return None
    frame = table.to_pandas()
    for column in as_json:
        frame[column] = pd.Series([json.loads(text) for text in frame[column]],
                                  index=frame.index, dtype=object)
    return frame


def remember_frame(name: str, root: Path | str, key: dict[str, Any], frame: pd.DataFrame
                   ) -> None:
    """Keep a returned DataFrame as Arrow IPC; columns of mixed Python values (lists, None
    beside numbers) as their JSON text, decoded on the way back."""
    import pyarrow as pa

    place = cache_dir(root)
    if place is None:
        return
    as_json = [column for column in frame.columns if frame[column].dtype == object]
    encoded = frame.assign(**{column: [json.dumps(value) for value in frame[column]]
                              for column in as_json})
    try:
        table = pa.Table.from_pandas(encoded, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return  # not a frame Arrow holds: computed again next time
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"json_columns": json.dumps(as_json).encode()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    path = _memo_path(place, name, key).with_suffix(".arrow")
    try:
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
    except OSError:
        return
    remember(name, root, key, [path], "", "")


class Tee(io.TextIOBase):
    """Writes through to a stream and keeps a copy (a command's output for ``remember``)."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.kept = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.kept.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


# ----------------------------------------------------------------------------- history


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def events_table(events: Sequence[dict[str, Any]]):
    """metrics.jsonl's numbers as an Arrow table: ``epoch``, ``step`` (nullable int64) and a
    float64 column per metric in first-seen order (null: not recorded or not a number)."""
    import pyarrow as pa

    names = list(dict.fromkeys(key for event in events for key in event
                               if key not in ("epoch", "step")))
    columns = {
        "epoch": pa.array([_int(e.get("epoch")) for e in events], pa.int64()),
        "step": pa.array([_int(e.get("step")) for e in events], pa.int64()),
    }
    for name in names:
        columns[name] = pa.array([_number(e.get(name)) for e in events], pa.float64())
    return pa.table(columns)


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number.is_integer() else None


def parse_events(path: Path):
    """``events_table`` of a metrics.jsonl, parsed by Arrow's JSON reader (C++, ~4× faster
    than ``json.loads`` per line); a file it cannot take (a torn last line, NaN literals, a
    line that is not an object) goes through ``records.read_metrics`` as before."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    PARSED[path.name] += 1
    try:
        parsed = pa_json.read_json(path, read_options=pa_json.ReadOptions(use_threads=False))
    except (pa.ArrowInvalid, OSError):
        PARSED[path.name] -= 1  # counted again by read_metrics
        return events_table(read_metrics(path))
    columns = {}
    for coordinate in ("epoch", "step"):
        if coordinate in parsed.column_names and (
                pa.types.is_integer(parsed[coordinate].type)):
            columns[coordinate] = parsed[coordinate].cast(pa.int64())
        elif coordinate in parsed.column_names and pa.types.is_floating(parsed[coordinate].type):
            return events_table(read_metrics(path))  # rare: keep read_metrics' meaning
        else:
            columns[coordinate] = pa.nulls(parsed.num_rows, pa.int64())
    for name, column in zip(parsed.column_names, parsed.columns):
        kind = column.type
        if name not in columns and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            columns[name] = column.cast(pa.float64())
    return pa.table(columns)


def history_table(run: RunDir, root: Path | str, place: Path | None = None):
    """The run's metrics.jsonl as ``events_table``, from the Arrow cache when metrics.jsonl is
    unchanged, else parsed and cached."""
    import pyarrow as pa

    metrics = run.artifact("metrics")
    key = file_key(metrics)
    place = cache_dir(root) if place is None else place
    cached = None
    if place is not None and key is not None:
        digest = hashlib.sha1(run_name(run).encode()).hexdigest()[:20]
        cached = place / "history" / f"{digest}.arrow"
        try:
            table = pa.ipc.open_file(pa.memory_map(str(cached))).read_all()
            if json.loads(table.schema.metadata[b"key"]) == key:
                return table
        except (OSError, KeyError, TypeError, ValueError, pa.ArrowInvalid):
            pass
    table = parse_events(metrics) if key is not None else events_table([])
    if cached is not None:
        table = table.replace_schema_metadata({"key": json.dumps(key)})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        try:
            atomic_write_bytes(cached, sink.getvalue().to_pybytes())
        except OSError:
            pass
    return table


__all__ = ["PARSED", "Tee", "cache_dir", "command_key", "frame_replay", "history_table",
           "remember", "remember_frame", "replay", "warm"]
