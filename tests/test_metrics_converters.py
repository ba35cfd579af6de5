"""Converters and readers for other HOI code bases (metrics/converters.py, metrics/dumps.py) and `hoiclip evaluate`.

Every fixture is written here in the format of its code base: QPIC-family post-processor outputs and
evaluator dumps (GEN-VLKT / HOICLIP `results.json`: `json.dumps(str(dict))` with NumPy scalars), UPT-family
outputs, PPDM `test_hico.json`, fredzzhang `instances_test2015.json`, `hoiclip predict` JSON lines.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from hoiclip_lightning.errors import AnnotationError
from hoiclip_lightning.metrics import (
    HICODetMAP,
    evaluate_files,
    ground_truth_from_instances,
    ground_truth_from_ppdm,
    load_safe_pickle,
    predictions_from_hoi_dump,
    predictions_from_qpic,
    predictions_from_upt,
)
from hoiclip_lightning.metrics.dumps import parse_python_literal
from hoiclip_lightning.structures import HOIGroundTruth, HOIPrediction
from hoiclip_lightning.vocabulary import HOIVocabulary

ROOT = Path(__file__).resolve().parents[1]
VOCAB = HOIVocabulary.builtin("hico_det")
BOARD, HOLD, EAT = VOCAB.verbs.index("board"), VOCAB.verbs.index("hold"), VOCAB.verbs.index("eat")
AIRPLANE, CUP, PERSON = VOCAB.objects.index("airplane"), VOCAB.objects.index("cup"), 0
BOARD_AIRPLANE = VOCAB.hoi_index(BOARD, AIRPLANE)  # 0
HOLD_CUP = VOCAB.hoi_index(HOLD, CUP)
AIRPLANE_CLASSES = [c for c, (_, o) in enumerate(VOCAB.hois) if o == AIRPLANE]

S0, S1 = [10.0, 10.0, 50.0, 90.0], [200.0, 20.0, 240.0, 100.0]  # subject boxes of queries 0, 1
O0, O1 = [60.0, 30.0, 150.0, 80.0], [230.0, 50.0, 260.0, 70.0]  # object boxes


def qpic_output(hoi_scores, obj_scores):
    return {"labels": torch.tensor([PERSON, PERSON, AIRPLANE, CUP]), "boxes": torch.tensor([S0, S1, O0, O1]),
            "hoi_scores": hoi_scores, "obj_scores": obj_scores,
            "sub_ids": torch.tensor([0, 1]), "obj_ids": torch.tensor([2, 3])}


# ---------------------------------------------------------------------- QPIC family
def test_qpic_hoi_plus_object_squared_hand_case():
    """GEN-VLKT/HOICLIP rule: score = hoi + obj(object of the class)^2, top-k over the flat (query, class) grid."""
    hoi = torch.zeros(2, VOCAB.num_hois)
    hoi[0, BOARD_AIRPLANE] = 0.5
    hoi[1, HOLD_CUP] = 0.9
    obj = torch.zeros(2, VOCAB.num_objects + 1)
    obj[0, AIRPLANE] = 0.6
    obj[1, CUP] = 0.5
    p = predictions_from_qpic(qpic_output(hoi, obj), 7, VOCAB, topk=3)
    assert p.image_id == 7
    assert p.hoi_labels.tolist() == [HOLD_CUP, BOARD_AIRPLANE, AIRPLANE_CLASSES[1]]  # 1.15, 0.86, 0.36 (first tie)
    assert p.scores.tolist() == pytest.approx([0.9 + 0.25, 0.5 + 0.36, 0.36])
    assert p.sub_boxes.tolist() == [S1, S0, S0] and p.obj_boxes.tolist() == [O1, O0, O0]
    assert p.verb_labels[0] == HOLD and p.obj_labels.tolist() == [CUP, AIRPLANE, AIRPLANE]
    # the "hoi" rule takes hoi_scores as they are
    p = predictions_from_qpic(qpic_output(hoi, obj), 7, VOCAB, score_rule="hoi", topk=2)
    assert p.scores.tolist() == pytest.approx([0.9, 0.5])


def test_qpic_verb_rule_masks_pairs_that_are_not_classes_and_counts_them():
    """QPIC/CDN rule: verb_scores x the object of the query; (eat, airplane) is no HOI class: score 0, dropped."""
    verbs = torch.zeros(2, VOCAB.num_verbs)
    verbs[0, EAT] = 0.95  # not a class with an airplane
    verbs[0, BOARD] = 0.8
    verbs[1, HOLD] = 0.3
    out = qpic_output(None, None)
    del out["hoi_scores"], out["obj_scores"]
    out["verb_scores"] = verbs
    p = predictions_from_qpic(out, 0, VOCAB, topk=2)
    assert p.hoi_labels.tolist() == [BOARD_AIRPLANE, HOLD_CUP]
    assert p.scores.tolist() == pytest.approx([0.8, 0.3])
    skipped = Counter()
    p = predictions_from_qpic(out, 0, VOCAB, topk=None, skipped=skipped)
    valid = len(AIRPLANE_CLASSES) + sum(1 for _, o in VOCAB.hois if o == CUP)
    assert len(p) == valid and skipped["not_an_hoi_class"] == 2 * VOCAB.num_verbs - valid


def test_qpic_triplet_nms_suppresses_the_lower_duplicate_of_a_class():
    hoi = torch.zeros(2, VOCAB.num_hois)
    hoi[:, BOARD_AIRPLANE] = torch.tensor([0.7, 0.6])
    out = qpic_output(hoi, torch.zeros(2, VOCAB.num_objects + 1))
    out["boxes"] = torch.tensor([S0, S0, O0, O0])  # both queries: the same pair
    kept = predictions_from_qpic(out, 0, VOCAB, topk=2)
    assert kept.scores.tolist() == pytest.approx([0.7, 0.6])
    skipped = Counter()
    nms = predictions_from_qpic(out, 0, VOCAB, topk=2, nms=(0.7, 1.0, 0.5), skipped=skipped)
    assert nms.scores.tolist() == pytest.approx([0.7]) and skipped["triplet_nms"] == 1


def test_qpic_refuses_unreadable_fields():
    out = qpic_output(torch.zeros(2, VOCAB.num_hois), torch.zeros(2, 81))
    with pytest.raises(AnnotationError, match=r"img 3: field 'sub_ids' is missing"):
        predictions_from_qpic({k: v for k, v in out.items() if k != "sub_ids"}, 0, VOCAB, source="img 3")
    with pytest.raises(AnnotationError, match=r"field 'hoi_scores' has shape \[2, 117\], expected \[2, 600\]"):
        predictions_from_qpic({**out, "hoi_scores": torch.zeros(2, 117)}, 0, VOCAB)
    with pytest.raises(AnnotationError, match=r"field 'obj_ids' holds values outside 0..3"):
        predictions_from_qpic({**out, "obj_ids": torch.tensor([2, 4])}, 0, VOCAB)
    with pytest.raises(AnnotationError, match="neither 'hoi_scores' nor 'verb_scores'"):
        predictions_from_qpic({k: v for k, v in out.items() if k != "hoi_scores"}, 0, VOCAB)
    with pytest.raises(AnnotationError, match="field 'boxes' holds NaN"):
        predictions_from_qpic({**out, "boxes": torch.full((4, 4), float("nan"))}, 0, VOCAB)


def test_hoi_dump_record():
    rec = {"filename": "a.jpg", "predictions": [{"bbox": S0}, {"bbox": O0}, {"bbox": O1}],
           "hoi_prediction": [{"subject_id": 0, "object_id": 2, "category_id": HOLD_CUP, "score": 0.2},
                              {"subject_id": 0, "object_id": 1, "category_id": BOARD_AIRPLANE, "score": 0.9}]}
    p = predictions_from_hoi_dump(rec, 3, VOCAB)
    assert p.hoi_labels.tolist() == [BOARD_AIRPLANE, HOLD_CUP] and p.obj_boxes.tolist() == [O0, O1]
    rec["hoi_prediction"][0]["object_id"] = 5
    with pytest.raises(AnnotationError, match=r"hoi_prediction\[\*\].object_id' holds values outside 0..2"):
        predictions_from_hoi_dump(rec, 3, VOCAB)


# ---------------------------------------------------------------------- UPT family
def test_upt_output_rescaled_offset_and_mapped_from_alphabetical_objects():
    alphabetical = sorted(VOCAB.objects, key=lambda n: n.replace(" ", "_"))
    out = {"boxes": torch.tensor([[5.0, 5.0, 25.0, 45.0], [30.0, 15.0, 75.0, 40.0]]),
           "pairing": torch.tensor([[0, 0], [1, 1]]), "scores": torch.tensor([0.4, 0.9]),
           "labels": torch.tensor([BOARD, EAT]), "objects": torch.tensor([alphabetical.index("airplane")] * 2),
           "size": torch.tensor([100, 200])}  # network input (h, w); the original image is 200 x 400
    skipped = Counter()
    p = predictions_from_upt(out, 4, VOCAB, image_size=(200, 400), skipped=skipped)
    assert p.hoi_labels.tolist() == [BOARD_AIRPLANE] and skipped["not_an_hoi_class"] == 1  # eat airplane
    assert p.sub_boxes.tolist() == [[9.0, 9.0, 49.0, 89.0]]  # x2 scale, then -1 (1-based instances frame)
    assert p.obj_boxes.tolist() == [[59.0, 29.0, 149.0, 79.0]]
    with pytest.raises(AnnotationError, match="'size' is present but the original image size is unknown"):
        predictions_from_upt(out, 4, VOCAB)
    with pytest.raises(AnnotationError, match=r"field 'pairing' has shape \[1, 2\]"):
        predictions_from_upt({**out, "pairing": torch.tensor([[0, 1]])}, 4, VOCAB, image_size=(200, 400))


# ---------------------------------------------------------------------- ground truth
def ppdm_records():
    """Two images in the PPDM test_hico.json layout (COCO category ids, 1-based verb ids)."""
    return [
        {"file_name": "HICO_test2015_00000001.jpg",
         "annotations": [{"bbox": S0, "category_id": 1}, {"bbox": O0, "category_id": 5},
                         {"bbox": O1, "category_id": 47}],  # person, airplane, cup
         "hoi_annotation": [{"subject_id": 0, "object_id": 1, "category_id": BOARD + 1,
                             "hoi_category_id": BOARD_AIRPLANE + 1},
                            {"subject_id": 0, "object_id": 2, "category_id": HOLD + 1}]},
        {"file_name": "HICO_test2015_00000002.jpg", "annotations": [], "hoi_annotation": []},
    ]


def test_ground_truth_from_ppdm_hand_case_and_errors():
    gts = ground_truth_from_ppdm(ppdm_records(), VOCAB)
    assert [g.image_id for g in gts] == [0, 1] and len(gts[1]) == 0
    assert gts[0].hoi_labels.tolist() == [BOARD_AIRPLANE, HOLD_CUP]
    assert gts[0].obj_labels.tolist() == [AIRPLANE, CUP] and gts[0].verb_labels.tolist() == [BOARD, HOLD]
    assert gts[0].sub_boxes.tolist() == [S0, S0] and gts[0].obj_boxes.tolist() == [O0, O1]
    bad = ppdm_records()
    del bad[1]["hoi_annotation"]
    with pytest.raises(AnnotationError, match=r"test_hico.json: record 1 \(file_name 'HICO_test2015_00000002.jpg'\): "
                                              r"field 'hoi_annotation' is missing"):
        ground_truth_from_ppdm(bad, VOCAB, source="test_hico.json")
    bad = ppdm_records()
    bad[0]["hoi_annotation"][1]["object_id"] = 3
    with pytest.raises(AnnotationError, match=r"hoi_annotation\[1\].object_id = 3, but the image has 3 annotations"):
        ground_truth_from_ppdm(bad, VOCAB)
    bad = ppdm_records()
    bad[0]["hoi_annotation"][0]["hoi_category_id"] = 2
    with pytest.raises(AnnotationError, match=r"hoi_category_id = 2, .* is HOI class 1 \(1-based\)"):
        ground_truth_from_ppdm(bad, VOCAB)


def test_ground_truth_from_vcoco_hoia_role_without_object():
    vocab = HOIVocabulary.builtin("vcoco")
    stand = vocab.verbs.index("stand")
    rec = [{"file_name": "a.jpg", "annotations": [{"bbox": S0, "category_id": 1}],
            "hoi_annotation": [{"subject_id": 0, "object_id": -1, "category_id": vocab.verb_ids[stand]}]}]
    (g,) = ground_truth_from_ppdm(rec, vocab, dataset_format="vcoco")
    assert g.obj_labels.tolist() == [vocab.no_object_index] and g.obj_boxes.tolist() == [[0.0] * 4]
    assert g.hoi_labels.tolist() == [vocab.hoi_index(stand, vocab.no_object_index)]


def instances_data():
    """fredzzhang/hicodet layout: alphabetical objects, 1-based boxes, hoi/object/verb indices of the file."""
    objects = sorted(o.replace(" ", "_") for o in VOCAB.objects)
    return {"filenames": ["HICO_test2015_00000001.jpg", "HICO_test2015_00000002.jpg"], "size": [[400, 300], [640, 480]],
            "empty": [1], "objects": objects, "verbs": list(VOCAB.verbs),
            "annotation": [{"boxes_h": [[11.0, 11.0, 51.0, 91.0]], "boxes_o": [[61.0, 31.0, 151.0, 81.0]],
                            "hoi": [BOARD_AIRPLANE], "object": [objects.index("airplane")], "verb": [BOARD]},
                           {"boxes_h": [], "boxes_o": [], "hoi": [], "object": [], "verb": []}]}


def test_ground_truth_from_instances_shifts_to_zero_based_and_maps_objects_by_name():
    gts = ground_truth_from_instances(instances_data(), VOCAB)
    assert gts[0].sub_boxes.tolist() == [S0] and gts[0].obj_boxes.tolist() == [O0]
    assert gts[0].obj_labels.tolist() == [AIRPLANE] and gts[0].hoi_labels.tolist() == [BOARD_AIRPLANE]
    assert gts[0].size == (300, 400) and len(gts[1]) == 0
    bad = instances_data()
    bad["annotation"][0]["hoi"] = [5]
    with pytest.raises(AnnotationError, match=r"image 0 \('HICO_test2015_00000001.jpg'\): pair 0: hoi = 5"):
        ground_truth_from_instances(bad, VOCAB)
    bad = instances_data()
    del bad["size"]
    with pytest.raises(AnnotationError, match="field 'size' is missing"):
        ground_truth_from_instances(bad, VOCAB)


# ---------------------------------------------------------------------- readers
def reference_results_json(preds, gts=()):
    """What GEN-VLKT / HOICLIP write: json.dumps(str({'preds': ..., 'gts': ...})) of NumPy values."""
    return json.dumps(str({"preds": preds, "gts": list(gts)}))


def test_results_json_with_numpy_scalars_is_parsed_as_data():
    preds = [{"filename": "x'y.jpg", "predictions": [{"bbox": list(np.array(S0, np.float32))}],
              "hoi_prediction": [{"subject_id": np.int64(0), "object_id": np.int64(0),
                                  "category_id": np.int64(3), "score": np.float32(0.125)}]}]
    text = json.loads(reference_results_json(preds))
    assert parse_python_literal(text)["preds"][0]["hoi_prediction"][0]["score"] == 0.125  # quote: the ast walk
    with pytest.raises(ValueError, match="not a literal"):
        parse_python_literal("{'a': __import__('os').system('true')}")


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def test_safe_pickle_reads_tensors_and_arrays_and_refuses_code(tmp_path):
    data = [{"boxes": torch.rand(2, 4), "sub_ids": np.arange(1), "s": np.float32(0.5)}]
    (tmp_path / "a.pkl").write_bytes(pickle.dumps(data))
    torch.save(data, tmp_path / "a.pt")
    for name in ("a.pkl", "a.pt"):
        back = load_safe_pickle(tmp_path / name)
        assert torch.equal(back[0]["boxes"], data[0]["boxes"]) and back[0]["sub_ids"].tolist() == [0]
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps([_Evil()]))
    with pytest.raises(AnnotationError, match=r"evil.pkl: cannot read the pickle safely \(refusing to load posix"):
        load_safe_pickle(tmp_path / "evil.pkl")


# ---------------------------------------------------------------------- end to end: exactly HICODetMAP
def random_case(seed=0, images=30):
    """Triplets and GT of a few classes, many near-duplicates, so that ranking and claiming matter."""
    rng = np.random.default_rng(seed)
    classes = [BOARD_AIRPLANE, HOLD_CUP, *AIRPLANE_CLASSES[1:4], *VOCAB.rare_hois[:2]]
    gt_rows, det_rows = [], []
    for _ in range(images):
        n_gt = int(rng.integers(0, 4))
        g = []
        for _ in range(n_gt):
            h = rng.uniform(0, 300, 2).round()
            o = rng.uniform(0, 300, 2).round()
            g.append((np.r_[h, h + rng.uniform(20, 120, 2).round()], np.r_[o, o + rng.uniform(20, 120, 2).round()],
                      int(rng.choice(classes))))
        d = []
        for _ in range(int(rng.integers(0, 12))):
            if g and rng.random() < 0.7:
                h, o, c = g[int(rng.integers(len(g)))]
                c = c if rng.random() < 0.8 else int(rng.choice(classes))
                h, o = h + rng.normal(0, 6, 4), o + rng.normal(0, 6, 4)
            else:
                h = np.r_[rng.uniform(0, 300, 2), 0, 0]
                h[2:] = h[:2] + 50
                o, c = h + 30, int(rng.choice(classes))
            d.append((h.astype(np.float32), o.astype(np.float32), c, np.float32(rng.choice([0.3, 0.5, rng.random()]))))
        gt_rows.append(g)
        det_rows.append(d)
    return gt_rows, det_rows


def direct_metric(gt_rows, det_rows, protocol):
    metric = HICODetMAP(VOCAB, protocol=protocol)
    preds, gts = [], []
    for i, (g, d) in enumerate(zip(gt_rows, det_rows, strict=True)):
        d = sorted(d, key=lambda r: -float(r[3]))  # as a dump lists them (stable)
        preds.append(HOIPrediction(i, torch.tensor(np.array([r[0] for r in d]).reshape(-1, 4)),
                                   torch.tensor(np.array([r[1] for r in d]).reshape(-1, 4)),
                                   torch.tensor([VOCAB.hois[r[2]][1] for r in d], dtype=torch.long),
                                   torch.tensor([VOCAB.hois[r[2]][0] for r in d], dtype=torch.long),
                                   torch.tensor([r[2] for r in d], dtype=torch.long),
                                   torch.tensor([r[3] for r in d], dtype=torch.float32)))
        gts.append(HOIGroundTruth(i, torch.tensor(np.array([r[0] for r in g]).reshape(-1, 4), dtype=torch.float32),
                                  torch.tensor(np.array([r[1] for r in g]).reshape(-1, 4), dtype=torch.float32),
                                  torch.tensor([VOCAB.hois[r[2]][1] for r in g], dtype=torch.long),
                                  torch.tensor([VOCAB.hois[r[2]][0] for r in g], dtype=torch.long),
                                  torch.tensor([r[2] for r in g], dtype=torch.long)))
    metric.update(preds, gts)
    return metric.compute()


def write_fixture(tmp_path, gt_rows, det_rows):
    """test_hico.json (PPDM) and results.json (the reference evaluators' dump of exactly these triplets)."""
    cat_of = {i: c for i, c in enumerate(VOCAB.object_category_ids)}
    records, dump = [], []
    for i, (g, d) in enumerate(zip(gt_rows, det_rows, strict=True)):
        name = f"HICO_test2015_{i + 1:08d}.jpg"
        anns, hois = [], []
        for h, o, c in g:
            verb, obj = VOCAB.hois[c]
            anns += [{"bbox": h.tolist(), "category_id": 1}, {"bbox": o.tolist(), "category_id": cat_of[obj]}]
            hois.append({"subject_id": len(anns) - 2, "object_id": len(anns) - 1, "category_id": VOCAB.verb_ids[verb],
                         "hoi_category_id": c + 1})
        records.append({"file_name": name, "annotations": anns, "hoi_annotation": hois})
        # evaluator dump: one box per query side, then the HOI list (NumPy values, as the evaluators hold them)
        boxes = [{"bbox": list(r[0])} for r in d] + [{"bbox": list(r[1])} for r in d]
        dump.append({"filename": name, "predictions": boxes,
                     "hoi_prediction": [{"subject_id": np.int64(k), "object_id": np.int64(len(d) + k),
                                         "category_id": np.int64(r[2]), "score": r[3]} for k, r in enumerate(d)]})
    (tmp_path / "test_hico.json").write_text(json.dumps(records))
    (tmp_path / "results.json").write_text(reference_results_json(dump))


def raw_outputs(gt_rows, seed=0, queries=4):
    """GEN-VLKT / HOICLIP post-processor outputs near the GT pairs (sigmoid-like scores in [0, 1])."""
    rng = np.random.default_rng(seed)
    outputs = []
    for g in gt_rows:
        sub, obj = [], []
        hoi = rng.uniform(0, 0.2, (queries, VOCAB.num_hois)).astype(np.float32)
        objs = rng.uniform(0, 0.3, (queries, VOCAB.num_objects + 1)).astype(np.float32)
        for k in range(queries):
            if g and rng.random() < 0.8:
                h, o, c = g[int(rng.integers(len(g)))]
                sub.append(h + rng.normal(0, 5, 4))
                obj.append(o + rng.normal(0, 5, 4))
                hoi[k, c] = rng.uniform(0.4, 1.0)
                objs[k, VOCAB.hois[c][1]] = rng.uniform(0.5, 1.0)
            else:
                sub.append(np.r_[10.0, 10, 60, 90] + rng.uniform(0, 200))
                obj.append(np.r_[70.0, 20, 150, 80] + rng.uniform(0, 200))
        outputs.append({"labels": np.r_[np.zeros(queries, np.int64), objs[:, :-1].argmax(1)],
                        "boxes": np.array(sub + obj, np.float32), "hoi_scores": hoi, "obj_scores": objs,
                        "sub_ids": np.arange(queries), "obj_ids": np.arange(queries, 2 * queries)})
    return outputs


def triplets_by_the_rule(outputs, topk=100):
    """The GEN-VLKT / HOICLIP selection, written out in NumPy: hoi + obj^2, flat top-k (stable)."""
    rows = []
    h2o = np.array([o for _, o in VOCAB.hois])
    for out in outputs:
        s = out["hoi_scores"] + out["obj_scores"][:, h2o] ** 2
        flat = np.argsort(-s.ravel(), kind="stable")[:topk]
        q, c = np.divmod(flat, VOCAB.num_hois)
        rows.append([(out["boxes"][out["sub_ids"][i]], out["boxes"][out["obj_ids"][i]], int(k), s[i, k])
                     for i, k in zip(q, c, strict=True)])
    return rows


def assert_same_result(got, expected, name):
    for key, value in expected.items():
        if value.numel() == 1:
            np.testing.assert_array_equal(got.metrics[key], float(value), err_msg=f"{name} {key}")
        else:
            np.testing.assert_array_equal(got.per_class[key], value.numpy(), err_msg=f"{name} {key}")


@pytest.mark.parametrize("protocol", ["official", "reference"])
def test_qpic_family_files_score_exactly_as_hicodetmap_on_the_same_triplets(tmp_path, protocol):
    """The evaluators' results.json dump of some triplets, and a pickle of post-processor outputs, each scored
    by `hoiclip evaluate`'s reader, give exactly what HICODetMAP gives on the same triplets built by hand."""
    gt_rows, det_rows = random_case()
    expected = direct_metric(gt_rows, det_rows, protocol)
    assert 0 < float(expected["mAP_full"]) < 100 and 0 <= float(expected["mAP_rare"]) <= 100
    write_fixture(tmp_path, gt_rows, det_rows)
    got = evaluate_files(tmp_path / "results.json", tmp_path / "test_hico.json", protocol=protocol)
    assert_same_result(got, expected, "results.json")
    assert got.num_triplets == sum(len(d) for d in det_rows) and got.images_without_predictions == 0

    outputs = raw_outputs(gt_rows)
    (tmp_path / "outputs.pkl").write_bytes(pickle.dumps([{k: torch.from_numpy(np.asarray(v)) for k, v in o.items()}
                                                         for o in outputs]))
    expected = direct_metric(gt_rows, triplets_by_the_rule(outputs), protocol)
    assert 0 < float(expected["mAP_full"]) < 100
    got = evaluate_files(tmp_path / "outputs.pkl", tmp_path / "test_hico.json", protocol=protocol)
    assert_same_result(got, expected, "outputs.pkl")
    assert got.num_triplets == 100 * len(gt_rows)


def test_upt_outputs_against_instances_file_hand_case(tmp_path):
    """A UPT output that hits the only GT pair of the file: AP 100 for that class, the only class with GT."""
    data = instances_data()
    (tmp_path / "instances_test2015.json").write_text(json.dumps(data))
    alphabetical = data["objects"]
    outputs = [{"boxes": torch.tensor([[11.0, 11.0, 51.0, 91.0], [61.0, 31.0, 151.0, 81.0]]) / 2,
                "pairing": torch.tensor([[0], [1]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([BOARD]),
                "objects": torch.tensor([alphabetical.index("airplane")]), "size": torch.tensor([150, 200])}]
    torch.save(outputs, tmp_path / "upt.pt")  # one record: the non-empty images, in order
    got = evaluate_files(tmp_path / "upt.pt", tmp_path / "instances_test2015.json")
    assert got.metrics["mAP_full"] == pytest.approx(100.0) and got.metrics["mAP_full_ko"] == pytest.approx(100.0)
    assert np.count_nonzero(~np.isnan(got.per_class["ap_per_class"])) == 1


def test_hoiclip_evaluate_command_prints_the_table_and_writes_json_and_csv(tmp_path, capsys):
    from hoiclip_lightning.cli import main

    gt_rows, det_rows = random_case(seed=1, images=12)
    write_fixture(tmp_path, gt_rows, det_rows)
    expected = direct_metric(gt_rows, det_rows, "official")
    main(["evaluate", "--predictions", str(tmp_path / "results.json"),
          "--annotations", str(tmp_path / "test_hico.json"),
          "--out", str(tmp_path / "eval"), "--zero_shot", "rare_first"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "HOI detection mAP (hico_det, official protocol, zero-shot rare_first)"
    header = [c.strip() for c in lines[1].split("|")[1:-1]]
    assert header[:7] == ["model", "Full", "Rare", "Non-rare", "Full KO", "Rare KO", "Non-rare KO"]
    assert "Unseen" in header and "Seen" in header
    row = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert row[0] == "results.json" and row[1] == f"{float(expected['mAP_full']):.2f}"
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["metrics"]["mAP_full"] == float(expected["mAP_full"]) and report["num_images"] == 12
    csv_rows = (tmp_path / "eval" / "per_class_ap.csv").read_text().splitlines()
    assert csv_rows[0] == "hoi_id,verb,object,prompt,train_instances,rare,unseen,ap,ap_ko"
    assert len(csv_rows) == 1 + VOCAB.num_hois
    board = csv_rows[1 + BOARD_AIRPLANE].split(",")
    want = float(expected["ap_per_class"][BOARD_AIRPLANE])
    assert board[1:3] == ["board", "airplane"] and (board[7] == "" if np.isnan(want) else float(board[7]) == want)


def test_jsonl_of_hoiclip_predict_and_unknown_images(tmp_path):
    records = ppdm_records()
    (tmp_path / "test_hico.json").write_text(json.dumps(records))
    line = {"file": "images/HICO_test2015_00000001.jpg", "width": 400, "height": 300,
            "triplets": [{"human_box": S0, "object_box": O0, "object": {"index": AIRPLANE, "name": "airplane"},
                          "verb": {"index": BOARD, "name": "board"}, "hoi": {"index": BOARD_AIRPLANE, "name": "x"},
                          "score": 0.8}]}
    (tmp_path / "p.jsonl").write_text(json.dumps(line) + "\n")
    got = evaluate_files(tmp_path / "p.jsonl", tmp_path / "test_hico.json")
    # board airplane found (AP 100), hold cup missed (AP 0); image 2 has no record
    assert got.metrics["mAP_full"] == pytest.approx(50.0) and got.images_without_predictions == 1
    line["file"] = "elsewhere.jpg"
    (tmp_path / "q.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(AnnotationError, match=r"q.jsonl: 1 record\(s\) name images absent from test_hico.json"):
        evaluate_files(tmp_path / "q.jsonl", tmp_path / "test_hico.json")


# ---------------------------------------------------------------------- V-COCO end to end
VV = HOIVocabulary.builtin("vcoco")
V_HOLD, V_LOOK, V_STAND, V_RIDE = (VV.verbs.index(n) for n in ("hold_obj", "look_obj", "stand", "ride_instr"))
V_CUP, V_PIZZA, V_NONE = VV.objects.index("cup"), VV.objects.index("pizza"), VV.no_object_index
BOX_A, BOX_C = [10.0, 10.0, 60.0, 110.0], [40.0, 50.0, 70.0, 80.0]  # image 0: person A holds cup C, stands
BOX_B, BOX_D = [100.0, 20.0, 160.0, 140.0], [150.0, 60.0, 190.0, 100.0]  # image 1: B holds (no object), looks at D
BOX_E, BOX_Z = [5.0, 5.0, 55.0, 105.0], [0.0, 0.0, 20.0, 20.0]  # image 2: E holds (no object); Z a predicted box
VCOCO_NAMES = [f"COCO_val2014_{i:012d}.jpg" for i in (10, 20, 30)]


def vcoco_records():
    """test_vcoco.json (HOIA): COCO category ids, 0-based action-role ids, object_id -1 for a role without object."""
    cup = VV.object_category_ids[V_CUP]
    return [
        {"file_name": VCOCO_NAMES[0],
         "annotations": [{"bbox": BOX_A, "category_id": 1}, {"bbox": BOX_C, "category_id": cup}],
         "hoi_annotation": [{"subject_id": 0, "object_id": 1, "category_id": V_HOLD},
                            {"subject_id": 0, "object_id": -1, "category_id": V_STAND}]},
        {"file_name": VCOCO_NAMES[1],
         "annotations": [{"bbox": BOX_B, "category_id": 1}, {"bbox": BOX_D, "category_id": cup}],
         "hoi_annotation": [{"subject_id": 0, "object_id": -1, "category_id": V_HOLD},
                            {"subject_id": 0, "object_id": 1, "category_id": V_LOOK}]},
        {"file_name": VCOCO_NAMES[2], "annotations": [{"bbox": BOX_E, "category_id": 1}],
         "hoi_annotation": [{"subject_id": 0, "object_id": -1, "category_id": V_HOLD}]},
    ]


def vcoco_qpic_outputs():
    """HOICLIP / GEN-VLKT V-COCO post-processor outputs (one query per image): hoi_scores [1, 263], obj_scores
    [1, 81 + 1], labels of the two boxes (80 = no object)."""
    def one(sub, obj, label, hoi, obj_scores):
        h = torch.zeros(1, VV.num_hois)
        for (v, o), value in hoi.items():
            h[0, VV.hoi_index(v, o)] = value
        p = torch.zeros(1, VV.num_objects + 1)
        for o, value in obj_scores.items():
            p[0, o] = value
        return {"labels": torch.tensor([0, label]), "boxes": torch.tensor([sub, obj]), "hoi_scores": h,
                "obj_scores": p, "sub_ids": torch.tensor([0]), "obj_ids": torch.tensor([1])}

    return [
        one(BOX_A, BOX_C, V_CUP, {(V_HOLD, V_CUP): 0.8}, {V_CUP: 0.5}),  # hold: 0.8 + 0.5^2 = 1.05
        # hold: max(0.93 hold cup, 0.95 hold pizza) = 0.95, object = the box's label (cup); look: 0.7
        one(BOX_B, BOX_D, V_CUP, {(V_HOLD, V_CUP): 0.93, (V_HOLD, V_PIZZA): 0.95, (V_LOOK, V_CUP): 0.7}, {}),
        one(BOX_E, BOX_Z, V_NONE, {(V_HOLD, V_NONE): 0.9}, {}),  # label 80: an empty role
    ]


# Role AP by hand. hold_obj: 3 persons do it (A with cup C; B and E without object). look_obj: B with D.
# Per (query, verb): hold A 1.05 (TP), B 0.95 (role box D where B has no object: S1 FP, S2 TP), E 0.9 (empty
# role: TP). S1: rec 1/3, 1/3, 2/3 with prec 1, 1/2, 2/3 -> AP 1/3 + 1/3 * 2/3 = 5/9; S2: AP 1. look_obj:
# B 0.7 TP first (the A and E triplets of look score 0.25 and 0) -> AP 1.
VCOCO_S1, VCOCO_S2 = (5 / 9 + 1) / 2 * 100, 100.0


def test_qpic_per_verb_takes_the_best_class_of_each_verb_and_the_box_label():
    p = predictions_from_qpic(vcoco_qpic_outputs()[1], 1, VV, per_verb=True, topk=2)
    assert p.verb_labels.tolist() == [V_HOLD, V_LOOK] and p.scores.tolist() == pytest.approx([0.95, 0.7])
    assert p.obj_labels.tolist() == [V_CUP, V_CUP]  # hold pizza gave the max; the box says cup
    assert p.hoi_labels.tolist() == [VV.hoi_index(V_HOLD, V_CUP), VV.hoi_index(V_LOOK, V_CUP)]
    # per HOI class (HICO-DET convention) the same query gives two hold_obj triplets
    p = predictions_from_qpic(vcoco_qpic_outputs()[1], 1, VV, topk=3)
    assert p.verb_labels.tolist() == [V_HOLD, V_HOLD, V_LOOK] and p.obj_labels.tolist() == [V_PIZZA, V_CUP, V_CUP]
    # every verb with a class on cup gets a triplet; the (verb, cup) pairs that are no class are dropped
    skipped = Counter()
    p = predictions_from_qpic(vcoco_qpic_outputs()[1], 1, VV, per_verb=True, topk=None, skipped=skipped)
    with_cup = sorted({v for v, o in VV.hois if o == V_CUP})
    assert sorted(p.verb_labels.tolist()) == with_cup and skipped["not_an_hoi_class"] == VV.num_verbs - len(with_cup)


def vcoco_role_ap(preds):
    from hoiclip_lightning.metrics import VCOCORoleAP

    metric = VCOCORoleAP(VV)
    metric.update(preds, ground_truth_from_ppdm(vcoco_records(), VV, dataset_format="vcoco"))
    return {k: float(v) for k, v in metric.compute().items() if v.numel() == 1}


def test_vcoco_qpic_outputs_end_to_end_python_and_cli(tmp_path, capsys):
    """`hoiclip evaluate --dataset vcoco` on a pickle of HOICLIP V-COCO outputs: S1 / S2 as computed by hand."""
    from hoiclip_lightning.cli import main

    (tmp_path / "test_vcoco.json").write_text(json.dumps(vcoco_records()))
    torch.save(vcoco_qpic_outputs(), tmp_path / "vcoco_preds.pt")  # a list in test-set order
    got = evaluate_files(tmp_path / "vcoco_preds.pt", tmp_path / "test_vcoco.json", dataset="vcoco")
    assert got.metrics["mAP_role_s1"] == pytest.approx(VCOCO_S1)
    assert got.metrics["mAP_role_s2"] == pytest.approx(VCOCO_S2)
    ap_s1 = got.per_class["ap_role_s1"]
    assert ap_s1[V_HOLD] == pytest.approx(500 / 9) and ap_s1[V_LOOK] == pytest.approx(100.0)
    assert np.count_nonzero(~np.isnan(ap_s1)) == 2 and "mAP_full" in got.metrics
    # the same through the converters and VCOCORoleAP by hand
    preds = [predictions_from_qpic(o, i, VV, per_verb=True) for i, o in enumerate(vcoco_qpic_outputs())]
    direct = vcoco_role_ap(preds)
    assert direct["mAP_role_s1"] == got.metrics["mAP_role_s1"] and direct["mAP_role_s2"] == got.metrics["mAP_role_s2"]
    # per HOI class instead, B's second hold_obj triplet (0.93, above E) is a duplicate: S2 hold = 2/3 + 1/3 * 3/4
    per_class = vcoco_role_ap([predictions_from_qpic(o, i, VV) for i, o in enumerate(vcoco_qpic_outputs())])
    assert per_class["mAP_role_s2"] == pytest.approx((2 / 3 + 1 / 4 + 1) / 2 * 100)

    main(["evaluate", "--predictions", str(tmp_path / "vcoco_preds.pt"), "--annotations",
          str(tmp_path / "test_vcoco.json"), "--dataset", "vcoco", "--out", str(tmp_path / "eval")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "HOI detection mAP (vcoco, official protocol)"
    header = [c.strip() for c in lines[1].split("|")[1:-1]]
    row = [c.strip() for c in lines[3].split("|")[1:-1]]
    cells = dict(zip(header, row, strict=True))
    assert cells["Role AP S1"] == "77.78" and cells["Role AP S2"] == "100.00"
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["metrics"]["mAP_role_s1"] == pytest.approx(VCOCO_S1) and report["num_images"] == 3
    assert len(report["per_class"]["ap_role_s2"]) == VV.num_verbs


def test_vcoco_evaluator_dump_category_is_the_verb(tmp_path):
    """VCOCOEvaluator(...).preds of GEN-VLKT / HOICLIP: category_id = action-role class, object = the box's label."""
    def rec(boxes, triplets):
        return {"predictions": [{"bbox": b, "category_id": np.int64(label)} for b, label in boxes],
                "hoi_prediction": [{"subject_id": np.int64(s), "object_id": np.int64(o), "category_id": np.int64(v),
                                    "score": np.float64(x)} for s, o, v, x in triplets]}

    dump = [rec([(BOX_A, 0), (BOX_C, V_CUP)], [(0, 1, V_HOLD, 1.05)]),
            rec([(BOX_B, 0), (BOX_D, V_CUP)], [(0, 1, V_HOLD, 0.95), (0, 1, V_LOOK, 0.7), (0, 1, V_RIDE, 0.0)]),
            rec([(BOX_E, 0), (BOX_Z, V_NONE)], [(0, 1, V_HOLD, 0.9)])]
    (tmp_path / "test_vcoco.json").write_text(json.dumps(vcoco_records()))
    (tmp_path / "preds.pkl").write_bytes(pickle.dumps(dump))
    got = evaluate_files(tmp_path / "preds.pkl", tmp_path / "test_vcoco.json", dataset="vcoco")
    assert got.metrics["mAP_role_s1"] == pytest.approx(VCOCO_S1)
    assert got.metrics["mAP_role_s2"] == pytest.approx(VCOCO_S2)
    assert got.skipped == {"not_an_hoi_class": 1} and got.num_triplets == 4  # ride_instr with a cup: no class
    p = predictions_from_hoi_dump(dump[2], 2, VV, category="verb")
    assert p.obj_labels.tolist() == [V_NONE] and p.hoi_labels.tolist() == [VV.hoi_index(V_HOLD, V_NONE)]
    del dump[0]["predictions"][1]["category_id"]
    with pytest.raises(AnnotationError, match=r"record 0: predictions\[1\]: field 'category_id' is missing"):
        predictions_from_hoi_dump(dump[0], 0, VV, category="verb", source="record 0")


def test_vcoco_upt_outputs_keyed_by_file_name(tmp_path):
    """UPT V-COCO outputs (fredzzhang/vcoco: 24 action-role labels, COCO-order objects, x + w boxes), keyed by file
    name. UPT predicts a role box for every pair, so B and E (no role object) are S1 false positives."""
    from hoiclip_lightning.metrics import UPT_VCOCO_ACTIONS

    hold, look = UPT_VCOCO_ACTIONS.index("hold obj"), UPT_VCOCO_ACTIONS.index("look obj")
    assert (hold, look) == (0, 3)

    def out(boxes, pairs):
        return {"boxes": torch.tensor(boxes), "pairing": torch.tensor([[0] * len(pairs), [1] * len(pairs)]),
                "scores": torch.tensor([s for _, s in pairs]), "labels": torch.tensor([a for a, _ in pairs]),
                "objects": torch.tensor([V_CUP] * len(pairs))}

    outputs = {VCOCO_NAMES[2]: out([BOX_E, BOX_Z], [(hold, 0.9)]), VCOCO_NAMES[0]: out([BOX_A, BOX_C], [(hold, 1.0)]),
               VCOCO_NAMES[1]: out([BOX_B, BOX_D], [(hold, 0.95), (look, 0.7)])}
    (tmp_path / "test_vcoco.json").write_text(json.dumps(vcoco_records()))
    torch.save(outputs, tmp_path / "upt.pt")
    got = evaluate_files(tmp_path / "upt.pt", tmp_path / "test_vcoco.json", dataset="vcoco")
    # S1 hold: A TP, B FP, E FP -> AP 1/3; S2 hold: 1; look: 1
    assert got.metrics["mAP_role_s1"] == pytest.approx((1 / 3 + 1) / 2 * 100)
    assert got.metrics["mAP_role_s2"] == pytest.approx(100.0)
    p = predictions_from_upt(outputs[VCOCO_NAMES[1]], 1, VV, verb_names=UPT_VCOCO_ACTIONS, object_names="vocabulary",
                             pixel_offset=0)
    assert p.verb_labels.tolist() == [V_HOLD, V_LOOK] and p.obj_boxes.tolist() == [BOX_D, BOX_D]
    # a network-frame `size` cannot be undone without the image size, which test_vcoco.json does not give
    outputs[VCOCO_NAMES[0]]["size"] = torch.tensor([400, 300])
    torch.save(outputs, tmp_path / "upt_size.pt")
    with pytest.raises(AnnotationError, match=r"'size' is present .* rescale the boxes to the original image"):
        evaluate_files(tmp_path / "upt_size.pt", tmp_path / "test_vcoco.json", dataset="vcoco")


def test_fredzzhang_vcoco_instances_file_is_refused_with_the_reason(tmp_path):
    data = {"annotations": [], "classes": ["hold obj"], "objects": [], "images": [], "action_to_object": []}
    (tmp_path / "instances_vcoco_test.json").write_text(json.dumps(data))
    (tmp_path / "p.jsonl").write_text(json.dumps({"file": "a.jpg", "triplets": []}) + "\n")
    with pytest.raises(AnnotationError, match="keeps only the pairs with a role object.*give the HOIA test_vcoco.json"):
        evaluate_files(tmp_path / "p.jsonl", tmp_path / "instances_vcoco_test.json", dataset="vcoco")


class CacheTemplate(dict):
    """Stands for UPT's utils.CacheTemplate (a defaultdict subclass) in its V-COCO cache.pkl."""

    __module__ = "utils"


def test_vsrl_eval_detection_files_are_refused_with_what_to_give_instead(tmp_path, monkeypatch):
    """generate_vcoco_official.py (QPIC family) and UPT's cache.pkl hold vsrl_eval detections: refused, naming why."""
    (tmp_path / "test_vcoco.json").write_text(json.dumps(vcoco_records()))
    detection = {"image_id": 10, "person_box": BOX_A, "hold_agent": 0.9, "hold_obj": [*BOX_C, 0.9]}
    (tmp_path / "vcoco_official.pkl").write_bytes(pickle.dumps([detection], protocol=2))
    with pytest.raises(AnnotationError, match=r"record 0: this is a vsrl_eval detection file .* give the "
                                              r"post-processor outputs"):
        evaluate_files(tmp_path / "vcoco_official.pkl", tmp_path / "test_vcoco.json", dataset="vcoco")
    with monkeypatch.context() as m:  # pickle finds the class as utils.CacheTemplate, as in UPT's file
        module = type(sys)("utils")
        module.CacheTemplate = CacheTemplate
        m.setitem(sys.modules, "utils", module)
        (tmp_path / "cache.pkl").write_bytes(pickle.dumps([CacheTemplate(detection)], protocol=2))
    with pytest.raises(AnnotationError, match=r"refusing to load utils.CacheTemplate .*vsrl_eval detection file"):
        evaluate_files(tmp_path / "cache.pkl", tmp_path / "test_vcoco.json", dataset="vcoco")


def test_metrics_import_loads_neither_lightning_nor_open_clip():
    code = ("import sys; from hoiclip_lightning.metrics import HICODetMAP, predictions_from_qpic; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'pytorch_lightning', 'open_clip'}))")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------- docs examples
def _doc_examples() -> list[str]:
    text = (ROOT / "docs" / "metrics.md").read_text()
    section = text.split("## Use the metric in your own project", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_docs_has_the_family_examples():
    blocks = _doc_examples()
    assert len(blocks) >= 4
    assert any("predictions_from_qpic" in b for b in blocks) and any("predictions_from_upt" in b for b in blocks)
    assert any("per_verb=True" in b and "VCOCORoleAP" in b for b in blocks)


@pytest.mark.parametrize("index", range(4))
def test_docs_example_runs(index, tmp_path, monkeypatch):
    """Each code block of "Use the metric in your own project" runs as written (its asserts included)."""
    monkeypatch.chdir(tmp_path)
    exec(compile(_doc_examples()[index], f"docs/metrics.md example {index}", "exec"), {"__name__": "__doc__"})
