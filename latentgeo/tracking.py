"""Sinks for metrics besides the run record: wandb (offline by default) and stdout.

wandb never decides whether a run succeeds: if it cannot start we warn and carry on with the
local records; ``finish`` is always called, with exit code 1 when the run failed.
"""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def wandb_run_id(stored: str | None) -> str:
    """The run's wandb id: the one its status.json stores (a resumed, requeued or moved run
    continues the same wandb run), else a new random one — never a path, which two users or
    a moved outputs folder would share or change."""
    return stored or uuid.uuid4().hex[:16]


def short_number(value: float) -> str:
    """2e-4, 1.5e-3, 0.1: learning rates as a person writes them."""
    if value == 0 or 1e-2 <= abs(value) < 1e3:
        return f"{value:g}"
    mantissa, exponent = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


NAMING_GROUPS = ("variant", "corruption", "experiment")  # what tells a sweep's variants apart


def display_name(head: str, lr: float | str, seed: int, overrides: list[str],
                 name: str | None = None) -> str:
    """``bin_enc-lr2e-4-s1``: the readable name (or the head), the variant options chosen on
    the command line (``variant=…``, ``corruption=…``, ``experiment=…``), the LR, the seed."""
    chosen = [value for key, _, value in (o.partition("=") for o in overrides)
              if key.lstrip("+~") in NAMING_GROUPS and value]
    parts = [name or head, *chosen]
    lr_text = short_number(lr) if isinstance(lr, (int, float)) else str(lr)
    return "-".join([*dict.fromkeys(parts), f"lr{lr_text}", f"s{seed}"])


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
        run_id: str,
        name: str,
    ) -> WandbSink | None:
        """Start wandb, or warn and return None (local records only). Charts use ``epoch`` as
        their x-axis; the console gets no summary footer."""
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
                id=run_id,
                name=name,
                resume="allow",
                mode=mode,
                settings=wandb.Settings(init_timeout=init_timeout, x_service_wait=init_timeout,
                                        quiet=True),
            )
            run.define_metric("epoch")
            run.define_metric("*", step_metric="epoch")
        except Exception as error:  # noqa: BLE001 - wandb must never stop a run
            warnings.warn(f"wandb could not start ({type(error).__name__}: {error}); "
                          f"continuing with local records in {run_dir}", stacklevel=2)
            return None
        return cls(run)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        self.run.log(scalars, step=step)

    def log_images(self, paths: dict[str, Path], step: int) -> None:
        """The figures a run wrote (alpha.png, reinit.png, lr_find.png), as wandb images."""
        import wandb

        found = {f"figures/{name}": wandb.Image(str(path)) for name, path in paths.items()
                 if Path(path).is_file()}
        if found:
            self.run.log(found, step=step)

    def log_histograms(self, arrays: dict[str, np.ndarray], step: int) -> None:
        import wandb

        self.run.log({k: wandb.Histogram(v) for k, v in arrays.items()}, step=step)

    def finish(self, exit_code: int) -> None:
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as error:  # noqa: BLE001
            warnings.warn(f"wandb finish failed: {error}", stacklevel=2)
