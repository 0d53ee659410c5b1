"""1-D rotary position embedding (Su et al., RoFormer), shared by variants that rotate features."""

from __future__ import annotations

import torch


def rope_angles(n: int, dim: int, device: torch.device, base: float = 10000.0) -> tuple[torch.Tensor, ...]:
    """cos/sin of shape (n, dim) for rotating pairs (i, i + dim/2) of a ``dim``-wide feature."""
    half = dim // 2
    inv_freq = base ** (-torch.arange(half, device=device, dtype=torch.float64) / half)
    angles = torch.arange(n, device=device, dtype=torch.float64)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, inverse: bool = False, groups: int = 1) -> torch.Tensor:
    """Rotate ``x (..., N, D)`` by token index; D must be even. ``inverse`` rotates back (the transpose, which
    a hand-written backward pass needs). ``groups``: split the last dim into that many equal parts and rotate each
    on its own (NaLaFormer's released code rotates the positive and the negative half of its features apart)."""
    if groups > 1:
        return torch.cat([apply_rope(part, inverse) for part in x.chunk(groups, dim=-1)], dim=-1)
    n, d = x.shape[-2], x.shape[-1]
    if d % 2:
        raise ValueError(f"RoPE needs an even feature width; got {d}")
    cos, sin = (t.to(x.dtype) for t in rope_angles(n, d, x.device))
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos - rotated * sin if inverse else x * cos + rotated * sin
