"""Hungarian matching of pair queries to ground-truth human-object pairs.

Notation: B images, Q pair queries, N ground-truth pairs of one image, C_obj object classes (the object
logits have ``C_obj + 1`` slots, the last one being "no object"), C_hoi HOI classes scored by the model.

The cost of assigning query q to ground-truth pair j is (reference architecture, section 6.1)::

    C = w_hoi * C_hoi + w_obj * C_cls + w_bbox * C_box + w_giou * C_giou

* ``C_hoi = -1/2 * [ p.y / (sum y + 1e-4) + (1-p).(1-y) / (sum (1-y) + 1e-4) ]`` with ``p`` the sigmoid HOI
  probabilities of q and ``y`` the multi-hot HOI target of j; as in the reference (quirk L1) the HOI weight
  is applied twice unless ``hoi_cost_applied_twice=False``.
* ``C_cls = -softmax(obj_logits)[q, obj_label_j]``.
* ``C_box = max(L1(sub_q, sub_j), L1(obj_q, obj_j) * [obj_j exists])`` on normalised cxcywh boxes.
* ``C_giou = max(-GIoU(sub_q, sub_j), -GIoU(obj_q, obj_j) + (-GIoU(sub_q, sub_j)) * [obj_j missing])``
  (quirk L4: a missing object box is an all-zero box and still enters the GIoU).

An object box "exists" when it is not all zeros (V-COCO roles without object have all-zero boxes).
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

from ..errors import ConfigurationError
from ..structures import HOIOutputs, HOITarget

_EPS = 1e-4


def hoi_cost(hoi_probs: Tensor, hoi_targets: Tensor) -> Tensor:
    """HOI classification cost (without weight).

    Args:
        hoi_probs: ``[Q, C_hoi]`` sigmoid probabilities.
        hoi_targets: ``[N, C_hoi]`` multi-hot targets.

    Returns:
        ``[Q, N]`` cost, in ``[-1, 0]``.
    """
    pos = hoi_probs @ hoi_targets.T / (hoi_targets.sum(dim=1) + _EPS).unsqueeze(0)
    neg = (1 - hoi_probs) @ (1 - hoi_targets).T / ((1 - hoi_targets).sum(dim=1) + _EPS).unsqueeze(0)
    return -0.5 * (pos + neg)


def object_existence(obj_boxes: Tensor) -> Tensor:
    """``[N]`` bool: True where the ``[N, 4]`` target object box is not all zeros."""
    return obj_boxes.ne(0).any(dim=-1)


def box_l1_cost(sub_pred: Tensor, obj_pred: Tensor, sub_tgt: Tensor, obj_tgt: Tensor) -> Tensor:
    """``[Q, N]`` max of the subject L1 and the (existing) object L1 distances of cxcywh boxes.

    Args:
        sub_pred, obj_pred: ``[Q, 4]`` predicted cxcywh boxes, normalised.
        sub_tgt, obj_tgt: ``[N, 4]`` target cxcywh boxes, normalised (object all zeros when missing).
    """
    exists = object_existence(obj_tgt).to(sub_pred.dtype)
    sub = torch.cdist(sub_pred, sub_tgt, p=1)
    obj = torch.cdist(obj_pred, obj_tgt, p=1) * exists.unsqueeze(0)
    return torch.maximum(sub, obj)


def giou_cost(sub_pred: Tensor, obj_pred: Tensor, sub_tgt: Tensor, obj_tgt: Tensor) -> Tensor:
    """``[Q, N]`` GIoU cost; for a missing object the (degenerate) object term gets the subject term added.

    Args: as :func:`box_l1_cost`.
    """
    missing = (~object_existence(obj_tgt)).to(sub_pred.dtype)
    sub = -generalized_box_iou(box_convert(sub_pred, "cxcywh", "xyxy"), box_convert(sub_tgt, "cxcywh", "xyxy"))
    obj = -generalized_box_iou(box_convert(obj_pred, "cxcywh", "xyxy"), box_convert(obj_tgt, "cxcywh", "xyxy"))
    return torch.maximum(sub, obj + sub * missing.unsqueeze(0))


class HungarianMatcher(nn.Module):
    """One-to-one assignment of pair queries to ground-truth pairs, minimising the weighted cost above.

    Args:
        cost_hoi: weight of the HOI cost.
        cost_obj_class: weight of the object-class cost.
        cost_bbox: weight of the box L1 cost.
        cost_giou: weight of the GIoU cost.
        hoi_cost_applied_twice: *quirk* L1, the reference multiplies the HOI cost by ``cost_hoi`` twice;
            False applies it once (identical for the default weight 1).

    Examples:
        >>> import torch
        >>> from hoiclip_lightning.structures import HOIOutputs, HOITarget
        >>> out = HOIOutputs(torch.rand(1, 3, 4) * 0.5 + 0.25, torch.rand(1, 3, 4) * 0.5 + 0.25,
        ...                  torch.randn(1, 3, 5), torch.randn(1, 3, 6))
        >>> tgt = HOITarget(torch.tensor([[0.5, 0.5, 0.2, 0.2]]), torch.tensor([[0.4, 0.4, 0.2, 0.2]]),
        ...                 torch.tensor([1]), torch.zeros(1, 2), torch.eye(6)[:1], 0,
        ...                 torch.tensor([10, 10]), torch.tensor([10, 10]))
        >>> [(len(p), len(t)) for p, t in HungarianMatcher()(out, [tgt])]
        [(1, 1)]
    """

    def __init__(
        self,
        cost_hoi: float = 1.0,
        cost_obj_class: float = 1.0,
        cost_bbox: float = 2.5,
        cost_giou: float = 1.0,
        hoi_cost_applied_twice: bool = True,
    ) -> None:
        super().__init__()
        weights = {
            "cost_hoi": cost_hoi,
            "cost_obj_class": cost_obj_class,
            "cost_bbox": cost_bbox,
            "cost_giou": cost_giou,
        }
        if any(w < 0 for w in weights.values()) or all(w == 0 for w in weights.values()):
            raise ConfigurationError(f"matching cost weights must be >= 0 and not all 0, got {weights}")
        self.cost_hoi = float(cost_hoi)
        self.cost_obj_class = float(cost_obj_class)
        self.cost_bbox = float(cost_bbox)
        self.cost_giou = float(cost_giou)
        self.hoi_cost_applied_twice = hoi_cost_applied_twice

    def cost_matrix(self, outputs: HOIOutputs, image: int, target: HOITarget) -> Tensor:
        """``[Q, N]`` fp32 total cost between the queries of image ``image`` and the pairs of ``target``."""
        hoi_probs = outputs.hoi_logits[image].float().sigmoid()  # [Q, C_hoi]
        obj_probs = outputs.obj_logits[image].float().softmax(dim=-1)  # [Q, C_obj + 1]
        sub_pred = outputs.sub_boxes[image].float()  # [Q, 4]
        obj_pred = outputs.obj_boxes[image].float()  # [Q, 4]
        device = hoi_probs.device
        hoi_tgt = target.hoi_labels.to(device=device, dtype=torch.float32)  # [N, C_hoi]
        sub_tgt = target.sub_boxes.to(device=device, dtype=torch.float32)  # [N, 4]
        obj_tgt = target.obj_boxes.to(device=device, dtype=torch.float32)  # [N, 4]
        obj_labels = target.obj_labels.to(device=device, dtype=torch.long)  # [N]
        if hoi_tgt.shape[-1] != hoi_probs.shape[-1]:
            raise ValueError(
                f"image {image}: target hoi_labels have {hoi_tgt.shape[-1]} classes, "
                f"hoi_logits have {hoi_probs.shape[-1]}"
            )

        w_hoi_inner = self.cost_hoi if self.hoi_cost_applied_twice else 1.0
        cost = self.cost_hoi * (w_hoi_inner * hoi_cost(hoi_probs, hoi_tgt))
        cost = cost + self.cost_obj_class * (-obj_probs[:, obj_labels])
        cost = cost + self.cost_bbox * box_l1_cost(sub_pred, obj_pred, sub_tgt, obj_tgt)
        cost = cost + self.cost_giou * giou_cost(sub_pred, obj_pred, sub_tgt, obj_tgt)
        return cost

    @torch.no_grad()
    def forward(self, outputs: HOIOutputs, targets: list[HOITarget]) -> list[tuple[Tensor, Tensor]]:
        """Match every image independently.

        Args:
            outputs: model outputs with ``sub_boxes``/``obj_boxes`` ``[B, Q, 4]``, ``obj_logits``
                ``[B, Q, C_obj + 1]``, ``hoi_logits`` ``[B, Q, C_hoi]`` (any float dtype; costs are fp32).
            targets: B targets with N_b pairs each (N_b may be 0).

        Returns:
            One ``(pred_idx, tgt_idx)`` pair of CPU long tensors per image, each of length
            ``min(Q, N_b)``, ``pred_idx`` ascending; query ``pred_idx[i]`` is matched to pair ``tgt_idx[i]``.
        """
        batch = outputs.hoi_logits.shape[0]
        if len(targets) != batch:
            raise ValueError(f"got {len(targets)} targets for a batch of {batch} images")
        indices: list[tuple[Tensor, Tensor]] = []
        for b, target in enumerate(targets):
            if len(target) == 0:
                empty = torch.zeros(0, dtype=torch.long)
                indices.append((empty, empty.clone()))
                continue
            with torch.autocast(device_type=outputs.hoi_logits.device.type, enabled=False):  # fp32 costs under AMP
                cost = self.cost_matrix(outputs, b, target).cpu()
            if not torch.isfinite(cost).all():
                raise ValueError(f"image {b} (image_id {target.image_id}): the matching cost has NaN/inf entries")
            rows, cols = linear_sum_assignment(cost.numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return indices
