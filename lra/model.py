"""The LRA encoder: embeddings, pre-norm blocks with a pluggable attention, pooling, classifier head.

Follows the model shared by the LRA JAX code and the Nystromformer/Skyformer PyTorch "lite" code
(shared/specs/lra.md, section 4): token + position embedding, dropout, pre-LN blocks (LN -> attention ->
dropout -> residual; LN -> MLP(GELU) -> residual), final LN, mean or CLS pooling, MLP head. Two-document tasks
(Retrieval) encode both documents with the shared encoder and classify ``[u, v, u*v, u-v]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from attention_zoo import build_attention


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float, attention: dict[str, Any], max_len: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = build_attention(attention, dim=dim, num_heads=num_heads, max_len=max_len)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.profiler.record_function("attention"):  # lets lra.throughput measure attention's share
            a = self.attn(self.norm1(x), mask)
        x = x + self.drop(a)
        return x + self.mlp(self.norm2(x))


def sinusoidal_positions(n: int, dim: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table


class Encoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float,
        attention: dict[str, Any],
        pooling: str = "mean",
        pos_emb: str = "learned",
        mean_over_padding: bool = False,
        mask_attention: bool = True,
    ):
        super().__init__()
        if pooling not in {"mean", "cls"}:
            raise ValueError(f"model.pooling={pooling!r} is not one of mean, cls")
        if pos_emb not in {"learned", "sinusoidal", "none"}:
            raise ValueError(f"model.pos_emb={pos_emb!r} is not one of learned, sinusoidal, none")
        self.pooling, self.mean_over_padding, self.max_len = pooling, mean_over_padding, max_len
        # False: attention sees padded keys too, as the released PolaFormer/NaLaFormer/cosFormer modules do (they
        # never apply a mask); pooling still leaves padding out. A diagnostic for Pathfinder, where padding is the
        # black pixels (results/diagnostics/pathfinder/README.md, session 16).
        self.mask_attention = mask_attention
        seq_len = max_len + (pooling == "cls")
        self.embed = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        if pos_emb == "learned":
            self.pos = nn.Parameter(torch.randn(seq_len, dim) * 0.02)
        else:
            self.register_buffer(
                "pos",
                sinusoidal_positions(seq_len, dim) if pos_emb == "sinusoidal" else torch.zeros(seq_len, dim),
                persistent=False,
            )
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if pooling == "cls" else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_dim, dropout, attention, seq_len) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, N), 0 = padding -> pooled (B, dim)."""
        mask = ids != 0
        x = self.embed(ids)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
            mask = torch.cat([mask.new_ones(x.shape[0], 1), mask], dim=1)
        x = self.drop(x + self.pos[: x.shape[1]])
        keys = mask if self.mask_attention else torch.ones_like(mask)
        for block in self.blocks:
            x = block(x, keys)
        x = self.norm(x)
        if self.cls is not None:
            return x[:, 0]
        x = x * mask[..., None]
        # The lite protocol divides by the configured padded length (padding counts as zeros), whatever padding
        # the batch was trimmed to; the default is a masked mean.
        denom = self.max_len if self.mean_over_padding else mask.sum(1, keepdim=True).clamp_min(1)
        return x.sum(1) / denom


class LRAModel(nn.Module):
    """Classifier for one document, or for a pair when ``dual=True`` (input ``(B, 2, N)``)."""

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        num_classes: int,
        dual: bool,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        head_dim: int,
        dropout: float,
        attention: dict[str, Any],
        pooling: str = "mean",
        pos_emb: str = "learned",
        mean_over_padding: bool = False,
        mask_attention: bool = True,
    ):
        super().__init__()
        self.dual = dual
        self.encoder = Encoder(
            vocab_size,
            max_len,
            dim,
            depth,
            num_heads,
            mlp_dim,
            dropout,
            attention,
            pooling,
            pos_emb,
            mean_over_padding,
            mask_attention,
        )
        in_dim = 4 * dim if dual else dim
        self.head = nn.Sequential(nn.Linear(in_dim, head_dim), nn.ReLU(), nn.Linear(head_dim, num_classes))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.dual:
            return self.head(self.encoder(ids))
        b = ids.shape[0]
        pooled = self.encoder(ids.flatten(0, 1)).view(b, 2, -1)
        u, v = pooled[:, 0], pooled[:, 1]
        return self.head(torch.cat([u, v, u * v, u - v], dim=-1))


def compile_model(model: nn.Module, mode: str | None = None, dynamic: bool | None = True, **options: Any) -> None:
    """``torch.compile`` in place (``nn.Module.compile``): parameter names stay those of the eager model, so a run
    cut in one mode resumes in the other.

    Python floats are specialised (baked into the graph as constants). Otherwise Dynamo passes a float that an
    attention keeps (linear's ``eps``) into the graph as a 0-d CPU tensor, and Inductor emits a C++ kernel for it:
    under CUDA graphs that kernel was handed a GPU pointer and linear and performer segfaulted on the H200
    (session 11; pytorch/pytorch#170863 is the same fault). tests/test_compile_graphs.py checks that no registered
    attention leaves a CPU tensor in its compiled graphs."""
    torch._dynamo.config.specialize_float = True
    model.compile(dynamic=dynamic, mode=mode, **options)


def compiled_forward(model: nn.Module, dynamic: bool | None = True, **options: Any) -> Callable[..., Any]:
    """``model.forward`` under a ``torch.compile`` of its own (Inductor's default mode: no CUDA graphs), leaving
    the module and its training compile as they are; floats specialised as in ``compile_model``."""
    torch._dynamo.config.specialize_float = True
    return torch.compile(model.forward, dynamic=dynamic, **options)
