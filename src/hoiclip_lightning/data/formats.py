"""Read and validate HOI annotation files (HICO-DET PPDM format, V-COCO HOIA format, ``corre_*.npy``).

Both formats are a JSON list with one entry per image::

    {"file_name": "HICO_train2015_00000001.jpg",
     "annotations": [{"bbox": [x1, y1, x2, y2], "category_id": 1}, ...],     # pixels, COCO ids
     "hoi_annotation": [{"subject_id": 0, "object_id": 1, "category_id": 73,   # verb id
                         "hoi_category_id": 153}, ...]}                        # optional, 1-based

HICO-DET verb ids are 1-based (1..117); V-COCO verb ids are 0..28 and ``object_id = -1`` marks a role
without object (mapped to ``vocab.no_object_index``). Every record is checked when the file is loaded
(dataset ``setup``), never mid-epoch. With ``on_bad_record="error"`` the first problem raises
:class:`~hoiclip_lightning.errors.AnnotationError` naming the file, the record and the field; with
``"skip"`` the bad record (or only the bad HOI) is dropped, every skip is counted by reason and a
summary is logged at WARNING.

Image files are checked too (``check_images``, at the ``verify_images`` level of
:mod:`~hoiclip_lightning.data.image_check`): the file must exist, be a readable and complete image, and
have the size the record gives (``width``/``height`` or ``size``), if it gives one.

Skip reasons (keys of :attr:`AnnotationSet.skipped`): records -- ``malformed_record``,
``missing_image``, ``unreadable_image``, ``image_size_mismatch``; HOIs -- ``malformed_hoi``,
``hoi_box_out_of_range``, ``unknown_verb``, ``unknown_combo``, ``hoi_category_mismatch``,
``hoi_uses_bad_box``; boxes -- ``bad_box`` (a non-finite coordinate, outside the image, non-positive area
or unknown ``category_id``: the box is kept with label ``-1`` and every HOI that uses it is dropped and
counted as ``hoi_uses_bad_box``).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import AnnotationError, DatasetNotFoundError
from ..vocabulary import HOIVocabulary
from .image_check import VERIFY_IMAGES, ImageChecker, ImageCheckError, VerifyImages

log = logging.getLogger(__name__)

DatasetFormat = Literal["hico_det", "vcoco"]
OnBadRecord = Literal["error", "skip"]


@dataclass
class ImageRecord:
    """One validated image entry of an annotation file.

    Attributes:
        index: position of the entry in its annotation file.
        file_name: image file name as written in the file.
        path: full path of the image.
        width, height: original image size in pixels.
        boxes: ``[n, 4]`` float32 xyxy pixels, as in the file.
        labels: ``[n]`` int64 contiguous object index; ``-1`` for a box found invalid (only with
            ``on_bad_record="skip"``; no HOI refers to such a box).
        hois: ``[m, 4]`` int64 rows ``(subject_id, object_id, verb_index, hoi_index)``; ``object_id`` is
            ``-1`` for a role without object; ``hoi_index`` is in the full vocabulary.
    """

    index: int
    file_name: str
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    hois: np.ndarray

    @property
    def num_hois(self) -> int:
        return int(self.hois.shape[0])


@dataclass
class AnnotationSet:
    """Records of one annotation file plus what was skipped (reason -> count)."""

    path: Path
    records: list[ImageRecord]
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)


class _Checker:
    """Raises or counts a problem, depending on ``on_bad_record``."""

    def __init__(self, file_label: str, on_bad_record: OnBadRecord) -> None:
        self.file_label = file_label
        self.on_bad_record = on_bad_record
        self.counts: Counter[str] = Counter()

    def bad(self, reason: str, where: str, message: str) -> None:
        if self.on_bad_record == "error":
            raise AnnotationError(f"{self.file_label}: {where}: {message}")
        self.counts[reason] += 1
        log.debug("%s: %s: %s (skipped, reason %s)", self.file_label, where, message, reason)


def _pixel_count(value: Any) -> int | None:
    """A positive whole number of pixels (``640`` or ``640.0``), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if value >= 1 else None


def _record_size(entry: dict[str, Any]) -> tuple[str, Any, tuple[int, int] | None] | None:
    """The size a record declares: ``(field, raw value, (width, height) or None if malformed)``; ``None``
    when the record declares none. Fields: ``width``/``height``, or ``size`` as ``[width, height]`` (as PIL
    reports it) or ``{"width": .., "height": ..}``."""
    if "width" in entry or "height" in entry:
        raw = [entry.get("width"), entry.get("height")]
        w, h = _pixel_count(raw[0]), _pixel_count(raw[1])
        return "width/height", raw, (w, h) if w is not None and h is not None else None
    if "size" in entry:
        raw = entry["size"]
        if isinstance(raw, dict):
            pair = [raw.get("width"), raw.get("height")]
        elif isinstance(raw, (list, tuple)) and len(raw) == 2:
            pair = list(raw)
        else:
            return "size", raw, None
        w, h = _pixel_count(pair[0]), _pixel_count(pair[1])
        return "size", raw, (w, h) if w is not None and h is not None else None
    return None


def _header_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as img:  # reads the header only
            return img.size
    except (OSError, SyntaxError):
        return None


def _is_number_list(value: Any, n: int) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == n
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def load_annotations(
    path: str | Path,
    vocab: HOIVocabulary,
    image_dir: str | Path,
    dataset_format: DatasetFormat = "hico_det",
    on_bad_record: OnBadRecord = "error",
    check_images: bool = True,
    box_tolerance: float = 1.0,
    verify_images: VerifyImages = "header",
    image_checker: ImageChecker | None = None,
) -> AnnotationSet:
    """Read and validate an annotation file.

    Args:
        path: the JSON file (``trainval_hico.json``, ``test_vcoco.json``, ...).
        vocab: the label space the ids are checked against.
        image_dir: folder holding the images named by ``file_name``.
        dataset_format: ``"hico_det"`` (object required for every HOI) or ``"vcoco"`` (``object_id = -1``
            allowed, mapped to ``vocab.no_object_index``).
        on_bad_record: ``"error"`` raises :class:`AnnotationError`; ``"skip"`` drops and counts.
        check_images: check that each image exists (and read its size from the header when the record
            has none). Without it, boxes are only checked for positive area.
        box_tolerance: pixels a box may exceed the image border (HICO-DET boxes are 1-based and may
            touch ``x2 = width``).
        verify_images: how ``check_images`` examines each file: ``"header"`` (readable, complete, and of
            the record's size), ``"full"`` (also decoded in full) or ``"none"`` (exists; its header is
            read only when the record gives no size). See :mod:`~hoiclip_lightning.data.image_check`.
        image_checker: the checker to use (it carries the cache of passed checks); ``None``: a new one at
            the ``verify_images`` level, without a cache file. Its mode is used instead of ``verify_images``.

    Returns:
        The validated records and the skip counts.
    """
    path = Path(path)
    image_dir = Path(image_dir)
    if not path.is_file():
        raise DatasetNotFoundError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path.name}: not valid JSON ({err})") from err
    if not isinstance(data, list):
        raise AnnotationError(f"{path.name}: expected a JSON list of image records, got {type(data).__name__}")
    if verify_images not in VERIFY_IMAGES:
        raise ValueError(f"verify_images {verify_images!r} is not supported; accepted: {VERIFY_IMAGES}")
    checker = image_checker
    if checker is None and check_images and verify_images != "none":
        checker = ImageChecker(verify_images)
    if dataset_format == "vcoco" and vocab.no_object_index is None:
        log.debug("vocabulary %r has no no_object_index; object_id = -1 will be rejected", vocab.name)

    chk = _Checker(path.name, on_bad_record)
    records: list[ImageRecord] = []
    for i, entry in enumerate(data):
        rec = _parse_record(i, entry, vocab, image_dir, dataset_format, chk, check_images, box_tolerance, checker)
        if rec is not None:
            records.append(rec)
    skipped = dict(sorted(chk.counts.items()))
    if skipped:
        log.warning(
            "%s: skipped %d problem(s) in %d records (%s); %d records kept",
            path.name,
            sum(skipped.values()),
            len(data),
            ", ".join(f"{k}: {v}" for k, v in skipped.items()),
            len(records),
        )
    return AnnotationSet(path=path, records=records, skipped=skipped)


def _parse_record(
    i: int,
    entry: Any,
    vocab: HOIVocabulary,
    image_dir: Path,
    dataset_format: DatasetFormat,
    chk: _Checker,
    check_images: bool,
    tol: float,
    checker: ImageChecker | None = None,
) -> ImageRecord | None:
    if not isinstance(entry, dict):
        chk.bad("malformed_record", f"record {i}", f"expected an object, got {type(entry).__name__}")
        return None
    file_name = entry.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        chk.bad("malformed_record", f"record {i}", f"file_name = {file_name!r}, expected a non-empty string")
        return None
    where = f"record {i} (file_name {file_name!r})"
    anns = entry.get("annotations")
    hoi_anns = entry.get("hoi_annotation", [])
    if not isinstance(anns, list):
        chk.bad("malformed_record", where, f"annotations = {anns!r}, expected a list")
        return None
    if not isinstance(hoi_anns, list):
        chk.bad("malformed_record", where, f"hoi_annotation = {hoi_anns!r}, expected a list")
        return None

    img_path = image_dir / file_name
    declared = _record_size(entry)
    if declared is not None and declared[2] is None:
        chk.bad("malformed_record", where, f"{declared[0]} = {declared[1]!r}, expected positive whole numbers of "
                "pixels (width, height)")
        return None
    width, height = declared[2] if declared is not None else (0, 0)  # type: ignore[misc]
    if check_images:
        if not img_path.is_file():
            chk.bad("missing_image", where, f"image file not found: {img_path}")
            return None
        if checker is not None:
            try:
                actual = checker.check(img_path)
            except ImageCheckError as err:
                chk.bad("unreadable_image", where, f"image file {img_path}: {err}")
                return None
            if declared is not None and actual != (width, height):
                chk.bad("image_size_mismatch", where,
                        f"{declared[0]} = {declared[1]!r} ({width}x{height}), but the image file {img_path} is "
                        f"{actual[0]}x{actual[1]} pixels")
                return None
            width, height = actual
        elif declared is None:
            size = _header_size(img_path)
            if size is None:
                chk.bad("unreadable_image", where, f"cannot read the image header of {img_path}")
                return None
            width, height = size

    boxes = np.zeros((len(anns), 4), dtype=np.float32)
    labels = np.full((len(anns),), -1, dtype=np.int64)
    box_ok = [False] * len(anns)
    for k, ann in enumerate(anns):
        if not isinstance(ann, dict):
            chk.bad("bad_box", where, f"annotations[{k}] = {ann!r}, expected an object")
            continue
        bbox = ann.get("bbox")
        if not _is_number_list(bbox, 4):
            chk.bad("bad_box", where, f"annotations[{k}].bbox = {bbox!r}, expected [x1, y1, x2, y2]")
            continue
        x1, y1, x2, y2 = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            chk.bad("bad_box", where, f"annotations[{k}].bbox = {bbox}, expected finite coordinates (no NaN or "
                    "infinity)")
            continue
        boxes[k] = (x1, y1, x2, y2)
        if x2 <= x1 or y2 <= y1:
            chk.bad("bad_box", where, f"annotations[{k}].bbox = {bbox}, expected x2 > x1 and y2 > y1 (positive area)")
            continue
        if width > 0 and (x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol):
            chk.bad("bad_box", where, f"annotations[{k}].bbox = {bbox} lies outside the {width}x{height} image")
            continue
        cat = ann.get("category_id")
        obj = vocab.object_index(cat) if isinstance(cat, int) else None
        if obj is None:
            chk.bad("bad_box", where, f"annotations[{k}].category_id = {cat!r} is not an object of vocabulary "
                    f"{vocab.name!r}")
            continue
        labels[k] = obj
        box_ok[k] = True

    n = len(anns)
    rows: list[tuple[int, int, int, int]] = []
    for j, h in enumerate(hoi_anns):
        hw = f"{where}: hoi_annotation[{j}]"
        if not isinstance(h, dict) or not all(isinstance(h.get(k), int) for k in ("subject_id", "object_id",
                                                                                   "category_id")):
            chk.bad("malformed_hoi", hw, f"{h!r}, expected integer subject_id, object_id and category_id")
            continue
        sub, obj_id, verb_id = h["subject_id"], h["object_id"], h["category_id"]
        if not 0 <= sub < n:
            chk.bad("hoi_box_out_of_range", where,
                    f"hoi_annotation[{j}].subject_id = {sub}, but the image has {n} annotations")
            continue
        no_object = obj_id == -1 and dataset_format == "vcoco"
        if not no_object and not 0 <= obj_id < n:
            chk.bad("hoi_box_out_of_range", where,
                    f"hoi_annotation[{j}].object_id = {obj_id}, but the image has {n} annotations")
            continue
        if not box_ok[sub] or (not no_object and not box_ok[obj_id]):
            bad_k = sub if not box_ok[sub] else obj_id
            chk.bad("hoi_uses_bad_box", where, f"hoi_annotation[{j}] uses the invalid box annotations[{bad_k}]")
            continue
        verb = vocab.verb_index(verb_id)
        if verb is None:
            chk.bad("unknown_verb", where,
                    f"hoi_annotation[{j}].category_id = {verb_id} is not a verb id of vocabulary {vocab.name!r}")
            continue
        if no_object:
            if vocab.no_object_index is None:
                chk.bad("unknown_combo", where,
                        f"hoi_annotation[{j}].object_id = -1, but vocabulary {vocab.name!r} has no no-object class")
                continue
            obj_cls = vocab.no_object_index
        else:
            obj_cls = int(labels[obj_id])
        hoi = vocab.hoi_index(verb, obj_cls)
        if hoi is None:
            chk.bad("unknown_combo", where,
                    f"hoi_annotation[{j}]: verb {vocab.verbs[verb]!r} (category_id {verb_id}) with object "
                    f"{vocab.objects[obj_cls]!r} is not an HOI class of vocabulary {vocab.name!r}")
            continue
        hoi_cat = h.get("hoi_category_id")
        if hoi_cat is not None and hoi_cat != hoi + 1:
            chk.bad("hoi_category_mismatch", where,
                    f"hoi_annotation[{j}].hoi_category_id = {hoi_cat}, but vocabulary {vocab.name!r} numbers "
                    f"({vocab.verbs[verb]!r}, {vocab.objects[obj_cls]!r}) as {hoi + 1} (1-based)")
            continue
        rows.append((sub, -1 if no_object else obj_id, verb, hoi))

    hois = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
    return ImageRecord(i, file_name, img_path, width, height, boxes, labels, hois)


def load_verb_object_matrix(path: str | Path, vocab: HOIVocabulary) -> Tensor:
    """Read ``corre_*.npy``: ``[C_verb, C_obj]`` bool verb-object validity.

    The matrix may have ``C_obj`` columns or one fewer when the vocabulary has a no-object pseudo-class
    (V-COCO: 29x80 for 81 objects). Raises :class:`AnnotationError` if the shape does not fit the
    vocabulary; differing entries are only logged (the reference loads but never uses the matrix).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"verb-object matrix not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise AnnotationError(f"{path.name}: cannot read the numpy array ({err})") from err
    ok_cols = {vocab.num_objects} | ({vocab.num_objects - 1} if vocab.no_object_index is not None else set())
    if arr.ndim != 2 or arr.shape[0] != vocab.num_verbs or arr.shape[1] not in ok_cols:
        raise AnnotationError(
            f"{path.name}: shape {tuple(arr.shape)} does not match vocabulary {vocab.name!r}: expected "
            f"({vocab.num_verbs}, {vocab.num_objects}) = (verbs, objects)"
        )
    mat = torch.zeros(vocab.num_verbs, vocab.num_objects, dtype=torch.bool)
    mat[:, : arr.shape[1]] = torch.from_numpy(arr != 0)
    expected = vocab.verb_object_matrix()
    n = arr.shape[1]
    diff = int((mat[:, :n] != expected[:, :n]).sum())
    if diff:
        log.info("%s: %d verb-object entries differ from vocabulary %r", path.name, diff, vocab.name)
    return mat
