"""Converters from what other HOI code bases produce to :class:`HOIPrediction` / :class:`HOIGroundTruth`.

Each function takes one image's output (a ``dict`` of tensors, arrays or lists) or a whole annotation
file (as ``json.load`` returns it), states what it assumes, and raises
:class:`~hoiclip_lightning.errors.AnnotationError` naming the source, the record and the field when the
input does not fit. Boxes of the results are xyxy pixels of the original image, in the 0-based frame of
the PPDM-style annotation files (``anno_bbox.mat`` values minus one), which is what the metrics expect.

Families:

* **QPIC family** (QPIC, CDN, GEN-VLKT, HOICLIP): the post-processor returns, per image, ``boxes``
  (``[2Q, 4]`` xyxy pixels of the original image: Q subject boxes, then Q object boxes), ``labels``
  (``[2Q]`` contiguous object indices in COCO order, the subject slots hold the person index),
  ``sub_ids`` / ``obj_ids`` (``[Q]`` rows of ``boxes``) and the scores: ``hoi_scores`` ``[Q, C_hoi]``
  with ``obj_scores`` ``[Q, C_obj (+1)]`` (GEN-VLKT, HOICLIP: both sigmoids; the evaluator ranks
  ``hoi + obj**2``), or ``verb_scores`` ``[Q, C_verb]`` (QPIC, CDN: the verb sigmoid already multiplied by
  the object score; the evaluator zeroes verb-object pairs that are not HOI classes).
  :func:`predictions_from_qpic`. Their evaluators dump per image ``predictions`` (boxes) and
  ``hoi_prediction`` (``subject_id``, ``object_id``, ``category_id`` = HOI class, ``score``):
  :func:`predictions_from_hoi_dump`. On V-COCO their triplets are (query, action-role class) instead
  (``per_verb=True`` / ``category="verb"``, see those functions).
* **UPT family** (UPT, PViC): per image ``boxes`` ``[N, 4]`` xyxy in the frame of the network input of
  size ``size`` = ``(h, w)``, ``pairing`` ``[2, M]`` (human row, object row), ``scores`` ``[M]`` (already
  fused with the detection scores), ``labels`` ``[M]`` verb indices, ``objects`` ``[M]`` object indices in
  HICO-DET's alphabetical order (``fredzzhang/hicodet``): :func:`predictions_from_upt`. On V-COCO
  (``fredzzhang/vcoco``) ``labels`` index the 24 action-role classes of :data:`UPT_VCOCO_ACTIONS`,
  ``objects`` the 80 COCO classes in COCO order, and boxes are not shifted.
* **Ground truth**: the PPDM (HICO-DET) / HOIA (V-COCO) JSON lists (:func:`ground_truth_from_ppdm`) and
  ``fredzzhang/hicodet``'s ``instances_test2015.json`` (:func:`ground_truth_from_instances`).
* Our own ``hoiclip predict`` JSON lines: :func:`predictions_from_jsonl_record`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import AnnotationError, ConfigurationError
from ..structures import HOIGroundTruth, HOIPrediction
from ..vocabulary import HOIVocabulary

ScoreRule = Literal["auto", "hoi_plus_object_squared", "hoi", "verb"]
SCORE_RULES = ("auto", "hoi_plus_object_squared", "hoi", "verb")

#: the action-role classes of ``fredzzhang/vcoco`` (``classes`` of ``instances_vcoco_*.json``), in the order
#: of UPT's V-COCO ``labels``: V-COCO's role classes without ``point instr``; matched to a vocabulary's
#: verbs by name (``_`` = space)
UPT_VCOCO_ACTIONS = (
    "hold obj", "sit instr", "ride instr", "look obj", "hit instr", "hit obj", "eat obj", "eat instr", "jump instr",
    "lay instr", "talk_on_phone instr", "carry obj", "throw obj", "catch obj", "cut instr", "cut obj",
    "work_on_computer instr", "ski instr", "surf instr", "skateboard instr", "drink instr", "kick obj", "read obj",
    "snowboard instr",
)

__all__ = [
    "SCORE_RULES",
    "UPT_VCOCO_ACTIONS",
    "ground_truth_from_instances",
    "ground_truth_from_ppdm",
    "predictions_from_hoi_dump",
    "predictions_from_jsonl_record",
    "predictions_from_qpic",
    "predictions_from_upt",
]


# ---------------------------------------------------------------------- helpers
def _field(record: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(record, Mapping):
        raise AnnotationError(f"{where}: expected a dict, got {type(record).__name__}")
    if key not in record:
        raise AnnotationError(f"{where}: field '{key}' is missing (fields present: {sorted(map(str, record))})")
    return record[key]


def _array(value: Any, key: str, where: str, shape: tuple[int | None, ...], dtype: torch.dtype) -> Tensor:
    """``value`` (tensor, array or nested list) as a CPU tensor of ``dtype``; ``None`` in ``shape`` = any size."""
    try:
        if isinstance(value, Tensor):
            t = value.detach().cpu()
        else:
            t = torch.as_tensor(np.asarray(value))
        if t.numel() == 0 and t.dim() != len(shape):  # e.g. an empty JSON list for [0, 4]
            t = t.reshape(0, *[s or 0 for s in shape[1:]])
        t = t.to(dtype)
    except (TypeError, ValueError, RuntimeError) as err:
        raise AnnotationError(f"{where}: field '{key}' is not numeric ({err})") from None
    ok = t.dim() == len(shape) and all(s is None or s == n for s, n in zip(shape, t.shape, strict=True))
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise AnnotationError(f"{where}: field '{key}' has shape {list(t.shape)}, expected {want}")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise AnnotationError(f"{where}: field '{key}' holds NaN or infinite values")
    return t


def _index(value: Tensor, key: str, where: str, size: int, what: str) -> Tensor:
    if value.numel() and (int(value.min()) < 0 or int(value.max()) >= size):
        raise AnnotationError(f"{where}: field '{key}' holds values outside 0..{size - 1} ({what}); "
                              f"got {int(value.min())}..{int(value.max())}")
    return value


def _hoi_table(vocabulary: HOIVocabulary) -> Tensor:
    """``[C_verb, C_obj]`` long: HOI class of each (verb, object) pair, -1 where the pair is not a class."""
    table = torch.full((vocabulary.num_verbs, vocabulary.num_objects), -1, dtype=torch.long)
    for c, (v, o) in enumerate(vocabulary.hois):
        table[v, o] = c
    return table


def _prediction(image_id: int, vocabulary: HOIVocabulary, sub: Tensor, obj: Tensor, hoi: Tensor,
                scores: Tensor) -> HOIPrediction:
    """An :class:`HOIPrediction` in descending score order (ties keep the given order)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    hoi = hoi[order]
    return HOIPrediction(
        image_id=int(image_id),
        sub_boxes=sub[order].float(),
        obj_boxes=obj[order].float(),
        obj_labels=vocabulary.hoi_to_object()[hoi],
        verb_labels=vocabulary.hoi_to_verb()[hoi],
        hoi_labels=hoi,
        scores=scores[order],
    )


def _normalise_name(name: str) -> str:
    return str(name).strip().lower().replace("_", " ")


def _name_map(names: Sequence[str], ours: Sequence[str], what: str, where: str) -> Tensor:
    """Index in ``ours`` of each of ``names`` (matched without case, ``_`` = space)."""
    lookup = {_normalise_name(n): i for i, n in enumerate(ours)}
    missing = [n for n in names if _normalise_name(n) not in lookup]
    if missing:
        raise AnnotationError(f"{where}: {what} name(s) {missing[:5]} are not in the vocabulary")
    return torch.tensor([lookup[_normalise_name(n)] for n in names], dtype=torch.long)


# ---------------------------------------------------------------------- QPIC family
def predictions_from_qpic(
    output: Mapping[str, Any],
    image_id: int,
    vocabulary: HOIVocabulary,
    score_rule: ScoreRule = "auto",
    topk: int | None = 100,
    nms: tuple[float, float, float] | None = None,
    source: str = "output",
    skipped: Counter | None = None,
    per_verb: bool = False,
) -> HOIPrediction:
    """One image of a QPIC-family post-processor output as an :class:`HOIPrediction`.

    Assumes what the QPIC / CDN / GEN-VLKT / HOICLIP post-processors return: ``boxes`` ``[N, 4]`` xyxy
    pixels of the original image (already scaled by ``orig_size``), ``labels`` ``[N]`` contiguous object
    indices of the vocabulary (COCO order, 0-based), ``sub_ids`` / ``obj_ids`` ``[Q]`` rows of ``boxes``,
    and the scores of one rule:

    * ``"hoi_plus_object_squared"`` (GEN-VLKT, HOICLIP): ``hoi_scores`` ``[Q, C_hoi]`` (columns = the
      vocabulary's HOI classes) and ``obj_scores`` ``[Q, C_obj]`` or ``[Q, C_obj + 1]``; the triplet
      ``(q, c)`` scores ``hoi_scores[q, c] + obj_scores[q, object(c)] ** 2``;
    * ``"hoi"``: ``hoi_scores`` used as they are;
    * ``"verb"`` (QPIC, CDN): ``verb_scores`` ``[Q, C_verb]``; the triplet ``(q, v)`` takes the object
      ``labels[obj_ids[q]]``; a verb-object pair that is not an HOI class of the vocabulary scores 0, as
      the evaluators' ``correct_mat`` makes it, and is dropped after the top-k (counted in ``skipped``);
    * ``"auto"``: the first that fits the fields present, in the order above.

    ``per_verb=True`` is the V-COCO convention of these code bases (GEN-VLKT's and HOICLIP's V-COCO
    post-processor and ``VCOCOEvaluator``): one triplet per (query, verb) instead of per (query, HOI
    class). With ``hoi_scores``, the score of verb ``v`` is the largest score (after the rule above) over
    the HOI classes of ``v``, and the object is ``labels[obj_ids[q]]``, the label of the query's object
    box, whatever the object of the class that gave the maximum; a (verb, label) pair that is not an HOI
    class scores 0 and is dropped after the top-k, as with the ``"verb"`` rule (whose triplets are per
    verb already). On V-COCO the object label ``no_object_index`` marks a role without object.

    The ``topk`` best triplets of the image are kept (descending score, ties in the flat ``q * C + c``
    order: the first of equal scores wins; the reference's heap selection would repeat that first one
    instead), then the optional triplet NMS ``nms = (threshold, alpha, beta)`` (the evaluators'
    ``--use_nms_filter``, ``(0.7, 1.0, 0.5)`` by default there) per HOI class.

    Args:
        output: the post-processor's dict for one image (tensors, NumPy arrays or lists).
        image_id: the id that pairs it with its :class:`HOIGroundTruth`.
        vocabulary: the label space (HOI classes, their verbs and objects).
        score_rule: see above.
        topk: triplets kept per image (``None``: all).
        nms: ``(threshold, alpha, beta)`` of the triplet NMS, or ``None``.
        source: how the image is named in error messages.
        skipped: a counter that receives the number of dropped triplets by reason.
        per_verb: triplets per (query, verb) with the object box's label (V-COCO); see above.

    Returns:
        The image's triplets in descending score order.
    """
    if score_rule not in SCORE_RULES:
        raise ConfigurationError(f"unknown score_rule {score_rule!r}; accepted: {SCORE_RULES}")
    if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk < 1):
        raise ConfigurationError(f"topk must be a positive int or None, got {topk!r}")
    where = source
    boxes = _array(_field(output, "boxes", where), "boxes", where, (None, 4), torch.float32)
    n_boxes = boxes.shape[0]
    sub_ids = _index(_array(_field(output, "sub_ids", where), "sub_ids", where, (None,), torch.long),
                     "sub_ids", where, n_boxes, "rows of boxes")
    q = sub_ids.shape[0]
    obj_ids = _index(_array(_field(output, "obj_ids", where), "obj_ids", where, (q,), torch.long),
                     "obj_ids", where, n_boxes, "rows of boxes")
    if score_rule == "auto":
        if "hoi_scores" in output:
            score_rule = "hoi_plus_object_squared" if "obj_scores" in output else "hoi"
        elif "verb_scores" in output:
            score_rule = "verb"
        else:
            raise AnnotationError(f"{where}: neither 'hoi_scores' nor 'verb_scores' is present "
                                  f"(fields present: {sorted(map(str, output))})")
    hoi_to_object = vocabulary.hoi_to_object()
    scores = None
    if score_rule in ("hoi_plus_object_squared", "hoi"):
        c = vocabulary.num_hois
        scores = _array(_field(output, "hoi_scores", where), "hoi_scores", where, (q, c), torch.float32)
        if score_rule == "hoi_plus_object_squared":
            obj_scores = _array(_field(output, "obj_scores", where), "obj_scores", where, (q, None), torch.float32)
            if obj_scores.shape[1] < vocabulary.num_objects:
                raise AnnotationError(f"{where}: field 'obj_scores' has {obj_scores.shape[1]} columns, expected "
                                      f"{vocabulary.num_objects} objects (+1 no-object)")
            p = obj_scores[:, hoi_to_object]  # [Q, C]
            scores = scores + p * p
        column_hoi = torch.arange(c).expand(q, c)
        valid = torch.ones(q, c, dtype=torch.bool)
        if per_verb:  # [Q, C_hoi] -> [Q, C_verb]: the best class of each verb
            verb_of = vocabulary.hoi_to_verb().expand(q, c)
            scores = torch.full((q, vocabulary.num_verbs), float("-inf")).scatter_reduce(
                1, verb_of, scores, reduce="amax")
            scores = torch.where(torch.isinf(scores), torch.zeros_like(scores), scores)  # a verb without class
    if scores is None or per_verb:
        labels = _index(_array(_field(output, "labels", where), "labels", where, (n_boxes,), torch.long),
                        "labels", where, vocabulary.num_objects, "object indices of the vocabulary")
        c = vocabulary.num_verbs
        if scores is None:
            scores = _array(_field(output, "verb_scores", where), "verb_scores", where, (q, c), torch.float32)
        column_hoi = _hoi_table(vocabulary)[:, labels[obj_ids]].T  # [Q, C_verb]
        valid = column_hoi >= 0
        scores = torch.where(valid, scores, torch.zeros_like(scores))
    flat = scores.reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices
    if topk is not None:
        order = order[:topk]
    keep = valid.reshape(-1)[order]
    if skipped is not None and int((~keep).sum()):
        skipped["not_an_hoi_class"] += int((~keep).sum())
    order = order[keep]
    rows = order // c
    hoi = column_hoi.reshape(-1)[order]
    sub, obj, top = boxes[sub_ids[rows]], boxes[obj_ids[rows]], flat[order]
    if nms is not None:
        from .nms import triplet_nms

        threshold, alpha, beta = (float(x) for x in nms)
        kept = triplet_nms(sub, obj, hoi, threshold, alpha, beta)
        if skipped is not None:
            skipped["triplet_nms"] += int((~kept).sum())
        sub, obj, hoi, top = sub[kept], obj[kept], hoi[kept], top[kept]
    return _prediction(image_id, vocabulary, sub, obj, hoi, top)


def predictions_from_hoi_dump(
    record: Mapping[str, Any],
    image_id: int,
    vocabulary: HOIVocabulary,
    source: str = "record",
    category: Literal["hoi", "verb"] = "hoi",
    skipped: Counter | None = None,
) -> HOIPrediction:
    """One image of a QPIC-family evaluator dump (GEN-VLKT / HOICLIP ``results.json``, ``preds`` list).

    Assumes ``predictions``: a list of ``{"bbox": [x1, y1, x2, y2]}`` (pixels of the original image) and
    ``hoi_prediction``: a list of ``{"subject_id", "object_id", "category_id", "score"}`` where the ids
    are positions in ``predictions``. With ``category="hoi"`` (HICO-DET) ``category_id`` is the HOI class
    (0-based, the vocabulary's order, which is the reference's ``hico_text_label`` order) and the boxes'
    ``category_id`` is ignored. With ``category="verb"`` (the V-COCO evaluators' ``preds``, e.g.
    ``VCOCOEvaluator(...).preds`` of GEN-VLKT / HOICLIP) ``category_id`` is the action-role class (the
    vocabulary's verb index) and the object is the ``category_id`` of the object box (the vocabulary's
    object index, ``no_object_index`` for a role without object); a (verb, object) pair that is not an
    HOI class of the vocabulary (the evaluators give it score 0 through ``correct_mat``) is dropped and
    counted in ``skipped``. The dump holds the evaluator's selection (top 100, after its triplet NMS when
    it was on); nothing is re-selected.
    """
    if category not in ("hoi", "verb"):
        raise ConfigurationError(f"category must be 'hoi' or 'verb', got {category!r}")
    where = source
    boxes_field = _field(record, "predictions", where)
    hois = _field(record, "hoi_prediction", where)
    if not isinstance(boxes_field, Sequence) or not isinstance(hois, Sequence):
        raise AnnotationError(f"{where}: 'predictions' and 'hoi_prediction' must be lists")
    boxes = [_field(b, "bbox", f"{where}: predictions[{i}]") for i, b in enumerate(boxes_field)]
    boxes_t = _array(boxes, "predictions[*].bbox", where, (None, 4), torch.float32)
    cols = {}
    for key in ("subject_id", "object_id", "category_id", "score"):
        cols[key] = [_field(h, key, f"{where}: hoi_prediction[{i}]") for i, h in enumerate(hois)]
    ids = {}
    for key in ("subject_id", "object_id"):
        name = f"hoi_prediction[*].{key}"
        ids[key] = _index(_array(cols[key], name, where, (None,), torch.long), name, where, len(boxes),
                          "positions in 'predictions'")
    sub_id, obj_id = ids["subject_id"], ids["object_id"]
    scores = _array(cols["score"], "hoi_prediction[*].score", where, (None,), torch.float32)
    if category == "hoi":
        hoi = _index(_array(cols["category_id"], "category_id", where, (None,), torch.long),
                     "hoi_prediction[*].category_id", where, vocabulary.num_hois, "HOI classes")
        return _prediction(image_id, vocabulary, boxes_t[sub_id], boxes_t[obj_id], hoi, scores)
    verbs = _index(_array(cols["category_id"], "category_id", where, (None,), torch.long),
                   "hoi_prediction[*].category_id", where, vocabulary.num_verbs, "verb classes")
    labels = [_field(b, "category_id", f"{where}: predictions[{i}]") for i, b in enumerate(boxes_field)]
    labels_t = _index(_array(labels, "predictions[*].category_id", where, (len(boxes),), torch.long),
                      "predictions[*].category_id", where, vocabulary.num_objects, "object indices of the vocabulary")
    hoi = _hoi_table(vocabulary)[verbs, labels_t[obj_id]]
    valid = hoi >= 0
    if skipped is not None and int((~valid).sum()):
        skipped["not_an_hoi_class"] += int((~valid).sum())
    return _prediction(image_id, vocabulary, boxes_t[sub_id][valid], boxes_t[obj_id][valid], hoi[valid],
                       scores[valid])


# ---------------------------------------------------------------------- UPT family
def predictions_from_upt(
    output: Mapping[str, Any],
    image_id: int,
    vocabulary: HOIVocabulary,
    image_size: tuple[int, int] | None = None,
    object_names: Sequence[str] | Literal["alphabetical", "vocabulary"] = "alphabetical",
    verb_names: Sequence[str] | None = None,
    pixel_offset: float = 1.0,
    source: str = "output",
    skipped: Counter | None = None,
) -> HOIPrediction:
    """One image of a UPT / PViC output (``boxes``, ``pairing``, ``scores``, ``labels``, ``objects``).

    Assumes: ``boxes`` ``[N, 4]`` xyxy pixels in the frame of the network input, whose ``(height,
    width)`` is ``size`` (when ``size`` is absent the boxes are taken as pixels of the original image);
    ``pairing`` ``[2, M]`` rows of ``boxes`` (human first); ``scores`` ``[M]`` final pair-verb scores;
    ``labels`` ``[M]`` verb indices; ``objects`` ``[M]`` object indices. UPT's HICO-DET models learn the
    boxes of ``instances_*.json`` (``fredzzhang/hicodet``), which are the 1-based ``anno_bbox.mat``
    values: ``pixel_offset`` (1 by default) is subtracted from every coordinate to reach the 0-based frame
    of the PPDM files and of :func:`ground_truth_from_instances`. Every detection is kept (UPT keeps all
    pairs; there is no per-image top-k); a verb-object pair that is not an HOI class is dropped and counted.

    V-COCO (``fredzzhang/vcoco``, what UPT's ``cache_vcoco`` reads): ``labels`` index the 24 action-role
    classes of :data:`UPT_VCOCO_ACTIONS`, ``objects`` the 80 COCO classes in COCO order (person first),
    and the boxes are ``x + w`` COCO boxes like the HOIA ``test_vcoco.json``: pass
    ``verb_names=UPT_VCOCO_ACTIONS, object_names="vocabulary", pixel_offset=0`` with the V-COCO
    vocabulary. UPT predicts a role box for every pair, so no detection has an empty role.

    Args:
        output: one image's dict.
        image_id: the id that pairs it with its :class:`HOIGroundTruth`.
        vocabulary: the label space.
        image_size: ``(height, width)`` of the original image; required when ``output`` has ``size``.
        object_names: the object order of ``objects``: ``"alphabetical"`` (HICO-DET's own order, the
            vocabulary's names sorted; what UPT and PViC use on HICO-DET), ``"vocabulary"`` (the
            vocabulary's order), or the list of names.
        verb_names: the verb order of ``labels`` (``None``: the vocabulary's, which is HICO-DET's).
        pixel_offset: subtracted from every box coordinate after rescaling.
        source: how the image is named in error messages.
        skipped: a counter that receives the number of dropped detections by reason.
    """
    where = source
    boxes = _array(_field(output, "boxes", where), "boxes", where, (None, 4), torch.float64)
    pairing = _index(_array(_field(output, "pairing", where), "pairing", where, (2, None), torch.long),
                     "pairing", where, boxes.shape[0], "rows of boxes")
    m = pairing.shape[1]
    scores = _array(_field(output, "scores", where), "scores", where, (m,), torch.float32)
    verbs = _array(_field(output, "labels", where), "labels", where, (m,), torch.long)
    objects = _array(_field(output, "objects", where), "objects", where, (m,), torch.long)
    if isinstance(object_names, str):
        if object_names not in ("alphabetical", "vocabulary"):
            raise ConfigurationError(f"object_names must be 'alphabetical', 'vocabulary' or a list of names, "
                                     f"got {object_names!r}")
        names = list(vocabulary.objects)
        if object_names == "alphabetical":
            names = sorted(names, key=lambda n: n.replace(" ", "_"))
        object_names = names
    obj_map = _name_map(object_names, vocabulary.objects, "object", where)
    verb_map = (torch.arange(vocabulary.num_verbs) if verb_names is None
                else _name_map(verb_names, vocabulary.verbs, "verb", where))
    objects = obj_map[_index(objects, "objects", where, obj_map.numel(), "object indices")]
    verbs = verb_map[_index(verbs, "labels", where, verb_map.numel(), "verb indices")]
    if "size" in output:
        frame = _array(output["size"], "size", where, (2,), torch.float64)
        if image_size is None:
            raise AnnotationError(f"{where}: field 'size' is present but the original image size is unknown (the "
                                  "annotations give no height/width): rescale the boxes to the original image "
                                  "(boxes * (width / size[1], height / size[0]), as UPT's cache_vcoco does) and "
                                  "drop 'size'")
        height, width = float(image_size[0]), float(image_size[1])
        scale = torch.tensor([width / frame[1], height / frame[0], width / frame[1], height / frame[0]],
                             dtype=torch.float64)
        boxes = boxes * scale
    boxes = boxes - float(pixel_offset)
    hoi = _hoi_table(vocabulary)[verbs, objects]
    valid = hoi >= 0
    if skipped is not None and int((~valid).sum()):
        skipped["not_an_hoi_class"] += int((~valid).sum())
    sub, obj = boxes[pairing[0]], boxes[pairing[1]]
    return _prediction(image_id, vocabulary, sub[valid], obj[valid], hoi[valid], scores[valid])


# ---------------------------------------------------------------------- our JSON lines
def predictions_from_jsonl_record(
    record: Mapping[str, Any], image_id: int, vocabulary: HOIVocabulary, source: str = "record"
) -> HOIPrediction:
    """One ``hoiclip predict`` JSON-lines record (``triplets`` with ``human_box``, ``object_box``,
    ``hoi.index``, ``score``; boxes in pixels of the original image, HOI indices of the vocabulary)."""
    where = source
    triplets = _field(record, "triplets", where)
    if not isinstance(triplets, Sequence):
        raise AnnotationError(f"{where}: field 'triplets' must be a list")
    rows = {"human_box": [], "object_box": [], "hoi": [], "score": []}
    for i, t in enumerate(triplets):
        w = f"{where}: triplets[{i}]"
        rows["human_box"].append(_field(t, "human_box", w))
        rows["object_box"].append(_field(t, "object_box", w))
        rows["hoi"].append(_field(_field(t, "hoi", w), "index", f"{w}.hoi"))
        rows["score"].append(_field(t, "score", w))
    sub = _array(rows["human_box"], "triplets[*].human_box", where, (None, 4), torch.float32)
    obj = _array(rows["object_box"], "triplets[*].object_box", where, (None, 4), torch.float32)
    hoi = _index(_array(rows["hoi"], "triplets[*].hoi.index", where, (None,), torch.long),
                 "triplets[*].hoi.index", where, vocabulary.num_hois, "HOI classes")
    scores = _array(rows["score"], "triplets[*].score", where, (None,), torch.float32)
    return _prediction(image_id, vocabulary, sub, obj, hoi, scores)


# ---------------------------------------------------------------------- ground truth
def ground_truth_from_ppdm(
    records: Sequence[Mapping[str, Any]],
    vocabulary: HOIVocabulary,
    dataset_format: Literal["hico_det", "vcoco"] = "hico_det",
    source: str = "annotations",
) -> list[HOIGroundTruth]:
    """The PPDM (HICO-DET ``test_hico.json``) or HOIA (V-COCO ``test_vcoco.json``) list as ground truth.

    Assumes one record per image with ``file_name``, ``annotations`` (``bbox`` xyxy pixels as written,
    0-based; ``category_id`` = the vocabulary's ``object_category_ids``, COCO ids) and ``hoi_annotation``
    (``subject_id`` / ``object_id`` = positions in ``annotations``, ``category_id`` = the vocabulary's
    ``verb_ids``: 1-based for HICO-DET, 0-based for V-COCO; ``object_id = -1`` is a V-COCO role without
    object; an optional ``hoi_category_id`` must be the 1-based HOI class). One row per HOI instance, as
    annotated (duplicates kept). ``image_id`` is the record's position in the list; ``size`` is
    ``(height, width)`` when the record has ``height`` / ``width``, else ``(0, 0)``.

    Raises:
        AnnotationError: naming the record (position and ``file_name``) and the field.
    """
    if not isinstance(records, Sequence) or isinstance(records, (str, bytes)):
        raise AnnotationError(f"{source}: expected a JSON list of image records, got {type(records).__name__}")
    table = _hoi_table(vocabulary)
    no_object = vocabulary.no_object_index
    out = []
    for i, rec in enumerate(records):
        name = rec.get("file_name", "?") if isinstance(rec, Mapping) else "?"
        where = f"{source}: record {i} (file_name {name!r})"
        anns = _field(rec, "annotations", where)
        hois = _field(rec, "hoi_annotation", where)
        if not isinstance(anns, Sequence) or not isinstance(hois, Sequence):
            raise AnnotationError(f"{where}: 'annotations' and 'hoi_annotation' must be lists")
        boxes = _array([_field(a, "bbox", f"{where}: annotations[{j}]") for j, a in enumerate(anns)],
                       "annotations[*].bbox", where, (None, 4), torch.float32)
        labels = []
        for j, a in enumerate(anns):
            cat = _field(a, "category_id", f"{where}: annotations[{j}]")
            idx = vocabulary.object_index(cat)
            if idx is None:
                raise AnnotationError(f"{where}: annotations[{j}].category_id = {cat!r} is not an object category "
                                      f"of vocabulary {vocabulary.name!r}")
            labels.append(idx)
        rows = []
        for j, h in enumerate(hois):
            w = f"{where}: hoi_annotation[{j}]"
            s, o, vid = (_field(h, k, w) for k in ("subject_id", "object_id", "category_id"))
            if not isinstance(s, int) or not 0 <= s < len(anns):
                raise AnnotationError(f"{w}.subject_id = {s!r}, but the image has {len(anns)} annotations")
            no_obj = dataset_format == "vcoco" and o == -1
            if not no_obj and (not isinstance(o, int) or not 0 <= o < len(anns)):
                raise AnnotationError(f"{w}.object_id = {o!r}, but the image has {len(anns)} annotations")
            verb = vocabulary.verb_index(vid)
            if verb is None:
                raise AnnotationError(f"{w}.category_id = {vid!r} is not a verb id of vocabulary {vocabulary.name!r}")
            if no_obj:
                if no_object is None:
                    raise AnnotationError(f"{w}.object_id = -1, but vocabulary {vocabulary.name!r} has no no-object "
                                          "index")
                obj_label = no_object
            else:
                obj_label = labels[o]
            c = int(table[verb, obj_label])
            if c < 0:
                raise AnnotationError(f"{w}: verb {vocabulary.verbs[verb]!r} with object "
                                      f"{vocabulary.objects[obj_label]!r} is not an HOI class of the vocabulary")
            if "hoi_category_id" in h and dataset_format == "hico_det" and h["hoi_category_id"] != c + 1:
                raise AnnotationError(f"{w}.hoi_category_id = {h['hoi_category_id']!r}, but verb {vid} with object "
                                      f"category {anns[o]['category_id']} is HOI class {c + 1} (1-based)")
            rows.append((s, o, verb, obj_label, c))
        sub = boxes[[r[0] for r in rows]] if rows else torch.zeros(0, 4)
        obj = torch.stack([boxes[r[1]] if r[1] >= 0 else torch.zeros(4) for r in rows]) if rows else torch.zeros(0, 4)
        size = (int(rec["height"]), int(rec["width"])) if "height" in rec and "width" in rec else (0, 0)
        out.append(HOIGroundTruth(
            image_id=i,
            sub_boxes=sub,
            obj_boxes=obj,
            obj_labels=torch.tensor([r[3] for r in rows], dtype=torch.long),
            verb_labels=torch.tensor([r[2] for r in rows], dtype=torch.long),
            hoi_labels=torch.tensor([r[4] for r in rows], dtype=torch.long),
            size=size,
        ))
    return out


def ground_truth_from_instances(
    data: Mapping[str, Any], vocabulary: HOIVocabulary, source: str = "instances"
) -> list[HOIGroundTruth]:
    """``fredzzhang/hicodet`` ``instances_test2015.json`` (as loaded by ``json.load``) as ground truth.

    Assumes ``filenames``, ``size`` (``[width, height]`` per image), ``objects`` / ``verbs`` (names, the
    file's index order) and ``annotation``: per image ``boxes_h``, ``boxes_o`` (xyxy, the 1-based
    ``anno_bbox.mat`` values), ``hoi``, ``object``, ``verb`` (the file's indices). Objects and verbs are
    mapped to the vocabulary by name (``_`` = space); the HOI class is the vocabulary's class of the
    (verb, object) pair and must equal the file's ``hoi`` (both follow the official HICO-DET order).
    Boxes are shifted by -1 to the 0-based frame of the PPDM files. Images listed in ``empty`` simply have
    no rows. ``image_id`` is the position in ``filenames``; ``size`` is ``(height, width)``.
    """
    for key in ("annotation", "filenames", "size", "objects", "verbs"):
        _field(data, key, source)
    annotation, filenames, sizes = data["annotation"], data["filenames"], data["size"]
    if not (len(annotation) == len(filenames) == len(sizes)):
        raise AnnotationError(f"{source}: 'annotation' ({len(annotation)}), 'filenames' ({len(filenames)}) and "
                              f"'size' ({len(sizes)}) differ in length")
    obj_map = _name_map(data["objects"], vocabulary.objects, "object", f"{source}: field 'objects'")
    verb_map = _name_map(data["verbs"], vocabulary.verbs, "verb", f"{source}: field 'verbs'")
    table = _hoi_table(vocabulary)
    out = []
    for i, (ann, name, size) in enumerate(zip(annotation, filenames, sizes, strict=True)):
        where = f"{source}: image {i} ({name!r})"
        sub = _array(_field(ann, "boxes_h", where), "boxes_h", where, (None, 4), torch.float32)
        n = sub.shape[0]
        obj = _array(_field(ann, "boxes_o", where), "boxes_o", where, (n, 4), torch.float32)
        hoi_file = _array(_field(ann, "hoi", where), "hoi", where, (n,), torch.long)
        objects = obj_map[_index(_array(_field(ann, "object", where), "object", where, (n,), torch.long),
                                 "object", where, obj_map.numel(), "the file's object indices")]
        verbs = verb_map[_index(_array(_field(ann, "verb", where), "verb", where, (n,), torch.long),
                                "verb", where, verb_map.numel(), "the file's verb indices")]
        hoi = table[verbs, objects]
        bad = torch.nonzero((hoi < 0) | (hoi != hoi_file)).flatten()
        if bad.numel():
            j = int(bad[0])
            verb, obj_name = vocabulary.verbs[int(verbs[j])], vocabulary.objects[int(objects[j])]
            raise AnnotationError(f"{where}: pair {j}: hoi = {int(hoi_file[j])}, but verb {verb!r} with object "
                                  f"{obj_name!r} is class {int(hoi[j])} of the vocabulary")
        if not (isinstance(size, Sequence) and len(size) == 2):
            raise AnnotationError(f"{where}: field 'size' must be [width, height], got {size!r}")
        out.append(HOIGroundTruth(image_id=i, sub_boxes=sub - 1.0, obj_boxes=obj - 1.0, obj_labels=objects,
                                  verb_labels=verbs, hoi_labels=hoi, size=(int(size[1]), int(size[0]))))
    return out
