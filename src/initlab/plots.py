"""The course's figures, in one consistent style.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (so no
figure is left open in pyplot's registry and nothing is shown twice); in a notebook,
end the cell with the figure (or call ``display(fig)``, or ``glue`` it for a caption).
No function calls ``plt.show()``.

* :func:`style` -- the rcParams every figure uses (sans-serif, 100 dpi, 7 x 4 in, the
  Okabe-Ito colour cycle); call it to apply them globally or use ``with style():``.
* :func:`layer_histograms` -- per-layer normalised histograms overlaid, the layout of
  Glorot & Bengio (2010), Fig. 6 (activations) and Fig. 7 (back-propagated gradients).
* :func:`variance_vs_depth` -- measured variance per layer on a log axis with the
  mean-field prediction (:func:`initlab.theory.predict`) drawn over it.
* :func:`training_curves` -- loss per step and test accuracy per epoch of several runs.
* :func:`signal_propagation_plot` -- Brock, De & Smith (2021)'s signal propagation plots.
* :func:`format_table` -- the plain-text table every printed result uses.

Example:
    >>> fig = variance_vs_depth([1.0, 0.5, 0.25], predicted=[1.0, 0.5, 0.25])
    >>> fig.axes[0].get_yscale()
    'log'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import matplotlib as mpl
import numpy as np
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from initlab._table import format_table

__all__ = [
    "COLORS",
    "STYLE",
    "style",
    "layer_histograms",
    "variance_vs_depth",
    "training_curves",
    "signal_propagation_plot",
    "format_table",
]

#: Okabe & Ito's colour-blind-safe palette, in the order the figures use it.
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
#: Figure width and height in inches: 700 x 400 px at 100 dpi, the width of a book page.
FIGSIZE = (7.0, 4.0)
STYLE: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.figsize": FIGSIZE,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica", "sans-serif"],
    "mathtext.fontset": "dejavusans",
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.prop_cycle": cycler(color=COLORS),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.8,
    "lines.markersize": 4.5,
}


class _Style(AbstractContextManager):
    def __init__(self) -> None:
        self._saved = {k: mpl.rcParams[k] for k in STYLE}
        mpl.rcParams.update(STYLE)

    def __exit__(self, *exc: object) -> None:
        mpl.rcParams.update(self._saved)


def style() -> AbstractContextManager:
    """Apply the course's matplotlib style (:data:`STYLE`).

    Called alone it changes ``matplotlib.rcParams`` for the session; used as
    ``with style(): ...`` it restores the previous values on exit.

    Example:
        >>> with style():
        ...     mpl.rcParams["figure.dpi"]
        100.0
    """
    return _Style()


def _register_notebook_display() -> None:
    """Make a bare Figure display as a PNG in IPython/Jupyter.

    IPython registers its PNG formatter for Figures only once pyplot's inline backend has
    been activated; a figure built without pyplot, returned as a cell's last value, would
    otherwise show as ``<Figure size ...>`` text. A formatter the user already chose (SVG,
    retina) is left alone.
    """
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import select_figure_formats
    except ImportError:  # pragma: no cover - IPython is always installed with the course
        return
    shell = get_ipython()
    if shell is None:
        return
    formatters = shell.display_formatter.formatters
    if any(
        Figure in formatters[mime].type_printers
        for mime in ("image/png", "image/svg+xml", "image/jpeg", "application/pdf")
    ):
        return
    select_figure_formats(shell, {"png"}, bbox_inches="tight")


def _figure(ncols: int = 1, ax: Axes | None = None) -> tuple[Figure, list[Axes]]:
    _register_notebook_display()
    if ax is not None:
        if ncols != 1:
            raise ValueError("ax can only be given for single-panel figures")
        return ax.figure, [ax]
    fig = Figure(figsize=FIGSIZE, dpi=100, layout="constrained")
    return fig, list(np.atleast_1d(fig.subplots(1, ncols)))


def _array(values: Any, argname: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{argname} is empty")
    return arr


def _series(values: Any, argname: str) -> dict[str, Any]:
    if isinstance(values, Mapping):
        if not values:
            raise ValueError(f"{argname} is empty")
        return dict(values)
    return {"": values}


def _positive(arr: np.ndarray) -> np.ndarray:
    """Values that a log axis can show (others become gaps)."""
    return np.where(np.isfinite(arr) & (arr > 0), arr, np.nan)


def _log_axis(ax: Axes, *arrays: np.ndarray) -> None:
    """Log y axis; plain numbers ("0.4", "2") on it when the data span < 2 decades, and
    minor ticks labelled only when they span less than one (else the labels overlap)."""
    ax.set_yscale("log")
    vals = np.concatenate([a[np.isfinite(a) & (a > 0)] for a in arrays]) if arrays else []
    if len(vals) and vals.max() / vals.min() < 100:
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain if vals.max() / vals.min() < 10 else NullFormatter())


def _spans_decades(*arrays: np.ndarray) -> bool:
    vals = np.concatenate([a[np.isfinite(a) & (a > 0)] for a in arrays])
    return vals.size > 0 and vals.max() / vals.min() > 10


def layer_histograms(
    values: Mapping[str, Any] | Sequence[Any],
    *,
    bins: int = 50,
    range: tuple[float, float] | None = None,  # noqa: A002 (numpy's name)
    xlabel: str = "activation value",
    title: str | None = None,
    logy: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """Overlaid normalised histograms, one line per layer (Glorot & Bengio 2010, Fig. 6-7).

    Args:
        values: one array/tensor per layer, as a sequence (legend "layer 1", "layer 2", ...)
            or a mapping label -> values. :class:`initlab.diagnostics.Records` from
            ``record(..., keep=True)`` work too: their activation rows' outputs are used.
        bins, range: passed to :func:`numpy.histogram` (default range: all values' min..max).
        xlabel: e.g. ``"activation value"`` or ``"back-propagated gradient"``.
        logy: log density axis (for heavy tails).

    Example:
        >>> import numpy as np
        >>> fig = layer_histograms([np.tanh(np.random.randn(1000)) for _ in range(3)])
        >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        ['layer 1', 'layer 2', 'layer 3']
    """
    if hasattr(values, "select") and hasattr(values, "column"):  # diagnostics.Records
        outputs = values.select("activation").column("output")
        if any(o is None for o in outputs):
            raise ValueError("values: Records need record(..., keep=True) to hold the outputs")
        values = outputs
    if isinstance(values, Mapping):
        series = {str(k): _array(v, f"values[{k!r}]") for k, v in values.items()}
    else:
        series = {f"layer {i + 1}": _array(v, f"values[{i}]") for i, v in enumerate(values)}
    if not series:
        raise ValueError("values is empty: give one array per layer")
    if not (isinstance(bins, int) and bins >= 1):
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    finite = np.concatenate([v[np.isfinite(v)] for v in series.values()])
    if range is None:
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        range = (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)
    with style():
        fig, (a,) = _figure(1, ax)
        for label, v in series.items():
            dens, edges = np.histogram(v[np.isfinite(v)], bins=bins, range=range, density=True)
            a.plot(0.5 * (edges[1:] + edges[:-1]), dens, label=label)
        a.set_xlabel(xlabel)
        a.set_ylabel("density (normalised histogram)")
        if logy:
            a.set_yscale("log")
        a.legend()
        if title:
            a.set_title(title)
    return fig


def _comparison_arrays(value: Any, direction: str) -> tuple[Any, Any] | None:
    if hasattr(value, "measured_forward"):  # initlab.theory.Comparison
        return getattr(value, f"measured_{direction}"), getattr(value, f"predicted_{direction}")
    return None


def variance_vs_depth(
    measured: Any,
    predicted: Any = None,
    *,
    direction: str = "forward",
    ylabel: str | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Variance per layer on a log axis, the prediction drawn over the measurement.

    Args:
        measured: per-layer variances (array-like, layer 1 first), or a mapping
            label -> array (one series per initialisation, say), or an
            :class:`initlab.theory.Comparison` (or a mapping of them), from which
            ``measured_<direction>`` and ``predicted_<direction>`` are taken.
        predicted: the prediction, with the same structure as ``measured`` (optional).
        direction: ``"forward"`` (pre-activations) or ``"backward"`` (gradients), for
            comparisons and the default y label.

    Example:
        >>> fig = variance_vs_depth({"Xavier": [1, 0.5, 0.25], "Kaiming": [1, 1, 1]})
        >>> fig.axes[0].get_xlabel()
        'layer'
    """
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    meas = _series(measured, "measured")
    pred = _series(predicted, "predicted") if predicted is not None else {}
    for k, v in list(meas.items()):
        pair = _comparison_arrays(v, direction)
        if pair is not None:
            meas[k] = pair[0]
            pred.setdefault(k, pair[1])
    if pred and set(pred) != set(meas):
        raise ValueError(
            f"predicted must have the same series as measured: {sorted(meas)} vs {sorted(pred)}"
        )
    if ylabel is None:
        ylabel = "pre-activation variance" if direction == "forward" else "gradient variance"
    with style():
        fig, (a,) = _figure(1, ax)
        shown = []
        for i, (label, v) in enumerate(meas.items()):
            color = COLORS[i % len(COLORS)]
            m = _array(v, f"measured[{label!r}]" if label else "measured")
            shown.append(m)
            name = f"{label} " if label else ""
            layers = np.arange(1, m.size + 1)
            a.plot(layers, _positive(m), "o", color=color, alpha=0.75, label=f"{name}measured")
            if label in pred:
                p = _array(pred[label], f"predicted[{label!r}]" if label else "predicted")
                if p.size != m.size:
                    raise ValueError(
                        f"predicted has {p.size} layers but measured has {m.size} ({label!r})"
                    )
                a.plot(layers, _positive(p), "-", color=color, zorder=3, label=f"{name}predicted")
                shown.append(p)
        _log_axis(a, *shown)
        a.set_xlabel("layer")
        a.set_ylabel(ylabel)
        a.xaxis.get_major_locator().set_params(integer=True)
        a.legend()
        if title:
            a.set_title(title)
    return fig


def training_curves(histories: Mapping[str, Any], *, title: str | None = None) -> Figure:
    """Training loss per step (thin) and per epoch (markers), and test accuracy per epoch.

    Args:
        histories: label -> :class:`initlab.train.History` (anything with ``.loss`` per
            step and ``.epoch_loss`` / ``.test_accuracy`` per epoch). Non-finite losses
            (a diverged run) show as gaps. The loss axis is logarithmic when the losses
            span more than a decade. The accuracy panel appears when a run has test accuracy.

    Example:
        >>> from types import SimpleNamespace as H
        >>> h = H(loss=[2.0, 1.0, 0.5, 0.2], epoch_loss=[1.5, 0.35], test_accuracy=[0.8, 0.9])
        >>> [a.get_xlabel() for a in training_curves({"sgd": h}).axes]
        ['step', 'epoch']
    """
    if not isinstance(histories, Mapping) or not histories:
        raise ValueError("histories must be a non-empty dict label -> History")
    has_acc = any(len(getattr(h, "test_accuracy", []) or []) for h in histories.values())
    with style():
        fig, axes = _figure(2 if has_acc else 1)
        a = axes[0]
        all_loss = []
        for i, (label, h) in enumerate(histories.items()):
            color = COLORS[i % len(COLORS)]
            loss = np.asarray(h.loss, dtype=np.float64)
            loss = np.where(np.isfinite(loss), loss, np.nan)
            all_loss.append(loss)
            a.plot(np.arange(1, loss.size + 1), loss, color=color, alpha=0.35, linewidth=0.9)
            ep = np.asarray(getattr(h, "epoch_loss", []), dtype=np.float64)
            if ep.size and loss.size:
                steps = np.linspace(loss.size / ep.size, loss.size, ep.size)
                a.plot(steps, ep, "o-", color=color, label=label)
            else:
                a.plot([], [], color=color, label=label)
        a.set_xlabel("step")
        a.set_ylabel("training loss")
        if all_loss and _spans_decades(*all_loss):
            a.set_yscale("log")
        a.legend()
        if has_acc:
            b = axes[1]
            for i, (label, h) in enumerate(histories.items()):
                acc = np.asarray(getattr(h, "test_accuracy", []) or [], dtype=np.float64)
                if acc.size:
                    epochs = np.arange(1, acc.size + 1)
                    b.plot(epochs, acc, "o-", color=COLORS[i % len(COLORS)], label=label)
            b.set_xlabel("epoch")
            b.set_ylabel("test accuracy")
            b.xaxis.get_major_locator().set_params(integer=True)
        if title:
            fig.suptitle(title)
    return fig


def signal_propagation_plot(
    points: Mapping[str, Sequence] | Sequence,
    *,
    xlabel: str = "block",
    title: str | None = None,
) -> Figure:
    """Brock, De & Smith (2021)'s signal propagation plot: average squared channel mean
    (left) and average channel variance (right) per residual block, on log axes.

    Args:
        points: the output of :func:`initlab.diagnostics.signal_propagation` (a list of
            ``(name, sq_mean, var)``), or a mapping label -> such a list to compare models.
        xlabel: ``"block"`` for residual networks, ``"layer"`` for plain ones.

    Example:
        >>> fig = signal_propagation_plot([("b1", 0.1, 1.0), ("b2", 0.2, 2.0)])
        >>> [a.get_yscale() for a in fig.axes]
        ['log', 'log']
    """
    series = _series(points, "points")
    with style():
        fig, (a, b) = _figure(2)
        sqs, vars_ = [], []
        for i, (label, pts) in enumerate(series.items()):
            rows = list(pts)
            if not rows:
                raise ValueError(f"points{f'[{label!r}]' if label else ''} is empty")
            sq = _positive(np.array([r[1] for r in rows], dtype=np.float64))
            var = _positive(np.array([r[2] for r in rows], dtype=np.float64))
            sqs.append(sq)
            vars_.append(var)
            depth = np.arange(1, len(rows) + 1)
            color = COLORS[i % len(COLORS)]
            a.plot(depth, sq, "o-", color=color, label=label or None)
            b.plot(depth, var, "o-", color=color, label=label or None)
        for ax_, ylabel, data in (
            (a, "avg. squared channel mean", sqs),
            (b, "avg. channel variance", vars_),
        ):
            _log_axis(ax_, *data)
            ax_.set_xlabel(xlabel)
            ax_.set_ylabel(ylabel)
            ax_.xaxis.get_major_locator().set_params(integer=True)
        if len(series) > 1 or "" not in series:
            b.legend()
        if title:
            fig.suptitle(title)
    return fig
