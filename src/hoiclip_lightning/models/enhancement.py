"""Training-free enhancement (TFE): boost the HOI classes that CLIP's global image embedding ranks highest.

Notation: B images, Q pair queries, C HOI classes (the same columns in ``hoi_probs`` and ``clip_logits``).

For each image, CLIP's cosine similarities ``r[c]`` between the image embedding and every HOI prompt are
reduced to the ``topk`` largest; the HOI probabilities of every query are then raised by (reference
architecture, section 5)::

    reference (quirk T5): hoi[q, c] + weight * sigmoid(r_masked[c]), r_masked = r on the top-k, 0 elsewhere
                          -> top-k classes get weight * sigmoid(r[c]), every other class weight * 0.5
    intended:             hoi[q, c] + weight * sigmoid(r[c]) on the top-k classes, + 0 elsewhere

Both functions return new tensors and never modify their inputs: the reference's k-sweep reused one
tensor that an earlier k had masked in place, so every k >= 10 reproduced k = 10 (quirk T4).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

import torch
from torch import Tensor

from ..errors import ConfigurationError

TFE_MODES = ("reference", "intended")


def clip_boost(clip_logits: Tensor, topk: int, weight: float = 1.0, mode: str = "reference") -> Tensor:
    """``[B, C]`` additive boost per image and class (see the module docstring)."""
    if mode not in TFE_MODES:
        raise ConfigurationError(f"TFE mode must be one of {TFE_MODES}, got {mode!r}")
    if topk < 1:
        raise ConfigurationError(f"TFE topk must be >= 1, got {topk}")
    if clip_logits.dim() != 2:
        raise ValueError(f"clip_logits must be [B, C], got shape {tuple(clip_logits.shape)}")
    logits = clip_logits.float()
    top = logits.topk(min(topk, logits.shape[-1]), dim=-1)
    if mode == "reference":
        masked = torch.zeros_like(logits).scatter(-1, top.indices, top.values)
        return weight * masked.sigmoid()
    return torch.zeros_like(logits).scatter(-1, top.indices, weight * top.values.sigmoid())


def training_free_enhancement(
    hoi_probs: Tensor,
    clip_logits: Tensor,
    topk: int = 10,
    weight: float = 1.0,
    mode: Literal["reference", "intended"] = "reference",
) -> Tensor:
    """Enhanced HOI scores.

    Args:
        hoi_probs: ``[B, Q, C]`` sigmoid HOI probabilities (not modified).
        clip_logits: ``[B, C]`` cosine similarity of each image with every HOI prompt (not modified).
        topk: classes per image that CLIP boosts (clamped to C).
        weight: weight of the CLIP term.
        mode: *quirk* ``reference`` (mask before the sigmoid) or ``intended`` (boost the top-k only).

    Returns:
        New ``[B, Q, C]`` fp32 tensor ``hoi_probs + boost[:, None, :]``.

    Examples:
        >>> probs = torch.zeros(1, 1, 3)
        >>> training_free_enhancement(probs, torch.tensor([[0.0, 2.0, 1.0]]), topk=1, mode="intended")
        tensor([[[0.0000, 0.8808, 0.0000]]])
    """
    if hoi_probs.dim() != 3 or clip_logits.shape != (hoi_probs.shape[0], hoi_probs.shape[2]):
        raise ValueError(
            f"expected hoi_probs [B, Q, C] and clip_logits [B, C], got {tuple(hoi_probs.shape)} "
            f"and {tuple(clip_logits.shape)}"
        )
    return hoi_probs.float() + clip_boost(clip_logits, topk, weight, mode).unsqueeze(1)


def enhancement_sweep(
    hoi_probs: Tensor,
    clip_logits: Tensor,
    topks: Iterable[int] = (10, 20, 30, 40, 50),
    weight: float = 1.0,
    mode: Literal["reference", "intended"] = "reference",
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(k, enhanced [B, Q, C])`` for every k, each computed from the untouched inputs."""
    for k in topks:
        yield k, training_free_enhancement(hoi_probs, clip_logits, topk=k, weight=weight, mode=mode)
