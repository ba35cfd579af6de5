"""``HOIPredictionWriter``: write ``predict`` results as JSON lines and, optionally, drawn images.

Add it to the trainer's callbacks in a config (``configs/predict.yaml`` does, for the quickstart model)::

    hoiclip predict --config configs/predict.yaml \\
        --data.init_args.predict_images path/to/images --ckpt_path runs/quickstart/checkpoints/last.ckpt

or on the command line, to any run's config: ``--trainer.callbacks+=hoiclip_lightning.inference.HOIPredictionWriter
--trainer.callbacks.output_dir=predictions --trainer.callbacks.draw=true``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image, ImageOps

from ..errors import ConfigurationError
from ..structures import HOIBatch, HOIPrediction
from ..vocabulary import HOIVocabulary
from .drawing import draw_triplets
from .results import ImageDetections, to_image_detections

log = logging.getLogger(__name__)


class HOIPredictionWriter(BasePredictionWriter):
    """Write one JSON line per predicted image, and optionally a copy of each image with triplets drawn.

    Output (in ``output_dir``): ``predictions.jsonl`` (``predictions.rank<r>.jsonl`` per process under
    multi-GPU runs), one :meth:`ImageDetections.to_dict` record per image in loader order, and with
    ``draw`` a ``drawn/<image stem>.jpg`` per image (``<stem>_<image id>.jpg`` when two images share a
    stem). Each image id is written once: an image that could not be read mid-run (``on_bad_record: skip``)
    has its place taken by the next image, whose repeat is not written again. Images of ``predict_images``
    are drawn upright (EXIF orientation), the frame of their boxes.

    Args:
        output_dir: folder for the outputs (created).
        draw: also write drawn copies of the images.
        draw_topk: triplets drawn per image.
        score_threshold: triplets scoring below it are neither written nor drawn (``None``: keep all).
        max_triplets: at most this many triplets per JSON record (``None``: every triplet the
            post-processor kept, i.e. ``postprocess.topk`` before NMS).
        min_draw_side: drawn copies are enlarged to at least this short side, for legibility.
    """

    def __init__(
        self,
        output_dir: str = "predictions",
        draw: bool = False,
        draw_topk: int = 5,
        score_threshold: float | None = None,
        max_triplets: int | None = None,
        min_draw_side: int = 480,
    ) -> None:
        super().__init__(write_interval="batch")
        if draw_topk < 1:
            raise ConfigurationError(f"draw_topk must be >= 1, got {draw_topk}")
        if max_triplets is not None and max_triplets < 1:
            raise ConfigurationError(f"max_triplets must be >= 1 or None, got {max_triplets}")
        self.output_dir = Path(output_dir)
        self.draw = draw
        self.draw_topk = draw_topk
        self.score_threshold = score_threshold
        self.max_triplets = max_triplets
        self.min_draw_side = min_draw_side
        self.json_path: Path | None = None
        self._used_stems: set[str] = set()
        self._written_ids: set[int] = set()
        self.count = 0

    # ------------------------------------------------------------------ hooks
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        name = "predictions.jsonl" if trainer.world_size == 1 else f"predictions.rank{trainer.global_rank}.jsonl"
        self.json_path = self.output_dir / name
        self.json_path.write_text("")  # a new run replaces the previous file
        self._used_stems = set()
        self._written_ids = set()
        self.count = 0
        if self.draw:
            (self.output_dir / "drawn").mkdir(exist_ok=True)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log.info("wrote %d prediction records to %s", self.count, self.json_path)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: list[HOIPrediction],
        batch_indices: Any,
        batch: HOIBatch,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        vocab: HOIVocabulary = pl_module.vocabulary
        if self.json_path is None:  # write_on_batch_end called outside trainer.predict
            self.on_predict_start(trainer, pl_module)
        records = []
        upright = getattr(getattr(trainer, "datamodule", None), "predict_dataset", None) is not None
        for pred, target in zip(prediction, batch.targets, strict=True):
            if int(target.image_id) in self._written_ids:
                continue  # a stand-in for an image skipped mid-run
            self._written_ids.add(int(target.image_id))
            path = self._image_path(trainer, target.file_name, int(target.image_id))
            height, width = (int(v) for v in target.orig_size.tolist())
            detections = to_image_detections(pred, vocab, str(path) if path else target.file_name, width, height)
            records.append(detections.to_dict(self.max_triplets, self.score_threshold))
            if self.draw:
                self._draw(detections, path, int(target.image_id), upright)
        with self.json_path.open("a") as fh:  # type: ignore[union-attr]
            for rec in records:
                fh.write(json.dumps(rec) + "\n")
        self.count += len(records)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _image_path(trainer: L.Trainer, file_name: str, image_id: int) -> Path | None:
        """The image file: the target's file name if it exists, else the datamodule's record path."""
        if file_name and Path(file_name).is_file():
            return Path(file_name)
        dm = getattr(trainer, "datamodule", None)
        for attr in ("predict_dataset", "test_dataset"):
            dataset = getattr(dm, attr, None)
            records = getattr(dataset, "records", None)
            if records is not None and 0 <= image_id < len(records):
                path = Path(records[image_id].path)
                if path.name == Path(file_name).name and path.is_file():
                    return path
        return None

    def _draw(self, detections: ImageDetections, path: Path | None, image_id: int, upright: bool = False) -> None:
        if path is None:
            log.warning("cannot draw %s: image file not found", detections.file)
            return
        with Image.open(path) as img:
            source = ImageOps.exif_transpose(img) if upright else img
            drawn = draw_triplets(source, detections.triplets, self.draw_topk, self.score_threshold,
                                  self.min_draw_side)
        stem = path.stem
        if stem in self._used_stems:
            stem = f"{stem}_{image_id}"
        self._used_stems.add(stem)
        drawn.save(self.output_dir / "drawn" / f"{stem}.jpg", quality=92)
