"""HOIPostProcessor, triplet NMS and the training-free enhancement on hand cases."""

from __future__ import annotations

import math

import pytest
import torch

from hoiclip_lightning.errors import ConfigurationError
from hoiclip_lightning.models.enhancement import enhancement_sweep, training_free_enhancement
from hoiclip_lightning.models.postprocess import HOIPostProcessor, pixel_iou_plus_one, triplet_nms
from hoiclip_lightning.structures import HOIOutputs

LN3 = math.log(3.0)
# Full vocabulary of 3 HOI classes: objects (0, 0, 1), verbs (0, 1, 2). The model scores columns [0, 2].
HOI_TO_OBJECT = torch.tensor([0, 0, 1])
HOI_TO_VERB = torch.tensor([0, 1, 2])


def outputs_with(hoi_logits, obj_logits, boxes=None) -> HOIOutputs:
    b, q, _ = hoi_logits.shape
    boxes = torch.tensor([0.5, 0.5, 0.2, 0.2]).expand(b, q, 4).clone() if boxes is None else boxes
    return HOIOutputs(boxes, boxes.clone(), obj_logits, hoi_logits)


def hand_outputs() -> HOIOutputs:
    hoi = torch.tensor([[[LN3, 0.0], [0.0, -LN3]]])  # sigmoid: q0 (.75, .5), q1 (.5, .25)
    obj = torch.tensor([[[0.0, LN3, 5.0], [LN3, 0.0, 0.0]]])  # sigmoid of objects 0, 1: q0 (.5, .75), q1 (.75, .5)
    boxes = torch.tensor([[[0.2, 0.2, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]])  # disjoint, no NMS interaction
    return outputs_with(hoi, obj, boxes)


def processor(**kwargs) -> HOIPostProcessor:
    return HOIPostProcessor([0, 2], HOI_TO_OBJECT, HOI_TO_VERB, **kwargs)


def test_additive_score_uses_object_of_the_hoi_class():
    pred = processor(use_nms=False)(hand_outputs(), torch.tensor([[100, 100]]), [5])[0]
    # column 0 = class 0 (object 0), column 1 = class 2 (object 1):
    # (q0,c0) .75 + .5^2 = 1.0; (q0,c1) .5 + .75^2 = 1.0625; (q1,c0) .5 + .75^2 = 1.0625; (q1,c1) .25 + .5^2 = .5
    by_key = {
        (round(b[0].item()), h.item()): s.item()
        for b, h, s in zip(pred.sub_boxes, pred.hoi_labels, pred.scores, strict=True)
    }
    assert by_key == pytest.approx({(10, 0): 1.0, (10, 2): 1.0625, (60, 0): 1.0625, (60, 2): 0.5}, rel=1e-5)
    assert pred.image_id == 5
    assert pred.scores.tolist() == sorted(pred.scores.tolist(), reverse=True)
    assert torch.equal(pred.obj_labels, HOI_TO_OBJECT[pred.hoi_labels])
    assert torch.equal(pred.verb_labels, HOI_TO_VERB[pred.hoi_labels])


def test_multiplicative_and_softmax_modes():
    mult = processor(use_nms=False, score_mode="multiplicative")(hand_outputs(), torch.tensor([[100, 100]]), [0])[0]
    # .5 * .75, .75 * .5, .75 * .5, .25 * .5
    assert mult.scores.tolist() == pytest.approx([0.375, 0.375, 0.375, 0.125], rel=1e-5)
    soft = processor(use_nms=False, object_score="softmax")
    scores = soft.candidate_scores(torch.tensor([[[0.75, 0.5]]]), torch.tensor([[[0.0, LN3, 0.0]]]))
    assert scores[0, 0].tolist() == pytest.approx([0.75 + 0.2**2, 0.5 + 0.6**2], rel=1e-5)  # softmax (.2, .6, .2)


def test_external_hoi_scores_replace_sigmoid():
    hoi_scores = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])
    pred = processor(use_nms=False, topk=1)(hand_outputs(), torch.tensor([[100, 100]]), [0], hoi_scores=hoi_scores)[0]
    assert pred.scores.tolist() == pytest.approx([2.0 + 0.75**2], rel=1e-5)  # q1, class 0
    assert pred.hoi_labels.tolist() == [0]


def test_topk_count_and_deterministic_ties():
    outputs = outputs_with(torch.zeros(2, 4, 2), torch.zeros(2, 4, 3))  # every candidate scores .5 + .25
    preds = processor(use_nms=False, topk=5)(outputs, torch.tensor([[10, 10], [20, 20]]), [0, 1])
    assert [len(p) for p in preds] == [5, 5]
    # ties resolved by flat index q * C + c: (q0,c0), (q0,c1), (q1,c0), (q1,c1), (q2,c0)
    assert preds[0].hoi_labels.tolist() == [0, 2, 0, 2, 0]
    everything = processor(use_nms=False, topk=100)(outputs, torch.tensor([[10, 10], [20, 20]]), [0, 1])
    assert [len(p) for p in everything] == [8, 8]  # topk > Q * C keeps all 4 * 2 candidates


def test_boxes_in_original_pixels():
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4]]])
    outputs = HOIOutputs(boxes, boxes * 0.5, torch.zeros(1, 1, 3), torch.zeros(1, 1, 2))
    pred = processor(use_nms=False, topk=1)(outputs, torch.tensor([[100, 200]]), [0])[0]  # h = 100, w = 200
    assert pred.sub_boxes[0].tolist() == pytest.approx([80.0, 30.0, 120.0, 70.0])
    assert pred.obj_boxes[0].tolist() == pytest.approx([40.0, 15.0, 60.0, 35.0])  # (.25, .25, .1, .2)


def test_iou_uses_plus_one_pixel_convention():
    a = torch.tensor([[0.0, 0.0, 9.0, 9.0]])  # 10 x 10 = 100 pixels
    b = torch.tensor([[5.0, 0.0, 14.0, 9.0]])  # overlap 5 x 10 = 50, union 150
    assert pixel_iou_plus_one(a, b).item() == pytest.approx(1 / 3)  # without +1: 36 / 126


def test_triplet_nms_same_class_only_and_alpha_beta():
    box = [0.0, 0.0, 9.0, 9.0]
    near = [0.0, 0.0, 9.0, 10.0]  # IoU 100 / 110 = .909
    sub = torch.tensor([box, near, near])
    obj = torch.tensor([box, box, box])
    keep = triplet_nms(sub, obj, torch.tensor([3, 3, 4]))
    assert keep.tolist() == [True, False, True]  # duplicate of the same class dropped, other class kept
    # subjects identical, objects IoU 60 / 100 = .6: .6 ** .5 = .775 > .7 suppresses; .6 ** 1 does not
    obj2 = torch.tensor([box, [0.0, 0.0, 9.0, 5.0]])
    sub2 = torch.tensor([box, box])
    assert triplet_nms(sub2, obj2, torch.tensor([1, 1])).tolist() == [True, False]
    assert triplet_nms(sub2, obj2, torch.tensor([1, 1]), beta=1.0).tolist() == [True, True]


def test_triplet_nms_is_greedy():
    # IoU(A, B) = IoU(B, C) = 80 / 120 = .667, IoU(A, C) = 60 / 140 = .43; threshold .6
    sub = torch.tensor([[0.0, 0.0, 9.0, 9.0], [2.0, 0.0, 11.0, 9.0], [4.0, 0.0, 13.0, 9.0]])
    keep = triplet_nms(sub, sub.clone(), torch.tensor([0, 0, 0]), threshold=0.6, beta=0.0)
    assert keep.tolist() == [True, False, True]  # B is suppressed by A, so it cannot suppress C


def test_nms_inside_processor():
    hoi = torch.tensor([[[2.0, 0.0], [1.0, -1.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.4, 0.41]]])  # near-duplicate pair boxes
    outputs = outputs_with(hoi, torch.zeros(1, 2, 3), boxes)
    with_nms = processor(use_nms=True)(outputs, torch.tensor([[100, 100]]), [0])[0]
    without = processor(use_nms=False)(outputs, torch.tensor([[100, 100]]), [0])[0]
    assert len(without) == 4
    assert len(with_nms) == 2 and sorted(with_nms.hoi_labels.tolist()) == [0, 2]
    assert with_nms.scores.tolist() == pytest.approx([torch.sigmoid(torch.tensor(2.0)).item() + 0.25, 0.75])


def test_constructor_arguments_and_validation():
    post = HOIPostProcessor([0, 2], HOI_TO_OBJECT, HOI_TO_VERB, topk=7, use_nms=False)
    assert post.topk == 7 and not post.use_nms and post.nms_beta == 0.5
    with pytest.raises(ConfigurationError, match="score_mode"):
        processor(score_mode="max")
    with pytest.raises(ConfigurationError, match="hoi_ids"):
        HOIPostProcessor([0, 3], HOI_TO_OBJECT, HOI_TO_VERB)
    with pytest.raises(ValueError, match="columns"):
        processor()(outputs_with(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3)), torch.tensor([[10, 10]]), [0])


# ---------------------------------------------------------------------- training-free enhancement
CLIP = torch.tensor([[0.30, 0.10, 0.25, -0.20], [0.0, 0.2, 0.1, 0.4]])  # top-2: image 0 {0, 2}, image 1 {3, 1}


def test_tfe_intended_boosts_only_topk():
    probs = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(0))
    before = probs.clone()
    out = training_free_enhancement(probs, CLIP, topk=2, weight=2.0, mode="intended")
    boost = out - probs
    expected = torch.zeros(2, 4)
    for b, classes in enumerate(([0, 2], [3, 1])):
        for c in classes:
            expected[b, c] = 2.0 * torch.sigmoid(CLIP[b, c])
    assert torch.allclose(boost, expected.unsqueeze(1).expand(2, 3, 4), atol=1e-6)
    assert torch.equal(probs, before) and out.data_ptr() != probs.data_ptr()


def test_tfe_reference_adds_half_weight_to_non_topk():
    probs = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(1))
    clip = CLIP.clone()
    out = training_free_enhancement(probs, clip, topk=2, weight=2.0, mode="reference")
    boost = (out - probs)[:, 0]  # same for every query
    assert boost[0].tolist() == pytest.approx(
        [2 * torch.sigmoid(torch.tensor(0.30)).item(), 1.0, 2 * torch.sigmoid(torch.tensor(0.25)).item(), 1.0], rel=1e-5
    )
    assert torch.allclose((out - probs)[:, 0], (out - probs)[:, 2], atol=1e-6)
    assert torch.equal(clip, CLIP)


def test_tfe_sweep_uses_fresh_inputs_quirk_t4():
    probs = torch.zeros(2, 1, 4)
    results = dict(enhancement_sweep(probs, CLIP, topks=(1, 2, 10), mode="reference"))
    assert list(results) == [1, 2, 10]
    for k, value in results.items():
        assert torch.equal(value, training_free_enhancement(probs, CLIP, topk=k, mode="reference"))
    # image 0: class 2 is boosted with sigmoid(.25) at k = 2 but only +0.5 at k = 1 (no aliasing between k)
    assert results[1][0, 0, 2].item() == pytest.approx(0.5)
    assert results[2][0, 0, 2].item() == pytest.approx(torch.sigmoid(torch.tensor(0.25)).item())
    # k larger than C is clamped: every class gets its own sigmoid(cos)
    assert torch.allclose(results[10][:, 0], torch.sigmoid(CLIP))


def test_tfe_validation():
    with pytest.raises(ConfigurationError, match="mode"):
        training_free_enhancement(torch.zeros(1, 1, 4), CLIP[:1], mode="other")
    with pytest.raises(ValueError, match="clip_logits"):
        training_free_enhancement(torch.zeros(1, 1, 3), CLIP[:1])


@pytest.mark.parametrize("score_mode", ["additive", "multiplicative"])
@pytest.mark.parametrize("tfe", [None, "reference", "intended"])
def test_score_range_holds_and_is_reached(score_mode, tfe):
    """The documented score range (docs/inference.md): every score lies in it, and saturated outputs reach
    its top (2 + sigmoid(1) = 2.731 for the default additive scoring with TFE, not 2)."""
    from hoiclip_lightning.models.postprocess import score_range

    weight = 1.0 if tfe else None
    low, high = score_range(score_mode, weight, tfe or "reference")
    post = processor(use_nms=False, topk=8, score_mode=score_mode)
    gen = torch.Generator().manual_seed(3)
    rand = outputs_with(torch.randn(4, 4, 2, generator=gen) * 6, torch.randn(4, 4, 3, generator=gen) * 6)
    # saturated: HOI and object probabilities 1, CLIP's cosine 1 for every class (the image embedding equals
    # each prompt's); the lowest: probabilities 0, cosine -1 (topk 1: one class boosted, the other not)
    top = outputs_with(torch.full((1, 2, 2), 40.0), torch.full((1, 2, 3), 40.0))
    bottom = outputs_with(torch.full((1, 2, 2), -40.0), torch.full((1, 2, 3), -40.0))
    for outputs, cos, extreme in ((rand, torch.rand(4, 3, generator=gen) * 2 - 1, None),
                                  (top, torch.ones(1, 3), high), (bottom, -torch.ones(1, 3), low)):
        probs = None
        if tfe:
            probs = training_free_enhancement(outputs.hoi_logits.sigmoid(), cos[:, [0, 2]], topk=1, mode=tfe)
        scores = torch.cat([p.scores for p in post(outputs, torch.full((len(cos), 2), 50), list(range(len(cos))),
                                                    hoi_scores=probs)])
        assert low - 1e-6 <= float(scores.min()) and float(scores.max()) <= high + 1e-6
        if extreme == high:
            assert float(scores.max()) == pytest.approx(high, abs=1e-5)
        elif extreme == low and not (score_mode == "multiplicative" and tfe):
            assert float(scores.min()) == pytest.approx(low, abs=1e-5)
    if score_mode == "additive":
        assert (low, high) == ((0.0, 2.0) if tfe is None else
                               (pytest.approx(0.0 if tfe == "intended" else 0.26894, abs=1e-5), pytest.approx(2.73106)))
