"""``RunDir``: one run directory, read and written only through it (ARCHITECTURE.md, "One
owner per contract"); the errors of a run that failed for a stated reason or whose files
cannot be trusted.

Foundation layer: the standard library (omegaconf, imported where config.yaml is read).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from latentgeo.records.io import (
    DISK_FULL,
    PARSED,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    flatten,
    jsonable,
    now,
    read_json_or_none,
    read_metrics,
    rewrite_in_place,
    writing,
)
from latentgeo.records.layout import (
    ARTIFACTS,
    BEST_KEY,
    HYDRA_CONFIG,
    WANDB_IDENTITY,
    read_config_twin,
    write_config_twin,
)
from latentgeo.records.lock import LockHeld, exclusive_lock, lock_holder
from latentgeo.summaries import never_learned


class RunFailed(RuntimeError):
    """A run stopped for a reason its record states in full (a diverging loss, a full disk):
    the command line prints the message as one line, without a traceback."""


class RunDamaged(RuntimeError):
    """A run dir's files cannot be trusted (a damaged checkpoint, events that contradict it);
    the message says which file and how to recover."""


class RunDir:
    """One run directory (ARCHITECTURE.md, "One owner per contract"); the only code that
    knows its file names and formats. Readers use ``config()``, ``status()``, ``events()``,
    ``summary()``, ``artifact(name)`` and ``checkpoint(name)``; the training process writes
    through ``start``, ``log``, ``set_epoch``, ``finish_ok`` and ``fail``. Reads are cached
    per instance: make a new ``RunDir`` to see later changes."""

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
