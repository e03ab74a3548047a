"""initlab.init against torch.nn.init: signatures, bit-identical draws, errors, warnings."""

import inspect
import math
import warnings

import pytest
import torch
import torch.nn.init as T

import initlab.init as I

# Every name torch.nn.init exports, read from torch itself: the functions, and the deprecated
# aliases without the trailing underscore (every alias names a function of the list).
TORCH_ALL = list(T.__all__)
DEPRECATED = [n for n in TORCH_ALL if f"{n}_" in TORCH_ALL]
TORCH_NAMED = [n for n in TORCH_ALL if n not in DEPRECATED]
# Private helpers of torch.nn.init that third-party code (timm, model repositories) calls.
TORCH_PRIVATE_USED = ["_calculate_fan_in_and_fan_out", "_calculate_correct_fan"]


def test_every_torch_name_is_present():
    assert len(TORCH_NAMED) >= 15 and len(DEPRECATED) >= 11  # torch 2.13's list
    missing = [n for n in TORCH_ALL + TORCH_PRIVATE_USED if not callable(getattr(I, n, None))]
    assert not missing, missing
    assert set(TORCH_ALL) <= set(I.__all__)


@pytest.mark.parametrize("name", DEPRECATED)
def test_deprecated_alias_warns_and_fills_like_torch(name):
    shape = (4, 3, 3) if name == "dirac" else (6, 4)
    args = {"constant": (0.5,), "sparse": (0.5,)}.get(name, ())
    with pytest.warns(FutureWarning) as theirs:
        torch.manual_seed(5)
        a = getattr(T, name)(torch.empty(shape), *args)
    with pytest.warns(FutureWarning) as ours:
        torch.manual_seed(5)
        b = getattr(I, name)(torch.empty(shape), *args)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert getattr(I, name).__name__ == name
    if name != "sparse":  # sparse_ draws its mask from the generator; see test_sparse_*
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(5, 3), (8, 4, 3), (16, 8, 3, 3), (2, 3, 1, 2, 2)])
def test_private_fan_helpers_like_torch(shape):
    t = torch.empty(shape)
    assert I._calculate_fan_in_and_fan_out(t) == T._calculate_fan_in_and_fan_out(t)
    for mode in ("fan_in", "fan_out", "FAN_OUT"):
        ours, theirs = I._calculate_correct_fan(t, mode), T._calculate_correct_fan(t, mode)
        assert ours == theirs and type(ours) is type(theirs)


def _t(*shape):
    return torch.empty(*shape)


# Bad calls that torch rejects with a designed exception: ours must raise an instance of
# torch's type (it may be narrower or carry a second base, e.g. ArgumentError). Left out on
# purpose: calls where torch fails by accident (AttributeError on a non-tensor,
# ZeroDivisionError for trunc_normal_(std=0)); initlab raises TypeError/ValueError there.
BAD_CALLS = [
    ("uniform_", (_t(3),), {"a": 1.0, "b": 0.0}),
    ("normal_", (_t(3),), {"std": -1.0}),
    ("trunc_normal_", (_t(3),), {"a": 1.0, "b": 0.0}),
    ("constant_", (_t(3),), {"val": "a"}),
    ("eye_", (_t(3, 3, 3),), {}),
    ("dirac_", (_t(4, 3, 3),), {"groups": 3}),
    ("dirac_", (_t(4, 3),), {}),
    ("xavier_uniform_", (_t(3, 4),), {"gain": -1.0}),
    ("xavier_normal_", (_t(3),), {}),
    ("kaiming_uniform_", (_t(3, 4),), {"mode": "fan_avg"}),
    ("kaiming_normal_", (_t(3, 4),), {"nonlinearity": "swish"}),
    ("kaiming_normal_", (_t(3, 4),), {"nonlinearity": "leaky_relu", "a": "x"}),
    ("orthogonal_", (_t(3),), {}),
    ("sparse_", (_t(3, 4, 5), 0.5), {}),
    ("calculate_gain", ("gelu",), {}),
    ("_calculate_fan_in_and_fan_out", (_t(3),), {}),
    ("_calculate_correct_fan", (_t(3, 4), "fan_avg"), {}),
]


@pytest.mark.parametrize(
    ("name", "args", "kwargs"), BAD_CALLS, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_CALLS)]
)
def test_error_types_like_torch(name, args, kwargs):
    with pytest.raises(Exception) as theirs:
        getattr(T, name)(*args, **kwargs)
    assert type(theirs.value) in (ValueError, RuntimeError, TypeError), theirs.value
    with pytest.raises(type(theirs.value)):
        getattr(I, name)(*args, **kwargs)


@pytest.mark.parametrize("name", TORCH_NAMED)
def test_same_signature_and_defaults(name):
    ours = inspect.signature(getattr(I, name)).parameters
    theirs = inspect.signature(getattr(T, name)).parameters
    assert list(ours) == list(theirs)
    for p in theirs:
        assert ours[p].default == theirs[p].default, p
        assert ours[p].kind == theirs[p].kind, p


# (name, shapes, kwargs): every torch-named function whose sampling algorithm is torch's.
RANDOM = [
    ("uniform_", {"a": -0.3, "b": 0.7}),
    ("normal_", {"mean": 0.2, "std": 0.5}),
    ("xavier_uniform_", {}),
    ("xavier_uniform_", {"gain": 5 / 3}),
    ("xavier_normal_", {"gain": math.sqrt(2)}),
    ("kaiming_uniform_", {}),
    ("kaiming_uniform_", {"a": math.sqrt(5)}),
    ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_normal_", {"nonlinearity": "relu"}),
    ("kaiming_normal_", {"a": 0.2, "mode": "FAN_OUT"}),
    ("kaiming_normal_", {"nonlinearity": "tanh"}),
    ("orthogonal_", {}),
    ("orthogonal_", {"gain": 2.0}),
]
SHAPES = [(64, 32), (20, 50), (16, 8, 3, 3), (6, 4, 5)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("name", "kwargs"), RANDOM)
def test_bit_identical_with_generator(name, kwargs, shape):
    a = getattr(T, name)(torch.empty(shape), generator=torch.Generator().manual_seed(7), **kwargs)
    b = getattr(I, name)(torch.empty(shape), generator=torch.Generator().manual_seed(7), **kwargs)
    assert torch.equal(a, b)


@pytest.mark.parametrize(("name", "kwargs"), RANDOM)
def test_bit_identical_with_global_seed(name, kwargs):
    torch.manual_seed(11)
    a = getattr(T, name)(torch.empty(16, 8, 3, 3), **kwargs)
    after_torch = torch.rand(3)
    torch.manual_seed(11)
    b = getattr(I, name)(torch.empty(16, 8, 3, 3), **kwargs)
    after_ours = torch.rand(3)
    assert torch.equal(a, b)
    assert torch.equal(after_torch, after_ours)  # the same amount of randomness consumed


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_bit_identical_other_dtypes(dtype):
    for name in ("xavier_uniform_", "kaiming_normal_", "normal_"):
        a = getattr(T, name)(
            torch.empty(30, 20, dtype=dtype), generator=torch.Generator().manual_seed(1)
        )
        b = getattr(I, name)(
            torch.empty(30, 20, dtype=dtype), generator=torch.Generator().manual_seed(1)
        )
        assert torch.equal(a, b), name


def test_sparse_matches_torch_with_global_seed():
    torch.manual_seed(3)
    a = T.sparse_(torch.empty(40, 12), sparsity=0.3, std=0.2)
    torch.manual_seed(3)
    b = I.sparse_(torch.empty(40, 12), sparsity=0.3, std=0.2)
    assert torch.equal(a, b)


@pytest.mark.parametrize("groups", [1, 2, 3])
@pytest.mark.parametrize("shape", [(6, 4, 3), (6, 2, 3, 5), (12, 4, 3, 3, 3), (3, 6, 2, 2)])
def test_dirac_identical(shape, groups):
    if shape[0] % groups:
        with pytest.raises(ValueError, match="divisible by groups"):
            I.dirac_(torch.empty(shape), groups)
        return
    assert torch.equal(I.dirac_(torch.empty(shape), groups), T.dirac_(torch.empty(shape), groups))


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4), (1, 7)])
def test_eye_identical(shape):
    assert torch.equal(I.eye_(torch.empty(shape)), T.eye_(torch.empty(shape)))
    assert torch.equal(I.eye_(torch.empty(shape)), torch.eye(*shape))


def test_constant_ones_zeros_identical():
    for val in (0.3, -2, 7.5):
        assert torch.equal(I.constant_(torch.empty(4, 5), val), T.constant_(torch.empty(4, 5), val))
    assert torch.equal(I.ones_(torch.empty(4, 5)), torch.ones(4, 5))
    assert torch.equal(I.zeros_(torch.empty(4, 5)), torch.zeros(4, 5))


GAIN_CASES = [
    ("linear", None),
    ("conv1d", None),
    ("conv_transpose3d", None),
    ("sigmoid", None),
    ("tanh", None),
    ("relu", None),
    ("leaky_relu", None),
    ("leaky_relu", 0.2),
    ("leaky_relu", 3),
    ("leaky_relu", -0.5),
    ("selu", None),
    ("relu", "ignored, as in torch"),
]


@pytest.mark.parametrize(("nonlinearity", "param"), GAIN_CASES)
def test_calculate_gain_table(nonlinearity, param):
    ours, theirs = I.calculate_gain(nonlinearity, param), T.calculate_gain(nonlinearity, param)
    assert ours == theirs and type(ours) is type(theirs)


@pytest.mark.parametrize("param", [True, False, "0.1", [0.1], torch.tensor(0.1)])
def test_calculate_gain_bad_param_like_torch(param):
    with pytest.raises(ValueError, match="not a valid number") as theirs:
        T.calculate_gain("leaky_relu", param)
    with pytest.raises(ValueError, match="not a valid number") as ours:
        I.calculate_gain("leaky_relu", param)
    assert str(ours.value).startswith(str(theirs.value))


@pytest.mark.parametrize("nonlinearity", ["gelu", "ReLU", None, 3])
def test_calculate_gain_unknown_like_torch(nonlinearity):
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        T.calculate_gain(nonlinearity)
    with pytest.raises(ValueError, match="Unsupported nonlinearity") as e:
        I.calculate_gain(nonlinearity)
    assert "relu" in str(e.value)  # names what is allowed


FAN_FNS = ["xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"]


@pytest.mark.parametrize("name", FAN_FNS)
@pytest.mark.parametrize("shape", [(5,), ()])
def test_fewer_than_two_dims_same_error(name, shape):
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        getattr(T, name)(torch.empty(shape))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        getattr(I, name)(torch.empty(shape))


@pytest.mark.parametrize("name", ["orthogonal_", "eye_", "sparse_", "dirac_"])
def test_structured_dims_errors_like_torch(name):
    args = (0.1,) if name == "sparse_" else ()
    bad = torch.empty(3, 4, 2, 2, 2, 2) if name == "dirac_" else torch.empty(5)
    with pytest.raises(ValueError, match="Only tensors with") as theirs:
        getattr(T, name)(bad, *args)
    with pytest.raises(ValueError, match="Only tensors with") as ours:
        getattr(I, name)(bad, *args)
    assert str(ours.value).startswith(str(theirs.value))


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
def test_kaiming_bad_mode_like_torch(name):
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        getattr(T, name)(torch.empty(3, 4), mode="fan_avg")
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        getattr(I, name)(torch.empty(3, 4), mode="fan_avg")


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
def test_kaiming_zero_element_warns_like_torch(name):
    t = torch.empty(0, 4)
    with pytest.warns(UserWarning, match="zero-element tensors is a no-op"):
        assert getattr(T, name)(t) is t
    with pytest.warns(UserWarning, match="zero-element tensors is a no-op"):
        assert getattr(I, name)(t) is t


def test_no_warning_on_ordinary_calls():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in FAN_FNS:
            getattr(I, name)(torch.empty(8, 4))


def test_runtime_errors_of_tensor_ops_still_caught_as_runtime_error():
    # torch raises RuntimeError from Tensor.uniform_/normal_; ours is a ValueError that is
    # also a RuntimeError, so code written against torch keeps working.
    for fn, kwargs in [(I.uniform_, {"a": 1.0, "b": 0.0}), (I.normal_, {"std": -1.0})]:
        with pytest.raises(RuntimeError):
            fn(torch.empty(3), **kwargs)
        with pytest.raises(ValueError, match="a must be|std must be"):
            fn(torch.empty(3), **kwargs)


def test_in_place_same_object_and_no_grad():
    for name, kwargs in RANDOM:
        p = torch.nn.Parameter(torch.empty(8, 4))
        out = getattr(I, name)(p, **kwargs)
        assert out is p and out.requires_grad and out.grad_fn is None
    p = torch.nn.Parameter(torch.empty(8, 4))
    for fn in (I.ones_, I.zeros_, I.eye_, I.trunc_normal_, lambda t: I.sparse_(t, 0.5)):
        assert fn(p) is p and p.grad_fn is None
