"""Reading the official V-COCO files (data/vcoco_official.py) and the datamodule's ``vcoco_official_dir``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hoiclip_lightning import AnnotationError, ConfigurationError, DatasetNotFoundError, HOIVocabulary
from hoiclip_lightning.data import HOIDataModule, coco_image_id, find_vcoco_official_files, load_vcoco_official
from hoiclip_lightning.metrics import VCOCORoleAP
from hoiclip_lightning.structures import HOIPrediction

VCOCO = Path(__file__).parent / "data" / "vcoco"
SMALL = dict(train_scales=[24, 32], train_max_size=64, crop_resize_scales=[40], crop_min_size=20, crop_max_size=32,
             test_scale=32, test_max_size=64, clip_image_size=16, num_workers=0)
VERBS = ["hold_obj", "stand", "sit_instr"]
ACTIONS = [("hold", ["agent", "obj"]), ("stand", ["agent"]), ("sit", ["agent", "instr"])]


def ann(ann_id, image_id, bbox, cat=1, area=None, **extra):
    a = {"id": ann_id, "image_id": image_id, "bbox": bbox, "category_id": cat, "iscrowd": 0,
         "area": bbox[2] * bbox[3] if area is None else area}
    a.update(extra)
    return a


def default_coco():
    """Image 7 (100 x 80) and image 9 (50 x 50); see test_vsrl_eval_persons_boxes_and_roles."""
    images = [{"id": 7, "width": 100, "height": 80}, {"id": 9, "width": 50, "height": 50}]
    anns = [
        ann(11, 7, [10, 20, 30, 40]),  # V-COCO person, holds 13, stands
        ann(12, 7, [50, 10, 60, 80], iscrowd=1),  # crowd, outside V-COCO, clipped to the image
        ann(13, 7, [0.5, 0.5, 10, 10], cat=47),  # the cup held
        ann(14, 7, [0, 0, 30, 30], ignore=1),  # flagged ignore: not a person for vsrl_eval
        ann(15, 7, [5, 5, 0.5, 20]),  # width below one pixel: x2 == x1, left out
        ann(16, 7, [40, 40, 20, 20], area=0),  # zero area, left out
        ann(17, 7, [1, 1, 10, 10]),  # V-COCO person without action
        ann(21, 9, [0, 0, 20, 30]),  # V-COCO person, sits without object
    ]
    cats = [{"id": 1, "name": "person"}, {"id": 47, "name": "cup"}]
    return {"images": images, "annotations": anns, "categories": cats}


def default_actions(actions=ACTIONS):
    persons, images = [11, 17, 21], [7, 7, 9]
    records = []
    for name, roles in actions:
        label = {"hold": [1, 0, 0], "stand": [1, 0, 0], "sit": [0, 0, 1]}.get(name, [0, 0, 0])
        role_ids = [persons] + [[13 if (name == "hold" and p == 11) else 0 for p in persons] for _ in roles[1:]]
        records.append({"action_name": name, "role_name": roles, "ann_id": persons, "image_id": images,
                        "label": label, "role_object_id": sum(role_ids, [])})
    return records


def write_official(root: Path, coco=None, actions=None, ids=(7, 9), split="test") -> Path:
    (root / "vcoco").mkdir(parents=True, exist_ok=True)
    (root / "splits").mkdir(exist_ok=True)
    (root / "instances_vcoco_all_2014.json").write_text(json.dumps(coco or default_coco()))
    (root / "vcoco" / f"vcoco_{split}.json").write_text(json.dumps(actions or default_actions()))
    (root / "splits" / f"vcoco_{split}.ids").write_text("".join(f"{i}\n" for i in ids))
    return root


def test_vsrl_eval_persons_boxes_and_roles(tmp_path):
    gt = load_vcoco_official(write_official(tmp_path), "test", VERBS)
    assert list(gt) == [7, 9]
    g = gt[7]
    assert g.size == (80, 100) and g.coco_image_id == 7 and g.image_id == 7
    # every valid person in file order; boxes x2 = x + max(0, w - 1), clipped to [0, width - 1]
    assert g.person_boxes.tolist() == [[10, 20, 39, 59], [50, 10, 99, 79], [1, 1, 10, 10]]
    assert g.person_ignored.tolist() == [False, True, False]  # the crowd person is outside V-COCO
    assert g.action_person.tolist() == [0, 0] and g.action_verbs.tolist() == [0, 1]
    assert g.role_boxes.tolist() == [[0.5, 0.5, 9.5, 9.5], [-1, -1, -1, -1]]  # hold: the cup; stand: no role
    assert gt[9].action_verbs.tolist() == [2] and gt[9].role_boxes.tolist() == [[-1, -1, -1, -1]]


def test_files_are_found_in_a_checkout_or_side_by_side(tmp_path):
    write_official(tmp_path / "v-coco" / "data")
    found = find_vcoco_official_files(tmp_path / "v-coco", "test")
    assert [p.name for p in found] == ["vcoco_test.json", "instances_vcoco_all_2014.json", "vcoco_test.ids"]
    with pytest.raises(DatasetNotFoundError, match=r"vcoco/vcoco_val\.json"):
        find_vcoco_official_files(tmp_path / "v-coco", "val")
    assert coco_image_id("COCO_val2014_000000000042.jpg") == 42


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c, a: a[0].pop("label"), r"vcoco_test\.json: record 0 \(action 'hold'\): field 'label' is missing"),
        (lambda c, a: a[2].update(role_object_id=[1, 2]),
         r"vcoco_test\.json: record 2 \(action 'sit'\): field 'role_object_id' has 2 values, expected 6"),
        (lambda c, a: a[0]["role_object_id"].__setitem__(3, 14),
         r"vcoco_test\.json: action 'hold', ann_id 11: role 'obj' object 14 is not a valid annotation of image 7"),
        (lambda c, a: a[0]["role_object_id"].__setitem__(0, 99),
         r"vcoco_test\.json: record 0 \(action 'hold'\): role_object_id of ann_id 11 starts with 99"),
        (lambda c, a: c["annotations"][0].pop("bbox"), r"instances_vcoco_all_2014\.json: annotations\[0\] \(id 11"),
    ],
)
def test_bad_records_name_file_record_and_field(tmp_path, edit, message):
    coco, actions = default_coco(), default_actions()
    edit(coco, actions)
    with pytest.raises(AnnotationError, match=message):
        load_vcoco_official(write_official(tmp_path, coco, actions), "test", VERBS)


def test_ids_and_vocabulary_must_match_the_files(tmp_path):
    with pytest.raises(AnnotationError, match=r"vcoco_test\.ids: the ids must be the sorted image ids"):
        load_vcoco_official(write_official(tmp_path / "a", ids=(9, 7)), "test", VERBS)
    with pytest.raises(AnnotationError, match=r"verbs \['ride_instr'\] are not action-roles"):
        load_vcoco_official(write_official(tmp_path / "b"), "test", [*VERBS, "ride_instr"])


def test_official_ground_truth_gives_vsrl_eval_role_ap(tmp_path):
    gt = load_vcoco_official(write_official(tmp_path), "test", VERBS)

    def pred(image_id, rows):
        return HOIPrediction(image_id, torch.tensor([r[0] for r in rows], dtype=torch.float32),
                             torch.tensor([r[1] for r in rows], dtype=torch.float32),
                             torch.zeros(len(rows), dtype=torch.long), torch.tensor([r[2] for r in rows]),
                             torch.zeros(len(rows), dtype=torch.long),
                             torch.tensor([r[3] for r in rows], dtype=torch.float32))

    cup = [0.5, 0.5, 9.5, 9.5]
    # image 7: .9 on the crowd person (dropped), .8 right on person 11 (TP), .7 on person 17 (no action: FP)
    # hold_obj: npos 1, ranking TP .8, FP .7 -> AP 1; sit_instr (image 9, objectless role): TP -> AP 1
    preds = [pred(7, [([50, 10, 99, 79], cup, 0, 0.9), ([10, 20, 39, 59], cup, 0, 0.8), ([1, 1, 10, 10], cup, 0, 0.7)]),
             pred(9, [([0, 0, 19, 29], [0, 0, 0, 0], 2, 0.6)])]
    m = VCOCORoleAP(len(VERBS), role_verbs=[0, 2])
    m.update(preds, [gt[7], gt[9]])
    r = m.compute()
    assert r["ap_role_s1"][[0, 2]].tolist() == [100.0, 100.0] and float(r["mAP_role_s2"]) == 100.0


def vcoco_fixture_official(root: Path) -> Path:
    """Official files for the committed V-COCO test image (COCO id 1) with every V-COCO action."""
    vocab = HOIVocabulary.builtin("vcoco")
    actions: list[tuple[str, list[str]]] = []
    for verb in vocab.verbs:
        role = next((r for r in ("obj", "instr") if verb.endswith("_" + r)), None)
        name = verb[: -len(role) - 1] if role else verb
        if actions and actions[-1][0] == name:
            actions[-1][1].append(role)
        else:
            actions.append((name, ["agent", role] if role else ["agent"]))
    coco = {"images": [{"id": 1, "width": 64, "height": 64}],
            "annotations": [ann(101, 1, [0, 0, 24, 48]), ann(102, 1, [24, 24, 20, 16], cat=59),
                            ann(103, 1, [40, 0, 20, 20])],
            "categories": [{"id": 1, "name": "person"}, {"id": 59, "name": "pizza"}]}
    records = []
    for name, roles in actions:
        label = int(name in ("eat", "hold", "walk"))
        records.append({"action_name": name, "role_name": roles, "ann_id": [101], "image_id": [1], "label": [label],
                        "role_object_id": [101] + [102 if label and r == "obj" else 0 for r in roles[1:]]})
    return write_official(root, coco, records, ids=(1,))


def test_datamodule_attaches_official_ground_truth(tmp_path):
    official = vcoco_fixture_official(tmp_path / "official")
    dm = HOIDataModule(str(VCOCO), dataset_format="vcoco", vcoco_official_dir=str(official), **SMALL)
    dm.setup("test")
    gt = dm.test_dataset[0][2].gt
    assert gt.vcoco is not None and gt.vcoco.image_id == gt.image_id == 0 and gt.vcoco.coco_image_id == 1
    assert gt.vcoco.person_boxes.tolist() == [[0, 0, 23, 47], [40, 0, 59, 19]]
    assert gt.vcoco.person_ignored.tolist() == [False, True]
    verbs = dm.vocabulary.verbs
    assert sorted(verbs[v] for v in gt.vcoco.action_verbs.tolist()) == ["eat_instr", "eat_obj", "hold_obj", "walk"]
    with pytest.raises(ConfigurationError, match="vcoco_official_dir needs dataset_format 'vcoco'"):
        HOIDataModule(str(VCOCO), vcoco_official_dir=str(official))


def test_datamodule_names_an_image_missing_from_the_official_split(tmp_path):
    official = vcoco_fixture_official(tmp_path / "official")
    coco = json.loads((official / "instances_vcoco_all_2014.json").read_text())
    coco["images"][0]["id"] = 2
    for a in coco["annotations"]:
        a["image_id"] = 2
    records = json.loads((official / "vcoco" / "vcoco_test.json").read_text())
    for r in records:
        r["image_id"] = [2]
    write_official(official, coco, records, ids=(2,))
    dm = HOIDataModule(str(VCOCO), dataset_format="vcoco", vcoco_official_dir=str(official), **SMALL)
    with pytest.raises(AnnotationError, match=r"test_vcoco\.json: record 0 \(file_name 'COCO_val2014_000000000001\.jpg'"
                                              r"\): COCO image 1 is not in the official V-COCO split"):
        dm.setup("test")


def test_cli_run_evaluates_role_ap_on_official_ground_truth(tmp_path, capsys, monkeypatch):
    from hoiclip_lightning.cli import main

    official = vcoco_fixture_official(tmp_path / "official")
    monkeypatch.chdir(Path(__file__).parents[1])
    main(["test", "--config", "tests/conf/vcoco_tiny.yaml", "--trainer.limit_test_batches", "1",
          "--trainer.default_root_dir", str(tmp_path), "--model.init_args.per_class_ap_dir", str(tmp_path),
          "--data.init_args.vcoco_official_dir", str(official)])
    out = capsys.readouterr().out
    assert "Role AP S1" in out and "Role AP S2" in out
