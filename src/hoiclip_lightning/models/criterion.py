"""Set criterion of HOICLIP: Hungarian matching, then focal HOI, object CE and box losses.

Notation: B images, Q pair queries, N ground-truth pairs of one image, M matched pairs of the batch,
C_obj object classes (the logits have ``C_obj + 1`` slots, the last one "no object"), C_hoi HOI classes.

Per output layer (reference architecture, section 6.2):

* ``loss_hoi_labels``: modified focal loss on all ``B*Q*C_hoi`` sigmoid outputs (unmatched queries have
  all-zero targets), alpha ``focal_alpha``, gamma 2, probabilities clamped to ``[1e-4, 1 - 1e-4]``,
  normalised by the number of positive entries of the *local* batch (no normalisation when there are none).
* ``loss_obj_ce``: cross-entropy over ``C_obj + 1`` classes for all queries, unmatched -> no-object slot,
  class weight ``eos_coef`` on that slot, PyTorch weighted-mean reduction.
* ``loss_sub_bbox`` / ``loss_sub_giou``: sum over matched pairs of L1 (4 cxcywh coords) / (1 - GIoU),
  divided by ``num_interactions`` (GT pairs of the batch, all-reduced and divided by the world size under
  ``torch.distributed``, clamped to >= 1).
* ``loss_obj_bbox`` / ``loss_obj_giou``: the same over matched pairs whose target object box exists (not all
  zeros), divided by ``#existing + 1e-4`` (local count; quirk L2).

* ``loss_dense`` (only when the model has the dense auxiliary head, beyond the reference): sigmoid focal
  loss (torchvision, alpha 0.25, gamma 2) of the per-cell logits against :func:`dense_targets`, summed
  over valid cells and divided by the number of positive entries (at least 1). ``dense_verb_loss: false``
  leaves the verb channels out (detector pretraining without verb labels).

* ``loss_feat_mimic`` (only when the outputs carry ``mimic_features``, GEN-VLKT): :func:`mimic_loss`, the
  L1 distance between the query-mean of the layer's interaction features and CLIP's image embedding,
  weighted by ``mimic_loss_coef`` (per layer, auxiliary layers included, as the reference does).

The per-layer losses are pluggable terms (:data:`LayerTerm`: :func:`hoi_label_term`,
:func:`object_class_term`, :func:`box_terms`); ``SetCriterion(layer_terms=..., extra_weights=...)`` adds or
replaces terms. Auxiliary layers use the same losses with an independent matching; their keys get ``_0``, ``_1``, ...
(first decoder layer first). ``loss`` is the weighted sum of every loss term; ``obj_class_error`` and
``hoi_class_error`` (last layer only) are detached and meant for logging.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from ..errors import ConfigurationError
from ..structures import HOIOutputs, HOITarget
from .config import LossConfig
from .matcher import HungarianMatcher, object_existence

LOSS_NAMES = ("loss_hoi_labels", "loss_obj_ce", "loss_sub_bbox", "loss_obj_bbox", "loss_sub_giou", "loss_obj_giou")
_FOCAL_GAMMA = 2.0
_PROB_CLAMP = 1e-4
_EXIST_EPS = 1e-4


def focal_hoi_loss(logits: Tensor, targets: Tensor, alpha: float = 0.5) -> Tensor:
    """Modified (CornerNet-style) focal loss with gamma 2.

    Args:
        logits: ``[..., C]`` HOI logits (cast to fp32).
        targets: same shape, multi-hot; entries exactly 1 are positives, entries < 1 negatives.
        alpha: weight of the positive term; negatives get ``1 - alpha``.

    Returns:
        Scalar ``-(sum_pos a(1-p)^2 log p + sum_neg (1-a) p^2 log(1-p)) / max(N_pos, 1)``: dividing by 1
        when there is no positive is the reference's "no normalisation" branch, without a host sync.
    """
    p = logits.float().sigmoid().clamp(_PROB_CLAMP, 1 - _PROB_CLAMP)
    targets = targets.float()
    pos = targets.eq(1).float()
    neg = targets.lt(1).float()
    pos_term = alpha * (1 - p).pow(_FOCAL_GAMMA) * p.log() * pos
    neg_term = (1 - alpha) * p.pow(_FOCAL_GAMMA) * (1 - p).log() * neg
    num_pos = pos.sum()
    return -(pos_term.sum() + neg_term.sum()) / num_pos.clamp(min=1)


def mimic_loss(features: Tensor, target: Tensor) -> Tensor:
    """GEN-VLKT's image-level mimic loss: ``mean |mean_q(features) - target|``.

    Args:
        features: ``[B, Q, E]`` un-normalised interaction features of one decoder layer.
        target: ``[B, E]`` CLIP's global image embedding (un-normalised; no gradient flows into it).

    Returns:
        fp32 scalar: the L1 distance averaged over the ``B * E`` entries (``F.l1_loss``'s mean).

    Example:
        >>> import torch
        >>> mimic_loss(torch.tensor([[[1.0, 2.0], [3.0, 0.0]]]), torch.tensor([[0.0, 0.0]]))
        tensor(1.5000)
    """
    return F.l1_loss(features.float().mean(dim=1), target.detach().float())


def dense_targets(target: HOITarget, height: int, width: int, cell_size: tuple[float, float],
                  num_obj_classes: int) -> Tensor:
    """Per-cell multi-hot targets of the dense auxiliary head for one image.

    A cell is covered by a box when its centre, in pixels of the (padded) network input, lies inside the
    box, or when it holds the box centre (so boxes smaller than a cell still have one positive cell).
    Channels: object classes ``0 .. C_obj - 1`` (the pairs' object boxes), ``C_obj`` subject human (the
    pairs' human boxes), then the verbs (the human box of every pair carrying that verb).

    Args:
        target: boxes cxcywh normalised by ``target.size``.
        height, width: feature-map size h, w.
        cell_size: ``(cell height, cell width)`` in pixels.
        num_obj_classes: C_obj.

    Returns:
        ``[h, w, C_obj + 1 + C_verb]`` float32 of 0/1.
    """
    device = target.sub_boxes.device
    num_verbs = target.verb_labels.shape[-1]
    out = torch.zeros(height, width, num_obj_classes + 1 + num_verbs, device=device)
    if len(target) == 0:
        return out
    img_h, img_w = (float(v) for v in target.size)
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * cell_size[0] / img_h
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * cell_size[1] / img_w

    def cover(boxes_cxcywh: Tensor) -> Tensor:  # [N, 4] -> [N, h, w] bool
        x0, y0, x1, y1 = box_convert(boxes_cxcywh.float(), "cxcywh", "xyxy").unbind(-1)
        inside_y = (ys[None] >= y0[:, None]) & (ys[None] <= y1[:, None])  # [N, h]
        inside_x = (xs[None] >= x0[:, None]) & (xs[None] <= x1[:, None])  # [N, w]
        covered = inside_y[:, :, None] & inside_x[:, None, :]
        # the cell holding the box centre always counts, so a box smaller than a cell is never left out
        row = (boxes_cxcywh[:, 1].float() * img_h / cell_size[0]).long().clamp(0, height - 1)
        col = (boxes_cxcywh[:, 0].float() * img_w / cell_size[1]).long().clamp(0, width - 1)
        covered[torch.arange(len(row), device=device), row, col] = True
        return covered

    sub = cover(target.sub_boxes).float()  # [N, h, w]
    exists = object_existence(target.obj_boxes).bool()
    obj = cover(target.obj_boxes).float() * exists[:, None, None].float()
    obj_onehot = F.one_hot(target.obj_labels.long(), num_obj_classes + 1)[:, :num_obj_classes].float()
    out[..., :num_obj_classes] = torch.einsum("nhw,nc->hwc", obj, obj_onehot).clamp(max=1)
    out[..., num_obj_classes] = sub.amax(dim=0)
    out[..., num_obj_classes + 1:] = torch.einsum("nhw,nv->hwv", sub, target.verb_labels.float()).clamp(max=1)
    return out


def dense_loss(outputs: HOIOutputs, targets: list[HOITarget], num_obj_classes: int, verbs: bool = True) -> Tensor:
    """Scalar focal loss of ``outputs.dense_logits`` ``[B, h, w, K]`` on the valid cells (see module doc).

    ``verbs=False`` keeps only the ``C_obj + 1`` object and subject channels (no verb supervision).
    """
    logits = outputs.dense_logits.float()
    _, h, w, _ = logits.shape
    tgt = torch.stack([dense_targets(t, h, w, outputs.dense_cell_size, num_obj_classes) for t in targets])
    if not verbs:
        logits, tgt = logits[..., : num_obj_classes + 1], tgt[..., : num_obj_classes + 1]
    valid = outputs.dense_valid[..., None].float()
    loss = sigmoid_focal_loss(logits, tgt, alpha=0.25, gamma=2.0, reduction="none") * valid
    return loss.sum() / (tgt * valid).sum().clamp(min=1)


def global_num_interactions(targets: list[HOITarget], device: torch.device) -> Tensor:
    """Scalar fp32: GT pairs of the batch, averaged over ranks under ``torch.distributed``, clamped >= 1."""
    num = torch.tensor(float(sum(len(t) for t in targets)), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num)
        num = num / dist.get_world_size()
    return num.clamp(min=1)


@dataclass
class MatchedPairs:
    """One layer's outputs, its targets and the matching between them: what a loss term receives.

    Attributes:
        outputs: the layer's :class:`HOIOutputs`.
        targets: B targets.
        indices: per image ``(query indices, target indices)`` of the matching.
        batch_idx, query_idx: ``[M]`` image and query of every matched pair (matching order).
        num_interactions: GT pairs of the batch (all-reduced under DDP, at least 1).
    """

    outputs: HOIOutputs
    targets: list[HOITarget]
    indices: list[tuple[Tensor, Tensor]]
    batch_idx: Tensor
    query_idx: Tensor
    num_interactions: Tensor

    @classmethod
    def build(cls, outputs: HOIOutputs, targets: list[HOITarget], indices: list[tuple[Tensor, Tensor]],
              num_interactions: Tensor) -> MatchedPairs:
        device = outputs.hoi_logits.device
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)]).to(device)
        query_idx = torch.cat([src for src, _ in indices]).to(device)
        return cls(outputs, targets, indices, batch_idx, query_idx, num_interactions)

    def gather(self, name: str, dtype: torch.dtype) -> Tensor:
        """Field ``name`` of the matched targets, ``[M, ...]``."""
        return _gather(self.targets, self.indices, name, dtype, self.batch_idx.device)


#: a per-layer loss term: ``term(matched, criterion) -> {loss name: fp32 scalar}`` (unweighted)
LayerTerm = Callable[[MatchedPairs, "SetCriterion"], dict[str, Tensor]]


def hoi_label_term(m: MatchedPairs, criterion: SetCriterion) -> dict[str, Tensor]:
    """``loss_hoi_labels``: focal loss; matched queries get their pair's multi-hot target, the others zeros."""
    hoi_logits = m.outputs.hoi_logits.float()  # [B, Q, C_hoi]
    hoi_target = torch.zeros_like(hoi_logits)
    if m.query_idx.numel():
        hoi_target[m.batch_idx, m.query_idx] = m.gather("hoi_labels", torch.float32)
    return {"loss_hoi_labels": focal_hoi_loss(hoi_logits, hoi_target, criterion.focal_alpha)}


def object_class_term(m: MatchedPairs, criterion: SetCriterion) -> dict[str, Tensor]:
    """``loss_obj_ce``: cross-entropy over ``C_obj + 1`` slots; unmatched queries -> the no-object slot."""
    obj_logits = m.outputs.obj_logits.float()  # [B, Q, C_obj + 1]
    num_obj = criterion.num_obj_classes
    if obj_logits.shape[-1] != num_obj + 1:
        raise ValueError(f"obj_logits have {obj_logits.shape[-1]} slots, expected num_obj_classes + 1 = {num_obj + 1}")
    obj_target = torch.full(obj_logits.shape[:2], num_obj, dtype=torch.long, device=obj_logits.device)
    if m.query_idx.numel():
        obj_target[m.batch_idx, m.query_idx] = m.gather("obj_labels", torch.long)
    weight = criterion.obj_class_weight.to(device=obj_logits.device, dtype=torch.float32)
    return {"loss_obj_ce": F.cross_entropy(obj_logits.transpose(1, 2), obj_target, weight=weight)}


def box_terms(m: MatchedPairs, criterion: SetCriterion) -> dict[str, Tensor]:
    """L1 and GIoU losses of the matched subject and object boxes (``[M, 4]`` cxcywh).

    Subject terms are divided by ``num_interactions``; object terms count only pairs whose target object
    box exists, divided by their number + 1e-4 (the reference's local count).
    """
    src_sub = m.outputs.sub_boxes.float()[m.batch_idx, m.query_idx]
    src_obj = m.outputs.obj_boxes.float()[m.batch_idx, m.query_idx]
    tgt_sub, tgt_obj = m.gather("sub_boxes", torch.float32), m.gather("obj_boxes", torch.float32)
    exists = object_existence(tgt_obj).float()  # [M]
    num_exists = exists.sum() + _EXIST_EPS
    obj_giou = _giou_loss(src_obj, tgt_obj)
    return {
        "loss_sub_bbox": (src_sub - tgt_sub).abs().sum() / m.num_interactions,
        "loss_obj_bbox": ((src_obj - tgt_obj).abs().sum(dim=-1) * exists).sum() / num_exists,
        "loss_sub_giou": _giou_loss(src_sub, tgt_sub).sum() / m.num_interactions,
        # torch.where, not a product: a missing (all-zero) target box must contribute exactly 0
        "loss_obj_giou": torch.where(exists.bool(), obj_giou, torch.zeros_like(obj_giou)).sum() / num_exists,
    }


#: the per-layer terms of HOICLIP and GEN-VLKT (reference order of the losses)
DEFAULT_LAYER_TERMS: tuple[LayerTerm, ...] = (hoi_label_term, object_class_term, box_terms)


class SetCriterion(nn.Module):
    """Loss of HOICLIP for the last layer and every auxiliary layer.

    Args:
        num_obj_classes: C_obj, object classes without the no-object slot (V-COCO: including its
            "no object" pseudo-class); the no-object slot is index ``num_obj_classes``.
        config: matching costs and loss weights; ``None`` uses the :class:`LossConfig` defaults.
        aux_loss: also compute the losses of ``outputs.aux``.
        matcher: the matcher to use; ``None`` builds a :class:`HungarianMatcher` from ``config``.
        layer_terms: the per-layer loss terms (:data:`LayerTerm`; default :data:`DEFAULT_LAYER_TERMS`);
            each is computed for the last layer and every auxiliary layer.
        extra_weights: weights of loss names that the default terms do not produce (a term of your own);
            an unweighted name counts with weight 1.

    Examples:
        >>> import torch
        >>> from hoiclip_lightning.structures import HOIOutputs, HOITarget
        >>> out = HOIOutputs(torch.rand(1, 3, 4) * 0.5 + 0.25, torch.rand(1, 3, 4) * 0.5 + 0.25,
        ...                  torch.randn(1, 3, 5), torch.randn(1, 3, 6))
        >>> tgt = HOITarget(torch.tensor([[0.5, 0.5, 0.2, 0.2]]), torch.tensor([[0.4, 0.4, 0.2, 0.2]]),
        ...                 torch.tensor([1]), torch.zeros(1, 2), torch.eye(6)[:1], 0,
        ...                 torch.tensor([10, 10]), torch.tensor([10, 10]))
        >>> losses = SetCriterion(num_obj_classes=4)(out, [tgt])
        >>> sorted(k for k in losses if k.startswith("loss_"))[:3]
        ['loss_hoi_labels', 'loss_obj_bbox', 'loss_obj_ce']
    """

    def __init__(
        self,
        num_obj_classes: int,
        config: LossConfig | None = None,
        aux_loss: bool = True,
        matcher: HungarianMatcher | None = None,
        layer_terms: Sequence[LayerTerm] | None = None,
        extra_weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        if num_obj_classes < 1:
            raise ConfigurationError(f"num_obj_classes must be >= 1, got {num_obj_classes}")
        config = config if config is not None else LossConfig()
        if not 0 <= config.focal_alpha <= 1:
            raise ConfigurationError(f"focal_alpha must be in [0, 1], got {config.focal_alpha}")
        if config.eos_coef < 0:
            raise ConfigurationError(f"eos_coef must be >= 0, got {config.eos_coef}")
        self.num_obj_classes = num_obj_classes
        self.config = config
        self.aux_loss = aux_loss
        self.focal_alpha = config.focal_alpha
        self.matcher = matcher or HungarianMatcher(
            cost_hoi=config.cost_hoi,
            cost_obj_class=config.cost_obj_class,
            cost_bbox=config.cost_bbox,
            cost_giou=config.cost_giou,
        )
        self.weights: dict[str, float] = {
            "loss_hoi_labels": config.hoi_loss_coef,
            "loss_obj_ce": config.obj_loss_coef,
            "loss_sub_bbox": config.bbox_loss_coef,
            "loss_obj_bbox": config.bbox_loss_coef,
            "loss_sub_giou": config.giou_loss_coef,
            "loss_obj_giou": config.giou_loss_coef,
            **(extra_weights or {}),
        }
        self.layer_terms: tuple[LayerTerm, ...] = tuple(layer_terms) if layer_terms is not None else DEFAULT_LAYER_TERMS
        class_weight = torch.ones(num_obj_classes + 1)
        class_weight[-1] = config.eos_coef
        self.register_buffer("obj_class_weight", class_weight, persistent=False)

    # ------------------------------------------------------------------ single layer
    def layer_losses(
        self,
        outputs: HOIOutputs,
        targets: list[HOITarget],
        indices: list[tuple[Tensor, Tensor]],
        num_interactions: Tensor,
    ) -> dict[str, Tensor]:
        """The unweighted losses of one layer (fp32 scalars) from every term, given the matching ``indices``."""
        matched = MatchedPairs.build(outputs, targets, indices, num_interactions)
        losses: dict[str, Tensor] = {}
        for term in self.layer_terms:
            losses.update(term(matched, self))
        return losses

    @torch.no_grad()
    def class_errors(
        self, outputs: HOIOutputs, targets: list[HOITarget], indices: list[tuple[Tensor, Tensor]]
    ) -> dict[str, Tensor]:
        """Logging-only errors in percent on matched queries (0 when nothing is matched).

        ``obj_class_error``: 100 - top-1 accuracy of the object class. ``hoi_class_error``: 100 - recall of
        the positive HOI labels within each matched query's 5 highest-scoring classes (pooled over labels).
        """
        device = outputs.hoi_logits.device
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)]).to(device)
        query_idx = torch.cat([src for src, _ in indices]).to(device)
        zero = torch.zeros((), device=device)
        if query_idx.numel() == 0:
            return {"obj_class_error": zero, "hoi_class_error": zero.clone()}
        obj_labels = _gather(targets, indices, "obj_labels", torch.long, device)
        obj_pred = outputs.obj_logits[batch_idx, query_idx].float().argmax(dim=-1)
        obj_error = 100.0 - 100.0 * (obj_pred == obj_labels).float().mean()

        hoi_logits = outputs.hoi_logits[batch_idx, query_idx].float()  # [M, C_hoi]
        hoi_labels = _gather(targets, indices, "hoi_labels", torch.float32, device)
        k = min(5, hoi_logits.shape[-1])
        top = torch.zeros_like(hoi_logits).scatter_(1, hoi_logits.topk(k, dim=-1).indices, 1.0)
        positives = hoi_labels.eq(1).float()
        hits = (top * positives).sum()
        hoi_error = torch.where(positives.sum() > 0, 100.0 - 100.0 * hits / positives.sum().clamp(min=1), zero)
        return {"obj_class_error": obj_error, "hoi_class_error": hoi_error}

    # ------------------------------------------------------------------ all layers
    def forward(self, outputs: HOIOutputs, targets: list[HOITarget]) -> dict[str, Tensor]:
        """Losses of the last layer and of the auxiliary layers.

        Args:
            outputs: ``sub_boxes``/``obj_boxes`` ``[B, Q, 4]`` cxcywh, ``obj_logits`` ``[B, Q, C_obj + 1]``,
                ``hoi_logits`` ``[B, Q, C_hoi]``; ``aux`` the earlier layers (any float dtype).
            targets: B targets; ``hoi_labels`` ``[N, C_hoi]`` over the same classes as ``hoi_logits``.

        Returns:
            fp32 scalars: the six losses (unweighted), the same with suffix ``_i`` per auxiliary layer,
            ``loss`` (weighted total), ``obj_class_error`` and ``hoi_class_error`` (detached).
        """
        device = outputs.hoi_logits.device
        num_interactions = global_num_interactions(targets, device)

        # mixed precision: the inputs are cast to fp32 per loss; autocast is off so no op re-casts them down
        with torch.autocast(device_type=device.type, enabled=False):
            indices = self.matcher(outputs, targets)
            losses = self.layer_losses(outputs, targets, indices, num_interactions)
            total = sum(self.weights.get(k, 1.0) * v for k, v in losses.items())
            if self.aux_loss and outputs.aux:
                for i, aux in enumerate(outputs.aux):
                    aux_indices = self.matcher(aux, targets)
                    for k, v in self.layer_losses(aux, targets, aux_indices, num_interactions).items():
                        losses[f"{k}_{i}"] = v
                        total = total + self.weights.get(k, 1.0) * v
            if outputs.mimic_features is not None and outputs.mimic_target is not None:
                layers = [("loss_feat_mimic", outputs)]
                if self.aux_loss and outputs.aux:
                    layers += [(f"loss_feat_mimic_{i}", aux) for i, aux in enumerate(outputs.aux)
                               if aux.mimic_features is not None]
                for key, layer in layers:
                    losses[key] = mimic_loss(layer.mimic_features, outputs.mimic_target)
                    total = total + self.config.mimic_loss_coef * losses[key]
            if outputs.dense_logits is not None:
                losses["loss_dense"] = dense_loss(outputs, targets, self.num_obj_classes, self.config.dense_verb_loss)
                total = total + self.config.dense_loss_coef * losses["loss_dense"]
            losses["loss"] = total
            losses.update(self.class_errors(outputs, targets, indices))
        return losses


def _gather(
    targets: list[HOITarget], indices: list[tuple[Tensor, Tensor]], name: str, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Concatenate field ``name`` of the matched pairs of every image, in matching order: ``[M, ...]``."""
    return torch.cat(
        [
            getattr(t, name).to(device=device, dtype=dtype)[j.to(device)]
            for t, (_, j) in zip(targets, indices, strict=True)
        ]
    )


def _giou_loss(src_cxcywh: Tensor, tgt_cxcywh: Tensor) -> Tensor:
    """``[M]`` elementwise ``1 - GIoU`` of two ``[M, 4]`` cxcywh box sets.

    The diagonal of the pairwise ``[M, M]`` GIoU: exact (no epsilon, unlike ``generalized_box_iou_loss``,
    whose 1e-7 is a visible bias for small normalised boxes) and the same function the matcher uses;
    M is at most a few hundred matched pairs per batch.
    """
    if src_cxcywh.shape[0] == 0:
        return src_cxcywh.sum(dim=-1)
    giou = generalized_box_iou(box_convert(src_cxcywh, "cxcywh", "xyxy"), box_convert(tgt_cxcywh, "cxcywh", "xyxy"))
    return 1 - torch.diagonal(giou)
