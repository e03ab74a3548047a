"""The library's shape: public names, no import cycle, public torch APIs only, one resolver,
one set of validators, and the functions notebooks use instead of re-implementing them."""

import ast
import importlib
import io
import math
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import initlab
from initlab import init as I
from initlab import theory
from initlab.models import mlp, scaled_sigmoid
from initlab.residual import residual_init_

SRC = Path(initlab.__file__).resolve().parent
PUBLIC_MODULES = sorted(p.stem for p in SRC.glob("*.py") if not p.stem.startswith("_"))


# ----------------------------------------------------------------------- public names
@pytest.mark.parametrize(
    ("public", "private"),
    [
        ("initlab.theory.gaussian_expectation", "initlab._quadrature.gaussian_expectation"),
        ("initlab.gaussian_expectation", "initlab._quadrature.gaussian_expectation"),
        ("initlab.errors.ArgumentError", "initlab._checks.ArgumentError"),
        ("initlab.ArgumentError", "initlab._checks.ArgumentError"),
        ("initlab.init.ArgumentError", "initlab._checks.ArgumentError"),
        ("initlab.init.truncated_std", "initlab._truncnorm.truncated_std"),
        ("initlab.plots.format_table", "initlab._records.format_table"),
        ("initlab.format_table", "initlab._records.format_table"),
        ("initlab.init.InitSummary", "initlab._init_model.InitSummary"),
        ("initlab.residual_init_", "initlab.residual.residual_init_"),
        ("initlab.train.clip_grads_", "initlab._clip.clip_grads_"),
    ],
)
def test_public_name_is_the_private_object(public, private):
    """Every name a notebook needs has a public path; the old private path still works."""

    def get(dotted):
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                obj = getattr(obj, attr)
            return obj
        raise ImportError(dotted)

    assert get(public) is get(private)


def test_old_private_paths_still_import():
    from initlab._clip import check_number, total_grad_norm, unpack_data
    from initlab._meanfield import _NODES, _grad_factor, _resolve, _second_moment, _walk
    from initlab._quadrature import _rule

    assert callable(unpack_data) and callable(check_number) and callable(total_grad_norm)
    assert _NODES % 2 == 0 and callable(_grad_factor) and callable(_second_moment)
    assert callable(_walk) and _resolve("tanh") is torch.tanh
    z, w = _rule(20)
    assert math.isclose(float(np.dot(w, z**2)), 1.0, rel_tol=1e-12)


def _imports(module_path: Path) -> list[tuple[str, str]]:
    tree = ast.parse(module_path.read_text())
    return [
        (node.module or "", alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_public_modules_import_no_underscore_names(module):
    bad = [
        f"{mod}.{name}"
        for mod, name in _imports(SRC / f"{module}.py")
        if mod.startswith("initlab") and name.startswith("_")
    ]
    assert not bad, f"initlab.{module} imports private names {bad}"


def test_no_import_cycle_between_initlab_modules():
    graph = {
        p.stem: {
            mod.split(".")[1]
            for mod, _ in _imports(p)
            if mod.startswith("initlab.") and mod.count(".") == 1
        }
        | {name for mod, name in _imports(p) if mod == "initlab"}
        for p in SRC.glob("*.py")
        if p.stem != "__init__"
    }
    # Depth-first search for a back edge.
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*path, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_import_initlab_init_alone_works():
    """Each module imports on its own in a fresh interpreter (no order-dependent cycle)."""
    code = "; ".join(f"import initlab.{m}" for m in ("init", "residual", "theory", "train"))
    procs = {  # one interpreter per first module, all at once
        first: subprocess.Popen(
            [sys.executable, "-c", f"import initlab.{first}; {code}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for first in ("init", "residual", "theory", "train", "_init_model", "_scaling")
    }
    for first, proc in procs.items():
        _, err = proc.communicate()
        assert proc.returncode == 0, f"import initlab.{first} first: {err[-2000:]}"


def _code_tokens(path: Path) -> list[str]:
    """The source of ``path`` without comments and string literals (docstrings included)."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [t.string for t in tokens if t.type not in (tokenize.COMMENT, tokenize.STRING)]


def test_src_uses_public_torch_apis_only():
    """No ``torch._foreach_norm``, ``nn.modules.conv._ConvNd``, ...: private torch names
    change without notice (strings and comments, where such names are discussed, aside)."""
    private = re.compile(r"\b(?:torch|nn|F)(?:\.[A-Za-z]\w*)*\._[A-Za-z]")
    offenders = [
        f"{path.relative_to(SRC)}: {m.group(0)}"
        for path in sorted(SRC.rglob("*.py"))
        for m in private.finditer(" ".join(_code_tokens(path)).replace(" . ", "."))
    ]
    assert not offenders, offenders


# --------------------------------------------------------------- one activation resolver
def test_gain_for_and_theory_resolve_the_same_names():
    assert I.gain_for("scaled_sigmoid") == I.gain_for(scaled_sigmoid)
    assert I.gain_for("linear") == I.gain_for("identity") == 1.0
    # chi1 at sigma_w2 = 1, q* = 0: scaled_sigmoid has slope 1 at 0, like tanh.
    assert theory.chi1("scaled_sigmoid", 1.0) == pytest.approx(theory.chi1(scaled_sigmoid, 1.0))
    assert theory.chi1("scaled_sigmoid", 1.0) == pytest.approx(1.0, abs=1e-6)
    for fn in (I.gain_for, lambda name: theory.chi1(name, 1.0)):
        with pytest.raises(ValueError, match="'no_such' is not a function"):
            fn("no_such")
        with pytest.raises(TypeError, match="must be a callable or an activation name"):
            fn(3.0)


# ------------------------------------------------------------ one rule for bad arguments
@pytest.mark.parametrize(
    "call",
    [
        lambda: initlab.fit(
            mlp(2, 4, 1, 2), (torch.zeros(4, 2), torch.zeros(4)), epochs=1.5, lr=0.1
        ),
        lambda: initlab.fit(
            mlp(2, 4, 1, 2), (torch.zeros(4, 2), torch.zeros(4)), epochs=1, lr="0.1"
        ),
        lambda: theory.chi1("tanh", "1.0"),
        lambda: theory.gaussian_expectation(np.cos, n=2.5),
        lambda: I.init_model_(mlp(2, 4, 1, 2), scale="2"),
        lambda: I.uniform_(torch.empty(3), a="0"),
        lambda: I.init_model_(mlp(2, 4, 1, 2), bias="0"),
        lambda: mlp(2, 4.0, 1, 2),
        lambda: mlp(2, 4, True, 2),
        lambda: initlab.models.rnn_regressor(1, "8"),
        lambda: initlab.models.gpt(10, 8, 16, 1.0, 2),
        lambda: initlab.models.gpt(10, 8, 16, 1, 2, tie=1),
        lambda: initlab.models.gpt2_init_(initlab.models.gpt(10, 8, 16, 1, 2), std="0.02"),
        lambda: initlab.data.digits(test_size="0.25"),
        lambda: initlab.data.digits(standardize=1),
        lambda: initlab.data.spirals(n=100.0),
        lambda: initlab.data.char_batch(torch.zeros(50, dtype=torch.long), 2.0, 4),
        lambda: I.fan_in_and_fan_out(torch.empty(4, 4, 3), groups=2.0),
        lambda: I.fan_in_and_fan_out(torch.empty(4, 4, 3), transposed=None),
        lambda: initlab.diagnostics.update_ratio(mlp(2, 4, 1, 2), "0.1"),
        lambda: initlab.mup.mup_init_(mlp(2, 8, 1, 2), mlp(2, 4, 1, 2), gain="1"),
        lambda: initlab.mup.mup_param_groups(mlp(2, 8, 1, 2), mlp(2, 4, 1, 2), lr=None),
        lambda: initlab.lsuv.lsuv_(mlp(2, 4, 1, 2), torch.zeros(8, 2), orthogonal=0),
    ],
)
def test_wrong_type_is_a_type_error(call):
    with pytest.raises(TypeError) as err:
        call()
    assert isinstance(err.value, initlab.errors.ArgumentTypeError)
    assert isinstance(err.value, ValueError)  # what these raised before: old code keeps working


@pytest.mark.parametrize(
    "call",
    [
        lambda: initlab.fit(mlp(2, 4, 1, 2), (torch.zeros(4, 2), torch.zeros(4)), epochs=0, lr=0.1),
        lambda: theory.chi1("tanh", -1.0),
        lambda: theory.gaussian_expectation(np.cos, n=1),
        lambda: I.init_model_(mlp(2, 4, 1, 2), scale=0.0),
        lambda: I.init_model_(mlp(2, 4, 1, 2), scale=math.inf),
        lambda: mlp(2, 0, 1, 2),
        lambda: initlab.models.gpt(10, 8, 16, 0, 2),
        lambda: initlab.models.gpt2_init_(initlab.models.gpt(10, 8, 16, 1, 2), std=-0.02),
        lambda: initlab.data.digits(test_size=1.5),
        lambda: initlab.data.spirals(n=1),
        lambda: initlab.diagnostics.update_ratio(mlp(2, 4, 1, 2), -0.1),
        lambda: I.fan_in_and_fan_out(torch.empty(4, 4, 3), groups=0),
        lambda: initlab.mup.mup_init_(mlp(2, 8, 1, 2), mlp(2, 4, 1, 2), gain=0.0),
        lambda: initlab.mup.mup_param_groups(mlp(2, 8, 1, 2), mlp(2, 4, 1, 2), lr=math.nan),
    ],
)
def test_wrong_value_is_a_value_error_not_a_type_error(call):
    with pytest.raises(ValueError) as err:
        call()
    assert not isinstance(err.value, TypeError)


# --------------------------------------------------------------- init_model_(scale=...)
@pytest.mark.parametrize(
    "scheme",
    ["kaiming_normal", "xavier_uniform", "lecun_normal", "orthogonal", "kaiming_truncated_normal"],
)
def test_init_model_scale_multiplies_every_std(scheme):
    nets = [mlp(32, 64, 3, 10, activation="relu") for _ in range(2)]
    base = I.init_model_(nets[0], scheme, generator=torch.Generator().manual_seed(3))
    scaled = I.init_model_(nets[1], scheme, generator=torch.Generator().manual_seed(3), scale=0.25)
    for a, b in zip(base, scaled, strict=True):
        assert b.std == pytest.approx(0.25 * a.std, rel=1e-12)
    for p, q in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        if p.dim() > 1:  # the same draws, scaled: equal up to float32 rounding
            torch.testing.assert_close(q, 0.25 * p, rtol=1e-6, atol=1e-9)


def test_init_model_scale_gives_torch_default_variance():
    """scale = 3**-0.5 with lecun_uniform is nn.Linear's default law U(-1/sqrt(n), 1/sqrt(n))."""
    layer = nn.Linear(400, 300)
    I.init_model_(layer, "lecun_uniform", scale=3**-0.5, generator=torch.Generator().manual_seed(0))
    w = layer.weight
    assert w.abs().max().item() <= 1 / math.sqrt(400)
    # Var = 1/(3 n); the sample variance of N uniforms has relative std sqrt(0.8 / N).
    assert abs(w.var().item() * 3 * 400 - 1) < 5 * math.sqrt(0.8 / w.numel())


def test_init_model_bias_std_is_the_mean_field_init():
    """lecun_normal with scale = sigma_w and bias_std = sigma_b draws, layer by layer, what
    chapters 3 and 4 wrote by hand: W ~ N(0, sigma_w2 / fan_in), then b ~ N(0, sigma_b2)."""
    sw2, sb2 = 1.76, 0.05
    nets = [mlp(32, 64, 3, 10, activation="tanh") for _ in range(2)]
    gen = torch.Generator().manual_seed(4)
    for layer in nets[0].modules():
        if isinstance(layer, nn.Linear):
            I.variance_scaling_(layer.weight, sw2, "fan_in", "normal", generator=gen)
            I.normal_(layer.bias, 0.0, math.sqrt(sb2), generator=gen)
    I.init_model_(
        nets[1], "lecun_normal", scale=math.sqrt(sw2), bias_std=math.sqrt(sb2),
        generator=torch.Generator().manual_seed(4),
    )  # fmt: skip
    for p, q in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=0.0)  # the std rounds differently
    big = nn.Linear(10, 20_000)
    I.init_model_(big, bias=0.5, bias_std=2.0, generator=torch.Generator().manual_seed(0))
    b = big.bias.double()
    # mean and variance of 20000 normal draws: 5 standard errors
    assert abs(b.mean().item() - 0.5) < 5 * 2.0 / math.sqrt(b.numel())
    assert abs(b.var().item() / 4.0 - 1) < 5 * math.sqrt(2 / (b.numel() - 1))
    with pytest.raises(ValueError, match="bias_std"):
        I.init_model_(mlp(2, 4, 1, 2), bias=None, bias_std=0.1)
    with pytest.raises(ValueError, match="bias_std"):
        I.init_model_(mlp(2, 4, 1, 2), bias_std=-0.1)
    with pytest.raises(TypeError, match="bias_std"):
        I.init_model_(mlp(2, 4, 1, 2), bias_std="0.1")


# ------------------------------------------------------------------ residual_init_
def _by_hand(net, gen):
    """The recipe as chapter 4's notebooks write it out."""
    I.init_model_(net, "kaiming_normal", generator=gen)
    for layer in [net.stem, net.head, *(block.branch.linear1 for block in net[1:-1])]:
        I.lecun_normal_(layer.weight, generator=gen)
    return net


@pytest.mark.parametrize("norm", [None, "batch"])
def test_residual_init_equals_the_recipe_written_out(norm):
    a = _by_hand(mlp(16, 32, 4, 10, residual=True, norm=norm), torch.Generator().manual_seed(1))
    b = mlp(16, 32, 4, 10, residual=True, norm=norm)
    summary = residual_init_(b, generator=torch.Generator().manual_seed(1))
    for (n, p), (m, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert n == m and torch.equal(p, q), n
    torch.manual_seed(4)
    a = _by_hand(mlp(16, 32, 2, 10, residual=True), None)
    torch.manual_seed(4)
    b = mlp(16, 32, 2, 10, residual=True)
    residual_init_(b)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    stds = {r.name: r.std for r in summary}
    assert stds["stem"] == pytest.approx(16**-0.5) and stds["head"] == pytest.approx(32**-0.5)
    assert stds["block1.branch.linear1"] == stds["head"]
    assert stds["block1.branch.linear2"] == pytest.approx(math.sqrt(2 / 32))


def test_residual_init_keeps_each_branch_variance_preserving():
    width = 512
    net = mlp(width, width, 1, 10, residual=True)
    residual_init_(net, generator=torch.Generator().manual_seed(0))
    x = torch.randn(1024, width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        h = net.stem(x)
        branch = net[1].branch(h)
    q_h, q_b = h.pow(2).mean().item(), branch.pow(2).mean().item()
    # LeCun stem: E[h^2] = E[x^2] = 1; the branch (LeCun, ReLU, He) returns what it got.
    # Each ratio is a chi-square-like average over width^2 weights: allow 10 %.
    assert q_h == pytest.approx(1.0, rel=0.1)
    assert q_b / q_h == pytest.approx(1.0, rel=0.1)


def test_residual_init_needs_a_residual_block():
    with pytest.raises(ValueError, match="no initlab.residual.Residual"):
        residual_init_(mlp(4, 8, 2, 2))
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        residual_init_("net")


# ------------------------------------------------------- learners see public names only
REPO = SRC.parents[1]
PRIVATE_IMPORT = re.compile(r"\binitlab\._(?!_)\w+|from initlab(?:\.\w+)* import\s+\(?\s*_\w+")


def test_notebooks_exercises_and_outer_tests_use_public_names_only():
    files = [
        *REPO.glob("chapters/**/*.ipynb"),
        *REPO.glob("exercises/*.ipynb"),
        *(p for p in REPO.glob("tests/**/*.py") if "unit" not in p.relative_to(REPO).parts),
    ]
    assert files
    offenders = [
        f"{p.relative_to(REPO)}: {m.group(0)}"
        for p in files
        for m in PRIVATE_IMPORT.finditer(p.read_text())
    ]
    assert not offenders, offenders
