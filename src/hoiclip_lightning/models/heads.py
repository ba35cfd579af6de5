"""Box heads, CLIP-text classifiers and the verb adapter of HOICLIP, plus the text-derived verb rows.

Notation: B images, Q pair queries, D DETR width, E CLIP embedding width, C_obj objects, C_verb verbs,
C_hoi HOI classes scored by a head (training classes or all classes).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

LOGIT_SCALE_INIT = math.log(1 / 0.07)


class MLP(nn.Module):
    """Multi-layer perceptron with ReLU between layers (none after the last).

    Parameter names are ``layers.{i}.*`` (as the reference's box heads and ``inter2verb``).

    Args:
        input_dim: input width.
        hidden_dim: width of every hidden layer.
        output_dim: output width.
        num_layers: number of linear layers.

    Example:
        >>> import torch
        >>> MLP(input_dim=8, hidden_dim=16, output_dim=4, num_layers=3)(torch.randn(2, 5, 8)).shape
        torch.Size([2, 5, 4])
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: Tensor) -> Tensor:
        """``[..., input_dim]`` -> ``[..., output_dim]``."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def text_classifier(weight: Tensor, bias: bool, trainable: bool) -> nn.Linear:
    """A linear classifier ``E -> C`` whose weight is the L2-normalised ``weight``.

    Args:
        weight: ``[C, E]`` class embeddings (text embeddings or random vectors).
        bias: keep PyTorch's default random bias (the reference's *quirk*).
        trainable: whether weight and bias require grad.

    Returns:
        ``nn.Linear(E, C)``.

    Example:
        >>> import torch
        >>> head = text_classifier(torch.randn(5, 8), bias=True, trainable=False)  # 5 class prompts, E = 8
        >>> head.weight.norm(dim=-1).allclose(torch.ones(5)), head.weight.requires_grad
        (True, False)
    """
    num_classes, dim = weight.shape
    layer = nn.Linear(dim, num_classes, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(F.normalize(weight.float(), dim=-1))
    layer.requires_grad_(trainable)
    return layer


def verb_embeddings_from_text(
    hoi_text: Tensor, obj_text: Tensor, hois: list[tuple[int, int]], num_verbs: int
) -> Tensor:
    """Verb representations by visual-semantic arithmetic on text embeddings.

    ``verb_v = normalise(mean over HOIs c with verb v of (t̂_hoi[c] - t̂_obj[o(c)]))`` where ``t̂`` are
    L2-normalised embeddings. A verb without HOI gets a zero row (and a warning).

    Args:
        hoi_text: ``[C_hoi, E]`` HOI prompt embeddings (any norm).
        obj_text: ``[C_obj (+1), E]`` object prompt embeddings (any norm).
        hois: ``(verb, object)`` per HOI class (length C_hoi).
        num_verbs: C_verb.

    Returns:
        ``[C_verb, E]`` float32, unit rows (zero rows for verbs without HOI).
    """
    hoi_n = F.normalize(hoi_text.float(), dim=-1)
    obj_n = F.normalize(obj_text.float(), dim=-1)
    verbs = torch.tensor([v for v, _ in hois], dtype=torch.long, device=hoi_n.device)
    objs = torch.tensor([o for _, o in hois], dtype=torch.long, device=hoi_n.device)
    diff = hoi_n - obj_n[objs]
    sums = torch.zeros(num_verbs, hoi_n.shape[1], device=hoi_n.device).index_add_(0, verbs, diff)
    counts = torch.bincount(verbs, minlength=num_verbs).clamp(min=1).unsqueeze(1)
    missing = (torch.bincount(verbs, minlength=num_verbs) == 0).nonzero().flatten().tolist()
    if missing:
        log.warning("verbs %s have no HOI class; their text-derived verb embeddings are zero", missing)
    return F.normalize(sums / counts, dim=-1)


def object_logits(
    o_hs: Tensor, obj_class_fc: nn.Module, obj_visual_projection: nn.Linear, obj_logit_scale: Tensor
) -> Tensor:
    """Object logits ``exp(s_obj) * W_text(normalise(LN(Linear(o))))``.

    Args:
        o_hs: ``[..., D]`` object-slot features.
        obj_class_fc: ``Linear(D, E)`` + ``LayerNorm(E)``.
        obj_visual_projection: ``Linear(E, C_obj + 1)`` (object prompts + "nothing").
        obj_logit_scale: scalar log-scale.

    Returns:
        ``[..., C_obj + 1]``.
    """
    feats = F.normalize(obj_class_fc(o_hs), dim=-1)
    return obj_logit_scale.exp() * obj_visual_projection(feats)


def hoi_logits(
    inter_hs: Tensor,
    visual_projection: nn.Linear,
    logit_scale: Tensor,
    inter2verb: nn.Module | None = None,
    verb_projection: nn.Linear | None = None,
    verb_to_hoi: Tensor | None = None,
    verb_weight: float = 0.5,
) -> Tensor:
    """HOI logits ``s * W_hoi(x̂) + verb_weight * s * (W_verb(normalise(adapter(x))) @ P)``.

    Args:
        inter_hs: ``[..., E]`` un-normalised interaction features x.
        visual_projection: ``Linear(E, C_hoi)`` (HOI prompt embeddings).
        logit_scale: scalar log-scale s (shared by both terms).
        inter2verb: verb adapter ``E -> E`` applied to the un-normalised x; ``None``: no verb term.
        verb_projection: ``Linear(E, C_verb, bias=False)`` verb classifier.
        verb_to_hoi: ``[C_verb, C_hoi]`` binary verb -> HOI matrix P.
        verb_weight: weight of the verb term.

    Returns:
        ``[..., C_hoi]``.
    """
    scale = logit_scale.exp()
    logits = scale * visual_projection(F.normalize(inter_hs, dim=-1))
    if inter2verb is not None:
        assert verb_projection is not None and verb_to_hoi is not None
        verb = F.normalize(inter2verb(inter_hs), dim=-1)
        logits = logits + verb_weight * scale * (verb_projection(verb) @ verb_to_hoi.to(logits.dtype))
    return logits
