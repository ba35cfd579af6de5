"""Inference: the Python detector, the ``predict`` writer, result types and drawing.

* :class:`HOIDetector` -- ``HOIDetector.from_checkpoint(path).predict(image)``.
* :class:`HOIPredictionWriter` -- a Lightning callback that writes ``hoiclip predict`` results as JSON
  lines and drawn images.
* :class:`ImageDetections`, :class:`HOITriplet` -- typed results (pixel boxes, vocabulary names).
* :func:`draw_triplets` -- draw triplets on a PIL image.
"""

from .drawing import draw_triplets
from .predictor import EVAL_TRANSFORM_KEYS, HOIDetector, checkpoint_eval_transforms, load_checkpoint_file
from .results import SCHEMA_VERSION, HOITriplet, ImageDetections, to_image_detections
from .writer import HOIPredictionWriter

__all__ = [
    "EVAL_TRANSFORM_KEYS",
    "SCHEMA_VERSION",
    "HOIDetector",
    "HOIPredictionWriter",
    "HOITriplet",
    "ImageDetections",
    "checkpoint_eval_transforms",
    "draw_triplets",
    "load_checkpoint_file",
    "to_image_detections",
]
