"""The exercise tests' helpers: type messages, precision-aware comparison, KS power."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from initlab.grading import checks as C

NUMBER = "a number (int, float, NumPy scalar or one-element tensor; float32 or float64)"


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("1.5", "str '1.5'"),
        ([1.5], "list [1.5]"),
        (None, "None"),
        (..., "... (the placeholder"),
        (True, "bool True"),
        (np.True_, "bool"),
        (1 + 2j, "complex"),
        (torch.ones(2), "shape (2,)"),
        (torch.tensor(True), "torch.bool"),
        # low-precision floats: 64 ulps of bfloat16 is 50 %, so a wrong answer would pass
        (torch.tensor(0.25, dtype=torch.bfloat16), "torch.bfloat16"),
        (torch.tensor(0.25, dtype=torch.float16), "torch.float16"),
        (torch.tensor(0.25).to(torch.float8_e4m3fn), "torch.float8_e4m3fn"),
        (np.float16(0.25), "float16"),
        (np.array([0.25], dtype=np.float16), "float16"),
        (torch.tensor(1 + 0j), "complex"),
    ],
)
def test_number_rejects_non_numbers_naming_both_types(value, got) -> None:
    with pytest.raises(AssertionError) as err:
        C.number(value, "q2: uniform_var_factor")
    text = str(err.value)
    assert text.startswith("q2: uniform_var_factor is ") and got in text and NUMBER in text
    assert not text.endswith("'")  # otter strips quotes from both ends of a message


@pytest.mark.parametrize(
    "value",
    [1.5, 3, np.float32(1.5), np.int64(3), torch.tensor(1.5), torch.tensor([1.5]), np.array(1.5)],
)
def test_number_accepts_scalars_of_every_numeric_kind(value) -> None:
    assert C.number(value, "x") in (1.5, 3.0)
    assert C.number(torch.tensor(3, dtype=torch.int8), "x") == 3.0
    assert C.number(np.uint16(3), "x") == 3.0


def test_close_number_gives_no_marks_for_a_low_precision_guess() -> None:
    """The red team's blank notebook: 1.0 in bfloat16 "matched" 1.3 (64 ulps of bfloat16 is
    0.5 relative). A low-precision float is not a number here, whatever its value."""
    for dtype in (torch.bfloat16, torch.float16, torch.float8_e4m3fn, torch.float8_e5m2):
        with pytest.raises(AssertionError, match="float32 or float64"):
            C.close_number(torch.tensor(1.0).to(dtype), 1.3, "v")


def test_number_rejects_nan_and_inf() -> None:
    for bad in (math.nan, math.inf, torch.tensor(-math.inf)):
        with pytest.raises(AssertionError, match="finite"):
            C.number(bad, "x")


def test_close_number_uses_the_answers_precision() -> None:
    f32 = torch.tensor(100, dtype=torch.float32) * 0.01 * 4.0  # 4 up to float32 rounding
    assert C.close_number(f32, 4.0, "v", rel=1e-9)
    assert C.close_number(np.float32(1 / 3), 1 / 3, "v", rel=1e-9)
    assert not C.close_number(4.0 * (1 + 1e-7), 4.0, "v", rel=1e-9)  # float64: strict
    assert not C.close_number(torch.tensor(4.01), 4.0, "v", rel=1e-9)


def test_text_and_digest() -> None:
    assert C.text(" Identity ", "r", ("zero", "identity")) == "identity"
    with pytest.raises(AssertionError, match="should be one of"):
        C.text(0, "r", ("zero", "identity"))
    assert C.digest(" He ") == C.digest("he") != C.digest("lecun")


def test_ks_constants_are_what_the_docstring_derives() -> None:
    """KS_ALPHA's critical value 3.272, and KS_MIN_SAMPLES >= ((3.272 + 1.950) / 0.0572)**2
    (DKW with Massart's constant at 0.999; the Kolmogorov distances of the two impostors)."""
    lo, hi = 2.0, 5.0  # the critical value: kolmogorov_sf(lam) = KS_ALPHA, by bisection
    for _ in range(60):
        lo, hi = (
            (lo, (lo + hi) / 2)
            if C.kolmogorov_sf((lo + hi) / 2) < C.KS_ALPHA
            else ((lo + hi) / 2, hi)
        )
    lam = hi
    assert round(lam, 3) == 3.272
    assert 1.950 - 1e-3 < math.sqrt(math.log(2 / (1 - 0.999)) / 2) <= 1.950  # rounded up
    dist = torch.distributions.Normal(0.0, 1.0)

    def sup_gap(std: float, clamp: bool) -> float:  # sup |F_U(-1,1) - F_impostor| on a grid
        x = torch.linspace(-1, 1, 200_001, dtype=torch.float64)
        f = dist.cdf(x / std)
        if clamp:  # a clamped normal jumps at -1 and 1: the gap there is its mass beyond 1
            return max(
                (f - (x + 1) / 2).abs().max().item(), 1 - dist.cdf(torch.tensor(1 / std)).item()
            )
        return (f - (x + 1) / 2).abs().max().item()

    assert sup_gap(1 / math.sqrt(3), False) == pytest.approx(0.0572, abs=1e-4)
    assert sup_gap(0.6470475, True) == pytest.approx(0.0611, abs=1e-4)
    assert C.KS_MIN_SAMPLES >= math.ceil(((lam + 1.950) / 0.0572) ** 2) == 8336


@pytest.mark.parametrize("seed", range(5))
def test_ks_uniform_rejects_a_normal_with_the_same_variance_at_the_minimum_size(seed) -> None:
    g = torch.Generator().manual_seed(seed)
    n = C.KS_MIN_SAMPLES
    right = C.values(torch.rand(n, generator=g) * 2 - 1)
    normal = C.values(torch.randn(n, generator=g) / math.sqrt(3))
    clamped = C.values((torch.randn(n, generator=g) * 0.6470475).clamp(-1, 1))
    assert C.ks_uniform(right, 1.0)[1] > C.KS_ALPHA
    assert C.ks_uniform(normal, 1.0)[1] <= C.KS_ALPHA
    assert C.ks_uniform(clamped, 1.0)[1] <= C.KS_ALPHA
    assert C.ks_normal(normal, 1 / math.sqrt(3))[1] > C.KS_ALPHA
    assert C.ks_normal(right, 1 / math.sqrt(3))[1] <= C.KS_ALPHA
    assert C.ks_two_sample(right, normal)[1] < 1e-3
    other = C.values(torch.rand(n // 2, generator=g) * 2 - 1)
    assert C.ks_two_sample(right, other)[1] > 1e-4


def test_experiments_agree_with_their_theory() -> None:
    # PyTorch's default variance 1/(3n): a ReLU layer multiplies E[z^2] by 1/6, 9 times.
    ratio = C.relu_variance_ratio((1 / 768) ** 0.5, width=256, depth=10, seed=0)
    assert abs(math.log10(ratio) - 9 * math.log10(1 / 6)) < 0.5
    # E log ||M u|| per factor = (log 2 + psi(n/2)) / 2 + log sigma; psi(2) = 1 - Euler's gamma.
    rate = 0.5 * (math.log(2) + 1 - 0.5772156649015329) + math.log(0.5)
    assert abs(C.mean_log_product_norm(4, 0.5, 50, runs=4000, seed=0) - 50 * rate) < 0.25
    msq = C.mean_square_product_norm(4, 1.0, 1, runs=20_000, seed=1)
    assert abs(msq / 4 - 1) < 6 * (2 / (4 * 20_000)) ** 0.5


def test_experiments_remember_plain_number_arguments_only() -> None:
    a = C.tanh_variance_ratio(0.1, width=32, depth=3, batch=64)
    assert C.tanh_variance_ratio(0.1, width=32, depth=3, batch=64) == a  # remembered
    fresh = C.tanh_variance_ratio.__wrapped__(0.1, width=32, depth=3, batch=64)
    assert fresh == a  # the same seeded computation
    assert C.tanh_variance_ratio(np.float64(0.1), width=32, depth=3, batch=64) == a  # computed
    assert C.residual_growth(0.5, 2, width=16, batch=8) == C.residual_growth(
        0.5, 2, width=16, batch=8
    )
