"""The run directory (DESIGN.md contract): ``RunDir`` / ``SweepDir``, atomic writes, status,
JSONL events, summary. The only module that knows run-dir file names and formats.

Foundation layer: the standard library only (omegaconf, imported where config.yaml is read).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import math
import os
import platform
import re
import shutil
import struct
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from latentgeo.summaries import never_learned

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


class LockHeld(RuntimeError):
    """Another live process holds the lock."""


class RunFailed(RuntimeError):
    """A run stopped for a reason its record states in full (a diverging loss, a full disk):
    the command line prints the message as one line, without a traceback."""


class RunDamaged(RuntimeError):
    """A run dir's files cannot be trusted (a damaged checkpoint, events that contradict it);
    the message says which file and how to recover."""


_HELD: set[str] = set()  # lock files this process holds: closing any fd of one releases it
# struct flock (fcntl(2)) on Linux and the BSDs: l_type, l_whence, l_start, l_len, l_pid
FLOCK = "hhqqi4x"


def lock_holder(path: Path) -> int | None:
    """The pid of the live process holding ``exclusive_lock(path)`` (this process's own pid
    for a lock it holds), or None. Takes no lock, creates nothing: ``F_GETLK`` only reports."""
    path = Path(path)
    if str(path.resolve()) in _HELD:
        return os.getpid()  # opening it here would release our own lock when closed
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        query = struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        kind, _, _, _, pid = struct.unpack(FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else pid


@contextlib.contextmanager
def exclusive_lock(path: Path, blocking: bool = True, holder: dict[str, Any] | None = None
                   ) -> Iterator[None]:
    """An advisory POSIX lock (``fcntl.lockf``: also across NFS clients) on ``path`` for the
    block. The kernel drops it when the process dies, so a lock of a dead process is free.
    ``blocking=False`` raises LockHeld naming the holder (from the file's JSON) instead of
    waiting; ``holder`` is written into the file while held."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            text = os.pread(fd, 4096, 0).decode(errors="replace")
            try:
                who = json.loads(text)
            except ValueError:
                who = {}
            raise LockHeld(f"pid {who.get('pid', '?')} on {who.get('host', '?')} "
                           f"(since {who.get('since', '?')})") from None
        if holder is not None:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(holder).encode(), 0)
            except OSError as error:  # the holder only names the owner: a full disk may skip it
                if error.errno not in DISK_FULL:
                    raise
        _HELD.add(str(path.resolve()))
        yield
    finally:
        _HELD.discard(str(path.resolve()))
        os.close(fd)  # closing releases the lock


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


# Every file a run dir can hold, by the name code uses for it: the one list of file names.
# status.json keys that keep a run's wandb run (id, display name, group) across resumes,
# requeues, a moved outputs folder, and for the post-hoc commands (``latentgeo.tracking``)
WANDB_IDENTITY = ("wandb_id", "wandb_name", "wandb_group")

ARTIFACTS = {
    "config": "config.yaml",
    "config_json": "config.json",  # config.yaml parsed, for fast reads (``write_config_twin``)
    "status": "status.json",
    "metrics": "metrics.jsonl",
    "summary": "summary.json",
    "checkpoints": "checkpoints",
    "wandb": "wandb",
    "penultimate": "penultimate.npz",
    "hyperplanes": "hyperplanes.json",
    "alpha": "alpha.json",
    "alpha_plot": "alpha.png",
    "reinit": "reinit.json",
    "reinit_plot": "reinit.png",
    "lr_find": "lr_find.json",
    "lr_find_plot": "lr_find.png",
    "linearize": "linearize.json",
    "eval": "eval",  # eval/<checkpoint>.json from ``python -m latentgeo.evaluate``
    "lock": ".lock",  # held by the process writing the run dir (``RunDir.owned``)
    "log": "train.log",  # one line per epoch (and Hydra's job log)
    "profile": "profile",  # trainer.profile_steps: torch profiler trace (Chrome / Perfetto)
    "launcher": "launcher.json",  # hydra/launcher=workstation: device, pid, start/end, exit
    "job_log": "job.log",  # hydra/launcher=workstation: the job process's output
}
HYDRA_CONFIG = Path(".hydra") / "config.yaml"  # Hydra's own copy: there before the run starts
STATES = ("running", "ok", "failed", "interrupted")
BEST_KEY = "best/test/accuracy"  # the best so far in status.json, the final one in summary.json


def is_run_dir(path: Path) -> bool:
    """A run dir holds status.json or config.yaml (Hydra's ``.hydra/config.yaml`` alone is a
    job that died before its run started)."""
    path = Path(path)
    return any((path / name).is_file() for name in (ARTIFACTS["status"], ARTIFACTS["config"],
                                                     HYDRA_CONFIG))


def write_config_twin(run_dir: Path, config: dict[str, Any], atomic: bool = True) -> None:
    """config.json beside config.yaml: the same config as JSON (read 700× faster than the YAML),
    valid while config.yaml keeps the size and mtime recorded in it; an edited config.yaml is
    read again. ``atomic=False`` for a generator writing a fresh dir."""
    yaml_stat = (Path(run_dir) / ARTIFACTS["config"]).stat()
    text = json.dumps({"config.yaml": {"size": yaml_stat.st_size,
                                       "mtime_ns": yaml_stat.st_mtime_ns}, "config": config})
    path = Path(run_dir) / ARTIFACTS["config_json"]
    if atomic:
        atomic_write_text(path, text)
    else:
        path.write_text(text)


def read_config_twin(run_dir: Path) -> dict[str, Any] | None:
    """config.json's config when it matches config.yaml (else None: read the YAML)."""
    try:
        yaml_stat = (Path(run_dir) / ARTIFACTS["config"]).stat()
        text = (Path(run_dir) / ARTIFACTS["config_json"]).read_bytes()
        PARSED[ARTIFACTS["config_json"]] += 1
        twin = json.loads(text)
        source = twin["config.yaml"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if (source.get("size"), source.get("mtime_ns")) != (yaml_stat.st_size,
                                                         yaml_stat.st_mtime_ns):
        return None
    config = twin.get("config")
    return config if isinstance(config, dict) else None


def checkpoint_name(epoch: int | None) -> str:
    """``last`` (None), ``init`` (0) or ``epoch_XXXX``."""
    if epoch is None:
        return "last"
    return "init" if epoch == 0 else f"epoch_{epoch:04d}"


class RunDir:
    """One run directory (DESIGN.md contract); the only code that knows its file names and
    formats. Readers use ``config()``, ``status()``, ``events()``, ``summary()``,
    ``artifact(name)`` and ``checkpoint(name)``; the training process writes through
    ``start``, ``log``, ``set_epoch``, ``finish_ok`` and ``fail``. Reads are cached per
    instance: make a new ``RunDir`` to see later changes."""

    def __init__(self, path: Path | str, name: str | None = None) -> None:
        self.dir = Path(path)
        self.name = name or self.dir.name
        self._status: dict[str, Any] = {}  # the writer's status
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RunDir({str(self.dir)!r})"

    # ----------------------------------------------------------------- paths

    def artifact(self, name: str) -> Path:
        if name not in ARTIFACTS:
            raise KeyError(f"unknown run-dir artifact {name!r}; known: {sorted(ARTIFACTS)}")
        return self.dir / ARTIFACTS[name]

    @property
    def checkpoints(self) -> Path:
        return self.artifact("checkpoints")

    def checkpoint(self, name: str) -> Path:
        """``checkpoints/<name>.pt`` for ``last``, ``init`` or ``epoch_XXXX``."""
        return self.checkpoints / f"{name}.pt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint("last")

    def checkpoint_names(self) -> list[str]:
        """``init``, the ``epoch_XXXX`` snapshots in epoch order, then ``last`` (those present)."""
        found = {p.stem for p in self.checkpoints.glob("*.pt")}
        snapshots = sorted(n for n in found if re.fullmatch(r"epoch_\d+", n))
        return [n for n in ("init", *snapshots, "last") if n in found]

    def exists(self) -> bool:
        return self.artifact("status").is_file() or self.last_checkpoint.is_file()

    # ----------------------------------------------------------------- reading

    def _read(self, key: str, read):
        if key not in self._cache:
            self._cache[key] = read()
        return self._cache[key]

    def config(self, resolve: bool = True) -> dict[str, Any]:
        """config.yaml as a nested dict (Hydra's ``.hydra/config.yaml`` when the run died before
        writing its own); ``{}`` when there is none. Raises ValueError when it is unreadable."""
        return self._read(f"config:{resolve}", lambda: self._load_config(resolve))

    def _load_config(self, resolve: bool) -> dict[str, Any]:
        twin = read_config_twin(self.dir)
        if twin is not None:
            return twin
        from omegaconf import DictConfig, OmegaConf

        for path in (self.artifact("config"), self.dir / HYDRA_CONFIG):
            if not path.is_file():
                continue
            PARSED[path.name] += 1
            try:
                cfg = OmegaConf.load(path)
            except Exception as error:  # noqa: BLE001 - any YAML problem
                raise ValueError(f"unreadable {path.name}: {error}") from error
            if not isinstance(cfg, DictConfig):  # a list, or a scalar: not a config
                raise ValueError(f"unreadable {path.name}: a {type(cfg).__name__}, not a "
                                 "mapping of keys")
            try:
                return OmegaConf.to_container(cfg, resolve=resolve)  # type: ignore[return-value]
            except Exception:  # noqa: BLE001 - ${hydra:...} outside Hydra: keep the raw text
                return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]
        return {}

    def config_problem(self) -> str | None:
        try:
            return None if self.config() else "no config.yaml"
        except ValueError as error:
            return str(error)

    def flat_config(self) -> dict[str, Any]:
        """``{"optimizer.lr": ..., "head.name": ...}``; ``{}`` when missing or unreadable."""
        def read() -> dict[str, Any]:
            try:
                return flatten(self.config())
            except ValueError:
                return {}

        return self._read("flat_config", read)

    def status(self) -> dict[str, Any] | None:
        value, _ = self._read("status", lambda: read_json_or_none(self.artifact("status")))
        return value if isinstance(value, dict) else None

    def status_read(self) -> tuple[Any, str | None]:
        """status.json as ``read_json_or_none`` gave it (for a cache of the reads)."""
        return self._read("status", lambda: read_json_or_none(self.artifact("status")))

    def summary_read(self) -> tuple[Any, str | None]:
        return self._read("summary", lambda: read_json_or_none(self.artifact("summary")))

    def preload(self, reads: dict[str, Any]) -> None:
        """Reads kept by a cache that checked the files are unchanged (``results_cache``):
        ``status`` / ``summary`` as ``(value, problem)``, ``config``, ``evaluations``."""
        for key, value in reads.items():
            self._cache["config:True" if key == "config" else key] = value

    @property
    def state(self) -> str:
        """The status.json state, or ``missing`` (no status.json) / ``unreadable``."""
        value, problem = self._read("status", lambda: read_json_or_none(self.artifact("status")))
        if problem == f"no {ARTIFACTS['status']}":
            return "missing"
        if not isinstance(value, dict) or not value.get("state"):
            return "unreadable"
        return str(value["state"])

    @property
    def reason(self) -> str | None:
        """Why the run is not usable: status.json's reason, else a missing or broken file."""
        value, problem = self._read("status", lambda: read_json_or_none(self.artifact("status")))
        if problem is not None:
            return problem
        if not isinstance(value, dict):
            return "status.json is not an object"
        if value.get("state") == "ok":
            if self.summary() is None:
                _, summary_problem = read_json_or_none(self.artifact("summary"))
                return summary_problem or "summary.json is not an object"
            config_problem = self.config_problem()
            if config_problem:
                return config_problem
            return never_learned(self.summary())
        return value.get("reason")

    @property
    def epoch(self) -> int | None:
        """The last complete epoch: the writer's own, else status.json's."""
        if self._status:
            return self._status.get("epoch")
        status = self.status()
        return status.get("epoch") if status else None

    def events(self) -> list[dict[str, Any]]:
        return self._read("events", lambda: read_metrics(self.artifact("metrics")))

    def summary(self) -> dict[str, Any] | None:
        value, _ = self._read("summary", lambda: read_json_or_none(self.artifact("summary")))
        return value if isinstance(value, dict) else None

    def evaluations(self) -> dict[str, dict[str, Any]]:
        """``eval/<checkpoint>.json`` of every evaluated checkpoint, by checkpoint name."""
        return self._read("evaluations", self._read_evaluations)

    def _read_evaluations(self) -> dict[str, dict[str, Any]]:
        found = {}
        for path in sorted(self.artifact("eval").glob("*.json")):
            value, _ = read_json_or_none(path)
            if isinstance(value, dict):
                found[path.stem] = value
        return found

    def write_evaluation(self, checkpoint: str, values: dict[str, Any]) -> Path:
        path = self.artifact("eval") / f"{checkpoint}.json"
        atomic_write_json(path, values)
        self._cache.pop("evaluations", None)
        return path

    def read_artifact(self, name: str) -> Any:
        """A JSON artifact (``hyperplanes``, ``reinit``, ``alpha``, ...), or None."""
        value, _ = read_json_or_none(self.artifact(name))
        return value

    # ----------------------------------------------------------------- writing

    def _write_status(self) -> None:
        path = self.artifact("status")
        text = json.dumps(jsonable(self._status), indent=2, sort_keys=True) + "\n"
        try:
            atomic_write_text(path, text)
        except OSError as error:
            if error.errno not in DISK_FULL or not path.is_file():
                raise
            rewrite_in_place(path, text.encode())  # a full disk: status.json's own block
        self._cache.pop("status", None)

    def recorded(self, key: str) -> Any:
        """A status.json field as this process last wrote it (else as the file says)."""
        return self._status.get(key) if self._status else (self.status() or {}).get(key)

    @contextlib.contextmanager
    def owned(self, purpose: str = "train", scope: str = "run") -> Iterator[RunDir]:
        """Hold the run dir's owner lock for the block: a second writer (train or an analysis)
        is refused at once with LockHeld naming the holder; a lock left by a dead process is
        free. ``scope="eval"`` locks only ``eval/`` (evaluate works beside a running run)."""
        holder = {"pid": os.getpid(), "host": platform.node(), "since": now(),
                  "purpose": purpose}
        path = self.artifact("lock") if scope == "run" else self.artifact("eval") / ".lock"
        try:
            with exclusive_lock(path, blocking=False, holder=holder):
                yield self
        except LockHeld as error:
            raise LockHeld(f"{self.dir} is in use: {error} is writing it; wait for it to "
                           f"end (or stop it) and rerun") from None

    def has_live_owner(self) -> bool:
        """Does a live process hold the run dir's owner lock (a run going on right now)?
        Asks the kernel (``F_GETLK``) without taking the lock: a probe must never make a
        starting writer be refused (taking the lock for a moment did, under ``runs``)."""
        return lock_holder(self.artifact("lock")) is not None

    @property
    def shown_state(self) -> str:
        """The state a listing shows: ``running`` only with a live owner; a ``running`` record
        without one was killed (SIGKILL, power loss, a node failure): ``dead``."""
        state = self.state
        return "dead" if state == "running" and not self.has_live_owner() else state

    def append_log(self, line: str) -> None:
        """One line (per epoch) into train.log, flushed: it follows the run as the console."""
        with writing(self.artifact("log")), open(self.artifact("log"), "a") as f:
            f.write(line.rstrip("\n") + "\n")

    def rewrite_events(self, events: list[dict[str, Any]]) -> None:
        """Replace metrics.jsonl with ``events`` (atomically)."""
        atomic_write_text(self.artifact("metrics"),
                          "".join(json.dumps(jsonable(e)) + "\n" for e in events))
        self._cache.pop("events", None)

    def note(self, key: str, value: Any) -> None:
        """Add a key to status.json (e.g. ``repaired``: what was restored and why)."""
        self._status[key] = value
        self._write_status()

    def write_artifact(self, name: str, obj: Any) -> Path:
        """A JSON artifact (NaN -> null), or raw bytes for binary ones; atomic."""
        path = self.artifact(name)
        if isinstance(obj, bytes):
            atomic_write_bytes(path, obj)
        else:
            atomic_write_json(path, obj)
        return path

    def archive(self) -> Path:
        """Move the existing record aside (``archive/<timestamp>/``) instead of deleting it."""
        target = self.dir / "archive" / dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        target.mkdir(parents=True)
        for name, file_name in ARTIFACTS.items():
            if name != "lock" and (self.dir / file_name).exists():
                shutil.move(str(self.dir / file_name), str(target / file_name))
        self._status = {}
        self._cache = {}
        return target

    def start(self, config_yaml: str, resumed_epoch: int = 0,
              overrides: list[str] | None = None,
              provenance: dict[str, Any] | None = None) -> None:
        """Record the run as running: config.yaml (and its twin), status.json with
        ``provenance`` (the writer's ``provenance.record()``: git_sha, versions), and the
        events the resume keeps."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(exist_ok=True)
        self.artifact("config_json").unlink(missing_ok=True)  # never a twin of an older yaml
        atomic_write_text(self.artifact("config"), config_yaml)
        self._cache = {key: value for key, value in self._cache.items()
                       if not key.startswith(("config", "flat_config"))}
        config = self.config()
        write_config_twin(self.dir, config)
        previous = self.status() or {}
        started = previous.get("started") if resumed_epoch else None
        self._status = {
            "state": "running",
            "reason": None,
            "started": started or now(),
            "ended": None,
            "epoch": resumed_epoch,
            **(provenance or {}),
            "overrides": list(overrides or previous.get("overrides") or []),
            # what a listing shows (``python -m latentgeo.runs``), without parsing the config
            # or the events
            "epochs": flatten(config).get("trainer.epochs"),
        }
        kept = [e.get("test/accuracy") for e in (self.events() if resumed_epoch else [])
                if e.get("epoch", 0) <= resumed_epoch]  # the events the resume keeps
        kept = [a for a in kept if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if kept:
            self._status[BEST_KEY] = max(kept)
        for key in WANDB_IDENTITY:  # the same wandb run across resumes and requeues
            if previous.get(key):
                self._status[key] = previous[key]
        if resumed_epoch:
            self._status["resumed_at"] = now()
        self._write_status()
        # events after the checkpoint are redone; a fresh start redoes epoch 0 too
        self.truncate_events(after_epoch=resumed_epoch if resumed_epoch else -1)

    def set_epoch(self, epoch: int) -> None:
        self._status["epoch"] = epoch
        self._write_status()

    def log(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append one event; flushed and fsynced so a crash loses at most a torn last line.
        Returns the event as recorded (what ``events()`` will read back)."""
        line = json.dumps(jsonable(event), sort_keys=False)
        with writing(self.artifact("metrics")), open(self.artifact("metrics"), "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._cache.pop("events", None)
        recorded = json.loads(line)
        accuracy = recorded.get("test/accuracy")
        if (self._status and isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool)
                and (self._status.get(BEST_KEY) is None or accuracy > self._status[BEST_KEY])):
            self._status[BEST_KEY] = accuracy  # in status.json with the epoch (``set_epoch``)
        return recorded

    def truncate_events(self, after_epoch: int) -> None:
        """Drop events after ``after_epoch`` (written before a crash, redone on resume)."""
        path = self.artifact("metrics")
        if not path.is_file():
            return
        kept = [e for e in read_metrics(path) if e.get("epoch", 0) <= after_epoch]
        if not kept:
            path.unlink()
            self._cache.pop("events", None)
            return
        atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in kept))
        self._cache.pop("events", None)

    def finish_ok(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.artifact("summary"), summary)
        # an ok run's reason: never learned (listed by ``runs`` from status.json alone)
        self._status.update(state="ok", reason=never_learned(summary), ended=now())
        self._write_status()

    def add_to_summary(self, values: dict[str, Any]) -> None:
        """A post-hoc analysis's results (``dib/…``, ``reinit/…``) into a finished run's
        summary.json, where aggregate and ``results.load_runs`` see them."""
        summary = self.summary()
        if summary is None:
            return  # not finished ok: its summary is written when it is
        atomic_write_json(self.artifact("summary"), {**summary, **values})
        self._cache.pop("summary", None)

    def close_lost(self, state: str, reason: str) -> None:
        """For a supervisor (a launcher) whose job process died without recording its end:
        status.json says ``state`` and why, keeping what the run had recorded."""
        status = self.status() or {}
        atomic_write_json(self.artifact("status"),
                          {**status, "state": state, "reason": reason, "ended": now()})
        self._cache = {}

    def fail(self, reason: str, state: str = "failed",
             provenance: dict[str, Any] | None = None) -> None:
        """Record the run as ``state`` for ``reason``; a run that never started gets a status
        of its own, with ``provenance`` (as ``start``'s)."""
        if not self._status:
            self._status = {"started": now(), "epoch": 0, **(provenance or {})}
        self._status.update(state=state, reason=reason, ended=now())
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_status()


def job_order(path: Path) -> tuple[int, int | str]:
    return job_key(path.name)


def job_key(name: str) -> tuple[int, int | str]:
    """Jobs ``0, 1, 2, …, 10`` in number order, then other names."""
    return (0, int(name)) if name.isdigit() else (1, name)


class SweepDir:
    """A sweep dir: one run dir per job (``<sweep_dir>/<job_num>/``) and Hydra's
    ``multirun.yaml``."""

    def __init__(self, path: Path | str) -> None:
        self.dir = Path(path)

    def runs(self) -> list[RunDir]:
        """Run dirs in job order (``0, 1, …, 10``, then named ones)."""
        if not self.dir.is_dir():
            return []
        children = [p for p in self.dir.iterdir() if p.is_dir() and is_run_dir(p)]
        return [RunDir(p) for p in sorted(children, key=job_order)]

    def job(self, number: int) -> RunDir:
        return RunDir(self.dir / str(number))


def find_runs(path: Path | str) -> list[RunDir]:
    """``[run]`` for a run dir, else the sweep's runs in job order."""
    path = Path(path)
    return [RunDir(path)] if is_run_dir(path) else SweepDir(path).runs()


NOT_RUNS = ("archive", ARTIFACTS["eval"], ARTIFACTS["wandb"], ARTIFACTS["checkpoints"])


def find_all_runs(root: Path | str) -> list[RunDir]:
    """Every run dir under ``root`` (``root`` itself included), a sweep's jobs in job order;
    archived records (``archive/``) and evaluation outputs (``eval/``) are not runs, nor are
    hidden folders. A folder reached again through a symlink is read once (a link to a parent
    made an endless walk). One ``scandir`` per folder, no other system call per entry: listing
    10,000 runs costs little more than reading their status.json."""
    root = Path(root)
    if not root.exists():  # a typo in a path must not read as "no runs"
        raise FileNotFoundError(f"{root} does not exist")
    found: list[RunDir] = []
    _walk(os.fspath(root), found, set())
    return found


def _walk(folder: str, found: list[RunDir], seen: set[tuple[int, int]]) -> None:
    try:
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            return
        seen.add((info.st_dev, info.st_ino))
        with os.scandir(folder) as listing:
            entries = list(listing)
    except OSError:  # not a folder (a file given as root), or unreadable: no runs there
        return
    files = {entry.name for entry in entries if entry.is_file()}  # d_type: no system call
    if ARTIFACTS["status"] in files or ARTIFACTS["config"] in files or (
            any(entry.name == ".hydra" for entry in entries)
            and os.path.isfile(os.path.join(folder, HYDRA_CONFIG))):
        found.append(RunDir(folder))
        return
    children = [entry for entry in entries if entry.name not in NOT_RUNS
                and not entry.name.startswith(".") and entry.is_dir()]
    for child in sorted(children, key=lambda entry: job_key(entry.name)):
        _walk(child.path, found, seen)
