"""The run dir's layout: its file names (``ARTIFACTS``, the one list of them), the states and
keys of status.json that code names, what makes a folder a run dir, checkpoint names, and
config.json, the fast twin of config.yaml.

Foundation layer: the standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from latentgeo.records.io import PARSED, atomic_write_text

# status.json keys that keep a run's wandb run (id, display name, group) across resumes,
# requeues, a moved outputs folder, and for the post-hoc commands (``latentgeo.tracking``)
WANDB_IDENTITY = ("wandb_id", "wandb_name", "wandb_group")

# Every file a run dir can hold, by the name code uses for it: the one list of file names.
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
