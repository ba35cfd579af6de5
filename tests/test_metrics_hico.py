"""HICODetMAP: hand-computed cases for both protocols, agreement with per-detection loops, DDP, export.

Boxes use the +1 pixel convention: H = [0, 0, 9, 9] is 10 x 10 = 100 pixels.
"""

from __future__ import annotations

import math
import os
import socket
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
import torch

from hoiclip_lightning.errors import ConfigurationError
from hoiclip_lightning.metrics import HICODetMAP, VCOCORoleAP
from hoiclip_lightning.metrics import functional as F
from hoiclip_lightning.metrics.functional import matlab_thresholds, numpy_thresholds, round_half_away
from hoiclip_lightning.structures import HOIGroundTruth, HOIPrediction
from hoiclip_lightning.vocabulary import HOIVocabulary

H = [0.0, 0.0, 9.0, 9.0]
O = [20.0, 20.0, 29.0, 29.0]
H2 = [100.0, 100.0, 109.0, 109.0]
O2 = [120.0, 120.0, 129.0, 129.0]


def gt(image_id, pairs):
    """pairs: list of (human_box, object_box, hoi)."""
    if not pairs:
        return HOIGroundTruth.empty(image_id)
    h = torch.tensor([p[0] for p in pairs], dtype=torch.float32)
    o = torch.tensor([p[1] for p in pairs], dtype=torch.float32)
    hoi = torch.tensor([p[2] for p in pairs], dtype=torch.long)
    return HOIGroundTruth(image_id, h, o, torch.zeros_like(hoi), torch.zeros_like(hoi), hoi)


def pred(image_id, dets):
    """dets: list of (human_box, object_box, hoi, score)."""
    if not dets:
        z = torch.zeros(0, 4)
        zl = torch.zeros(0, dtype=torch.long)
        return HOIPrediction(image_id, z, z.clone(), zl, zl.clone(), zl.clone(), torch.zeros(0))
    h = torch.tensor([d[0] for d in dets], dtype=torch.float32)
    o = torch.tensor([d[1] for d in dets], dtype=torch.float32)
    hoi = torch.tensor([d[2] for d in dets], dtype=torch.long)
    s = torch.tensor([d[3] for d in dets], dtype=torch.float32)
    return HOIPrediction(image_id, h, o, torch.zeros_like(hoi), torch.zeros_like(hoi), hoi, s)


def run(preds, targets, **kw):
    kw.setdefault("num_hois", 3)
    m = HICODetMAP(**kw)
    m.update(preds, targets)
    return {k: v.numpy() if v.ndim else float(v) for k, v in m.compute().items()}


BOTH = pytest.mark.parametrize("protocol", ["official", "reference"])


# ---------------------------------------------------------------------------------------------- basics
def test_thresholds_match_matlab_colon_and_numpy_arange():
    t = matlab_thresholds()
    assert t[3] == 0.30000000000000004 and t[6] == 0.6 and t[7] == 0.7
    n = numpy_thresholds()
    assert n[6] == 0.6000000000000001 and n[7] == 0.7000000000000001


def test_round_half_away_from_zero():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999999999999994, 2.4, -10.5, -10.4])
    assert round_half_away(x).tolist() == [1, 2, 3, -1, -3, 0, 2, -11, -10]


def test_configuration_errors_list_accepted_values():
    with pytest.raises(ConfigurationError, match="official"):
        HICODetMAP(3, protocol="matlab")
    with pytest.raises(ConfigurationError, match="0..2"):
        HICODetMAP(3, rare_hois=[5])
    with pytest.raises(ConfigurationError, match="official"):
        HICODetMAP(3, protocol="reference", hoi_to_object=[0, 0, 1], known_object_images={0: [1]})
    with pytest.raises(ConfigurationError):
        HICODetMAP(3, per_image_topk=0)


def test_vocabulary_defaults():
    m = HICODetMAP(HOIVocabulary.builtin("hico_det"))
    assert m.num_hois == 600 and len(m.rare_hois) == 138 and m.hoi_to_object[0] == 4
    assert m.max_detections_per_class == 19999 and m.per_image_topk is None and m.matlab_thresholds
    r = HICODetMAP(600, protocol="reference")
    assert r.max_detections_per_class is None and r.per_image_topk == 100 and not r.matlab_thresholds


# ---------------------------------------------------------------------------------------------- known answers
@BOTH
def test_perfect_predictions_give_100(protocol):
    targets = [gt(0, [(H, O, 0), (H2, O2, 1)]), gt(1, [(H, O, 2)])]
    preds = [pred(0, [(H, O, 0, 0.9), (H2, O2, 1, 0.8)]), pred(1, [(H, O, 2, 0.7)])]
    r = run(preds, targets, protocol=protocol, rare_hois=[1], hoi_to_object=[0, 0, 1])
    for key in ("mAP_full", "mAP_rare", "mAP_non_rare"):
        assert r[key] == pytest.approx(100.0, abs=1e-9)
    assert r["ap_per_class"].tolist() == pytest.approx([100.0, 100.0, 100.0], abs=1e-9)


@BOTH
def test_one_wrong_class(protocol):
    # image 1 truly has class 1, the detection says class 0: class 0 = [TP, FP] -> AP 1; class 1 no det -> 0
    targets = [gt(0, [(H, O, 0)]), gt(1, [(H, O, 1)])]
    preds = [pred(0, [(H, O, 0, 0.9)]), pred(1, [(H, O, 0, 0.8)])]
    r = run(preds, targets, protocol=protocol, rare_hois=[1])
    assert r["ap_per_class"][:2].tolist() == pytest.approx([100.0, 0.0], abs=1e-9)
    assert r["mAP_full"] == pytest.approx(50.0, abs=1e-9)
    assert r["mAP_non_rare"] == pytest.approx(100.0, abs=1e-9)
    if protocol == "official":
        assert r["mAP_rare"] == pytest.approx(0.0, abs=1e-9)
    else:  # a class with GT but no detection is left out of Rare / Non-rare by the reference
        assert math.isnan(r["mAP_rare"])


@BOTH
@pytest.mark.parametrize("part", ["human", "object"])
@pytest.mark.parametrize(("y2", "expected"), [(19.0, 100.0), (20.0, 0.0)])
def test_iou_exactly_half_is_a_match_and_just_below_is_not(protocol, part, y2, expected):
    # GT 10x10 = 100; detection [0,0,9,y2] contains it: IoU = 100 / (10 * (y2 + 1)) = 0.5 at 19, 0.476 at 20
    big = [0.0, 0.0, 9.0, y2]
    det = (big, O) if part == "human" else (H, [20.0, 20.0, 29.0, 20.0 + y2])
    r = run([pred(0, [(*det, 0, 0.9)])], [gt(0, [(H, O, 0)])], protocol=protocol)
    assert r["ap_per_class"][0] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("x1", "official", "reference"), [(-10.4, 100.0, 0.0), (-10.5, 0.0, 0.0), (-9.5, 100.0, 100.0)]
)
def test_rounding_moves_iou_across_half(x1, official, reference):
    # GT 10x10; det [x1,0,9,9]: IoU = 100 / (10 * (10 - x1)) >= 0.5 iff x1 >= -10.
    # official rounds -10.4 -> -10 (match), -10.5 -> -11 (half away from zero; banker's rounding would give -10)
    det = [(([x1, 0.0, 9.0, 9.0]), O, 0, 0.9)]
    assert run([pred(0, det)], [gt(0, [(H, O, 0)])], protocol="official")["mAP_full"] == pytest.approx(official)
    assert run([pred(0, det)], [gt(0, [(H, O, 0)])], protocol="reference")["mAP_full"] == pytest.approx(reference)


def test_reference_zero_iou_when_boxes_touch_on_one_pixel():
    # single-pixel boxes: official +1 IoU = 1 / (1 + 1 - 1) = 1; reference returns 0 as soon as max >= min
    px = [5.0, 5.0, 5.0, 5.0]
    targets = [gt(0, [(px, px, 0)])]
    preds = [pred(0, [(px, px, 0, 0.9)])]
    assert run(preds, targets, protocol="official")["mAP_full"] == pytest.approx(100.0, abs=1e-9)
    assert run(preds, targets, protocol="reference")["mAP_full"] == pytest.approx(0.0, abs=1e-9)


@BOTH
def test_duplicate_detection_is_a_false_positive(protocol):
    # two GT pairs; dets: P1 (TP), P1 again (FP), P2 (TP): rec .5 .5 1, prec 1 .5 2/3
    # 11-point: t <= .5 -> 1 (6 thresholds), t > .5 -> 2/3 (5): (6 + 10/3) / 11 = 28/33
    targets = [gt(0, [(H, O, 0), (H2, O2, 0)])]
    preds = [pred(0, [(H, O, 0, 0.9), (H, O, 0, 0.8), (H2, O2, 0, 0.7)])]
    assert run(preds, targets, protocol=protocol)["mAP_full"] == pytest.approx(100 * 28 / 33, abs=1e-12)


@BOTH
def test_best_pair_already_matched_is_false_positive_even_if_another_pair_fits(protocol):
    # P1 = (H, O), P2 = ([0,0,9,10], O): a copy of P1 overlaps P2 at min(100/110, 1) = .909 but P1 at 1.
    # dets: P1 (TP), P1 again -> best pair P1 already matched -> FP. rec .5 .5 -> AP 6/11
    h_tall = [0.0, 0.0, 9.0, 10.0]
    targets = [gt(0, [(H, O, 0), (h_tall, O, 0)])]
    preds = [pred(0, [(H, O, 0, 0.9), (H, O, 0, 0.8)])]
    assert run(preds, targets, protocol=protocol)["mAP_full"] == pytest.approx(100 * 6 / 11, abs=1e-12)


def test_first_pair_wins_ties_of_the_largest_overlap():
    # two identical GT pairs: the first is always the best pair, so the second can never be matched
    targets = [gt(0, [(H, O, 0), (H, O, 0)])]
    preds = [pred(0, [(H, O, 0, 0.9), (H, O, 0, 0.8)])]
    assert run(preds, targets)["mAP_full"] == pytest.approx(100 * 6 / 11, abs=1e-12)


@pytest.mark.parametrize(("n_tp", "matlab", "numpy_"), [(6, 7 / 11, 6 / 11), (7, 8 / 11, 7 / 11), (5, 6 / 11, 6 / 11)])
def test_recall_exactly_point_six_and_point_seven(n_tp, matlab, numpy_):
    # 10 GT pairs in 10 images; n_tp perfect detections: precision 1 up to recall n_tp/10.
    targets = [gt(i, [(H, O, 0)]) for i in range(10)]
    preds = [pred(i, [(H, O, 0, 1.0 - i / 100)] if i < n_tp else []) for i in range(10)]
    assert run(preds, targets, protocol="official")["mAP_full"] == pytest.approx(100 * matlab, abs=1e-12)
    assert run(preds, targets, protocol="official", matlab_thresholds=False)["mAP_full"] == pytest.approx(
        100 * numpy_, abs=1e-12
    )
    assert run(preds, targets, protocol="reference")["mAP_full"] == pytest.approx(100 * numpy_, abs=1e-12)


@BOTH
def test_class_without_gt_is_ignored(protocol):
    targets = [gt(0, [(H, O, 0)])]
    with_extra = [pred(0, [(H, O, 2, 0.95), (H, O, 0, 0.9)])]
    r = run(with_extra, targets, protocol=protocol)
    assert r["mAP_full"] == pytest.approx(100.0, abs=1e-9)
    assert np.isnan(r["ap_per_class"][1]) and np.isnan(r["ap_per_class"][2])


@BOTH
def test_rare_non_rare_and_seen_unseen(protocol):
    # class 0: AP 1; class 1: [FP, TP] -> rec 0 1, prec 0 .5 -> AP .5; class 2: duplicate case 28/33
    targets = [gt(0, [(H, O, 0), (H, O, 1), (H, O, 2), (H2, O2, 2)])]
    preds = [
        pred(0, [(H, O, 0, 0.9), (H2, O2, 1, 0.8), (H, O, 1, 0.7),
                 (H, O, 2, 0.6), (H, O, 2, 0.5), (H2, O2, 2, 0.4)])
    ]
    r = run(preds, targets, protocol=protocol, rare_hois=[1], unseen_hois=[0, 2])
    ap = [1.0, 0.5, 28 / 33]
    assert r["ap_per_class"] == pytest.approx([100 * a for a in ap], abs=1e-12)
    assert r["mAP_full"] == pytest.approx(100 * sum(ap) / 3, abs=1e-12)
    assert r["mAP_rare"] == pytest.approx(50.0, abs=1e-12)
    assert r["mAP_non_rare"] == pytest.approx(100 * (ap[0] + ap[2]) / 2, abs=1e-12)
    assert r["mAP_seen"] == pytest.approx(50.0, abs=1e-12)
    assert r["mAP_unseen"] == pytest.approx(100 * (ap[0] + ap[2]) / 2, abs=1e-12)


def test_known_object_mode():
    # classes 0, 1 have object 0; class 2 object 1. Image 1 holds only object 1.
    # class 0: FP in image 1 (0.9), TP in image 0 (0.8): Default AP .5; KO drops image 1 -> AP 1.
    targets = [gt(0, [(H, O, 0)]), gt(1, [(H, O, 2)])]
    preds = [pred(0, [(H, O, 0, 0.8)]), pred(1, [(H, O, 0, 0.9), (H, O, 2, 0.7)])]
    r = run(preds, targets, hoi_to_object=[0, 0, 1], rare_hois=[0])
    assert r["mAP_full"] == pytest.approx(75.0, abs=1e-9) and r["mAP_full_ko"] == pytest.approx(100.0, abs=1e-9)
    assert r["mAP_rare"] == pytest.approx(50.0, abs=1e-9) and r["mAP_rare_ko"] == pytest.approx(100.0, abs=1e-9)
    assert r["ap_per_class_ko"][[0, 2]].tolist() == pytest.approx([100.0, 100.0], abs=1e-9)
    # explicit image labels: object 0 also labelled in image 1 -> KO keeps the FP
    r = run(preds, targets, hoi_to_object=[0, 0, 1], known_object_images={0: [0, 1], 1: [1]})
    assert r["mAP_full_ko"] == pytest.approx(75.0, abs=1e-9)
    assert "mAP_full_ko" not in run(preds, targets, protocol="reference", hoi_to_object=[0, 0, 1])


def test_cap_per_class():
    # dets TP .9, FP .8, TP .7 -> 28/33; capped at 2 -> [TP, FP] -> 6/11
    targets = [gt(0, [(H, O, 0)]), gt(1, [(H, O, 0)])]
    preds = [pred(0, [(H, O, 0, 0.9)]), pred(1, [(H2, O2, 0, 0.8), (H, O, 0, 0.7)])]
    assert run(preds, targets)["mAP_full"] == pytest.approx(100 * 28 / 33, abs=1e-12)
    assert run(preds, targets, max_detections_per_class=2)["mAP_full"] == pytest.approx(100 * 6 / 11, abs=1e-12)


def test_reference_keeps_top_k_per_image():
    # image 0: FP .9 then TP .5; with top-1 the TP is dropped -> AP 0; with top-2 -> [FP, TP] -> .5
    targets = [gt(0, [(H, O, 0)])]
    preds = [pred(0, [(H, O, 0, 0.5), (H2, O2, 0, 0.9)])]
    assert run(preds, targets, protocol="reference", per_image_topk=1)["mAP_full"] == pytest.approx(0.0, abs=1e-9)
    assert run(preds, targets, protocol="reference", per_image_topk=2)["mAP_full"] == pytest.approx(50.0, abs=1e-9)


@BOTH
def test_repeated_image_counts_once(protocol):
    targets = [gt(0, [(H, O, 0)]), gt(1, [(H, O, 0)])]
    preds = [pred(0, [(H, O, 0, 0.9)]), pred(1, [(H2, O2, 0, 0.8), (H, O, 0, 0.7)])]
    m = HICODetMAP(3, protocol=protocol)
    m.update(preds, targets)
    m.update(preds[1:], targets[1:])  # DistributedSampler padding repeats a sample
    assert float(m.compute()["mAP_full"]) == pytest.approx(100 * 28 / 33, abs=1e-12)


@BOTH
def test_compute_without_data_or_detections_gives_nan_or_zero(protocol):
    with pytest.warns(UserWarning, match="before the ``update``"):
        empty = HICODetMAP(3, protocol=protocol, hoi_to_object=[0, 0, 1]).compute()
    assert math.isnan(float(empty["mAP_full"]))
    r = run([pred(0, [])], [gt(0, [(H, O, 1)])], protocol=protocol, hoi_to_object=[0, 0, 1])
    assert r["mAP_full"] == 0.0 and np.isnan(r["ap_per_class"][0])


def test_update_rejects_mismatched_images_and_labels():
    m = HICODetMAP(3)
    with pytest.raises(ValueError, match="image"):
        m.update([pred(0, [])], [gt(1, [])])
    with pytest.raises(ValueError, match="0..2"):
        m.update([pred(0, [(H, O, 7, 0.5)])], [gt(0, [])])


# ---------------------------------------------------------------------------------------------- simple loops
def _round_matlab(x):
    return float(Decimal(float(x)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _iou_official_one(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw > 0 and ih > 0:
        ua = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - iw * ih
        return iw * ih / ua
    return 0.0


def _iou_reference_one(g, d):
    g = [np.float32(v) for v in g]
    d = [np.float32(v) for v in d]
    s = (g[2] - g[0] + 1) * (g[3] - g[1] + 1) + (d[2] - d[0] + 1) * (d[3] - d[1] + 1)
    left, right = max(g[1], d[1]), min(g[3], d[3])
    top, bottom = max(g[0], d[0]), min(g[2], d[2])
    if left >= right or top >= bottom:
        return 0.0
    inter = (right - left + 1) * (bottom - top + 1)
    return float(inter / (s - inter))


def _ap11(tp, npos, thresholds):
    tp = np.asarray(tp, dtype=np.int64)
    ctp = np.cumsum(tp)
    cfp = np.cumsum(1 - tp)
    rec = ctp / npos
    prec = ctp / (ctp + cfp)
    ap = 0.0
    for t in thresholds:
        m = rec >= t
        ap = ap + (prec[m].max() if m.any() else 0.0) / 11.0
    return ap


def simple_official(preds, targets, num_hois, rare, h2o, cap=19999, ko=False, known=None):
    """The MATLAB rules, one detection at a time. Returns (ap per class or nan, full, rare, non_rare).

    ``known``: explicit Known-Object image sets (object -> image ids); default: the objects of each image's GT.
    """
    thresholds = [k * 0.1 if k < 5 else 1 - (10 - k) * 0.1 for k in range(11)]
    gts = {t.image_id: t for t in targets}
    aps = [float("nan")] * num_hois
    for c in range(num_hois):
        npos = sum(int((t.hoi_labels == c).sum()) for t in targets)
        if npos == 0:
            continue
        dets = []
        for p in sorted(preds, key=lambda p: p.image_id):
            for k in range(len(p)):
                if int(p.hoi_labels[k]) == c:
                    dets.append((float(p.scores[k]), p.image_id, p.sub_boxes[k].tolist() + p.obj_boxes[k].tolist()))
        dets = sorted(dets, key=lambda d: -d[0])[:cap]  # Python's sort is stable
        if ko and known is None:
            dets = [d for d in dets if any(h2o[int(h)] == h2o[c] for h in gts[d[1]].hoi_labels)]
        elif ko:
            dets = [d for d in dets if d[1] in set(known.get(h2o[c], ()))]
        matched = set()
        tp = []
        for _, img, box in dets:
            box = [_round_matlab(v) for v in box]
            t = gts[img]
            ovmax, jmax = -math.inf, -1
            for j in range(len(t)):
                if int(t.hoi_labels[j]) != c:
                    continue
                ov = min(_iou_official_one(box[:4], t.sub_boxes[j].tolist()),
                         _iou_official_one(box[4:], t.obj_boxes[j].tolist()))
                if ov > ovmax:
                    ovmax, jmax = ov, j
            if ovmax >= 0.5 and (img, jmax) not in matched:
                matched.add((img, jmax))
                tp.append(1)
            else:
                tp.append(0)
        aps[c] = _ap11(tp, npos, thresholds) if tp else 0.0
    a = np.array(aps)
    has = ~np.isnan(a)
    rare_m = np.isin(np.arange(num_hois), rare)
    return a, a[has].mean(), a[has & rare_m].mean(), a[has & ~rare_m].mean()


def simple_reference(preds, targets, num_hois, rare, topk=100):
    """The reference evaluator's loop: per image, sorted predictions claim GT; per class argsort(-score)."""
    gt_classes = {int(h) for t in targets for h in t.hoi_labels}
    sum_gts = {c: sum(int((t.hoi_labels == c).sum()) for t in targets) for c in gt_classes}
    tps = {c: [] for c in gt_classes}
    scores = {c: [] for c in gt_classes}
    gts = {t.image_id: t for t in targets}
    for p in sorted(preds, key=lambda p: p.image_id):
        t = gts[p.image_id]
        items = sorted(range(len(p)), key=lambda k: float(p.scores[k]), reverse=True)[:topk]
        vis = set()
        for k in items:
            c = int(p.hoi_labels[k])
            best, best_j = 0.0, None
            for j in range(len(t)):
                if int(t.hoi_labels[j]) != c:
                    continue
                ih = _iou_reference_one(t.sub_boxes[j].tolist(), p.sub_boxes[k].tolist())
                io = _iou_reference_one(t.obj_boxes[j].tolist(), p.obj_boxes[k].tolist())
                if ih >= 0.5 and io >= 0.5 and min(ih, io) > best:
                    best, best_j = min(ih, io), j
            if c not in gt_classes:
                continue
            if best_j is not None and best_j not in vis:
                vis.add(best_j)
                tps[c].append(1)
            else:
                tps[c].append(0)
            scores[c].append(np.float32(p.scores[k]))
    aps = [float("nan")] * num_hois
    counted = set()
    for c in gt_classes:
        if not tps[c]:
            aps[c] = 0.0
            continue
        order = np.argsort(-np.array(scores[c]))
        aps[c] = _ap11(np.array(tps[c])[order], sum_gts[c], np.arange(0, 1.1, 0.1))
        counted.add(c)
    a = np.array(aps)
    full = np.nanmean(a)
    r = [aps[c] for c in counted if c in rare]
    nr = [aps[c] for c in counted if c not in rare]
    return a, full, np.mean(r) if r else float("nan"), np.mean(nr) if nr else float("nan")


def random_case(seed, num_images=12, num_hois=6):
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for i in range(num_images):
        n = int(rng.integers(0, 5))
        pairs = []
        for _ in range(n):
            xy = rng.integers(0, 60, size=2)
            wh = rng.integers(3, 30, size=2)
            h = [float(xy[0]), float(xy[1]), float(xy[0] + wh[0]), float(xy[1] + wh[1])]
            xy2 = rng.integers(0, 60, size=2)
            wh2 = rng.integers(3, 30, size=2)
            o = [float(xy2[0]), float(xy2[1]), float(xy2[0] + wh2[0]), float(xy2[1] + wh2[1])]
            pairs.append((h, o, int(rng.integers(0, num_hois))))
        if n and rng.random() < 0.3:
            pairs.append(pairs[0])  # an exact duplicate GT pair
        dets = []
        for _ in range(int(rng.integers(0, 14))):
            if pairs and rng.random() < 0.75:
                h, o, c = pairs[int(rng.integers(0, len(pairs)))]
                jit = rng.normal(0, 3.0, size=8)
                if rng.random() < 0.3:  # halves to exercise rounding
                    jit = np.round(jit) + 0.5
                box = (np.array(h + o) + jit).tolist()
                if rng.random() < 0.2:
                    c = int(rng.integers(0, num_hois))
            else:
                box = rng.uniform(0, 80, size=8)
                box[2:4] += box[0:2]
                box[6:8] += box[4:6]
                box = box.tolist()
                c = int(rng.integers(0, num_hois))
            score = float(np.round(rng.random(), 1))  # coarse scores -> many ties
            dets.append((box[:4], box[4:], c, score))
        preds.append(pred(i, dets))
        targets.append(gt(i, pairs))
    return preds, targets


@pytest.mark.parametrize("seed", range(12))
def test_official_agrees_with_per_detection_loop(seed):
    preds, targets = random_case(seed)
    h2o = [0, 0, 1, 1, 1, 2]
    rare = [1, 4]
    cap = None if seed % 3 else 5
    ours = run(preds, targets, num_hois=6, rare_hois=rare, hoi_to_object=h2o, max_detections_per_class=cap)
    for ko, sfx in ((False, ""), (True, "_ko")):
        a, full, r, nr = simple_official(preds, targets, 6, rare, h2o, cap=cap or 10**9, ko=ko)
        np.testing.assert_allclose(ours[f"ap_per_class{sfx}"], 100 * a, rtol=0, atol=1e-9)
        assert ours[f"mAP_full{sfx}"] == pytest.approx(100 * full, abs=1e-9)
        for key, val in ((f"mAP_rare{sfx}", r), (f"mAP_non_rare{sfx}", nr)):
            assert ours[key] == pytest.approx(100 * val, abs=1e-9, nan_ok=True)


@pytest.mark.parametrize("seed", range(12))
def test_reference_agrees_with_per_detection_loop(seed):
    preds, targets = random_case(seed + 100)
    rare = [1, 4]
    topk = 100 if seed % 2 else 4
    ours = run(preds, targets, num_hois=6, protocol="reference", rare_hois=rare, per_image_topk=topk)
    a, full, r, nr = simple_reference(preds, targets, 6, rare, topk=topk)
    np.testing.assert_allclose(ours["ap_per_class"], 100 * a, rtol=0, atol=1e-9)
    assert ours["mAP_full"] == pytest.approx(100 * full, abs=1e-9)
    assert ours["mAP_rare"] == pytest.approx(100 * r, abs=1e-9, nan_ok=True)
    assert ours["mAP_non_rare"] == pytest.approx(100 * nr, abs=1e-9, nan_ok=True)


def test_batching_and_update_order_do_not_matter():
    preds, targets = random_case(7, num_images=10)
    one = run(preds, targets, num_hois=6, hoi_to_object=[0, 0, 1, 1, 1, 2])
    m = HICODetMAP(6, hoi_to_object=[0, 0, 1, 1, 1, 2])
    for i in (9, 3, 0, 5, 1, 2, 8, 4, 7, 6):
        m.update([preds[i]], [targets[i]])
    two = {k: v.numpy() for k, v in m.compute().items()}
    for k in one:
        np.testing.assert_array_equal(one[k], two[k])


# ---------------------------------------------------------------------------------------------- building blocks
def test_radix_lexsort_equals_numpy_lexsort():
    rng = np.random.default_rng(0)
    for n, hi in ((0, 5), (1, 5), (500, 3), (2000, 70000), (2000, 2**40), (300, 2**64 - 1)):
        keys = [rng.integers(0, hi, n, dtype=np.uint64, endpoint=True) for _ in range(3)]
        keys[1][: n // 2] = keys[1][0] if n else 0  # a constant digit run, skipped
        assert np.array_equal(F.radix_lexsort(keys), np.lexsort(keys[::-1]))
    with pytest.raises(ValueError, match="non-negative"):
        F.radix_lexsort([np.array([1, -1])])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_class_score_order_is_the_stable_sort_with_special_values(dtype):
    rng = np.random.default_rng(1)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1e-40, -1e-40, 0.5, -2.5, 3.0], dtype=dtype)
    for _ in range(20):
        scores = rng.choice(special, 400).astype(dtype)
        scores[::7] = rng.normal(size=scores[::7].size)
        classes = rng.integers(0, 5, 400)
        assert np.array_equal(F.class_score_order(classes, scores), np.lexsort((-scores, classes)))
    scores[3] = np.nan  # falls back to the comparison sort, same answer
    assert np.array_equal(F.class_score_order(classes, scores), np.lexsort((-scores, classes)))
    bits = F.sortable_bits(np.array([0.1, 0.25], dtype=np.float64))
    assert bits.dtype == np.uint64 and F.sortable_bits(np.array([0.5, 0.25])).dtype == np.uint32


def test_round_half_away_f32_equals_round_half_away_on_float32_values():
    rng = np.random.default_rng(2)
    x = np.concatenate([
        rng.uniform(-2000, 2000, 100000).astype(np.float32),
        (rng.integers(-3000, 3000, 1000) + 0.5).astype(np.float32),
        np.float32([0.5, -0.5, 0.49999997, -0.49999997, 1.5, 2.5, -2.5, 1e-30, -1e-30, 0.0, -0.0, 8388607.5,
                    -8388607.5, 3e38, -3e38, np.inf, -np.inf]),
    ])
    with np.errstate(invalid="ignore"):  # inf - inf in the general function's tie test
        fast, general = F.round_half_away_f32(x), F.round_half_away(x.astype(np.float64))
    assert fast.tobytes() == general.tobytes()  # signed zeros too


def test_iou_official_columns_equals_iou_official():
    rng = np.random.default_rng(3)
    a = np.round(rng.uniform(0, 60, (5000, 4)))
    b = np.round(rng.uniform(0, 60, (5000, 4)))
    a[:, 2:] += a[:, :2] * rng.integers(0, 2, (5000, 1))
    b[::9] = a[::9]
    cols_a = [*a.T, F.box_area_official(*a.T)]
    cols_b = [*b.T, F.box_area_official(*b.T)]
    assert F.iou_official_columns(cols_a, cols_b).tobytes() == F.iou_official(a, b).tobytes()


def test_ap_from_true_positives_equals_ap_from_all_detections():
    rng = np.random.default_rng(4)
    thresholds = matlab_thresholds()
    for _ in range(50):
        cls = np.sort(rng.integers(0, 8, int(rng.integers(0, 300))))
        tp = rng.random(cls.size) < rng.random()
        npos = np.bincount(cls[tp], minlength=8) + rng.integers(0, 4, 8)
        ap, _ = F.segmented_eleven_point_ap(cls, tp, npos, thresholds)
        starts = np.searchsorted(cls, cls)
        idx = np.flatnonzero(tp)
        fast = F.eleven_point_ap_from_tps(cls[idx], idx - starts[idx] + 1, npos, thresholds)
        assert fast.tobytes() == ap.tobytes()


def test_first_claims_and_deduplicated_rows():
    assert F.first_claims(np.array([2, 0, 2, 0, 5]), np.array([9, 4, 3, 8, 1]), 6).tolist() == [1, 3, 4]
    assert F.first_claims(np.zeros(0, np.int64), np.zeros(0, np.int64), 3).size == 0
    # occurrences (id, n_det, n_gt): image 7 twice, images out of order
    occ = np.array([[7, 2, 1], [3, 1, 0], [7, 2, 1], [5, 3, 2]], dtype=np.float64)
    det = np.arange(8.0)[:, None]
    gt_rows = np.arange(4.0)[:, None]
    ids, dr, di, gr, gi, dup = F.deduplicate_images(occ, det, gt_rows)
    ids2, dt, di2, gtk, gi2, dup2 = F.deduplicated_rows(occ)
    assert ids.tolist() == ids2.tolist() == [3, 5, 7] and dup == dup2 == 1
    assert dr[:, 0].tolist() == det[dt, 0].tolist() == [2, 5, 6, 7, 0, 1]
    assert gr[:, 0].tolist() == gt_rows[gtk, 0].tolist() == [2, 3, 0]
    assert di.tolist() == di2.tolist() and gi.tolist() == gi2.tolist()
    in_order = F.deduplicated_rows(np.array([[1, 2, 0], [4, 1, 1]], dtype=np.float64))
    assert in_order[1] is None and in_order[3] is None and in_order[2].tolist() == [0, 0, 1]


# ---------------------------------------------------------------------------------------------- fast paths
def crowded_case(seed, num_images=40, num_hois=4, max_dets=40):
    """Many detections per class (above a small cap), coarse scores (ties everywhere), several GT pairs of
    one class per image, images without GT but with detections, halves for the rounding."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for i in range(num_images):
        pairs = []
        for _ in range(int(rng.integers(0, 6)) if i % 5 else 0):
            xy = rng.integers(0, 50, size=4).astype(float)
            wh = rng.integers(4, 25, size=4).astype(float)
            pairs.append(([xy[0], xy[1], xy[0] + wh[0], xy[1] + wh[1]], [xy[2], xy[3], xy[2] + wh[2], xy[3] + wh[3]],
                          int(rng.integers(0, 2)) if rng.random() < 0.7 else int(rng.integers(0, num_hois))))
        dets = []
        for _ in range(int(rng.integers(0, max_dets))):
            if pairs and rng.random() < 0.8:
                h, o, c = pairs[int(rng.integers(0, len(pairs)))]
                box = np.array(h + o) + np.round(rng.normal(0, 2.0, size=8)) + 0.5 * (rng.random(8) < 0.3)
                c = c if rng.random() < 0.8 else int(rng.integers(0, num_hois))
            else:
                box = rng.uniform(0, 60, size=8)
                box[2:4] += box[0:2]
                box[6:8] += box[4:6]
                c = int(rng.integers(0, num_hois))
            b = box.tolist()
            dets.append((b[:4], b[4:], c, float(rng.integers(0, 6)) / 5))
        preds.append(pred(i, dets))
        targets.append(gt(i, pairs))
    return preds, targets


@pytest.mark.parametrize("seed", range(6))
def test_official_fast_path_equals_loop_on_crowded_data(seed):
    # classes far above the cap, ties, shuffled and repeated updates, explicit or default Known-Object sets
    preds, targets = crowded_case(seed)
    h2o = [0, 0, 1, 1]
    known = {0: list(range(0, 40, 3)), 1: list(range(1, 40, 2))} if seed % 2 else None
    cap = [7, 30, 19999][seed % 3]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(preds)).tolist() + [3, 11]
    m = HICODetMAP(4, rare_hois=[1, 2], hoi_to_object=h2o, known_object_images=known, max_detections_per_class=cap)
    for k in range(0, len(order), 3):
        m.update([preds[i] for i in order[k:k + 3]], [targets[i] for i in order[k:k + 3]])
    ours = {k: v.numpy() for k, v in m.compute().items()}
    for ko, sfx in ((False, ""), (True, "_ko")):
        a, full, r, nr = simple_official(preds, targets, 4, [1, 2], h2o, cap=cap, ko=ko, known=known)
        if not ko:
            assert np.any((a > 0) & (a < 1))  # not a degenerate case
        np.testing.assert_array_equal(ours[f"ap_per_class{sfx}"], 100 * a)  # same arithmetic: same bits
        assert ours[f"mAP_full{sfx}"] == pytest.approx(100 * full, abs=1e-12)
        assert ours[f"mAP_rare{sfx}"] == pytest.approx(100 * r, abs=1e-12)
        assert ours[f"mAP_non_rare{sfx}"] == pytest.approx(100 * nr, abs=1e-12)


@pytest.mark.parametrize("protocol", ["official", "reference"])
def test_top_k_cut_in_update_or_compute_gives_the_same(protocol):
    # a batch with an image above the top-k is cut in update; one image at a time never is... until compute
    preds, targets = crowded_case(3, num_images=12)
    batched = run(preds, targets, num_hois=4, protocol=protocol, per_image_topk=5, hoi_to_object=[0, 0, 1, 1])
    assert max(len(p) for p in preds) > 5
    m = HICODetMAP(4, protocol=protocol, per_image_topk=5, hoi_to_object=[0, 0, 1, 1])
    for p, t in zip(preds, targets, strict=True):
        m.update([p], [t])
    single = {k: v.numpy() for k, v in m.compute().items()}
    for k in batched:
        np.testing.assert_array_equal(batched[k], single[k])
    if protocol == "reference":
        a, full, _, _ = simple_reference(preds, targets, 4, [], topk=5)
        np.testing.assert_allclose(batched["ap_per_class"], 100 * a, rtol=0, atol=1e-12)


def test_float64_inputs_take_the_general_rounding():
    # float64 coordinates that are not float32 numbers: x.5 + tiny must round up, x.5 - tiny down
    eps = 2.0**-40
    targets = [gt(0, [(H, O, 0)])]
    up = [-10.5 + eps, 0.0, 9.0, 9.0]  # rounds to -10: IoU 0.5 -> match
    down = [-10.5 - eps, 0.0, 9.0, 9.0]  # rounds to -11 -> no match

    def one(box):
        p = pred(0, [])
        p = HOIPrediction(0, torch.tensor([box], dtype=torch.float64), torch.tensor([O], dtype=torch.float64),
                          p.obj_labels, p.verb_labels, torch.tensor([0]), torch.tensor([0.9], dtype=torch.float64))
        return run([p], targets)["mAP_full"]

    assert one(up) == pytest.approx(100.0) and one(down) == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------- export
def test_official_export_layout(tmp_path):
    from scipy.io import loadmat

    targets = [gt(0, [(H, O, 0)]), gt(1, [(H, O, 2)])]
    preds = [pred(0, [([0.4, 0.5, 9.5, -0.5], O, 0, 0.5), (H, O, 1, 0.9), (H, O, 0, 0.8)]),
             pred(1, [(H, O, 2, 0.7), (H, O, 0, 0.6)])]
    m = HICODetMAP(3, hoi_to_object=[0, 0, 1], max_detections_per_class=2)
    m.update(preds, targets)
    paths = m.export_official(tmp_path, num_images=3)
    assert [p.name for p in paths] == ["detections_01.mat", "detections_02.mat"]
    cells = loadmat(paths[0])["all_boxes"]
    assert cells.shape == (2, 3)  # 2 HOI classes of object 1 x 3 images
    # class 0, capped at its 2 best (0.8 in image 0, 0.6 in image 1); the 0.5 one is dropped
    assert cells[0, 0].tolist() == [H + O + [0.800000011920929]]
    assert cells[0, 1][:, 8].tolist() == [pytest.approx(0.6)]
    assert cells[0, 2].shape == (0, 9) and cells[1, 1].shape == (0, 9)
    m2 = HICODetMAP(3, hoi_to_object=[0, 0, 1])
    m2.update(preds[:1], targets[:1])
    c2 = loadmat(m2.export_official(tmp_path / "b", num_images=1)[0])["all_boxes"]
    assert c2[0, 0][1, :4].tolist() == [0.0, 1.0, 10.0, -1.0]  # rounded half away from zero


# ---------------------------------------------------------------------------------------------- DDP
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _vcoco_case():
    from test_metrics_vcoco import random_vcoco_case

    return random_vcoco_case(3, num_images=8)


def _make_metrics():
    h2o = [0, 0, 1, 1, 1, 2]
    return [
        HICODetMAP(6, hoi_to_object=h2o, rare_hois=[1, 4]),
        HICODetMAP(6, protocol="reference", rare_hois=[1, 4], per_image_topk=5),
        VCOCORoleAP(5, no_object_index=3),
    ]


def _ddp_worker(rank, world, port, out_dir):
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        preds, targets = random_case(11, num_images=9)
        vp, vt = _vcoco_case()
        # rank 0: images 0-4, rank 1: images 5-8 plus image 2 again (sampler padding)
        mine = [0, 1, 2, 3, 4] if rank == 0 else [5, 6, 7, 8, 2]
        vmine = [0, 1, 2, 3] if rank == 0 else [4, 5, 6, 7, 1]
        results = []
        for m in _make_metrics():
            src_p, src_t, idx = (vp, vt, vmine) if isinstance(m, VCOCORoleAP) else (preds, targets, mine)
            for k in range(0, len(idx), 2):
                m.update([src_p[i] for i in idx[k:k + 2]], [src_t[i] for i in idx[k:k + 2]])
            results.append({k: v.clone() for k, v in m.compute().items()})
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_match_single_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    preds, targets = random_case(11, num_images=9)
    vp, vt = _vcoco_case()
    expected = []
    for m in _make_metrics():
        if isinstance(m, VCOCORoleAP):
            m.update(vp, vt)
        else:
            m.update(preds, targets)
        expected.append(m.compute())
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for g, e in zip(got, expected, strict=True):
            assert g.keys() == e.keys()
            for k in e:
                torch.testing.assert_close(g[k], e[k], rtol=0, atol=0, equal_nan=True)
