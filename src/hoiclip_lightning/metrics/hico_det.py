"""HICO-DET mAP as a torchmetrics ``Metric``: official (ho-rcnn) and reference (HOICLIP python) protocols.

Coordinate convention
---------------------
Predictions are xyxy float pixels of the original image. Ground truth (:class:`HOIGroundTruth`) is taken
as written in the PPDM-style JSON annotation files, i.e. 0-based pixels (the official ``anno_bbox.mat``
values minus one). The official tool compares ``round(det) + 1`` with the 1-based GT; we compare
``round(det) + 1`` with ``GT + 1``. Both sides are shifted by the same amount and every IoU term is a
difference of coordinates, so this is computed as ``IoU(round(det), GT)`` and is bit-identical to the
official computation (all values are small integers, exact in float64). The reference protocol uses the
boxes as they are (no rounding, no shift), as the reference evaluator does.

Protocols (see ``docs`` of :class:`HICODetMAP` and :mod:`.functional` for the per-rule details)
---------------------------------------------------------------------------------------------
``official``: 11-point AP with MATLAB's ``0:0.1:1`` thresholds, at most 19,999 detections per class,
rounded boxes, float64 ``+1`` IoU, stable descending-score ranking; Known-Object mode.
``reference``: HOICLIP's ``hico_eval_triplet.py``: float32 IoU, ``numpy.arange`` thresholds, per-image
top 100, classes without GT ignored, a class with GT but no detection counts 0 in Full and is left out of
Rare / Non-rare (and Seen / Unseen); the final per-class ranking uses NumPy's default ``argsort`` on the
float32 scores laid out image by image (ascending image id), as the reference does, so ties fall the same.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from ..errors import ConfigurationError
from ..structures import HOIGroundTruth, HOIPrediction
from ..vocabulary import HOIVocabulary
from . import functional as F

logger = logging.getLogger(__name__)

PROTOCOLS = ("official", "reference")
_DET_W = 10  # 8 box coordinates, score, HOI class
_GT_W = 9  # 8 box coordinates, HOI class


def _check_class_list(name: str, values: Iterable[int] | None, num: int) -> list[int] | None:
    if values is None:
        return None
    out = [int(v) for v in values]
    bad = [v for v in out if not 0 <= v < num]
    if bad:
        raise ConfigurationError(f"{name} contains class ids outside the accepted range 0..{num - 1}: {bad[:5]}")
    return out


def state_array(state: list[Tensor] | Tensor, width: int) -> np.ndarray:
    """A list state (or its synced, concatenated tensor) as a float64 ``[N, width]`` array."""
    t = dim_zero_cat(state) if isinstance(state, list) else state
    return t.detach().cpu().numpy().astype(np.float64, copy=False).reshape(-1, width)


def _np(tensors: list[Tensor], width: int) -> np.ndarray:
    return torch.cat([t.detach().reshape(-1, width) for t in tensors]).cpu().numpy().astype(np.float64)


def check_paired(preds: Sequence[HOIPrediction], targets: Sequence[HOIGroundTruth]) -> bool:
    """Raise ``ValueError`` unless predictions and targets pair up image by image; False when both are empty."""
    if len(preds) != len(targets):
        raise ValueError(f"update got {len(preds)} predictions but {len(targets)} targets")
    for p, t in zip(preds, targets, strict=True):
        if int(p.image_id) != int(t.image_id):
            raise ValueError(f"prediction for image {p.image_id} is paired with the target of image {t.image_id}")
    return bool(preds)


def pack_predictions(preds: Sequence[HOIPrediction], topk: int | None, device: torch.device,
                     label_field: str = "hoi_labels", extra_field: str | None = None,
                     with_position: bool = False) -> tuple[Tensor, Tensor]:
    """Rows ``(8 box, score, label[, extra][, position])`` of a batch, per image descending score (stable), top-k.

    ``position`` (with ``with_position``) is the row's index in its image's prediction as given, so that a
    metric can replay the order in which the caller listed tied detections.

    Returns ``(rows [sum K_i * W], counts [B])`` on ``device`` (rows flattened to 1-D, float64). The work is
    done in NumPy: tiny tensors gain nothing from torch's thread pool and lose a lot on a busy machine.
    """
    counts = np.array([len(p) for p in preds], dtype=np.int64)
    if int(counts.sum()) == 0:
        return torch.zeros(0, dtype=torch.float64, device=device), torch.from_numpy(counts).to(device)
    cols = [
        _np([p.sub_boxes for p in preds], 4),
        _np([p.obj_boxes for p in preds], 4),
        _np([p.scores for p in preds], 1),
        _np([getattr(p, label_field) for p in preds], 1),
    ]
    if extra_field is not None:
        cols.append(_np([getattr(p, extra_field) for p in preds], 1))
    img = np.repeat(np.arange(len(preds)), counts)
    if with_position:
        starts = np.cumsum(counts) - counts
        cols.append((np.arange(img.size) - np.repeat(starts, counts)).astype(np.float64)[:, None])
    rows = np.concatenate(cols, axis=1)
    order = np.lexsort((-rows[:, 8], img))  # by image, then descending score, ties in input order
    rows = rows[order]
    if topk is not None and (counts > topk).any():
        starts = np.cumsum(counts) - counts
        rank = np.arange(rows.shape[0]) - np.repeat(starts, counts)
        rows = rows[rank < topk]
        counts = np.minimum(counts, topk)
    return torch.from_numpy(rows.reshape(-1)).to(device), torch.from_numpy(counts).to(device)


class HICODetMAP(Metric):
    """HICO-DET mean average precision (Default and Known-Object; Full, Rare, Non-rare; Seen, Unseen).

    Examples:
        >>> vocab = HOIVocabulary.builtin("hico_det")
        >>> metric = HICODetMAP(vocab)  # official protocol, rare split and HOI objects from the vocabulary
        >>> metric.update(preds, targets)  # lists of HOIPrediction / HOIGroundTruth, one per image
        >>> metric.compute()["mAP_full"]  # percent

    Args:
        num_hois: number of HOI classes, or a vocabulary (then ``rare_hois`` and ``hoi_to_object``
            default to the vocabulary's).
        protocol: ``"official"`` (ho-rcnn MATLAB evaluation, the paper figures) or ``"reference"``
            (HOICLIP's in-repo python evaluator).
        rare_hois: rare classes (fewer than 10 training instances); ``None`` = no Rare/Non-rare keys.
            For the reference rule on a fractional training file, build it with
            :func:`~.functional.rare_hois_from_counts`.
        unseen_hois: unseen classes of a zero-shot split; adds ``mAP_seen`` / ``mAP_unseen``.
        hoi_to_object: object index of each HOI class; enables Known-Object mode (official protocol).
        known_object_images: optional explicit Known-Object image sets: object index -> image ids that are
            "labelled positive" for that object. Default: images whose GT has a pair with that object.
        max_detections_per_class: cap per HOI class over the test set (``"auto"``: 19,999 official,
            none reference; ``None``: no cap).
        per_image_topk: keep the best k triplets of each image (``"auto"``: 100 reference, none official,
            whose input, HOICLIP's ``results.json``, already holds the top 100 after NMS; ``None``: all).
        iou_threshold: minimum ``min(IoU_human, IoU_object)`` of a true positive.
        matlab_thresholds: recall thresholds as MATLAB's ``0:0.1:1`` (True) or NumPy's
            ``arange(0, 1.1, 0.1)`` (False); ``"auto"``: True official, False reference. False under the
            official protocol reproduces a GNU Octave run of the official code.

    ``compute()`` returns percent values (0-100) as float64 tensors: ``mAP_full``, ``ap_per_class``
    (``[C_hoi]``, NaN for classes without GT), and where they apply ``mAP_rare``, ``mAP_non_rare``,
    ``mAP_seen``, ``mAP_unseen``, and the Known-Object versions ``*_ko`` (official protocol with
    ``hoi_to_object``). Mean APs average over classes that have GT among the evaluated images (on the
    HICO-DET test set: all 600; the MATLAB tool would count a class without GT as 0).

    DDP: states are gathered by concatenation; an image that arrives more than once (DistributedSampler
    padding) counts once (its first occurrence in gather order), so 1 and N processes give the same result.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(
        self,
        num_hois: int | HOIVocabulary = 600,
        protocol: Literal["official", "reference"] = "official",
        rare_hois: Iterable[int] | None = None,
        unseen_hois: Iterable[int] | None = None,
        hoi_to_object: Sequence[int] | Tensor | None = None,
        known_object_images: Mapping[int, Iterable[int]] | None = None,
        max_detections_per_class: int | None | Literal["auto"] = "auto",
        per_image_topk: int | None | Literal["auto"] = "auto",
        iou_threshold: float = 0.5,
        matlab_thresholds: bool | Literal["auto"] = "auto",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(num_hois, HOIVocabulary):
            vocab = num_hois
            num_hois = vocab.num_hois
            if rare_hois is None and vocab.rare_hois:
                rare_hois = vocab.rare_hois
            if hoi_to_object is None:
                hoi_to_object = vocab.hoi_to_object()
        if isinstance(num_hois, bool) or not isinstance(num_hois, int) or num_hois < 1:
            raise ConfigurationError(f"num_hois must be a positive int or an HOIVocabulary, got {num_hois!r}")
        if protocol not in PROTOCOLS:
            raise ConfigurationError(f"unknown protocol {protocol!r}; accepted: {PROTOCOLS}")
        official = protocol == "official"
        if max_detections_per_class == "auto":
            max_detections_per_class = 19999 if official else None
        if per_image_topk == "auto":
            per_image_topk = None if official else 100
        if matlab_thresholds == "auto":
            matlab_thresholds = official
        for name, val in (("max_detections_per_class", max_detections_per_class), ("per_image_topk", per_image_topk)):
            if val is not None and (isinstance(val, bool) or not isinstance(val, int) or val < 1):
                raise ConfigurationError(f"{name} must be a positive int, None or 'auto', got {val!r}")
        if not isinstance(matlab_thresholds, bool):
            raise ConfigurationError(f"matlab_thresholds must be True, False or 'auto', got {matlab_thresholds!r}")
        if not 0.0 < float(iou_threshold) <= 1.0:
            raise ConfigurationError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
        self.num_hois = num_hois
        self.protocol = protocol
        self.rare_hois = _check_class_list("rare_hois", rare_hois, num_hois)
        self.unseen_hois = _check_class_list("unseen_hois", unseen_hois, num_hois)
        if hoi_to_object is not None:
            h2o = np.asarray(torch.as_tensor(hoi_to_object).cpu(), dtype=np.int64).reshape(-1)
            if h2o.size != num_hois or (h2o < 0).any():
                raise ConfigurationError(
                    f"hoi_to_object must hold one non-negative object index per HOI class ({num_hois}), "
                    f"got {h2o.size} entries"
                )
            self.hoi_to_object: np.ndarray | None = h2o
        else:
            self.hoi_to_object = None
        if known_object_images is not None:
            if not official:
                raise ConfigurationError(
                    "known_object_images applies to the Known-Object mode, which only protocol='official' has; "
                    f"accepted protocols for it: ('official',), got {protocol!r}"
                )
            if self.hoi_to_object is None:
                raise ConfigurationError("known_object_images needs hoi_to_object (or a vocabulary)")
            known_object_images = {int(k): [int(i) for i in v] for k, v in known_object_images.items()}
        self.known_object_images = known_object_images
        self.max_detections_per_class = max_detections_per_class
        self.per_image_topk = per_image_topk
        self.iou_threshold = float(iou_threshold)
        self.matlab_thresholds = matlab_thresholds

        self.add_state("occurrences", default=[], dist_reduce_fx="cat")
        self.add_state("det_rows", default=[], dist_reduce_fx="cat")
        self.add_state("gt_rows", default=[], dist_reduce_fx="cat")

    # ------------------------------------------------------------------ update
    def update(self, preds: Sequence[HOIPrediction], targets: Sequence[HOIGroundTruth]) -> None:
        """Add a batch: one :class:`HOIPrediction` and one :class:`HOIGroundTruth` per image, same order."""
        if not check_paired(preds, targets):
            return
        dev = self.device
        det, n_det = pack_predictions(preds, self.per_image_topk, dev)
        n_gt = np.array([len(t) for t in targets], dtype=np.int64)
        if int(n_gt.sum()):
            gt = np.concatenate(
                [_np([t.sub_boxes for t in targets], 4), _np([t.obj_boxes for t in targets], 4),
                 _np([t.hoi_labels for t in targets], 1)],
                axis=1,
            )
        else:
            gt = np.zeros((0, _GT_W))
        labels = np.concatenate([gt[:, 8], det.reshape(-1, _DET_W)[:, 9].cpu().numpy()])
        if labels.size and ((labels < 0) | (labels >= self.num_hois) | (labels != np.round(labels))).any():
            raise ValueError(f"HOI labels must be integers in 0..{self.num_hois - 1}")
        ids = np.array([int(p.image_id) for p in preds], dtype=np.float64)
        occ = np.stack([ids, n_det.cpu().numpy().astype(np.float64), n_gt.astype(np.float64)], axis=1)
        self.occurrences.append(torch.from_numpy(occ.reshape(-1)).to(dev))
        self.det_rows.append(det)
        self.gt_rows.append(torch.from_numpy(gt.reshape(-1)).to(dev))

    # ------------------------------------------------------------------ gathered data
    def _gathered(self) -> dict[str, np.ndarray] | None:
        if isinstance(self.occurrences, list) and not self.occurrences:
            return None
        occ = state_array(self.occurrences, 3)
        det = state_array(self.det_rows, _DET_W)
        gt = state_array(self.gt_rows, _GT_W)
        image_ids, det, det_img, gt, gt_img, dup = F.deduplicate_images(occ, det, gt)
        if dup:
            logger.debug("HICODetMAP: %d repeated image occurrence(s) ignored (DDP padding)", dup)
        return {
            "image_ids": image_ids,
            "det_img": det_img,
            "det_boxes": det[:, :8],
            "det_score": det[:, 8],
            "det_cls": det[:, 9].astype(np.int64),
            "gt_img": gt_img,
            "gt_boxes": gt[:, :8],
            "gt_cls": gt[:, 8].astype(np.int64),
        }

    def _known_matrix(self, data: dict[str, np.ndarray]) -> np.ndarray:
        """``[num_objects, num_images]`` bool: images in which each object counts as known."""
        assert self.hoi_to_object is not None
        n_obj = int(self.hoi_to_object.max()) + 1
        n_img = data["image_ids"].size
        known = np.zeros((n_obj, n_img), dtype=bool)
        if self.known_object_images is None:
            known[self.hoi_to_object[data["gt_cls"]], data["gt_img"]] = True
        else:
            for obj, ids in self.known_object_images.items():
                if 0 <= obj < n_obj:
                    ids_a = np.asarray(ids, dtype=np.int64)
                    pos = np.searchsorted(data["image_ids"], ids_a)
                    pos = np.minimum(pos, max(n_img - 1, 0))
                    hit = data["image_ids"][pos] == ids_a if n_img else np.zeros(0, bool)
                    known[obj, pos[hit]] = True
        return known

    # ------------------------------------------------------------------ compute
    def compute(self) -> dict[str, Tensor]:
        data = self._gathered()
        c = self.num_hois
        if data is None:
            logger.warning("HICODetMAP.compute() called before any update; returning NaN")
            data = {
                "image_ids": np.zeros(0, np.int64), "det_img": np.zeros(0, np.int64),
                "det_boxes": np.zeros((0, 8)), "det_score": np.zeros(0), "det_cls": np.zeros(0, np.int64),
                "gt_img": np.zeros(0, np.int64), "gt_boxes": np.zeros((0, 8)), "gt_cls": np.zeros(0, np.int64),
            }
        npos = np.bincount(data["gt_cls"], minlength=c).astype(np.int64)
        thresholds = F.matlab_thresholds() if self.matlab_thresholds else F.numpy_thresholds()
        if self.protocol == "official":
            ap, ap_ko = self._official(data, npos, thresholds)
            # MATLAB averages every class; classes whose AP would be 0 for lack of GT are left out here.
            in_sub = npos > 0
            results = self._summaries(ap, npos > 0, in_sub, "")
            if ap_ko is not None:
                results.update(self._summaries(ap_ko, npos > 0, in_sub, "_ko"))
        else:
            ap, has_det = self._reference(data, npos, thresholds)
            results = self._summaries(ap, npos > 0, (npos > 0) & has_det, "")
        return results

    def _summaries(self, ap: np.ndarray, in_full: np.ndarray, in_sub: np.ndarray, suffix: str) -> dict[str, Tensor]:
        def t(x: float) -> Tensor:
            return torch.tensor(x * 100.0, dtype=torch.float64)

        out = {f"mAP_full{suffix}": t(F.masked_mean(ap, in_full))}
        if self.rare_hois is not None:
            rare = np.zeros(self.num_hois, dtype=bool)
            rare[self.rare_hois] = True
            out[f"mAP_rare{suffix}"] = t(F.masked_mean(ap, in_sub & rare))
            out[f"mAP_non_rare{suffix}"] = t(F.masked_mean(ap, in_sub & ~rare))
        if self.unseen_hois is not None:
            unseen = np.zeros(self.num_hois, dtype=bool)
            unseen[self.unseen_hois] = True
            out[f"mAP_seen{suffix}"] = t(F.masked_mean(ap, in_sub & ~unseen))
            out[f"mAP_unseen{suffix}"] = t(F.masked_mean(ap, in_sub & unseen))
        per_class = np.where(in_full, ap * 100.0, np.nan)
        out[f"ap_per_class{suffix}"] = torch.from_numpy(per_class)
        return out

    def _ranked_official(self, data: dict[str, np.ndarray], npos: np.ndarray) -> dict[str, np.ndarray]:
        """Detections of classes with GT, rounded, ranked per class (stable), capped per class."""
        keep = npos[data["det_cls"]] > 0
        cls = data["det_cls"][keep]
        score = data["det_score"][keep]
        order = F.class_score_order(cls, score)  # stable: ties keep (image id, within-image) order
        cls = cls[order]
        out = {
            "cls": cls,
            "img": data["det_img"][keep][order],
            "boxes": F.round_half_away(data["det_boxes"][keep][order]),
            "score": score[order],
        }
        cap = self.max_detections_per_class
        if cap is not None and cls.size:
            starts = F.segment_starts(cls)
            lengths = np.diff(np.r_[starts, cls.size])
            rank = np.arange(cls.size) - np.repeat(starts, lengths)
            sel = rank < cap
            if not sel.all():
                out = {k: v[sel] for k, v in out.items()}
        return out

    def _official(
        self, data: dict[str, np.ndarray], npos: np.ndarray, thresholds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        r = self._ranked_official(data, npos)

        def run(sel: np.ndarray | None) -> np.ndarray:
            d = r if sel is None else {k: v[sel] for k, v in r.items()}
            tp = F.greedy_match(d["img"], d["cls"], d["boxes"], data["gt_img"], data["gt_cls"], data["gt_boxes"],
                                F.iou_official, self.iou_threshold, det_is_first_arg=True)
            return F.segmented_eleven_point_ap(d["cls"], tp, npos, thresholds)[0]

        ap = run(None)
        ap_ko = None
        if self.hoi_to_object is not None:
            known = self._known_matrix(data)
            sel = known[self.hoi_to_object[r["cls"]], r["img"]] if r["cls"].size else np.zeros(0, bool)
            ap_ko = run(sel)
        return ap, ap_ko

    def _reference(
        self, data: dict[str, np.ndarray], npos: np.ndarray, thresholds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        keep = npos[data["det_cls"]] > 0  # predictions of classes absent from the GT are ignored
        cls = data["det_cls"][keep]
        score = data["det_score"][keep]
        img = data["det_img"][keep]
        boxes = data["det_boxes"][keep].astype(np.float32)
        # claims: per image, descending score, stable (the reference sorts each image's triplets)
        order = F.class_score_order(cls, score)
        tp_sorted = F.greedy_match(img[order], cls[order], boxes[order], data["gt_img"], data["gt_cls"],
                                   data["gt_boxes"].astype(np.float32), F.iou_reference, self.iou_threshold,
                                   det_is_first_arg=False)
        tp = np.empty_like(tp_sorted)
        tp[order] = tp_sorted
        # ranking per class: np.argsort(-score) (default kind) over the (image, within-image) layout
        score32 = score.astype(np.float32)
        by_cls = np.argsort(cls, kind="stable")
        cls_sorted = cls[by_cls]
        starts = F.segment_starts(cls_sorted)
        ends = np.r_[starts[1:], cls_sorted.size][: starts.size]
        final = np.empty_like(by_cls)
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            seg = by_cls[s:e]
            final[s:e] = seg[np.argsort(-score32[seg])]
        return F.segmented_eleven_point_ap(cls[final], tp[final], npos, thresholds)

    # ------------------------------------------------------------------ export
    def export_official(
        self,
        directory: str | Path,
        image_index: Mapping[int, int] | None = None,
        num_images: int | None = None,
    ) -> list[Path]:
        """Write the detections in the official tool's layout (``detections_XX.mat``, one per object).

        See :func:`~.official_export.write_official_detections` for the format. Requires ``hoi_to_object``.
        Call after all updates (and, under DDP, on every rank: the states are gathered first).
        """
        from .official_export import write_official_detections

        if self.hoi_to_object is None:
            raise ConfigurationError("export_official needs hoi_to_object (or a vocabulary)")
        with self.sync_context():  # gathers the states under DDP, no-op otherwise
            data = self._gathered()
        if data is None:
            raise ValueError("export_official called before any update")
        return write_official_detections(
            directory,
            image_ids=data["image_ids"][data["det_img"]],
            hoi_labels=data["det_cls"],
            boxes=data["det_boxes"],
            scores=data["det_score"],
            hoi_to_object=self.hoi_to_object,
            image_index=image_index,
            num_images=num_images,
            max_per_class=self.max_detections_per_class,
        )
