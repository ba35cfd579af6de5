"""Triplet NMS as the QPIC-family evaluators apply it (``--use_nms_filter`` of GEN-VLKT and HOICLIP).

Used by :class:`~hoiclip_lightning.models.HOIPostProcessor` and by the QPIC-family converter
(:func:`~hoiclip_lightning.metrics.predictions_from_qpic`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou


def pixel_iou_plus_one(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of xyxy pixel boxes with the inclusive-pixel (+1) convention.

    Args:
        boxes1: ``[K1, 4]`` xyxy pixels. boxes2: ``[K2, 4]`` xyxy pixels.

    Returns:
        ``[K1, K2]`` IoU where a box spans ``(x2 - x1 + 1) * (y2 - y1 + 1)`` pixels. Shifting x2, y2 by +1 and
        using the ordinary IoU gives exactly this.
    """
    shift = boxes1.new_tensor([0.0, 0.0, 1.0, 1.0])
    return box_iou(boxes1 + shift, boxes2 + shift)


def triplet_nms(
    sub_boxes: Tensor,
    obj_boxes: Tensor,
    classes: Tensor,
    threshold: float = 0.7,
    alpha: float = 1.0,
    beta: float = 0.5,
) -> Tensor:
    """Greedy per-class NMS of triplets that are already sorted by descending score.

    Args:
        sub_boxes, obj_boxes: ``[K, 4]`` xyxy pixels.
        classes: ``[K]`` class of each triplet (only triplets of the same class suppress each other).
        threshold, alpha, beta: suppress j when ``IoU_sub**alpha * IoU_obj**beta > threshold``.

    Returns:
        ``[K]`` bool keep mask (on the input device).
    """
    k = classes.shape[0]
    if k == 0:
        return torch.zeros(0, dtype=torch.bool, device=classes.device)
    overlap = pixel_iou_plus_one(sub_boxes.float(), sub_boxes.float()).pow(alpha) * pixel_iou_plus_one(
        obj_boxes.float(), obj_boxes.float()
    ).pow(beta)  # [K, K]
    suppresses = (overlap > threshold) & (classes[:, None] == classes[None, :])  # [K, K]
    suppresses = torch.triu(suppresses, diagonal=1).cpu()  # i suppresses only later (lower-scored) j
    keep = torch.ones(k, dtype=torch.bool)
    for i in range(k):  # K <= topk (100): a short loop on the CPU
        if keep[i]:
            keep &= ~suppresses[i]
    return keep.to(classes.device)
