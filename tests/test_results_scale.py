"""The results commands at scale, without timing anything: the files each command parses
(``records.PARSED``, counted by the run-dir readers) grow at most one per run, listing parses
neither configs nor events, a second call over unchanged runs is served by the caches, and a
run that resumes and changes is read again (never a stale number)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from latentgeo import aggregate, records, results, results_cache, runs, selection
from latentgeo.records import PARSED, RunDir
from latentgeo.summaries import summarize
from latentgeo.synthetic_sweep import write_sweep

EPOCHS = 4  # the events' length does not change how many files are parsed
SIZES = (100, 400)


@pytest.fixture(autouse=True)
def private_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def parsed(command) -> dict[str, int]:
    """The files (by name) the command parses."""
    PARSED.clear()
    command()
    return dict(PARSED)


def quiet(main, argv: list[str]):
    return lambda: main(argv)


@pytest.mark.parametrize("size", SIZES)
def test_each_command_parses_each_file_at_most_once_per_run(tmp_path: Path, size: int,
                                                            capsys) -> None:
    sweep = write_sweep(tmp_path / "sweep", size, EPOCHS)
    out = tmp_path / "out"
    listing = parsed(quiet(runs.main, [str(sweep)]))
    assert listing == {"status.json": size}  # never a config or metrics file
    assert len(capsys.readouterr().out.splitlines()) == size + 2  # header, runs, counts

    first = parsed(quiet(aggregate.main, [str(sweep), "--out", str(out), "--no-wandb"]))
    assert first.pop("config.json") == size and "config.yaml" not in first  # the twin
    assert all(count <= size for count in first.values()), first
    assert first["metrics.jsonl"] == size  # history.csv, through the columnar cache
    second = parsed(quiet(aggregate.main, [str(sweep), "--out", str(out), "--no-wandb"]))
    assert second == {}  # nothing changed: nothing parsed at all

    loaded = parsed(lambda: results.load_runs(sweep))
    assert loaded == {}  # aggregate's reads serve load_runs too
    history = parsed(lambda: results.load_history(sweep, metrics=["test/accuracy"]))
    assert history == {}  # and its history
    capsys.readouterr()


def test_second_calls_parse_nothing_and_a_resumed_run_is_read_again(tmp_path: Path,
                                                                     capsys) -> None:
    sweep = write_sweep(tmp_path / "sweep", 40, EPOCHS)
    out = tmp_path / "out"
    argv = [str(sweep), "--out", str(out), "--no-wandb"]
    assert aggregate.main(argv) == 0
    runs_before = results.load_runs(sweep)
    history_before = results.load_history(sweep, metrics=["test/accuracy"])
    assert parsed(lambda: results.load_runs(sweep)) == {}

    # job 7 resumes from epoch 2 (through the writer's API) and ends with another accuracy
    run = RunDir(sweep / "7")
    run.start((run.dir / "config.yaml").read_text(), resumed_epoch=2)
    for epoch in (3, 4, 5):
        run.log({"epoch": epoch, "step": 16 * epoch, "test/accuracy": 0.5 + epoch / 100,
                 "train/accuracy": 0.6})
        run.set_epoch(epoch)
    run.finish_ok(summarize(run.events()))

    again = parsed(quiet(aggregate.main, argv))
    assert again["metrics.jsonl"] == 1 and again["summary.json"] == 1, again
    assert again["status.json"] == 1
    by_run = pd.read_csv(out / "runs.csv").set_index("run")
    assert by_run.at[str(sweep / "7"), "test/accuracy"] == pytest.approx(0.55)
    assert by_run.at[str(sweep / "7"), "epochs"] == 5
    history_csv = pd.read_csv(out / "history.csv")
    job7 = history_csv[(history_csv.run == str(sweep / "7"))
                       & (history_csv.metric == "test/accuracy")]
    assert list(job7.epoch) == [0, 1, 2, 3, 4, 5]
    assert list(job7.value[-3:]) == pytest.approx([0.53, 0.54, 0.55])

    runs_after = results.load_runs(sweep).set_index("run")
    assert runs_after.at[str(sweep / "7"), "test/accuracy"] == pytest.approx(0.55)
    unchanged = runs_before.set_index("run").drop(index=str(sweep / "7"))
    pd.testing.assert_frame_equal(runs_after.drop(index=str(sweep / "7"))[unchanged.columns],
                                  unchanged)
    history_after = results.load_history(sweep, metrics=["test/accuracy"])
    assert len(history_after) == len(history_before) + 1  # epochs 3, 4 redone, 5 new
    capsys.readouterr()
    assert parsed(quiet(runs.main, [str(sweep)])) == {"status.json": 40}
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("7 ")]
    best = RunDir(sweep / "7").summary()["best/test/accuracy"]
    assert row.split()[1:4] == ["ok", "5/4", f"{best:.4f}"]


def test_cached_reads_equal_the_files(tmp_path: Path) -> None:
    """Same numbers: the cached paths give what reading every file gives."""
    sweep = write_sweep(tmp_path / "sweep", 30, EPOCHS)
    found = records.find_all_runs(sweep)
    direct_runs = results.runs_frame(found)
    direct_history = results.history_frame(found)
    for _ in range(2):  # first call fills the caches, the second reads them
        pd.testing.assert_frame_equal(results.load_runs(sweep), direct_runs)
        pd.testing.assert_frame_equal(results.load_history(sweep), direct_history)
    tricky = direct_history.head(8).copy()  # history.csv's writer: pandas' text exactly
    tricky["value"] = [1e-5, 123456789012.0, 1e20, float("nan"), -0.0, float("inf"), 3.0, 0.1]
    tricky.loc[1, "metric"], tricky.loc[2, "step"], tricky.loc[3, "epoch"] = 'a,"b', None, None
    assert results.history_csv(tricky) == tricky.to_csv(index=False)
    assert results.history_csv(direct_history) == direct_history.to_csv(index=False)
    one = results.load_history(sweep, metrics=["test/accuracy"], runs=[sweep / "3", "5"])
    assert set(one.metric) == {"test/accuracy"} and len(one) == 2 * (EPOCHS + 1)
    assert sorted(set(one.run)) == [str(sweep / "3"), str(sweep / "5")]


def test_run_dirs_written_before_config_json_read_the_same(tmp_path: Path, capsys) -> None:
    """Today's layout (config.yaml alone, no epochs/best in status.json) lists, aggregates
    and reports as the new one, with the same numbers."""
    old, new = tmp_path / "old", tmp_path / "new"
    for twin, sweep in ((False, old), (True, new)):  # jobs 96 failed and 198 running
        write_sweep(sweep, 10, EPOCHS, twin=twin, first_job=90)
        write_sweep(sweep, 5, EPOCHS, twin=twin, first_job=195)
    assert not (old / "90" / "config.json").exists()
    outputs = {}
    for sweep in (old, new):
        assert runs.main([str(sweep)]) == 0
        listing = capsys.readouterr().out
        assert "1 dead, 1 failed, 13 ok" in listing
        assert aggregate.main([str(sweep), "--out", str(sweep / "out"), "--no-wandb"]) == 0
        capsys.readouterr()
        outputs[sweep] = (listing, *(
            (sweep / "out" / name).read_text().replace(str(sweep), "SWEEP")
            for name in ("aggregate.csv", "aggregate.json", "runs.csv", "history.csv")))
    assert outputs[old] == outputs[new]
    assert parsed(lambda: RunDir(old / "91").config())["config.yaml"] == 1


def test_an_edited_config_yaml_is_read_not_its_twin(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep", 2, EPOCHS)
    path = sweep / "0" / "config.yaml"
    path.write_text(path.read_text().replace("lr: 0.0001", "lr: 0.0002"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    assert RunDir(sweep / "0").flat_config()["optimizer.lr"] == 0.0002


def test_a_read_only_sweep_caches_elsewhere_or_not_at_all(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    sweep = write_sweep(tmp_path / "sweep", 6, EPOCHS)
    expected = results.runs_frame(records.find_all_runs(sweep))
    writable = os.access
    monkeypatch.setattr(results_cache.os, "access",
                        lambda path, mode: not str(path).startswith(str(sweep))
                        and writable(path, mode))
    monkeypatch.setattr(results_cache.Path, "mkdir", _refuse_under(sweep))
    place = results_cache.cache_dir(sweep)
    assert place is not None and sweep not in place.parents
    pd.testing.assert_frame_equal(results.load_runs(sweep), expected)
    assert (place / "runs.json").is_file()
    monkeypatch.setattr(results_cache, "cache_dir", lambda root: None)  # nowhere to write
    pd.testing.assert_frame_equal(results.load_runs(sweep), expected)
    assert not (sweep / results_cache.CACHE_DIR).exists()


def _refuse_under(folder: Path):
    mkdir = Path.mkdir

    def refuse(self: Path, *args, **kwargs) -> None:
        if str(self).startswith(str(folder)):
            raise PermissionError(f"read-only: {self}")
        mkdir(self, *args, **kwargs)

    return refuse


def test_a_damaged_cache_is_ignored(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep", 5, EPOCHS)
    expected = results.load_runs(sweep)
    place = results_cache.cache_dir(sweep)
    results.load_history(sweep, metrics=["lr"])
    damaged = [path for path in place.rglob("*") if path.is_file()]
    assert len(damaged) == 5 + 3  # the histories, runs.json, load_runs' frame and its key
    for path in damaged:
        path.write_bytes(b"{torn")
    pd.testing.assert_frame_equal(results.load_runs(sweep), expected)
    assert len(results.load_history(sweep, metrics=["lr"])) == 5 * (EPOCHS + 1)
    assert json.loads((place / "runs.json").read_text())["version"] == results_cache.VERSION


def test_the_report_tables_keep_their_size_whatever_the_seeds(tmp_path: Path) -> None:
    """The best-LR cell names each chosen LR with its count of seeds, not every seed; a long
    run table folds under a line of state counts."""
    from latentgeo.report import markup

    sweeps = {size: write_sweep(tmp_path / str(size), size, EPOCHS) for size in (40, 400)}
    cells = {}
    for size, sweep in sweeps.items():
        runs_found = selection.sweep_runs(sweep)
        result = selection.aggregate(runs_found, sweep_dir=sweep)
        page = markup._aggregate_html(result)
        table = page.split("<details>")[0]
        cells[size] = [markup.lr_choices(v.selected) for v in result.variants]
        assert "seeds)" in table and ":0.001 " not in table  # per-seed pairs only folded
        listing = markup._runs_html(runs_found, "test/accuracy", result)
        assert listing.index("<details>") < listing.index("<table>")
        assert f"{size} runs: " in listing
    assert max(map(len, cells[400])) <= 80  # 20 seeds per variant: still one short line
    selected = selection.aggregate(selection.sweep_runs(sweeps[400])).variants[0].selected
    counts = {}
    for choice in selected:
        counts[choice.lr] = counts.get(choice.lr, 0) + 1
    top = max(counts, key=lambda lr: (counts[lr], -lr))
    assert cells[400][0].startswith(f"{top:g} ({counts[top]}/{len(selected)} seeds)")
