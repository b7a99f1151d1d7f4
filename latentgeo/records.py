"""The run directory (DESIGN.md contract): atomic writes, status, JSONL metrics, summary.

No third-party imports: train, aggregate, report and tests all read these files.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd)", re.IGNORECASE)
RECORD_FILES = ("config.yaml", "status.json", "metrics.jsonl", "summary.json", "checkpoints",
                "wandb", "penultimate.npz", "hyperplanes.json", "alpha.json", "alpha.png",
                "reinit.json", "reinit.png", "lr_find.json", "lr_find.png", "linearize.json")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def scrub_secrets(obj: Any, environ: dict[str, str] | None = None) -> Any:
    """Redact values under secret-looking keys and any value equal to a secret env variable."""
    environ = os.environ if environ is None else environ
    secrets = {v for k, v in environ.items() if SECRET_KEY.search(k) and len(v) >= 4}

    def scrub(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: scrub(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v, key) for v in value]
        if isinstance(value, str) and (value in secrets or (SECRET_KEY.search(key) and value)):
            return "<redacted>"
        return value

    return scrub(obj)


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {"python": platform.python_version()}
    for package in ("latentgeo", "torch", "torchvision", "numpy", "scikit-learn", "hydra-core",
                    "wandb"):
        try:
            found[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return found


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Events of a metrics.jsonl; a torn last line (crash mid-write) is skipped."""
    events = []
    if not Path(path).is_file():
        return events
    with open(path) as f:
        for line in f:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


class RunRecord:
    """One run directory: ``config.yaml status.json metrics.jsonl summary.json checkpoints/``."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        self.status_path = self.dir / "status.json"
        self.metrics_path = self.dir / "metrics.jsonl"
        self.summary_path = self.dir / "summary.json"
        self.config_path = self.dir / "config.yaml"
        self.checkpoints = self.dir / "checkpoints"
        self.last_checkpoint = self.checkpoints / "last.pt"
        self._status: dict[str, Any] = {}

    @property
    def status(self) -> dict[str, Any]:
        if not self._status and self.status_path.is_file():
            self._status = read_json(self.status_path)
        return self._status

    @property
    def state(self) -> str | None:
        return self.status.get("state")

    def exists(self) -> bool:
        return self.status_path.is_file() or self.last_checkpoint.is_file()

    def archive(self) -> Path:
        """Move the existing record aside (``archive/<timestamp>/``) instead of deleting it."""
        target = self.dir / "archive" / dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        target.mkdir(parents=True)
        for name in RECORD_FILES:
            if (self.dir / name).exists():
                shutil.move(str(self.dir / name), str(target / name))
        self._status = {}
        return target

    def start(self, config_yaml: str, resumed_epoch: int = 0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(exist_ok=True)
        atomic_write_text(self.config_path, config_yaml)
        started = self.status.get("started") if resumed_epoch else None
        self._status = {
            "state": "running",
            "reason": None,
            "started": started or now(),
            "ended": None,
            "epoch": resumed_epoch,
            "git_sha": git_sha(),
            "versions": versions(),
        }
        if resumed_epoch:
            self._status["resumed_at"] = now()
        atomic_write_json(self.status_path, self._status)
        self.truncate_metrics(after_epoch=resumed_epoch)

    def set_epoch(self, epoch: int) -> None:
        self._status["epoch"] = epoch
        atomic_write_json(self.status_path, self._status)

    def log(self, event: dict[str, Any]) -> None:
        """Append one event; flushed and fsynced so a crash loses at most a torn last line."""
        line = json.dumps(jsonable(event), sort_keys=False)
        with open(self.metrics_path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, after_epoch: int) -> None:
        """Drop events after ``after_epoch`` (written before a crash, redone on resume)."""
        if not self.metrics_path.is_file():
            return
        kept = [e for e in read_metrics(self.metrics_path) if e.get("epoch", 0) <= after_epoch]
        atomic_write_text(self.metrics_path, "".join(json.dumps(e) + "\n" for e in kept))

    def finish_ok(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_path, summary)
        self._status.update(state="ok", reason=None, ended=now())
        atomic_write_json(self.status_path, self._status)

    def fail(self, reason: str, state: str = "failed") -> None:
        if not self._status:
            self._status = {"started": now(), "epoch": 0, "git_sha": git_sha(),
                            "versions": versions()}
        self._status.update(state=state, reason=reason, ended=now())
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.status_path, self._status)


CONVERGED_ACCURACY = 0.999  # BE: first evaluated epoch with train accuracy above this


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Last value of every metric, best/final test accuracy and the convergence epoch.

    ``convergence_epoch`` is None when train accuracy never exceeds 0.999 (BE crashes there).
    """
    summary: dict[str, Any] = {}
    best, best_epoch, converged = None, None, None
    for event in events:
        for key, value in event.items():
            if value is not None:
                summary[key] = value
        accuracy = event.get("test/accuracy")
        if accuracy is not None and (best is None or accuracy > best):
            best, best_epoch = accuracy, event.get("epoch")
        train_accuracy = event.get("train/accuracy")
        if converged is None and train_accuracy is not None and train_accuracy > CONVERGED_ACCURACY:
            converged = event.get("epoch")
    summary.pop("step", None)
    summary["epochs"] = summary.pop("epoch", 0)
    summary["best/test/accuracy"] = best
    summary["best_epoch"] = best_epoch
    summary["convergence_epoch"] = converged
    return summary
