"""HOI detection metrics: HICO-DET mAP (official and reference protocols) and V-COCO role AP.

Importing this package loads neither Lightning nor open_clip: the metrics, the converters from other HOI
code bases' outputs and ``hoiclip evaluate``'s reader can be used in any project.
"""

from .converters import (
    SCORE_RULES,
    UPT_VCOCO_ACTIONS,
    ground_truth_from_instances,
    ground_truth_from_ppdm,
    predictions_from_hoi_dump,
    predictions_from_jsonl_record,
    predictions_from_qpic,
    predictions_from_upt,
)
from .dumps import load_safe_pickle, read_annotations, read_predictions
from .evaluate import EvaluationResult, evaluate_files
from .functional import rare_hois_from_counts
from .hico_det import PROTOCOLS, HICODetMAP
from .official_export import write_official_detections
from .report import format_metric_table, write_per_class_ap
from .vcoco import VCOCORoleAP

__all__ = [
    "PROTOCOLS",
    "SCORE_RULES",
    "UPT_VCOCO_ACTIONS",
    "EvaluationResult",
    "HICODetMAP",
    "VCOCORoleAP",
    "evaluate_files",
    "format_metric_table",
    "ground_truth_from_instances",
    "ground_truth_from_ppdm",
    "load_safe_pickle",
    "predictions_from_hoi_dump",
    "predictions_from_jsonl_record",
    "predictions_from_qpic",
    "predictions_from_upt",
    "rare_hois_from_counts",
    "read_annotations",
    "read_predictions",
    "write_official_detections",
    "write_per_class_ap",
]
