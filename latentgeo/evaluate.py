"""``python -m latentgeo.evaluate RUN_DIR [checkpoint=last|init|epoch_XXXX|all] [overrides]``

Rebuilds a run's model from its ``config.yaml``, loads a checkpoint and runs the metric
families on it: the run's own (every family whose ``when`` is not ``off``), or those chosen by
overrides such as ``metrics=all`` or ``metrics.ood.dataset=svhn``. Prints a table and writes
``RUN_DIR/eval/<checkpoint>.json``: a flat dict of the same names as metrics.jsonl plus
``epoch`` and ``checkpoint``; the files a family writes (reinit.json, penultimate.npz, ...) go
to ``RUN_DIR/eval/<checkpoint>/``. ``checkpoint=all`` evaluates init, every snapshot and last.
The results also reach the run's summary as ``eval/<checkpoint>/<metric>`` (summary.json and,
for a run that logs to wandb, its wandb run's summary), and, with wandb, a run of its own
(``job_type=evaluate``, same group, the metrics over the evaluated epochs). The training record
(metrics.jsonl, status.json, checkpoints, its summary keys) is never changed; on a run that is
still going the checkpoint read is a complete one (checkpoints are written by atomic rename)
and the summary is left alone (it is written when the run ends).

Overrides: ``key=value`` for any config key (``dataset.root=/data``), and ``metrics=<option>``
or ``trainer=<option>`` for a whole group of ``conf/``. Model, head and data must stay those
the checkpoint was trained with.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from latentgeo import families
from latentgeo.build import load_run, run_config
from latentgeo.checks import validate
from latentgeo.config import ConfigError, Schedule, compose, upgrade
from latentgeo.data import DatasetUnavailable
from latentgeo.records import DISK_FULL, LockHeld, RunDamaged, RunDir, is_run_dir, write_problem
from latentgeo.runtime import load_checkpoint
from latentgeo.tracking import add_to_summary, log_evaluation

GROUP_OVERRIDES = ("metrics", "trainer")  # whole conf/ groups evaluate may swap
FIXED_GROUPS = ("model", "head", "dataset", "activation")  # what the weights were trained as
PER_LAYER = ("hyperplanes/", "init_distance/", "reinit/", "alpha/", "dib/")


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``config`` (a run's config.yaml) with Hydra-style overrides: ``metrics=all`` swaps in
    that option of ``conf/metrics``, ``a.b=value`` sets one key."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    groups = [o for o in parsed if "." not in o.key_or_group]
    keys = [o for o in parsed if "." in o.key_or_group]
    tree = OmegaConf.create(config)
    # a run recorded before a family existed can switch it on (metrics.neural_collapse.when=
    # every): the family nodes it lacks come from today's conf/metrics/default.yaml (new
    # families are off there, so the run's own metrics stay what they were)
    today = compose()["metrics"]
    for name in today:
        if name not in tree.metrics:
            tree.metrics[name] = today[name]
    for override in groups:
        group = override.key_or_group
        if group not in GROUP_OVERRIDES:
            fixed = f"; {group} is fixed by the checkpoint" if group in FIXED_GROUPS else ""
            raise ConfigError(f"{override.input_line}: evaluate swaps only the groups "
                              f"{list(GROUP_OVERRIDES)}; use key=value for single keys{fixed}")
        option = compose([override.input_line])
        tree[group] = option[group]
    for override in keys:
        group = override.key_or_group.split(".")[0]
        if group in ("model", "head", "activation"):
            raise ConfigError(f"{override.input_line}: {group} is fixed by the checkpoint")
        check_key(tree, override.key_or_group, override.input_line)
        OmegaConf.update(tree, override.key_or_group, override.value(), force_add=False)
    return OmegaConf.to_container(tree, resolve=True)  # type: ignore[return-value]


def check_key(tree, key: str, line: str) -> None:
    """ConfigError naming the first part of ``key`` the run's config lacks, and what it has."""
    node, path = tree, []
    for part in key.split("."):
        if not OmegaConf.is_dict(node) or part not in node:
            where = ".".join(path) or "the config"
            allowed = sorted(node) if OmegaConf.is_dict(node) else f"a value, {node!r}"
            raise ConfigError(f"{line}: {'.'.join([*path, part])} is not a key of the run's "
                              f"config; {where} has {allowed}")
        node, path = node[part], [*path, part]


def scheduled(cfg) -> list[families.Family]:
    """The families the config does not switch off, in registry order."""
    return [f for f in families.FAMILIES.values() if families.schedule(cfg, f) != Schedule()]


def evaluate_checkpoint(run: RunDir, checkpoint: str, cfg, device: str | None = None
                        ) -> dict[str, Any]:
    """The families of ``cfg`` on ``checkpoint``; returns the flat dict written to
    ``eval/<checkpoint>.json``."""
    loaded = load_run(run, checkpoint, device, with_ood=True, cfg=cfg)
    init_state = None
    if run.checkpoint("init").is_file():
        init_state = load_checkpoint(run.checkpoint("init"), loaded.device)["model"]
    out = RunDir(run.artifact("eval") / checkpoint)  # files the families write
    out.dir.mkdir(parents=True, exist_ok=True)
    point = families.Point(cfg, loaded.model, loaded.epoch, True, loaded.data, loaded.loaders,
                           init_state=init_state, run=out, checkpoints=run,
                           event={"epoch": loaded.epoch, "checkpoint": checkpoint})
    tic = time.perf_counter()
    families.measure(point, scheduled(cfg))
    point.event["time/evaluate_s"] = time.perf_counter() - tic
    run.write_evaluation(checkpoint, point.event)
    return point.event


def summary_entries(results: list[dict[str, Any]]) -> dict[str, Any]:
    """``eval/<checkpoint>/<metric>``: the names ``results.load_runs`` gives them too."""
    return {f"eval/{values['checkpoint']}/{key}": value for values in results
            for key, value in values.items() if key != "checkpoint"}


def record_results(run: RunDir, cfg, results: list[dict[str, Any]]) -> None:
    """Evaluated checkpoints into wandb (a ``job_type=evaluate`` run) and into the run's
    summary, which needs the run dir's owner lock: a run still going keeps its summary."""
    if cfg.logger.name == "wandb":
        run_id = log_evaluation(run, cfg, results)
        if run_id:
            print(f"logged to wandb run {run_id} (job_type=evaluate)")
    try:
        with run.owned("python -m latentgeo.evaluate (summary)"):
            where = add_to_summary(run, cfg, summary_entries(results))
    except LockHeld as error:  # a training (or an analysis) is writing the run dir
        print(f"summary not changed (the results are in eval/): {error}")
        return
    print(f"added to the summary in {' and '.join(where)}" if where else
          f"summary not changed (the results are in eval/): the run is {run.shown_state}; "
          "a run's summary is written when it ends ok")


def format_values(values: dict[str, Any]) -> str:
    """Scalar metrics one per line; per-layer families only counted (they are in the file)."""
    lines, per_layer = [], 0
    for key in sorted(values):
        value = values[key]
        if key.startswith(PER_LAYER) and key.count("/") >= 2:
            per_layer += 1
            continue
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        lines.append(f"  {key:<44} {text}")
    if per_layer:
        lines.append(f"  (+ {per_layer} per-layer values in the file)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latentgeo.evaluate",
                                     description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*",
                        help="checkpoint=last|init|epoch_XXXX|all, metrics=<option>, key=value")
    parser.add_argument("--device", default=None, help="default: the run's trainer.device")
    args = parser.parse_args(argv)
    checkpoint = "last"
    overrides = []
    for item in args.overrides:
        if item.startswith("checkpoint="):
            checkpoint = item.split("=", 1)[1]
        else:
            overrides.append(item)
    run = RunDir(args.run_dir)
    try:
        if not is_run_dir(run.dir) or not run.artifact("config").is_file():
            raise FileNotFoundError(f"{run.dir} is not a run dir (no config.yaml)")
        available = run.checkpoint_names()
        names = available if checkpoint == "all" else [checkpoint]
        missing = [name for name in names if name not in available]
        if missing or not names:
            raise FileNotFoundError(f"checkpoint={checkpoint}: not in {run.checkpoints}; this "
                                    f"run has {available or 'no checkpoints'} (or all)")
        cfg = run_config(run, apply_overrides(upgrade(run.config()), overrides))
        validate(cfg)
        with run.owned("python -m latentgeo.evaluate", scope="eval"):
            results = []
            for name in names:
                results.append(evaluate_checkpoint(run, name, cfg, args.device))
                print(f"{run.dir} {name} (epoch {results[-1]['epoch']}):")
                print(format_values(results[-1]))
                print(f"wrote {run.artifact('eval') / (name + '.json')}")
            record_results(run, cfg, results)
    except (ConfigError, DatasetUnavailable, FileNotFoundError, ValueError, LockHeld,
            RunDamaged) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        print(f"error: {write_problem(error, run.dir)}; the training record is unchanged",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
