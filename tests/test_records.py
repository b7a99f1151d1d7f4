"""Run records: atomic writes, summary, secrets, truncation after a crash."""

from __future__ import annotations

import json

from latentgeo.provenance import scrub_secrets
from latentgeo.records import RunDir, atomic_write_json, read_metrics
from latentgeo.summaries import summarize


def test_summary_takes_last_values_best_accuracy_and_convergence():
    events = [
        {"epoch": 1, "step": 10, "train/accuracy": 0.5, "test/accuracy": 0.4, "lr": 1.0},
        {"epoch": 2, "step": 20, "train/accuracy": 0.9995, "test/accuracy": 0.7},
        {"epoch": 3, "step": 30, "train/accuracy": 1.0, "test/accuracy": 0.6, "lr": 0.5},
    ]
    summary = summarize(events)
    assert summary["test/accuracy"] == 0.6
    assert summary["lr"] == 0.5
    assert summary["best/test/accuracy"] == 0.7 and summary["best_epoch"] == 2
    assert summary["convergence_epoch"] == 2
    assert summary["epochs"] == 3
    assert summarize(events[:1])["convergence_epoch"] is None  # BE crashes here; we don't


def test_nan_is_written_as_null_and_atomic_write_leaves_no_temp(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": float("nan"), "y": [1.0, float("inf")]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": None, "y": [1.0, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_secrets_are_redacted():
    env = {"WANDB_API_KEY": "abcd1234secret", "HOME": "/root"}
    config = {"logger": {"project": "p", "api_key": "xyz", "note": "abcd1234secret"},
              "root": "/root"}
    scrubbed = scrub_secrets(config, env)
    assert scrubbed == {"logger": {"project": "p", "api_key": "<redacted>",
                                   "note": "<redacted>"}, "root": "/root"}


def test_resume_truncates_events_written_after_the_checkpoint(tmp_path):
    record = RunDir(tmp_path)
    record.start("a: 1\n")
    for epoch in (1, 2, 3):
        record.log({"epoch": epoch, "test/accuracy": 0.1 * epoch})
    with open(record.artifact("metrics"), "a") as f:
        f.write('{"epoch": 4, "test/acc')  # torn line from a crash
    assert [e["epoch"] for e in read_metrics(record.artifact("metrics"))] == [1, 2, 3]
    RunDir(tmp_path).start("a: 1\n", resumed_epoch=2)
    assert [e["epoch"] for e in read_metrics(record.artifact("metrics"))] == [1, 2]


def test_failed_run_is_recorded_failed_and_archive_keeps_the_old_record(tmp_path):
    record = RunDir(tmp_path)
    record.start("a: 1\n")
    record.fail("ValueError: boom")
    status = json.loads(record.artifact("status").read_text())
    assert status["state"] == "failed" and status["reason"] == "ValueError: boom"
    archived = RunDir(tmp_path).archive()
    assert (archived / "status.json").is_file() and not record.artifact("status").exists()
