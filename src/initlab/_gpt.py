r"""A small GPT-style decoder (minGPT/nanoGPT style), re-exported by :mod:`initlab.models`.

Kept small and plain: token and position embeddings, ``depth`` blocks of causal
multi-head self-attention and a GELU MLP (width :math:`n \to 4n \to n`), a final
LayerNorm (pre-LN only) and a linear read-out, optionally tied to the token embedding.

* ``norm="pre"`` (GPT-2, Radford et al. 2019, Sec. 2.3):
  :math:`x \leftarrow x + \mathrm{Attn}(\mathrm{LN}(x))`,
  :math:`x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x))`, and a final LayerNorm.
* ``norm="post"`` (the original Transformer, Vaswani et al. 2017):
  :math:`x \leftarrow \mathrm{LN}(x + \mathrm{Attn}(x))`,
  :math:`x \leftarrow \mathrm{LN}(x + \mathrm{MLP}(x))`.

Xiong et al. (2020) compare the two at initialization (their Theorem 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from initlab._checks import check_bool, check_int, check_positive

__all__ = ["GPT", "gpt", "gpt2_init_"]


class CausalSelfAttention(nn.Module):
    r"""Multi-head causal self-attention with the scale :math:`1/\sqrt{d_k}` (Vaswani et al. 2017).

    ``qkv`` maps the width :math:`n` to queries, keys and values (:math:`3n`); ``proj`` maps the
    heads' concatenated outputs back to :math:`n` (a *residual projection*). ``scale`` is the
    factor on :math:`q \cdot k`; ``None`` means :math:`1/\sqrt{d_k}`, :math:`d_k = n / h`.
    """

    def __init__(self, width: int, heads: int, bias: bool = True) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)
        self.scale: float | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n = x.shape
        q, k, v = self.qkv(x).split(n, dim=2)
        q, k, v = (z.view(b, t, self.heads, n // self.heads).transpose(1, 2) for z in (q, k, v))
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(n // self.heads)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        return self.proj(y.transpose(1, 2).reshape(b, t, n))


class FeedForward(nn.Module):
    """The block's MLP: ``fc`` (n -> 4n), GELU, ``proj`` (4n -> n, a residual projection)."""

    def __init__(self, width: int, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(width, 4 * width, bias=bias)
        self.act = nn.GELU()
        self.proj = nn.Linear(4 * width, width, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    """One transformer block, pre-LN or post-LN (see the module docstring)."""

    def __init__(self, width: int, heads: int, norm: str, bias: bool = True) -> None:
        super().__init__()
        self.norm = norm
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, bias)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = FeedForward(width, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "pre":
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.mlp(x))


class GPT(nn.Module):
    """A decoder-only transformer built by :func:`gpt`; input ``[batch, time]`` token ids,
    output logits ``[batch, time, vocab_size]``.

    Attributes:
        tok_emb, pos_emb: ``nn.Embedding`` of the tokens and of the positions.
        blocks: ``nn.ModuleList`` of ``depth`` blocks (``blocks.0.attn.qkv`` ...).
        ln_f: final ``nn.LayerNorm`` (pre-LN) or ``nn.Identity`` (post-LN).
        head: ``nn.Linear(width, vocab_size, bias=False)``; its weight *is* ``tok_emb.weight``
            when ``tie=True``.
        vocab_size, context, width, depth, heads, norm, tie: the build arguments.
    """

    def __init__(
        self,
        vocab_size: int,
        context: int,
        width: int,
        depth: int,
        heads: int,
        norm: str,
        tie: bool,
    ) -> None:
        super().__init__()
        self.vocab_size, self.context, self.width = vocab_size, context, width
        self.depth, self.heads, self.norm, self.tie = depth, heads, norm, tie
        self.tok_emb = nn.Embedding(vocab_size, width)
        self.pos_emb = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads, norm) for _ in range(depth))
        self.ln_f: nn.Module = nn.LayerNorm(width) if norm == "pre" else nn.Identity()
        self.head = nn.Linear(width, vocab_size, bias=False)
        if tie:
            self.head.weight = self.tok_emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dim() != 2 or idx.dtype != torch.int64:
            raise ValueError(
                f"idx must be int64 token ids of shape [batch, time], got {idx.dtype} "
                f"{tuple(idx.shape)}"
            )
        t = idx.shape[1]
        if t > self.context:
            raise ValueError(f"sequence length {t} exceeds the context {self.context}")
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def gpt(
    vocab_size: int,
    context: int,
    width: int,
    depth: int,
    heads: int = 4,
    norm: str = "pre",
    tie: bool = False,
) -> GPT:
    r"""Build a small GPT-style decoder (see :class:`GPT`); PyTorch's default init is kept.

    Re-initialise with :func:`gpt2_init_` for GPT-2's scheme.

    Args:
        vocab_size: number of tokens.
        context: longest sequence (number of position embeddings).
        width: the model width :math:`n` (``d_model``), divisible by ``heads``.
        depth: number of blocks :math:`L`.
        heads: attention heads; each has :math:`d_k = n / h`.
        norm: ``"pre"`` (GPT-2) or ``"post"`` (the original Transformer).
        tie: share the token embedding with the read-out (Press & Wolf 2017; GPT-2 does).

    Example:
        >>> net = gpt(vocab_size=50, context=16, width=32, depth=2, heads=4)
        >>> net(torch.zeros(3, 16, dtype=torch.int64)).shape
        torch.Size([3, 16, 50])
    """
    for name, value in (
        ("vocab_size", vocab_size),
        ("context", context),
        ("width", width),
        ("depth", depth),
        ("heads", heads),
    ):
        check_int(name, value, 1)
    if norm not in ("pre", "post"):
        raise ValueError(f"norm must be 'pre' or 'post', got {norm!r}")
    check_bool("tie", tie)
    return GPT(vocab_size, context, width, depth, heads, norm, tie)


@torch.no_grad()
def gpt2_init_(
    model: GPT,
    std: float = 0.02,
    residual_scaling: bool = True,
    generator: torch.Generator | None = None,
) -> GPT:
    r"""GPT-2's initialization, in place: every weight :math:`\mathcal{N}(0, \text{std}^2)`,
    biases 0, LayerNorm gains 1; the residual projections (``attn.proj`` and ``mlp.proj``)
    :math:`\mathcal{N}(0, (\text{std}/\sqrt{2L})^2)` when ``residual_scaling`` is set.

    Radford et al. (2019), Sec. 2.3: "We scale the weights of residual layers at
    initialization by a factor of :math:`1/\sqrt{N}` where :math:`N` is the number of residual
    layers"; a model of :math:`L` blocks has :math:`N = 2L` (one attention and one MLP branch
    per block), the factor nanoGPT and minGPT use (GPT-2's released code draws every weight
    with std 0.02). Each branch then adds :math:`1/(2L)` of the variance it would add
    unscaled, so the variance that all :math:`2L` branches add together does not grow with
    depth.

    Args:
        model: a :class:`GPT` from :func:`gpt`.
        std: standard deviation of the weights (0.02 in GPT-2's released code).
        residual_scaling: divide the residual projections' std by :math:`\sqrt{2L}`.
        generator: optional ``torch.Generator`` for reproducible draws.

    Example:
        >>> net = gpt2_init_(gpt(50, 16, 32, depth=8), generator=torch.Generator().manual_seed(0))
        >>> round(net.blocks[0].mlp.proj.weight.std().item() / 0.02 * 4, 1)  # sqrt(2 * 8) = 4
        1.0
    """
    if not isinstance(model, GPT):
        raise TypeError(
            f"model must be a GPT built by initlab.models.gpt, got {type(model).__name__}"
        )
    check_positive("std", std, finite=True)
    proj_std = std / math.sqrt(2 * model.depth) if residual_scaling else std
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            s = proj_std if name.endswith(".proj") else std
            module.weight.normal_(0.0, s, generator=generator)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
    return model
