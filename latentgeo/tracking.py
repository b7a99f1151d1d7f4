"""Sinks for metrics besides the run record: wandb (offline by default) and stdout.

wandb never decides whether a run succeeds: if it cannot start we warn and carry on with the
local records; ``finish`` is always called, with exit code 1 when the run failed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def wandb_run_id(run_dir: Path) -> str:
    """Stable id from the run dir: a resumed or requeued job continues the same wandb run."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


class WandbSink:
    """Logs the same metric names as metrics.jsonl to wandb."""

    def __init__(self, run: Any) -> None:
        self.run = run

    @classmethod
    def start(
        cls,
        run_dir: Path,
        mode: str,
        project: str,
        entity: str | None,
        group: str | None,
        job_type: str,
        tags: list[str],
        config: dict[str, Any],
        init_timeout: float,
    ) -> WandbSink | None:
        """Start wandb, or warn and return None (local records only)."""
        os.environ.setdefault("WANDB_START_METHOD", "thread")  # older wandb releases read it
        try:
            import wandb

            run = wandb.init(
                project=project,
                entity=entity,
                group=group,
                job_type=job_type,
                tags=tags,
                config=config,
                dir=str(run_dir),
                id=wandb_run_id(run_dir),
                name=Path(run_dir).name,
                resume="allow",
                mode=mode,
                settings=wandb.Settings(init_timeout=init_timeout, x_service_wait=init_timeout),
            )
        except Exception as error:  # noqa: BLE001 - wandb must never stop a run
            warnings.warn(f"wandb could not start ({type(error).__name__}: {error}); "
                          f"continuing with local records in {run_dir}", stacklevel=2)
            return None
        return cls(run)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        self.run.log(scalars, step=step)

    def log_histograms(self, arrays: dict[str, np.ndarray], step: int) -> None:
        import wandb

        self.run.log({k: wandb.Histogram(v) for k, v in arrays.items()}, step=step)

    def finish(self, exit_code: int) -> None:
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as error:  # noqa: BLE001
            warnings.warn(f"wandb finish failed: {error}", stacklevel=2)
