"""``make demo`` (latentgeo.demo): its presets, its table and its one-line verdict (the runs
themselves are the findings tier's BE module, tests/findings/test_findings_be.py)."""

from __future__ import annotations

from latentgeo import demo
from latentgeo.config import to_typed
from latentgeo.records import RunDir, atomic_write_json, atomic_write_text
from tests.conftest import compose_cfg


def summary(accuracy: float, same: float) -> dict:
    return {"test/accuracy": accuracy, "train/same_encoding_fraction": same,
            "test/mahalanobis/auroc_exact": 0.78, "test/mahalanobis/auroc": 0.786}


def test_demo_presets_are_the_ablation_where_the_encoding_emerges():
    cfg = to_typed(compose_cfg(["experiment=demo"]))
    assert (cfg.model.name, list(cfg.model.widths), cfg.dataset.name) == ("mlp", [256, 128],
                                                                          "fashion_mnist")
    assert cfg.dataset.train_subset.size_per_class == 500
    assert (cfg.head.penultimate_nodes, cfg.trainer.batch_size, cfg.trainer.epochs) == (8, 64, 200)
    assert (cfg.head.gamma_start, cfg.head.gamma_factor, cfg.head.gamma_max) == (0.1, 1.05, 500)
    digits = to_typed(compose_cfg(["experiment=demo_digits"]))
    assert (digits.dataset.name, digits.dataset.image_size, digits.trainer.epochs) == ("digits",
                                                                                       8, 600)
    assert digits.dataset.train_subset.size_per_class is None


def test_table_prints_the_exact_auroc_and_marks_bes_estimate():
    rows = [("bin_enc", "ok", summary(0.84, 0.9996), "runs/0"),
            ("no_pen", "failed", {}, "runs/3")]
    text = demo.table(rows)
    header = text.splitlines()[0].split()
    assert header[:2] == ["head", "test"] and "AUROC" in header and "BE-101pt" in header
    assert "0.7800" in text and "0.7860" in text and "failed" in text
    assert "BE's 101-point estimate" in demo.FOOTNOTE


def test_verdict_says_whether_the_binary_encoding_emerged():
    rows = [("bin_enc", "ok", summary(0.8402, 0.9996), "0"),
            ("no_pen", "ok", summary(0.8450, 0.004), "3")]
    line = demo.verdict(rows)
    assert line.startswith("Result: the binary encoding emerged") and "0.48 points below" in line
    too_far = [("bin_enc", "ok", summary(0.82, 0.9996), "0"), rows[1]]
    assert "NOT reproduced" in demo.verdict(too_far)
    not_binary = [("bin_enc", "ok", summary(0.845, 0.90), "0"), rows[1]]
    assert "NOT reproduced" in demo.verdict(not_binary)
    assert "incomplete" in demo.verdict(rows[1:])


def test_a_blank_cell_of_a_finished_run_says_why(tmp_path):
    """Digits are easy: with a handful of test errors the AUROC is undefined, and the table
    says so under the row instead of leaving an unexplained '-'."""
    run = RunDir(tmp_path / "3")
    values = {**summary(0.97, 0.004), "test/mahalanobis/num_classes_used": 10,
              "test/mahalanobis/num_correct_test": 350, "test/mahalanobis/num_wrong_test": 0}
    del values["test/mahalanobis/auroc_exact"], values["test/mahalanobis/auroc"]
    atomic_write_json(run.artifact("summary"), values)
    atomic_write_text(run.artifact("config"), "head:\n  name: no_pen\n")
    text = demo.table([("no_pen", "ok", values, str(run.dir))])
    assert ("no_pen AUROC, AUROC BE-101pt -: AUROC undefined: no class has more than 2 "
            "misclassified test samples") in text.splitlines()
