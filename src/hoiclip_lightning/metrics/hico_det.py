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
_STATES = ("occurrences", "boxes", "scores", "labels")


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


def _state_np(state: list[Tensor] | Tensor) -> np.ndarray:
    """A list state (or its synced, concatenated tensor) as a 1-D NumPy array of the same values."""
    t = dim_zero_cat(state) if isinstance(state, list) else state
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()  # exact; NumPy has no bfloat16
    return t.cpu().numpy().reshape(-1)


def _top_k_per_image(det: list[Tensor], counts: list[int], k: int) -> tuple[list[Tensor], list[int]]:
    """Keep the ``k`` best-scored rows of each image (descending score, ties in input order)."""
    n = np.asarray(counts, dtype=np.int64)
    img = np.repeat(np.arange(n.size), n)
    scores = det[2].cpu().to(torch.float64).numpy()
    order = F.class_score_order(img, scores)  # rows stay grouped by image
    rank = np.arange(order.size) - np.repeat(np.cumsum(n) - n, n)
    idx = torch.from_numpy(order[rank < k]).to(det[0].device)
    return [t[idx] for t in det], np.minimum(n, k).tolist()


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
        One image with one ground-truth triplet (HOI class 0, *board airplane*) found by the one prediction,
        with both boxes overlapping by more than 0.5; classes without ground truth do not count:

        >>> import torch
        >>> from hoiclip_lightning.structures import HOIGroundTruth, HOIPrediction
        >>> vocab = HOIVocabulary.builtin("hico_det")
        >>> metric = HICODetMAP(vocab)  # official protocol, rare split and HOI objects from the vocabulary
        >>> verb, obj = vocab.hois[0]
        >>> def one(*xyxy):
        ...     return torch.tensor([xyxy], dtype=torch.float)
        >>> target = HOIGroundTruth(image_id=0, sub_boxes=one(10, 10, 50, 90), obj_boxes=one(40, 60, 80, 100),
        ...                         obj_labels=torch.tensor([obj]), verb_labels=torch.tensor([verb]),
        ...                         hoi_labels=torch.tensor([0]), size=(120, 160))
        >>> pred = HOIPrediction(image_id=0, sub_boxes=one(11, 10, 50, 90), obj_boxes=one(40, 61, 80, 100),
        ...                      obj_labels=torch.tensor([obj]), verb_labels=torch.tensor([verb]),
        ...                      hoi_labels=torch.tensor([0]), scores=torch.tensor([0.9]))
        >>> metric.update([pred], [target])  # lists of HOIPrediction / HOIGroundTruth, one per image
        >>> result = metric.compute()  # percent
        >>> round(float(result["mAP_full"]), 2), round(float(result["mAP_non_rare"]), 2)
        (100.0, 100.0)
        >>> bool(result["mAP_rare"].isnan())  # no rare class in the ground truth
        True

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

        # Flat list states, one tensor per update (all 1-D, so that an empty rank's placeholder gathers under
        # DDP), in the caller's dtypes (copies to float64/int64 would cost more here than they save later):
        #   occurrences  (image_id, n_det, n_gt, position in its update) per image, float64
        #   boxes        per update: [n_det, 4] human boxes of the predictions, [n_det, 4] object boxes, then the
        #                same for the GT pairs ([n_gt, 4] twice)
        #   scores       per update: [n_det] prediction scores
        #   labels       per update: [n_det] prediction HOI classes, then [n_gt] GT HOI classes
        for name in _STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    # ------------------------------------------------------------------ update
    def update(self, preds: Sequence[HOIPrediction], targets: Sequence[HOIGroundTruth]) -> None:
        """Add a batch: one :class:`HOIPrediction` and one :class:`HOIGroundTruth` per image, same order.

        The batch is stored as three concatenated tensors (no sorting, no per-image objects); ranking and
        matching happen in :meth:`compute`. Predictions are cut to ``per_image_topk`` here only when an
        image has more, to bound memory.
        """
        if not check_paired(preds, targets):
            return
        n_det = [p.scores.shape[0] for p in preds]
        n_gt = [t.hoi_labels.shape[0] for t in targets]
        topk = self.per_image_topk
        if topk is not None and max(n_det) > topk:
            det = [torch.cat([p.sub_boxes for p in preds]), torch.cat([p.obj_boxes for p in preds]),
                   torch.cat([p.scores for p in preds]), torch.cat([p.hoi_labels for p in preds])]
            det, n_det = _top_k_per_image(det, n_det, topk)
            boxes = torch.cat([det[0], det[1], *(t.sub_boxes for t in targets), *(t.obj_boxes for t in targets)])
            scores = det[2]
            labels = torch.cat([det[3], *(t.hoi_labels for t in targets)])
        else:
            boxes = torch.cat([*(p.sub_boxes for p in preds), *(p.obj_boxes for p in preds),
                               *(t.sub_boxes for t in targets), *(t.obj_boxes for t in targets)])
            scores = torch.cat([p.scores for p in preds])
            labels = torch.cat([*(p.hoi_labels for p in preds), *(t.hoi_labels for t in targets)])
        self._check_labels(labels)
        dev = self.device
        rows = zip(preds, n_det, n_gt, strict=True)
        occ = np.array([(int(p.image_id), nd, ng, k) for k, (p, nd, ng) in enumerate(rows)], dtype=np.float64)
        self.occurrences.append(torch.from_numpy(occ.reshape(-1)).to(dev))
        self.boxes.append(boxes.reshape(-1).to(dev))
        self.scores.append(scores.reshape(-1).to(dev))
        self.labels.append(labels.reshape(-1).to(dev))

    def _check_labels(self, labels: Tensor) -> None:
        if labels.numel() == 0:
            return
        lo, hi = torch.aminmax(labels)
        bad = float(lo) < 0 or float(hi) >= self.num_hois
        if not bad and labels.is_floating_point():
            bad = bool((labels != labels.round()).any())  # also true for NaN
        if bad:
            raise ValueError(f"HOI labels must be integers in 0..{self.num_hois - 1}")

    # ------------------------------------------------------------------ gathered data
    def _columns(self) -> dict | None:
        """The states as NumPy columns: first occurrence of each image, images by ascending id.

        Detection boxes stay where they are: ``det_src`` maps each detection to its stored position (None:
        the identity) and :meth:`_det_rows` finds its boxes, so that only the boxes that get compared are
        ever converted. With ``per_image_topk`` the detections are grouped by image in descending score
        order (stable) and cut to the top k.
        """
        if isinstance(self.occurrences, list) and not self.occurrences:
            return None
        occ = _state_np(self.occurrences).astype(np.float64).reshape(-1, 4)
        if occ.shape[0] == 0:
            return None
        image_ids, det_take, det_img, gt_take, gt_img, dup = F.deduplicated_rows(occ)
        if dup:
            logger.debug("HICODetMAP: %d repeated image occurrence(s) ignored (DDP padding)", dup)
        boxes = _state_np(self.boxes).reshape(-1, 4)
        scores = _state_np(self.scores)
        labels = _state_np(self.labels)
        # per update: prediction / GT counts and where its rows start (see the state layout in __init__)
        update = np.cumsum(occ[:, 3] == 0) - 1
        nd = np.bincount(update, occ[:, 1], minlength=update[-1] + 1).astype(np.int64)
        ng = np.bincount(update, occ[:, 2], minlength=update[-1] + 1).astype(np.int64)
        od, og = np.cumsum(nd) - nd, np.cumsum(ng) - ng
        if boxes.shape[0] != 2 * (nd.sum() + ng.sum()) or labels.size != nd.sum() + ng.sum():
            raise RuntimeError("HICODetMAP states are inconsistent (were they modified or partly synced?)")

        def take(a: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
            return a if idx is None else a[idx]

        det_pos = take(np.arange(int(nd.sum()), dtype=np.int64), det_take)
        det_cls = labels[det_pos + np.repeat(og, nd)[det_pos]].astype(np.int64)
        det_score = take(scores, det_take)
        det_src = det_take
        if self.per_image_topk is not None and det_img.size:
            # usually already in place: predictions come sorted by descending score
            same_img = det_img[1:] == det_img[:-1]
            in_place = not (same_img & ~(det_score[1:] <= det_score[:-1])).any()
            order = np.arange(det_img.size) if in_place else F.class_score_order(det_img, det_score)
            img_sorted = det_img[order]
            starts = F.segment_starts(img_sorted)
            lengths = np.diff(np.r_[starts, img_sorted.size])
            sel = order[np.arange(order.size) - np.repeat(starts, lengths) < self.per_image_topk]
            det_img, det_cls, det_score = det_img[sel], det_cls[sel], det_score[sel]
            det_src = sel if det_src is None else det_src[sel]
        gt_pos = take(np.arange(int(ng.sum()), dtype=np.int64), gt_take)
        gt_upd = np.repeat(np.arange(nd.size), ng)[gt_pos]
        gt_sub_row = gt_pos + 2 * od[gt_upd] + og[gt_upd] + 2 * nd[gt_upd]
        gt_boxes = np.concatenate([boxes[gt_sub_row], boxes[gt_sub_row + ng[gt_upd]]], axis=1, dtype=np.float64)
        return {
            "image_ids": image_ids,
            "det_img": det_img,
            "det_cls": det_cls,
            "det_score": det_score,
            "det_src": det_src,
            "boxes": boxes,
            "update_end": np.cumsum(nd),  # end of each update's predictions
            "update_shift": od + 2 * og,  # human box row - prediction position, per update
            "update_n": nd,
            "gt_img": gt_img,
            "gt_boxes": gt_boxes,
            "gt_cls": labels[gt_pos + od[gt_upd] + nd[gt_upd]].astype(np.int64),
        }

    @staticmethod
    def _det_rows(data: dict, idx: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Stored ``[n, 4]`` human and object boxes of the detections ``idx`` (all when None)."""
        src = data["det_src"]
        if idx is not None:
            src = idx if src is None else src[idx]
        if src is None:
            src = np.arange(data["det_cls"].size)
        upd = np.searchsorted(data["update_end"], src, side="right")
        sub_row = src + data["update_shift"][upd]
        return data["boxes"][sub_row], data["boxes"][sub_row + data["update_n"][upd]]

    @classmethod
    def _det_boxes(cls, data: dict, idx: np.ndarray | None = None, dtype: type = np.float64) -> np.ndarray:
        """``[n, 8]`` boxes (human, object) of the detections ``idx`` (all when None) in ``dtype``."""
        return np.concatenate(cls._det_rows(data, idx), axis=1, dtype=dtype)

    @classmethod
    def _det_columns(cls, data: dict, idx: np.ndarray) -> list[np.ndarray]:
        """The 8 box coordinates of the detections ``idx`` as float64 columns (human, then object)."""
        sub, obj = cls._det_rows(data, idx)
        return [np.ascontiguousarray(b[:, k], dtype=np.float64) for b in (sub, obj) for k in range(4)]

    @staticmethod
    def _subset(data: dict, keep: np.ndarray) -> dict:
        """``data`` restricted to the detections where ``keep`` holds (order kept)."""
        if keep.all():
            return data
        idx = np.flatnonzero(keep)
        out = dict(data)
        for k in ("det_img", "det_cls", "det_score"):
            out[k] = data[k][idx]
        out["det_src"] = idx if data["det_src"] is None else data["det_src"][idx]
        return out

    def _gathered(self) -> dict[str, np.ndarray] | None:
        """Detections and GT as flat float64 arrays (what :meth:`export_official` writes)."""
        data = self._columns()
        if data is None:
            return None
        return {
            "image_ids": data["image_ids"],
            "det_img": data["det_img"],
            "det_boxes": self._det_boxes(data),
            "det_score": data["det_score"].astype(np.float64),
            "det_cls": data["det_cls"],
            "gt_img": data["gt_img"],
            "gt_boxes": data["gt_boxes"],
            "gt_cls": data["gt_cls"],
        }

    def _known_matrix(self, data: dict) -> np.ndarray:
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
        data = self._columns()
        c = self.num_hois
        if data is None:
            logger.warning("HICODetMAP.compute() called before any update; returning NaN")
            z = np.zeros(0, np.int64)
            data = {"image_ids": z, "det_img": z, "det_cls": z, "det_score": np.zeros(0), "det_src": None,
                    "boxes": np.zeros((0, 4)), "update_end": z, "update_shift": z, "update_n": z, "gt_img": z,
                    "gt_boxes": np.zeros((0, 8)), "gt_cls": z}
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

    def _best_pairs(self, data: dict) -> tuple[np.ndarray, np.ndarray]:
        """For every detection (in ``data`` order), its best GT pair of the same image and class.

        Official: boxes rounded half away from zero, :func:`~.functional.iou_official` (each box's area
        computed once). Reference: float32 boxes, :func:`~.functional.iou_reference` with the GT box first.
        """
        c = self.num_hois
        keys = (data["det_img"] * c + data["det_cls"], data["gt_img"] * c + data["gt_cls"])
        gt = data["gt_boxes"]
        if self.protocol == "official":
            f32 = data["boxes"].dtype in (np.float16, np.float32)
            rnd = F.round_half_away_f32 if f32 else F.round_half_away

            def with_areas(cols: list[np.ndarray]) -> list[np.ndarray]:
                return [*cols[:4], F.box_area_official(*cols[:4]), *cols[4:], F.box_area_official(*cols[4:])]

            def det_columns(idx: np.ndarray) -> list[np.ndarray]:
                return with_areas([rnd(col) for col in self._det_columns(data, idx)])

            def overlap(d: list[np.ndarray], g: list[np.ndarray]) -> np.ndarray:
                return np.minimum(F.iou_official_columns(d[:5], g[:5]), F.iou_official_columns(d[5:], g[5:]))

            gt_columns = with_areas([np.ascontiguousarray(gt[:, k], dtype=np.float64) for k in range(8)])
        else:

            def det_columns(idx: np.ndarray) -> list[np.ndarray]:
                return [col.astype(np.float32) for col in self._det_columns(data, idx)]

            def overlap(d: list[np.ndarray], g: list[np.ndarray]) -> np.ndarray:
                dh, do = np.column_stack(d[:4]), np.column_stack(d[4:])
                gh, go = np.column_stack(g[:4]), np.column_stack(g[4:])
                return np.minimum(F.iou_reference(gh, dh), F.iou_reference(go, do))

            gt_columns = [np.ascontiguousarray(gt[:, k], dtype=np.float32) for k in range(8)]
        # keys image-major: detections are stored image by image, so the look-ups run almost in order
        return F.best_box_pairs(*keys, det_columns, gt_columns, overlap, num_keys=data["image_ids"].size * c)

    def _official(
        self, data: dict, npos: np.ndarray, thresholds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Default and Known-Object APs from one ranking and one matching.

        1. Rank each class's detections by descending score, ties in (image id, within-image) order, and
           mark those within the cap.
        2. Best GT pair of every detection (rounded boxes, ``+1`` IoU); it does not depend on the ranking.
        3. A GT pair goes to the best-ranked capped detection that picked it with overlap >= threshold.
        4. Default AP from the true positives' ranks. Known-Object keeps whole (image, class) groups of
           detections, and every GT pair's claimants share its group, so the true positives are the
           same; only the ranks change, to the count of kept detections up to each one.
        """
        keep = npos[data["det_cls"]] > 0  # classes without GT do not take part (not even in the cap)
        data = self._subset(data, keep)
        cls, img = data["det_cls"], data["det_img"]
        order = F.class_score_order(cls, data["det_score"])
        counts = np.bincount(cls, minlength=self.num_hois)
        cstart = np.cumsum(counts) - counts
        pos = np.empty(order.size, dtype=np.int64)
        pos[order] = np.arange(order.size, dtype=np.int64)  # rank position of each detection
        cap = self.max_detections_per_class
        within = pos - cstart[cls] < cap if cap is not None else np.ones(cls.size, dtype=bool)

        best_gt, best_ov = self._best_pairs(data)
        q = np.flatnonzero((best_gt >= 0) & (best_ov >= self.iou_threshold) & within)
        tp_pos = F.first_claims(best_gt[q], pos[q], data["gt_cls"].size)
        tp_cls = cls[order[tp_pos]]
        ap = F.eleven_point_ap_from_tps(tp_cls, tp_pos - cstart[tp_cls] + 1, npos, thresholds)
        if self.hoi_to_object is None:
            return ap, None

        known = self._known_matrix(data)
        kept_ranked = (known[self.hoi_to_object[cls], img] & within)[order]
        kept_cum = np.cumsum(kept_ranked)  # kept detections up to each rank position (inclusive)
        tk = kept_ranked[tp_pos]
        ko_pos, ko_cls = tp_pos[tk], tp_cls[tk]
        first = cstart[ko_cls]
        before = np.where(first > 0, kept_cum[np.maximum(first - 1, 0)], 0)
        ap_ko = F.eleven_point_ap_from_tps(ko_cls, kept_cum[ko_pos] - before, npos, thresholds)
        return ap, ap_ko

    def _reference(
        self, data: dict, npos: np.ndarray, thresholds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        data = self._subset(data, npos[data["det_cls"]] > 0)  # predictions of classes absent from the GT are ignored
        cls = data["det_cls"]
        # claims: per image, descending score, stable (the reference sorts each image's triplets): that is
        # the stored order, and a GT pair is only claimed from its own (image, class) group
        best_gt, best_ov = self._best_pairs(data)
        tp = F.claim(best_gt, (best_gt >= 0) & (best_ov >= self.iou_threshold))
        # ranking per class: np.argsort(-score) (default kind) over the (image, within-image) layout
        score32 = data["det_score"].astype(np.float32)
        by_cls = F.radix_lexsort([cls])
        cls_sorted = cls[by_cls]
        starts = F.segment_starts(cls_sorted)
        ends = np.r_[starts[1:], cls_sorted.size][: starts.size]
        final = np.empty_like(by_cls)
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            seg = by_cls[s:e]
            final[s:e] = seg[np.argsort(-score32[seg])]
        tp_at = np.flatnonzero(tp[final])  # ranking positions of the true positives
        tp_cls = cls_sorted[tp_at]
        cstart = np.zeros(self.num_hois, dtype=np.int64)
        cstart[cls_sorted[starts]] = starts
        ap = F.eleven_point_ap_from_tps(tp_cls, tp_at - cstart[tp_cls] + 1, npos, thresholds)
        return ap, np.bincount(cls, minlength=self.num_hois) > 0

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
