"""SetCriterion: every loss term against hand-computed values, aux keys, edge cases, dtypes."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from hoiclip_lightning.errors import ConfigurationError
from hoiclip_lightning.models import criterion as criterion_module
from hoiclip_lightning.models.config import LossConfig
from hoiclip_lightning.models.criterion import LOSS_NAMES, SetCriterion, focal_hoi_loss
from hoiclip_lightning.structures import HOIOutputs, HOITarget

LN3 = math.log(3.0)


def cxcywh(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def target(sub, obj, obj_labels, hoi_labels) -> HOITarget:
    n = len(obj_labels)
    return HOITarget(
        sub_boxes=torch.tensor(sub, dtype=torch.float32).reshape(n, 4),
        obj_boxes=torch.tensor(obj, dtype=torch.float32).reshape(n, 4),
        obj_labels=torch.tensor(obj_labels, dtype=torch.long),
        verb_labels=torch.zeros(n, 2),
        hoi_labels=torch.tensor(hoi_labels, dtype=torch.float32).reshape(n, 2),
        image_id=0,
        orig_size=torch.tensor([100, 100]),
        size=torch.tensor([100, 100]),
    )


FAR = cxcywh(0.75, 0.75, 0.85, 0.85)
# Hand case: 1 image, Q = 2, C_obj = 2 (3 logit slots), C_hoi = 2, one GT pair matched to query 0.
SUB_PRED, SUB_GT = cxcywh(0.1, 0.1, 0.3, 0.3), cxcywh(0.2, 0.1, 0.4, 0.3)  # L1 0.1; IoU 1/3, hull 0.06 -> GIoU 1/3
OBJ_PRED, OBJ_GT = cxcywh(0.5, 0.5, 0.7, 0.7), cxcywh(0.5, 0.5, 0.7, 0.9)  # L1 0.1 + 0.2; IoU 0.5, hull = GT -> 0.5


def hand_outputs(dtype=torch.float32) -> HOIOutputs:
    return HOIOutputs(
        sub_boxes=torch.tensor([[SUB_PRED, FAR]], dtype=dtype),
        obj_boxes=torch.tensor([[OBJ_PRED, FAR]], dtype=dtype),
        obj_logits=torch.tensor([[[0.0, LN3, 0.0], [0.0, 0.0, 0.0]]], dtype=dtype),
        hoi_logits=torch.tensor([[[LN3, -LN3], [0.0, 0.0]]], dtype=dtype),  # p = (0.75, 0.25), (0.5, 0.5)
    )


def hand_target() -> HOITarget:
    return target(SUB_GT, OBJ_GT, [1], [[1.0, 0.0]])


# Expected values, written from the formulas of section 6.2.
# focal: positive (q0, c0) p = .75; negatives (q0, c1) p = .25, (q1, c0) and (q1, c1) p = .5; N_pos = 1
HOI = -(0.5 * 0.25**2 * math.log(0.75) + 0.5 * 0.25**2 * math.log(0.75) + 2 * 0.5 * 0.5**2 * math.log(0.5)) / 1
# CE: q0 -> class 1, p = 3/5, weight 1; q1 -> no-object (slot 2), p = 1/3, weight 0.1; weighted mean
OBJ_CE = (1.0 * -math.log(0.6) + 0.1 * -math.log(1 / 3)) / (1.0 + 0.1)
SUB_BBOX, SUB_GIOU = 0.1 / 1, (1 - 1 / 3) / 1
OBJ_BBOX, OBJ_GIOU = 0.3 / (1 + 1e-4), (1 - 0.5) / (1 + 1e-4)
TOTAL = 2 * HOI + 1 * OBJ_CE + 2.5 * SUB_BBOX + 2.5 * OBJ_BBOX + 1 * SUB_GIOU + 1 * OBJ_GIOU


def test_each_loss_term_on_hand_case():
    losses = SetCriterion(num_obj_classes=2, aux_loss=False)(hand_outputs(), [hand_target()])
    expected = {
        "loss_hoi_labels": HOI,
        "loss_obj_ce": OBJ_CE,
        "loss_sub_bbox": SUB_BBOX,
        "loss_obj_bbox": OBJ_BBOX,
        "loss_sub_giou": SUB_GIOU,
        "loss_obj_giou": OBJ_GIOU,
        "loss": TOTAL,
    }
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-5), key


def test_class_errors_on_hand_case():
    losses = SetCriterion(num_obj_classes=2, aux_loss=False)(hand_outputs(), [hand_target()])
    assert losses["obj_class_error"].item() == pytest.approx(0.0)  # argmax of q0 is class 1
    assert losses["hoi_class_error"].item() == pytest.approx(0.0)  # the positive is in the top-2
    wrong = hand_outputs()
    wrong.obj_logits[0, 0] = torch.tensor([LN3, 0.0, 0.0])
    assert SetCriterion(2, aux_loss=False)(wrong, [hand_target()])["obj_class_error"].item() == pytest.approx(100.0)


def test_loss_weights_from_config():
    config = LossConfig(hoi_loss_coef=1.0, obj_loss_coef=3.0, bbox_loss_coef=1.0, giou_loss_coef=2.0)
    losses = SetCriterion(2, config=config, aux_loss=False)(hand_outputs(), [hand_target()])
    total = HOI + 3 * OBJ_CE + SUB_BBOX + OBJ_BBOX + 2 * (SUB_GIOU + OBJ_GIOU)
    assert losses["loss"].item() == pytest.approx(total, rel=1e-5)


def test_eos_coef_changes_ce_weighting():
    losses = SetCriterion(2, config=LossConfig(eos_coef=1.0), aux_loss=False)(hand_outputs(), [hand_target()])
    assert losses["loss_obj_ce"].item() == pytest.approx((-math.log(0.6) + math.log(3)) / 2, rel=1e-5)


def test_focal_loss_without_positives_is_not_normalised():
    logits = torch.zeros(1, 2, 2)  # p = 0.5 everywhere, all four entries negative
    expected = -(4 * 0.5 * 0.5**2 * math.log(0.5))
    assert focal_hoi_loss(logits, torch.zeros(1, 2, 2)).item() == pytest.approx(expected, rel=1e-6)


def test_focal_loss_normalised_by_positive_count_and_clamped():
    logits = torch.tensor([[30.0, 30.0, -30.0]])  # p clamped to 1 - 1e-4, 1 - 1e-4, 1e-4
    targets = torch.tensor([[1.0, 1.0, 0.0]])
    p_hi, p_lo = 1 - 1e-4, 1e-4
    expected = -(2 * 0.5 * (1 - p_hi) ** 2 * math.log(p_hi) + 0.5 * p_lo**2 * math.log(1 - p_lo)) / 2
    assert focal_hoi_loss(logits, targets).item() == pytest.approx(expected, rel=1e-3)
    assert focal_hoi_loss(logits, targets).item() > 0


def test_missing_object_box_excluded_from_object_losses():
    outputs = hand_outputs()
    gt = target([SUB_GT, FAR], [OBJ_GT, [0.0] * 4], [1, 2], [[1.0, 0.0], [0.0, 1.0]])
    losses = SetCriterion(2, aux_loss=False)(outputs, [gt])
    # q0 -> pair 0 (as above), q1 -> pair 1 (identical subject box, no object): num_interactions = 2
    assert losses["loss_sub_bbox"].item() == pytest.approx((0.1 + 0.0) / 2, rel=1e-5)
    assert losses["loss_sub_giou"].item() == pytest.approx((2 / 3 + 0.0) / 2, rel=1e-5)
    assert losses["loss_obj_bbox"].item() == pytest.approx(0.3 / (1 + 1e-4), rel=1e-5)
    assert losses["loss_obj_giou"].item() == pytest.approx(0.5 / (1 + 1e-4), rel=1e-5)


def test_aux_keys_and_total():
    outputs = hand_outputs()
    outputs.aux = [hand_outputs(), hand_outputs()]
    losses = SetCriterion(2, aux_loss=True)(outputs, [hand_target()])
    for name in LOSS_NAMES:
        for i in (0, 1):
            assert losses[f"{name}_{i}"].item() == pytest.approx(losses[name].item(), rel=1e-6)
    assert "loss_hoi_labels_2" not in losses
    assert losses["loss"].item() == pytest.approx(3 * TOTAL, rel=1e-5)
    no_aux = SetCriterion(2, aux_loss=False)(outputs, [hand_target()])
    assert "loss_obj_ce_0" not in no_aux and no_aux["loss"].item() == pytest.approx(TOTAL, rel=1e-5)


def test_zero_target_image():
    empty = target([], [], [], [])
    losses = SetCriterion(2, aux_loss=False)(hand_outputs(), [empty])
    # every query -> no-object: weighted mean of equal weights = mean CE
    expected_ce = (-math.log(1 / 5) + -math.log(1 / 3)) / 2  # slot 2: q0 1 / (1 + 3 + 1), q1 1 / 3
    assert losses["loss_obj_ce"].item() == pytest.approx(expected_ce, rel=1e-5)
    for key in ("loss_sub_bbox", "loss_obj_bbox", "loss_sub_giou", "loss_obj_giou"):
        assert losses[key].item() == 0.0
    all_negative = -(0.5 * 0.75**2 * math.log(0.25) + 0.5 * 0.25**2 * math.log(0.75) + 2 * 0.5 * 0.25 * math.log(0.5))
    assert losses["loss_hoi_labels"].item() == pytest.approx(all_negative, rel=1e-5)
    assert torch.isfinite(losses["loss"])


def test_batch_with_zero_and_one_target_sums_interactions():
    one = hand_outputs()
    outputs = HOIOutputs(*(torch.cat([t, t]) for t in (one.sub_boxes, one.obj_boxes, one.obj_logits, one.hoi_logits)))
    losses = SetCriterion(2, aux_loss=False)(outputs, [target([], [], [], []), hand_target()])
    assert losses["loss_sub_bbox"].item() == pytest.approx(SUB_BBOX, rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_fp32_losses(dtype):
    half = hand_outputs(dtype)
    losses = SetCriterion(2, aux_loss=False)(half, [hand_target()])
    rounded = HOIOutputs(
        half.sub_boxes.float(), half.obj_boxes.float(), half.obj_logits.float(), half.hoi_logits.float()
    )
    reference = SetCriterion(2, aux_loss=False)(rounded, [hand_target()])
    for key in (*LOSS_NAMES, "loss"):
        assert losses[key].dtype == torch.float32, key
        assert losses[key].item() == pytest.approx(reference[key].item(), rel=1e-6), key


def test_backward_reaches_every_output():
    outputs = hand_outputs()
    for t in (outputs.sub_boxes, outputs.obj_boxes, outputs.obj_logits, outputs.hoi_logits):
        t.requires_grad_(True)
    SetCriterion(2, aux_loss=False)(outputs, [hand_target()])["loss"].backward()
    for t in (outputs.sub_boxes, outputs.obj_boxes, outputs.obj_logits, outputs.hoi_logits):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_num_interactions_all_reduced_over_ranks(monkeypatch):
    # Simulated 2-rank run: the other rank has 3 pairs -> (1 + 3) / 2 = 2 interactions per rank.
    monkeypatch.setattr(criterion_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(criterion_module.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(criterion_module.dist, "all_reduce", lambda t: t.add_(3.0))
    losses = SetCriterion(2, aux_loss=False)(hand_outputs(), [hand_target()])
    assert losses["loss_sub_bbox"].item() == pytest.approx(0.1 / 2, rel=1e-5)
    assert losses["loss_sub_giou"].item() == pytest.approx((2 / 3) / 2, rel=1e-5)
    assert losses["loss_obj_bbox"].item() == pytest.approx(OBJ_BBOX, rel=1e-5)  # local count, not reduced
    assert losses["loss_hoi_labels"].item() == pytest.approx(HOI, rel=1e-5)  # local positives


def test_invalid_arguments():
    with pytest.raises(ConfigurationError):
        SetCriterion(0)
    with pytest.raises(ConfigurationError):
        SetCriterion(2, config=LossConfig(focal_alpha=1.5))
    with pytest.raises(ValueError, match="num_obj_classes"):
        SetCriterion(3, aux_loss=False)(hand_outputs(), [hand_target()])


def test_dense_targets_and_loss_on_a_hand_made_case():
    from torchvision.ops import sigmoid_focal_loss

    from hoiclip_lightning.models.criterion import dense_loss, dense_targets

    # a 64x96 image, 4x6 cells of 16 px; human covers x 0-36, y 0-64; a class-1 object x 48-80, y 16-32
    tgt = HOITarget(
        sub_boxes=torch.tensor([[18 / 96, 32 / 64, 36 / 96, 64 / 64]]),
        obj_boxes=torch.tensor([[64 / 96, 24 / 64, 32 / 96, 16 / 64]]),
        obj_labels=torch.tensor([1]),
        verb_labels=torch.tensor([[0.0, 1.0]]),
        hoi_labels=torch.zeros(1, 3),
        image_id=0,
        orig_size=torch.tensor([64, 96]),
        size=torch.tensor([64, 96]),
    )
    t = dense_targets(tgt, 4, 6, (16.0, 16.0), num_obj_classes=2)
    assert t.shape == (4, 6, 2 + 1 + 2)
    human = torch.zeros(4, 6)
    human[:, :2] = 1  # cell centres x = 8, 24 lie in [0, 36]; 40 does not
    obj = torch.zeros(4, 6)
    obj[1, 3:5] = 1  # centre y = 24 in [16, 32]; x = 56, 72 in [48, 80]
    assert torch.equal(t[..., 0], torch.zeros(4, 6)) and torch.equal(t[..., 1], obj)
    assert torch.equal(t[..., 2], human) and torch.equal(t[..., 4], human)
    assert torch.equal(t[..., 3], torch.zeros(4, 6))

    # a 10x10 px class-0 object centred at (62, 30) covers no cell centre: its centre cell (row 1, col 3) counts
    small = dataclasses.replace(tgt, obj_boxes=torch.tensor([[62 / 96, 30 / 64, 10 / 96, 10 / 64]]),
                                obj_labels=torch.tensor([0]))
    t_small = dense_targets(small, 4, 6, (16.0, 16.0), num_obj_classes=2)
    expected_small = torch.zeros(4, 6)
    expected_small[1, 3] = 1
    assert torch.equal(t_small[..., 0], expected_small) and not t_small[..., 1].any()

    logits = torch.randn(1, 4, 6, 5)
    valid = torch.ones(1, 4, 6, dtype=torch.bool)
    valid[0, :, 5] = False  # a padded column
    out = HOIOutputs(torch.rand(1, 2, 4), torch.rand(1, 2, 4), torch.randn(1, 2, 3), torch.randn(1, 2, 3),
                     dense_logits=logits, dense_valid=valid, dense_cell_size=(16.0, 16.0))
    expected = (sigmoid_focal_loss(logits[0, :, :5], t[:, :5], reduction="sum") / t[:, :5].sum())
    assert torch.allclose(dense_loss(out, [tgt], 2), expected)
    losses = SetCriterion(num_obj_classes=2, config=LossConfig(dense_loss_coef=3.0), aux_loss=False)(out, [tgt])
    plain = SetCriterion(num_obj_classes=2, aux_loss=False)(
        HOIOutputs(out.sub_boxes, out.obj_boxes, out.obj_logits, out.hoi_logits), [tgt])
    assert "loss_dense" not in plain
    assert torch.allclose(losses["loss"], plain["loss"] + 3.0 * expected)

    # without verb supervision (detector pretraining) only the 2 object and the subject channels count
    no_verbs = (sigmoid_focal_loss(logits[0, :, :5, :3], t[:, :5, :3], reduction="sum") / t[:, :5, :3].sum())
    assert torch.allclose(dense_loss(out, [tgt], 2, verbs=False), no_verbs)
    assert not torch.allclose(no_verbs, expected)
    detector_only = SetCriterion(num_obj_classes=2, aux_loss=False,
                                 config=LossConfig(dense_loss_coef=1.0, dense_verb_loss=False))(out, [tgt])
    assert torch.allclose(detector_only["loss_dense"], no_verbs)


def test_a_loss_term_of_ones_own_plugs_in_with_its_weight():
    def matched_count(matched, criterion):  # a term of one's own: the number of matched pairs
        return {"loss_matched": matched.query_idx.numel() * torch.ones(())}

    outputs = hand_outputs()
    outputs.aux = [hand_outputs()]
    crit = SetCriterion(2, layer_terms=(*criterion_module.DEFAULT_LAYER_TERMS, matched_count),
                        extra_weights={"loss_matched": 0.5})
    losses = crit(outputs, [hand_target()])
    assert losses["loss_matched"].item() == 1.0 and losses["loss_matched_0"].item() == 1.0
    assert losses["loss"].item() == pytest.approx(2 * TOTAL + 2 * 0.5, rel=1e-5)
    only_boxes = SetCriterion(2, aux_loss=False, layer_terms=(criterion_module.box_terms,))(outputs, [hand_target()])
    assert sorted(k for k in only_boxes if k.startswith("loss_")) == sorted(LOSS_NAMES[2:])
    assert only_boxes["loss"].item() == pytest.approx(2.5 * SUB_BBOX + 2.5 * OBJ_BBOX + SUB_GIOU + OBJ_GIOU, rel=1e-5)
