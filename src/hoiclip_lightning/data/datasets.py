"""Per-image HOI samples from validated annotation records.

Examples:
    >>> from hoiclip_lightning import HOIVocabulary
    >>> ds = HOIDataset([], HOIVocabulary.builtin("hico_det"), train=False)
    >>> len(ds)
    0
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.ops import box_convert

from ..errors import AnnotationError, DatasetNotFoundError
from ..structures import HOIGroundTruth, HOITarget, VCOCOGroundTruth
from ..vocabulary import HOIVocabulary
from .formats import ImageRecord
from .transforms import ClipTransform, HOIEvalTransform, HOITrainTransform, to_normalized_tensor

log = logging.getLogger(__name__)

Sample = tuple[Tensor, Tensor, HOITarget]


def load_image(path: str | object) -> Image.Image:
    """Open an image as RGB; raise an error naming the path if it is missing or cannot be decoded."""
    try:
        with Image.open(path) as img:  # type: ignore[arg-type]
            return img.convert("RGB")
    except FileNotFoundError as err:
        raise DatasetNotFoundError(f"image file not found: {path}") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise AnnotationError(f"cannot decode image {path}: {err}") from err


class HOIDataset(Dataset):
    """One split of an HOI dataset: ``(image [3, H, W], clip_image [3, S, S], HOITarget)`` per image.

    Target construction (reference §8.3): keep the first ``max_boxes`` boxes (training only, quirk D2),
    clamp boxes to the image and drop zero-area ones, transform image and boxes jointly, then merge the
    HOIs whose boxes survived by ``(subject_id, object_id)`` into one target pair each. ``hoi_labels`` is
    multi-hot over ``train_hoi_ids`` (index = position in that list); HOIs of other classes are ignored.
    A V-COCO role without object gets ``obj_labels = vocab.no_object_index`` and an all-zero object box.

    Args:
        records: validated records of the split (:func:`~hoiclip_lightning.data.formats.load_annotations`).
        vocab: the label space.
        train: training split (random augmentation, box truncation) or evaluation split.
        transform: joint transform ``(PIL, boxes xyxy, generator) -> (PIL, boxes, keep)``; defaults to
            :class:`HOITrainTransform` / :class:`HOIEvalTransform`.
        clip_transform: CLIP view of the transformed PIL image (default :class:`ClipTransform` (224)).
        train_hoi_ids: HOI classes of the ``hoi_labels`` columns (default: all classes).
        max_boxes: training images keep only their first ``max_boxes`` boxes (``None``: all).
        return_gt: attach :class:`HOIGroundTruth` (original pixels) as ``target.gt``; default: not
            ``train``.
        official_gt: per record, the official V-COCO ground truth to attach as ``target.gt.vcoco``
            (:func:`~hoiclip_lightning.data.attach_vcoco_official`); ``None``: none.
        on_bad_image: what an image that cannot be read when a sample is built does (one that the set-up
            check passed or did not look at): ``"error"`` raises :class:`AnnotationError` naming the annotation
            file, the record and the image; ``"skip"`` logs it at WARNING, counts it in
            :attr:`skipped_images` and serves the next readable record in its place. In an evaluation
            split that stand-in repeats an image id, which the metrics count once, so the bad image is left
            out of the evaluation.
        source: the annotation file's name, for messages.

    Attributes:
        skipped_images: record position -> reason (``missing_image`` / ``unreadable_image``) of the images
            skipped so far in this process (each DataLoader worker process keeps its own).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        vocab: HOIVocabulary,
        train: bool = True,
        transform: Callable | None = None,
        clip_transform: Callable[[Image.Image], Tensor] | None = None,
        train_hoi_ids: Sequence[int] | None = None,
        max_boxes: int | None = 64,
        return_gt: bool | None = None,
        official_gt: Sequence[VCOCOGroundTruth] | None = None,
        on_bad_image: Literal["error", "skip"] = "error",
        source: str = "",
    ) -> None:
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"on_bad_image {on_bad_image!r} is not supported; accepted: ('error', 'skip')")
        self.records = list(records)
        if official_gt is not None and len(official_gt) != len(self.records):
            raise ValueError(f"official_gt has {len(official_gt)} entries for {len(self.records)} records")
        self.official_gt = list(official_gt) if official_gt is not None else None
        self.vocabulary = vocab
        self.train = train
        self.transform = transform if transform is not None else (HOITrainTransform() if train else HOIEvalTransform())
        self.clip_transform = clip_transform if clip_transform is not None else ClipTransform(224)
        ids = list(range(vocab.num_hois)) if train_hoi_ids is None else [int(c) for c in train_hoi_ids]
        self.train_hoi_ids = ids
        self._column = np.full(vocab.num_hois, -1, dtype=np.int64)
        self._column[ids] = np.arange(len(ids))
        self.max_boxes = max_boxes
        self.return_gt = (not train) if return_gt is None else return_gt
        self.on_bad_image = on_bad_image
        self.source = source
        self.skipped_images: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.records)

    def _describe(self, idx: int) -> str:
        rec = self.records[idx]
        prefix = f"{self.source}: " if self.source else ""
        return f"{prefix}record {rec.index} (file_name {rec.file_name!r})"

    def __getitem__(self, idx: int) -> Sample:
        n = len(self.records)
        for step in range(n):
            j = (idx + step) % n
            if j in self.skipped_images:
                continue
            try:
                image = load_image(self.records[j].path)
            except (AnnotationError, DatasetNotFoundError) as err:
                if self.on_bad_image == "error":
                    raise type(err)(
                        f"{self._describe(j)}: {err}. The set-up check did not catch it (verify_images: full "
                        "decodes every image at set-up; on_bad_record: skip leaves such images out)") from err
                reason = "missing_image" if isinstance(err, DatasetNotFoundError) else "unreadable_image"
                self.skipped_images[j] = reason
                log.warning("%s: %s; skipped (%s; %d image(s) skipped in this process)", self._describe(j), err,
                            reason, len(self.skipped_images))
                continue
            return self._sample(j, image)
        raise AnnotationError(f"{self.source or 'dataset'}: no image of the {n} records can be read "
                              f"(skipped: {len(self.skipped_images)})")

    def _sample(self, idx: int, image: Image.Image) -> Sample:
        rec = self.records[idx]
        w, h = image.size
        boxes = torch.from_numpy(rec.boxes.copy()).float()
        n = boxes.shape[0]
        if self.train and self.max_boxes is not None and n > self.max_boxes:
            n = self.max_boxes
            boxes = boxes[:n]
        # clamp to the image and drop zero-area boxes; remember original indices
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        orig_ids = torch.nonzero(ok).flatten()
        image, out_boxes, keep = self.transform(image, boxes[ok])
        surviving = orig_ids[keep]
        tw, th = image.size
        tensor = to_normalized_tensor(image)
        clip = self.clip_transform(image)
        target = self._make_target(rec, idx, out_boxes, surviving, (tw, th), (w, h))
        if self.return_gt:
            target.gt = self.ground_truth(idx, size=(h, w))
        return tensor, clip, target

    def _make_target(
        self, rec: ImageRecord, idx: int, boxes: Tensor, surviving: Tensor, size: tuple[int, int],
        orig: tuple[int, int]
    ) -> HOITarget:
        tw, th = size
        pos = {int(o): k for k, o in enumerate(surviving.tolist())}
        norm = box_convert(boxes, "xyxy", "cxcywh") / torch.tensor([tw, th, tw, th], dtype=torch.float32)
        pairs: dict[tuple[int, int], int] = {}
        sub_rows: list[int] = []
        obj_rows: list[int] = []  # -1: no object
        obj_labels: list[int] = []
        verb_hot: list[tuple[int, int]] = []
        hoi_hot: list[tuple[int, int]] = []
        for sub, obj, verb, hoi in rec.hois.tolist():
            col = int(self._column[hoi])
            if col < 0 or sub not in pos or (obj != -1 and obj not in pos):
                continue
            key = (sub, obj)
            if key not in pairs:
                pairs[key] = len(sub_rows)
                sub_rows.append(pos[sub])
                obj_rows.append(pos[obj] if obj != -1 else -1)
                no_obj = self.vocabulary.no_object_index
                obj_labels.append(int(rec.labels[obj]) if obj != -1 else int(no_obj if no_obj is not None else -1))
            p = pairs[key]
            verb_hot.append((p, verb))
            hoi_hot.append((p, col))
        m = len(sub_rows)
        sub_boxes = norm[sub_rows] if m else torch.zeros(0, 4)
        obj_boxes = torch.zeros(m, 4)
        for p, r in enumerate(obj_rows):
            if r >= 0:
                obj_boxes[p] = norm[r]
        verb_labels = torch.zeros(m, self.vocabulary.num_verbs)
        hoi_labels = torch.zeros(m, len(self.train_hoi_ids))
        for p, v in verb_hot:
            verb_labels[p, v] = 1.0
        for p, c in hoi_hot:
            hoi_labels[p, c] = 1.0
        return HOITarget(
            sub_boxes=sub_boxes,
            obj_boxes=obj_boxes,
            obj_labels=torch.tensor(obj_labels, dtype=torch.long),
            verb_labels=verb_labels,
            hoi_labels=hoi_labels,
            image_id=idx,
            orig_size=torch.tensor([orig[1], orig[0]], dtype=torch.long),
            size=torch.tensor([th, tw], dtype=torch.long),
            file_name=rec.file_name,
        )

    def ground_truth(self, idx: int, size: tuple[int, int] | None = None) -> HOIGroundTruth:
        """Annotated HOIs of image ``idx`` in original pixels, one row per annotation (all classes)."""
        rec = self.records[idx]
        size = size if size is not None else (rec.height, rec.width)
        official = replace(self.official_gt[idx], image_id=idx) if self.official_gt is not None else None
        if rec.num_hois == 0:
            gt = HOIGroundTruth.empty(idx, size)
            gt.vcoco = official
            return gt
        boxes = torch.from_numpy(np.concatenate([rec.boxes, np.zeros((1, 4), np.float32)])).float()
        no_obj = self.vocabulary.no_object_index
        labels = np.concatenate([rec.labels, [no_obj if no_obj is not None else -1]])
        sub, obj = rec.hois[:, 0], rec.hois[:, 1]  # obj -1 selects the appended all-zero row
        return HOIGroundTruth(
            image_id=idx,
            sub_boxes=boxes[torch.from_numpy(sub)],
            obj_boxes=boxes[torch.from_numpy(obj)],
            obj_labels=torch.from_numpy(labels[obj].astype(np.int64)),
            verb_labels=torch.from_numpy(rec.hois[:, 2].copy()),
            hoi_labels=torch.from_numpy(rec.hois[:, 3].copy()),
            size=size,
            vcoco=official,
        )
