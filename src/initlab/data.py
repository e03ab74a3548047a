r"""Offline, seeded data sets returned as tensors.

Nothing here downloads: :func:`digits` reads the 8x8 digits that ship inside scikit-learn, the
others are generated. The same ``seed`` gives the same tensors on every run.

Example:
    >>> from initlab.data import digits
    >>> data = digits()
    >>> data.X_train.shape, data.X_train.dtype, data.y_train.dtype
    (torch.Size([1347, 64]), torch.float32, torch.int64)
"""

import math
from typing import NamedTuple

import numpy as np
import torch

from initlab._checks import check_bool, check_int, check_real

__all__ = [
    "CharText",
    "Dataset",
    "adding_problem",
    "char_batch",
    "digits",
    "pydoc_text",
    "spirals",
]


class Dataset(NamedTuple):
    """A train/test split: float32 inputs; int64 labels (classification) or float32 targets."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor


def _check_test_size(test_size: float, n: int) -> int:
    """Number of test samples; both sides of the split must be non-empty."""
    if not 0.0 < check_real("test_size", test_size) < 1.0:
        raise ValueError(f"test_size must be a float in (0, 1), got {test_size!r}")
    n_test = math.ceil(test_size * n)
    if not 0 < n_test < n:
        raise ValueError(f"test_size={test_size!r} leaves an empty train or test set for n={n}")
    return n_test


def _stratified_split(
    X: np.ndarray, y: np.ndarray, test_size: float, seed: int, dtype: torch.dtype
) -> Dataset:
    from sklearn.model_selection import train_test_split

    n_test = _check_test_size(test_size, len(y))
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=n_test, random_state=seed, stratify=y)
    return Dataset(
        torch.as_tensor(X_tr, dtype=torch.float32),
        torch.as_tensor(y_tr, dtype=dtype),
        torch.as_tensor(X_te, dtype=torch.float32),
        torch.as_tensor(y_te, dtype=dtype),
    )


def digits(test_size: float = 0.25, seed: int = 0, standardize: bool = True) -> Dataset:
    r"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, 64 features).

    A stratified split (``seed`` fixes it), then every feature standardised with the *train*
    mean and standard deviation only, :math:`x \mapsto (x - \mu_{train}) / \sigma_{train}`
    (features constant on the train set, such as blank corner pixels, keep
    :math:`\sigma = 1`), so no test statistic leaks into training.

    Args:
        test_size: fraction of samples held out for testing, in (0, 1).
        seed: seed of the split.
        standardize: if False, return the raw pixel intensities (integers 0..16, as floats) of
            the same split, unscaled.

    Example:
        >>> d = digits()
        >>> d.X_train.mean(0).abs().max() < 1e-5
        tensor(True)
    """
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    data = _stratified_split(X, y, test_size, seed, torch.int64)
    check_bool("standardize", standardize)
    if not standardize:
        return data
    mean = data.X_train.mean(0)
    std = data.X_train.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return data._replace(X_train=(data.X_train - mean) / std, X_test=(data.X_test - mean) / std)


def spirals(
    n: int = 1000, classes: int = 3, noise: float = 0.2, test_size: float = 0.25, seed: int = 0
) -> Dataset:
    r"""Interleaved 2-D spirals, one arm per class (the classic non-linearly separable toy).

    Point :math:`i = 1..m` of arm :math:`k` sits at radius :math:`r = i / m` and angle
    :math:`\theta = 4 (k + r) + \varepsilon`, :math:`\varepsilon \sim \mathcal{N}(0,
    \text{noise}^2)`; arms get ``n // classes`` points (the first ``n % classes`` arms one more).

    Args:
        n: total number of points (at least 2 per class).
        classes: number of arms / classes (>= 2).
        noise: standard deviation of the angular noise (>= 0).
        test_size: fraction held out, stratified by class.
        seed: seed of the noise and the split.

    Example:
        >>> spirals(n=300, classes=3).X_train.shape
        torch.Size([225, 2])
    """
    check_int("classes", classes, 2)
    check_int("n", n, 2 * classes)
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(classes):
        m = n // classes + (k < n % classes)
        r = np.arange(1, m + 1) / m  # r > 0: no point shared by all arms at the origin
        theta = 4.0 * (k + r) + noise * rng.standard_normal(m)
        xs.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
        ys.append(np.full(m, k))
    return _stratified_split(np.concatenate(xs), np.concatenate(ys), test_size, seed, torch.int64)


def adding_problem(
    n: int = 1000, seq_len: int = 50, test_size: float = 0.25, seed: int = 0
) -> Dataset:
    r"""The adding problem, a long-memory regression task (Hochreiter & Schmidhuber 1997).

    Each sequence has ``seq_len`` steps of two features: a value :math:`u_t \sim
    \mathcal{U}(0, 1)` and a marker :math:`m_t \in \{0, 1\}`, set at exactly two steps, one in
    the first half and one in the second half (the variant of Le et al. 2015). The target is
    the sum of the two marked values, :math:`y = \sum_t m_t u_t \in (0, 2)`; predicting the
    constant 1 gives a mean squared error of 1/6, the baseline a model must beat.

    Args:
        n: number of sequences (>= 2).
        seq_len: sequence length (>= 2).
        test_size: fraction held out.
        seed: seed of the values, the markers and (implicitly) the split.

    Returns:
        a :class:`Dataset` with ``X`` of shape ``[n, seq_len, 2]`` and ``y`` of shape ``[n]``,
        both float32.

    Example:
        >>> d = adding_problem(n=8, seq_len=10)
        >>> d.X_train.shape, d.y_train.shape
        (torch.Size([6, 10, 2]), torch.Size([6]))
    """
    check_int("n", n, 2)
    check_int("seq_len", seq_len, 2)
    n_test = _check_test_size(test_size, n)
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, seq_len, generator=g)
    half = seq_len // 2
    first = torch.randint(0, half, (n,), generator=g)
    second = torch.randint(half, seq_len, (n,), generator=g)
    markers = torch.zeros(n, seq_len)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    X = torch.stack([values, markers], dim=-1)
    y = (values * markers).sum(1)
    n_train = n - n_test  # samples are i.i.d., so the first n_train form the train set
    return Dataset(X[:n_train], y[:n_train], X[n_train:], y[n_train:])


class CharText(NamedTuple):
    """A character-level corpus: ``ids`` (int64, one per character) and ``vocab`` (the
    characters, sorted; ``vocab[i]`` is the character with id ``i``)."""

    ids: torch.Tensor
    vocab: str


def pydoc_text(n_chars: int | None = None) -> CharText:
    r"""The help texts that ship with CPython (``pydoc_data.topics``) as character ids.

    About 465 000 characters of English prose and Python code, read from the standard
    library: nothing is downloaded. The topics are joined in sorted order of their names,
    separated by a blank line, so the text is the same on every run of one Python version.

    Args:
        n_chars: keep only the first ``n_chars`` characters (``None``: all of them); the
            vocabulary is built from the characters kept.

    Example:
        >>> text = pydoc_text(1000)
        >>> text.ids.shape, text.ids.dtype
        (torch.Size([1000]), torch.int64)
        >>> len(text.vocab) == len(set(text.vocab)) == int(text.ids.max()) + 1
        True
    """
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[name] for name in sorted(topics))
    if n_chars is not None:
        check_int("n_chars", n_chars, 2)
        text = text[:n_chars]
    vocab = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocab)}
    return CharText(torch.tensor([index[c] for c in text], dtype=torch.int64), vocab)


def char_batch(
    ids: torch.Tensor, batch_size: int, context: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch for next-character prediction: ``x = ids[s : s + context]`` and
    ``y = ids[s + 1 : s + context + 1]`` for ``batch_size`` uniform random starts ``s``.

    Example:
        >>> ids = torch.arange(100)
        >>> x, y = char_batch(ids, 4, 8, torch.Generator().manual_seed(0))
        >>> x.shape, bool((y - x == 1).all())
        (torch.Size([4, 8]), True)
    """
    check_int("batch_size", batch_size, 1)
    check_int("context", context, 1)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1:
        raise ValueError("ids must be a 1-D tensor of token ids")
    if len(ids) <= context:
        raise ValueError(f"ids must be longer than context={context}, got {len(ids)} ids")
    starts = torch.randint(0, len(ids) - context, (batch_size,), generator=generator)
    offsets = torch.arange(context)
    x = ids[starts[:, None] + offsets]
    y = ids[starts[:, None] + offsets + 1]
    return x, y
