"""HOIDataModule on the committed fixtures (datamodule.py, collate.py)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from hoiclip_lightning import AnnotationError, ConfigurationError, DatasetNotFoundError, HOIBatch, HOIVocabulary
from hoiclip_lightning.data import HOIDataModule

DATA = Path(__file__).parent / "data"
HICO, VCOCO = DATA / "hico_det", DATA / "vcoco"
SMALL = dict(train_scales=[24, 32], train_max_size=64, crop_resize_scales=[40], crop_min_size=20, crop_max_size=32,
             test_scale=32, test_max_size=64, clip_image_size=16, num_workers=0)


def copy_fixture(tmp_path: Path, src: Path = HICO) -> Path:
    root = tmp_path / src.name
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("*.py"))
    return root


def test_fit_setup_zero_shot(tmp_path):
    dm = HOIDataModule(str(HICO), zero_shot="rare_first", **SMALL)
    dm.setup("fit")
    assert dm.vocabulary.name == "hico_det"
    assert len(dm.train_hoi_ids) == 480 and len(dm.unseen_hoi_ids) == 120
    # records 1 (no HOI) and 4 (only the unseen "pet bird") are dropped
    assert len(dm.train_dataset) == 4 and len(dm.test_dataset) == 3
    unseen = set(dm.unseen_hoi_ids)
    for rec in dm.train_dataset.records:
        assert not unseen & set(rec.hois[:, 3].tolist())
    _, _, t = dm.train_dataset[0]
    assert t.hoi_labels.shape[1] == 480
    # counts come from the training file before zero-shot filtering: "pet bird" (27) counted once
    assert dm.hoi_train_counts[27].item() == 1 and dm.hoi_train_counts[297].item() == 10
    assert len(dm.rare_hoi_ids_from_train) == 599 and 297 not in dm.rare_hoi_ids_from_train
    assert dm.skip_counts == {"train": {}, "test": {}}
    assert dm.verb_object_matrix.shape == (117, 80)


def test_default_split_keeps_all_classes():
    dm = HOIDataModule(str(HICO), **SMALL)
    dm.setup("fit")
    assert len(dm.train_dataset) == 5 and dm.train_hoi_ids == list(range(600)) and dm.unseen_hoi_ids == []


def test_test_stage_without_images_for_training(tmp_path):
    root = copy_fixture(tmp_path)
    shutil.rmtree(root / "images/train2015")
    dm = HOIDataModule(str(root), **SMALL)
    dm.setup("test")  # training file only counted, its images not needed
    assert dm.train_dataset is None and len(dm.test_dataset) == 3
    assert dm.hoi_train_counts[297].item() == 10
    assert dm.test_dataset[0][2].gt is not None


def test_dataloader_workers_pad_and_mask():
    dm = HOIDataModule(str(HICO), **{**SMALL, "num_workers": 2, "test_scale": 16}, eval_batch_size=3)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert isinstance(batch, HOIBatch) and len(batch) == 3
    # test images 48x32, 32x32, 32x32 at short side 16 -> 24x16, 16x16, 16x16
    assert batch.images.shape == (3, 3, 16, 24) and batch.pixel_mask.shape == (3, 16, 24)
    assert batch.clip_images.shape == (3, 3, 16, 16)
    assert [t.size.tolist() for t in batch.targets] == [[16, 24], [16, 16], [16, 16]]
    assert not batch.pixel_mask[0].any()
    for i in (1, 2):
        assert not batch.pixel_mask[i, :, :16].any() and batch.pixel_mask[i, :, 16:].all()
        assert torch.all(batch.images[i, :, :, 16:] == 0)
    assert [t.image_id for t in batch.targets] == [0, 1, 2]


def test_train_dataloader_batch():
    dm = HOIDataModule(str(HICO), batch_size=5, **SMALL)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 5 and batch.clip_images.shape == (5, 3, 16, 16)
    for i, t in enumerate(batch.targets):
        h, w = t.size.tolist()
        assert not batch.pixel_mask[i, :h, :w].any() and int(batch.pixel_mask[i].sum()) == batch.pixel_mask[
            i].numel() - h * w


def test_fraction_deterministic_and_seeded():
    names = []
    for seed in (0, 0, 1, 2, 3):
        dm = HOIDataModule(str(HICO), train_fraction=0.5, fraction_seed=seed, **SMALL)
        dm.setup("fit")
        names.append(tuple(r.file_name for r in dm.train_dataset.records))
        assert dm.subset_stats.images == 3
    assert names[0] == names[1]
    assert len(set(names[1:])) > 1


def test_train_annotation_file_changes_counts(tmp_path):
    root = copy_fixture(tmp_path)
    records = json.loads((root / "annotations/trainval_hico.json").read_text())
    (root / "annotations/trainval_hico_5%.json").write_text(json.dumps(records[:4]))
    dm = HOIDataModule(str(root), train_annotation_file="trainval_hico_5%.json", **SMALL)
    dm.setup("fit")
    assert len(dm.train_dataset) == 3  # record 1 has no HOI
    assert dm.hoi_train_counts[297].item() == 1 and 297 in dm.rare_hoi_ids_from_train
    with pytest.raises(DatasetNotFoundError, match="train_annotation_file 'nope.json' not found"):
        HOIDataModule(str(root), train_annotation_file="nope.json", **SMALL).setup("fit")


def test_missing_file_names_root_and_path(tmp_path):
    root = copy_fixture(tmp_path)
    (root / "annotations/corre_hico.npy").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"dataset root .*hico_det \(format hico_det\): required file "
                                                   r"'annotations/corre_hico\.npy' not found"):
        HOIDataModule(str(root), **SMALL).setup("fit")
    with pytest.raises(DatasetNotFoundError, match="dataset root not found"):
        HOIDataModule(str(tmp_path / "nothing"), **SMALL).setup("fit")


def test_flat_layout_and_custom_vocabulary(tmp_path):
    root = copy_fixture(tmp_path)
    for f in (root / "annotations").iterdir():
        f.rename(root / f.name)
    (root / "annotations").rmdir()
    vocab = HOIVocabulary.builtin("hico_det").to_dict()
    vocab["name"] = "custom"
    (root / "vocabulary.json").write_text(json.dumps(vocab))
    dm = HOIDataModule(str(root), **SMALL)
    dm.setup("fit")
    assert dm.vocabulary.name == "custom" and len(dm.train_dataset) == 5


def test_skip_mode_counts(tmp_path):
    root = copy_fixture(tmp_path)
    path = root / "annotations/test_hico.json"
    records = json.loads(path.read_text())
    records[0]["hoi_annotation"][1]["object_id"] = 5
    path.write_text(json.dumps(records))
    with pytest.raises(Exception, match=r"test_hico\.json: record 0 .*hoi_annotation\[1\]\.object_id = 5, but the "
                                        r"image has 2 annotations"):
        HOIDataModule(str(root), **SMALL).setup("test")
    dm = HOIDataModule(str(root), on_bad_record="skip", **SMALL)
    dm.setup("test")
    assert dm.skip_counts["test"] == {"hoi_box_out_of_range": 1}
    assert len(dm.test_dataset.records[0].hois) == 1


def test_vcoco_keeps_images_without_hoi():
    dm = HOIDataModule(str(VCOCO), dataset_format="vcoco", **SMALL)
    dm.setup("fit")
    assert dm.vocabulary.name == "vcoco" and len(dm.train_dataset) == 3
    gt = dm.test_dataset[0][2].gt
    assert gt.obj_labels.tolist() == [53, 53, 80] and gt.hoi_labels.tolist() == [5, 3, 33]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset_format": "coco"}, r"dataset_format 'coco' is not supported; accepted: \('hico_det', 'vcoco'\)"),
        ({"on_bad_record": "ignore"}, r"on_bad_record 'ignore' is not supported"),
        ({"verify_images": "deep"}, r"verify_images 'deep' is not supported; accepted: \('header', 'full', 'none'\)"),
        ({"train_fraction": 1.5}, r"train_fraction must be in \(0, 1\], got 1.5"),
        ({"batch_size": 0}, r"batch_size must be a positive integer, got 0"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        HOIDataModule(str(HICO), **kwargs)


def test_unknown_zero_shot_split():
    dm = HOIDataModule(str(HICO), zero_shot="nope", **SMALL)
    with pytest.raises(ConfigurationError, match="zero-shot split 'nope' is not defined"):
        dm.setup("fit")


def test_hparams_saved():
    dm = HOIDataModule(str(HICO), zero_shot="rare_first", batch_size=3)
    assert dm.hparams.zero_shot == "rare_first" and dm.hparams.batch_size == 3 and dm.hparams.max_boxes == 64


@pytest.mark.parametrize("stage", ["fit", "validate", "test"])
def test_empty_evaluation_split_is_an_error_at_setup(tmp_path, stage):
    root = copy_fixture(tmp_path)
    path = root / "annotations/test_hico.json"
    records = json.loads(path.read_text())
    for rec in records:  # every record malformed: skip mode leaves no image
        rec["annotations"] = "not a list"
    path.write_text(json.dumps(records))
    with pytest.raises(DatasetNotFoundError, match=r"test_hico\.json: the evaluation split .* has no image left "
                                                   r"\(records skipped: \w+: 3\)"):
        HOIDataModule(str(root), on_bad_record="skip", **SMALL).setup(stage)
    # images without any annotated HOI: no mAP can be computed
    path.write_text(json.dumps([{**rec, "hoi_annotation": []} for rec in json.loads(
        (HICO / "annotations/test_hico.json").read_text())]))
    with pytest.raises(DatasetNotFoundError, match=r"has 3 images but no annotated HOI"):
        HOIDataModule(str(root), **SMALL).setup(stage)
    # predicting on such a split is fine (no metric)
    dm = HOIDataModule(str(root), **SMALL)
    dm.setup("predict")
    assert len(dm.test_dataset) == 3


def _add_validation_split(root: Path, records: int = 2) -> Path:
    """A validation split built from the first test records, in images/val2015 (the synthetic world's layout)."""
    test = json.loads((root / "annotations/test_hico.json").read_text())[:records]
    (root / "images/val2015").mkdir(parents=True)
    for rec in test:
        shutil.copy(root / "images/test2015" / rec["file_name"], root / "images/val2015" / rec["file_name"])
    path = root / "annotations/val_hico.json"
    path.write_text(json.dumps(test))
    return path


def test_validation_file_is_used_when_present(tmp_path):
    """Rule: with annotations/val_hico.json the validation loader serves it, never the test split."""
    root = copy_fixture(tmp_path)
    val_path = _add_validation_split(root, records=2)
    dm = HOIDataModule(str(root), **SMALL)
    dm.setup("fit")
    assert dm.val_source == str(val_path)
    assert len(dm.val_dataset) == 2 and len(dm.test_dataset) == 3
    assert dm.val_dataloader().dataset is dm.val_dataset
    assert dm.test_dataloader().dataset is dm.test_dataset
    assert all(r.path.parent.name == "val2015" for r in dm.val_dataset.records)
    assert dm.val_dataset[0][2].gt is not None
    # the reference's behaviour on request
    ref = HOIDataModule(str(root), val_split="test", **SMALL)
    ref.setup("fit")
    assert ref.val_source == "test" and ref.val_dataloader().dataset is ref.test_dataset


def test_without_validation_file_the_test_split_validates(tmp_path, caplog):
    """Rule: HICO-DET has no validation split; validation then reads the test split and says so."""
    dm = HOIDataModule(str(HICO), **SMALL)
    with caplog.at_level("INFO", logger="hoiclip_lightning.data.datamodule"):
        dm.setup("fit")
    assert dm.val_source == "test" and dm.val_dataset is None
    assert dm.val_dataloader().dataset is dm.test_dataset
    assert "validation on the TEST split" in caplog.text


def test_required_validation_file_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="val_hico.json"):
        HOIDataModule(str(HICO), val_split="val", **SMALL).setup("fit")
    with pytest.raises(DatasetNotFoundError, match="my_val.json"):
        HOIDataModule(str(HICO), val_annotation_file="my_val.json", **SMALL).setup("validate")
    with pytest.raises(ConfigurationError, match="val_split"):
        HOIDataModule(str(HICO), val_split="train", **SMALL)


# ---------------------------------------------------------------------- image files checked at set-up
def _noise_jpeg(path: Path, size: tuple[int, int]) -> bytes:
    Image.effect_noise(size, 60).convert("RGB").save(path, quality=95)
    return path.read_bytes()


def _break_images(root: Path) -> None:
    """Train record 1: a JPEG cut short after its header; test record 2: text bytes in a .jpg. Both records
    declare their size, so only an image check can find them (the issue's case)."""
    train = root / "annotations/trainval_hico.json"
    records = json.loads(train.read_text())
    records[1].update(width=48, height=40)
    train.write_text(json.dumps(records))
    cut = root / "images/train2015/HICO_train2015_00000002.jpg"
    data = _noise_jpeg(cut, (48, 40))
    cut.write_bytes(data[: len(data) - 400])
    test = root / "annotations/test_hico.json"
    records = json.loads(test.read_text())
    with Image.open(root / "images/test2015/HICO_test2015_00000003.jpg") as img:
        records[2].update(width=img.width, height=img.height)
    test.write_text(json.dumps(records))
    (root / "images/test2015/HICO_test2015_00000003.jpg").write_bytes(b"<html>not an image</html>")


@pytest.mark.parametrize("verify_images", ["header", "full"])
def test_broken_images_found_at_setup_in_both_modes(tmp_path, caplog, verify_images):
    root = copy_fixture(tmp_path)
    _break_images(root)
    with pytest.raises(AnnotationError, match=r"trainval_hico\.json: record 1 \(file_name 'HICO_train2015_00000002"
                                              r"\.jpg'\): image file .*HICO_train2015_00000002\.jpg: cannot decode"):
        HOIDataModule(str(root), verify_images=verify_images, **SMALL).setup("fit")
    with pytest.raises(AnnotationError, match=r"test_hico\.json: record 2 \(file_name 'HICO_test2015_00000003\.jpg'"
                                              r"\): image file .*HICO_test2015_00000003\.jpg: cannot read the image"):
        HOIDataModule(str(root), verify_images=verify_images, **SMALL).setup("test")
    dm = HOIDataModule(str(root), verify_images=verify_images, on_bad_record="skip", **SMALL)
    with caplog.at_level(logging.WARNING, logger="hoiclip_lightning.data.formats"):
        dm.setup("fit")
    assert dm.skip_counts == {"train": {"unreadable_image": 1}, "test": {"unreadable_image": 1}}
    assert [r.file_name for r in dm.test_dataset.records] == ["HICO_test2015_00000001.jpg",
                                                              "HICO_test2015_00000002.jpg"]
    assert "HICO_train2015_00000002.jpg" not in [r.file_name for r in dm.train_dataset.records]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("trainval_hico.json: skipped 1 problem(s)" in m and "unreadable_image: 1" in m for m in logged)
    assert any("test_hico.json: skipped 1 problem(s)" in m for m in logged)
    # with the checks off (the behaviour the issue reported) both records pass set-up
    off = HOIDataModule(str(root), verify_images="none", **SMALL)
    off.setup("fit")
    assert len(off.test_dataset) == 3


def test_width_height_that_disagree_with_the_image_rejected(tmp_path):
    root = copy_fixture(tmp_path)
    path = root / "annotations/test_hico.json"
    records = json.loads(path.read_text())
    records[0].update(width=5000, height=5000)
    path.write_text(json.dumps(records))
    with pytest.raises(AnnotationError, match=r"test_hico\.json: record 0 \(file_name 'HICO_test2015_00000001\.jpg'"
                                              r"\): width/height = \[5000, 5000\] \(5000x5000\), but the image file "
                                              r".*HICO_test2015_00000001\.jpg is 48x32 pixels"):
        HOIDataModule(str(root), **SMALL).setup("test")
    dm = HOIDataModule(str(root), on_bad_record="skip", **SMALL)
    dm.setup("test")
    assert dm.skip_counts["test"] == {"image_size_mismatch": 1} and len(dm.test_dataset) == 2


def test_image_checks_cached_between_runs_outside_the_dataset(tmp_path):
    root = copy_fixture(tmp_path)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    cache = tmp_path / "cache"
    first = HOIDataModule(str(root), image_check_cache=str(cache), **SMALL)
    first.setup("fit")
    assert (first.image_checker.opened, first.image_checker.cached) == (9, 0)  # 6 training + 3 test images
    second = HOIDataModule(str(root), image_check_cache=str(cache), **SMALL)
    second.setup("fit")
    assert (second.image_checker.opened, second.image_checker.cached) == (0, 9)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written into the root
    assert [p.parent.name for p in cache.rglob("*.json")] == ["image_checks"]
    # the default folder is $HOICLIP_CACHE_DIR (tests/conftest.py points it at a temporary folder)
    default = HOIDataModule(str(root), **SMALL)
    default.setup("test")
    assert str(default.image_checker.cache_file).startswith(os.environ["HOICLIP_CACHE_DIR"])
    # a cache folder that cannot be written costs the checks again, nothing else
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    dm = HOIDataModule(str(root), image_check_cache=str(blocker), **SMALL)
    dm.setup("fit")
    assert len(dm.train_dataset) == 5 and not dm.image_checker.cache_file.exists()


def _break_after_setup(dm: HOIDataModule, split: str, position: int) -> Path:
    dataset = dm.train_dataset if split == "train" else dm.test_dataset
    path = dataset.records[position].path
    path.write_bytes(path.read_bytes()[:300])  # the file goes bad after set-up checked it
    return path


def test_image_that_fails_mid_epoch_is_named_in_error_mode(tmp_path):
    root = copy_fixture(tmp_path)
    dm = HOIDataModule(str(root), **SMALL)
    dm.setup("fit")
    _break_after_setup(dm, "train", 1)
    rec = dm.train_dataset.records[1]
    with pytest.raises(AnnotationError, match=rf"trainval_hico\.json: record {rec.index} \(file_name "
                                              rf"'{rec.file_name}'\): cannot decode image .*{rec.file_name}"):
        list(dm.train_dataloader())


def test_image_that_fails_mid_epoch_is_skipped_and_counted_in_skip_mode(tmp_path, caplog):
    root = copy_fixture(tmp_path)
    dm = HOIDataModule(str(root), on_bad_record="skip", batch_size=2, **SMALL)
    dm.setup("fit")
    bad = _break_after_setup(dm, "train", 1)
    with caplog.at_level(logging.WARNING, logger="hoiclip_lightning.data.datasets"):
        batches = list(dm.train_dataloader())
    names = [t.file_name for b in batches for t in b.targets]
    assert len(names) == len(dm.train_dataset) == 5 and bad.name not in names  # the next record stands in
    assert dm.train_dataset.skipped_images == {1: "unreadable_image"}
    assert sum(bad.name in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records) == 1
    # evaluation: the stand-in repeats an image id, which the metrics count once, so the bad image is left out
    _break_after_setup(dm, "test", 0)
    ids = [int(t.image_id) for b in dm.test_dataloader() for t in b.targets]
    assert ids == [1, 1, 2] and dm.test_dataset.skipped_images == {0: "unreadable_image"}


def test_predict_images_checked_and_skipped(tmp_path, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    _noise_jpeg(folder / "a.jpg", (40, 30))
    data = _noise_jpeg(folder / "b.jpg", (40, 30))
    (folder / "b.jpg").write_bytes(data[: len(data) - 300])
    (folder / "c.jpg").write_bytes(b"not an image")
    with pytest.raises(AnnotationError, match=r"image file .*b\.jpg: cannot decode the image"):
        HOIDataModule(str(tmp_path / "no_root"), predict_images=str(folder), **SMALL).setup("predict")
    dm = HOIDataModule(str(tmp_path / "no_root"), predict_images=str(folder), on_bad_record="skip", **SMALL)
    with caplog.at_level(logging.WARNING, logger="hoiclip_lightning.data.image_folder"):
        dm.setup("predict")
    assert [p.name for p in dm.predict_dataset.files] == ["a.jpg"]
    assert dm.skip_counts == {"predict": {"unreadable_image": 2}}
    assert any("c.jpg" in r.getMessage() for r in caplog.records)
