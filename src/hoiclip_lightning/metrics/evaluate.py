"""``hoiclip evaluate``: score the prediction files of other HOI code bases (and our own) with the metrics.

Usage::

    hoiclip evaluate --predictions results.json --annotations test_hico.json
    hoiclip evaluate --predictions upt_outputs.pkl --annotations instances_test2015.json --protocol reference
    hoiclip evaluate --predictions preds.pkl --annotations test_hico.json --zero_shot rare_first --nms true
    hoiclip evaluate --predictions vcoco_preds.pkl --annotations test_vcoco.json --dataset vcoco

The formats read are those of :mod:`.dumps` and :mod:`.converters`. Predictions are paired with the
annotation file's images by file name when the records name one (``filename`` / ``file_name`` /
``file``, or the keys of a dict), else by position (a list as long as the annotation file; for an
``instances`` file also a list over its non-empty images, as UPT's test loop produces). Images without a
prediction count as images with no detection (their ground truth still counts), and the number is
printed. Writes ``metrics.json`` (every mean, per-class APs, counts) and ``per_class_ap.csv`` to
``--out`` (:func:`evaluate_to_folder`).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..errors import AnnotationError, ConfigurationError
from ..structures import HOIGroundTruth, HOIPrediction
from ..vocabulary import HOIVocabulary
from . import converters as C
from .dumps import AnnotationFile, PredictionFile, read_annotations, read_predictions
from .hico_det import PROTOCOLS, HICODetMAP
from .nms import triplet_nms
from .report import format_metric_table, write_per_class_ap
from .vcoco import VCOCORoleAP

logger = logging.getLogger(__name__)

DATASETS = ("hico_det", "vcoco")
#: ``(threshold, alpha, beta)`` of ``nms=True``: the defaults of :func:`.triplet_nms`
_TRIPLET_NMS_DEFAULTS = tuple(inspect.signature(triplet_nms).parameters[k].default
                              for k in ("threshold", "alpha", "beta"))


@dataclass
class EvaluationResult:
    """What :func:`evaluate_files` returns.

    Attributes:
        metrics: scalar means in percent (``mAP_full``, ``mAP_rare``, ..., ``mAP_role_s1``).
        per_class: per-class AP arrays in percent (``ap_per_class``, ``ap_per_class_ko``,
            ``ap_role_s1``, ``ap_role_s2``), NaN where a class is not evaluated.
        num_images: images of the annotation file; ``images_without_predictions`` of them had no record.
        num_triplets: triplets scored.
        skipped: triplets dropped by the converters, by reason.
        seconds: wall time of reading, converting and computing.
    """

    metrics: dict[str, float]
    per_class: dict[str, np.ndarray]
    num_images: int
    images_without_predictions: int
    num_triplets: int
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _ground_truth(ann: AnnotationFile, vocab: HOIVocabulary, dataset: str) -> list[HOIGroundTruth]:
    if ann.kind == "instances":
        if dataset != "hico_det":
            raise ConfigurationError(f"{ann.path}: an instances file is HICO-DET ground truth; use --dataset hico_det")
        return C.ground_truth_from_instances(ann.data, vocab, source=ann.path.name)
    return C.ground_truth_from_ppdm(ann.data, vocab, dataset_format=dataset, source=ann.path.name)


def _positions(preds: PredictionFile, ann: AnnotationFile) -> list[int]:
    """The annotation-file position of each prediction record."""
    n = len(ann.file_names)
    where = preds.path.name
    if preds.positions is not None:
        bad = [p for p in preds.positions if not 0 <= p < n]
        if bad:
            raise AnnotationError(f"{where}: image positions {bad[:5]} are outside the annotation file's 0..{n - 1}")
        out = list(preds.positions)
    elif all(name is not None for name in preds.names):
        index = {}
        for i, name in enumerate(ann.file_names):
            index.setdefault(Path(name).name, i)
        unknown = [name for name in preds.names if name not in index]
        if unknown:
            raise AnnotationError(f"{where}: {len(unknown)} record(s) name images absent from {ann.path.name}, "
                                  f"e.g. {unknown[:3]}")
        out = [index[name] for name in preds.names]  # type: ignore[index]
    else:
        m = len(preds.records)
        if m == n:
            out = list(range(n))
        elif ann.kind == "instances" and m == n - len(ann.data.get("empty", [])):
            empty = set(int(e) for e in ann.data.get("empty", []))
            out = [i for i in range(n) if i not in empty]
        else:
            raise AnnotationError(f"{where}: {m} records name no image, so they are paired by position, but "
                                  f"{ann.path.name} has {n} images")
    seen = Counter(out)
    dup = [p for p, k in seen.items() if k > 1]
    if dup:
        raise AnnotationError(f"{where}: image {ann.file_names[dup[0]]!r} has {seen[dup[0]]} prediction records")
    return out


def _convert(preds: PredictionFile, positions: list[int], gts: list[HOIGroundTruth], vocab: HOIVocabulary,
             options: dict[str, Any], skipped: Counter) -> list[HOIPrediction]:
    out = []
    for i, (rec, pos) in enumerate(zip(preds.records, positions, strict=True)):
        source = f"{preds.path.name}: record {i}" + (f" ({preds.names[i]!r})" if preds.names[i] else "")
        if preds.kind == "qpic_outputs":
            out.append(C.predictions_from_qpic(rec, pos, vocab, score_rule=options["score_rule"],
                                               topk=options["topk"], nms=options["nms"], source=source,
                                               skipped=skipped, per_verb=options["vcoco"]))
        elif preds.kind == "upt_outputs":
            size = gts[pos].size if gts[pos].size != (0, 0) else None
            out.append(C.predictions_from_upt(rec, pos, vocab, image_size=size, object_names=options["object_order"],
                                              verb_names=C.UPT_VCOCO_ACTIONS if options["vcoco"] else None,
                                              pixel_offset=options["pixel_offset"], source=source, skipped=skipped))
        elif preds.kind == "hoi_dump":
            out.append(C.predictions_from_hoi_dump(rec, pos, vocab, source=source, skipped=skipped,
                                                   category="verb" if options["vcoco"] else "hoi"))
        else:
            out.append(C.predictions_from_jsonl_record(rec, pos, vocab, source=source))
    return out


def _empty_prediction(image_id: int) -> HOIPrediction:
    z = torch.zeros(0, dtype=torch.long)
    return HOIPrediction(image_id, torch.zeros(0, 4), torch.zeros(0, 4), z, z.clone(), z.clone(), torch.zeros(0))


def evaluate_files(
    predictions: str | Path,
    annotations: str | Path,
    dataset: Literal["hico_det", "vcoco"] = "hico_det",
    protocol: Literal["official", "reference"] = "official",
    zero_shot: str = "default",
    vocabulary: str | Path | HOIVocabulary | None = None,
    score_rule: C.ScoreRule = "auto",
    topk: int | None = 100,
    nms: bool | tuple[float, float, float] | None = None,
    object_order: Literal["alphabetical", "vocabulary"] | None = None,
    pixel_offset: float | None = None,
    batch_size: int = 512,
) -> EvaluationResult:
    """Read, convert and score a prediction file against an annotation file.

    Args:
        predictions: the prediction file (see :mod:`.dumps`).
        annotations: PPDM / HOIA JSON list or ``instances_*.json``.
        dataset: ``hico_det`` or ``vcoco`` (V-COCO adds the role AP of :class:`VCOCORoleAP`).
        protocol: of :class:`HICODetMAP`: ``official`` or ``reference``.
        zero_shot: a zero-shot split of the vocabulary: adds Seen / Unseen.
        vocabulary: the label space (default: the built-in one of ``dataset``).
        score_rule: QPIC-family post-processor outputs: see :func:`.predictions_from_qpic`.
        topk: QPIC-family outputs: triplets kept per image (``None``: all).
        nms: QPIC-family outputs: ``(threshold, alpha, beta)`` of the triplet NMS (the evaluators'
            ``--use_nms_filter``); ``True``: the defaults of :func:`.triplet_nms`; ``None`` / ``False``: none.
        object_order: UPT-family outputs: order of ``objects`` (see :func:`.predictions_from_upt`);
            default ``alphabetical`` on HICO-DET, ``vocabulary`` (COCO order) on V-COCO.
        pixel_offset: UPT-family outputs: subtracted from every box coordinate; default 1 on HICO-DET (the
            1-based ``instances_*.json`` boxes), 0 on V-COCO.
        batch_size: images per metric update.

    On V-COCO the triplets of QPIC-family outputs and dumps are per (query, action-role class), as those
    code bases build them there (``per_verb=True`` of :func:`.predictions_from_qpic`, ``category="verb"``
    of :func:`.predictions_from_hoi_dump`), and the ``labels`` of UPT-family outputs are read as
    :data:`.UPT_VCOCO_ACTIONS`.
    """
    if dataset not in DATASETS:
        raise ConfigurationError(f"unknown dataset {dataset!r}; accepted: {DATASETS}")
    if protocol not in PROTOCOLS:
        raise ConfigurationError(f"unknown protocol {protocol!r}; accepted: {PROTOCOLS}")
    vocab = HOIVocabulary.resolve(vocabulary if vocabulary is not None else dataset)
    unseen = vocab.unseen_hois(zero_shot) if zero_shot != "default" else None
    seconds = {}
    t0 = time.perf_counter()
    ann = read_annotations(annotations)
    gts = _ground_truth(ann, vocab, dataset)
    pred_file = read_predictions(predictions)
    seconds["read"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    positions = _positions(pred_file, ann)
    skipped: Counter = Counter()
    vcoco = dataset == "vcoco"
    if object_order is None:
        object_order = "vocabulary" if vcoco else "alphabetical"
    if pixel_offset is None:
        pixel_offset = 0.0 if vcoco else 1.0
    if nms is True:
        nms = _TRIPLET_NMS_DEFAULTS
    options = {"score_rule": score_rule, "topk": topk, "nms": nms or None, "object_order": object_order,
               "pixel_offset": pixel_offset, "vcoco": vcoco}
    by_position = dict(zip(positions, _convert(pred_file, positions, gts, vocab, options, skipped), strict=True))
    missing = len(gts) - len(by_position)
    preds = [by_position[i] if i in by_position else _empty_prediction(i) for i in range(len(gts))]
    seconds["convert"] = time.perf_counter() - t0
    if missing:
        logger.warning("%s: %d of %d annotated images have no prediction record (scored as no detection)",
                       pred_file.path.name, missing, len(gts))
    if skipped:
        logger.info("%s: triplets dropped: %s", pred_file.path.name, dict(skipped))

    t0 = time.perf_counter()
    metrics_objs: list[Any] = [HICODetMAP(vocab, protocol=protocol, unseen_hois=unseen)]
    if dataset == "vcoco":
        metrics_objs.append(VCOCORoleAP(vocab))
    for metric in metrics_objs:
        for s in range(0, len(gts), batch_size):
            metric.update(preds[s:s + batch_size], gts[s:s + batch_size])
    scalars: dict[str, float] = {}
    per_class: dict[str, np.ndarray] = {}
    for metric in metrics_objs:
        for key, value in metric.compute().items():
            if value.numel() == 1:
                scalars[key] = float(value)
            else:
                per_class[key] = value.detach().cpu().numpy().astype(np.float64)
    seconds["compute"] = time.perf_counter() - t0
    return EvaluationResult(metrics=scalars, per_class=per_class, num_images=len(gts),
                            images_without_predictions=missing, num_triplets=sum(len(p) for p in preds),
                            skipped=dict(skipped), seconds=seconds)


def _json_value(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return [None if math.isnan(v) else v for v in x.tolist()]
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


@dataclass
class EvaluationReport:
    """What :func:`evaluate_to_folder` returns: the result, its table and the files written."""

    result: EvaluationResult
    table: str
    metrics_json: Path
    per_class_csv: Path

    @property
    def text(self) -> str:
        """The table, the counts and the files written (what ``hoiclip evaluate`` prints)."""
        r = self.result
        return "\n".join([
            self.table,
            f"{r.num_images} images ({r.images_without_predictions} without predictions), {r.num_triplets} triplets"
            + (f", dropped: {r.skipped}" if r.skipped else ""),
            f"written: {self.metrics_json}, {self.per_class_csv}"])


def evaluate_to_folder(predictions: str | Path, annotations: str | Path, out: str | Path = "hoiclip_evaluate",
                       **kwargs: Any) -> EvaluationReport:
    """Score a prediction dump of an HOI code base (QPIC/CDN/GEN-VLKT/HOICLIP, UPT/PViC, hoiclip predict).

    :func:`evaluate_files`, then the paper-style table and, in ``out``, ``metrics.json`` (every mean,
    per-class AP, counts, options) and ``per_class_ap.csv`` (with an ``ap_ko`` column when the
    Known-Object setting was scored).

    Args:
        predictions: ``results.json`` dump, pickle of post-processor outputs (``.pkl`` / ``.pt``) or
            ``hoiclip predict`` JSON lines (see :mod:`.dumps`).
        annotations: ``test_hico.json`` / ``test_vcoco.json`` (PPDM / HOIA) or ``instances_test2015.json``.
        out: folder for ``metrics.json`` and ``per_class_ap.csv``.
        **kwargs: the options of :func:`evaluate_files`.
    """
    result = evaluate_files(predictions, annotations, **kwargs)
    bound = inspect.signature(evaluate_files).bind(predictions, annotations, **kwargs)
    bound.apply_defaults()
    options = bound.arguments
    dataset, protocol, zero_shot = options["dataset"], options["protocol"], options["zero_shot"]
    title = f"HOI detection mAP ({dataset}, {protocol} protocol" + (
        f", zero-shot {zero_shot})" if zero_shot != "default" else ")")
    table = format_metric_table(result.metrics, rows=[(Path(predictions).name, "")], title=title)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = HOIVocabulary.resolve(options["vocabulary"] if options["vocabulary"] is not None else dataset)
    extra = {"ap_ko": result.per_class["ap_per_class_ko"]} if "ap_per_class_ko" in result.per_class else None
    csv_path = write_per_class_ap(folder / "per_class_ap.csv", vocab, result.per_class["ap_per_class"].tolist(),
                                  unseen_hois=vocab.unseen_hois(zero_shot), extra_columns=extra)
    report = {
        "predictions": str(predictions), "annotations": str(annotations), "dataset": dataset,
        "protocol": protocol, "zero_shot": zero_shot, "num_images": result.num_images,
        "images_without_predictions": result.images_without_predictions, "num_triplets": result.num_triplets,
        "skipped": result.skipped, "metrics": {k: _json_value(v) for k, v in result.metrics.items()},
        "per_class": {k: _json_value(v) for k, v in result.per_class.items()}, "seconds": result.seconds,
    }
    json_path = folder / "metrics.json"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    return EvaluationReport(result, table, json_path, csv_path)


if __name__ == "__main__":  # `python -m hoiclip_lightning.metrics.evaluate`: `hoiclip evaluate` without Lightning
    from jsonargparse import CLI

    sys.stdout.write(CLI(evaluate_to_folder, as_positional=False).text + "\n")
