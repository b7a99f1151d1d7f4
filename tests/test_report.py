"""report.html from hand-made run and sweep dirs and from a real tiny sweep: every figure
present exactly when its data exist, every referenced file exists (a real PNG, an SVG beside
it), missing values explained in place, curve averaging by hand, the ROC's AUC is the recorded
AUROC, and the page renders in headless Chromium at 1400 px and at laptop width with every
image loaded, no horizontal scroll and no console error."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from latentgeo import figures, report, selection
from tests.conftest import TINY, run_cli
from tests.test_figures import assert_house_rules, figure_texts

ALL_FIGURES = {"scores", "roc", "training", "schedule", "encoding", "collapse", "nc1",
               "hyperplanes", "code", "reinit", "alpha", "information_plane"}
ALL_FILES = {"scores", "roc", "training", "schedule", "encoding", "collapse", "nc1",
             "hyperplanes", "code_hist", "code_2d", "reinit", "alpha", "information_plane"}


class Page(HTMLParser):
    """Collects img src / link targets and the data-figure ids of <figure> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.links: list[str] = []
        self.figures: list[str] = []
        self.ids: set[str] = set()
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(attributes["id"] or "")
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
    """Every image is a PNG with its SVG beside it, every link a file of the report."""
    page = parse(html_path)
    assert page.scripts == 0  # static page
    for source in page.sources + page.links:
        assert not re.match(r"^[a-z]+://", source), f"external reference {source}"
        if source.startswith("#"):  # the table of contents
            assert source[1:] in page.ids, f"no section {source}"
            continue
        assert (html_path.parent / source).is_file(), f"{source} is referenced but missing"
    for source in page.sources:
        width, height = png_size(html_path.parent / source)
        assert width > 100 and height > 100
        svg = (html_path.parent / source).with_suffix(".svg")
        assert ET.parse(svg).getroot().tag.endswith("svg"), f"{svg} is not an SVG"
        assert source.replace(".png", ".svg") in page.links  # linked from the caption
    assert len(page.sources) == len(page.figures)
    return page


def build_recording(path: Path) -> tuple[Path, dict]:
    """``build_report`` that also returns every figure it saved, by file stem."""
    made: dict = {}
    original = figures.save_figure

    def recording(fig, target, *args, **kwargs):
        made[Path(target).name] = fig
        return original(fig, target, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figures, "save_figure", recording)
        html_path = report.build_report(path)
    return html_path, made


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = make_run(tmp_path_factory.mktemp("run") / "run0", full_events())
    return build_recording(run_dir)


@pytest.fixture(scope="module")
def full_report(full_run: tuple[Path, dict]) -> Path:
    return full_run[0]


def test_full_run_dir_has_every_figure(full_run: tuple[Path, dict]) -> None:
    full_report, made = full_run
    page = check_files(full_report)
    assert set(page.figures) == ALL_FIGURES
    files = sorted(p.name for p in (full_report.parent / "report_files").iterdir())
    assert files == sorted(f"{name}.{fmt}" for name in ALL_FILES for fmt in ("png", "svg"))
    assert "3 penultimate nodes" in full_report.read_text()
    texts = {name: " ".join(figure_texts(fig)).replace("\n", " ") for name, fig in made.items()}
    assert "baseline 0.9200" in texts["reinit"]
    # every prediction is right in penultimate.npz: the ROC says so instead of a curve
    assert "ROC undefined: no class has more than 2 misclassified test samples" in texts["roc"]
    # test/mahalanobis/auroc (BE's estimate) is logged every epoch here, but the report shows
    # auroc_exact, a final score; nothing logged once is a curve, no count is plotted
    assert "AUROC" not in texts["training"] + texts["encoding"] + texts["collapse"]
    for name in ("roc", "reinit", "alpha", "information_plane"):  # the rest: the real sweep
        assert_house_rules(made[name], name, drawn=True)


def test_figures_appear_only_with_their_data(tmp_path: Path) -> None:
    # accuracy; dib/vmin without vsuff; alpha from metrics.jsonl (no alpha.json); a collapse
    # metric that is always null; an empty reinit.json; no penultimate.npz
    events = [{"epoch": e, "train/accuracy": 0.1 * e, "test/accuracy": 0.1 * e - 0.05,
               "dib/vmin/block0/test": 0.5 * e, "alpha/fc1": 1.0 + e, "alpha/fc1/std": 0.1,
               "test/collapse/sigma_w": None}
              for e in range(1, 4)]
    run_dir = make_run(tmp_path / "run", events, extras=False)
    (run_dir / "reinit.json").write_text('{"layers": [], "sources": {}}')
    html_path = report.build_report(run_dir)
    page = check_files(html_path)
    assert page.figures == ["scores", "training", "alpha"]  # scores: summary's test/accuracy
    assert "No penultimate features: rerun with metrics.penultimate.when=last" in \
        html_path.read_text()

    # a rerun after the metrics are gone removes the stale files
    (run_dir / "metrics.jsonl").write_text("")
    (run_dir / "summary.json").unlink()
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


def test_choose_epochs_and_short_labels() -> None:
    assert report.choose_epochs([0, 1, 2]) == [0, 1, 2]
    assert report.choose_epochs(list(range(0, 801, 50))) == [0, 250, 550, 800]
    assert report.short_labels([{"head.name": "bin_enc"}, {"head.name": "no_pen"}],
                               ["head.name=bin_enc", "head.name=no_pen"]) == ["bin_enc", "no_pen"]
    assert report.short_labels([{"head.name": "a", "trainer.epochs": 2},
                                {"head.name": "a", "trainer.epochs": 4}],
                               ["x", "y"]) == ["name=a,epochs=2", "name=a,epochs=4"]
    assert report.is_sample_count("test/mahalanobis/num_wrong_test")
    assert not report.is_sample_count("test/mahalanobis/auroc_exact")


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
                summary = {"test/accuracy": value, "test/same_encoding_fraction": 0.5}
                if head == "bin_enc":  # Mahalanobis ran, but nothing was misclassified
                    summary.update({"test/mahalanobis/num_classes_used": 10,
                                    "test/mahalanobis/num_correct_test": 100,
                                    "test/mahalanobis/num_wrong_test": 0,
                                    "test/binarity/score": -1.2 - seed / 10})
                else:
                    summary["test/mahalanobis/auroc_exact"] = 0.9 + seed / 100
                make_run(sweep / str(job), events, extras=False, head=head,
                         seed=seed, lr=lr, summary=summary)
                job += 1
    failed = sweep / str(job)
    failed.mkdir()
    write_config(failed, "no_pen", 2, 1e-3)
    write_status(failed, "failed", "CUDA out of memory")

    html_path, made = build_recording(sweep)
    page = check_files(html_path)
    text = html_path.read_text()
    # bin_enc picks 0.82 (seed 0) and 0.86 (seed 1); no_pen picks 0.90 and 0.96
    assert "0.84 ± 0.02 (n=2)" in text and "0.93 ± 0.03 (n=2)" in text
    assert "CUDA out of memory" in text and 'class="bad"' in text
    # one figure per family compares the variants; no run has per-run files to show
    assert page.figures == ["scores", "training", "encoding", "nc1"]
    assert page.sources == [f"report_files/{name}.png" for name in
                            ("scores", "training", "encoding", "nc1")]
    assert "Representative run <code>1</code> (seed 0, lr 0.002)" in text
    assert text.count("No penultimate features") == 2  # said in each variant's section
    # the final scores: the selected runs' values, and why a value is missing, in place
    scores = made["scores"]
    accuracy = scores.axes[0]
    assert accuracy.get_title() == "test accuracy"
    means = [float(c.lines[0].get_xdata()[0]) for c in accuracy.containers]
    assert means == pytest.approx([0.84, 0.93])
    words = " ".join(figure_texts(scores)).replace("\n", " ")
    assert "AUROC undefined: no class has more than 2 misclassified test samples" in words
    assert "not computed for head no_pen: binarity is defined for the linear codes" in words
    assert "perturbation" not in words  # measured by no run: no panel, said in the caption
    assert "No value in any run: perturbation score (DeepFool)" in text
    assert_house_rules(scores, "scores", drawn=True)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main([str(tmp_path / "missing")]) == 2
    run_dir = make_run(tmp_path / "run", [{"epoch": 1, "train/nc1/block0": 2.0}], extras=False)
    out = tmp_path / "elsewhere" / "r.html"
    out.parent.mkdir()
    assert report.main([str(run_dir), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert (tmp_path / "elsewhere" / "r_files" / "nc1.png").is_file()
    assert (tmp_path / "elsewhere" / "r_files" / "nc1.svg").is_file()
    assert check_files(out).figures == ["scores", "nc1"]


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
  var families = Array.prototype.map.call(document.querySelectorAll("figure[data-figure]"),
                                         function (f) { return f.getAttribute("data-figure"); });
  var root = document.documentElement;
  var page = {scrollWidth: root.scrollWidth, innerWidth: window.innerWidth,
              widest: Math.max.apply(null, Array.prototype.map.call(
                document.querySelectorAll("body > *"), function (e) {
                  return e.getBoundingClientRect().right; }))};
  var out = document.createElement("pre");
  out.id = "latentgeo-check";
  out.textContent = "CHECK" + JSON.stringify({images: images.length, bad: bad,
                                              errors: window.__errors, families: families,
                                              page: page}) + "CHECK";
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


def render(chromium: str, report_dir: Path, work: Path, width: int = 1400
           ) -> tuple[dict, list[str]]:
    """Open a copy of the report, ``width`` px wide, with the check script injected; return
    the check result and Chromium's console lines (the report itself has no script, so any
    console line is wrong)."""
    shutil.copytree(report_dir, work)
    page = work / "report.html"
    page.write_text(page.read_text().replace("<head>", "<head>" + CHECK_SCRIPT, 1))
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", f"--user-data-dir={work}-profile",
               f"--window-size={width},900", "--hide-scrollbars",
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
    assert {k: result[k] for k in ("images", "bad", "errors")} == {
        "images": len(ALL_FILES), "bad": [], "errors": []}
    assert set(result["families"]) == ALL_FIGURES
    assert result["page"]["scrollWidth"] <= result["page"]["innerWidth"] == 1400
    assert console == []
    # the harness does see a broken image (guards against a check that always passes)
    broken_dir = tmp_path / "broken"
    shutil.copytree(full_report.parent, broken_dir)
    (broken_dir / "report_files" / "nc1.png").unlink()
    result, _ = render(chromium, broken_dir, tmp_path / "broken-copy")
    assert result["bad"] == ["report_files/nc1.png"]
    assert any("nc1.png" in error for error in result["errors"])


# ----------------------------------------------------------------------------- a real tiny sweep

# two heads × two seeds on the offline digits (40 train images per class), every figure family
REAL_SWEEP = ["-m", *[o for o in TINY if not o.startswith("dataset")], "dataset=digits",
              "dataset.image_size=8", "dataset.train_subset.size_per_class=40",
              "head=bin_enc,no_pen", "trainer.seed=0,1", "head.penultimate_nodes=4",
              "metrics.penultimate.when=last", "metrics.mahalanobis.when=last",
              "metrics.perturbation.samples=16", "metrics.nc1.when=every"]
REAL_FAMILIES = {"scores", "roc", "training", "schedule", "encoding", "collapse", "nc1",
                 "hyperplanes", "code"}


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    outputs = tmp_path_factory.mktemp("real") / "outputs"
    done = run_cli(REAL_SWEEP, env={"LATENTGEO_OUTPUT": str(outputs), "WANDB_MODE": "offline",
                                    "LATENTGEO_SWEEP_ID": "report-tiny"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    sweep = outputs / "sweeps" / "report-tiny"
    html_path, made = build_recording(sweep)
    return sweep, html_path, made


@pytest.mark.slow
def test_real_sweep_report(real_sweep: tuple[Path, Path, dict]) -> None:
    sweep, html_path, made = real_sweep
    page = check_files(html_path)
    assert set(page.figures) == REAL_FAMILIES
    assert {"code_hist_bin_enc", "code_2d_bin_enc", "code_pca_no_pen"} <= set(made)
    runs = selection.sweep_runs(sweep)
    result = selection.aggregate(runs)
    # the final-score dots are the aggregate's means over the selected runs
    scores = made["scores"]
    for ax, key in zip(scores.axes, ("test/accuracy", "test/mahalanobis/auroc_exact"),
                       strict=False):
        means = [float(c.lines[0].get_xdata()[0]) for c in ax.containers]
        assert means == pytest.approx([v.metrics[key]["mean"] for v in result.variants])
    words = " ".join(figure_texts(scores)).replace("\n", " ")
    assert "not computed for head no_pen" in words  # binarity: linear codes only
    # the ROC curves come from penultimate.npz; their area is the AUROC the run recorded
    variants = report.sweep_variants(result, {run.name: run for run in runs})
    for variant, panel in zip(variants, report.roc_panels(variants), strict=True):
        assert len(panel.curves) == 2, panel.note
        for run, curve in zip(variant.runs, panel.curves, strict=True):
            assert curve.auc == pytest.approx(run.summary()["test/mahalanobis/auroc_exact"],
                                              abs=1e-12)
    for name, fig in made.items():
        text = " ".join(figure_texts(fig))
        assert "num_" not in text, f"{name} plots a bookkeeping count"
        assert_house_rules(fig, name, drawn=True)
    # computed once: final scores, never curves over epochs
    for name in ("training", "encoding", "collapse"):
        assert not re.search(r"auroc|perturbation", " ".join(figure_texts(made[name])), re.I)


@pytest.mark.slow
def test_real_sweep_report_in_headless_chromium(real_sweep: tuple[Path, Path, dict],
                                                tmp_path: Path) -> None:
    chromium = find_chromium()
    _, html_path, _ = real_sweep
    images = len(parse(html_path).sources)
    for width in (1400, 1280):  # the page it is laid out for, and a laptop screen
        result, console = render(chromium, html_path.parent, tmp_path / f"w{width}", width)
        assert result["bad"] == [] and result["errors"] == [] and console == []
        assert result["images"] == images
        assert set(result["families"]) == REAL_FAMILIES
        assert result["page"]["innerWidth"] == width
        assert result["page"]["scrollWidth"] <= width, f"scrolls horizontally at {width} px"
        assert result["page"]["widest"] <= width
