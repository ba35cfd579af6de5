"""HOI detection metrics: HICO-DET mAP (official and reference protocols) and V-COCO role AP."""

from .functional import rare_hois_from_counts
from .hico_det import PROTOCOLS, HICODetMAP
from .official_export import write_official_detections
from .vcoco import VCOCORoleAP

__all__ = ["HICODetMAP", "PROTOCOLS", "VCOCORoleAP", "rare_hois_from_counts", "write_official_detections"]
