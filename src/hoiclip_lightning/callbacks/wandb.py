"""Send drawn predictions and the per-class AP table to Weights & Biases."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

log = logging.getLogger(__name__)

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)  # the detector's input normalisation (ImageNet)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _wandb_loggers(trainer: L.Trainer) -> list[Any]:
    from lightning.pytorch.loggers import WandbLogger

    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def batch_image(batch: Any, index: int) -> Image.Image:
    """The ``index``-th image of an :class:`HOIBatch` as an RGB PIL image of its original size.

    Undoes the normalisation and the batch padding of the detector input and resizes back to
    ``orig_size``, so the predictions' pixel boxes (original frame) fit it.
    """
    target = batch.targets[index]
    h, w = (int(v) for v in target.size.tolist())
    oh, ow = (int(v) for v in target.orig_size.tolist())
    img = batch.images[index, :, :h, :w].detach().float().cpu() * _STD + _MEAN
    array = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array).resize((ow, oh), Image.BILINEAR)


def draw_prediction(image: Image.Image, prediction: Any, vocabulary: Any, topk: int = 5) -> Image.Image:
    """Draw the ``topk`` best triplets of ``prediction`` with the inference drawing helper, or with
    torchvision's ``draw_bounding_boxes`` where that helper is unavailable."""
    try:
        from ..inference.drawing import draw_triplets
        from ..inference.results import to_image_detections
    except ImportError:
        draw_triplets = None
    if draw_triplets is not None:
        detections = to_image_detections(prediction, vocabulary, "", image.width, image.height)
        return draw_triplets(image, detections.triplets, topk=topk, min_side=256)
    from torchvision.transforms.functional import pil_to_tensor, to_pil_image
    from torchvision.utils import draw_bounding_boxes

    order = prediction.scores.float().argsort(descending=True)[:topk]
    boxes = torch.cat([prediction.sub_boxes[order], prediction.obj_boxes[order]]).float().cpu()
    names = [f"{vocabulary.verbs[int(prediction.verb_labels[i])]} {vocabulary.objects[int(prediction.obj_labels[i])]}"
             for i in order.tolist()]
    labels = ["person"] * len(names) + names
    drawn = draw_bounding_boxes(pil_to_tensor(image), boxes, labels=labels, width=2)
    return to_pil_image(drawn)


class WandbPredictionLogger(Callback):
    """Log a few validation images with predicted triplets, and the test per-class AP table, to W&B.

    Does nothing without a ``WandbLogger`` among the trainer's loggers. Losses, metric splits and
    hyper-parameters reach W&B through the module's ``self.log`` and ``save_hyperparameters``; this
    callback adds what those cannot carry:

    * ``val/predictions``: the first ``num_images`` images of the first validation batch of every
      ``every_n_val_epochs``-th validation, each with its ``topk`` best triplets drawn;
    * ``test/per_class_ap``: a ``wandb.Table`` of the ``per_class_ap.csv`` written at the end of a test
      run (class, verb, object, training instances, rare, unseen, AP).

    Args:
        num_images: images drawn per validation.
        topk: triplets drawn per image.
        every_n_val_epochs: draw at every n-th validation run.
    """

    def __init__(self, num_images: int = 4, topk: int = 5, every_n_val_epochs: int = 1) -> None:
        super().__init__()
        if num_images < 0 or topk < 1 or every_n_val_epochs < 1:
            raise ValueError(f"WandbPredictionLogger: need num_images >= 0, topk >= 1, every_n_val_epochs >= 1; got "
                             f"{num_images}, {topk}, {every_n_val_epochs}")
        self.num_images = num_images
        self.topk = topk
        self.every_n_val_epochs = every_n_val_epochs
        self._val_runs = 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_runs += 1

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if (batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero or self.num_images == 0
                or (self._val_runs - 1) % self.every_n_val_epochs != 0):
            return
        loggers = _wandb_loggers(trainer)
        if not loggers:
            return
        with torch.no_grad():
            outputs = pl_module(batch, all_classes=True)
            preds = pl_module._postprocess(outputs, batch, pl_module._enhanced_scores(outputs))
        images, captions = [], []
        for i in range(min(self.num_images, len(preds))):
            try:
                images.append(draw_prediction(batch_image(batch, i), preds[i], pl_module.vocabulary, self.topk))
            except Exception as err:  # drawing is a convenience; never stop training over it
                log.warning("could not draw validation image %d: %s", i, err)
                continue
            captions.append(batch.targets[i].file_name or f"image {batch.targets[i].image_id}")
        if images:
            for lg in loggers:
                lg.log_image(key="val/predictions", images=images, caption=captions, step=trainer.global_step)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        loggers = _wandb_loggers(trainer)
        if not loggers:
            return
        folder = getattr(pl_module, "per_class_ap_dir", None) or trainer.log_dir or "."
        path = Path(folder) / "per_class_ap.csv"
        if not path.is_file():
            log.warning("no per-class AP file at %s; the W&B table is skipped", path)
            return
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        columns, data = rows[0], rows[1:]
        numeric = {"hoi_id", "train_instances", "rare", "unseen", "ap"}
        typed = [[(float(v) if v != "" else None) if c in numeric else v for c, v in zip(columns, row, strict=True)]
                 for row in data]
        for lg in loggers:
            lg.log_table(key="test/per_class_ap", columns=columns, data=typed)
