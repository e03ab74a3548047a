"""The helpers that exercise sets 04a/04b add to ``initlab.grading.checks``: ``truth`` and the
predict-then-run experiments, each against the mean-field theory it measures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from initlab import theory
from initlab.grading import checks as C


@pytest.mark.parametrize("value", [True, np.True_, torch.tensor(True), np.array([True])])
def test_truth_accepts_bools(value) -> None:
    assert C.truth(value, "x") is True


@pytest.mark.parametrize("value", [1, "True", None, torch.tensor(1.0), torch.ones(2, dtype=bool)])
def test_truth_rejects_other_types_naming_them(value) -> None:
    with pytest.raises(AssertionError, match=r"^x is .*, but it should be True or False$"):
        C.truth(value, "x")


def mean_log(fn, seeds) -> float:
    return sum(math.log(fn(s)) for s in seeds) / len(seeds)


def test_leaky_relu_growth_matches_mean_field() -> None:
    # (1 + a^2) per layer at Var[w] = 2/n; one network's log has sd 0.14 (the 04a q7 comment),
    # the mean of 4 has 0.07: 0.35 is 5 sd.
    got = mean_log(lambda s: C.leaky_relu_growth(0.5, 2.0, 512, 20, 256, s), range(4))
    assert abs(got - 19 * math.log(1.25)) < 0.35


def test_relu_bias_second_moment_grows_linearly() -> None:
    # He's sigma_w^2 = 2 keeps q, the bias adds sigma_b^2 per layer: q_21 = 1 + 20 sigma_b^2.
    got = mean_log(lambda s: C.relu_bias_second_moment(2.0, 0.5, 512, 21, 128, s), range(4))
    assert abs(got - math.log(11.0)) < 0.5
    flat = mean_log(lambda s: C.relu_bias_second_moment(2.0, 0.0, 512, 21, 128, s), range(4))
    assert abs(flat) < 0.5


def test_residual_growth_compounds() -> None:
    got = mean_log(lambda s: C.residual_growth(0.5, 6, 2.0, 512, 256, s), range(2))
    assert abs(got - math.log(2.0 * 1.25**6)) < 0.05


@pytest.mark.parametrize(("sw2", "sb2"), [(1.0, 0.2), (3.0, 0.1)])
def test_tanh_chi1_measured_matches_theory(sw2: float, sb2: float) -> None:
    got = mean_log(lambda s: C.tanh_chi1_measured(sw2, sb2, 512, 30, 20, 16, s), range(2))
    assert abs(got - math.log(theory.chi1("tanh", sw2, sb2))) < 0.05


def test_experiments_are_seeded_and_leave_the_global_generator_alone() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = C.residual_growth(1.0, 3, 1.0, 64, 32, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert a == C.residual_growth(1.0, 3, 1.0, 64, 32, seed=7)
