"""The figures' common ground: the house style (``STYLE``, ``styled``), atomic saving (PNG, SVG,
PDF), the page-width layout, colours, legends, log axes and the in-panel notes every figure
module draws with.
"""

from __future__ import annotations

import functools
import io
import math
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from latentgeo.records import atomic_write_bytes

REPORT_DPI = 100  # figures of report.html
DPI = 120
PAGE_WIDTH = 13.6  # inches: 1360 px at REPORT_DPI, the report's 1400 px page less its margins
ANNOTATE_MAX_CELLS = 150  # write the value into each cell only while they stay legible
STYLE = {
    "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "legend.fontsize": 8, "figure.titlesize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.color": "0.92", "grid.linewidth": 0.6, "axes.axisbelow": True,
    "svg.fonttype": "none",  # SVG text stays text: editable, searchable, small
    "svg.hashsalt": "latentgeo",  # the same figure gives the same SVG
}
F = TypeVar("F", bound=Callable[..., Any])


def styled(function: F) -> F:
    """Draw inside ``STYLE`` (font sizes, spines, grid); rcParams are restored afterwards."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(STYLE):
            return function(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------------- saving


def save_png(fig: Figure, path: Path, dpi: int | None = DPI) -> None:
    """PNG into memory, then one atomic write (a figure is never half written)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(Path(path), buffer.getvalue())


def save_figure(fig: Figure, path: Path, formats: Sequence[str] = ("png", "svg"),
                dpi: int = REPORT_DPI) -> list[Path]:
    """``path`` with each suffix of ``formats`` (PNG for the page, SVG or PDF for a paper),
    each written atomically; returns the paths in ``formats`` order."""
    written = []
    engine = fig.get_layout_engine()
    with matplotlib.rc_context(STYLE):
        for index, fmt in enumerate(formats):
            target = Path(path).with_suffix(f".{fmt}")
            buffer = io.BytesIO()
            metadata = {"Date": None} if fmt in ("svg", "pdf") else None  # reproducible files
            fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
            atomic_write_bytes(target, buffer.getvalue())
            written.append(target)
            if index == 0:  # the layout is in inches: the first format's serves the others
                fig.set_layout_engine("none")
    fig.set_layout_engine(engine)
    return written


# ----------------------------------------------------------------------------- layout


def new_figure(panels: int, width: float = 4.2, height: float = 3.2,
               columns: int | None = None) -> tuple[Figure, list[Any]]:
    """``panels`` axes on a grid of ``columns`` (default ≤ 3), each ``width`` × ``height``
    inches, shrunk to fit ``PAGE_WIDTH``; constrained layout, so titles and labels fit."""
    columns = max(1, min(columns or min(panels, 3), panels))
    rows = math.ceil(panels / columns)
    scale = min(1.0, PAGE_WIDTH / (width * columns))
    fig = Figure(figsize=(width * columns * scale, height * rows * max(scale, 0.8)),
                 dpi=REPORT_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, without touching pyplot's global state
    axes = [fig.add_subplot(rows, columns, i + 1) for i in range(panels)]
    return fig, axes


def colors(count: int) -> list[Any]:
    """Categorical colours (tab10) up to 10, else evenly spaced viridis."""
    cmap = colormaps["tab10" if count <= 10 else "viridis"]
    if count <= 10:
        return [cmap(i) for i in range(count)]
    return [cmap(i / max(count - 1, 1)) for i in range(count)]


def sequence_colors(count: int) -> list[Any]:
    """Ordered colours (init dark → final light), for epochs and depths."""
    cmap = colormaps["viridis"]
    return [cmap(0.9 * i / max(count - 1, 1)) for i in range(count)]


def legend_below(fig: Figure, handles: Sequence[Any], labels: Sequence[str] | None = None,
                 title: str | None = None, columns: int | None = None) -> Any:
    """The figure's one legend, below the panels (it never covers data)."""
    labels = list(labels) if labels is not None else [h.get_label() for h in handles]
    # as many columns as fit the figure's width: an entry is its handle plus its text
    entry = 0.45 + 0.075 * max((len(label) for label in labels), default=1)
    fits = max(1, int(fig.get_size_inches()[0] / entry))
    columns = max(1, min(columns or 6, len(labels), fits))
    return fig.legend(list(handles), labels, loc="outside lower center", ncols=columns,
                      frameon=False, title=title)


def log_axis(ax: Any, axis: str = "y") -> None:
    """A log scale labelled with plain numbers (0.02, 0.05, 0.1), no minor-tick labels."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    target.set_minor_formatter(NullFormatter())


def wants_log(values: Sequence[float]) -> bool:
    """A log axis pays for positive values spanning a decade or more (else it shows no tick)."""
    return bool(values) and min(values) > 0 and max(values) >= 10 * min(values)


def balanced_columns(panels: int, most: int = 4) -> int:
    """Columns for ``panels`` panels with at most ``most`` per row and rows as full as can be
    (5 → 3 + 2, not 4 + 1)."""
    rows = math.ceil(panels / most)
    return max(1, math.ceil(panels / rows))


def wrap(text: str, width: int = 34) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def note_in_axes(ax: Any, text: str, y: float = 0.5, width: int = 34, **kwargs: Any) -> Any:
    """A grey italic sentence at the centre of the panel (at axes fraction ``y``): why there is
    nothing to draw here."""
    options = {"ha": "center", "va": "center", "fontsize": 8, "color": "0.35",
               "style": "italic", "transform": ax.transAxes, "wrap": False, **kwargs}
    return ax.text(0.5, y, wrap(text, width), **options)


def axis_label(layer: str) -> str:
    """A layer name without the ``backbone.blocks.`` / ``backbone.`` prefix every conv shares."""
    return layer.removeprefix("backbone.blocks.").removeprefix("backbone.")
