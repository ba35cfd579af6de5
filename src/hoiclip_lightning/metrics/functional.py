"""Vectorised building blocks of the HOI detection metrics (NumPy, CPU).

Everything here works on flat arrays of detections and ground-truth (GT) pairs; no Python loop runs
per detection. The conventions of the two HICO-DET protocols of :class:`~.hico_det.HICODetMAP` live
here, each written down once:

* ``official`` (``ywchao/ho-rcnn`` ``VOCevaldet_bboxpair.m``): float64, detection boxes rounded half
  away from zero (:func:`round_half_away`), IoU with the ``+1`` pixel convention and zero unless both
  intersection sides are positive (:func:`iou_official`), thresholds ``0:0.1:1`` as MATLAB builds them
  (:func:`matlab_thresholds`).
* ``reference`` (HOICLIP ``hico_eval_triplet.py``): float32 IoU, ``+1`` convention, zero as soon as
  ``max >= min`` on either axis (:func:`iou_reference`), thresholds ``numpy.arange(0, 1.1, 0.1)``.

Both share the matching rule implemented by :func:`greedy_match`: a detection is compared with every
GT pair of its class in its image (matched or not), picks the *first* pair with the largest overlap
``min(IoU_human, IoU_object)``, and is a true positive iff that overlap is at least the threshold and
no earlier detection picked the same pair with an overlap at least the threshold.

The metric runs that rule in two independent steps: :func:`best_box_pairs` (each detection's best
pair, which does not depend on the order) and :func:`first_claims` (each pair's earliest claimant in
ranking order, from :func:`class_score_order`, a radix sort). :func:`eleven_point_ap_from_tps` then
needs only the true positives and their ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..vocabulary import RARE_THRESHOLD

__all__ = [
    "matlab_thresholds",
    "numpy_thresholds",
    "round_half_away",
    "sortable_bits",
    "radix_lexsort",
    "class_score_order",
    "iou_official",
    "iou_reference",
    "iou_vsrl",
    "iou_vsrl32",
    "vsrl_tie_order",
    "greedy_match",
    "best_box_pairs",
    "box_area_official",
    "iou_official_columns",
    "round_half_away_f32",
    "first_claims",
    "eleven_point_ap_from_tps",
    "segment_starts",
    "eleven_point_ap",
    "segmented_eleven_point_ap",
    "voc_all_point_ap",
    "rare_hois_from_counts",
]

# Upper bound on the number of (detection, GT) pairs materialised at once by greedy_match.
_PAIR_CHUNK = 1 << 19


def matlab_thresholds() -> np.ndarray:
    """The 11 recall thresholds of MATLAB's ``0:0.1:1``.

    MATLAB's colon operator builds the lower half as ``0.1*k`` and the upper half as ``1 - 0.1*(10-k)``,
    so ``t[3] == 0.30000000000000004`` while ``t[6] == 0.6`` and ``t[7] == 0.7`` (nearest doubles).
    """
    return np.array([k * 0.1 if k < 5 else 1.0 - (10 - k) * 0.1 for k in range(11)], dtype=np.float64)


def numpy_thresholds() -> np.ndarray:
    """``numpy.arange(0, 1.1, 0.1)``: the thresholds of the reference python evaluator (and Octave)."""
    return np.arange(0.0, 1.1, 0.1)


def round_half_away(x: np.ndarray) -> np.ndarray:
    """MATLAB ``round``: to the nearest integer, halves away from zero (exact, float64)."""
    x = np.asarray(x, dtype=np.float64)
    r = np.rint(x)  # halves to even; x - r is exact, so the halves are found exactly and pushed away from 0
    tie = np.abs(x - r) == 0.5
    r[tie] = x[tie] + np.copysign(0.5, x[tie])
    return r


def sortable_bits(x: np.ndarray) -> np.ndarray | None:
    """Unsigned integers ordered exactly as the float values ``x``; None when ``x`` holds a NaN.

    ``-0.0`` is mapped with ``+0.0`` (they compare equal). float64 values that are all exact float32 numbers
    give ``uint32`` (half the radix passes of :func:`radix_lexsort`), others ``uint64``.
    """
    x = np.asarray(x)
    if x.dtype != np.float64 and x.dtype != np.float32:
        x = x.astype(np.float64)
    if x.dtype == np.float64:
        with np.errstate(over="ignore"):
            x32 = x.astype(np.float32)
        if np.array_equal(x32, x):  # False as soon as there is a NaN
            x = x32
    if np.isnan(x).any():
        return None
    x = x + x.dtype.type(0.0)  # -0.0 -> +0.0
    utype = np.uint32 if x.dtype == np.float32 else np.uint64
    u = x.view(utype)
    sign = utype(1) << utype(8 * u.itemsize - 1)
    # negative floats: all bits flipped (larger magnitude -> smaller key); others: sign bit set
    return np.where(u & sign, ~u, u | sign)


def radix_lexsort(keys: Sequence[np.ndarray]) -> np.ndarray:
    """Stable permutation sorting by ``keys[0]``, then ``keys[1]``, ... (non-negative integer arrays).

    The same permutation as ``np.lexsort(keys[::-1])``, computed as least-significant-digit radix passes
    over 16-bit digits with NumPy's stable ``uint16`` sort (a counting sort); digits that are equal
    for every element are skipped.
    """
    digits = []  # least significant first; digits equal for every element are left out
    for key in reversed(keys):
        key = np.asarray(key)
        if key.dtype.kind == "i":
            if key.size and key.min() < 0:
                raise ValueError("radix_lexsort needs non-negative keys")
            key = key.astype(np.uint64)
        top = int(key.max()) if key.size else 0
        for shift in range(0, max(top.bit_length(), 1), 16):
            digit = (key >> key.dtype.type(shift)).astype(np.uint16)  # keeps the low 16 bits
            if digit.size and digit.min() != digit.max():
                digits.append(digit)
    order: np.ndarray | None = None
    for digit in digits:
        if order is None:
            order = np.argsort(digit, kind="stable")
        else:
            order = order[np.argsort(digit[order], kind="stable")]
    n = np.asarray(keys[0]).size if len(keys) else 0
    return np.arange(n, dtype=np.int64) if order is None else order


def class_score_order(classes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Stable permutation by ascending class, then descending score (ties keep their input order).

    The same permutation as ``np.lexsort((-scores, classes))``: a few radix passes (see
    :func:`radix_lexsort`) instead of a comparison sort, unless a score is NaN.
    """
    classes = np.asarray(classes)
    bits = sortable_bits(scores)
    if bits is None or (classes.size and classes.min() < 0):
        o1 = np.argsort(-np.asarray(scores), kind="stable")
        c = classes[o1]
        if c.size and c.min() >= 0 and c.max() < 2**15:
            c = c.astype(np.int16)  # NumPy's stable sort is a radix sort for 16-bit integers
        return o1[np.argsort(c, kind="stable")]
    return radix_lexsort([classes, ~bits])  # ~bits: descending score


def iou_official(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of ``[N, 4]`` xyxy boxes as ``VOCevaldet_bboxpair.m`` computes it (float64).

    ``iw = min(x2) - max(x1) + 1`` (same for ``ih``); IoU is 0 unless ``iw > 0`` and ``ih > 0``; union
    ``= (area_a + area_b) - iw * ih`` with ``area = (x2 - x1 + 1) * (y2 - y1 + 1)``; ``a`` is the detection.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    iw = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1.0
    ih = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1.0
    inter = iw * ih
    ua = (a[:, 2] - a[:, 0] + 1.0) * (a[:, 3] - a[:, 1] + 1.0) + (b[:, 2] - b[:, 0] + 1.0) * (
        b[:, 3] - b[:, 1] + 1.0
    ) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        ov = inter / ua
    return np.where((iw > 0) & (ih > 0), ov, 0.0)


def iou_reference(gt: np.ndarray, det: np.ndarray) -> np.ndarray:
    """Row-wise IoU as the reference's ``compute_IOU`` computes it: float32 throughout.

    ``area = (x2 - x1 + 1) * (y2 - y1 + 1)``; IoU is 0 as soon as ``max(y1) >= min(y2)`` or
    ``max(x1) >= min(x2)``; otherwise ``inter = (min(y2) - max(y1) + 1) * (min(x2) - max(x1) + 1)`` and
    ``IoU = inter / ((area_gt + area_det) - inter)``.
    """
    g = np.asarray(gt, dtype=np.float32)
    d = np.asarray(det, dtype=np.float32)
    one = np.float32(1.0)
    s1 = (g[:, 2] - g[:, 0] + one) * (g[:, 3] - g[:, 1] + one)
    s2 = (d[:, 2] - d[:, 0] + one) * (d[:, 3] - d[:, 1] + one)
    sum_area = s1 + s2
    left = np.maximum(g[:, 1], d[:, 1])
    right = np.minimum(g[:, 3], d[:, 3])
    top = np.maximum(g[:, 0], d[:, 0])
    bottom = np.minimum(g[:, 2], d[:, 2])
    inter = (right - left + one) * (bottom - top + one)
    with np.errstate(divide="ignore", invalid="ignore"):
        ov = inter / (sum_area - inter)
    return np.where((left >= right) | (top >= bottom), np.float32(0.0), ov).astype(np.float32)


def iou_vsrl(boxes: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Row-wise IoU as ``get_overlap`` of ``s-gupta/v-coco`` ``vsrl_eval.py`` (float64).

    ``iw = max(min(x2) - max(x1) + 1, 0)`` (same for ``ih``), union ``= area_ref + area_box - inter``.
    NaN coordinates propagate (a NaN overlap is never ``>=`` a threshold).
    """
    b = np.asarray(boxes, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    iw = np.maximum(np.minimum(b[:, 2], r[:, 2]) - np.maximum(b[:, 0], r[:, 0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(b[:, 3], r[:, 3]) - np.maximum(b[:, 1], r[:, 1]) + 1.0, 0.0)
    inter = iw * ih
    uni = (r[:, 2] - r[:, 0] + 1.0) * (r[:, 3] - r[:, 1] + 1.0) + (b[:, 2] - b[:, 0] + 1.0) * (
        b[:, 3] - b[:, 1] + 1.0
    ) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / uni


def iou_vsrl32(boxes: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """:func:`iou_vsrl` in float32, as ``vsrl_eval`` computes it on its float32 arrays under NumPy >= 2.

    ``vsrl_eval`` stores GT and detection boxes in float32 arrays, and NumPy 2 keeps Python-float
    constants weak, so every step (the ``+ 1``, areas, union, division) is a float32 operation; the order
    of the operations is the same as :func:`iou_vsrl`.
    """
    b = np.asarray(boxes, dtype=np.float32)
    r = np.asarray(ref, dtype=np.float32)
    one, zero = np.float32(1.0), np.float32(0.0)
    iw = np.maximum(np.minimum(b[:, 2], r[:, 2]) - np.maximum(b[:, 0], r[:, 0]) + one, zero)
    ih = np.maximum(np.minimum(b[:, 3], r[:, 3]) - np.maximum(b[:, 1], r[:, 1]) + one, zero)
    inter = iw * ih
    uni = (r[:, 2] - r[:, 0] + one) * (r[:, 3] - r[:, 1] + one) + (b[:, 2] - b[:, 0] + one) * (
        b[:, 3] - b[:, 1] + one
    ) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / uni


def vsrl_tie_order(groups: np.ndarray, scores32: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Processing order of detections, group by group, as ``scores.argsort()[::-1]`` leaves it in each group.

    ``vsrl_eval`` ranks the detections of one image and one action-role with NumPy's default (unstable)
    ``argsort`` on their float32 scores, listed in input order, then reverses it. Exactly tied scores
    therefore come out in an order that only that call knows; this replays it.

    Args:
        groups: ``[D]`` int, any key (e.g. class and image); groups come out in ascending key order.
        scores32: ``[D]`` float32 scores.
        position: ``[D]`` input order inside a group (smaller first).

    Returns:
        ``[D]`` permutation: groups ascending, descending score inside each group, ties as vsrl_eval.
    """
    order = np.lexsort((position, -scores32.astype(np.float64), groups))
    if order.size < 2:
        return order
    g, s = groups[order], scores32[order]
    tied = (g[1:] == g[:-1]) & (s[1:] == s[:-1])
    if not tied.any():
        return order
    starts = segment_starts(g)
    ends = np.r_[starts[1:], g.size]
    has_tie = np.add.reduceat(np.r_[tied, False].astype(np.int64), starts) > 0
    for a, b in zip(starts[has_tie], ends[has_tie], strict=True):
        seg = order[a:b]
        seg = seg[np.argsort(position[seg], kind="stable")]  # as the caller listed them
        order[a:b] = seg[np.argsort(scores32[seg])[::-1]]
    return order


def segment_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of every run of equal values in a sorted 1-D array."""
    if sorted_keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def _expand_pairs(det_key: np.ndarray, gt_key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each detection, the GT rows sharing its key, in GT order (``gt_key`` must not be empty).

    Returns ``(n, first, gt_order)``: ``n[d]`` candidate count of detection ``d``; ``first[d]`` position
    in ``gt_order`` of its first candidate; ``gt_order`` stable permutation of the GT rows by key.
    """
    gt_order = np.argsort(gt_key, kind="stable")
    keys_sorted = gt_key[gt_order]
    starts = segment_starts(keys_sorted)
    ukeys = keys_sorted[starts]
    counts = np.diff(np.r_[starts, keys_sorted.size])
    pos = np.minimum(np.searchsorted(ukeys, det_key), ukeys.size - 1)
    found = ukeys[pos] == det_key
    n = np.where(found, counts[pos], 0).astype(np.int64)
    first = np.where(found, starts[pos], 0).astype(np.int64)
    return n, first, gt_order


def best_pairs(
    det_key: np.ndarray,
    gt_key: np.ndarray,
    overlap_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """For every detection, the first GT row of the same key with the largest overlap.

    ``overlap_fn(det_index, gt_index)`` returns the overlap of each (detection, GT row) pair (any float
    dtype, never NaN for the HICO rules). Returns ``(best_gt, best_overlap)``; ``best_gt`` is -1 and
    ``best_overlap`` is ``-inf`` for a detection without any GT row of its key. Pairs are materialised
    in chunks of at most ``_PAIR_CHUNK`` to bound memory.
    """
    num_det = det_key.size
    best_gt = np.full(num_det, -1, dtype=np.int64)
    best_ov = np.full(num_det, -np.inf, dtype=np.float64)
    if num_det == 0 or gt_key.size == 0:
        return best_gt, best_ov
    n, first, gt_order = _expand_pairs(det_key, gt_key)
    csum = np.cumsum(n)
    lo = 0
    while lo < num_det:
        # largest hi with pairs(lo:hi) <= chunk (at least one detection)
        base = csum[lo - 1] if lo else 0
        hi = int(np.searchsorted(csum, base + _PAIR_CHUNK, side="right"))
        hi = max(hi, lo + 1)
        nn = n[lo:hi]
        total = int(nn.sum())
        if total:
            det_rep = np.repeat(np.arange(lo, hi, dtype=np.int64), nn)
            offs = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(nn) - nn, nn)
            gt_rep = gt_order[np.repeat(first[lo:hi], nn) + offs]
            ov = np.asarray(overlap_fn(det_rep, gt_rep), dtype=np.float64)
            has = nn > 0
            seg = np.cumsum(nn)[has] - nn[has]
            seg_max = np.maximum.reduceat(ov, seg)
            is_max = ov == np.repeat(seg_max, nn[has])
            idx = np.flatnonzero(is_max)
            d = det_rep[idx]
            firsts = idx[np.r_[True, d[1:] != d[:-1]]]
            best_gt[det_rep[firsts]] = gt_rep[firsts]
            best_ov[det_rep[firsts]] = ov[firsts]
        lo = hi
    return best_gt, best_ov


# Largest key range for which _candidate_ranges looks keys up in a dense table (int32 entries).
_DENSE_KEYS = 1 << 26


def _candidate_ranges(
    det_key: np.ndarray, gt_key: np.ndarray, num_keys: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_expand_pairs`, with a dense look-up table when every key is below ``num_keys`` (small)."""
    if num_keys is None or num_keys > _DENSE_KEYS:
        return _expand_pairs(det_key, gt_key)
    gt_order = np.argsort(gt_key, kind="stable")
    keys_sorted = gt_key[gt_order]
    starts = segment_starts(keys_sorted)
    counts = np.diff(np.r_[starts, keys_sorted.size])
    # 1 + index of the key's run, 0 for none (16-bit when possible: half the pages to touch)
    table = np.zeros(num_keys, dtype=np.uint16 if starts.size < 2**16 else np.int32)
    table[keys_sorted[starts]] = np.arange(1, starts.size + 1)
    run = table[det_key].astype(np.int64) - 1
    found = run >= 0
    n = np.where(found, counts[run], 0)
    first = np.where(found, starts[run], 0)
    return n, first, gt_order


def best_box_pairs(
    det_key: np.ndarray,
    gt_key: np.ndarray,
    det_columns: Callable[[np.ndarray], Sequence[np.ndarray]],
    gt_columns: Sequence[np.ndarray],
    overlap: Callable[[list[np.ndarray], list[np.ndarray]], np.ndarray],
    num_keys: int | None = None,
    chunk: int = 1 << 15,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`best_pairs` for box pairs, each detection's values prepared once, column by column.

    Args:
        det_key, gt_key: ``[D]`` and ``[G]`` non-negative int keys; pairs are compared within a key.
        det_columns: ``det_columns(index)`` gives W ``[len(index)]`` arrays for those detections (box
            coordinates, converted and rounded, maybe areas); called once, with the detections that share
            a key with some GT row.
        gt_columns: the same W columns for the GT rows (``[G]`` each).
        overlap: ``overlap(det_cols, gt_cols)``: one value per pair from the W columns of each side.
        num_keys: bound on the keys; when small enough, look-ups use a dense table.
        chunk: pairs evaluated at once (small enough for the temporaries to stay in cache).

    Returns:
        ``(best_gt, best_overlap)`` as :func:`best_pairs`: the first GT row (in GT order) with the largest
        overlap, -1 and ``-inf`` for detections without any GT row of their key.
    """
    num_det = det_key.size
    best_gt = np.full(num_det, -1, dtype=np.int64)
    best_ov = np.full(num_det, -np.inf, dtype=np.float64)
    if num_det == 0 or gt_key.size == 0:
        return best_gt, best_ov
    n, first, gt_order = _candidate_ranges(det_key, gt_key, num_keys)
    cand = np.flatnonzero(n)
    if cand.size == 0:
        return best_gt, best_ov
    n_c = n[cand]
    csum = np.cumsum(n_c)
    det_cols = list(det_columns(cand))
    gt_cols = list(gt_columns)
    lo = 0
    while lo < cand.size:
        base = csum[lo - 1] if lo else 0
        hi = max(int(np.searchsorted(csum, base + chunk, side="right")), lo + 1)
        nn = n_c[lo:hi]
        total = int(csum[hi - 1] - base)
        seg = np.cumsum(nn) - nn
        gi = gt_order[np.repeat(first[cand[lo:hi]] - seg, nn) + np.arange(total, dtype=np.int64)]
        ov = np.asarray(overlap([np.repeat(c[lo:hi], nn) for c in det_cols], [c[gi] for c in gt_cols]),
                        dtype=np.float64)
        seg_max = np.maximum.reduceat(ov, seg)
        hit = np.flatnonzero(ov == np.repeat(seg_max, nn))
        owner = np.repeat(np.arange(lo, hi), nn)[hit]
        firsts = np.r_[True, owner[1:] != owner[:-1]]
        best_gt[cand[owner[firsts]]] = gi[hit[firsts]]
        best_ov[cand[owner[firsts]]] = ov[hit[firsts]]
        lo = hi
    return best_gt, best_ov


def round_half_away_f32(x: np.ndarray) -> np.ndarray:
    """:func:`round_half_away` for values that are exact float32 numbers (any float dtype), in float64.

    ``floor(|x| + 0.5)`` with the sign of ``x``: for a float32 value the sum is exact in float64 whenever
    it reaches 1, and below 1 the floor is 0 either way, so this equals :func:`round_half_away`
    (signed zeros included), with fewer passes.
    """
    x = np.asarray(x, dtype=np.float64)
    r = np.abs(x)
    r += 0.5
    np.floor(r, out=r)
    return np.copysign(r, x, out=r)


def box_area_official(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> np.ndarray:
    """``(x2 - x1 + 1) * (y2 - y1 + 1)`` (float64 columns): the area term of :func:`iou_official`."""
    w = x2 - x1
    w += 1.0
    h = y2 - y1
    h += 1.0
    w *= h
    return w


def iou_official_columns(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`iou_official` of column-wise boxes ``(x1, y1, x2, y2, area)``: the same bits.

    ``area`` is :func:`box_area_official` of the box; the union is ``(area_a + area_b) - inter`` in both,
    so computing each box's area once instead of once per pair changes nothing.
    """
    ax1, ay1, ax2, ay2, area_a = a
    bx1, by1, bx2, by2, area_b = b
    iw = np.minimum(ax2, bx2)
    iw -= np.maximum(ax1, bx1)
    iw += 1.0
    ih = np.minimum(ay2, by2)
    ih -= np.maximum(ay1, by1)
    ih += 1.0
    inter = iw * ih
    union = area_a + area_b
    union -= inter
    with np.errstate(divide="ignore", invalid="ignore"):
        inter /= union
    inter[~((iw > 0) & (ih > 0))] = 0.0
    return inter


def claim(best_gt: np.ndarray, is_candidate: np.ndarray) -> np.ndarray:
    """True positives: among candidates, the first (in array order) to pick each GT row."""
    tp = np.zeros(best_gt.size, dtype=bool)
    cand = np.flatnonzero(is_candidate)
    if cand.size:
        _, first = np.unique(best_gt[cand], return_index=True)
        tp[cand[first]] = True
    return tp


def greedy_match(
    det_image: np.ndarray,
    det_class: np.ndarray,
    det_boxes: np.ndarray,
    gt_image: np.ndarray,
    gt_class: np.ndarray,
    gt_boxes: np.ndarray,
    iou: Callable[[np.ndarray, np.ndarray], np.ndarray],
    iou_threshold: float = 0.5,
    det_is_first_arg: bool = True,
) -> np.ndarray:
    """HICO-DET true/false positive flags of detections given in processing order.

    Args:
        det_image, det_class: ``[D]`` int image index and HOI class per detection. Detections must be in
            processing order (descending score within each class; any interleaving of classes).
        det_boxes: ``[D, 8]`` human xyxy then object xyxy.
        gt_image, gt_class, gt_boxes: the same for the GT pairs, in annotation order.
        iou: row-wise IoU function of two ``[N, 4]`` arrays.
        det_is_first_arg: whether ``iou`` takes the detection first (official) or the GT first (reference).

    Returns:
        ``[D]`` bool, True for true positives.
    """
    det_image = np.asarray(det_image, dtype=np.int64)
    gt_image = np.asarray(gt_image, dtype=np.int64)
    n_img = int(max(det_image.max(initial=-1), gt_image.max(initial=-1))) + 1
    det_key = np.asarray(det_class, dtype=np.int64) * n_img + det_image
    gt_key = np.asarray(gt_class, dtype=np.int64) * n_img + gt_image

    def overlap(di: np.ndarray, gi: np.ndarray) -> np.ndarray:
        d = det_boxes[di]
        g = gt_boxes[gi]
        if det_is_first_arg:
            return np.minimum(iou(d[:, :4], g[:, :4]), iou(d[:, 4:], g[:, 4:]))
        return np.minimum(iou(g[:, :4], d[:, :4]), iou(g[:, 4:], d[:, 4:]))

    best_gt, best_ov = best_pairs(det_key, gt_key, overlap)
    return claim(best_gt, (best_gt >= 0) & (best_ov >= iou_threshold))


def first_claims(gt_index: np.ndarray, position: np.ndarray, num_gt: int) -> np.ndarray:
    """Positions of the true positives: for each GT row, the smallest ``position`` that claims it.

    Args:
        gt_index: ``[Q]`` GT row picked by each qualifying detection (best overlap at least the threshold).
        position: ``[Q]`` distinct processing positions of those detections.
        num_gt: number of GT rows.

    Returns:
        Sorted positions of the winning detections (at most one per GT row).
    """
    if gt_index.size == 0:
        return np.zeros(0, dtype=np.int64)
    sentinel = np.iinfo(np.int64).max
    first = np.full(num_gt, sentinel, dtype=np.int64)
    np.minimum.at(first, gt_index, position.astype(np.int64, copy=False))
    return np.sort(first[first != sentinel])


def eleven_point_ap_from_tps(
    tp_class: np.ndarray, tp_rank: np.ndarray, npos: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """11-point AP of every class from its true positives alone; equals :func:`segmented_eleven_point_ap`.

    Between two true positives precision only falls and recall stays, so the largest precision at
    recall ``>= t`` is always reached at a true positive (a class without any has AP 0). Same arithmetic,
    in the same order, as :func:`segmented_eleven_point_ap`, hence the same bits.

    Args:
        tp_class: ``[T]`` class of each true positive, ascending.
        tp_rank: ``[T]`` 1-based rank of each true positive among its class's ranked detections,
            ascending within each class.
        npos: ``[C]`` number of GT pairs per class.
        thresholds: the 11 recall thresholds.

    Returns:
        ``[C]`` float64 AP.
    """
    ap = np.zeros(npos.size, dtype=np.float64)
    if tp_class.size == 0:
        return ap
    starts = segment_starts(tp_class)
    lengths = np.diff(np.r_[starts, tp_class.size])
    tp_cum = np.arange(tp_class.size, dtype=np.int64) - np.repeat(starts, lengths) + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = tp_cum / npos[tp_class].astype(np.float64)
    prec = tp_cum / np.asarray(tp_rank, dtype=np.int64).astype(np.float64)
    acc = np.zeros(starts.size, dtype=np.float64)
    for t in thresholds:
        p = np.maximum.reduceat(np.where(rec >= t, prec, -1.0), starts)
        acc = acc + np.where(p >= 0.0, p, 0.0) / 11.0
    ap[tp_class[starts]] = acc
    return ap


def eleven_point_ap(rec: np.ndarray, prec: np.ndarray, thresholds: np.ndarray) -> float:
    """11-point interpolated AP of one class: ``sum_t max(prec[rec >= t]) / 11`` (0 where empty)."""
    ap = 0.0
    for t in thresholds:
        m = rec >= t
        p = float(prec[m].max()) if m.any() else 0.0
        ap = ap + p / 11.0
    return ap


def segmented_eleven_point_ap(
    det_class: np.ndarray,
    tp: np.ndarray,
    npos: np.ndarray,
    thresholds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """11-point AP of every class at once.

    Args:
        det_class: ``[D]`` class per detection, grouped (each class contiguous), ranking order inside.
        tp: ``[D]`` bool true-positive flags in the same order.
        npos: ``[C]`` number of GT pairs per class.
        thresholds: the 11 recall thresholds.

    Returns:
        ``(ap, has_det)``: ``[C]`` float64 AP (0 for classes without detection; NaN-free even when
        ``npos`` is 0, where the recall is NaN and the AP 0, as in MATLAB) and ``[C]`` bool.
    """
    num_classes = npos.size
    ap = np.zeros(num_classes, dtype=np.float64)
    has_det = np.zeros(num_classes, dtype=bool)
    if det_class.size == 0:
        return ap, has_det
    starts = segment_starts(det_class)
    seg_cls = det_class[starts]
    lengths = np.diff(np.r_[starts, det_class.size])
    has_det[seg_cls] = True
    tp_i = tp.astype(np.int64)
    tp_cum = np.cumsum(tp_i)
    tp_cum -= np.repeat(tp_cum[starts] - tp_i[starts], lengths)
    rank = np.arange(det_class.size, dtype=np.int64) - np.repeat(starts, lengths) + 1  # = tp + fp
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = tp_cum / npos[det_class].astype(np.float64)
    prec = tp_cum / rank.astype(np.float64)
    acc = np.zeros(seg_cls.size, dtype=np.float64)
    for t in thresholds:
        vals = np.where(rec >= t, prec, -1.0)
        p = np.maximum.reduceat(vals, starts)
        acc = acc + np.where(p >= 0.0, p, 0.0) / 11.0
    ap[seg_cls] = acc
    return ap, has_det


def voc_all_point_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    """All-point (VOC 2010+) AP as ``voc_ap`` of ``vsrl_eval.py``: area under the monotone precision."""
    mrec = np.concatenate(([0.0], np.asarray(rec, dtype=np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(prec, dtype=np.float64), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def rare_hois_from_counts(hoi_labels: Iterable[int], num_hois: int, threshold: int = RARE_THRESHOLD) -> list[int]:
    """HOI classes with fewer than ``threshold`` occurrences among training annotations.

    Pass every HOI annotation of the training file in use (before any filtering) to get the rare split
    the reference evaluator computes, also for fractional training files.
    """
    counts = np.bincount(np.fromiter((int(h) for h in hoi_labels), dtype=np.int64), minlength=num_hois)
    return [int(c) for c in np.flatnonzero(counts[:num_hois] < threshold)]


def deduplicate_images(
    occurrences: np.ndarray, det_rows: np.ndarray, gt_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Keep one occurrence per image id and order everything by ascending image id.

    Args:
        occurrences: ``[B, 3]`` ``(image_id, n_det, n_gt)`` per image occurrence, in update order
            (after a DDP gather: rank 0's occurrences, then rank 1's, ...).
        det_rows, gt_rows: ``[sum n_det, *]`` and ``[sum n_gt, *]`` rows in the same order.

    Returns:
        ``(image_ids, det_rows, det_image, gt_rows, gt_image, num_duplicates)``: sorted unique image ids;
        detection rows of the first occurrence of each image, grouped by image in ascending id order
        (order inside an image kept); their compact image index (into ``image_ids``); the same for GT.
    """
    ids = occurrences[:, 0].astype(np.int64)
    n_det = occurrences[:, 1].astype(np.int64)
    n_gt = occurrences[:, 2].astype(np.int64)
    image_ids, first = np.unique(ids, return_index=True)
    keep = np.zeros(ids.size, dtype=bool)
    keep[first] = True
    compact = np.searchsorted(image_ids, ids)
    out = []
    for rows, counts in ((det_rows, n_det), (gt_rows, n_gt)):
        img = np.repeat(compact, counts)
        if not keep.all():
            row_keep = np.repeat(keep, counts)
            rows, img = rows[row_keep], img[row_keep]
        if img.size and (np.diff(img) < 0).any():
            order = np.argsort(img, kind="stable")
            rows, img = rows[order], img[order]
        out.append((rows, img))
    (dr, di), (gr, gi) = out
    return image_ids, dr, di, gr, gi, int(ids.size - image_ids.size)


def deduplicated_rows(occurrences: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray,
                                                       np.ndarray | None, np.ndarray, int]:
    """:func:`deduplicate_images` as row selections, for states kept column by column.

    Returns:
        ``(image_ids, det_take, det_image, gt_take, gt_image, num_duplicates)``: ``*_take`` are the
        indices of the kept rows in their new order (None when every row stays in place) and
        ``*_image`` their compact image index; the rest as :func:`deduplicate_images`.
    """
    ids = occurrences[:, 0].astype(np.int64)
    image_ids, first = np.unique(ids, return_index=True)
    compact = np.searchsorted(image_ids, ids)
    keep = np.zeros(ids.size, dtype=bool)
    keep[first] = True
    in_place = bool(keep.all()) and not bool((np.diff(compact) < 0).any())
    out: list[np.ndarray | None] = []
    for counts in (occurrences[:, 1].astype(np.int64), occurrences[:, 2].astype(np.int64)):
        if in_place:
            out += [None, np.repeat(compact, counts)]
            continue
        # occurrences to keep, by ascending image id (one per id), then their rows in stored order
        occ = np.flatnonzero(keep)
        occ = occ[np.argsort(compact[occ], kind="stable")]
        starts = np.cumsum(counts) - counts
        n = counts[occ]
        take = np.repeat(starts[occ] - (np.cumsum(n) - n), n) + np.arange(int(n.sum()), dtype=np.int64)
        out += [take, np.repeat(compact[occ], n)]
    det_take, det_img, gt_take, gt_img = out
    assert det_img is not None and gt_img is not None
    return image_ids, det_take, det_img, gt_take, gt_img, int(ids.size - image_ids.size)


def masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``values[mask]``, NaN when the mask selects nothing."""
    sel = values[mask]
    return float(sel.mean()) if sel.size else float("nan")
