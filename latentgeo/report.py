"""Static HTML report of a run dir or a sweep dir: figures as PNGs beside the page.

    python -m latentgeo.report RUN_DIR|SWEEP_DIR [--out report.html] [--select METRIC]

Writes ``report.html`` and ``report_files/*.png`` (relative links, no scripts, no network: it
opens offline in any browser). Each figure is drawn only when its data exist:

=====================  ===================================================================
figure id              data it needs (run dir)
=====================  ===================================================================
accuracy               <split>/accuracy in metrics.jsonl (split = train | val | test)
loss                   <split>/loss
schedule               lr or gamma
encoding               <split>/binarity/* or <split>/same_encoding_fraction
collapse               <split>/collapse/*
scores                 <split>/mahalanobis/* or <split>/perturbation/*
nc1                    <split>/nc1/<block>
information_plane      dib/vmin/<block>/<split> and dib/vsuff/<block>/<split> at the
                       same epoch
hyperplanes            hyperplanes/<layer>/mean (and /mass, hyperplanes/net/mean)
penultimate            penultimate.npz with test_x_pen or train_x_pen [N, P]
reinit                 reinit.json {"layers", "sources": {source: [top1 per layer]}, "baseline"}
alpha                  alpha.json {layer: {"epochs", "mean", ["min", "max", "std"]}}, else
                       alpha/<layer> in metrics.jsonl
=====================  ===================================================================

Curves are per epoch: when several events of an epoch carry a key, the last one is plotted.
A sweep report shows the aggregate table (``latentgeo.aggregate``), every run with its state,
the curve figures with one line per variant (mean ± population std over the selected run of
each seed), and per variant the run-level figures of one representative run: the selected run
of the lowest seed (not the best one, to avoid showing a cherry-picked repeat).
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from latentgeo import aggregate as agg

SPLITS = ("train", "val", "test")
SPLIT_STYLE = {"train": "--", "val": ":", "test": "-"}
MAX_NODES = 32  # penultimate histograms drawn (BE's wide head has 512 nodes)
DPI = 100

# (figure id, title, predicate on the part of a split key after "<split>/")
CURVE_FAMILIES: list[tuple[str, str, Callable[[str], bool]]] = [
    ("accuracy", "Accuracy", lambda rest: rest == "accuracy"),
    ("loss", "Loss", lambda rest: rest == "loss"),
    ("encoding", "Binary encoding: binarity score and same-encoding fraction",
     lambda rest: rest.startswith("binarity/") or rest == "same_encoding_fraction"),
    ("collapse", "Collapse metrics", lambda rest: rest.startswith("collapse/")),
    ("scores", "Mahalanobis AUROC and perturbation score",
     lambda rest: rest.startswith(("mahalanobis/", "perturbation/"))),
]
RUN_ONLY_FIGURES = ("schedule", "nc1", "information_plane", "hyperplanes", "penultimate",
                    "reinit", "alpha")

# epoch -> (mean, std); std is None for a single run
Curve = dict[int, tuple[float, float | None]]


@dataclass
class FigureEntry:
    """One figure of the report: its id (see the module table), file name and caption."""

    figure_id: str
    title: str
    filename: str
    caption: str = ""


# ----------------------------------------------------------------------------- reading


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Events of metrics.jsonl; a truncated last line (a running run) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _scalar(value: Any) -> float | None:
    """Float for plotting: null → NaN; lists and strings → None (not a curve point)."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def curves(events: Sequence[dict[str, Any]]) -> dict[str, Curve]:
    """Per metric name: epoch → value (the last event of that epoch wins), in first-seen order;
    null is NaN (a gap in the line); metrics without any finite value are left out."""
    result: dict[str, Curve] = {}
    for event in events:
        epoch = event.get("epoch")
        if not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
            continue
        for key, value in event.items():
            if key in ("epoch", "step"):
                continue
            number = _scalar(value)
            if number is not None:
                result.setdefault(key, {})[int(epoch)] = (number, None)
    # a metric that is null at every epoch has no data: it must not make an empty panel
    return {key: curve for key, curve in result.items()
            if any(math.isfinite(value) for value, _ in curve.values())}


def mean_curves(per_run: Sequence[dict[str, Curve]]) -> dict[str, Curve]:
    """Mean and population std across runs, per metric and epoch, over the finite values."""
    names = list(dict.fromkeys(name for run in per_run for name in run))
    result: dict[str, Curve] = {}
    for name in names:
        epochs = sorted({e for run in per_run for e in run.get(name, {})})
        curve: Curve = {}
        for epoch in epochs:
            values = [run[name][epoch][0] for run in per_run if epoch in run.get(name, {})]
            stats = agg.mean_std(values)
            if stats["n"]:
                curve[epoch] = (stats["mean"], stats["std"])
            else:
                curve[epoch] = (math.nan, None)
        result[name] = curve
    return result


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- drawing


def _new_figure(panels: int, width: float = 4.2, height: float = 3.2,
                columns: int | None = None) -> tuple[Figure, list[Any]]:
    columns = columns or min(panels, 3)
    rows = math.ceil(panels / columns)
    fig = Figure(figsize=(width * columns, height * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, without touching pyplot's global state
    axes = [fig.add_subplot(rows, columns, i + 1) for i in range(panels)]
    return fig, axes


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, format="png")


def _plot_curve(ax: Any, curve: Curve, label: str, color: Any, linestyle: str) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    epochs = sorted(curve)
    mean = np.array([curve[e][0] for e in epochs], dtype=float)
    ax.plot(epochs, mean, linestyle=linestyle, color=color, label=label,
            marker="o" if len(epochs) < 3 else None, markersize=3)
    std = [curve[e][1] for e in epochs]
    if any(s is not None for s in std):
        spread = np.array([s if s is not None else 0.0 for s in std], dtype=float)
        ax.fill_between(epochs, mean - spread, mean + spread, color=color, alpha=0.2,
                        linewidth=0)


def _split_key(key: str) -> tuple[str, str] | None:
    split, _, rest = key.partition("/")
    return (split, rest) if split in SPLITS and rest else None


def family_figure(
    series: dict[str, dict[str, Curve]], title: str, wants: Callable[[str], bool]
) -> Figure | None:
    """Panel per metric (split removed), colour per label (or per split for a single label),
    line style per split; None when no label has such a metric."""
    panels: dict[str, list[tuple[str, str, Curve]]] = {}
    for label, metrics in series.items():
        for key, curve in metrics.items():
            parts = _split_key(key)
            if parts and wants(parts[1]) and curve:
                panels.setdefault(parts[1], []).append((label, parts[0], curve))
    if not panels:
        return None
    fig, axes = _new_figure(len(panels))
    colors = _colors(len(series))
    label_color = dict(zip(series, colors, strict=False))
    split_color = {"train": "tab:blue", "val": "tab:green", "test": "tab:orange"}
    for ax, (rest, lines) in zip(axes, panels.items(), strict=False):
        for label, split, curve in lines:
            single = len(series) == 1
            color = split_color[split] if single else label_color[label]
            name = split if single else f"{label} ({split})"
            _plot_curve(ax, curve, name, color, SPLIT_STYLE[split])
        ax.set_title(rest, fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def _colors(count: int) -> list[Any]:
    cmap = colormaps["tab10" if count <= 10 else "viridis"]
    if count <= 10:
        return [cmap(i) for i in range(count)]
    return [cmap(i / max(count - 1, 1)) for i in range(count)]


def schedule_figure(metrics: dict[str, Curve]) -> Figure | None:
    names = [name for name in ("lr", "gamma") if metrics.get(name)]
    if not names:
        return None
    fig, axes = _new_figure(len(names))
    for ax, name in zip(axes, names, strict=False):
        _plot_curve(ax, metrics[name], name, "tab:purple", "-")
        values = [v for v, _ in metrics[name].values() if math.isfinite(v)]
        if values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
    fig.suptitle("Schedules (learning rate, γ of the compression loss)")
    return fig


def nc1_figure(metrics: dict[str, Curve]) -> Figure | None:
    """NC1 = tr(Σ_W Σ_B⁺) per block vs epoch, one panel per split, log scale."""
    per_split: dict[str, dict[str, Curve]] = {}
    for key, curve in metrics.items():
        parts = _split_key(key)
        if parts and parts[1].startswith("nc1/") and curve:
            per_split.setdefault(parts[0], {})[parts[1][len("nc1/"):]] = curve
    if not per_split:
        return None
    fig, axes = _new_figure(len(per_split), width=5.0)
    for ax, (split, blocks) in zip(axes, per_split.items(), strict=False):
        colors = _colors(len(blocks))
        positive = True
        for color, (block, curve) in zip(colors, blocks.items(), strict=False):
            _plot_curve(ax, curve, block, color, "-")
            positive &= all(v > 0 for v, _ in curve.values() if math.isfinite(v))
        if positive:
            ax.set_yscale("log")
        ax.set_title(f"NC1 per block ({split})", fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    return fig


def information_plane_figure(metrics: dict[str, Curve]) -> Figure | None:
    """DIB information plane: V-minimality (x) vs V-sufficiency (y) per block, colour = epoch."""
    pattern = re.compile(r"^dib/(vmin|vsuff)/(.+)/([^/]+)$")
    found: dict[str, dict[str, dict[str, Curve]]] = {}  # split -> block -> term -> curve
    for key, curve in metrics.items():
        match = pattern.match(key)
        if match:
            term, block, split = match.groups()
            found.setdefault(split, {}).setdefault(block, {})[term] = curve
    planes: dict[str, dict[str, tuple[list[int], list[float], list[float]]]] = {}
    for split, blocks in found.items():
        for block, terms in blocks.items():
            if "vmin" not in terms or "vsuff" not in terms:
                continue
            epochs = [e for e in sorted(terms["vmin"]) if e in terms["vsuff"]
                      and math.isfinite(terms["vmin"][e][0])
                      and math.isfinite(terms["vsuff"][e][0])]
            if epochs:
                planes.setdefault(split, {})[block] = (
                    epochs, [terms["vmin"][e][0] for e in epochs],
                    [terms["vsuff"][e][0] for e in epochs])
    if not planes:
        return None
    all_epochs = [e for blocks in planes.values() for ep, _, _ in blocks.values() for e in ep]
    norm = Normalize(vmin=min(all_epochs), vmax=max(max(all_epochs), min(all_epochs) + 1))
    markers = "osD^v<>phX*"
    fig, axes = _new_figure(len(planes), width=5.0, height=4.0)
    scatter = None
    for ax, (split, blocks) in zip(axes, planes.items(), strict=False):
        for index, (block, (epochs, vmin, vsuff)) in enumerate(blocks.items()):
            ax.plot(vmin, vsuff, color="0.7", linewidth=0.8, zorder=1)
            scatter = ax.scatter(vmin, vsuff, c=epochs, cmap="viridis", norm=norm,
                                 marker=markers[index % len(markers)], label=block, zorder=2)
            ax.annotate(block, (vmin[-1], vsuff[-1]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xlabel("V-minimality")
        ax.set_ylabel("V-sufficiency")
        ax.set_title(f"information plane ({split})", fontsize=9)
        ax.legend(fontsize=7)
    fig.colorbar(scatter, ax=axes, label="epoch")
    return fig


def hyperplanes_figure(metrics: dict[str, Curve]) -> Figure | None:
    """Mean projection of the filters onto 1 (HP §3.1) per layer vs epoch; mass if logged."""
    pattern = re.compile(r"^hyperplanes/(.+)/(mean|mass)$")
    stats: dict[str, dict[str, Curve]] = {"mean": {}, "mass": {}}
    for key, curve in metrics.items():
        match = pattern.match(key)
        if match and curve:
            stats[match.group(2)][match.group(1)] = curve
    panels = [name for name in ("mean", "mass") if stats[name]]
    if not panels:
        return None
    fig, axes = _new_figure(len(panels), width=5.5, height=3.8)
    for ax, name in zip(axes, panels, strict=False):
        layers = {k: v for k, v in stats[name].items() if k != "net"}
        for color, (layer, curve) in zip(_colors(len(layers)), layers.items(), strict=False):
            _plot_curve(ax, curve, layer, color, "-")
        if "net" in stats[name]:
            _plot_curve(ax, stats[name]["net"], "net", "black", "-")
            ax.lines[-1].set_linewidth(2.5)
        ax.set_title(f"hyperplanes: {name} projection per layer", fontsize=9)
        ax.set_xlabel("epoch")
        if len(stats[name]) <= 14:
            ax.legend(fontsize=6, ncol=2)
    return fig


def penultimate_figure(path: Path) -> tuple[Figure, str] | None:
    """Histogram per penultimate node at the final epoch, train (filled) and test (outline)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {split: np.asarray(data[f"{split}_x_pen"], dtype=float)
                      for split in ("train", "test") if f"{split}_x_pen" in data.files}
    except (OSError, ValueError):
        return None
    arrays = {s: a.reshape(len(a), -1) for s, a in arrays.items() if a.ndim >= 1 and a.size}
    if not arrays:
        return None
    nodes = min(a.shape[1] for a in arrays.values())
    shown = min(nodes, MAX_NODES)
    columns = min(shown, 8)
    fig, axes = _new_figure(shown, width=2.0, height=1.7, columns=columns)
    for node, ax in enumerate(axes):
        values = np.concatenate([a[:, node] for a in arrays.values()])
        values = values[np.isfinite(values)]
        low, high = (values.min(), values.max()) if values.size else (0.0, 1.0)
        bins = np.linspace(low, high if high > low else low + 1.0, 41)
        if "train" in arrays:
            ax.hist(arrays["train"][:, node], bins=bins, density=True, color="tab:blue",
                    alpha=0.5, label="train")
        if "test" in arrays:
            ax.hist(arrays["test"][:, node], bins=bins, density=True, histtype="step",
                    color="tab:orange", label="test")
        ax.set_title(f"node {node}", fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=6)
    caption = f"{nodes} penultimate nodes" + (f"; the first {shown} are shown"
                                               if shown < nodes else "")
    return fig, caption


def reinit_figure(path: Path) -> tuple[Figure, str] | None:
    """Test top-1 after re-initialising one layer from each source (HP §3.4)."""
    data = _read_json(path)
    if not isinstance(data, dict) or not data.get("layers") or not data.get("sources"):
        return None
    layers = list(data["layers"])
    sources = list(data["sources"])
    matrix = np.full((len(sources), len(layers)), np.nan)
    for row, source in enumerate(sources):
        for column, value in enumerate(list(data["sources"][source])[:len(layers)]):
            number = _scalar(value)
            matrix[row, column] = np.nan if number is None else number
    baseline = _scalar((data.get("baseline") or {}).get("top1"))
    top = max(np.nanmax(matrix) if np.isfinite(matrix).any() else 1.0,
              baseline if baseline is not None and math.isfinite(baseline) else 0.0)
    fig = Figure(figsize=(max(4.0, 0.55 * len(layers) + 2.5), 0.5 * len(sources) + 2.2),
                 dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=0.0, vmax=top,
                      aspect="auto")
    ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(sources)), sources, fontsize=8)
    if matrix.size <= 300:
        for (row, column), value in np.ndenumerate(matrix):
            if math.isfinite(value):
                ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if value < 0.6 * top else "black")
    fig.colorbar(image, ax=ax, label="test top-1")
    ax.set_xlabel("re-initialised layer")
    ax.set_ylabel("init source")
    caption = "baseline top-1 " + (f"{baseline:.4g}" if baseline is not None else "unknown")
    return fig, caption


def alpha_trajectories(run_dir: Path, metrics: dict[str, Curve]) -> dict[str, dict[str, Any]]:
    """Per layer: epochs, mean and optional band (min/max or std), from alpha.json or metrics."""
    data = _read_json(run_dir / "alpha.json")
    result: dict[str, dict[str, Any]] = {}
    if isinstance(data, dict):
        for layer, entry in data.items():
            if isinstance(entry, dict) and entry.get("epochs") and entry.get("mean"):
                result[layer] = {k: entry[k] for k in ("epochs", "mean", "min", "max", "std")
                                 if entry.get(k) is not None}
        if result:
            return result
    for key, curve in metrics.items():
        if key.startswith("alpha/") and not key.endswith(("/min", "/max", "/std")) and curve:
            layer = key[len("alpha/"):]
            epochs = sorted(curve)
            entry = {"epochs": epochs, "mean": [curve[e][0] for e in epochs]}
            for extra in ("min", "max", "std"):
                band = metrics.get(f"{key}/{extra}", {})
                if band and all(e in band for e in epochs):
                    entry[extra] = [band[e][0] for e in epochs]
            result[layer] = entry
    return result


def alpha_figure(trajectories: dict[str, dict[str, Any]]) -> Figure | None:
    """Learned α of ReLU_α per layer vs epoch; band = min..max over units (else ± std)."""
    if not trajectories:
        return None
    fig, axes = _new_figure(1, width=6.0, height=3.8)
    ax = axes[0]
    for color, (layer, entry) in zip(_colors(len(trajectories)), trajectories.items(),
                                     strict=False):
        epochs = np.asarray(entry["epochs"], dtype=float)
        mean = np.asarray([math.nan if v is None else v for v in entry["mean"]], dtype=float)
        ax.plot(epochs, mean, color=color, label=layer)
        if "min" in entry and "max" in entry:
            low, high = (np.asarray(entry[k], dtype=float) for k in ("min", "max"))
        elif "std" in entry:
            spread = np.asarray(entry["std"], dtype=float)
            low, high = mean - spread, mean + spread
        else:
            continue
        if low.shape == mean.shape == high.shape:
            ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("α")
    ax.set_title("α trajectories per layer", fontsize=9)
    ax.legend(fontsize=7)
    return fig


# ----------------------------------------------------------------------------- assembling


def _write(fig: Figure | None, files_dir: Path, name: str, figure_id: str, title: str,
           caption: str = "") -> FigureEntry | None:
    if fig is None:
        return None
    path = files_dir / f"{name}.png"
    _save(fig, path)
    return FigureEntry(figure_id, title, f"{files_dir.name}/{path.name}", caption)


def curve_figures(series: dict[str, dict[str, Curve]], files_dir: Path,
                  prefix: str = "") -> list[FigureEntry]:
    """The figures drawn from per-split curves (one line per label): accuracy … scores."""
    entries = []
    for figure_id, title, wants in CURVE_FAMILIES:
        fig = family_figure(series, title, wants)
        entry = _write(fig, files_dir, f"{prefix}{figure_id}", figure_id, title)
        if entry:
            entries.append(entry)
    return entries


def run_level_figures(run_dir: Path, metrics: dict[str, Curve], files_dir: Path,
                      prefix: str = "") -> list[FigureEntry]:
    """Figures of one run that do not average across runs (see RUN_ONLY_FIGURES)."""
    entries: list[FigureEntry | None] = [
        _write(schedule_figure(metrics), files_dir, f"{prefix}schedule", "schedule",
               "Schedules"),
        _write(nc1_figure(metrics), files_dir, f"{prefix}nc1", "nc1", "NC1 per block",
               "tr(Σ_W Σ_B⁺) of each hooked block"),
        _write(information_plane_figure(metrics), files_dir, f"{prefix}information_plane",
               "information_plane", "DIB information plane",
               "V-minimality on x vs V-sufficiency on y, one marker per block, colour = epoch"),
        _write(hyperplanes_figure(metrics), files_dir, f"{prefix}hyperplanes", "hyperplanes",
               "Hyperplane mean projection per layer", "thick black line: whole net"),
    ]
    for figure_id, title, made in (
        ("penultimate", "Penultimate activations per node (final epoch)",
         penultimate_figure(run_dir / "penultimate.npz")),
        ("reinit", "Layer re-initialisation robustness", reinit_figure(run_dir / "reinit.json")),
    ):
        if made is not None:
            entries.append(_write(made[0], files_dir, f"{prefix}{figure_id}", figure_id, title,
                                  made[1]))
    entries.append(_write(alpha_figure(alpha_trajectories(run_dir, metrics)), files_dir,
                          f"{prefix}alpha", "alpha", "α trajectories"))
    return [entry for entry in entries if entry is not None]


CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3} tr.bad td{background:#fde8e8} tr.busy td{background:#fff6dd}
tr.selected td:first-child{font-weight:bold}
figure{margin:1.5em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:13px;color:#555} .warn{color:#a05000} code{background:#f6f6f6}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]],
           row_classes: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figures_html(entries: Sequence[FigureEntry]) -> str:
    parts = []
    for entry in entries:
        caption = f"{entry.title}" + (f" — {entry.caption}" if entry.caption else "")
        parts.append(
            f'<figure id="fig-{_esc(Path(entry.filename).stem)}" '
            f'data-figure="{_esc(entry.figure_id)}">'
            f'<img src="{_esc(entry.filename)}" alt="{_esc(entry.title)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")
    return "\n".join(parts) or "<p>No figure: none of the data they need exist.</p>"


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_esc(title)}</title><style>{CSS}</style></head>\n"
            f"<body>\n<h1>{_esc(title)}</h1>\n{body}\n</body></html>\n")


RUN_FACTS = ("model.name", "head.name", "head.penultimate_nodes", "head.dropout_penultimate",
             "dataset.name", "optimizer.name", "optimizer.lr", "trainer.seed", "trainer.epochs")


def _run_facts(run: agg.RunRecord) -> str:
    rows = [["state", run.state], ["reason", run.reason or ""], ["epoch", run.epoch]]
    rows += [[key, run.config[key]] for key in RUN_FACTS if key in run.config]
    summary = run.summary or {}
    for key in ("test/accuracy", "train/accuracy", "val/accuracy", "best/test/accuracy",
                "best_epoch", "convergence_epoch", "epochs"):
        if key in summary:
            rows.append([key, agg.format_number(summary[key])])
    return _table(["", str(run.run_dir)], rows)


def run_report_body(run_dir: Path, files_dir: Path) -> str:
    run = agg.load_run(run_dir)
    metrics = curves(read_metrics(run_dir / "metrics.jsonl"))
    entries = curve_figures({run.name: metrics}, files_dir)
    entries += run_level_figures(run_dir, metrics, files_dir)
    return f"<h2>Run</h2>{_run_facts(run)}\n<h2>Figures</h2>\n{_figures_html(entries)}"


def _aggregate_html(result: agg.AggregateResult) -> str:
    names = agg.metric_names(result)
    main = [n for n in dict.fromkeys([result.select, *agg.TABLE_COLUMNS,
                                      "test/binarity/score", "test/same_encoding_fraction",
                                      "test/collapse/within_class_variation",
                                      "test/mahalanobis/auroc", "test/perturbation/score"])
            if n in names]
    header = ["variant", "repeats", "excluded runs", "best lr (seed:lr)", *main]
    rows = [[v.label, f"{len(v.selected)} of {len(v.seeds)}",
             f"{len(v.excluded_runs)} of {len(v.runs)}",
             " ".join(f"{s.seed}:{agg.format_number(s.lr)}" for s in v.selected) or "-",
             *[agg.format_stats(v.metrics.get(n)) for n in main]] for v in result.variants]
    full_rows = [[name, *[agg.format_stats(v.metrics.get(name)) for v in result.variants]]
                 for name in names]
    warnings = "".join(f'<p class="warn">warning: {_esc(w)}</p>' for w in result.warnings)
    return (f"<p>Best LR per seed by <code>{_esc(result.select)}</code>; mean ± population "
            f"std over seeds (n = seeds with a finite value). Variant keys: "
            f"<code>{_esc(', '.join(result.variant_keys) or 'none')}</code>.</p>{warnings}"
            f"{_table(header, rows)}<details><summary>every summary metric</summary>"
            f"{_table(['metric', *[v.label for v in result.variants]], full_rows)}</details>")


def _runs_html(runs: Sequence[agg.RunRecord], select: str,
               result: agg.AggregateResult | None = None) -> str:
    selected = result.selected_runs() if result else set()
    rows, classes = [], []
    for run in runs:
        value = agg.selection_value(run, select)
        variant = result.run_variant[run.name] if result else ""
        reason = agg.exclusion_reason(run, select) or ""
        rows.append([run.name + (" *" if run.name in selected else ""), run.state, variant,
                     run.seed, run.lr, agg.format_number(value), reason])
        classes.append("selected" if run.name in selected else
                       "" if run.state == "ok" else "busy" if run.state == "running" else "bad")
    return _table(["run (* selected)", "state", "variant", "seed", "lr", select, "reason"],
                  rows, classes)


def sweep_report_body(sweep_dir: Path, files_dir: Path, select: str) -> str:
    runs = agg.load_runs(sweep_dir)
    try:
        result = agg.aggregate(runs, select=select, sweep_dir=sweep_dir)
    except KeyError as error:  # nothing selectable yet (all running or failed): still list runs
        return (f'<p class="warn">No aggregate: {_esc(error.args[0])}</p>'
                f"<h2>Runs</h2>{_runs_html(runs, select)}")
    by_name = {run.name: run for run in runs}
    run_metrics = {s.run: curves(read_metrics(by_name[s.run].run_dir / "metrics.jsonl"))
                   for v in result.variants for s in v.selected}
    series = {v.label: mean_curves([run_metrics[s.run] for s in v.selected])
              for v in result.variants if v.selected}
    parts = [f"<h2>Aggregate</h2>{_aggregate_html(result)}",
             f"<h2>Runs</h2>{_runs_html(runs, select, result)}",
             "<h2>Variants compared</h2><p>Mean ± population std over the selected run of "
             "each seed.</p>", _figures_html(curve_figures(series, files_dir, "sweep_"))]
    for index, v in enumerate(result.variants):
        if not v.selected:
            parts.append(f"<h2>{_esc(v.label)}</h2><p>No usable run.</p>")
            continue
        chosen = min(v.selected, key=lambda s: agg.value_order(s.seed))
        run = by_name[chosen.run]
        entries = run_level_figures(run.run_dir, run_metrics[chosen.run], files_dir,
                                    f"variant{index}_")
        parts.append(f"<h2>{_esc(v.label)}</h2><p>Representative run <code>{_esc(run.name)}"
                     f"</code> (seed {_esc(chosen.seed)}, lr {_esc(chosen.lr)}): the selected "
                     f"run of the lowest seed.</p>{_figures_html(entries)}")
    return "\n".join(parts)


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return any((path / name).exists() for name in ("status.json", "metrics.jsonl", "config.yaml"))


def build_report(path: str | Path, out: str | Path | None = None,
                 select: str = agg.DEFAULT_SELECT) -> Path:
    """Write the report of a run dir or sweep dir; return the HTML path (default
    ``<path>/report.html``, figures in ``report_files/`` beside it)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory")
    out = Path(out) if out else path / "report.html"
    files_dir = out.parent / f"{out.stem}_files"
    files_dir.mkdir(parents=True, exist_ok=True)
    for stale in files_dir.glob("*.png"):  # a figure whose data disappeared must not linger
        stale.unlink()
    if is_run_dir(path):
        title, body = f"latentgeo run {path.resolve().name}", run_report_body(path, files_dir)
    else:
        title = f"latentgeo sweep {path.resolve().name}"
        body = sweep_report_body(path, files_dir, select)
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(_page(title, body), encoding="utf-8")
    tmp.replace(out)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m latentgeo.report",
        description="Write a static report.html (figures as PNGs in report_files/) for a run "
                    "dir or a sweep dir. Each figure appears only when its data exist.",
        epilog="figures and the data each needs:\n\n" + (__doc__ or "")[
            (__doc__ or "=").index("="):],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", type=Path, help="a run dir or a sweep dir")
    parser.add_argument("--out", type=Path, help="HTML file to write (default PATH/report.html)")
    parser.add_argument("--select", default=agg.DEFAULT_SELECT, metavar="METRIC",
                        help="sweep only: summary key for the best-LR selection "
                             "(test/accuracy or val/accuracy)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = build_report(args.path, args.out, args.select)
    except (FileNotFoundError, KeyError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
