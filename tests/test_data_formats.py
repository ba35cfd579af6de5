"""Annotation reading and validation (formats.py) on the committed fixtures and broken copies."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hoiclip_lightning import AnnotationError, DatasetNotFoundError, HOIVocabulary
from hoiclip_lightning.data import load_annotations, load_verb_object_matrix
from hoiclip_lightning.data.image_check import ImageChecker, inspect_image

DATA = Path(__file__).parent / "data"
HICO = DATA / "hico_det"
VCOCO = DATA / "vcoco"


@pytest.fixture(scope="module")
def hico_vocab() -> HOIVocabulary:
    return HOIVocabulary.builtin("hico_det")


@pytest.fixture(scope="module")
def vcoco_vocab() -> HOIVocabulary:
    return HOIVocabulary.builtin("vcoco")


def test_hico_records_parsed(hico_vocab):
    ann = load_annotations(HICO / "annotations/trainval_hico.json", hico_vocab, HICO / "images/train2015")
    assert len(ann) == 6 and ann.skipped == {}
    r0 = ann.records[0]
    assert (r0.width, r0.height) == (48, 32)  # from the JPEG header
    assert r0.boxes.tolist() == [[2, 2, 20, 30], [18, 10, 46, 30]]
    assert r0.labels.tolist() == [0, 1]  # person, bicycle
    # rows (subject, object, verb index = HICO id - 1, hoi index = hoi_category_id - 1)
    assert r0.hois.tolist() == [[0, 1, 76, 18], [0, 1, 36, 11], [0, 1, 87, 19]]
    assert ann.records[1].hois.shape == (0, 4)
    assert ann.records[5].num_hois == 9


def test_vcoco_no_object_role(vcoco_vocab):
    ann = load_annotations(VCOCO / "annotations/trainval_vcoco.json", vcoco_vocab, VCOCO / "images/train2014",
                           dataset_format="vcoco")
    r0 = ann.records[0]
    assert r0.labels.tolist() == [0, 41]  # person, cup
    # stand (verb 1) without object -> hoi 13; hold_obj cup -> hoi 0; smile without object -> hoi 7
    assert r0.hois.tolist() == [[0, -1, 1, 13], [0, 1, 0, 0], [0, -1, 23, 7]]


def test_object_id_minus_one_rejected_in_hico_format(vcoco_vocab):
    with pytest.raises(AnnotationError, match=r"hoi_annotation\[0\]\.object_id = -1, but the image has 2"):
        load_annotations(VCOCO / "annotations/trainval_vcoco.json", vcoco_vocab, VCOCO / "images/train2014",
                         dataset_format="hico_det")


def _broken_copy(tmp_path: Path, mutate) -> Path:
    root = tmp_path / "hico"
    shutil.copytree(HICO, root, ignore=shutil.ignore_patterns("*.py"))
    path = root / "annotations/trainval_hico.json"
    records = json.loads(path.read_text())
    mutate(records, root)
    path.write_text(json.dumps(records))
    return root


def _set(rec: int, *keys, value):
    def mutate(records, root):
        obj = records[rec]
        for k in keys[:-1]:
            obj = obj[k]
        obj[keys[-1]] = value
    return mutate


def _delete_image(records, root):
    (root / "images/train2015/HICO_train2015_00000002.jpg").unlink()


def _corrupt_image(records, root):
    (root / "images/train2015/HICO_train2015_00000002.jpg").write_bytes(b"not a jpeg")


def _declare_size(rec: int, width, height):
    def mutate(records, root):
        records[rec]["width"], records[rec]["height"] = width, height
    return mutate


def _truncate_image(records, root):
    """A noisy JPEG of the record's declared size, cut short after its header (a broken download)."""
    records[1]["width"], records[1]["height"] = 48, 40
    path = root / "images/train2015/HICO_train2015_00000002.jpg"
    Image.effect_noise((48, 40), 60).convert("RGB").save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 400])


BROKEN = [
    # (mutation, expected message, skip counts, records kept, HOIs kept)
    (_set(0, "hoi_annotation", 2, "object_id", value=7),
     r"trainval_hico\.json: record 0 \(file_name 'HICO_train2015_00000001\.jpg'\): "
     r"hoi_annotation\[2\]\.object_id = 7, but the image has 2 annotations",
     {"hoi_box_out_of_range": 1}, 6, 17),
    (_set(0, "hoi_annotation", 0, "subject_id", value=2),
     r"record 0 .*hoi_annotation\[0\]\.subject_id = 2, but the image has 2 annotations",
     {"hoi_box_out_of_range": 1}, 6, 17),
    (_set(3, "annotations", 1, "category_id", value=12),
     r"record 3 \(file_name 'HICO_train2015_00000004\.jpg'\): annotations\[1\]\.category_id = 12 is not an object",
     {"bad_box": 1, "hoi_uses_bad_box": 2}, 6, 16),
    (_set(3, "annotations", 0, "bbox", value=[4, 4, 60, 44]),
     r"record 3 .*annotations\[0\]\.bbox = \[4, 4, 60, 44\] lies outside the 48x48 image",
     {"bad_box": 1, "hoi_uses_bad_box": 2}, 6, 16),
    (_set(3, "annotations", 0, "bbox", value=[10, 10, 10, 20]),
     r"annotations\[0\]\.bbox = \[10, 10, 10, 20\], expected x2 > x1 and y2 > y1 \(positive area\)",
     {"bad_box": 1, "hoi_uses_bad_box": 2}, 6, 16),
    (_set(3, "hoi_annotation", 1, "category_id", value=118),
     r"record 3 .*hoi_annotation\[1\]\.category_id = 118 is not a verb id of vocabulary 'hico_det'",
     {"unknown_verb": 1}, 6, 17),
    (_set(3, "hoi_annotation", 1, "category_id", value=77),  # ride cup
     r"hoi_annotation\[1\]: verb 'ride' \(category_id 77\) with object 'cup' is not an HOI class",
     {"unknown_combo": 1}, 6, 17),
    (_set(3, "hoi_annotation", 0, "hoi_category_id", value=599),
     r"hoi_annotation\[0\]\.hoi_category_id = 599, but vocabulary 'hico_det' numbers \('hold', 'cup'\) as 298",
     {"hoi_category_mismatch": 1}, 6, 17),
    (_set(2, "file_name", value=""),
     r"record 2: file_name = '', expected a non-empty string", {"malformed_record": 1}, 5, 15),
    (_delete_image,
     r"record 1 \(file_name 'HICO_train2015_00000002\.jpg'\): image file not found: .*HICO_train2015_00000002\.jpg",
     {"missing_image": 1}, 5, 18),
    (_corrupt_image, r"record 1 \(file_name 'HICO_train2015_00000002\.jpg'\): image file "
     r".*HICO_train2015_00000002\.jpg: cannot read the image header \(not an image format PIL recognises\)",
     {"unreadable_image": 1}, 5, 18),
    # the rest of the checks the issue asked for: non-finite boxes, declared sizes, cut-short files
    (_set(3, "annotations", 0, "bbox", value=[4, 4, float("nan"), 44]),
     r"record 3 \(file_name 'HICO_train2015_00000004\.jpg'\): annotations\[0\]\.bbox = \[4, 4, nan, 44\], "
     r"expected finite coordinates",
     {"bad_box": 1, "hoi_uses_bad_box": 2}, 6, 16),
    (_set(3, "annotations", 1, "bbox", value=[float("-inf"), 4, 10, 20]),
     r"annotations\[1\]\.bbox = \[-inf, 4, 10, 20\], expected finite", {"bad_box": 1, "hoi_uses_bad_box": 2}, 6, 16),
    (_declare_size(0, 5000, 5000),  # the record declares 5000x5000 for a 48x32 image
     r"record 0 \(file_name 'HICO_train2015_00000001\.jpg'\): width/height = \[5000, 5000\] \(5000x5000\), but "
     r"the image file .*HICO_train2015_00000001\.jpg is 48x32 pixels",
     {"image_size_mismatch": 1}, 5, 15),
    (_declare_size(0, "wide", 5000),
     r"record 0 .*: width/height = \['wide', 5000\], expected positive whole numbers", {"malformed_record": 1}, 5, 15),
    (_truncate_image, r"record 1 \(file_name 'HICO_train2015_00000002\.jpg'\): image file .*"
     r"HICO_train2015_00000002\.jpg: cannot decode the image \(OSError: image file is truncated",
     {"unreadable_image": 1}, 5, 18),
]


@pytest.mark.parametrize(("mutate", "message", "counts", "n_records", "n_hois"), BROKEN)
def test_bad_record_raises_then_skips(tmp_path, hico_vocab, caplog, mutate, message, counts, n_records, n_hois):
    root = _broken_copy(tmp_path, mutate)
    path, images = root / "annotations/trainval_hico.json", root / "images/train2015"
    with pytest.raises(AnnotationError, match=message):
        load_annotations(path, hico_vocab, images)
    with caplog.at_level(logging.WARNING, logger="hoiclip_lightning.data.formats"):
        ann = load_annotations(path, hico_vocab, images, on_bad_record="skip")
    assert ann.skipped == counts
    assert len(ann.records) == n_records
    assert sum(r.num_hois for r in ann.records) == n_hois
    assert any(rec.levelno == logging.WARNING and "skipped" in rec.getMessage() for rec in caplog.records)


def test_declared_size_is_checked_against_the_file(tmp_path, hico_vocab):
    root = _broken_copy(tmp_path, _set(0, "size", value=[20, 20]))
    path, images = root / "annotations/trainval_hico.json", root / "images/train2015"
    with pytest.raises(AnnotationError, match=r"record 0 .*: size = \[20, 20\] \(20x20\), but the image file .* is "
                       r"48x32 pixels"):
        load_annotations(path, hico_vocab, images)
    # verify_images="none" trusts the record without opening the file: the person box (y2 = 30) then lies
    # outside the declared 20x20 image
    with pytest.raises(AnnotationError, match=r"annotations\[0\]\.bbox = \[2, 2, 20, 30\] lies outside the 20x20"):
        load_annotations(path, hico_vocab, images, verify_images="none")
    # a size that agrees is accepted, in either field form
    root2 = _broken_copy(tmp_path / "ok", _set(0, "size", value={"width": 48, "height": 32}))
    ann = load_annotations(root2 / "annotations/trainval_hico.json", hico_vocab, root2 / "images/train2015")
    assert (ann.records[0].width, ann.records[0].height) == (48, 32) and ann.skipped == {}


@pytest.mark.parametrize("verify_images", ["header", "full"])
def test_cut_short_jpeg_found_at_both_levels(tmp_path, hico_vocab, verify_images):
    root = _broken_copy(tmp_path, _truncate_image)
    path, images = root / "annotations/trainval_hico.json", root / "images/train2015"
    with pytest.raises(AnnotationError, match=r"HICO_train2015_00000002\.jpg: cannot decode the image"):
        load_annotations(path, hico_vocab, images, verify_images=verify_images)
    ann = load_annotations(path, hico_vocab, images, verify_images=verify_images, on_bad_record="skip")
    assert ann.skipped == {"unreadable_image": 1}
    assert [r.file_name for r in ann.records] == [f"HICO_train2015_0000000{i}.jpg" for i in (1, 3, 4, 5, 6)]
    # without the image checks (the behaviour before them) the record passes and would fail mid-epoch
    assert len(load_annotations(path, hico_vocab, images, verify_images="none")) == 6


def test_complete_jpeg_with_trailing_bytes_is_accepted(tmp_path, hico_vocab):
    """A valid JPEG followed by extra bytes (as some phones write) lacks the end marker at the very end: it is
    decoded in full to decide, and passes."""
    def trail(records, root):
        path = root / "images/train2015/HICO_train2015_00000002.jpg"
        path.write_bytes(path.read_bytes() + b"\x00" * 64 + b"trailer")

    root = _broken_copy(tmp_path, trail)
    checker = ImageChecker("header")
    ann = load_annotations(root / "annotations/trainval_hico.json", hico_vocab, root / "images/train2015",
                           image_checker=checker)
    assert len(ann) == 6 and ann.skipped == {} and checker.opened == 6
    assert inspect_image(root / "images/train2015/HICO_train2015_00000002.jpg") == (48, 48)


def test_image_check_cache_reused_and_refreshed(tmp_path, hico_vocab):
    root = _broken_copy(tmp_path, lambda records, root: None)
    path, images = root / "annotations/trainval_hico.json", root / "images/train2015"
    cache = tmp_path / "cache/checks.json"
    first = ImageChecker("header", cache)
    load_annotations(path, hico_vocab, images, image_checker=first)
    first.save()
    assert (first.opened, first.cached) == (6, 0) and cache.is_file()
    second = ImageChecker("header", cache)
    load_annotations(path, hico_vocab, images, image_checker=second)
    assert (second.opened, second.cached) == (0, 6)  # no image opened on the second run
    # a file replaced since (another size and mtime) is checked again, and its new state is what counts
    Image.effect_noise((48, 40), 60).convert("RGB").save(images / "HICO_train2015_00000002.jpg")
    os.utime(images / "HICO_train2015_00000002.jpg", ns=(1, 1))
    third = ImageChecker("header", cache)
    ann = load_annotations(path, hico_vocab, images, image_checker=third)
    assert (third.opened, third.cached) == (1, 5) and (ann.records[1].width, ann.records[1].height) == (48, 40)
    # a header entry does not answer a full check; a full entry answers a header check
    full = ImageChecker("full", cache)
    load_annotations(path, hico_vocab, images, image_checker=full)
    full.save()
    assert (full.opened, full.cached) == (6, 0)
    header = ImageChecker("header", cache)
    load_annotations(path, hico_vocab, images, image_checker=header)
    assert (header.opened, header.cached) == (0, 6)


def test_image_check_cache_damaged_or_unwritable(tmp_path, hico_vocab, caplog):
    images = HICO / "images/train2015"
    damaged = tmp_path / "checks.json"
    damaged.write_text("{not json")
    checker = ImageChecker("header", damaged)
    assert checker.check(images / "HICO_train2015_00000001.jpg") == (48, 32) and checker.opened == 1
    checker.save()
    assert json.loads(damaged.read_text())["version"] == 1
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    unwritable = ImageChecker("header", blocker / "checks.json")  # its folder cannot be created
    unwritable.check(images / "HICO_train2015_00000001.jpg")
    with caplog.at_level(logging.WARNING, logger="hoiclip_lightning.data.image_check"):
        unwritable.save()  # logged, not raised
    assert any("cannot write the image check cache" in r.getMessage() for r in caplog.records)


def test_missing_annotation_file(hico_vocab, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="annotation file not found"):
        load_annotations(tmp_path / "nope.json", hico_vocab, tmp_path)


def test_not_a_list(tmp_path, hico_vocab):
    path = tmp_path / "test_hico.json"
    path.write_text('{"file_name": "x"}')
    with pytest.raises(AnnotationError, match=r"test_hico\.json: expected a JSON list of image records, got dict"):
        load_annotations(path, hico_vocab, tmp_path)


def test_verb_object_matrix(hico_vocab, vcoco_vocab, tmp_path):
    mat = load_verb_object_matrix(HICO / "annotations/corre_hico.npy", hico_vocab)
    assert mat.shape == (117, 80) and int(mat.sum()) == 600
    assert bool(mat[76, 1]) and not bool(mat[76, 41])  # ride bicycle yes, ride cup no
    vmat = load_verb_object_matrix(VCOCO / "annotations/corre_vcoco.npy", vcoco_vocab)
    assert vmat.shape == (29, 81) and not vmat[:, 80].any()  # 29x80 file, no-object column padded
    np.save(tmp_path / "corre_hico.npy", np.zeros((117, 79)))
    with pytest.raises(AnnotationError, match=r"corre_hico\.npy: shape \(117, 79\) does not match vocabulary"):
        load_verb_object_matrix(tmp_path / "corre_hico.npy", hico_vocab)
