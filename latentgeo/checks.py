"""``validate``: every check of a config, once per run, before anything is built.

The checks live next to what they check: ``config.check_values`` (ranges, combinations, the
schedule vocabulary; no component, so the command line runs it before torch is imported),
``build.check_names`` (the registries' names) and ``families.check_metrics`` (each metric
family's node against its options). ``build.check_data`` is the one check that needs the
loaded data. Engine layer: it reads the metric families' registry.
"""

from __future__ import annotations

from omegaconf import DictConfig

from latentgeo.build import check_names
from latentgeo.config import TrainConfig, check_values, to_typed
from latentgeo.families import check_metrics


def validate(cfg: TrainConfig | DictConfig, values_checked: bool = False) -> None:
    """Raise ConfigError (naming the key, the bad value and what is allowed) for the first bad
    value; ``values_checked``: ``check_values`` already ran (the command line's early check)."""
    cfg = to_typed(cfg)
    if not values_checked:
        check_values(cfg)
    check_names(cfg)
    check_metrics(cfg)
