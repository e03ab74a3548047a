"""Tests for initlab.data: shapes, dtypes, determinism, balance, no leakage, targets."""

import socket

import pytest
import torch

from initlab.data import Dataset, adding_problem, digits, spirals


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test: the data sets must be offline."""

    def refuse(*args, **kwargs):
        raise AssertionError("initlab.data tried to use the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _rows(X):
    return {tuple(r) for r in X.reshape(len(X), -1).tolist()}


def _assert_same(a: Dataset, b: Dataset):
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_digits_shapes_dtypes_and_split():
    d = digits()
    assert isinstance(d, Dataset)
    assert d.X_train.shape == (1347, 64) and d.X_test.shape == (450, 64)
    assert d.X_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.y_test.dtype == torch.int64
    assert set(d.y_train.unique().tolist()) == set(range(10))
    # stratified: every class's share of the test set is within one sample of its overall share
    counts = torch.bincount(torch.cat([d.y_train, d.y_test]), minlength=10)
    expected = counts * len(d.y_test) / counts.sum()
    assert ((torch.bincount(d.y_test, minlength=10) - expected).abs() <= 1).all()


def test_digits_standardised_with_train_statistics_only():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = digits()
    std = d.X_train.std(0)
    varying = std > 0
    assert d.X_train.mean(0).abs().max() < 1e-5
    torch.testing.assert_close(std[varying], torch.ones(int(varying.sum())))
    # the test set's own mean is not 0: it was not standardised with its own statistics
    assert d.X_test.mean(0).abs().max() > 0.05
    # exactly (x - mean_train) / std_train on the raw test images of the same stratified split
    X, y = load_digits(return_X_y=True)
    X = torch.as_tensor(X, dtype=torch.float32)
    i_train, i_test = train_test_split(range(len(y)), test_size=450, random_state=0, stratify=y)
    mu, sd = X[i_train].mean(0), X[i_train].std(0)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    torch.testing.assert_close(d.X_test, (X[i_test] - mu) / sd)
    torch.testing.assert_close(d.X_train, (X[i_train] - mu) / sd)


def test_digits_unstandardised_is_the_same_split_of_the_raw_pixels():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw, std = digits(standardize=False), digits()
    X, y = load_digits(return_X_y=True)
    i_train, i_test = train_test_split(range(len(y)), test_size=450, random_state=0, stratify=y)
    torch.testing.assert_close(raw.X_train, torch.as_tensor(X[i_train], dtype=torch.float32))
    torch.testing.assert_close(raw.X_test, torch.as_tensor(X[i_test], dtype=torch.float32))
    assert torch.equal(raw.y_train, std.y_train) and torch.equal(raw.y_test, std.y_test)
    assert raw.X_train.min() == 0 and raw.X_train.max() == 16
    with pytest.raises(TypeError, match="standardize"):
        digits(standardize="no")


def test_digits_deterministic_and_seeded():
    _assert_same(digits(seed=3), digits(seed=3))
    assert not torch.equal(digits(seed=0).y_test, digits(seed=1).y_test)


@pytest.mark.parametrize("make", [digits, spirals, adding_problem])
def test_no_train_test_overlap(make):
    d = make()
    assert not _rows(d.X_train) & _rows(d.X_test)


def test_spirals():
    d = spirals(n=600, classes=4, noise=0.1, seed=2)
    assert d.X_train.shape == (450, 2) and d.X_test.shape == (150, 2)
    assert d.X_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    all_y = torch.cat([d.y_train, d.y_test])
    assert torch.bincount(all_y).tolist() == [150] * 4
    assert ((torch.bincount(d.y_test) - 150 / 4).abs() <= 1).all()  # stratified
    assert (torch.cat([d.X_train, d.X_test]).norm(dim=1) <= 1 + 1e-6).all()
    _assert_same(spirals(n=600, classes=4, noise=0.1, seed=2), d)
    assert not torch.equal(spirals(seed=0).X_train, spirals(seed=1).X_train)
    assert len(torch.cat([spirals(n=301).y_train, spirals(n=301).y_test])) == 301


def test_adding_problem():
    d = adding_problem(n=200, seq_len=30, seed=5)
    assert d.X_train.shape == (150, 30, 2) and d.X_test.shape == (50, 30, 2)
    assert d.y_train.shape == (150,) and d.y_train.dtype == torch.float32
    X = torch.cat([d.X_train, d.X_test])
    y = torch.cat([d.y_train, d.y_test])
    values, markers = X[..., 0], X[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert set(markers.unique().tolist()) == {0.0, 1.0}
    assert (markers.sum(1) == 2).all()
    assert (markers[:, :15].sum(1) == 1).all() and (markers[:, 15:].sum(1) == 1).all()
    # target = sum of the two marked values
    marked = values[markers.bool()].reshape(-1, 2)
    torch.testing.assert_close(y, marked.sum(1))
    _assert_same(adding_problem(n=200, seq_len=30, seed=5), d)
    assert not torch.equal(adding_problem(seed=0).y_train, adding_problem(seed=1).y_train)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: digits(test_size=0.0), "test_size"),
        (lambda: digits(test_size=1.5), "test_size"),
        (lambda: spirals(n=0), "n"),
        (lambda: spirals(classes=1), "classes"),
        (lambda: spirals(noise=-1.0), "noise"),
        (lambda: adding_problem(seq_len=1), "seq_len"),
        (lambda: adding_problem(n=2, test_size=0.9), "test_size"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_pydoc_text_is_offline_and_consistent():
    from initlab.data import pydoc_text

    text = pydoc_text()
    assert text.ids.dtype == torch.int64 and text.ids.dim() == 1
    assert len(text.ids) > 100_000  # about 465 000 characters in CPython 3.11
    assert text.vocab == "".join(sorted(set(text.vocab)))
    assert int(text.ids.min()) == 0 and int(text.ids.max()) == len(text.vocab) - 1
    head = pydoc_text(500)
    decoded = "".join(head.vocab[i] for i in head.ids.tolist())
    assert decoded == "".join(text.vocab[i] for i in text.ids[:500].tolist())


def test_char_batch_targets_are_the_next_characters():
    from initlab.data import char_batch

    ids = torch.arange(1000)
    x, y = char_batch(ids, 16, 32, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (16, 32)
    assert torch.equal(y, x + 1)  # consecutive ids: the target is the next one
    assert int(y.max()) <= 999
    a, _ = char_batch(ids, 4, 8, torch.Generator().manual_seed(1))
    b, _ = char_batch(ids, 4, 8, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_char_batch_errors():
    from initlab.data import char_batch, pydoc_text

    with pytest.raises(ValueError, match="context"):
        char_batch(torch.arange(10), 2, 10)
    with pytest.raises(ValueError, match="batch_size"):
        char_batch(torch.arange(10), 0, 4)
    with pytest.raises(ValueError, match="ids"):
        char_batch(torch.zeros(3, 3, dtype=torch.int64), 2, 2)
    with pytest.raises(ValueError, match="n_chars"):
        pydoc_text(1)
