"""The sweep presets of conf/sweep/: each composes into the setup of its paper and runs, all of
its variants, at toy scale (``+sweep_scale=tiny``). One LR per variant, except binenc_cifar10,
whose two LRs check that aggregate picks the better one."""

from __future__ import annotations

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from latentgeo import selection
from latentgeo.build import check_data
from latentgeo.checks import validate
from latentgeo.config import to_typed
from latentgeo.records import read_metrics
from tests.conftest import run_cli
from tests.test_launchers import compose_all, compose_cfg_with_hydra, only_sweep_dir, summary_line

# the sweep presets of the binary-encoding paper (conf/sweep/); other presets test themselves
PRESETS = ["binenc_cifar10", "binenc_cifar100", "binenc_demo"]
BE_VARIANTS = {  # BE §1.6: the 7 variants of run_slurm_jobs.sh -> (head, P or None, dropout)
    "bin_enc": ("bin_enc", None, False), "bin_enc_p512": ("bin_enc", 512, False),
    "no_pen": ("no_pen", None, False), "no_pen_dropout": ("no_pen", None, True),
    "lin_pen": ("lin_pen", None, False), "lin_pen_dropout": ("lin_pen", None, True),
    "nonlin_pen": ("nonlin_pen", None, False),
}


def preset_jobs(preset: str, extra: tuple[str, ...] = ()) -> list[list[str]]:
    """Every job's overrides, expanded as Hydra's basic sweeper does."""
    cfg = compose_cfg_with_hydra([f"+sweep={preset}", *extra])
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    overrides = OverridesParser.create().parse_overrides(
        [*params, f"+sweep={preset}", *extra])
    (batch,) = BasicSweeper.split_arguments(overrides, None)
    return batch


def job_value(overrides: list[str], key: str) -> str:
    return next(o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}="))


@pytest.mark.parametrize("preset", ["binenc_cifar10", "binenc_cifar100"])
def test_binenc_presets_expand_to_bes_63_jobs(preset):
    nodes, classes = {"binenc_cifar10": (6, 10), "binenc_cifar100": (64, 100)}[preset]
    jobs = preset_jobs(preset)
    assert len(jobs) == 63
    assert {(job_value(j, "variant"), float(job_value(j, "optimizer.lr")),
             int(job_value(j, "trainer.seed"))) for j in jobs} == {
        (v, lr, s) for v in BE_VARIANTS for lr in (1e-4, 2e-4, 4e-4) for s in (0, 1, 2)}
    # jobs differ only in variant, LR and seed: compose one job per variant (0.5 s each), the
    # last one of each so that its LR and seed overrides are checked to land too
    last_of_variant = {job_value(j, "variant"): j for j in jobs}
    for variant, cfg in zip(last_of_variant, compose_all(list(last_of_variant.values()))):
        validate(cfg)
        check_data(to_typed(cfg), classes)
        head, p, dropout = BE_VARIANTS[variant]
        assert (cfg.head.name, cfg.head.dropout_penultimate) == (head, dropout)
        if head != "no_pen":
            assert cfg.head.penultimate_nodes == (p or nodes)
        assert (cfg.optimizer.lr, cfg.trainer.seed) == (4e-4, 2)
        assert cfg.dataset.name == preset.split("_")[1] and cfg.dataset.augment
        assert (cfg.model.name, cfg.model.activation) == ("resnet18", "silu")
        assert (cfg.trainer.epochs, cfg.trainer.batch_size) == (800, 128)
        assert (cfg.optimizer.name, cfg.optimizer.weight_decay) == ("adamw", 5e-4)
        assert (cfg.head.gamma_start, cfg.head.gamma_factor, cfg.head.gamma_max) == (
            0.01, 1.05, 1e6)
        assert (cfg.schedule.name, cfg.schedule.start_epoch, cfg.schedule.step_size,
                cfg.schedule.factor, cfg.schedule.keep_output_lr) == ("step", 250, 50, 0.5, True)
        assert (cfg.metrics.every, cfg.logger.name) == (50, "wandb")


def test_binenc_demo_preset_is_the_notebook_setup():
    jobs = preset_jobs("binenc_demo")
    configs = compose_all(jobs)
    assert sorted(c.head.name for c in configs) == ["bin_enc", "lin_pen", "no_pen", "nonlin_pen"]
    for cfg in configs:
        validate(cfg)
        check_data(to_typed(cfg), 10)
        assert (cfg.dataset.name, cfg.trainer.epochs, cfg.optimizer.lr) == ("cifar10", 50, 5e-4)
        assert (cfg.head.penultimate_nodes, cfg.head.gamma_factor) == (4, 1.3)
        assert cfg.head.gamma_start * 1.3**50 < cfg.head.gamma_max  # never capped


ONE_LR = ("optimizer.lr=1e-2",)  # a command-line value replaces the sweep's two LRs


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_each_binenc_preset_runs_at_toy_scale(preset, tmp_path):
    outputs = tmp_path / "out"
    lrs = 2 if preset == "binenc_cifar10" else 1
    extra = ("+sweep_scale=tiny", *(ONE_LR if lrs == 1 else ()))
    jobs = preset_jobs(preset, extra)
    result = run_cli(["-m", f"+sweep={preset}", *extra],
                     env={"LATENTGEO_OUTPUT": str(outputs)}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary_line(len(jobs), 0, 0) in result.stdout
    sweep_dir = only_sweep_dir(outputs)
    variants = {job_value(job, "variant") for job in jobs}
    assert variants == {job_value(job, "variant") for job in preset_jobs(preset)}  # all of them
    assert len(jobs) == lrs * len(variants)  # one seed
    runs = selection.sweep_runs(sweep_dir)
    assert [r.state for r in runs] == ["ok"] * len(jobs)
    assert {r.flat_config()["dataset.name"] for r in runs} == {"synthetic"}
    heads = {run.name: (run.flat_config()["head.name"],
                        run.flat_config()["head.dropout_penultimate"]) for run in runs}
    for job, run in zip(jobs, runs):  # job n ran job n's variant at toy scale
        head, _, dropout = BE_VARIANTS[job_value(job, "variant")]
        assert heads[run.name] == (head, dropout) and run.summary()["epochs"] == 2
    result = selection.aggregate(runs, sweep_dir=sweep_dir)
    assert len(result.variants) == len(variants)
    for variant in result.variants:  # the better LR by final test accuracy
        (chosen,) = variant.selected
        best = max(variant.runs, key=lambda name: (
            next(r for r in runs if r.name == name).summary()["test/accuracy"], -int(name)))
        assert chosen.run == best


# the study presets at toy scale, one LR; the thesis sweeps models × data sets, so its toy run
# narrows both lists by overriding its sweeper params
STUDY_PRESETS = {
    "hyperplanes": ONE_LR,
    "relu_alpha": ONE_LR,
    "thesis": ("hydra.sweeper.params.model='mnistnet,cifarnet'",
               "hydra.sweeper.params.dataset=synthetic", *ONE_LR),
}


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(STUDY_PRESETS))
def test_each_study_preset_runs_at_toy_scale(preset, tmp_path):
    outputs = tmp_path / "out"
    extra = ("+sweep_scale=tiny", *STUDY_PRESETS[preset])
    jobs = preset_jobs(preset, extra)
    result = run_cli(["-m", f"+sweep={preset}", *extra],
                     env={"LATENTGEO_OUTPUT": str(outputs)}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary_line(len(jobs), 0, 0) in result.stdout
    runs = selection.sweep_runs(only_sweep_dir(outputs))
    assert [r.state for r in runs] == ["ok"] * len(jobs)
    for run in runs:
        events = read_metrics(run.dir / "metrics.jsonl")
        last = {k: v for e in events if e["epoch"] == events[-1]["epoch"] for k, v in e.items()}
        if preset == "hyperplanes":  # projections every epoch, re-init at the end
            assert "hyperplanes/net/mean" in last and (run.dir / "reinit.json").is_file()
        elif preset == "relu_alpha":
            assert (run.dir / "alpha.json").is_file()
        else:  # per-block NC1 and DIB
            assert any(k.startswith("test/nc1/") for k in last)
            assert any(k.startswith("dib/vsuff/") for k in last)
