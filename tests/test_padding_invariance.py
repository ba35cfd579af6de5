"""Evaluation does not depend on how images are batched: padding, eval batch size, workers, processes.

Two levels:

* the model: an image alone and the same image zero-padded inside a batch of larger ones get the same
  outputs (to float rounding) in every architecture variant; with ``padding_invariant: false`` (the
  reference) they do not, which is what makes these tests able to fail;
* the whole evaluation pipeline (datamodule -> LightningModule -> metric): one checkpoint validated at
  eval batch sizes 1, 2, 3 and 7, with 0 and 2 loader workers, in 1 and 2 processes (CPU ``ddp``), gives
  the same mAP on every split. The 17 test images have 16 different sizes after the test resize. The
  ground truth holds the real annotations plus each image's best detection at batch size 1, so that an
  untrained model's mAP is not 0 and moves when a score or a box moves.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hoiclip_lightning.data import generate_synthetic_dataset, resize_split_images
from hoiclip_lightning.data.collate import pad_images
from hoiclip_lightning.models import HOICLIP, HOICLIPConfig
from hoiclip_lightning.models.backbone import Backbone, PaddingContext
from hoiclip_lightning.vocabulary import HOIVocabulary

ROOT = Path(__file__).resolve().parents[1]

TINY = dict(backbone="resnet10", hidden_dim=32, nheads=2, dim_feedforward=64, dropout=0.0, enc_layers=1,
            dec_layers=2, inter_dec_layers=2, inter_nheads=2, num_queries=6, clip_model="hoiclip-tiny",
            text_init=False)
VARIANTS = {
    "paper_layout": {},  # frozen batch norm, quirk Q2 (shared unmasked memory attention)
    "group_norm": dict(backbone_norm="group_norm"),
    "own_memory_attention": dict(shared_fusion_attention=False),
    "quickstart_aids": dict(backbone_norm="batch_norm", dense_aux_head=True, position_in_memory=True,
                            query_selection=True, num_queries=16),
}
N_TEST = 17  # odd: 2 processes pad the last batch with a repeated image
SIZES = [(100, 70), (64, 131), (161, 97), (33, 40)]  # (H, W): none a multiple of 32, one tiny


@pytest.fixture(scope="module")
def vocab() -> HOIVocabulary:
    return HOIVocabulary(
        name="toy", objects=["person", "cup", "bicycle"], object_category_ids=[1, 47, 2],
        verbs=["hold", "ride", "no_interaction"], verb_ids=[1, 2, 3], hois=[(0, 1), (1, 2), (2, 1), (0, 0)],
        hoi_prompts=["a photo of a person holding a cup", "a photo of a person riding a bicycle",
                     "a photo of a person and a cup", "a photo of a person holding a person"],
    )


def _outputs_alone_and_batched(vocab, invariant: bool, **overrides):
    torch.manual_seed(0)
    config = HOICLIPConfig(**{**TINY, **overrides, "padding_invariant": invariant})
    model = HOICLIP(vocab, config=config).eval()
    gen = torch.Generator().manual_seed(3)
    images = [torch.randn(3, h, w, generator=gen) for h, w in SIZES]
    clips = torch.randn(len(SIZES), 3, 64, 64, generator=gen)
    with torch.no_grad():
        batched = model(*pad_images(images), clips)
        alone = [model(*pad_images(images[i:i + 1]), clips[i:i + 1]) for i in range(len(images))]
    diff = {}
    for key in ("hoi_logits", "obj_logits", "sub_boxes", "obj_boxes"):
        diff[key] = max(float((getattr(a, key)[0] - getattr(batched, key)[i]).abs().max())
                        for i, a in enumerate(alone))
    return diff


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_an_image_gets_the_same_outputs_alone_or_padded_in_a_batch(vocab, variant):
    diff = _outputs_alone_and_batched(vocab, True, **VARIANTS[variant])
    # measured: logits <= 5.2e-6, boxes <= 1.2e-7 (float32 rounding of differently shaped kernels)
    assert diff["hoi_logits"] < 1e-4 and diff["obj_logits"] < 1e-4, diff
    assert diff["sub_boxes"] < 1e-5 and diff["obj_boxes"] < 1e-5, diff


@pytest.mark.parametrize("variant", ["paper_layout", "quickstart_aids"])
def test_the_reference_layout_depends_on_the_batch(vocab, variant):
    """``padding_invariant: false`` keeps the reference's behaviour: padded images score differently."""
    diff = _outputs_alone_and_batched(vocab, False, **VARIANTS[variant])
    # measured: logits 1.0 / 2.1, boxes 1.5e-2 / 0.83
    assert diff["hoi_logits"] > 1e-2 and diff["sub_boxes"] > 1e-3, diff


def test_padding_context_gives_each_stage_the_extent_of_the_image_alone():
    ctx = PaddingContext()
    ctx.set(torch.tensor([[100, 70], [161, 161]]), (161, 161))
    # stride-2 stages: 161 -> 81 -> 41 -> 21 -> 11 -> 6; an image of 100 x 70 alone: 50 x 35, ..., 4 x 3
    assert ctx.valid_extent((81, 81)).tolist() == [[50, 35], [81, 81]]
    assert ctx.valid_extent((6, 6)).tolist() == [[4, 3], [6, 6]]
    mask = ctx.mask((6, 6), torch.device("cpu"), torch.bool)
    assert mask.shape == (2, 1, 6, 6) and int(mask[0].sum()) == 12 and bool(mask[1].all())
    with pytest.raises(RuntimeError, match="not a stride-2 reduction"):
        ctx.valid_extent((7, 7))


def test_backbone_feature_mask_is_the_exact_extent_and_unpadded_batches_skip_masking():
    torch.manual_seed(0)
    backbone = Backbone("resnet10", norm="batch_norm").eval()
    images, mask = pad_images([torch.randn(3, 90, 200), torch.randn(3, 200, 40)])
    with torch.no_grad():
        features, feature_mask = backbone(images, mask)
        alone, alone_mask = backbone(*pad_images([torch.randn(3, 200, 40)]))
    assert features.shape[-2:] == (7, 7)
    # ceil(90 / 32) = 3 rows, ceil(200 / 32) = 7 columns; ceil(40 / 32) = 2 columns
    assert (~feature_mask[0]).sum(dim=0).tolist() == [3] * 7 and (~feature_mask[1]).sum(dim=1).tolist() == [2] * 7
    assert not alone_mask.any() and alone.shape[-2:] == (7, 2)
    assert not backbone.padding.active  # the context is cleared after every forward


# ------------------------------------------------------------------------------------ whole pipeline
def _add_best_detections_as_ground_truth(root: Path, vocab: HOIVocabulary, predictions) -> None:
    path = root / "annotations/test_hico.json"
    records = json.loads(path.read_text())
    for pred in predictions:
        rec, best = records[pred.image_id], int(pred.scores.argmax())
        verb, obj = vocab.hois[int(pred.hoi_labels[best])]
        n = len(rec["annotations"])
        for box, cat in ((pred.sub_boxes[best], vocab.object_category_ids[0]),
                         (pred.obj_boxes[best], vocab.object_category_ids[obj])):
            x1, y1, x2, y2 = box.tolist()  # an untrained model's box may leave the image: keep its inside
            x1, x2 = min(max(x1, 0.0), rec["width"] - 2.0), min(max(x2, 0.0), rec["width"])
            y1, y2 = min(max(y1, 0.0), rec["height"] - 2.0), min(max(y2, 0.0), rec["height"])
            bbox = [round(x1, 2), round(y1, 2), round(max(x2, x1 + 2.0), 2), round(max(y2, y1 + 2.0), 2)]
            rec["annotations"].append({"bbox": bbox, "category_id": cat})
        rec["hoi_annotation"].append({"subject_id": n, "object_id": n + 1, "category_id": vocab.verb_ids[verb]})
    path.write_text(json.dumps(records))


def _config(root: Path, folder: Path) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
                    "enable_progress_bar": False, "enable_model_summary": False},
        "model": str(ROOT / "configs/model/quickstart.yaml"),
        "data": {"class_path": "hoiclip_lightning.data.HOIDataModule",
                 "init_args": {"root": str(root), "dataset_format": "hico_det", "vocabulary": None,
                               "batch_size": 2, "eval_batch_size": 1, "num_workers": 0, "train_scales": [96],
                               "train_max_size": 160, "crop_resize_scales": [96], "crop_min_size": 64,
                               "crop_max_size": 96, "test_scale": 96, "test_max_size": 160,
                               "clip_image_size": 64}},
    }
    path = folder / "invariance.yaml"
    path.write_text(json.dumps(config))
    return path


def _cli(config: Path, *args: str):
    from hoiclip_lightning.cli import HOICLIPCLI
    from hoiclip_lightning.data import HOIDataModule
    from hoiclip_lightning.models import HOICLIPModule

    return HOICLIPCLI(HOICLIPModule, HOIDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                      args=["--config", str(config), "--model.init_args.postprocess.topk", "5", *args])


@pytest.fixture(scope="module")
def evaluation_world(tmp_path_factory):
    """A synthetic test split of many sizes, one (untrained) checkpoint, and a ground truth that includes
    its detections (an untrained model scores ~0 on the real annotations alone)."""
    folder = tmp_path_factory.mktemp("invariance")
    root = folder / "data"
    generate_synthetic_dataset(root, seed=2, num_train=120, num_test=N_TEST, image_size=96, max_people=1,
                               distractors=False, clutter=False)
    resize_split_images(root, "test", [(64 + 13 * (i % 7), 60 + 17 * ((i * 5) % 9)) for i in range(N_TEST)])
    config = _config(root, folder)
    cli = _cli(config, "--trainer.default_root_dir", str(folder / "make"))
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)  # attaches the model to a trainer
    checkpoint = folder / "model.ckpt"
    cli.trainer.save_checkpoint(checkpoint)
    predictions = [p for batch in cli.trainer.predict(cli.model, datamodule=cli.datamodule) for p in batch]
    assert sorted(p.image_id for p in predictions) == list(range(N_TEST))
    _add_best_detections_as_ground_truth(root, cli.model.vocabulary, predictions)
    sizes = {tuple(s[0].shape[-2:]) for s in (cli.datamodule.test_dataset[i] for i in range(N_TEST))}
    return config, checkpoint, folder, len(sizes)


def _validate(config: Path, checkpoint: Path, folder: Path, batch_size: int, workers: int,
              *args: str) -> dict[str, float]:
    cli = _cli(config, "--data.init_args.eval_batch_size", str(batch_size), "--data.init_args.num_workers",
               str(workers), "--trainer.default_root_dir", str(folder / f"b{batch_size}w{workers}{len(args)}"), *args)
    result = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False, ckpt_path=str(checkpoint))[0]
    return {k: float(v) for k, v in result.items()}


def _validate_ddp(config: Path, checkpoint: Path, folder: Path, batch_size: int) -> dict[str, float]:
    out = folder / f"ddp_b{batch_size}"
    logger = json.dumps({"class_path": "lightning.pytorch.loggers.CSVLogger",
                         "init_args": {"save_dir": str(out), "name": "csv", "version": 0}})
    cmd = [sys.executable, "-m", "hoiclip_lightning.cli", "validate", "--config", str(config),
           "--model.init_args.postprocess.topk", "5", "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.logger", logger, "--trainer.default_root_dir", str(out),
           "--data.init_args.eval_batch_size", str(batch_size), "--ckpt_path", str(checkpoint)]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (out / "csv/version_0/metrics.csv").open(newline="") as fh:
        row = [r for r in csv.DictReader(fh) if r.get("val/mAP_full")][-1]
    return {k: float(v) for k, v in row.items() if k.startswith("val/") and v != ""}


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    keys = {k for k in (*a, *b) if k.startswith("val/") and "mAP" in k}  # with and without TFE
    return all(k in a and k in b and (a[k] == pytest.approx(b[k], abs=1e-6, nan_ok=True)) for k in keys)


@pytest.mark.slow
def test_evaluation_gives_the_same_map_at_any_batch_size_worker_and_process_count(evaluation_world):
    config, checkpoint, folder, n_sizes = evaluation_world
    assert n_sizes >= 12  # the images really have different sizes, so batches are padded
    table = {}
    for batch_size in (1, 2, 3, 7):
        table[(batch_size, 0, 1)] = _validate(config, checkpoint, folder, batch_size, 0)
    table[(3, 2, 1)] = _validate(config, checkpoint, folder, 3, 2)
    table[(7, 2, 1)] = _validate(config, checkpoint, folder, 7, 2)
    table[(3, 0, 2)] = _validate_ddp(config, checkpoint, folder, 3)
    base = table[(1, 0, 1)]
    keys = sorted(k for k in base if k.startswith("val/") and "mAP" in k)
    lines = ["batch workers processes | " + " ".join(keys)]
    lines += [f"{b:5d} {w:7d} {p:9d} | " + " ".join(f"{r.get(k, float('nan')):.4f}" for k in keys)
              for (b, w, p), r in table.items()]
    (folder / "table.txt").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines), file=sys.stderr)
    assert base["val/mAP_full"] > 1.0, base  # the planted detections make the mAP informative
    for setting, result in table.items():
        assert _same(base, result), (setting, result, base)
    # the same checkpoint with the reference's padding behaviour: batch size 1 has no padding and agrees,
    # batches of 7 move the mAP (this is what the test guards against)
    reference = _validate(config, checkpoint, folder, 7, 0, "--model.init_args.net.padding_invariant", "false")
    with (folder / "table.txt").open("a") as fh:
        fh.write("reference layout (padding_invariant: false), batch 7: "
                 + " ".join(f"{reference.get(k, float('nan')):.4f}" for k in keys) + "\n")
    assert not _same(base, reference), (reference, base)
