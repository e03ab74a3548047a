"""Exact truncated-normal sampling: :func:`trunc_normal_` (import it from :mod:`initlab.init`).

Two exact methods, chosen by the probability mass ``p`` of the interval:

* ``p > 0.3``: draw N(mean, std^2) and redraw *only* the values outside the interval until
  none is left (rejection with the normal as proposal; the expected number of rounds is
  ``log(n) / log(1/(1-p))`` but each round touches only the rejected values).
* otherwise: inverse CDF in float64, ``x = Phi^-1(U(Phi(alpha), Phi(beta)))``, computed in the
  lower tail (the interval is mirrored when it lies right of the mean) so that tail
  probabilities keep their precision.

In both, the interval is open: a value that rounds, in the tensor's dtype, onto or beyond a
bound is rejected and redrawn, so no stored value equals ``a`` or ``b``. Conditioning a
sample on a set is exact, so the law is the truncated normal restricted to the representable
values strictly inside ``(a, b)``.
"""

import math

import torch
from torch import Tensor

from initlab._checks import ArgumentError, check_positive, check_real, check_tensor, skip


def norm_cdf(x: float) -> float:
    """Standard normal CDF, Phi(x) = (1 + erf(x / sqrt 2)) / 2."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def truncated_std(alpha: float, beta: float) -> float:
    r"""Standard deviation of N(0, 1) truncated to ``[alpha, beta]``.

    :math:`\sigma^2 = 1 + \frac{\alpha\varphi(\alpha) - \beta\varphi(\beta)}{Z}
    - \left(\frac{\varphi(\alpha) - \varphi(\beta)}{Z}\right)^2`, with
    :math:`Z = \Phi(\beta) - \Phi(\alpha)` (Johnson, Kotz & Balakrishnan 1994, eq. 13.134).
    ``truncated_std(-2, 2)`` is 0.8796256610342398.
    """

    def pdf(x: float) -> float:
        return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi) if math.isfinite(x) else 0.0

    def xpdf(x: float) -> float:
        return x * pdf(x) if math.isfinite(x) else 0.0

    z = norm_cdf(beta) - norm_cdf(alpha)
    mean = (pdf(alpha) - pdf(beta)) / z
    return math.sqrt(1.0 + (xpdf(alpha) - xpdf(beta)) / z - mean * mean)


def _open_bounds(a: float, b: float, dtype: torch.dtype) -> tuple[float, float]:
    """Smallest and largest values of ``dtype`` strictly inside ``(a, b)``."""
    lo = torch.tensor(a, dtype=torch.float64).to(dtype)
    hi = torch.tensor(b, dtype=torch.float64).to(dtype)
    if lo.item() <= a:
        lo = torch.nextafter(lo, torch.tensor(math.inf, dtype=dtype))
    if hi.item() >= b:
        hi = torch.nextafter(hi, torch.tensor(-math.inf, dtype=dtype))
    lo_f, hi_f = lo.item(), hi.item()
    if not lo_f <= hi_f:
        raise ValueError(f"no value of dtype {dtype} lies strictly inside (a, b) = ({a!r}, {b!r})")
    return lo_f, hi_f


def _far_tail(n: int, alpha: float, beta: float, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, 1) on (alpha, beta), alpha > 30, by rejection (both proposals accept > 60 %).

    Narrow intervals (alpha * width <= 1): uniform proposal, accepted with probability
    exp(-(x^2 - alpha^2) / 2). Wide ones: Robert's (1995) shifted exponential proposal
    x = alpha + Exp(lam), lam = (alpha + sqrt(alpha^2 + 4)) / 2, accepted with probability
    exp(-(x - lam)^2 / 2) and x < beta.
    """
    uniform = alpha * (beta - alpha) <= 1.0
    lam = (alpha + math.sqrt(alpha * alpha + 4.0)) / 2.0
    out, have = torch.empty(n, dtype=torch.float64), 0
    while have < n:
        k = 2 * (n - have) + 16
        x = torch.empty(k, dtype=torch.float64)
        if uniform:
            x.uniform_(alpha, beta, generator=generator)
            log_acc = -0.5 * (x * x - alpha * alpha)
        else:
            x.exponential_(lam, generator=generator).add_(alpha)
            log_acc = -0.5 * (x - lam) ** 2
        u = torch.empty(k, dtype=torch.float64).uniform_(generator=generator)
        x = x[(u.log() < log_acc) & (x < beta)][: n - have]
        out[have : have + x.numel()] = x
        have += x.numel()
    return out


def _icdf(
    n: int,
    mean: float,
    std: float,
    a: float,
    b: float,
    like: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    alpha, beta = (a - mean) / std, (b - mean) / std
    flip = alpha > 0  # mirror into the lower tail, where Phi keeps its precision
    if flip:
        alpha, beta = -beta, -alpha
    lo_p, hi_p = norm_cdf(alpha), norm_cdf(beta)
    if hi_p < 1e-250 or hi_p - lo_p <= 0.0:  # beyond ~34 std: Phi loses its digits
        z = _far_tail(n, -beta, -alpha, generator).neg_()
    else:
        u = torch.empty(n, dtype=torch.float64)
        u.uniform_(lo_p, hi_p, generator=generator)
        z = torch.special.ndtri(u)
    if flip:
        z.neg_()
    z = z.to(like.device)
    return z.mul_(std).add_(mean).to(like.dtype)


def sample_(
    tensor: torch.Tensor,
    mean: float,
    std: float,
    a: float,
    b: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Fill ``tensor`` with N(mean, std^2) truncated to the open interval (a, b), in place."""
    lo, hi = _open_bounds(a, b, tensor.dtype)
    p = norm_cdf((b - mean) / std) - norm_cdf((a - mean) / std)
    buf = tensor if tensor.is_contiguous() else torch.empty_like(tensor).contiguous()
    flat = buf.view(-1)
    if p > 0.3:
        flat.normal_(mean, std, generator=generator)
    else:
        flat.copy_(_icdf(flat.numel(), mean, std, a, b, flat, generator))
    bad = torch.nonzero((flat < lo) | (flat > hi)).squeeze(1)
    while bad.numel():
        if p > 0.3:
            new = flat.new_empty(bad.numel()).normal_(mean, std, generator=generator)
        else:
            new = _icdf(bad.numel(), mean, std, a, b, flat, generator)
        flat[bad] = new
        bad = bad[(new < lo) | (new > hi)]
    if buf is not tensor:
        tensor.copy_(buf)
    return tensor


def trunc_normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill the input Tensor with values drawn from a truncated normal distribution.

    The values follow :math:`\mathcal{N}(\text{mean}, \text{std}^2)` conditioned on the open
    interval :math:`(a, b)` (absolute bounds, as in torch), sampled *exactly* for any mean:
    values outside are redrawn, or, when the interval holds 30 % of the mass or less, drawn
    by the inverse CDF. No stored value equals ``a`` or ``b``, even for tiny ``std`` or
    reduced precision. Unlike torch there is no "mean is more than 2 std from [a, b]"
    warning: the law is exact there too. Its standard deviation is ``std`` times
    :func:`truncated_std` of the standardised bounds (0.8796 at
    :math:`\pm 2`).

    Args:
        tensor: an n-dimensional `torch.Tensor`
        mean: the mean of the normal distribution
        std: the standard deviation of the normal distribution (> 0)
        a: the minimum cutoff value (< b)
        b: the maximum cutoff value
        generator: the torch Generator to sample from (default: None)

    Example:
        >>> w = trunc_normal_(torch.empty(3, 5), std=0.02, a=-0.04, b=0.04)
        >>> bool(((w > -0.04) & (w < 0.04)).all())
        True
    """
    check_tensor(tensor)
    check_real("mean", mean)
    check_positive("std", std)
    lo, hi = check_real("a", a), check_real("b", b)
    if not lo < hi:  # torch's Tensor.uniform_ raises a RuntimeError for a > b
        raise ArgumentError(f"a must be < b, got a={a!r}, b={b!r}")
    if skip(tensor):
        return tensor
    with torch.no_grad():
        return sample_(tensor, float(mean), float(std), lo, hi, generator)
