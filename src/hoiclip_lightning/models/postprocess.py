"""Turn raw outputs into per-image HOI triplets in original-image pixels (HICO-DET style scoring).

Notation: B images, Q pair queries, C_obj object classes (logits have ``C_obj + 1`` slots, the last one
"no object"), C the HOI classes the model scores (column j is HOI class ``hoi_ids[j]`` of the full
vocabulary), K kept triplets per image.

Per image (reference architecture, sections 7.1-7.3):

1. ``hoi = sigmoid(hoi_logits)`` ``[Q, C]`` (or the given, e.g. enhanced, probabilities);
   ``p_obj = sigmoid(obj_logits)[:, :C_obj]`` (*quirk* L3; ``object_score="softmax"`` uses the softmax).
2. Every (query q, column c) pair is a candidate triplet with score
   ``hoi[q, c] + p_obj[q, obj(c)]**2`` (``additive``, *quirk* L3) or ``hoi[q, c] * p_obj[q, obj(c)]``
   (``multiplicative``), where ``obj(c)`` is the object of HOI class ``hoi_ids[c]``.
3. The ``topk`` best candidates are kept. Ties are broken deterministically by a stable descending sort:
   among equal scores the lower flat index ``q * C + c`` wins (the reference's heap selection duplicates
   tied candidates instead, quirk E3).
4. Boxes become xyxy pixels of the original image.
5. Triplet NMS (optional), independently per HOI class in score order: candidate j is dropped when a kept
   candidate i of the same class has ``IoU_sub(i, j)**alpha * IoU_obj(i, j)**beta > threshold``; IoUs use
   the inclusive-pixel convention (width = x2 - x1 + 1).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from ..errors import ConfigurationError
from ..metrics.nms import pixel_iou_plus_one, triplet_nms
from ..structures import HOIOutputs, HOIPrediction

__all__ = ["HOIPostProcessor", "pixel_iou_plus_one", "triplet_nms"]

_SCORE_MODES = ("additive", "multiplicative")
_OBJECT_SCORES = ("sigmoid", "softmax")


def score_range(
    score_mode: Literal["additive", "multiplicative"] = "additive",
    tfe_weight: float | None = None,
    tfe_mode: Literal["reference", "intended"] = "reference",
) -> tuple[float, float]:
    """Closed interval that every triplet score lies in, for a scoring and training-free enhancement setting.

    A score is ``s + p**2`` (``additive``) or ``s * p`` (``multiplicative``), with ``p`` in [0, 1] the object
    probability and ``s`` the HOI probability in [0, 1], plus, with the enhancement, CLIP's boost
    ``tfe_weight * sigmoid(cos)`` (``cos`` in [-1, 1], so at most ``tfe_weight * sigmoid(1)``, 0.731 at
    weight 1; see :mod:`~hoiclip_lightning.models.enhancement`). The bounds are reached only in the limit.

    Args:
        score_mode: as :class:`HOIPostProcessor`.
        tfe_weight: the enhancement's weight; ``None``: no enhancement.
        tfe_mode: the enhancement's mode (``reference`` boosts every class by at least
            ``min(tfe_weight * sigmoid(-1), tfe_weight / 2)``, ``intended`` the non-top-k classes by 0).

    Examples:
        >>> score_range()                                        # sigmoid(hoi) + p_obj**2
        (0.0, 2.0)
        >>> [round(v, 4) for v in score_range(tfe_weight=1.0)]   # the defaults, TFE on
        [0.2689, 2.7311]
    """
    if score_mode not in _SCORE_MODES:
        raise ConfigurationError(f"score_mode must be one of {_SCORE_MODES}, got {score_mode!r}")
    boosts = [0.0]
    if tfe_weight is not None:
        from .enhancement import TFE_MODES

        if tfe_mode not in TFE_MODES:
            raise ConfigurationError(f"TFE mode must be one of {TFE_MODES}, got {tfe_mode!r}")
        sig = 1.0 / (1.0 + math.exp(-1.0))  # sigmoid(1); sigmoid(-1) = 1 - sig
        boosts = [tfe_weight * (1.0 - sig), tfe_weight * sig, 0.0 if tfe_mode == "intended" else tfe_weight / 2]
    low, high = min(boosts), 1.0 + max(boosts)  # the (enhanced) HOI score
    if score_mode == "additive":
        return low, high + 1.0
    return min(low, 0.0), max(high, 0.0)


class HOIPostProcessor(nn.Module):
    """Outputs -> one :class:`HOIPrediction` per image (HICO-DET triplet scoring, top-k, triplet NMS).

    Args:
        hoi_ids: column j of ``hoi_logits`` is HOI class ``hoi_ids[j]`` of the full vocabulary.
        hoi_to_object: ``[C_hoi_all]`` long, object index of every HOI class of the vocabulary.
        hoi_to_verb: ``[C_hoi_all]`` long, verb index of every HOI class of the vocabulary.
        topk: triplets kept per image before NMS.
        score_mode: *quirk* ``additive`` (``hoi + p_obj**2``, reference) or ``multiplicative``.
        object_score: *quirk* ``sigmoid`` (reference) or ``softmax`` of the object logits.
        use_nms: apply per-class triplet NMS.
        nms_threshold: NMS overlap threshold, see :func:`triplet_nms`.
        nms_alpha: NMS exponent of the subject IoU, see :func:`triplet_nms`.
        nms_beta: NMS exponent of the object IoU, see :func:`triplet_nms`.

    Examples:
        >>> import torch
        >>> from hoiclip_lightning.structures import HOIOutputs
        >>> post = HOIPostProcessor([0, 1], torch.tensor([0, 1]), torch.tensor([0, 0]), topk=3)
        >>> out = HOIOutputs(torch.full((1, 2, 4), 0.5), torch.full((1, 2, 4), 0.5),
        ...                  torch.zeros(1, 2, 3), torch.zeros(1, 2, 2))
        >>> pred = post(out, torch.tensor([[100, 200]]), [7])[0]  # both queries share one box pair:
        >>> pred.hoi_labels.tolist(), pred.sub_boxes[0].tolist()  # NMS keeps one triplet per class
        ([0, 1], [50.0, 25.0, 150.0, 75.0])
    """

    def __init__(
        self,
        hoi_ids: list[int],
        hoi_to_object: Tensor,
        hoi_to_verb: Tensor,
        topk: int = 100,
        score_mode: Literal["additive", "multiplicative"] = "additive",
        object_score: Literal["sigmoid", "softmax"] = "sigmoid",
        use_nms: bool = True,
        nms_threshold: float = 0.7,
        nms_alpha: float = 1.0,
        nms_beta: float = 0.5,
    ) -> None:
        super().__init__()
        if score_mode not in _SCORE_MODES:
            raise ConfigurationError(f"score_mode must be one of {_SCORE_MODES}, got {score_mode!r}")
        if object_score not in _OBJECT_SCORES:
            raise ConfigurationError(f"object_score must be one of {_OBJECT_SCORES}, got {object_score!r}")
        if topk < 1:
            raise ConfigurationError(f"topk must be >= 1, got {topk}")
        hoi_to_object = torch.as_tensor(hoi_to_object, dtype=torch.long)
        hoi_to_verb = torch.as_tensor(hoi_to_verb, dtype=torch.long)
        if hoi_to_object.shape != hoi_to_verb.shape or hoi_to_object.dim() != 1:
            raise ConfigurationError(
                f"hoi_to_object and hoi_to_verb must both be [C_hoi_all], got {tuple(hoi_to_object.shape)} "
                f"and {tuple(hoi_to_verb.shape)}"
            )
        ids = torch.as_tensor(list(hoi_ids), dtype=torch.long)
        if ids.numel() == 0 or ids.min() < 0 or ids.max() >= hoi_to_object.numel():
            raise ConfigurationError(
                f"hoi_ids must be non-empty indices into the {hoi_to_object.numel()} HOI classes, got {list(hoi_ids)}"
            )
        self.topk = topk
        self.score_mode = score_mode
        self.object_score = object_score
        self.use_nms = use_nms
        self.nms_threshold = nms_threshold
        self.nms_alpha = nms_alpha
        self.nms_beta = nms_beta
        self.register_buffer("hoi_ids", ids, persistent=False)  # [C]
        self.register_buffer("hoi_to_object", hoi_to_object, persistent=False)  # [C_hoi_all]
        self.register_buffer("hoi_to_verb", hoi_to_verb, persistent=False)  # [C_hoi_all]

    def candidate_scores(self, hoi_probs: Tensor, obj_logits: Tensor) -> Tensor:
        """Triplet scores ``[..., Q, C]``.

        Args:
            hoi_probs: ``[..., Q, C]`` HOI probabilities. obj_logits: ``[..., Q, C_obj + 1]``.
        """
        obj_logits = obj_logits.float()
        if self.object_score == "sigmoid":
            obj_probs = obj_logits.sigmoid()[..., :-1]
        else:
            obj_probs = obj_logits.softmax(dim=-1)[..., :-1]
        col_objects = self.hoi_to_object.to(obj_probs.device)[self.hoi_ids.to(obj_probs.device)]  # [C]
        if int(col_objects.max()) >= obj_probs.shape[-1]:
            raise ValueError(
                f"an HOI class refers to object {int(col_objects.max())}, but obj_logits have only "
                f"{obj_probs.shape[-1]} object slots (plus no-object)"
            )
        p_obj = obj_probs[..., col_objects]  # [..., Q, C]
        if self.score_mode == "additive":
            return hoi_probs.float() + p_obj.pow(2)
        return hoi_probs.float() * p_obj

    @torch.no_grad()
    def forward(
        self,
        outputs: HOIOutputs,
        orig_sizes: Tensor,
        image_ids: list[int],
        hoi_scores: Tensor | None = None,
    ) -> list[HOIPrediction]:
        """Score, select and convert the triplets of every image.

        Args:
            outputs: last-layer outputs: ``sub_boxes``/``obj_boxes`` ``[B, Q, 4]`` cxcywh normalised,
                ``obj_logits`` ``[B, Q, C_obj + 1]``, ``hoi_logits`` ``[B, Q, C]`` with ``C = len(hoi_ids)``.
            orig_sizes: ``[B, 2]`` ``(height, width)`` of the original images.
            image_ids: B dataset-wide image indices.
            hoi_scores: ``[B, Q, C]`` HOI probabilities to use instead of ``sigmoid(hoi_logits)`` (e.g. after
                the training-free enhancement); ``None`` uses the sigmoid.

        Returns:
            B predictions with K <= topk triplets each, sorted by descending score, on the input device.
        """
        hoi_probs = outputs.hoi_logits.float().sigmoid() if hoi_scores is None else hoi_scores.float()
        batch, num_queries, num_cols = hoi_probs.shape
        if num_cols != self.hoi_ids.numel():
            raise ValueError(f"HOI scores have {num_cols} columns but hoi_ids has {self.hoi_ids.numel()} entries")
        if hoi_scores is not None and hoi_scores.shape != outputs.hoi_logits.shape:
            raise ValueError(
                f"hoi_scores shape {tuple(hoi_scores.shape)} differs from hoi_logits {tuple(outputs.hoi_logits.shape)}"
            )
        if orig_sizes.shape != (batch, 2) or len(image_ids) != batch:
            raise ValueError(
                f"expected orig_sizes [{batch}, 2] and {batch} image ids, got {tuple(orig_sizes.shape)} "
                f"and {len(image_ids)}"
            )
        device = hoi_probs.device
        scores = self.candidate_scores(hoi_probs, outputs.obj_logits)  # [B, Q, C]
        hoi_ids = self.hoi_ids.to(device)
        hoi_to_object = self.hoi_to_object.to(device)
        hoi_to_verb = self.hoi_to_verb.to(device)
        k = min(self.topk, num_queries * num_cols)

        # Pixel xyxy boxes, [B, Q, 4]: scale by (w, h, w, h).
        height, width = orig_sizes.to(device=device, dtype=torch.float32).unbind(-1)
        scale = torch.stack([width, height, width, height], dim=-1).unsqueeze(1)  # [B, 1, 4]
        sub_xyxy = box_convert(outputs.sub_boxes.float(), "cxcywh", "xyxy") * scale
        obj_xyxy = box_convert(outputs.obj_boxes.float(), "cxcywh", "xyxy") * scale

        predictions = []
        for b in range(batch):
            top_scores, flat = scores[b].flatten().sort(descending=True, stable=True)
            top_scores, flat = top_scores[:k], flat[:k]  # [K]
            queries = flat // num_cols
            hoi_labels = hoi_ids[flat % num_cols]
            sub_boxes, obj_boxes = sub_xyxy[b, queries], obj_xyxy[b, queries]  # [K, 4]
            if self.use_nms:
                keep = triplet_nms(sub_boxes, obj_boxes, hoi_labels, self.nms_threshold, self.nms_alpha, self.nms_beta)
                top_scores, hoi_labels, sub_boxes, obj_boxes = (
                    top_scores[keep],
                    hoi_labels[keep],
                    sub_boxes[keep],
                    obj_boxes[keep],
                )
            predictions.append(
                HOIPrediction(
                    image_id=int(image_ids[b]),
                    sub_boxes=sub_boxes,
                    obj_boxes=obj_boxes,
                    obj_labels=hoi_to_object[hoi_labels],
                    verb_labels=hoi_to_verb[hoi_labels],
                    hoi_labels=hoi_labels,
                    scores=top_scores,
                )
            )
        return predictions
