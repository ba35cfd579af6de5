"""V-COCO role AP (Scenario 1 and Scenario 2) as ``s-gupta/v-coco`` ``vsrl_eval.py`` defines it.

Rules (``_do_role_eval``), per action-role class ``v`` (a HOIA "verb" such as ``eat_instr``):

* each prediction of class ``v`` (person box, role box, score) is processed per image in descending score;
  it is matched to the GT person with the largest IoU among **all** GT persons of the image (first on ties),
  whatever their actions; IoU: ``+1`` pixel convention, ``get_overlap`` of vsrl_eval;
* role overlap: if that person has the action with a role object, IoU(GT role box, predicted role box);
  if the person has no role object for ``v`` (or does not do ``v``): **Scenario 1** counts the role as
  correct (overlap 1) only when the predicted role box is empty (all zeros or all NaN; here also when the
  predicted object label is the no-object index, see ``empty_role_from_label``), else 0; **Scenario 2**
  always counts it correct (overlap 1);
* true positive iff the person does ``v``, person IoU >= 0.5, role overlap >= 0.5 and the person was not
  already covered for ``v`` in this image (it then becomes covered); false positive otherwise;
* ``npos[v]`` = number of GT persons doing ``v`` (with or without role object); recall in float32 as
  vsrl_eval computes it, precision ``tp / max(tp + fp, eps)``; AP = VOC all-point AP (``voc_ap``:
  area under the monotone precision envelope, not 11-point); the per-class ranking uses
  ``argsort()[::-1]`` on float32 scores laid out by ascending image id, like vsrl_eval;
* mean = mean over the evaluated role classes with GT (``np.nanmean``), in percent.

Differences that come from the HOIA input format: GT persons are the distinct subject boxes of the HOIA
annotations, so persons without any annotated action (which vsrl_eval also matches against, producing
false positives) and its "ignore" persons are unknown here; within one image, exactly tied scores are
processed in input order. Predictions are triplets ``(person box, object box, verb, score)``; each is one
agent detection for its action-role.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from ..errors import ConfigurationError
from ..structures import HOIGroundTruth, HOIPrediction
from ..vocabulary import HOIVocabulary
from . import functional as F
from .hico_det import _check_class_list, _np, check_paired, pack_predictions, state_array

logger = logging.getLogger(__name__)

_DET_W = 11  # 8 box coordinates, score, verb, object label
_GT_W = 10  # 8 box coordinates, verb, object label


class VCOCORoleAP(Metric):
    """V-COCO role mAP, Scenario 1 and Scenario 2, on HOIA-format ground truth.

    Args:
        num_verbs: number of action-role classes (29 for V-COCO in HOIA format), or a vocabulary (then
            ``no_object_index`` and ``role_verbs`` default to it: classes named ``*_obj`` / ``*_instr``).
        no_object_index: object label meaning "no object" (GT rows without role object); ``None``: a GT
            row has no role object when its object box is all zeros.
        role_verbs: classes to evaluate (default: all; with a vocabulary: the 25 role classes, i.e. without
            the agent-only actions stand, walk, run, smile).
        iou_threshold: for the person and the role box.
        per_image_topk: keep the best k triplets per image (None: all, as vsrl_eval).
        empty_role_from_label: treat a prediction whose object label is ``no_object_index`` as having an
            empty role box (what converters write as NaN/zeros for "no object").

    ``compute()`` returns ``mAP_role_s1``, ``mAP_role_s2`` (percent) and ``ap_role_s1``, ``ap_role_s2``
    (``[C_verb]``, NaN for classes not evaluated or without GT). DDP-safe like :class:`HICODetMAP`.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(
        self,
        num_verbs: int | HOIVocabulary = 29,
        no_object_index: int | None = None,
        role_verbs: Iterable[int] | None = None,
        iou_threshold: float = 0.5,
        per_image_topk: int | None = None,
        empty_role_from_label: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(num_verbs, HOIVocabulary):
            vocab = num_verbs
            num_verbs = vocab.num_verbs
            if no_object_index is None:
                no_object_index = vocab.no_object_index
            if role_verbs is None:
                role_verbs = [i for i, v in enumerate(vocab.verbs) if v.endswith(("_obj", "_instr"))]
        if isinstance(num_verbs, bool) or not isinstance(num_verbs, int) or num_verbs < 1:
            raise ConfigurationError(f"num_verbs must be a positive int or an HOIVocabulary, got {num_verbs!r}")
        if per_image_topk is not None and (isinstance(per_image_topk, bool) or not isinstance(per_image_topk, int)
                                           or per_image_topk < 1):
            raise ConfigurationError(f"per_image_topk must be a positive int or None, got {per_image_topk!r}")
        if not 0.0 < float(iou_threshold) <= 1.0:
            raise ConfigurationError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
        if no_object_index is not None and (isinstance(no_object_index, bool) or not isinstance(no_object_index, int)):
            raise ConfigurationError(f"no_object_index must be an int or None, got {no_object_index!r}")
        self.num_verbs = num_verbs
        self.no_object_index = no_object_index
        self.role_verbs = _check_class_list("role_verbs", role_verbs, num_verbs) or list(range(num_verbs))
        self.iou_threshold = float(iou_threshold)
        self.per_image_topk = per_image_topk
        self.empty_role_from_label = bool(empty_role_from_label)
        self.add_state("occurrences", default=[], dist_reduce_fx="cat")
        self.add_state("det_rows", default=[], dist_reduce_fx="cat")
        self.add_state("gt_rows", default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[HOIPrediction], targets: Sequence[HOIGroundTruth]) -> None:
        """Add a batch: one prediction and one ground truth per image (``verb_labels`` = action-role class)."""
        if not check_paired(preds, targets):
            return
        dev = self.device
        det, n_det = pack_predictions(preds, self.per_image_topk, dev, "verb_labels", "obj_labels")
        n_gt = np.array([len(t) for t in targets], dtype=np.int64)
        if int(n_gt.sum()):
            gt = np.concatenate(
                [_np([t.sub_boxes for t in targets], 4), _np([t.obj_boxes for t in targets], 4),
                 _np([t.verb_labels for t in targets], 1), _np([t.obj_labels for t in targets], 1)],
                axis=1,
            )
        else:
            gt = np.zeros((0, _GT_W))
        verbs = np.concatenate([gt[:, 8], det.reshape(-1, _DET_W)[:, 9].cpu().numpy()])
        if verbs.size and ((verbs < 0) | (verbs >= self.num_verbs) | (verbs != np.round(verbs))).any():
            raise ValueError(f"verb labels must be integers in 0..{self.num_verbs - 1}")
        ids = np.array([int(p.image_id) for p in preds], dtype=np.float64)
        occ = np.stack([ids, n_det.cpu().numpy().astype(np.float64), n_gt.astype(np.float64)], axis=1)
        occ = torch.from_numpy(occ).to(dev)
        gt = torch.from_numpy(gt).to(dev)
        self.occurrences.append(occ.reshape(-1))
        self.det_rows.append(det)
        self.gt_rows.append(gt.reshape(-1))

    def compute(self) -> dict[str, Tensor]:
        nv = self.num_verbs
        if isinstance(self.occurrences, list) and not self.occurrences:
            logger.warning("VCOCORoleAP.compute() called before any update; returning NaN")
            occ, det, gt = np.zeros((0, 3)), np.zeros((0, _DET_W)), np.zeros((0, _GT_W))
        else:
            occ = state_array(self.occurrences, 3)
            det = state_array(self.det_rows, _DET_W)
            gt = state_array(self.gt_rows, _GT_W)
        _, det, det_img, gt, gt_img, _ = F.deduplicate_images(occ, det, gt)

        # ---- GT persons: distinct subject boxes per image, in order of first appearance
        gt_verb = gt[:, 8].astype(np.int64)
        if self.no_object_index is not None:
            gt_no_role = gt[:, 9].astype(np.int64) == self.no_object_index
        else:
            gt_no_role = np.all(gt[:, 4:8] == 0, axis=1)
        person_keys = np.concatenate([gt_img[:, None].astype(np.float64), gt[:, :4]], axis=1)
        if gt.shape[0]:
            uniq, first, inverse = np.unique(person_keys, axis=0, return_index=True, return_inverse=True)
            inverse = inverse.reshape(-1)
            rank = np.empty(first.size, dtype=np.int64)
            rank[np.argsort(first, kind="stable")] = np.arange(first.size)
            person_of_row = rank[inverse]
            person_img = np.empty(first.size, dtype=np.int64)
            person_box = np.empty((first.size, 4))
            person_img[person_of_row] = gt_img
            person_box[person_of_row] = gt[:, :4]
            # person ids follow first appearance, and rows are grouped by image: persons sorted by image
        else:
            person_of_row = np.zeros(0, np.int64)
            person_img = np.zeros(0, np.int64)
            person_box = np.zeros((0, 4))
        # (person, verb) table: first GT row of each pair
        pv_key = person_of_row * nv + gt_verb
        pv_keys, pv_first = np.unique(pv_key, return_index=True)
        pv_has_role = ~gt_no_role[pv_first]
        pv_role_box = gt[pv_first, 4:8]
        npos = np.bincount(pv_keys % nv, minlength=nv) if pv_keys.size else np.zeros(nv, np.int64)

        # ---- detections of evaluated classes, processing order
        evaluated = np.zeros(nv, dtype=bool)
        evaluated[self.role_verbs] = True
        d_verb = det[:, 9].astype(np.int64)
        keep = evaluated[d_verb] & ~np.isnan(det[:, 8])
        det, det_img, d_verb = det[keep], det_img[keep], d_verb[keep]
        d_score = det[:, 8]
        d_sub = det[:, :4]
        d_obj = det[:, 4:8].copy()
        if self.empty_role_from_label and self.no_object_index is not None:
            d_obj[det[:, 10].astype(np.int64) == self.no_object_index] = 0.0
        d_empty = np.all(d_obj == 0.0, axis=1) | np.all(np.isnan(d_obj), axis=1)

        order = F.class_score_order(d_verb, d_score)
        o_img, o_verb = det_img[order], d_verb[order]
        best_p, best_ov = F.best_pairs(
            o_img, person_img, lambda di, pi: F.iou_vsrl(person_box[pi], d_sub[order][di])
        )
        has_person = best_p >= 0
        key = np.where(has_person, best_p, 0) * nv + o_verb
        if pv_keys.size:
            pos = np.minimum(np.searchsorted(pv_keys, key), pv_keys.size - 1)
            does = has_person & (pv_keys[pos] == key)
        else:
            pos = np.zeros(key.size, np.int64)
            does = np.zeros(key.size, dtype=bool)
        with_role = does & pv_has_role[pos] if pv_keys.size else does
        role_ov = np.zeros(key.size)
        if with_role.any():
            idx = np.flatnonzero(with_role)
            role_ov[idx] = F.iou_vsrl(pv_role_box[pos[idx]], d_obj[order][idx])
        base = does & (best_ov >= self.iou_threshold)
        results: dict[str, Tensor] = {}
        score32 = d_score.astype(np.float32)
        by_verb = np.argsort(d_verb, kind="stable")
        for scenario in (1, 2):
            no_role_ov = d_empty[order].astype(np.float64) if scenario == 1 else np.ones(key.size)
            ov_role = np.where(with_role, role_ov, no_role_ov)
            cand = base & (ov_role >= self.iou_threshold)
            tp_sorted = F.claim(np.where(cand, key, -1), cand)
            tp = np.empty_like(tp_sorted)
            tp[order] = tp_sorted
            ap = np.full(nv, np.nan)
            for v in self.role_verbs:
                if npos[v] == 0:
                    continue
                seg = by_verb[np.searchsorted(d_verb[by_verb], v, "left"):np.searchsorted(d_verb[by_verb], v, "right")]
                seg = seg[np.argsort(score32[seg])[::-1]]
                a_tp = np.cumsum(tp[seg].astype(np.float32), dtype=np.float32)
                a_fp = np.cumsum((~tp[seg]).astype(np.float32), dtype=np.float32)
                rec = a_tp / np.float32(npos[v])
                prec = a_tp / np.maximum(a_tp + a_fp, np.finfo(np.float64).eps)
                ap[v] = F.voc_all_point_ap(rec, prec)
            sel = ap[~np.isnan(ap)]
            results[f"mAP_role_s{scenario}"] = torch.tensor(
                float(sel.mean()) * 100.0 if sel.size else float("nan"), dtype=torch.float64
            )
            results[f"ap_role_s{scenario}"] = torch.from_numpy(ap * 100.0)
        return results
