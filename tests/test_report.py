"""report.html from hand-made run and sweep dirs: every figure present exactly when its data
exist, every referenced file exists and is a real PNG, curve averaging by hand, and the page
renders in headless Chromium with every image loaded and no console error."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from latentgeo import report

ALL_FIGURES = {"accuracy", "loss", "schedule", "encoding", "collapse", "scores", "nc1",
               "information_plane", "hyperplanes", "penultimate", "reinit", "alpha"}


class Page(HTMLParser):
    """Collects img src / link targets and the data-figure ids of <figure> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.links: list[str] = []
        self.figures: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.sources.append(attributes["src"] or "")
        if tag in ("a", "link") and attributes.get("href"):
            self.links.append(attributes["href"] or "")
        if tag == "figure":
            self.figures.append(attributes["data-figure"] or "")
        if tag == "script":
            self.scripts += 1


def parse(html_path: Path) -> Page:
    page = Page()
    page.feed(html_path.read_text(encoding="utf-8"))
    return page


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def write_config(run_dir: Path, head: str = "bin_enc", seed: int = 0, lr: float = 1e-3) -> None:
    config = {"model": {"name": "mlp"}, "head": {"name": head, "penultimate_nodes": 3},
              "dataset": {"name": "digits"}, "optimizer": {"name": "adamw", "lr": lr},
              "logger": {"name": "wandb", "mode": "offline"},
              "trainer": {"seed": seed, "epochs": 4}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))


def write_status(run_dir: Path, state: str = "ok", reason: str | None = None) -> None:
    (run_dir / "status.json").write_text(json.dumps({
        "state": state, "reason": reason, "started": "2025-01-01T00:00:00", "ended": None,
        "epoch": 4, "git_sha": None, "versions": {}}))


def full_events(shift: float = 0.0) -> list[dict]:
    events = []
    for epoch in range(1, 5):
        events.append({"epoch": epoch, "step": 10 * epoch, "train/loss": 2.0 / epoch,
                       "lr": 1e-3, "gamma": 0.01 * 1.05**epoch})
        events.append({
            "epoch": epoch, "step": 10 * epoch,
            "train/accuracy": 0.5 + 0.1 * epoch + shift, "test/accuracy": 0.4 + 0.1 * epoch,
            "test/loss": 2.5 / epoch, "test/binarity/score": 0.2 * epoch,
            "test/binarity/peaks_distance_mean": 1.0 + epoch, "test/same_encoding_fraction": 0.9,
            "test/collapse/within_class_variation": 1.0 / epoch, "test/collapse/sigma_w": None,
            "test/mahalanobis/auroc": 0.8, "test/perturbation/score": 0.1 * epoch,
            "train/nc1/block0": 3.0 / epoch, "train/nc1/block1": 1.0 / epoch,
            "test/nc1/block0": 4.0 / epoch,
            "dib/vmin/block0/test": 0.5 * epoch, "dib/vsuff/block0/test": 2.0 - 0.1 * epoch,
            "dib/vmin/block1/test": 0.3 * epoch, "dib/vsuff/block1/test": 2.1 - 0.1 * epoch,
            "hyperplanes/conv1/mean": 0.1 * epoch, "hyperplanes/conv1/mass": 0.5,
            "hyperplanes/fc1/mean": -0.1 * epoch, "hyperplanes/net/mean": 0.0,
            "test/collapse/class_means": [1.0, 2.0],  # a list: not a curve
        })
    return events


def make_run(run_dir: Path, events: list[dict], extras: bool = True, head: str = "bin_enc",
             seed: int = 0, lr: float = 1e-3, summary: dict | None = None) -> Path:
    run_dir.mkdir(parents=True)
    write_config(run_dir, head, seed, lr)
    write_status(run_dir)
    lines = [json.dumps(event) for event in events]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + '\n{"epoch": 5, "train/lo')
    (run_dir / "summary.json").write_text(json.dumps(summary or {
        "test/accuracy": events[-1].get("test/accuracy", 0.5), "epochs": 4}))
    if extras:
        rng = np.random.default_rng(0)
        signs = rng.choice([-1.0, 1.0], size=(60, 3))
        np.savez(run_dir / "penultimate.npz",
                 train_x_pen=signs + 0.1 * rng.standard_normal((60, 3)),
                 train_labels=np.arange(60) % 3, train_preds=np.arange(60) % 3,
                 test_x_pen=signs[:30] + 0.2 * rng.standard_normal((30, 3)),
                 test_labels=np.arange(30) % 3, test_preds=np.arange(30) % 3)
        (run_dir / "reinit.json").write_text(json.dumps({
            "layers": ["conv1", "conv2", "fc"],
            "sources": {"epoch_0": [0.1, 0.5, 0.9], "epoch_1": [0.4, 0.8, None],
                        "random": [0.1, 0.1, 0.2]},
            "baseline": {"top1": 0.92, "top5": None}}))
        (run_dir / "alpha.json").write_text(json.dumps({
            "fc1": {"epochs": [1, 2, 3, 4], "mean": [1.0, 0.9, 0.8, 0.7],
                    "min": [0.9, 0.8, 0.7, 0.6], "max": [1.1, 1.0, 0.9, 0.8]},
            "fc2": {"epochs": [1, 2, 3, 4], "mean": [1.0, 1.1, 1.2, 1.3],
                    "std": [0.1, 0.1, 0.1, 0.1]}}))
    return run_dir


def check_files(html_path: Path) -> Page:
    page = parse(html_path)
    assert page.scripts == 0  # static page
    for source in page.sources + page.links:
        assert not re.match(r"^[a-z]+://", source), f"external reference {source}"
        target = html_path.parent / source
        assert target.is_file(), f"{source} is referenced but missing"
        width, height = png_size(target)
        assert width > 100 and height > 100
    assert len(page.sources) == len(page.figures)
    return page


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = make_run(tmp_path_factory.mktemp("run") / "run0", full_events())
    return report.build_report(run_dir)


def test_full_run_dir_has_every_figure(full_report: Path) -> None:
    page = check_files(full_report)
    assert sorted(page.figures) == sorted(ALL_FIGURES)
    files = sorted(p.name for p in (full_report.parent / "report_files").iterdir())
    assert files == sorted(f"{figure}.png" for figure in ALL_FIGURES)
    text = full_report.read_text()
    assert "3 penultimate nodes" in text and "baseline top-1 0.92" in text


def test_figures_appear_only_with_their_data(tmp_path: Path) -> None:
    # accuracy; dib/vmin without vsuff; alpha from metrics.jsonl (no alpha.json); a collapse
    # metric that is always null; an empty reinit.json; no penultimate.npz
    events = [{"epoch": e, "train/accuracy": 0.1 * e, "test/accuracy": 0.1 * e - 0.05,
               "dib/vmin/block0/test": 0.5 * e, "alpha/fc1": 1.0 + e, "alpha/fc1/std": 0.1,
               "test/collapse/sigma_w": None}
              for e in range(1, 4)]
    run_dir = make_run(tmp_path / "run", events, extras=False)
    (run_dir / "reinit.json").write_text('{"layers": [], "sources": {}}')
    page = check_files(report.build_report(run_dir))
    assert sorted(page.figures) == ["accuracy", "alpha"]
    assert "nc1" not in page.figures

    # a rerun after the metrics are gone removes the stale PNGs
    (run_dir / "metrics.jsonl").write_text("")
    page = check_files(report.build_report(run_dir))
    assert page.figures == []
    assert list((run_dir / "report_files").iterdir()) == []
    assert "No figure" in (run_dir / "report.html").read_text()


def test_curves_take_the_last_value_per_epoch_and_skip_lists() -> None:
    events = [{"epoch": 1, "step": 1, "train/loss": 3.0},
              {"epoch": 1, "step": 2, "train/loss": 2.0},
              {"epoch": 2, "train/loss": None, "x": [1, 2]}, {"step": 5, "train/loss": 9.0}]
    result = report.curves(events)
    assert result["train/loss"][1] == (2.0, None)
    assert math.isnan(result["train/loss"][2][0])
    assert "x" not in result and set(result["train/loss"]) == {1, 2}
    assert "y" not in report.curves([{"epoch": 1, "y": None}, {"epoch": 2, "y": None}])


def test_mean_curves_population_std_over_runs() -> None:
    a = {"test/accuracy": {1: (0.5, None), 2: (0.7, None)}}
    b = {"test/accuracy": {1: (0.7, None), 2: (math.nan, None), 3: (0.9, None)}}
    result = report.mean_curves([a, b])["test/accuracy"]
    assert result[1] == pytest.approx((0.6, 0.1))  # population std of (0.5, 0.7)
    assert result[2] == pytest.approx((0.7, 0.0))  # the NaN is left out
    assert result[3] == pytest.approx((0.9, 0.0))


def test_sweep_report(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    job = 0
    for head in ("bin_enc", "no_pen"):
        for seed in (0, 1):
            for lr in (1e-3, 2e-3):
                accuracy = {("bin_enc", 0, 1e-3): 0.80, ("bin_enc", 0, 2e-3): 0.82,
                            ("bin_enc", 1, 1e-3): 0.86, ("bin_enc", 1, 2e-3): 0.84,
                            ("no_pen", 0, 1e-3): 0.90, ("no_pen", 0, 2e-3): 0.70,
                            ("no_pen", 1, 1e-3): 0.60, ("no_pen", 1, 2e-3): 0.96}
                value = accuracy[(head, seed, lr)]
                events = [{"epoch": e, "train/accuracy": value, "test/accuracy": value}
                          for e in (1, 2)]
                if head == "bin_enc":
                    for e, event in enumerate(events, 1):
                        event.update({"train/loss": 1.0 / e, "test/binarity/score": 0.1 * e,
                                      "train/nc1/block0": 1.0 / e})
                make_run(sweep / str(job), events, extras=False, head=head,
                         seed=seed, lr=lr, summary={"test/accuracy": value})
                job += 1
    failed = sweep / str(job)
    failed.mkdir()
    write_config(failed, "no_pen", 2, 1e-3)
    write_status(failed, "failed", "CUDA out of memory")

    html_path = report.build_report(sweep)
    page = check_files(html_path)
    text = html_path.read_text()
    # bin_enc picks 0.82 (seed 0) and 0.86 (seed 1); no_pen picks 0.90 and 0.96
    assert "0.84 ± 0.02 (n=2)" in text and "0.93 ± 0.03 (n=2)" in text
    assert "CUDA out of memory" in text and 'class="bad"' in text
    # compared curves for both variants, run-level figures for bin_enc's representative only
    compared = [f for f in page.figures if f in ("accuracy", "loss", "encoding")]
    assert compared == ["accuracy", "loss", "encoding"]
    assert page.sources.count("report_files/sweep_accuracy.png") == 1
    assert "report_files/variant0_nc1.png" in page.sources
    assert not any(s.startswith("report_files/variant1_") for s in page.sources)
    assert "Representative run <code>1</code> (seed 0, lr 0.002)" in text


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main([str(tmp_path / "missing")]) == 2
    run_dir = make_run(tmp_path / "run", [{"epoch": 1, "train/nc1/block0": 2.0}], extras=False)
    out = tmp_path / "elsewhere" / "r.html"
    out.parent.mkdir()
    assert report.main([str(run_dir), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert (tmp_path / "elsewhere" / "r_files" / "nc1.png").is_file()
    assert check_files(out).figures == ["nc1"]


CHECK_SCRIPT = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  window.__errors.push(e.target && e.target.src ? "failed to load " + e.target.src
                                                : String(e.message));
}, true);
var originalError = console.error;
console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, " "));
  originalError.apply(console, arguments);
};
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var bad = images.filter(function (i) { return !i.complete || i.naturalWidth === 0; })
                  .map(function (i) { return i.getAttribute("src"); });
  var out = document.createElement("pre");
  out.id = "latentgeo-check";
  out.textContent = "CHECK" + JSON.stringify({images: images.length, bad: bad,
                                              errors: window.__errors}) + "CHECK";
  document.body.appendChild(out);
});
</script>"""


def find_chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    if os.environ.get("LATENTGEO_REQUIRE_CHROMIUM") == "1":
        pytest.fail("LATENTGEO_REQUIRE_CHROMIUM=1 but chromium is not installed")
    pytest.skip("chromium not installed (apt-get install -y chromium); "
                "set LATENTGEO_REQUIRE_CHROMIUM=1 to make this a failure")


def render(chromium: str, report_dir: Path, work: Path) -> tuple[dict, list[str]]:
    """Open a copy of the report with the check script injected; return the check result and
    Chromium's console lines (the report itself has no script, so any console line is wrong)."""
    shutil.copytree(report_dir, work)
    page = work / "report.html"
    page.write_text(page.read_text().replace("<head>", "<head>" + CHECK_SCRIPT, 1))
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", f"--user-data-dir={work}-profile",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
               "--dump-dom", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    match = re.search(r"CHECK(\{.*?\})CHECK", done.stdout)
    assert match, f"no check result in the DOM; stderr:\n{done.stderr[-3000:]}"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(match.group(1)), console


def test_report_renders_in_headless_chromium(full_report: Path, tmp_path: Path) -> None:
    chromium = find_chromium()
    result, console = render(chromium, full_report.parent, tmp_path / "copy")
    assert result == {"images": len(ALL_FIGURES), "bad": [], "errors": []}
    assert console == []
    # the harness does see a broken image (guards against a check that always passes)
    broken_dir = tmp_path / "broken"
    shutil.copytree(full_report.parent, broken_dir)
    (broken_dir / "report_files" / "nc1.png").unlink()
    result, _ = render(chromium, broken_dir, tmp_path / "broken-copy")
    assert result["bad"] == ["report_files/nc1.png"]
    assert any("nc1.png" in error for error in result["errors"])
