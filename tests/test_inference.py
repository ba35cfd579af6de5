"""Inference: `hoiclip predict` (image folders, JSON lines, drawings) and the HOIDetector Python API."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hoiclip_lightning.data import HOIDataModule
from hoiclip_lightning.errors import AnnotationError, CheckpointError, ConfigurationError, DatasetNotFoundError
from hoiclip_lightning.inference import (
    HOIDetector,
    HOIPredictionWriter,
    HOITriplet,
    ImageDetections,
    draw_triplets,
    to_image_detections,
)
from hoiclip_lightning.vocabulary import HOIVocabulary

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests/data/hico_det"
TINY_CONF = ROOT / "tests/conf/hico_tiny.yaml"


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A tiny HOICLIP checkpoint after one training step on the HICO-DET fixture (datamodule hparams saved)."""
    from hoiclip_lightning.cli import HOICLIPCLI
    from hoiclip_lightning.models import HOICLIPModule

    out = tmp_path_factory.mktemp("ckpt")
    cli = HOICLIPCLI(HOICLIPModule, HOIDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                     args=["--config", str(TINY_CONF), "--data.init_args.root", str(FIXTURE),
                           "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
                           "--trainer.default_root_dir", str(out)])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    path = out / "tiny.ckpt"
    cli.trainer.save_checkpoint(path)
    return path


@pytest.fixture
def image_folder(tmp_path):
    """Three synthetic RGB images of different sizes and formats."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for name, (w, h) in (("a.jpg", (72, 48)), ("b.png", (40, 64)), ("c.jpeg", (50, 50))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _check_record(rec, vocab, width, height):
    assert set(rec) == {"file", "width", "height", "triplets"}
    assert (rec["width"], rec["height"]) == (width, height)
    assert rec["triplets"], "the tiny model keeps top-k triplets, so every image has some"
    scores = [t["score"] for t in rec["triplets"]]
    assert scores == sorted(scores, reverse=True)
    for t in rec["triplets"]:
        assert set(t) == {"human_box", "object_box", "object", "verb", "hoi", "score"}
        assert len(t["human_box"]) == 4 and len(t["object_box"]) == 4
        x1, y1, x2, y2 = t["human_box"]
        assert x2 >= x1 and y2 >= y1
        assert -width <= x1 <= 2 * width and -height <= y2 <= 2 * height  # pixels, not normalised coordinates
        hoi = t["hoi"]["index"]
        assert tuple(vocab.hois[hoi]) == (t["verb"]["index"], t["object"]["index"])
        assert t["verb"]["name"] == vocab.verbs[t["verb"]["index"]]
        assert t["object"]["name"] == vocab.objects[t["object"]["index"]]
        assert t["hoi"]["name"] == f"{t['verb']['name']} {t['object']['name']}"


def test_predict_cli_writes_json_lines_and_drawings(tiny_ckpt, image_folder, tmp_path, monkeypatch):
    from hoiclip_lightning.cli import main

    monkeypatch.chdir(tmp_path)  # configs/predict.yaml writes to ./predictions
    main(["predict", "--config", str(ROOT / "configs/predict.yaml"), "--trainer.accelerator", "cpu",
          "--data.init_args.root", str(tmp_path / "no_dataset_needed"), "--data.init_args.num_workers", "0",
          "--data.init_args.predict_images", str(image_folder), "--ckpt_path", str(tiny_ckpt)])
    lines = (tmp_path / "predictions/predictions.jsonl").read_text().splitlines()
    assert len(lines) == 3
    vocab = HOIVocabulary.builtin("hico_det")
    sizes = {"a.jpg": (72, 48), "b.png": (40, 64), "c.jpeg": (50, 50)}
    for line in lines:
        rec = json.loads(line)
        name = Path(rec["file"]).name
        _check_record(rec, vocab, *sizes[name])
    drawn = sorted(p.name for p in (tmp_path / "predictions/drawn").iterdir())
    assert drawn == ["a.jpg", "b.jpg", "c.jpg"]
    with Image.open(tmp_path / "predictions/drawn/b.jpg") as img:
        assert min(img.size) >= 480 and img.size[1] > img.size[0]  # enlarged, aspect kept (40x64 portrait)


def test_predict_cli_resizes_as_the_checkpoint_and_equals_the_detector(tiny_ckpt, image_folder, tmp_path,
                                                                       monkeypatch):
    """configs/predict.yaml's data section resizes to 160/200 px, the checkpoint was trained at 64/96 px
    (tests/conf/hico_tiny.yaml): `hoiclip predict` takes the checkpoint's test_scale, test_max_size and
    clip_image_size, so it writes HOIDetector's triplets and scores for the same image; a value given on
    the command line wins."""
    import shutil

    import yaml

    from hoiclip_lightning.cli import main

    data_config = yaml.safe_load((ROOT / "configs/data/quickstart.yaml").read_text())["init_args"]
    assert (data_config["test_scale"], data_config["test_max_size"]) == (160, 200)  # not the checkpoint's
    single = tmp_path / "one"
    single.mkdir()
    shutil.copy(image_folder / "a.jpg", single / "a.jpg")

    def predict(run: str, *extra: str) -> dict:
        (tmp_path / run).mkdir()
        monkeypatch.chdir(tmp_path / run)  # configs/predict.yaml writes to ./predictions
        main(["predict", "--config", str(ROOT / "configs/predict.yaml"), "--trainer.accelerator", "cpu",
              "--data.init_args.num_workers", "0", "--data.init_args.predict_images", str(single),
              "--ckpt_path", str(tiny_ckpt), *extra])
        return json.loads((tmp_path / run / "predictions/predictions.jsonl").read_text())

    record = predict("from_checkpoint")
    expected = HOIDetector.from_checkpoint(tiny_ckpt, device="cpu").predict(single / "a.jpg").to_dict()
    assert record["triplets"] == expected["triplets"]
    explicit = predict("explicit", "--data.init_args.test_scale", "96", "--data.init_args.test_max_size=128")
    assert [t["score"] for t in explicit["triplets"]] != [t["score"] for t in record["triplets"]]


def test_predict_writer_from_command_line_flags_and_list_file(tiny_ckpt, image_folder, tmp_path, monkeypatch):
    from hoiclip_lightning.cli import main

    listing = tmp_path / "list.txt"
    listing.write_text("# two images\nimages/c.jpeg\n\n" + str(image_folder / "a.jpg") + "\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    main(["predict", "--config", str(TINY_CONF), "--data.init_args.root", str(FIXTURE),
          "--data.init_args.predict_images", str(listing), "--ckpt_path", str(tiny_ckpt),
          "--trainer.callbacks+=hoiclip_lightning.inference.HOIPredictionWriter",
          f"--trainer.callbacks.output_dir={out}", "--trainer.callbacks.max_triplets=3"])
    recs = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [Path(r["file"]).name for r in recs] == ["c.jpeg", "a.jpg"]  # list order
    assert all(len(r["triplets"]) == 3 for r in recs)
    assert not (out / "drawn").exists()


def test_predict_images_errors_name_the_path(tmp_path, image_folder):
    def setup(spec):
        dm = HOIDataModule(str(tmp_path / "absent_root"), predict_images=str(spec), num_workers=0)
        dm.setup("predict")
        return dm

    assert len(setup(image_folder).predict_dataloader().dataset) == 3
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        setup(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="holds no image"):
        setup(tmp_path / "empty")
    listing = tmp_path / "list.txt"
    listing.write_text("images/a.jpg\nimages/missing.png\n")
    with pytest.raises(DatasetNotFoundError, match=r"list.txt, line 2: image file .*missing.png"):
        setup(listing)
    (image_folder / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(AnnotationError, match="broken.jpg"):
        setup(image_folder)


def test_detector_matches_module_predict_step(tiny_ckpt):
    """HOIDetector gives the triplets of `trainer.predict` (the module's predict_step) on the test split."""
    import lightning as L

    from hoiclip_lightning.models import HOICLIPModule

    module = HOICLIPModule.load_from_checkpoint(tiny_ckpt, map_location="cpu")
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    saved = {k: v for k, v in ckpt["datamodule_hyper_parameters"].items() if not k.startswith("_")}  # _class_path
    dm = HOIDataModule(**{**saved, "root": str(FIXTURE), "eval_batch_size": 2})
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    batches = trainer.predict(module, datamodule=dm)
    expected = [p for batch in batches for p in batch]
    files = [rec.path for rec in dm.test_dataset.records]

    detector = HOIDetector.from_checkpoint(tiny_ckpt, device="cpu", batch_size=2)
    results = detector.predict(files)
    assert len(results) == len(expected) == 3
    for res, pred, file in zip(results, expected, files, strict=True):
        with Image.open(file) as img:
            assert (res.width, res.height) == img.size
        assert len(res) == len(pred)
        order = pred.scores.argsort(descending=True, stable=True)
        torch.testing.assert_close(torch.tensor([t.score for t in res.triplets]), pred.scores[order].float())
        torch.testing.assert_close(torch.tensor([t.human_box for t in res.triplets]), pred.sub_boxes[order].float())
        torch.testing.assert_close(torch.tensor([t.object_box for t in res.triplets]), pred.obj_boxes[order].float())
        assert [t.hoi_index for t in res.triplets] == pred.hoi_labels[order].tolist()


def test_detector_accepts_pil_paths_and_tensors(tiny_ckpt, image_folder):
    detector = HOIDetector.from_checkpoint(tiny_ckpt, device="cpu")
    path = image_folder / "a.jpg"
    with Image.open(path) as img:
        pil = img.convert("RGB")
    uint8 = torch.from_numpy(np.asarray(pil)).permute(2, 0, 1).contiguous()
    single = detector.predict(path)
    assert isinstance(single, ImageDetections) and single.file == str(path)
    assert (single.width, single.height) == (72, 48)
    batch = detector.predict([pil, uint8, uint8.float() / 255.0])
    for res in batch:
        assert res.file == ""
        assert [t.to_dict() for t in res.triplets] == [t.to_dict() for t in single.triplets]

    with pytest.raises(ValueError, match=r"input 0: expected an image tensor \[3, H, W\]"):
        detector.predict(torch.zeros(4, 8, 8))
    with pytest.raises(ValueError, match=r"input 1: float image tensor must hold values in \[0, 1\]"):
        detector.predict([uint8, uint8.float()])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        detector.predict(image_folder / "missing.jpg")


def test_detector_uses_stored_vocabulary_and_refuses_another_label_space(tiny_ckpt, tmp_path):
    detector = HOIDetector.from_checkpoint(tiny_ckpt, device="cpu")
    assert detector.vocabulary.num_hois == 600 and detector.vocabulary.name == "hico_det"
    assert detector.transform.resize.sizes == [64]  # test_scale of tests/conf/hico_tiny.yaml
    assert detector.clip_transform.size == 64
    with pytest.raises(CheckpointError, match="another label space"):
        HOIDetector.from_checkpoint(tiny_ckpt, device="cpu", vocabulary="vcoco")
    with pytest.raises(CheckpointError, match="not found"):
        HOIDetector.from_checkpoint(tmp_path / "none.ckpt")
    torch.save({"model": {}}, tmp_path / "official.pth")
    with pytest.raises(CheckpointError, match="convert-official"):
        HOIDetector.from_checkpoint(tmp_path / "official.pth")


def test_to_image_detections_sorts_and_names():
    from hoiclip_lightning.structures import HOIPrediction

    vocab = HOIVocabulary.builtin("hico_det")
    pred = HOIPrediction(
        image_id=0, sub_boxes=torch.tensor([[0.0, 0, 5, 5], [1, 1, 6, 6]]),
        obj_boxes=torch.tensor([[2.0, 2, 8, 8], [3, 3, 9, 9]]),
        obj_labels=torch.tensor([vocab.hois[0][1], vocab.hois[1][1]]),
        verb_labels=torch.tensor([vocab.hois[0][0], vocab.hois[1][0]]), hoi_labels=torch.tensor([0, 1]),
        scores=torch.tensor([0.2, 0.9]))
    det = to_image_detections(pred, vocab, "x.jpg", 10, 10)
    assert [t.hoi_index for t in det.triplets] == [1, 0]
    assert det.triplets[0].human_box == (1.0, 1.0, 6.0, 6.0)
    assert det.triplets[0].object_name == vocab.objects[vocab.hois[1][1]]
    assert len(det.to_dict(score_threshold=0.5)["triplets"]) == 1


def test_draw_triplets_marks_boxes_in_triplet_colour():
    from hoiclip_lightning.inference.drawing import PALETTE

    image = Image.new("RGB", (100, 60), (0, 0, 0))
    t = HOITriplet((10, 10, 40, 50), (60, 20, 90, 40), 1, "cup", 3, "hold", 7, "hold cup", 0.8)
    out = draw_triplets(image, [t], min_side=0, legend=False)
    assert out.size == (100, 60)
    arr = np.asarray(out)
    assert tuple(arr[30, 90]) == PALETTE[0]  # right edge of the object box
    assert tuple(arr[45, 5]) == (0, 0, 0)  # untouched background
    assert draw_triplets(image, [t], score_threshold=0.9, min_side=0).getbbox() is None  # nothing drawn
    assert draw_triplets(image, [t], min_side=120).size == (200, 120)


def test_writer_rejects_bad_settings(tmp_path):
    with pytest.raises(ConfigurationError, match="draw_topk"):
        HOIPredictionWriter(str(tmp_path), draw_topk=0)
    with pytest.raises(ConfigurationError, match="max_triplets"):
        HOIPredictionWriter(str(tmp_path), max_triplets=0)


def test_detector_rejects_non_finite_and_empty_inputs(tiny_ckpt):
    detector = HOIDetector.from_checkpoint(tiny_ckpt, device="cpu")
    ok = torch.rand(3, 20, 30)
    with pytest.raises(ValueError, match=r"input 0: the float image tensor holds 1800 non-finite value\(s\) \(NaN or "
                                         r"infinity\) of 1800"):
        detector.predict(torch.full((3, 20, 30), float("nan")))
    one_nan = ok.clone()
    one_nan[1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match=r"input 1: the float image tensor holds 1 non-finite value"):
        detector.predict([ok, one_nan])
    for shape in ((3, 0, 0), (3, 0, 8), (3, 8, 0)):
        with pytest.raises(ValueError, match=rf"input 0: the image tensor is empty \(shape {re.escape(str(shape))}\)"):
            detector.predict(torch.zeros(shape))
        with pytest.raises(ValueError, match=r"input 0: the image tensor is empty"):
            detector.predict(torch.zeros(shape, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"input 0: the PIL image is empty \(0x0 pixels\)"):
        detector.predict(Image.new("RGB", (0, 0)))
    assert detector.predict([]) == []
    assert len(detector.predict(ok)) > 0  # a finite image still works


def _sideways_copy(upright_path: Path, out: Path) -> None:
    """The image stored rotated a quarter turn, with the EXIF orientation (6) that tells viewers to turn it back."""
    with Image.open(upright_path) as img:
        stored = img.convert("RGB").transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    stored.save(out, exif=exif)


def test_exif_rotated_image_gives_boxes_in_the_upright_frame(tiny_ckpt, image_folder, tmp_path):
    upright = tmp_path / "upright.png"
    with Image.open(image_folder / "a.jpg") as img:
        img.convert("RGB").save(upright)  # PNG: lossless, so both files hold exactly the same pixels
    sideways = tmp_path / "sideways.png"
    _sideways_copy(upright, sideways)
    with Image.open(sideways) as img:
        assert img.size == (48, 72)  # stored frame

    detector = HOIDetector.from_checkpoint(tiny_ckpt, device="cpu")
    expected, got = detector.predict([upright, sideways])
    assert (got.width, got.height) == (expected.width, expected.height) == (72, 48)
    assert [t.to_dict() for t in got.triplets] == [t.to_dict() for t in expected.triplets]
    raw = HOIDetector.from_checkpoint(tiny_ckpt, device="cpu", exif_transpose=False).predict(sideways)
    assert (raw.width, raw.height) == (48, 72)
    # PIL images opened by the user carry the tag too
    with Image.open(sideways) as img:
        from_pil = detector.predict(img)
    assert [t.to_dict() for t in from_pil.triplets] == [t.to_dict() for t in expected.triplets]
    # `hoiclip predict` reads image folders the same way
    from hoiclip_lightning.data.image_folder import ImageFolderDataset

    ds = ImageFolderDataset([upright, sideways], test_scale=32, max_size=64, clip_image_size=16)
    (im_a, clip_a, t_a), (im_b, clip_b, t_b) = ds[0], ds[1]
    assert t_b.orig_size.tolist() == t_a.orig_size.tolist() == [48, 72]
    assert torch.equal(im_a, im_b) and torch.equal(clip_a, clip_b)


def test_writer_writes_each_image_once_when_a_stand_in_repeats_it(tiny_ckpt, image_folder, tmp_path, monkeypatch):
    """An image that fails mid-run with on_bad_record: skip is replaced by the next one; the writer does not
    write that one twice."""
    from hoiclip_lightning.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    dm_args = ["--data.init_args.predict_images", str(image_folder), "--data.init_args.on_bad_record", "skip",
               "--data.init_args.eval_batch_size", "3", "--data.init_args.num_workers", "0"]
    original = HOIDataModule._setup_predict_images

    def break_one(self, spec):  # b.png passes the set-up check, then goes bad
        original(self, spec)
        (image_folder / "b.png").write_bytes(b"gone bad")

    monkeypatch.setattr(HOIDataModule, "_setup_predict_images", break_one)
    main(["predict", "--config", str(TINY_CONF), "--data.init_args.root", str(FIXTURE), *dm_args,
          "--ckpt_path", str(tiny_ckpt), "--trainer.callbacks+=hoiclip_lightning.inference.HOIPredictionWriter",
          f"--trainer.callbacks.output_dir={out}"])
    recs = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [Path(r["file"]).name for r in recs] == ["a.jpg", "c.jpeg"]


def test_predict_away_from_the_training_data_uses_the_checkpoint_vocabulary(image_folder, tmp_path, monkeypatch):
    """A checkpoint trained on a world with its own vocabulary.json, predicted with configs/predict.yaml where
    that file is not found (`vocabulary: null`, no <root>/vocabulary.json): the triplets are named with the
    checkpoint's vocabulary and equal HOIDetector's, not re-labelled with the format's built-in HICO-DET
    classes."""
    from hoiclip_lightning.cli import HOICLIPCLI, main
    from hoiclip_lightning.data import generate_synthetic_dataset
    from hoiclip_lightning.models import HOICLIPModule

    world = tmp_path / "world"
    generate_synthetic_dataset(world, seed=3, num_train=4, num_test=2, num_val=0, image_size=64, max_people=1)
    cli = HOICLIPCLI(HOICLIPModule, HOIDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                     args=["--config", str(TINY_CONF), "--data.init_args.root", str(world),
                           "--data.init_args.vocabulary", "null", "--trainer.max_steps", "1",
                           "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(tmp_path / "run")])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.model.vocabulary.name == "synthetic"
    ckpt = tmp_path / "synthetic.ckpt"
    cli.trainer.save_checkpoint(ckpt)

    elsewhere = tmp_path / "elsewhere"  # configs/predict.yaml's data root (data/quickstart) is not here
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    main(["predict", "--config", str(ROOT / "configs/predict.yaml"), "--trainer.accelerator", "cpu",
          "--data.init_args.num_workers", "0", "--data.init_args.predict_images", str(image_folder),
          "--ckpt_path", str(ckpt)])
    recs = [json.loads(x) for x in (elsewhere / "predictions/predictions.jsonl").read_text().splitlines()]
    vocab = HOIVocabulary.from_json(world / "vocabulary.json")
    assert len(recs) == 3 and all(r["triplets"] for r in recs)
    for rec in recs:
        for t in rec["triplets"]:
            assert t["hoi"]["index"] < vocab.num_hois and t["object"]["name"] == vocab.objects[t["object"]["index"]]
    expected = HOIDetector.from_checkpoint(ckpt, device="cpu").predict([Path(r["file"]) for r in recs])
    for rec, det in zip(recs, expected, strict=True):
        ours = det.to_dict()["triplets"]
        assert [t["hoi"] for t in rec["triplets"]] == [t["hoi"] for t in ours]
        assert np.allclose([t["score"] for t in rec["triplets"]], [t["score"] for t in ours], atol=2e-4)
