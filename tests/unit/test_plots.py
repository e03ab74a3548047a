"""Tests for initlab.plots: every function returns a labelled Figure and leaves nothing open."""

import matplotlib

matplotlib.use("Agg")

from types import SimpleNamespace  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import nn  # noqa: E402

from initlab import diagnostics, plots, theory  # noqa: E402


@pytest.fixture(autouse=True)
def no_show_no_leak(monkeypatch):
    """plt.show must never be called, and no pyplot figure may be left open."""
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show() was called"))
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before


def check(fig, n_axes):
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_axes
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel()
    fig.canvas.draw()  # renders without error or warning
    plt.close(fig)


def test_style_is_a_function_and_a_context_manager():
    old = matplotlib.rcParams["figure.dpi"]
    matplotlib.rcParams["figure.dpi"] = 72.0
    try:
        with plots.style():
            assert matplotlib.rcParams["figure.dpi"] == 100
            assert matplotlib.rcParams["font.family"] == ["sans-serif"]
            colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
            assert colors == plots.COLORS
        assert matplotlib.rcParams["figure.dpi"] == 72.0
    finally:
        matplotlib.rcParams["figure.dpi"] = old
    fig = plots.variance_vs_depth([1.0, 2.0])
    assert fig.get_dpi() == 100 and tuple(fig.get_size_inches()) == plots.FIGSIZE
    plt.close(fig)


def test_layer_histograms_glorot_layout():
    gen = np.random.default_rng(0)
    fig = plots.layer_histograms([np.tanh(gen.normal(size=500) * s) for s in (0.5, 1, 2, 4)])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        f"layer {k}" for k in range(1, 5)
    ]
    x, y = ax.lines[0].get_data()
    assert np.sum(y) * (x[1] - x[0]) == pytest.approx(1.0)  # normalised histogram
    assert ax.get_xlabel() == "activation value"
    check(fig, 1)
    fig = plots.layer_histograms({"a": torch.randn(100), "b": torch.randn(100)}, logy=True)
    assert fig.axes[0].get_yscale() == "log"
    check(fig, 1)


def test_layer_histograms_from_records():
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
    recs = diagnostics.record(net, torch.randn(32, 4), keep=True)
    fig = plots.layer_histograms(recs)
    assert len(fig.axes[0].lines) == 2
    check(fig, 1)
    with pytest.raises(ValueError, match="keep=True"):
        plots.layer_histograms(diagnostics.record(net, torch.randn(32, 4)))
    with pytest.raises(ValueError, match="values"):
        plots.layer_histograms([])


def test_variance_vs_depth_prediction_over_measurement():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)
    )
    comp = theory.compare(net, torch.randn(64, 16), verbose=False)
    fig = plots.variance_vs_depth({"default": comp}, title="PyTorch default")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "layer"
    measured, predicted = ax.lines
    assert predicted.get_zorder() > measured.get_zorder()  # drawn over the measurement
    assert predicted.get_linestyle() == "-" and measured.get_marker() == "o"
    check(fig, 1)
    fig = plots.variance_vs_depth(comp, direction="backward")
    assert fig.axes[0].get_ylabel() == "gradient variance"
    check(fig, 1)
    fig = plots.variance_vs_depth([1e-3, 1e-6, 0.0], predicted=np.array([1e-3, 1e-6, 1e-9]))
    check(fig, 1)
    with pytest.raises(ValueError, match="predicted"):
        plots.variance_vs_depth([1.0, 2.0], predicted=[1.0])
    with pytest.raises(ValueError, match="direction"):
        plots.variance_vs_depth([1.0], direction="sideways")


def test_training_curves():
    good = SimpleNamespace(
        loss=list(np.geomspace(2.0, 0.01, 20)), epoch_loss=[1.0, 0.1], test_accuracy=[0.7, 0.95]
    )
    diverged = SimpleNamespace(loss=[2.0, 5.0, float("nan")], epoch_loss=[], test_accuracy=[])
    fig = plots.training_curves({"Kaiming": good, "too large lr": diverged})
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_yscale() == "log"  # spans more than a decade
    assert (loss_ax.get_xlabel(), acc_ax.get_xlabel()) == ("step", "epoch")
    assert acc_ax.get_ylabel() == "test accuracy"
    check(fig, 2)
    flat = SimpleNamespace(loss=[1.0, 0.9, 0.8], epoch_loss=[0.9], test_accuracy=[])
    fig = plots.training_curves({"flat": flat})
    assert fig.axes[0].get_yscale() == "linear"
    check(fig, 1)
    with pytest.raises(ValueError, match="histories"):
        plots.training_curves({})


def test_signal_propagation_plot():
    net = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(8, 8), nn.ReLU())])
    pts = diagnostics.signal_propagation(net, torch.randn(64, 8))
    fig = plots.signal_propagation_plot(pts, xlabel="layer")
    assert [a.get_yscale() for a in fig.axes] == ["log", "log"]
    assert fig.axes[0].get_ylabel() == "avg. squared channel mean"
    assert len(fig.axes[0].lines[0].get_xdata()) == 4
    check(fig, 2)
    fig = plots.signal_propagation_plot({"a": pts, "b": pts})
    assert fig.axes[1].get_legend() is not None
    check(fig, 2)
    with pytest.raises(ValueError, match="points"):
        plots.signal_propagation_plot([])


def test_figure_displays_as_png_in_ipython():
    """A figure built without pyplot is shown as an image when it is a cell's value."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        fig = plots.variance_vs_depth([1.0, 0.5, 0.25])
        data, _ = shell.display_formatter.format(fig)
        assert "image/png" in data and len(data["image/png"]) > 1000
    finally:
        InteractiveShell.clear_instance()


def test_format_table_aligns_numbers_right_and_text_left():
    text = plots.format_table(
        ["net", "var", "n"], [["tanh, LeCun", 0.98765, 3], ["ReLU", np.float64(12.5), 10]]
    )
    head, rule, *body = text.splitlines()
    assert head == "net            var   n" and rule == "-----------  -----  --"
    assert body == ["tanh, LeCun  0.988   3", "ReLU          12.5  10"]
    assert plots.format_table(["a"], [[float("nan")]]).splitlines()[-1] == "-"
    assert plots.format_table(["x", "y"], [[1.23456, 2.0]], fmt=[".2f", ".1e"]).endswith(
        "1.23  2.0e+00"
    )
    with pytest.raises(ValueError, match="one per column"):
        plots.format_table(["a", "b"], [[1, 2]], fmt=[".3g"])
    with pytest.raises(ValueError, match="every row must have 2 cells"):
        plots.format_table(["a", "b"], [[1, 2, 3]])
