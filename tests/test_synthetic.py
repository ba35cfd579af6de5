"""Synthetic HOI world: HICO-DET layout, schema, determinism, long tail and verb geometry."""

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hoiclip_lightning import ConfigurationError, HOIVocabulary
from hoiclip_lightning.data.synthetic import SyntheticSummary, generate_synthetic_dataset, synthetic_vocabulary

RECORD_KEYS = {"file_name", "width", "height", "annotations", "hoi_annotation"}
HOI_KEYS = {"subject_id", "object_id", "category_id", "hoi_category_id"}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_small")
    summary = generate_synthetic_dataset(root, seed=3, num_train=24, num_test=8, image_size=224)
    return root, summary


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_large")
    summary = generate_synthetic_dataset(root, seed=1, num_train=300, num_test=0, image_size=192)
    return root, summary


def _load(root: Path, split: str) -> list[dict]:
    name = {"train": "trainval_hico.json", "test": "test_hico.json"}[split]
    return json.loads((root / "annotations" / name).read_text())


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_summary(small):
    root, summary = small
    assert isinstance(summary, SyntheticSummary)
    for rel in ("annotations/trainval_hico.json", "annotations/test_hico.json", "annotations/corre_hico.npy",
                "vocabulary.json", "captions.json"):
        assert (root / rel).is_file(), rel
    train_imgs = sorted(p.name for p in (root / "images" / "train2015").iterdir())
    test_imgs = sorted(p.name for p in (root / "images" / "test2015").iterdir())
    assert train_imgs[0] == "synth_train_00000001.jpg" and train_imgs[-1] == "synth_train_00000024.jpg"
    assert len(train_imgs) == 24 and len(test_imgs) == 8 and test_imgs[0] == "synth_test_00000001.jpg"
    train, test = _load(root, "train"), _load(root, "test")
    assert [r["file_name"] for r in train] == train_imgs and [r["file_name"] for r in test] == test_imgs
    assert summary.images == {"train": 24, "test": 8}
    assert summary.hoi_instances["train"] == sum(len(r["hoi_annotation"]) for r in train)
    assert summary.hoi_instances["test"] == sum(len(r["hoi_annotation"]) for r in test)
    pairs = sum(len({(h["subject_id"], h["object_id"]) for h in r["hoi_annotation"]}) for r in train)
    assert summary.pairs["train"] == pairs and 24 <= pairs <= 72
    assert (summary.num_objects, summary.num_verbs, summary.num_hois) == (11, 11, 50)
    captions = json.loads((root / "captions.json").read_text())
    assert set(captions) == set(train_imgs) | set(test_imgs)


def test_records_follow_the_hico_schema(small):
    root, _ = small
    vocab = HOIVocabulary.from_json(root / "vocabulary.json")
    captions = json.loads((root / "captions.json").read_text())
    for split, folder in (("train", "train2015"), ("test", "test2015")):
        for rec in _load(root, split):
            assert set(rec) == RECORD_KEYS
            assert re.fullmatch(rf"synth_{split}_\d{{8}}\.jpg", rec["file_name"])
            with Image.open(root / "images" / folder / rec["file_name"]) as im:
                assert im.format == "JPEG" and im.size == (rec["width"], rec["height"]) == (224, 224)
            anns = rec["annotations"]
            assert 2 <= len(anns) <= 7
            people = [a for a in anns if a["category_id"] == 1]
            objects = [a for a in anns if a["category_id"] != 1]
            assert 1 <= len(people) <= 3 and 1 <= len(objects) <= 4
            for a in anns:
                assert set(a) == {"bbox", "category_id"}
                x1, y1, x2, y2 = a["bbox"]
                assert all(isinstance(v, int) for v in a["bbox"])
                assert 0 <= x1 < x2 <= rec["width"] and 0 <= y1 < y2 <= rec["height"]
                assert vocab.object_index(a["category_id"]) is not None
            assert rec["hoi_annotation"], rec["file_name"]
            for h in rec["hoi_annotation"]:
                assert set(h) == HOI_KEYS
                assert anns[h["subject_id"]]["category_id"] == 1
                assert 0 <= h["object_id"] < len(anns) and h["object_id"] != h["subject_id"]
                verb = vocab.verb_index(h["category_id"])
                obj = vocab.object_index(anns[h["object_id"]]["category_id"])
                assert verb is not None and obj is not None
                assert vocab.hoi_index(verb, obj) == h["hoi_category_id"] - 1
                caption = captions[rec["file_name"]]
                assert vocab.objects[obj] in caption
            keys = [(h["subject_id"], h["object_id"], h["category_id"]) for h in rec["hoi_annotation"]]
            assert len(keys) == len(set(keys))


def test_caption_names_the_interactions(small):
    root, _ = small
    captions = json.loads((root / "captions.json").read_text())
    vocab = synthetic_vocabulary()
    rec = _load(root, "train")[0]
    cap = captions[rec["file_name"]]
    assert cap.startswith("a person ")
    for h in rec["hoi_annotation"]:
        verb = vocab.verbs[h["category_id"] - 1]
        word = {"no_interaction": "far from", "look_at": "looking at", "sit_on": "sitting on"}.get(verb, verb[:3])
        assert word in cap, (cap, verb)


def test_vocabulary_file(small):
    root, summary = small
    vocab = HOIVocabulary.from_json(root / "vocabulary.json")
    assert vocab.name == "synthetic"
    assert vocab.num_verbs >= 8 and vocab.num_objects >= 10 and vocab.num_hois >= 40
    assert vocab.objects[0] == "person" and vocab.object_category_ids[0] == 1
    assert vocab.verb_ids == list(range(1, vocab.num_verbs + 1))
    assert len(vocab.object_prompts) == vocab.num_objects + 1 and vocab.object_prompts[-1] == "a photo of nothing"
    ride_bike = vocab.hoi_index(vocab.verbs.index("ride"), vocab.objects.index("bicycle"))
    assert vocab.hoi_prompts[ride_bike] == "a photo of a person riding a bicycle"
    assert vocab.rare_hois == summary.rare_hois
    splits = vocab.zero_shot_unseen
    assert {"default", "rare_first", "unseen_object", "unseen_verb"} <= set(splits) and splits["default"] == []
    objs = {vocab.hois[c][1] for c in splits["unseen_object"]}
    assert len(objs) == 1 and splits["unseen_object"] == [c for c, (_, o) in enumerate(vocab.hois) if o in objs]
    verbs = {vocab.hois[c][0] for c in splits["unseen_verb"]}
    assert len(verbs) == 1 and splits["unseen_verb"] == [c for c, (v, _) in enumerate(vocab.hois) if v in verbs]
    assert splits["rare_first"] and set(vocab.rare_hois[:1]) <= set(splits["rare_first"])
    corre = np.load(root / "annotations" / "corre_hico.npy")
    assert corre.shape == (vocab.num_verbs, vocab.num_objects) and corre.dtype == bool
    assert int(corre.sum()) == vocab.num_hois
    assert np.array_equal(corre, vocab.verb_object_matrix().numpy())
    # the in-memory vocabulary matches the file except for the data-dependent rare set
    mem = synthetic_vocabulary()
    assert mem.hois == vocab.hois and mem.objects == vocab.objects and mem.hoi_prompts == vocab.hoi_prompts
    assert 5 <= len(mem.rare_hois) <= 20


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    a = _all_files_of(tmp_path / "a", seed=7)
    b = _all_files_of(tmp_path / "b", seed=7)
    c = _all_files_of(tmp_path / "c", seed=8)
    assert a.keys() == b.keys() == c.keys() and len(a) == 6 + 3 + 5
    assert a == b
    assert a["annotations/trainval_hico.json"] != c["annotations/trainval_hico.json"]
    jpgs = [k for k in a if k.endswith(".jpg")]
    assert all(a[k] != c[k] for k in jpgs)


def _all_files_of(root: Path, seed: int) -> dict[str, bytes]:
    generate_synthetic_dataset(root, seed=seed, num_train=6, num_test=3, image_size=160)
    return _all_files(root)


def test_refuses_non_empty_dir_unless_overwrite(tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(ConfigurationError, match="not empty"):
        generate_synthetic_dataset(tmp_path, num_train=2, num_test=1)
    stale = tmp_path / "images" / "train2015" / "synth_train_00000099.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    summary = generate_synthetic_dataset(tmp_path, seed=0, num_train=2, num_test=1, image_size=128, overwrite=True)
    assert summary.images == {"train": 2, "test": 1}
    assert not stale.exists() and (tmp_path / "notes.txt").read_text() == "keep"
    assert len(list((tmp_path / "images" / "train2015").iterdir())) == 2
    with Image.open(tmp_path / "images" / "train2015" / "synth_train_00000001.jpg") as im:
        assert im.size == (128, 128)


def test_easy_world_has_one_pair_per_image_and_a_plain_background(tmp_path):
    generate_synthetic_dataset(tmp_path, seed=3, num_train=12, num_test=0, image_size=96, max_people=1,
                               distractors=False, clutter=False)
    records = json.loads((tmp_path / "annotations" / "trainval_hico.json").read_text())
    for rec in records:
        assert len(rec["annotations"]) == 2  # the person and the object of its interaction
        assert {(h["subject_id"], h["object_id"]) for h in rec["hoi_annotation"]} == {(0, 1)}
        with Image.open(tmp_path / "images" / "train2015" / rec["file_name"]) as im:
            corner = np.asarray(im.convert("RGB"), dtype=np.float32)[:8, :8]
        assert corner.std(axis=(0, 1)).max() < 12  # plain sky: only the pixel noise (sigma 6) and JPEG


@pytest.mark.parametrize("kwargs", [{"num_train": 0}, {"num_test": -1}, {"num_val": -1}, {"image_size": 16},
                                    {"workers": 0}, {"max_people": 0}, {"max_people": 4}])
def test_invalid_arguments(tmp_path, kwargs):
    with pytest.raises(ConfigurationError):
        generate_synthetic_dataset(tmp_path / "x", **kwargs)


def test_long_tail_and_rare_set(large):
    root, summary = large
    vocab = HOIVocabulary.from_json(root / "vocabulary.json")
    train = _load(root, "train")
    counts = Counter(h["hoi_category_id"] - 1 for r in train for h in r["hoi_annotation"])
    per_class = [counts.get(c, 0) for c in range(vocab.num_hois)]
    assert per_class == summary.hoi_counts
    rare = [c for c, n in enumerate(per_class) if n < 10]
    assert vocab.rare_hois == rare == summary.rare_hois
    assert 3 <= len(rare) <= vocab.num_hois // 2
    assert max(per_class) >= 25 and max(per_class) >= 8 * max(1, min(per_class))
    seen_objects = {a["category_id"] for r in train for a in r["annotations"]}
    assert seen_objects == set(vocab.object_category_ids)
    assert {h["category_id"] for r in train for h in r["hoi_annotation"]} == set(vocab.verb_ids)
    assert sum(per_class) == summary.hoi_instances["train"]
    # several verbs per pair happen (e.g. holding and looking at)
    multi = sum(1 for r in train for n in Counter((h["subject_id"], h["object_id"]) for h in r["hoi_annotation"])
                .values() if n > 1)
    assert multi >= 10
    assert _load(root, "test") == []


def _gap(p, o):
    """Horizontal and vertical gaps between two xyxy boxes (negative when they overlap)."""
    return max(o[0] - p[2], p[0] - o[2]), max(o[1] - p[3], p[1] - o[3])


def test_verb_geometry(large):
    root, _ = large
    vocab = HOIVocabulary.from_json(root / "vocabulary.json")
    checked = Counter()
    for rec in _load(root, "train"):
        anns = rec["annotations"]
        by_pair: dict[tuple[int, int], set[str]] = {}
        for h in rec["hoi_annotation"]:
            by_pair.setdefault((h["subject_id"], h["object_id"]), set()).add(vocab.verbs[h["category_id"] - 1])
        for (s, o), verbs in by_pair.items():
            p, q = anns[s]["bbox"], anns[o]["bbox"]
            ph = p[3] - p[1]
            gx, gy = _gap(p, q)
            touching = gx <= 2 and gy <= 2
            for verb in verbs:
                ctx = (rec["file_name"], verb, p, q)
                if verb in ("ride", "sit_on"):
                    # person on top of the object: overlapping horizontally, bottom reaching into the object
                    assert gx < 0 and p[3] > q[1] and p[1] < q[1], ctx
                elif verb == "no_interaction":
                    assert gx >= 0.5 * ph, ctx
                    assert verbs == {"no_interaction"}, ctx
                elif verb in ("hold", "push"):
                    assert touching, ctx
                elif verb == "kick":
                    # foot at the object, both near the ground
                    assert touching and abs(p[3] - q[3]) <= 0.1 * ph, ctx
                elif verb == "carry":
                    # object held above the head
                    assert (q[1] + q[3]) / 2 < p[1] and gx < 0, ctx
                elif verb == "throw":
                    # object in the air, above the shoulders, not in the hand
                    assert (q[1] + q[3]) / 2 < p[1] + 0.15 * ph and gx > 0, ctx
                elif verb == "fly":
                    assert q[1] < p[1] and not touching, ctx
                elif verb == "walk":
                    assert abs(p[3] - q[3]) <= 0.08 * ph and gx < 0.5 * ph, ctx
                elif verb == "look_at" and verbs == {"look_at"}:
                    assert 0 < gx < 0.6 * ph, ctx
                checked[verb] += 1
    for verb in ("ride", "sit_on", "no_interaction", "hold", "kick", "push", "carry", "throw", "fly", "walk"):
        assert checked[verb] >= 5, (verb, checked)


def test_validation_split_shares_no_image_with_train_or_test(tmp_path):
    """Rule: the validation split has its own files, drawn from its own random stream of the seed."""
    summary = generate_synthetic_dataset(tmp_path, seed=4, num_train=12, num_test=6, num_val=6, image_size=96)
    assert summary.images == {"train": 12, "test": 6, "val": 6}
    val = json.loads((tmp_path / "annotations/val_hico.json").read_text())
    val_files = sorted(p.name for p in (tmp_path / "images/val2015").iterdir())
    assert [r["file_name"] for r in val] == val_files and val_files[0] == "synth_val_00000001.jpg"
    arrays = {}
    for split in ("train2015", "test2015", "val2015"):
        for p in sorted((tmp_path / "images" / split).iterdir()):
            arrays[f"{split}/{p.name}"] = np.asarray(Image.open(p), dtype=np.int16)
    val_keys = [k for k in arrays if k.startswith("val2015/")]
    other = [k for k in arrays if not k.startswith("val2015/")]
    assert not {k.split("/")[1] for k in val_keys} & {k.split("/")[1] for k in other}
    for v in val_keys:  # not the same picture under another name either (pixels differ clearly)
        assert all(np.abs(arrays[v] - arrays[o]).mean() > 5 for o in other), v
    captions = json.loads((tmp_path / "captions.json").read_text())
    assert set(val_files) <= set(captions)
    # adding the validation split leaves train and test byte-identical
    plain = tmp_path.parent / (tmp_path.name + "_plain")
    generate_synthetic_dataset(plain, seed=4, num_train=12, num_test=6, image_size=96)
    for rel in ("annotations/trainval_hico.json", "annotations/test_hico.json",
                "images/test2015/synth_test_00000006.jpg"):
        assert (plain / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
    assert not (plain / "annotations/val_hico.json").exists() and not (plain / "images/val2015").exists()


def test_resize_split_images_scales_boxes_with_the_image(tmp_path):
    from hoiclip_lightning.data import resize_split_images

    generate_synthetic_dataset(tmp_path, seed=3, num_train=1, num_test=3, image_size=64)
    before = json.loads((tmp_path / "annotations/test_hico.json").read_text())
    assert resize_split_images(tmp_path, "test", [(128, 32), (64, 96)]) == 2
    after = json.loads((tmp_path / "annotations/test_hico.json").read_text())
    for rec, old, (w, h) in zip(after, before, [(128, 32), (64, 96), (128, 32)], strict=True):
        with Image.open(tmp_path / "images/test2015" / rec["file_name"]) as im:
            assert im.size == (w, h) and (rec["width"], rec["height"]) == (w, h)
        for ann, ann0 in zip(rec["annotations"], old["annotations"], strict=True):
            x1, y1, x2, y2 = ann0["bbox"]
            assert ann["bbox"] == [round(x1 * w / 64), round(y1 * h / 64), round(x2 * w / 64), round(y2 * h / 64)]
        assert rec["hoi_annotation"] == old["hoi_annotation"]
    with pytest.raises(ConfigurationError, match="unknown split 'dev'"):
        resize_split_images(tmp_path, "dev", [(64, 64)])
