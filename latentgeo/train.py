"""``python -m latentgeo.train [overrides]`` (or ``latentgeo-train``): compose -> validate ->
build -> fit -> record. The command line itself imports no torch: ``--help``, ``--cfg job``,
shell completion and a composition error answer at once; ``latentgeo.training`` (torch, the
models, the data) is imported when a run starts.
"""

from __future__ import annotations

import importlib.resources
import os
import sys
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from hydra_plugins.latentgeo_workstation.workstation_launcher import WorkstationLauncher
from latentgeo import provenance
from latentgeo.config import (
    ConfigError,
    DatasetUnavailable,
    TrainConfig,
    check_sweep_id,
    check_values,
    to_typed,
)
from latentgeo.records import LockHeld, RunDamaged, RunDir, RunFailed
from latentgeo.signals import Interrupted

# Hydra finds launcher plugins by scanning the hydra_plugins namespace on sys.path, which an
# editable install (pip install -e .) does not extend: register ours explicitly.
Plugins.instance().register(WorkstationLauncher)


class JobFailed(CompactHydraException):
    """A sweep job's known failure: Hydra prints its one-line message, not a traceback; the
    failure itself (``__cause__``) tells the sweep summary what happened."""


def train(cfg: DictConfig | TrainConfig, run_dir: Path, group: str | None = None,
          overrides: list[str] | None = None, values_checked: bool = False) -> dict:
    """Run (or resume) one training run into ``run_dir``; returns its summary
    (``latentgeo.training.train_and_record``, imported on first use: it brings torch)."""
    from latentgeo import training  # start-up cost only, not a cycle: see the module docstring

    return training.train_and_record(cfg, run_dir, group, overrides, values_checked)


def reject_bad_values(cfg: DictConfig, run_dir: Path) -> TrainConfig:
    """The composed config, typed, once ``config.check_values`` passed; a bad value is recorded
    ``failed`` in a run dir that holds no record yet (a sweep's summary shows why), then
    raised."""
    try:
        typed = to_typed(cfg)
        check_values(typed)
        return typed
    except ConfigError as error:
        run = RunDir(run_dir)
        if not run.exists():
            run.fail(f"ConfigError: {error}", provenance=provenance.record())
        raise


@hydra.main(version_base=None, config_path="pkg://latentgeo.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    group = Path(hydra_cfg.sweep.dir).name if multirun else None
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        typed = reject_bad_values(cfg, run_dir)  # before torch is imported
        summary = train(typed, run_dir, group, list(hydra_cfg.overrides.task),
                        values_checked=True)
    except (ConfigError, DatasetUnavailable, RunDamaged, LockHeld, RunFailed) as error:
        # a kind of RunFailed (TrainingDiverged) is named, as in the recorded reason
        kind = "" if type(error) is RunFailed or not isinstance(error, RunFailed) else (
            f"{type(error).__name__}: ")
        if multirun:  # the launcher records the failure and finishes the other jobs
            raise JobFailed(f"error: {kind}{error}") from error
        print(f"error: {kind}{error}", file=sys.stderr)
        sys.exit(1 if isinstance(error, RunFailed) else 2)  # a bad input is 2, as before
    except Interrupted as error:
        sys.exit(error.exit_code)
    return summary.get("test/accuracy")


def check_config_dirs(argv: list[str]) -> None:
    """Exit 2 with one line per broken YAML file of a ``--config-dir`` (Hydra would print a
    long PyYAML traceback for it)."""
    dirs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--config-dir", "-cd")]
    dirs += [a.split("=", 1)[1] for a in argv if a.startswith("--config-dir=")]
    problems = []
    for directory in dirs:
        for path in sorted(Path(directory).rglob("*.yaml")):
            try:
                for _ in yaml.parse(path.read_text()):  # syntax only
                    pass
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
                problems.append(f"error: {path}{where}: {getattr(error, 'problem', error)}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(2)


def config_groups() -> dict[str, list[str]]:
    """``conf/``'s groups and their options, read from the package's files (Hydra's own
    ``--help`` deep-copies its config repository once per group: seconds)."""
    root = importlib.resources.files("latentgeo.conf")
    groups: dict[str, list[str]] = {}

    def walk(node, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.is_dir() and not child.name.startswith("__"):
                options = sorted(c.name[:-5] for c in child.iterdir() if c.name.endswith(".yaml"))
                if options:
                    groups[prefix + child.name] = options
                walk(child, prefix + child.name + "/")

    walk(root, "")
    return groups


def app_help() -> str:
    lines = ["python -m latentgeo.train (or latentgeo-train): train an image classifier and "
             "measure its latent geometry.",
             "usage: python -m latentgeo.train [GROUP=OPTION ...] [KEY=VALUE ...] [-m] "
             "[--cfg job] [--hydra-help] [--shell-completion install=bash]",
             "", "== Config groups (conf/) =="]
    lines += [f"{group}: {', '.join(options)}" for group, options in config_groups().items()]
    lines += ["", "--cfg job shows the composed config (with your overrides); every key is in "
              "latentgeo/config.py; -m runs a sweep (comma-separated values); --hydra-help "
              "lists Hydra's own flags. README.md has the rest."]
    return "\n".join(lines)


def cli() -> None:
    """The console script ``latentgeo-train`` and ``python -m latentgeo.train``."""
    argv = sys.argv[1:]
    if "--help" in argv or "-h" in argv:
        print(app_help())
        return
    check_config_dirs(argv)
    if os.environ.get("LATENTGEO_SWEEP_ID"):  # one line here; Hydra's resolver error is long
        try:
            check_sweep_id(os.environ["LATENTGEO_SWEEP_ID"])
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
