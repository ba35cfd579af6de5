"""HungarianMatcher: each cost term on hand cases, optimality against brute force, edge cases."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from hoiclip_lightning.errors import ConfigurationError
from hoiclip_lightning.models.matcher import HungarianMatcher, box_l1_cost, giou_cost, hoi_cost
from hoiclip_lightning.structures import HOIOutputs, HOITarget


def xyxy_to_cxcywh(*box: float) -> list[float]:
    x1, y1, x2, y2 = box
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def make_target(sub, obj, obj_labels, hoi_labels, c_hoi: int = 4) -> HOITarget:
    n = len(obj_labels)
    hoi = torch.as_tensor(hoi_labels, dtype=torch.float32)
    return HOITarget(
        sub_boxes=torch.tensor(sub, dtype=torch.float32).reshape(n, 4),
        obj_boxes=torch.tensor(obj, dtype=torch.float32).reshape(n, 4),
        obj_labels=torch.tensor(obj_labels, dtype=torch.long),
        verb_labels=torch.zeros(n, 3),
        hoi_labels=hoi.reshape(n, -1) if n else torch.zeros(0, c_hoi),
        image_id=0,
        orig_size=torch.tensor([100, 100]),
        size=torch.tensor([100, 100]),
    )


def random_case(generator: torch.Generator, batch: int, queries: int, counts: list[int], c_hoi=4, c_obj=3):
    def boxes(*shape):
        centre = torch.rand(*shape, 2, generator=generator) * 0.6 + 0.2
        size = torch.rand(*shape, 2, generator=generator) * 0.3 + 0.05
        return torch.cat([centre, size], dim=-1)

    outputs = HOIOutputs(
        sub_boxes=boxes(batch, queries),
        obj_boxes=boxes(batch, queries),
        obj_logits=torch.randn(batch, queries, c_obj + 1, generator=generator),
        hoi_logits=torch.randn(batch, queries, c_hoi, generator=generator),
    )
    targets = []
    for n in counts:
        obj = boxes(n)
        if n:
            obj[0] = 0.0  # one pair without object (V-COCO style)
        targets.append(
            make_target(
                boxes(n).tolist(),
                obj.tolist(),
                torch.randint(0, c_obj, (n,), generator=generator).tolist(),
                (torch.rand(n, c_hoi, generator=generator) > 0.5).float(),
                c_hoi,
            )
        )
    return outputs, targets


# ---------------------------------------------------------------------- cost terms by hand
def test_hoi_cost_two_normalised_terms():
    p = torch.tensor([[0.8, 0.1, 0.3]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    expected = -0.5 * (0.8 / (1 + 1e-4) + (0.9 + 0.7) / (2 + 1e-4))
    assert hoi_cost(p, y).item() == pytest.approx(expected, rel=1e-6)


def test_hoi_weight_applied_twice_quirk_l1():
    logits = torch.tensor([[[math.log(4.0), math.log(1 / 9)]]])  # p = 0.8, 0.1
    outputs = HOIOutputs(torch.full((1, 1, 4), 0.5), torch.full((1, 1, 4), 0.5), torch.zeros(1, 1, 3), logits)
    target = make_target([0.5] * 4, [0.5] * 4, [0], [[1.0, 0.0]])
    base = -0.5 * (0.8 / (1 + 1e-4) + 0.9 / (1 + 1e-4))
    twice = HungarianMatcher(cost_hoi=2.0, cost_obj_class=0, cost_bbox=0, cost_giou=0)
    once = HungarianMatcher(cost_hoi=2.0, cost_obj_class=0, cost_bbox=0, cost_giou=0, hoi_cost_applied_twice=False)
    assert twice.cost_matrix(outputs, 0, target).item() == pytest.approx(4 * base, rel=1e-5)
    assert once.cost_matrix(outputs, 0, target).item() == pytest.approx(2 * base, rel=1e-5)


def test_object_class_cost_is_negative_softmax_of_target_label():
    obj_logits = torch.tensor([[[0.0, math.log(3.0), 0.0]]])  # softmax = 1/5, 3/5, 1/5
    outputs = HOIOutputs(torch.full((1, 1, 4), 0.5), torch.full((1, 1, 4), 0.5), obj_logits, torch.zeros(1, 1, 2))
    target = make_target([0.5] * 8, [0.5] * 8, [1, 2], [[1.0, 0.0], [0.0, 1.0]])
    matcher = HungarianMatcher(cost_hoi=0, cost_obj_class=1, cost_bbox=0, cost_giou=0)
    assert matcher.cost_matrix(outputs, 0, target)[0].tolist() == pytest.approx([-0.6, -0.2], rel=1e-5)


def test_box_l1_cost_max_of_subject_and_existing_object():
    sub_pred = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    obj_pred = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    sub_tgt = torch.tensor([[0.4, 0.5, 0.2, 0.3], [0.4, 0.5, 0.2, 0.3]])  # L1 = 0.1 + 0 + 0 + 0.1 = 0.2
    obj_tgt = torch.tensor([[0.2, 0.2, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]])  # L1 = 0.3 + 0.3 = 0.6; missing
    cost = box_l1_cost(sub_pred, obj_pred, sub_tgt, obj_tgt)
    assert cost[0].tolist() == pytest.approx([0.6, 0.2], rel=1e-5)


def test_giou_cost_with_missing_object_term_quirk_l4():
    sub_pred = torch.tensor([xyxy_to_cxcywh(0.0, 0.0, 0.2, 0.2)])
    obj_pred = torch.tensor([xyxy_to_cxcywh(0.5, 0.5, 0.7, 0.7)])
    # subject: inter 0.02, union 0.06, IoU 1/3, hull 0.3 x 0.2 = 0.06 -> GIoU 1/3
    sub_tgt = torch.tensor([xyxy_to_cxcywh(0.1, 0.0, 0.3, 0.2)] * 2)
    obj_tgt = torch.tensor([xyxy_to_cxcywh(0.5, 0.5, 0.7, 0.7), [0.0, 0.0, 0.0, 0.0]])
    cost = giou_cost(sub_pred, obj_pred, sub_tgt, obj_tgt)
    # existing object: identical boxes, GIoU 1 -> max(-1/3, -1) = -1/3
    # missing object: all-zero box (0,0,0,0): IoU 0, hull (0,0,0.7,0.7) = 0.49, union 0.04
    #   -> -GIoU = 0.45 / 0.49, plus the subject term -1/3
    assert cost[0].tolist() == pytest.approx([-1 / 3, 0.45 / 0.49 - 1 / 3], rel=1e-5)


def test_total_cost_is_weighted_sum():
    generator = torch.Generator().manual_seed(3)
    outputs, targets = random_case(generator, 1, 3, [2])
    weights = {"cost_hoi": 1.0, "cost_obj_class": 2.0, "cost_bbox": 3.0, "cost_giou": 4.0}
    total = HungarianMatcher(**weights).cost_matrix(outputs, 0, targets[0])
    parts = 0
    for name in weights:
        only = {k: (v if k == name else 0.0) for k, v in weights.items()}
        parts = parts + HungarianMatcher(**only).cost_matrix(outputs, 0, targets[0])
    assert torch.allclose(total, parts, atol=1e-5)


# ---------------------------------------------------------------------- assignment
@pytest.mark.parametrize("seed", range(6))
def test_assignment_is_optimal_against_brute_force(seed):
    generator = torch.Generator().manual_seed(seed)
    queries = 5 if seed < 4 else 2
    counts = [3, 1] if seed < 4 else [3, 2]  # seeds 4, 5: more pairs than queries
    outputs, targets = random_case(generator, 2, queries, counts)
    matcher = HungarianMatcher()
    for b, (pred_idx, tgt_idx) in enumerate(matcher(outputs, targets)):
        cost = matcher.cost_matrix(outputs, b, targets[b])
        n = len(targets[b])
        assert len(pred_idx) == len(tgt_idx) == min(queries, n)
        assert len(set(pred_idx.tolist())) == len(pred_idx) and len(set(tgt_idx.tolist())) == len(tgt_idx)
        got = cost[pred_idx, tgt_idx].sum().item()
        if n <= queries:
            best = min(
                sum(cost[q, j].item() for j, q in enumerate(p)) for p in itertools.permutations(range(queries), n)
            )
        else:
            best = min(
                sum(cost[q, j].item() for q, j in enumerate(p)) for p in itertools.permutations(range(n), queries)
            )
        assert got == pytest.approx(best, abs=1e-5)


def test_obvious_match_and_index_dtype():
    sub = xyxy_to_cxcywh(0.1, 0.1, 0.3, 0.3)
    far = xyxy_to_cxcywh(0.7, 0.7, 0.9, 0.9)
    outputs = HOIOutputs(
        sub_boxes=torch.tensor([[far, sub]]),
        obj_boxes=torch.tensor([[far, sub]]),
        obj_logits=torch.zeros(1, 2, 3),
        hoi_logits=torch.zeros(1, 2, 2),
    )
    ((pred_idx, tgt_idx),) = HungarianMatcher()(outputs, [make_target(sub, sub, [0], [[1.0, 0.0]])])
    assert pred_idx.tolist() == [1] and tgt_idx.tolist() == [0]
    assert pred_idx.dtype == tgt_idx.dtype == torch.long


def test_zero_target_image():
    generator = torch.Generator().manual_seed(0)
    outputs, targets = random_case(generator, 2, 4, [0, 2])
    indices = HungarianMatcher()(outputs, targets)
    assert indices[0][0].numel() == 0 and indices[0][1].numel() == 0
    assert len(indices[1][0]) == 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_cost_in_fp32(dtype):
    generator = torch.Generator().manual_seed(1)
    outputs, targets = random_case(generator, 1, 4, [2])
    half = HOIOutputs(
        *(t.to(dtype) for t in (outputs.sub_boxes, outputs.obj_boxes, outputs.obj_logits, outputs.hoi_logits))
    )
    rounded = HOIOutputs(*(t.float() for t in (half.sub_boxes, half.obj_boxes, half.obj_logits, half.hoi_logits)))
    matcher = HungarianMatcher()
    cost = matcher.cost_matrix(half, 0, targets[0])
    assert cost.dtype == torch.float32
    assert torch.equal(cost, matcher.cost_matrix(rounded, 0, targets[0]))
    assert [t.tolist() for t in matcher(half, targets)[0]] == [t.tolist() for t in matcher(rounded, targets)[0]]


def test_invalid_weights_and_batch_mismatch():
    with pytest.raises(ConfigurationError):
        HungarianMatcher(cost_hoi=-1.0)
    generator = torch.Generator().manual_seed(0)
    outputs, targets = random_case(generator, 2, 3, [1, 1])
    with pytest.raises(ValueError, match="2 images"):
        HungarianMatcher()(outputs, targets[:1])
