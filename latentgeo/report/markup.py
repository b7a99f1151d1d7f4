"""The page's HTML: its CSS, escaping, tables (the run's facts, the aggregate, the runs), figure
elements, the navigation and the page shell.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentgeo import aggregate as agg
from latentgeo import selection
from latentgeo.records import RunDir

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1em 20px;max-width:1400px;
 color:#222;line-height:1.4}
h1{font-size:1.6em;overflow-wrap:anywhere} h2{margin-top:1.8em;border-bottom:1px solid #ddd}
.scroll{overflow-x:auto;max-width:100%;margin:0.6em 0}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top;
 max-width:24em}
th{background:#f3f3f3;position:sticky;top:0} tr.bad td{background:#fde8e8}
tr.busy td{background:#fff6dd} tr.selected td:first-child{font-weight:bold}
figure{margin:1.2em 0;max-width:100%} figure img{max-width:100%;height:auto;
 border:1px solid #eee;display:block}
figcaption{font-size:13px;color:#555;max-width:70em} figcaption a{color:#357}
.warn{color:#a05000} .note{color:#555;font-style:italic}
code{background:#f6f6f6;overflow-wrap:anywhere} nav{font-size:14px}
nav a{margin-right:0.8em;white-space:nowrap}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]],
           row_classes: Sequence[str] | None = None) -> str:
    # headers break after "/" and "_" (test/<wbr>accuracy), never inside a word
    head = "".join("<th>" + re.sub(r"([/_])", r"\1<wbr>", _esc(h)) + "</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


@dataclass
class FigureEntry:
    """One figure of the report: its family id (see the table of ``latentgeo.report.page``),
    files and caption."""

    figure_id: str
    title: str
    files: list[str]  # relative to the page: PNG first
    caption: str = ""

    @property
    def filename(self) -> str:
        return self.files[0]


def _figures_html(entries: Sequence[FigureEntry]) -> str:
    parts = []
    for entry in entries:
        links = " · ".join(f'<a href="{_esc(f)}">{_esc(Path(f).suffix[1:].upper())}</a>'
                           for f in entry.files)
        caption = f"<b>{_esc(entry.title)}</b>" + (f". {_esc(entry.caption)}"
                                                     if entry.caption else "")
        parts.append(
            f'<figure id="fig-{_esc(Path(entry.filename).stem)}" '
            f'data-figure="{_esc(entry.figure_id)}">'
            f'<img src="{_esc(entry.filename)}" alt="{_esc(entry.title)}">'
            f"<figcaption>{caption} <span>[{links}]</span></figcaption></figure>")
    return "\n".join(parts)


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{CSS}</style></head>\n"
            f"<body>\n<h1>{_esc(title)}</h1>\n{body}\n</body></html>\n")


def _nav(items: Sequence[tuple[str, str]]) -> str:
    links = "".join(f'<a href="#{_esc(a)}">{_esc(h)}</a>' for a, h in items)
    return f"<nav>{links}</nav>" if links else ""


RUN_FACTS = ("model.name", "head.name", "head.penultimate_nodes", "head.dropout_penultimate",
             "dataset.name", "optimizer.name", "optimizer.lr", "trainer.seed", "trainer.epochs")


def _run_facts(run: RunDir) -> str:
    rows = [["state", run.state], ["reason", run.reason or ""], ["epoch", run.epoch]]
    config = run.flat_config()
    rows += [[key, config[key]] for key in RUN_FACTS if key in config]
    summary = run.summary() or {}
    for key in ("test/accuracy", "train/accuracy", "val/accuracy", "best/test/accuracy",
                "best_epoch", "convergence_epoch", "epochs"):
        if key in summary:
            rows.append([key, agg.format_number(summary[key])])
    return _table(["", str(run.dir)], rows)


def _aggregate_html(result: selection.AggregateResult) -> str:
    names = agg.metric_names(result)
    main = [n for n in dict.fromkeys([result.select, *selection.TABLE_COLUMNS,
                                      "test/binarity/score", "test/same_encoding_fraction",
                                      "test/collapse/within_class_variation",
                                      "test/mahalanobis/auroc_exact", "test/perturbation/score"])
            if n in names]
    header = ["variant", "repeats", "excluded runs", "best lr (seeds that chose it)", *main]
    rows = [[v.label, f"{len(v.selected)} of {len(v.seeds)}",
             f"{len(v.excluded_runs)} of {len(v.runs)}", lr_choices(v.selected),
             *[agg.format_stats(v.metrics.get(n)) for n in main]] for v in result.variants]
    per_seed = [[v.label, " ".join(f"{s.seed}:{agg.format_number(s.lr)}" for s in v.selected)
                 or "-"] for v in result.variants]
    full_rows = [[name, *[agg.format_stats(v.metrics.get(name)) for v in result.variants]]
                 for name in names]
    warnings = "".join(f'<p class="warn">warning: {_esc(w)}</p>' for w in result.warnings)
    return (f"<p>Best LR per seed by <code>{_esc(result.select)}</code>; mean ± population "
            f"std over seeds (n = seeds with a finite value). Variant keys: "
            f"<code>{_esc(', '.join(result.variant_keys) or 'none')}</code>.</p>{warnings}"
            f"{_table(header, rows)}<details><summary>the best lr of each seed</summary>"
            f"{_table(['variant', 'seed:lr'], per_seed)}</details>"
            f"<details><summary>every summary metric</summary>"
            f"{_table(['metric', *[v.label for v in result.variants]], full_rows)}</details>")


LR_CHOICES_SHOWN = 3  # the commonest selected LRs a cell names; the rest are counted


def lr_choices(selected: Sequence[selection.Selection]) -> str:
    """``0.001 (38/50 seeds), 0.003 (12/50 seeds)``: the selected LRs, commonest first (ties:
    the smaller LR), whatever the number of seeds."""
    if not selected:
        return "-"
    counts = Counter(selection.canonical(s.lr) for s in selected)
    lrs = {selection.canonical(s.lr): s.lr for s in selected}
    order = sorted(counts, key=lambda text: (-counts[text], selection.value_order(lrs[text])))
    shown = [f"{agg.format_number(lrs[text])} ({counts[text]}/{len(selected)} seeds)"
             for text in order[:LR_CHOICES_SHOWN]]
    if len(order) > LR_CHOICES_SHOWN:
        shown.append(f"{len(order) - LR_CHOICES_SHOWN} other LRs")
    return ", ".join(shown)


RUNS_SHOWN = 20  # a longer run table folds into a <details> under a line of state counts


def _runs_html(runs: Sequence[RunDir], select: str,
               result: selection.AggregateResult | None = None) -> str:
    selected = result.selected_runs() if result else set()
    rows, classes = [], []
    for run in runs:
        value = selection.selection_value(run, select)
        variant = result.run_variant[run.name] if result else ""
        reason = selection.exclusion_reason(run, select) or ""
        rows.append([run.name + (" *" if run.name in selected else ""), run.state, variant,
                     selection.seed_of(run), selection.lr_of(run), agg.format_number(value),
                     reason])
        classes.append("selected" if run.name in selected else
                       "" if run.state == "ok" else "busy" if run.state == "running" else "bad")
    table = _table(["run (* selected)", "state", "variant", "seed", "lr", select, "reason"],
                   rows, classes)
    if len(runs) <= RUNS_SHOWN:
        return table
    counts = Counter(run.state for run in runs)
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return (f"<p>{len(runs)} runs: {_esc(states)}; {len(selected)} selected.</p>"
            f"<details><summary>every run, its state and why it was not selected</summary>"
            f"{table}</details>")
