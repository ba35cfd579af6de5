"""HOICLIPModule end to end: a tiny model trained from scratch overfits 8 synthetic images and tells them apart.

The recipe is the quickstart's (configs/model/quickstart.yaml on the easy world of configs/data/quickstart.yaml):
trainable batch norm, dense auxiliary head (weight 10), position in memory, query selection, no text init. The
earlier recipe of this test (frozen-BN random ResNet, no aids) often collapses to the prior, the same boxes and
classes for every image: the loss still falls by 95 % (337 -> 17.9) but mAP is 0, and whether it escapes depended
on the CPU's floating-point rounding. So this test asserts what was learned (per-image boxes, mAP), not only the
loss, and runs under 1 and 2 torch threads with different seeds.

Run this file as a script (``python tests/test_module_learning.py``) to re-measure the table behind the thresholds.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

from hoiclip_lightning import HOIBatch
from hoiclip_lightning.data import (
    ClipTransform,
    HOIDataset,
    HOIEvalTransform,
    collate_hoi,
    generate_synthetic_dataset,
    load_annotations,
)
from hoiclip_lightning.metrics import HICODetMAP
from hoiclip_lightning.models import (
    HOICLIPConfig,
    HOICLIPModule,
    LossConfig,
    OptimizerConfig,
    PostProcessConfig,
)
from hoiclip_lightning.vocabulary import HOIVocabulary

IMAGE_SIZE = 128
# configs/model/quickstart.yaml, with 8 queries for 8 single-pair images
TINY = dict(backbone="resnet10", backbone_norm="batch_norm", hidden_dim=64, nheads=4, dim_feedforward=128,
            dropout=0.0, enc_layers=1, dec_layers=2, inter_dec_layers=2, inter_nheads=2, num_queries=8,
            clip_model="hoiclip-tiny", text_init=False, dense_aux_head=True,
            position_in_memory=True, query_selection=True)
STEPS, LR_DROP_STEP = 160, 120  # full-batch steps at lr 1e-3, the last 40 at 1e-4 (as DETR's lr drop)

# Measured with ``python tests/test_module_learning.py`` (torch 2.14.1, CPU; seed = torch.manual_seed before the
# model is built, threads = torch.set_num_threads), 160 steps:
#   | seed | threads | loss first -> last (ratio)  | mAP   | own IoU min / mean | own > other |
#   | 0    | 1       | 642.3 -> 0.483 (0.0008)     | 100.0 | 0.66 / 0.94        | 8/8         |
#   | 0    | 2       | 642.3 -> 0.266 (0.0004)     | 100.0 | 0.95 / 0.98        | 8/8         |
#   | 1    | 1       | 1094.1 -> 0.792 (0.0007)    | 79.2  | 0.23 / 0.82        | 8/8         |
#   | 1    | 2       | 1094.1 -> 0.671 (0.0006)    | 93.5  | 0.38 / 0.90        | 8/8         |
#   | 2    | 1       | 1049.5 -> 1.198 (0.0011)    | 64.9  | 0.06 / 0.71        | 7/8         |
#   | 2    | 2       | 1049.5 -> 0.705 (0.0007)    | 93.5  | 0.50 / 0.92        | 8/8         |
#   | 3    | 1       | 675.2 -> 0.486 (0.0007)     | 100.0 | 0.57 / 0.93        | 8/8         |
#   | 3    | 2       | 675.2 -> 0.608 (0.0009)     | 85.7  | 0.28 / 0.88        | 8/8         |
#   | 4    | 1       | 855.5 -> 0.618 (0.0007)     | 100.0 | 0.69 / 0.91        | 8/8         |
#   | 4    | 2       | 855.5 -> 0.735 (0.0009)     | 100.0 | 0.71 / 0.91        | 8/8         |
# Minimum: mAP 64.9, own > other on 7/8 images, ratio at most 0.0011. Every seed escapes the prior; one in ten
# leaves one image poorly localised, so the per-image check allows two misses. A collapsed model (the failure of
# the earlier recipe) scores mAP 0 with the same top pair everywhere, i.e. own > other on about one image in 8.
MIN_MAP = 40.0
MIN_IMAGES_TOLD_APART = 6   # of 8: the top-1 pair overlaps the image's own GT more than any other image's
MIN_OWN_IOU = 0.5           # median over the 8 images of IoU(top-1 pair, own GT pair), min of human and object
MAX_LOSS_RATIO = 0.01       # final / first loss; the collapse plateau of the earlier recipe was ~0.05


def make_eight_images(root: Path) -> tuple[HOIVocabulary, HOIBatch]:
    """The easy synthetic world (`hoiclip synth --easy`): one person-object pair per image, plain background."""
    if not (root / "vocabulary.json").exists():
        generate_synthetic_dataset(root, seed=5, num_train=8, num_test=2, image_size=IMAGE_SIZE, max_people=1,
                                   distractors=False, clutter=False)
    vocab = HOIVocabulary.from_json(root / "vocabulary.json")
    records = load_annotations(root / "annotations/trainval_hico.json", vocab, root / "images/train2015").records
    dataset = HOIDataset(records, vocab, train=False, transform=HOIEvalTransform(IMAGE_SIZE, IMAGE_SIZE),
                         clip_transform=ClipTransform(64), max_boxes=None, return_gt=True)
    return vocab, collate_hoi([dataset[i] for i in range(len(dataset))])


def build_module(root: Path, seed: int) -> HOICLIPModule:
    torch.manual_seed(seed)
    return HOICLIPModule(vocabulary=str(root / "vocabulary.json"), net=HOICLIPConfig(**TINY),
                         loss=LossConfig(dense_loss_coef=10.0),
                         optimizer=OptimizerConfig(lr=1e-3, lr_backbone=1e-3),
                         postprocess=PostProcessConfig(topk=20, tfe=False))


def overfit(module: HOICLIPModule, batch: HOIBatch, steps: int = STEPS) -> list[float]:
    """Full-batch training as in `hoiclip fit` (gradient clip 0.1); returns the loss of every step."""
    optimizer = module.configure_optimizers()["optimizer"]
    module.train()
    losses = []
    for step in range(steps):
        if step == LR_DROP_STEP:
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
        loss = module.training_step(batch, step)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 0.1)
        optimizer.step()
        losses.append(loss.item())
    return losses


@dataclass
class Learned:
    """What the trained model does on its training images."""

    map_full: float
    own_iou: torch.Tensor    # [N] IoU of image i's top-1 pair with image i's GT pairs (min of human, object)
    other_iou: torch.Tensor  # [N] its best IoU with any other image's GT pairs
    top1_correct: int        # images whose top-1 triplet has an annotated HOI class of that image


def evaluate(module: HOICLIPModule, vocab: HOIVocabulary, batch: HOIBatch) -> Learned:
    module.eval()
    with torch.no_grad():
        outputs = module(batch, all_classes=True)
    orig = torch.stack([t.orig_size for t in batch.targets])
    preds = module.postprocessor(outputs, orig, [t.image_id for t in batch.targets])
    gts = [t.gt for t in batch.targets]
    metric = HICODetMAP(num_hois=vocab.num_hois, protocol="official", rare_hois=vocab.rare_hois,
                        hoi_to_object=vocab.hoi_to_object().tolist())
    metric.update(preds, gts)
    # match[i, j]: the top-1 pair of image i against the GT pairs of image j
    match = torch.zeros(len(preds), len(gts))
    for i, pred in enumerate(preds):
        k = int(pred.scores.argmax())
        for j, gt in enumerate(gts):
            match[i, j] = torch.minimum(box_iou(pred.sub_boxes[k:k + 1], gt.sub_boxes),
                                        box_iou(pred.obj_boxes[k:k + 1], gt.obj_boxes)).max()
    others = match.masked_fill(torch.eye(len(gts), dtype=torch.bool), -1.0)
    top1 = sum(int(p.hoi_labels[p.scores.argmax()]) in g.hoi_labels.tolist() for p, g in zip(preds, gts, strict=True))
    return Learned(float(metric.compute()["mAP_full"]), match.diag(), others.max(1).values, top1)


@pytest.fixture(scope="module")
def eight_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth8")
    vocab, batch = make_eight_images(root)
    return vocab, batch, root


@pytest.fixture
def torch_threads(request):
    """Runs the test under ``request.param`` torch threads, restoring the previous count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def test_the_eight_images_can_be_told_apart_by_their_boxes(eight_images):
    """Precondition of the per-image check below: no two images have overlapping GT pairs."""
    _, batch, _ = eight_images
    gts = [t.gt for t in batch.targets]
    for i, a in enumerate(gts):
        for j, b in enumerate(gts):
            if i != j:
                iou = torch.minimum(box_iou(a.sub_boxes, b.sub_boxes), box_iou(a.obj_boxes, b.obj_boxes)).max()
                assert iou < 0.3, (i, j, float(iou))


@pytest.mark.slow
@pytest.mark.parametrize(("torch_threads", "seed"), [(1, 0), (2, 1)], indirect=["torch_threads"],
                         ids=["1thread-seed0", "2threads-seed1"])
def test_tiny_model_overfits_eight_images(eight_images, torch_threads, seed):
    vocab, batch, root = eight_images
    module = build_module(root, seed)
    losses = overfit(module, batch)
    learned = evaluate(module, vocab, batch)
    report = (f"threads {torch_threads} seed {seed}: loss {losses[0]:.1f} -> {losses[-1]:.3f}, "
              f"mAP {learned.map_full:.1f}, own IoU {learned.own_iou.tolist()}, "
              f"best other IoU {learned.other_iou.tolist()}, top-1 class right on {learned.top1_correct}/8")
    # (b) not collapsed to the prior: each image's top pair lies on its own GT, not on another image's
    assert int((learned.own_iou > learned.other_iou).sum()) >= MIN_IMAGES_TOLD_APART, report
    assert float(learned.own_iou.median()) >= MIN_OWN_IOU, report
    # (a) the annotated triplets are found again (an untrained or collapsed model scores ~0)
    assert learned.map_full >= MIN_MAP, report
    # (c) and the loss fell far below the collapse plateau (~5 % of the first loss)
    assert losses[-1] <= MAX_LOSS_RATIO * losses[0], report


def test_module_pickles_and_keeps_its_outputs(eight_images):
    """`ddp_spawn` and multiprocessing pickle the LightningModule: no lambdas or open handles inside."""
    import pickle

    vocab, batch, root = eight_images
    module = build_module(root, 0).eval()
    copy = pickle.loads(pickle.dumps(module))
    with torch.no_grad():
        a, b = module(batch, all_classes=True), copy(batch, all_classes=True)
    torch.testing.assert_close(a.hoi_logits, b.hoi_logits)
    assert type(copy.val_metric) is HICODetMAP and copy.val_metric.num_hois == vocab.num_hois


def measure(seeds: range = range(5), threads: tuple[int, ...] = (1, 2), deterministic: bool = False) -> None:
    """Print the seed x threads table behind the thresholds above."""
    import tempfile

    torch.use_deterministic_algorithms(deterministic)
    with tempfile.TemporaryDirectory() as tmp:
        vocab, batch = make_eight_images(Path(tmp))
        print("| seed | threads | loss first -> last (ratio) | mAP | own IoU min / mean / median | "
              "own > other | top-1 class | s |")
        for seed in seeds:
            for n in threads:
                torch.set_num_threads(n)
                start = time.perf_counter()
                module = build_module(Path(tmp), seed)
                losses = overfit(module, batch)
                got = evaluate(module, vocab, batch)
                print(f"| {seed} | {n} | {losses[0]:.1f} -> {losses[-1]:.3f} ({losses[-1] / losses[0]:.4f}) | "
                      f"{got.map_full:.1f} | {got.own_iou.min():.2f} / {got.own_iou.mean():.2f} / "
                      f"{got.own_iou.median():.2f} | {int((got.own_iou > got.other_iou).sum())}/8 | "
                      f"{got.top1_correct}/8 | "
                      f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    measure(deterministic="--deterministic" in sys.argv)
