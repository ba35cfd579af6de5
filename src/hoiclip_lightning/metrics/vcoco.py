"""V-COCO role AP (Scenario 1 and Scenario 2) as ``s-gupta/v-coco`` ``vsrl_eval.py`` defines it.

Rules (``_do_role_eval``), per action-role class ``v`` (a HOIA "verb" such as ``eat_instr``):

* the predictions of class ``v`` of one image (person box, role box, score) are processed in the order
  ``scores.argsort()[::-1]`` gives on their float32 scores listed in input order: descending score, and
  exact ties in the order of that (unstable) NumPy call (:func:`~.functional.vsrl_tie_order`);
* each is matched to the first person of largest IoU among **all** persons of the image, whatever their
  actions; IoU with the ``+1`` pixel convention (``get_overlap`` of vsrl_eval);
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
  ``argsort()[::-1]`` on float32 scores laid out image by image, like vsrl_eval;
* mean = mean over the evaluated role classes with GT (``np.nanmean``), in percent.

Two kinds of ground truth
-------------------------
**Official** (:class:`~hoiclip_lightning.structures.VCOCOGroundTruth`, from
:func:`hoiclip_lightning.data.load_vcoco_official`, given as the targets or as ``HOIGroundTruth.vcoco``):
the persons are every COCO person of the image; a detection whose best person is outside V-COCO (crowd
boxes, unannotated persons) is dropped, neither true nor false positive, also when it overlaps nobody and
the first person of the image is such a person (``argmax`` of zeros); a V-COCO person without action gives
a false positive; boxes follow vsrl_eval (``x + max(0, w - 1)``, clipped to the image); IoUs are computed
in float32 as vsrl_eval does under NumPy >= 2; images are laid out by ascending COCO id. This reproduces
vsrl_eval exactly (``benchmarks/compare_vcoco_official.py``). One departure: vsrl_eval raises on an image
with detections but no valid person; here those detections are false positives.

**HOIA** (:class:`~hoiclip_lightning.structures.HOIGroundTruth` rows): GT persons are the distinct
subject boxes of the annotations, so persons without any annotated action (false positives in vsrl_eval)
and persons outside V-COCO (dropped there) are unknown; the boxes are the file's ``x + w`` ones; IoUs are
float64; images are laid out by ascending ``image_id``. It equals vsrl_eval only where the HOIA file can
express the data. Predictions are triplets ``(person box, object box, verb, score)``; each is one agent
detection for its action-role.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from ..errors import ConfigurationError
from ..structures import HOIGroundTruth, HOIPrediction, VCOCOGroundTruth
from ..vocabulary import HOIVocabulary
from . import functional as F
from .hico_det import _check_class_list, _np, check_paired, pack_predictions, state_array

logger = logging.getLogger(__name__)

_DET_W = 12  # 8 box coordinates, score, verb, object label, position in the image's input
_GT_W = 10  # 8 box coordinates, verb, object label
_OCC_W = 5  # image id, n_det, n_gt (HOIA rows), n_official (-1: HOIA target), COCO image id (-1: none)
_OFF_W = 7  # kind (0 person, 1 action), ignored | person index, 0 | verb, 4 box coordinates


class VCOCORoleAP(Metric):
    """V-COCO role mAP, Scenario 1 and Scenario 2, on HOIA-format or official ground truth.

    Examples:
        >>> from hoiclip_lightning.data import load_vcoco_official
        >>> gt = load_vcoco_official("v-coco/data", "test")  # doctest: +SKIP
        >>> metric = VCOCORoleAP(HOIVocabulary.builtin("vcoco"))
        >>> metric.update(preds, [gt[p.image_id] for p in preds])  # doctest: +SKIP
        >>> metric.compute()["mAP_role_s1"]  # doctest: +SKIP

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

    ``update(preds, targets)`` takes one :class:`HOIPrediction` and one target per image; a target is a
    :class:`HOIGroundTruth` (its ``vcoco`` field, when set, is used) or a :class:`VCOCOGroundTruth`. All
    targets of one evaluation must be of the same kind. ``compute()`` returns ``mAP_role_s1``,
    ``mAP_role_s2`` (percent) and ``ap_role_s1``, ``ap_role_s2`` (``[C_verb]``, NaN for classes not
    evaluated or without GT). DDP-safe like :class:`HICODetMAP`.
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
        self.add_state("official_rows", default=[], dist_reduce_fx="cat")

    # ------------------------------------------------------------------ update
    def update(self, preds: Sequence[HOIPrediction], targets: Sequence[HOIGroundTruth | VCOCOGroundTruth]) -> None:
        """Add a batch: one prediction and one ground truth per image (``verb_labels`` = action-role class)."""
        if not check_paired(preds, targets):
            return
        official = [t if isinstance(t, VCOCOGroundTruth) else t.vcoco for t in targets]
        n_official = sum(o is not None for o in official)
        if 0 < n_official < len(official):
            raise ValueError(f"{n_official} of {len(official)} targets carry official V-COCO ground truth; "
                             "give it for every image or for none")
        dev = self.device
        det, n_det = pack_predictions(preds, self.per_image_topk, dev, "verb_labels", "obj_labels",
                                      with_position=True)
        det_verbs = det.reshape(-1, _DET_W)[:, 9].cpu().numpy()
        if n_official:
            self._check_official(official, det_verbs)
            rows = [self._official_rows(o) for o in official]
            n_off = np.array([r.shape[0] for r in rows], dtype=np.float64)
            off = np.concatenate(rows) if rows else np.zeros((0, _OFF_W))
            gt, n_gt = np.zeros((0, _GT_W)), np.zeros(len(targets))
            coco = np.array([o.coco_image_id for o in official], dtype=np.float64)
            verbs = np.concatenate([off[off[:, 0] == 1, 2], det_verbs])
        else:
            n_gt = np.array([len(t) for t in targets], dtype=np.int64)
            if int(n_gt.sum()):
                gt = np.concatenate(
                    [_np([t.sub_boxes for t in targets], 4), _np([t.obj_boxes for t in targets], 4),
                     _np([t.verb_labels for t in targets], 1), _np([t.obj_labels for t in targets], 1)],
                    axis=1,
                )
            else:
                gt = np.zeros((0, _GT_W))
            off, n_off = np.zeros((0, _OFF_W)), np.full(len(targets), -1.0)
            coco = np.full(len(targets), -1.0)
            verbs = np.concatenate([gt[:, 8], det_verbs])
        if verbs.size and ((verbs < 0) | (verbs >= self.num_verbs) | (verbs != np.round(verbs))).any():
            raise ValueError(f"verb labels must be integers in 0..{self.num_verbs - 1}")
        ids = np.array([int(p.image_id) for p in preds], dtype=np.float64)
        occ = np.stack([ids, n_det.cpu().numpy().astype(np.float64), n_gt.astype(np.float64), n_off, coco], axis=1)
        self.occurrences.append(torch.from_numpy(occ).to(dev).reshape(-1))
        self.det_rows.append(det)
        self.gt_rows.append(torch.from_numpy(gt).to(dev).reshape(-1))
        self.official_rows.append(torch.from_numpy(off).to(dev).reshape(-1))

    @staticmethod
    def _check_official(official: Sequence[VCOCOGroundTruth], det_verbs: np.ndarray) -> None:
        for o in official:
            n_p, n_a = o.num_persons, len(o)
            if tuple(o.person_boxes.shape) != (n_p, 4) or tuple(o.person_ignored.shape) != (n_p,):
                raise ValueError(f"image {o.image_id}: person_boxes must be [P, 4] and person_ignored [P], got "
                                 f"{tuple(o.person_boxes.shape)} and {tuple(o.person_ignored.shape)}")
            if tuple(o.action_person.shape) != (n_a,) or tuple(o.role_boxes.shape) != (n_a, 4):
                raise ValueError(f"image {o.image_id}: action_person must be [A] and role_boxes [A, 4] with A = "
                                 f"{n_a}, got {tuple(o.action_person.shape)} and {tuple(o.role_boxes.shape)}")
            if n_a and (int(o.action_person.min()) < 0 or int(o.action_person.max()) >= n_p):
                raise ValueError(f"image {o.image_id}: action_person must index its {n_p} persons")

    @staticmethod
    def _official_rows(o: VCOCOGroundTruth) -> np.ndarray:
        n_p, n_a = o.num_persons, len(o)
        rows = np.zeros((n_p + n_a, _OFF_W))
        rows[n_p:, 0] = 1.0
        rows[:n_p, 1] = o.person_ignored.detach().cpu().numpy()
        rows[:n_p, 3:] = o.person_boxes.detach().cpu().numpy().astype(np.float32)
        rows[n_p:, 1] = o.action_person.detach().cpu().numpy()
        rows[n_p:, 2] = o.action_verbs.detach().cpu().numpy()
        rows[n_p:, 3:] = o.role_boxes.detach().cpu().numpy().astype(np.float32)
        return rows

    # ------------------------------------------------------------------ compute
    def compute(self) -> dict[str, Tensor]:
        if isinstance(self.occurrences, list) and not self.occurrences:
            logger.warning("VCOCORoleAP.compute() called before any update; returning NaN")
            occ = np.zeros((0, _OCC_W))
            det, gt, off = np.zeros((0, _DET_W)), np.zeros((0, _GT_W)), np.zeros((0, _OFF_W))
        else:
            occ = state_array(self.occurrences, _OCC_W)
            det = state_array(self.det_rows, _DET_W)
            gt = state_array(self.gt_rows, _GT_W)
            off = state_array(self.official_rows, _OFF_W)
        is_official = occ[:, 3] >= 0
        if is_official.any() and not is_official.all():
            raise ValueError("VCOCORoleAP got official V-COCO ground truth for some images and HOIA rows for "
                             "others; use one kind per evaluation")
        if occ.shape[0] and is_official.all():
            return self._evaluate(*self._official_ground_truth(occ, det, off))
        return self._evaluate(*self._hoia_ground_truth(occ, det, gt))

    def _hoia_ground_truth(self, occ: np.ndarray, det: np.ndarray, gt: np.ndarray) -> tuple:
        """Persons = distinct subject boxes of the HOIA rows; images laid out by ascending image id."""
        nv = self.num_verbs
        _, det, det_img, gt, gt_img, _ = F.deduplicate_images(occ[:, :3], det, gt)
        gt_verb = gt[:, 8].astype(np.int64)
        if self.no_object_index is not None:
            gt_no_role = gt[:, 9].astype(np.int64) == self.no_object_index
        else:
            gt_no_role = np.all(gt[:, 4:8] == 0, axis=1)
        person_keys = np.concatenate([gt_img[:, None].astype(np.float64), gt[:, :4]], axis=1)
        if gt.shape[0]:
            _, first, inverse = np.unique(person_keys, axis=0, return_index=True, return_inverse=True)
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
        persons = (person_img, person_box, np.zeros(person_img.size, dtype=bool))
        actions = (pv_keys, ~gt_no_role[pv_first], gt[pv_first, 4:8])
        return det, det_img, det_img, persons, actions, F.iou_vsrl, np.float64

    def _official_ground_truth(self, occ: np.ndarray, det: np.ndarray, off: np.ndarray) -> tuple:
        """Persons and actions from the official rows; images laid out by ascending COCO id."""
        nv = self.num_verbs
        image_ids, det, det_img, off, off_img, _ = F.deduplicate_images(occ[:, [0, 1, 3]], det, off)
        _, first = np.unique(occ[:, 0].astype(np.int64), return_index=True)
        coco = occ[first, 4].astype(np.int64)
        if np.unique(coco).size != coco.size:
            dup = coco[np.flatnonzero(np.bincount(np.searchsorted(np.unique(coco), coco)) > 1)]
            raise ValueError(f"official V-COCO ground truth of one COCO image is paired with several image ids "
                             f"(COCO ids {np.unique(dup)[:5].tolist()})")
        img_rank = np.empty(coco.size, dtype=np.int64)
        img_rank[np.argsort(coco, kind="stable")] = np.arange(coco.size)
        is_person = off[:, 0] == 0
        person_img = off_img[is_person]
        person_box = off[is_person, 3:].astype(np.float32)
        person_ignored = off[is_person, 1] != 0
        first_person = np.searchsorted(person_img, np.arange(image_ids.size))  # persons are grouped by image
        act = off[~is_person]
        act_person = first_person[off_img[~is_person]] + act[:, 1].astype(np.int64)
        pv_key = act_person * nv + act[:, 2].astype(np.int64)
        pv_keys, pv_first = np.unique(pv_key, return_index=True)
        role_box = act[pv_first, 3:].astype(np.float32)
        has_role = ~np.all(role_box == -1, axis=1)
        persons = (person_img, person_box, person_ignored)
        return det, det_img, img_rank[det_img], persons, (pv_keys, has_role, role_box), F.iou_vsrl32, np.float32

    def _evaluate(self, det, det_img, det_rank, persons, actions, iou, box_dtype) -> dict[str, Tensor]:
        """Match, claim and rank (shared by both kinds of ground truth).

        Args:
            det: ``[D, _DET_W]`` detection rows; ``det_img`` their compact image index (the persons' index
                space) and ``det_rank`` the rank of their image in the layout of vsrl_eval.
            persons: ``(image [P], box [P, 4], ignored [P])``, the persons of each image in matching order.
            actions: ``(keys, has_role, role_box)``: sorted unique ``person * C_verb + verb`` of every person
                doing a class, whether it has a role object and its box.
            iou: row-wise IoU ``(gt boxes, detection boxes)``; ``box_dtype``: dtype of its inputs.
        """
        nv = self.num_verbs
        person_img, person_box, person_ignored = persons
        pv_keys, pv_has_role, pv_role_box = actions
        npos = np.bincount(pv_keys % nv, minlength=nv) if pv_keys.size else np.zeros(nv, np.int64)

        # ---- detections of evaluated classes, in processing order: class, image, vsrl's in-image order
        evaluated = np.zeros(nv, dtype=bool)
        evaluated[self.role_verbs] = True
        d_verb = det[:, 9].astype(np.int64)
        keep = evaluated[d_verb] & ~np.isnan(det[:, 8])
        det, det_img, det_rank, d_verb = det[keep], det_img[keep], det_rank[keep], d_verb[keep]
        score32 = det[:, 8].astype(np.float32)
        d_sub = det[:, :4].astype(box_dtype)
        d_obj = det[:, 4:8].astype(box_dtype)
        if self.empty_role_from_label and self.no_object_index is not None:
            d_obj[det[:, 10].astype(np.int64) == self.no_object_index] = 0.0
        d_empty = np.all(d_obj == 0.0, axis=1) | np.all(np.isnan(d_obj), axis=1)
        n_rank = int(det_rank.max()) + 1 if det_rank.size else 1
        order = F.vsrl_tie_order(d_verb * n_rank + det_rank, score32, det[:, 11])
        o_img, o_verb = det_img[order], d_verb[order]
        best_p, best_ov = F.best_pairs(o_img, person_img, lambda di, pi: iou(person_box[pi], d_sub[order][di]))
        best_ov = best_ov.astype(box_dtype)
        has_person = best_p >= 0
        dropped = has_person & person_ignored[np.where(has_person, best_p, 0)]
        key = np.where(has_person, best_p, 0) * nv + o_verb
        if pv_keys.size:
            pos = np.minimum(np.searchsorted(pv_keys, key), pv_keys.size - 1)
            does = has_person & (pv_keys[pos] == key)
        else:
            pos = np.zeros(key.size, np.int64)
            does = np.zeros(key.size, dtype=bool)
        with_role = does & pv_has_role[pos] if pv_keys.size else does
        role_ov = np.zeros(key.size, dtype=box_dtype)
        if with_role.any():
            idx = np.flatnonzero(with_role)
            role_ov[idx] = iou(pv_role_box[pos[idx]], d_obj[order][idx])
        thr = box_dtype(self.iou_threshold)
        base = does & (best_ov >= thr)
        # per class, the processed detections in processing order (image by image), dropped ones removed
        o_score = score32[order]
        kept = np.flatnonzero(~dropped)
        by_verb = kept[np.argsort(o_verb[kept], kind="stable")]
        results: dict[str, Tensor] = {}
        for scenario in (1, 2):
            no_role_ov = d_empty[order].astype(box_dtype) if scenario == 1 else np.ones(key.size, box_dtype)
            ov_role = np.where(with_role, role_ov, no_role_ov)
            cand = base & (ov_role >= thr) & ~dropped
            tp = F.claim(np.where(cand, key, -1), cand)
            ap = np.full(nv, np.nan)
            vs = o_verb[by_verb]
            for v in self.role_verbs:
                if npos[v] == 0:
                    continue
                seg = by_verb[np.searchsorted(vs, v, "left"):np.searchsorted(vs, v, "right")]
                seg = seg[np.argsort(o_score[seg])[::-1]]
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
