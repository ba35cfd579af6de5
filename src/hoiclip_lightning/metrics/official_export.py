"""Write HICO-DET detections in the layout the official MATLAB evaluation reads.

Format (the ``all_boxes`` files of ``ywchao/ho-rcnn``, as ``evaluation/eval_one.m`` loads them; this is
what PPDM's ``Generate_detection.m`` builds from the per-object files that HOICLIP's
``tools/covert_annot_for_official_eval.py`` dumps):

* one file ``detections_XX.mat`` per object category, ``XX`` = 1-based object number, two digits
  (``detections_01.mat`` ... ``detections_80.mat`` for HICO-DET). Object categories are the runs of
  consecutive HOI classes that share an object in the HOI order (HICO-DET's official HOI list is sorted
  by object name, so run ``k`` is the ``k``-th object of the official, alphabetical object list);
* each file holds one variable ``all_boxes``: a MATLAB cell array ``[n_hoi_of_object, num_images]``;
  cell ``{i, j}`` (1-based in MATLAB) holds the detections of the object's ``i``-th HOI class in test
  image ``j`` (position in the official, file-name-sorted test list) as a double ``N x 9`` matrix
  ``[hx1 hy1 hx2 hy2 ox1 oy1 ox2 oy2 score]``, rows by descending score, empty ``0 x 9`` when none;
* boxes are 0-based pixels rounded half away from zero (``Generate_detection.m``'s ``round``);
  ``eval_one.m`` adds the ``+1`` itself. Pass ``round_boxes=False`` to keep the raw floats;
* at most ``max_per_class`` (19,999) highest-scoring detections per HOI class over the test set.

Scores are written as given (the official code only ranks them; HOICLIP's converter multiplies them by
1000, which does not change any ranking).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import ConfigurationError
from .functional import class_score_order, round_half_away, segment_starts

logger = logging.getLogger(__name__)

__all__ = ["object_groups", "write_official_detections"]


def object_groups(hoi_to_object: np.ndarray) -> list[tuple[int, int]]:
    """``(first_hoi, stop_hoi)`` of each run of consecutive HOI classes with the same object.

    Raises:
        ConfigurationError: an object's HOI classes are not contiguous (not the official HOI order).
    """
    h2o = np.asarray(hoi_to_object, dtype=np.int64).reshape(-1)
    starts = segment_starts(h2o)
    stops = np.r_[starts[1:], h2o.size]
    objs = h2o[starts]
    if np.unique(objs).size != objs.size:
        raise ConfigurationError(
            "the HOI classes of each object must be contiguous (the official HICO-DET HOI order) to write "
            "per-object detection files"
        )
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def write_official_detections(
    directory: str | Path,
    image_ids: np.ndarray,
    hoi_labels: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    hoi_to_object: np.ndarray,
    image_index: Mapping[int, int] | None = None,
    num_images: int | None = None,
    max_per_class: int | None = 19999,
    round_boxes: bool = True,
) -> list[Path]:
    """Write ``detections_XX.mat`` files (format in the module docstring).

    Args:
        directory: output folder (created).
        image_ids: ``[D]`` image id per detection.
        hoi_labels: ``[D]`` HOI class (0-based, official order).
        boxes: ``[D, 8]`` human then object xyxy pixels of the original image.
        scores: ``[D]``.
        hoi_to_object: ``[C_hoi]`` object index of each HOI class (defines the per-object files).
        image_index: image id -> 0-based column (position in the official test list); default: the id.
        num_images: number of columns; default: largest column + 1 (9,658 for the HICO-DET test set).
        max_per_class: cap per HOI class (None: no cap).
        round_boxes: round boxes half away from zero as ``Generate_detection.m`` does.

    Returns:
        The written paths.
    """
    from scipy.io import savemat

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    image_ids = np.asarray(image_ids, dtype=np.int64)
    hoi = np.asarray(hoi_labels, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 8)
    scores = np.asarray(scores, dtype=np.float64)
    if image_index is None:
        cols = image_ids
    else:
        try:
            cols = np.fromiter((image_index[int(i)] for i in image_ids), dtype=np.int64, count=image_ids.size)
        except KeyError as err:
            raise ConfigurationError(f"image id {err.args[0]} is missing from image_index") from None
    if num_images is None:
        num_images = int(cols.max(initial=-1)) + 1
    if cols.size and (cols.min() < 0 or cols.max() >= num_images):
        raise ConfigurationError(f"image columns must be in 0..{num_images - 1}")
    order = class_score_order(hoi, scores)
    hoi, cols, boxes, scores = hoi[order], cols[order], boxes[order], scores[order]
    if max_per_class is not None and hoi.size:
        st = segment_starts(hoi)
        rank = np.arange(hoi.size) - np.repeat(st, np.diff(np.r_[st, hoi.size]))
        keep = rank < max_per_class
        hoi, cols, boxes, scores = hoi[keep], cols[keep], boxes[keep], scores[keep]
    if round_boxes:
        boxes = round_half_away(boxes)
    rows = np.concatenate([boxes, scores[:, None]], axis=1)
    # cells: group by (class, column), keeping descending score inside each cell
    cell_order = np.lexsort((cols, hoi))  # stable, so the score order survives inside a cell
    hoi_c, cols_c, rows_c = hoi[cell_order], cols[cell_order], rows[cell_order]
    key = hoi_c * num_images + cols_c
    cst = segment_starts(key)
    cend = np.r_[cst[1:], key.size]
    written = []
    ptr = 0
    for k, (first, stop) in enumerate(object_groups(hoi_to_object), start=1):
        cells = np.empty((stop - first, num_images), dtype=object)
        for i in range(stop - first):
            for j in range(num_images):
                cells[i, j] = np.zeros((0, 9))
        while ptr < cst.size and hoi_c[cst[ptr]] < stop:
            s, e = cst[ptr], cend[ptr]
            cells[hoi_c[s] - first, cols_c[s]] = rows_c[s:e]
            ptr += 1
        path = directory / f"detections_{k:02d}.mat"
        savemat(str(path), {"all_boxes": cells})
        written.append(path)
    logger.info("wrote %d official detection files to %s", len(written), directory)
    return written
