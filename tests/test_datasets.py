"""Per-image samples and targets (datasets.py), checked against hand-computed values."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from hoiclip_lightning import AnnotationError, HOIVocabulary
from hoiclip_lightning.data import (
    ClipTransform,
    HOIDataset,
    HOIEvalTransform,
    HorizontalFlip,
    load_annotations,
    zero_shot_filter,
)

DATA = Path(__file__).parent / "data"
HICO, VCOCO = DATA / "hico_det", DATA / "vcoco"


@pytest.fixture(scope="module")
def vocab():
    return HOIVocabulary.builtin("hico_det")


@pytest.fixture(scope="module")
def train_records(vocab):
    return load_annotations(HICO / "annotations/trainval_hico.json", vocab, HICO / "images/train2015").records


def identity(image, boxes, generator=None):
    return image, boxes, torch.arange(boxes.shape[0])


def test_merged_pair_target(train_records, vocab):
    ds = HOIDataset(train_records, vocab, train=True, transform=identity, clip_transform=ClipTransform(16))
    image, clip, t = ds[0]
    assert image.shape == (3, 32, 48) and clip.shape == (3, 16, 16)
    assert t.size.tolist() == [32, 48] and t.orig_size.tolist() == [32, 48]
    assert t.image_id == 0 and t.file_name == "HICO_train2015_00000001.jpg"
    assert len(t) == 1  # three verbs on one (subject, object) pair
    # person [2, 2, 20, 30] -> cx 11/48, cy 16/32, w 18/48, h 28/32
    assert t.sub_boxes[0].tolist() == pytest.approx([11 / 48, 0.5, 18 / 48, 28 / 32])
    # bicycle [18, 10, 46, 30] -> cx 32/48, cy 20/32, w 28/48, h 20/32
    assert t.obj_boxes[0].tolist() == pytest.approx([32 / 48, 20 / 32, 28 / 48, 20 / 32])
    assert t.obj_labels.tolist() == [1]
    assert t.verb_labels.shape == (1, 117) and torch.nonzero(t.verb_labels[0]).flatten().tolist() == [36, 76, 87]
    assert t.hoi_labels.shape == (1, 600) and torch.nonzero(t.hoi_labels[0]).flatten().tolist() == [11, 18, 19]
    assert t.gt is None


def test_two_pairs_sharing_an_object(train_records, vocab):
    ds = HOIDataset(train_records, vocab, train=True, transform=identity)
    _, _, t = ds[5]  # 9 "hold cup" annotations on two persons -> 2 pairs
    assert len(t) == 2
    assert t.hoi_labels.sum(1).tolist() == [1.0, 1.0] and t.hoi_labels[:, 297].tolist() == [1.0, 1.0]
    # person 0 [2, 2, 20, 46], person 1 [28, 2, 46, 46] in a 48x48 image
    assert t.sub_boxes[:, 0].tolist() == pytest.approx([11 / 48, 37 / 48])


def test_max_boxes_truncation_drops_pairs(train_records, vocab):
    ds = HOIDataset(train_records, vocab, train=True, transform=identity, max_boxes=2)
    _, _, t = ds[5]  # every HOI uses box 2 (the cup), which is cut off
    assert len(t) == 0 and t.sub_boxes.shape == (0, 4) and t.hoi_labels.shape == (0, 600)


def test_seen_classes_columns(train_records, vocab):
    seen = vocab.seen_hois("rare_first")
    recs = zero_shot_filter(train_records, vocab.unseen_hois("rare_first"))
    ds = HOIDataset(recs, vocab, train=True, transform=identity, train_hoi_ids=seen)
    _, _, t = ds[1]  # record 2: only pair (2, 1) "hold bicycle" remains
    assert t.hoi_labels.shape == (1, 480)
    assert torch.nonzero(t.hoi_labels[0]).flatten().tolist() == [seen.index(11)]
    # person 2 [30, 0, 40, 20]
    assert t.sub_boxes[0].tolist() == pytest.approx([35 / 48, 10 / 48, 10 / 48, 20 / 48])


def test_flip_target(train_records, vocab):
    flip = HorizontalFlip(p=1.0)
    ds = HOIDataset(train_records, vocab, train=True, transform=lambda i, b: flip(i, b))
    _, _, t = ds[0]
    # flipped person [28, 2, 46, 30] -> cx 37/48
    assert t.sub_boxes[0].tolist() == pytest.approx([37 / 48, 0.5, 18 / 48, 28 / 32])


def test_eval_ground_truth_and_resize(vocab):
    recs = load_annotations(HICO / "annotations/test_hico.json", vocab, HICO / "images/test2015").records
    ds = HOIDataset(recs, vocab, train=False, transform=HOIEvalTransform(16, 100), clip_transform=ClipTransform(8))
    image, clip, t = ds[0]
    assert image.shape == (3, 16, 24) and t.size.tolist() == [16, 24] and t.orig_size.tolist() == [32, 48]
    gt = t.gt
    assert gt is not None and gt.image_id == 0 and gt.size == (32, 48)
    assert gt.sub_boxes.tolist() == [[4, 4, 20, 28]] * 2  # original pixels, one row per annotation
    assert gt.obj_boxes.tolist() == [[20, 8, 44, 30]] * 2
    assert gt.obj_labels.tolist() == [17, 17]  # horse
    assert gt.verb_labels.tolist() == [76, 26] and gt.hoi_labels.tolist() == [139, 129]
    # the pair target is in the resized image: person cx = 12 / 48
    assert t.sub_boxes[0].tolist() == pytest.approx([12 / 48, 16 / 32, 16 / 48, 24 / 32])
    _, _, empty = ds[2]
    assert len(empty) == 0 and len(empty.gt) == 0


def test_vcoco_no_object_pair():
    vocab = HOIVocabulary.builtin("vcoco")
    recs = load_annotations(VCOCO / "annotations/trainval_vcoco.json", vocab, VCOCO / "images/train2014",
                            dataset_format="vcoco").records
    ds = HOIDataset(recs, vocab, train=True, transform=identity, return_gt=True)
    _, _, t = ds[0]
    assert t.obj_labels.tolist() == [80, 41]  # (0, -1) first: stand + smile; then hold cup
    assert t.obj_boxes[0].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert torch.nonzero(t.verb_labels[0]).flatten().tolist() == [1, 23]
    assert torch.nonzero(t.hoi_labels[0]).flatten().tolist() == [7, 13]
    assert torch.nonzero(t.hoi_labels[1]).flatten().tolist() == [0]
    assert t.gt.obj_boxes[0].tolist() == [0.0, 0.0, 0.0, 0.0] and t.gt.obj_labels.tolist() == [80, 41, 80]
    _, _, empty = ds[2]  # V-COCO image without HOI: empty target
    assert len(empty) == 0 and empty.verb_labels.shape == (0, 29)


def test_corrupt_image_named(tmp_path, vocab):
    root = tmp_path / "hico"
    shutil.copytree(HICO, root)
    bad = root / "images/train2015/HICO_train2015_00000001.jpg"
    recs = load_annotations(root / "annotations/trainval_hico.json", vocab, root / "images/train2015").records
    bad.write_bytes(b"\xff\xd8garbage")
    ds = HOIDataset(recs, vocab, train=True, transform=identity)
    with pytest.raises(AnnotationError, match=r"cannot decode image .*HICO_train2015_00000001\.jpg"):
        ds[0]
