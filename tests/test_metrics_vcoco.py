"""VCOCORoleAP: Scenario 1 vs 2, the best-person rule, all-point AP, agreement with a vsrl_eval-style loop;
the official ground truth rules (persons outside V-COCO, no action, first person on no overlap, ties)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hoiclip_lightning.errors import ConfigurationError
from hoiclip_lightning.metrics import VCOCORoleAP
from hoiclip_lightning.metrics import functional as F
from hoiclip_lightning.structures import HOIGroundTruth, HOIPrediction, VCOCOGroundTruth
from hoiclip_lightning.vocabulary import HOIVocabulary

NO_OBJ = 3  # object label "none" in these tests (objects 0..2 are real)
P = [0.0, 0.0, 9.0, 9.0]
P2 = [100.0, 100.0, 109.0, 109.0]
OB = [20.0, 20.0, 29.0, 29.0]
OB2 = [50.0, 50.0, 59.0, 59.0]
Z = [0.0, 0.0, 0.0, 0.0]


def gt(image_id, rows):
    """rows: (person_box, object_box, verb, object_label)."""
    if not rows:
        return HOIGroundTruth.empty(image_id)
    return HOIGroundTruth(
        image_id,
        torch.tensor([r[0] for r in rows], dtype=torch.float32),
        torch.tensor([r[1] for r in rows], dtype=torch.float32),
        torch.tensor([r[3] for r in rows], dtype=torch.long),
        torch.tensor([r[2] for r in rows], dtype=torch.long),
        torch.zeros(len(rows), dtype=torch.long),
    )


def pred(image_id, dets):
    """dets: (person_box, object_box, verb, object_label, score)."""
    if not dets:
        z = torch.zeros(0, 4)
        zl = torch.zeros(0, dtype=torch.long)
        return HOIPrediction(image_id, z, z.clone(), zl, zl.clone(), zl.clone(), torch.zeros(0))
    return HOIPrediction(
        image_id,
        torch.tensor([d[0] for d in dets], dtype=torch.float32),
        torch.tensor([d[1] for d in dets], dtype=torch.float32),
        torch.tensor([d[3] for d in dets], dtype=torch.long),
        torch.tensor([d[2] for d in dets], dtype=torch.long),
        torch.zeros(len(dets), dtype=torch.long),
        torch.tensor([d[4] for d in dets], dtype=torch.float32),
    )


def run(preds, targets, **kw):
    kw.setdefault("num_verbs", 5)
    kw.setdefault("no_object_index", NO_OBJ)
    m = VCOCORoleAP(**kw)
    m.update(preds, targets)
    return {k: v.numpy() if v.ndim else float(v) for k, v in m.compute().items()}


def test_vocabulary_defaults_and_errors():
    m = VCOCORoleAP(HOIVocabulary.builtin("vcoco"))
    assert m.num_verbs == 29 and m.no_object_index == 80 and len(m.role_verbs) == 25
    assert 1 not in m.role_verbs and 0 in m.role_verbs  # stand excluded, hold_obj kept
    with pytest.raises(ConfigurationError):
        VCOCORoleAP(5, role_verbs=[9])


def test_perfect_predictions_give_100_in_both_scenarios():
    targets = [gt(0, [(P, OB, 0, 1), (P2, Z, 2, NO_OBJ)])]
    preds = [pred(0, [(P, OB, 0, 1, 0.9), (P2, Z, 2, NO_OBJ, 0.8)])]
    r = run(preds, targets, role_verbs=[0, 2])
    assert r["mAP_role_s1"] == pytest.approx(100.0, abs=1e-9) and r["mAP_role_s2"] == pytest.approx(100.0, abs=1e-9)
    assert np.isnan(r["ap_role_s1"][1]) and r["ap_role_s1"][[0, 2]].tolist() == pytest.approx([100.0, 100.0], abs=1e-9)


def test_scenario_1_and_2_differ_when_gt_has_no_role_object():
    # person does verb 2 without object; the prediction names an object box -> S1 wrong, S2 right
    targets = [gt(0, [(P, Z, 2, NO_OBJ)])]
    preds = [pred(0, [(P, OB, 2, 1, 0.9)])]
    r = run(preds, targets, role_verbs=[2])
    assert r["mAP_role_s1"] == pytest.approx(0.0, abs=1e-9) and r["mAP_role_s2"] == pytest.approx(100.0, abs=1e-9)
    # an empty predicted role box (zeros, NaN, or the no-object label) is right in S1 too
    for box, label in ((Z, 1), ([float("nan")] * 4, 1), (OB, NO_OBJ)):
        r = run([pred(0, [(P, box, 2, label, 0.9)])], targets, role_verbs=[2])
        assert (r["mAP_role_s1"], r["mAP_role_s2"]) == (100.0, 100.0)
    r = run([pred(0, [(P, OB, 2, NO_OBJ, 0.9)])], targets, role_verbs=[2], empty_role_from_label=False)
    assert r["mAP_role_s1"] == pytest.approx(0.0, abs=1e-9)


def test_role_box_must_overlap_when_gt_has_one():
    targets = [gt(0, [(P, OB, 0, 1)])]
    for box, expected in ((OB, 100.0), (OB2, 0.0), (Z, 0.0), ([20.0, 20.0, 29.0, 39.0], 100.0),
                          ([20.0, 20.0, 29.0, 40.0], 0.0)):
        r = run([pred(0, [(P, box, 0, 1, 0.9)])], targets, role_verbs=[0])
        assert r["mAP_role_s1"] == expected and r["mAP_role_s2"] == expected


def test_best_person_who_does_not_do_the_action_gives_false_positive():
    # persons A = P (does verb 0) and B = [0,0,9,10] (does verb 4 only). Prediction box = B exactly:
    # IoU(A) = 100/110 >= .5, but B is the best person and B does not do verb 0 -> FP.
    b = [0.0, 0.0, 9.0, 10.0]
    targets = [gt(0, [(P, OB, 0, 1), (b, Z, 4, NO_OBJ)])]
    assert run([pred(0, [(b, OB, 0, 1, 0.9)])], targets, role_verbs=[0])["mAP_role_s2"] == pytest.approx(0.0, abs=1e-9)
    r = run([pred(0, [(P, OB, 0, 1, 0.9)])], targets, role_verbs=[0])
    assert r["mAP_role_s2"] == pytest.approx(100.0, abs=1e-9)


def test_all_point_ap_and_duplicates():
    # two persons with verb 0; dets TP .9, duplicate FP .8, TP .7: rec .5 .5 1, prec 1 .5 2/3
    # all-point AP = .5 * 1 + .5 * 2/3 = 5/6 (the 11-point value would be 28/33)
    targets = [gt(0, [(P, OB, 0, 1), (P2, OB2, 0, 1)])]
    preds = [pred(0, [(P, OB, 0, 1, 0.9), (P, OB, 0, 1, 0.8), (P2, OB2, 0, 1, 0.7)])]
    r = run(preds, targets, role_verbs=[0])
    assert r["mAP_role_s1"] == pytest.approx(100 * 5 / 6, abs=1e-5)


def test_npos_counts_persons_and_classes_without_gt_are_nan():
    # verb 0: two persons, one detected -> rec .5 prec 1 -> AP .5; verb 1 has no GT -> NaN, not averaged
    targets = [gt(0, [(P, OB, 0, 1), (P2, OB2, 0, 1)])]
    preds = [pred(0, [(P, OB, 0, 1, 0.9), (P, OB, 1, 1, 0.8)])]
    r = run(preds, targets, role_verbs=[0, 1])
    assert r["mAP_role_s1"] == pytest.approx(50.0, abs=1e-9) and np.isnan(r["ap_role_s1"][1])


def test_repeated_image_counts_once():
    targets = [gt(0, [(P, OB, 0, 1)]), gt(1, [(P, OB, 0, 1)])]
    preds = [pred(0, [(P, OB, 0, 1, 0.9)]), pred(1, [(P2, OB, 0, 1, 0.95)])]
    m = VCOCORoleAP(5, no_object_index=NO_OBJ, role_verbs=[0])
    m.update(preds, targets)
    m.update(preds[1:], targets[1:])
    # [FP .95, TP .9] over npos 2: rec 0 .5, prec 0 .5 -> all-point AP = .5 * .5 = .25
    assert float(m.compute()["mAP_role_s1"]) == pytest.approx(25.0, abs=1e-5)


# ---------------------------------------------------------------------------------------------- simple loop
def _overlap(boxes, ref):
    """vsrl_eval.get_overlap."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ixmin = np.maximum(boxes[:, 0], ref[0])
    iymin = np.maximum(boxes[:, 1], ref[1])
    ixmax = np.minimum(boxes[:, 2], ref[2])
    iymax = np.minimum(boxes[:, 3], ref[3])
    iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
    ih = np.maximum(iymax - iymin + 1.0, 0.0)
    inters = iw * ih
    uni = (ref[2] - ref[0] + 1.0) * (ref[3] - ref[1] + 1.0) + (boxes[:, 2] - boxes[:, 0] + 1.0) * (
        boxes[:, 3] - boxes[:, 1] + 1.0
    ) - inters
    return inters / uni


def _voc_ap(rec, prec):
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def simple_vsrl(preds, targets, num_verbs, role_verbs, scenario):
    """vsrl_eval._do_role_eval, one detection at a time, on HOIA-format inputs."""
    tp = {v: [] for v in role_verbs}
    sc = {v: [] for v in role_verbs}
    npos = np.zeros(num_verbs)
    gts = {t.image_id: t for t in targets}
    for p in sorted(preds, key=lambda p: p.image_id):
        t = gts[p.image_id]
        persons, actions = [], []  # distinct person boxes; per person {verb: role box or None}
        for j in range(len(t)):
            box = t.sub_boxes[j].tolist()
            if box not in persons:
                persons.append(box)
                actions.append({})
            k = persons.index(box)
            v = int(t.verb_labels[j])
            role = None if int(t.obj_labels[j]) == NO_OBJ else t.obj_boxes[j].tolist()
            actions[k].setdefault(v, role)
        for a in actions:
            for v in a:
                npos[v] += 1
        for v in role_verbs:
            covered = set()
            idx = [k for k in range(len(p)) if int(p.verb_labels[k]) == v]
            idx = sorted(idx, key=lambda k: -float(p.scores[k]))
            for k in idx:
                sc[v].append(np.float32(p.scores[k]))
                if not persons:
                    tp[v].append(0)
                    continue
                ov = _overlap(persons, p.sub_boxes[k].numpy().astype(np.float64))
                jmax, ovmax = int(ov.argmax()), ov.max()
                role_box = p.obj_boxes[k].numpy().astype(np.float64)
                if int(p.obj_labels[k]) == NO_OBJ:
                    role_box = np.zeros(4)
                gt_role = actions[jmax].get(v)
                if gt_role is None:
                    if scenario == 1:
                        empty = np.all(role_box == 0.0) or np.all(np.isnan(role_box))
                        ov_role = 1.0 if empty else 0.0
                    else:
                        ov_role = 1.0
                else:
                    ov_role = _overlap(np.array(gt_role), role_box)[0]
                if v in actions[jmax] and ovmax >= 0.5 and ov_role >= 0.5 and jmax not in covered:
                    covered.add(jmax)
                    tp[v].append(1)
                else:
                    tp[v].append(0)
    ap = np.full(num_verbs, np.nan)
    for v in role_verbs:
        if npos[v] == 0:
            continue
        a_tp = np.array(tp[v], dtype=np.float32)
        a_fp = 1 - a_tp
        a_sc = np.array(sc[v], dtype=np.float32)
        order = a_sc.argsort()[::-1]
        a_tp = np.cumsum(a_tp[order])
        a_fp = np.cumsum(a_fp[order])
        rec = a_tp / float(npos[v])
        prec = a_tp / np.maximum(a_tp + a_fp, np.finfo(np.float64).eps)
        ap[v] = _voc_ap(rec, prec)
    return ap


def random_vcoco_case(seed, num_images=10, num_verbs=5):
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for i in range(num_images):
        rows = []
        for _ in range(int(rng.integers(0, 4))):
            xy = rng.integers(0, 60, size=2)
            wh = rng.integers(4, 30, size=2)
            person = [float(xy[0]), float(xy[1]), float(xy[0] + wh[0]), float(xy[1] + wh[1])]
            for v in rng.choice(num_verbs, size=int(rng.integers(1, 3)), replace=False):
                if rng.random() < 0.3:
                    rows.append((person, Z, int(v), NO_OBJ))
                else:
                    o = rng.integers(0, 80, size=2)
                    rows.append((person, [float(o[0]), float(o[1]), float(o[0] + 12), float(o[1] + 9)], int(v),
                                 int(rng.integers(0, 3))))
        dets = []
        for _ in range(int(rng.integers(0, 10))):
            if rows and rng.random() < 0.75:
                pb, ob, v, lab = rows[int(rng.integers(0, len(rows)))]
                pb = (np.array(pb) + rng.normal(0, 2.5, size=4)).tolist()
                ob = ob if lab == NO_OBJ and rng.random() < 0.5 else (np.array(ob) + rng.normal(0, 2.5, 4)).tolist()
                if rng.random() < 0.2:
                    v = int(rng.integers(0, num_verbs))
                if rng.random() < 0.2:
                    lab = NO_OBJ if lab != NO_OBJ else 1
            else:
                b = rng.uniform(0, 70, size=8)
                b[2:4] += b[0:2]
                b[6:8] += b[4:6]
                pb, ob, v, lab = b[:4].tolist(), b[4:].tolist(), int(rng.integers(0, num_verbs)), 1
            dets.append((pb, ob, v, lab, float(rng.random())))
        preds.append(pred(i, dets))
        targets.append(gt(i, rows))
    return preds, targets


@pytest.mark.parametrize("seed", range(10))
def test_agrees_with_vsrl_style_loop(seed):
    preds, targets = random_vcoco_case(seed)
    role_verbs = [0, 1, 2, 4]
    r = run(preds, targets, role_verbs=role_verbs)
    for s in (1, 2):
        expected = simple_vsrl(preds, targets, 5, role_verbs, s)
        np.testing.assert_allclose(r[f"ap_role_s{s}"], 100 * expected, rtol=0, atol=1e-9)
        assert r[f"mAP_role_s{s}"] == pytest.approx(100 * np.nanmean(expected), abs=1e-9)


# ---------------------------------------------------------------------------------------------- official GT
def official(image_id, persons, actions, coco_id=None):
    """persons: (box, outside V-COCO); actions: (person index, verb, role box or None)."""
    return VCOCOGroundTruth(
        image_id, image_id if coco_id is None else coco_id,
        torch.tensor([p[0] for p in persons], dtype=torch.float32).reshape(-1, 4),
        torch.tensor([p[1] for p in persons], dtype=torch.bool),
        torch.tensor([a[0] for a in actions], dtype=torch.long),
        torch.tensor([a[1] for a in actions], dtype=torch.long),
        torch.tensor([a[2] if a[2] is not None else [-1.0] * 4 for a in actions], dtype=torch.float32).reshape(-1, 4),
    )


def run_official(preds, targets, role_verbs=(0,)):
    return run(preds, targets, role_verbs=list(role_verbs))


def test_official_detection_on_a_person_outside_vcoco_is_dropped():
    # .9 lands on P2, a person outside V-COCO: neither TP nor FP; .8 is a TP -> AP 1 (2 ranked dets would give .5)
    dets = [pred(0, [(P2, OB, 0, 1, 0.9), (P, OB, 0, 1, 0.8)])]
    r = run_official(dets, [official(0, [(P, False), (P2, True)], [(0, 0, OB)])])
    assert (r["mAP_role_s1"], r["mAP_role_s2"]) == (100.0, 100.0)
    # the same person inside V-COCO without any action: the .9 is a false positive ranked first -> AP 1/2
    r = run_official(dets, [official(0, [(P, False), (P2, False)], [(0, 0, OB)])])
    assert (r["mAP_role_s1"], r["mAP_role_s2"]) == (50.0, 50.0)


def test_official_detection_overlapping_nobody_takes_the_first_person():
    far = [500.0, 500.0, 509.0, 509.0]
    dets = [pred(0, [(far, OB, 0, 1, 0.9), (P, OB, 0, 1, 0.8)])]
    # argmax of all-zero overlaps is person 0; outside V-COCO -> dropped -> AP 1
    r = run_official(dets, [official(0, [(P2, True), (P, False)], [(1, 0, OB)])])
    assert r["mAP_role_s1"] == 100.0
    # persons in the other order: person 0 does verb 0 but IoU 0 < .5 -> FP first -> AP 1/2
    r = run_official(dets, [official(0, [(P, False), (P2, True)], [(0, 0, OB)])])
    assert r["mAP_role_s1"] == 50.0


def test_official_objectless_role_in_both_scenarios():
    gts = [official(0, [(P, False)], [(0, 2, None)])]
    r = run_official([pred(0, [(P, OB, 2, 1, 0.9)])], gts, role_verbs=[2])
    assert (r["mAP_role_s1"], r["mAP_role_s2"]) == (0.0, 100.0)
    r = run_official([pred(0, [(P, Z, 2, 1, 0.9)])], gts, role_verbs=[2])
    assert (r["mAP_role_s1"], r["mAP_role_s2"]) == (100.0, 100.0)


def test_official_iou_uses_the_given_boxes_with_the_plus_one_rule():
    # GT person [0, 0, 9, 9] (10 x 10 pixels with +1). Detection [0, 0, 9, 19]: 100 / 200 = .5 -> TP;
    # [0, 0, 9, 20]: 100 / 210 < .5 -> FP
    gts = [official(0, [(P, False)], [(0, 0, OB)])]
    assert run_official([pred(0, [([0.0, 0.0, 9.0, 19.0], OB, 0, 1, 0.9)])], gts)["mAP_role_s1"] == 100.0
    assert run_official([pred(0, [([0.0, 0.0, 9.0, 20.0], OB, 0, 1, 0.9)])], gts)["mAP_role_s1"] == 0.0


def test_official_npos_counts_vcoco_persons_only():
    # two V-COCO persons do verb 0 (npos 2), one outside V-COCO: one TP -> rec .5, prec 1 -> AP .5
    gts = [official(0, [(P, False), (P2, False), (OB2, True)], [(0, 0, OB), (1, 0, OB2)])]
    r = run_official([pred(0, [(P, OB, 0, 1, 0.9)])], gts)
    assert r["mAP_role_s1"] == 50.0


def test_official_tied_scores_follow_argsort_reversed():
    # two identical detections (right person, right role, same score) a, b: whichever is processed first is
    # the TP, the other a duplicate FP. vsrl_eval processes an image's detections in np.argsort(s)[::-1]
    # order and ranks the processed list by that rule again. With t = that order on two ties:
    # t = (1, 0): processed [b TP, a FP], ranked [a FP, b TP] -> AP 1/2; t = (0, 1): TP first -> AP 1.
    first_of_tie = int(np.argsort(np.float32([0.5, 0.5]))[::-1][0])
    dets = [pred(0, [(P, OB, 0, 1, 0.5), (P, OB, 0, 1, 0.5)])]
    r = run_official(dets, [official(0, [(P, False)], [(0, 0, OB)])])
    assert r["mAP_role_s1"] == (50.0 if first_of_tie == 1 else 100.0)
    # the same two detections in two images laid out by COCO id (11 then 12; dataset ids reversed):
    # image 12 has the TP, image 11 the FP; ranked by the tie order over the layout [11, 12]
    gts = [official(0, [(P, False)], [(0, 0, OB)], coco_id=12), official(1, [(P, False)], [], coco_id=11)]
    dets = [pred(0, [(P, OB, 0, 1, 0.5)]), pred(1, [(P, OB, 0, 1, 0.5)])]
    r = run_official(dets, gts)
    tp_first = first_of_tie == 1  # layout [image 11 (FP), image 12 (TP)]
    assert r["mAP_role_s1"] == (100.0 if tp_first else 50.0)


def test_vsrl_tie_order_replays_numpy_argsort_per_group():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(4), [3, 40, 17, 1])
    scores = rng.choice(np.float32([0.2, 0.5, 0.7]), groups.size)
    position = np.concatenate([rng.permutation(n) for n in (3, 40, 17, 1)])
    order = F.vsrl_tie_order(groups, scores, position)
    for g in range(4):
        idx = np.flatnonzero(groups == g)
        listed = idx[np.argsort(position[idx])]
        assert order[groups[order] == g].tolist() == listed[np.argsort(scores[listed])[::-1]].tolist()


def test_official_and_hoia_targets_do_not_mix():
    m = VCOCORoleAP(5, no_object_index=NO_OBJ)
    with pytest.raises(ValueError, match="give it for every image or for none"):
        m.update([pred(0, []), pred(1, [])], [official(0, [(P, False)], []), gt(1, [])])
    hoia = gt(0, [(P, OB, 0, 1)])
    hoia.vcoco = official(0, [(P, False), (P2, True)], [(0, 0, OB)])
    dets = [pred(0, [(P2, OB, 0, 1, 0.9), (P, OB, 0, 1, 0.8)])]
    # HOIGroundTruth.vcoco is used when set: the .9 on the person outside V-COCO is dropped
    assert run_official(dets, [hoia])["mAP_role_s1"] == 100.0
