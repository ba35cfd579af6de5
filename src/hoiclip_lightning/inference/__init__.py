"""Inference: the Python detector, the ``predict`` writer, result types and drawing.

* :class:`HOIDetector` -- ``HOIDetector.from_checkpoint(path).predict(image)``.
* :class:`HOIPredictionWriter` -- a Lightning callback that writes ``hoiclip predict`` results as JSON
  lines and drawn images.
* :class:`ImageDetections`, :class:`HOITriplet` -- typed results (pixel boxes, vocabulary names).
* :func:`draw_triplets` -- draw triplets on a PIL image.
* :func:`vocabulary_from_prompts` -- the label space of a typed list of HOI prompts (open vocabulary, for
  :meth:`HOIDetector.set_vocabulary`).
* :mod:`hoiclip_lightning.inference.demo` -- the ``hoiclip demo`` web page (Gradio, the ``[demo]`` extra) and
  what it runs (``DemoModel``, the result table), usable without Gradio.
"""

from .drawing import draw_triplets
from .predictor import EVAL_TRANSFORM_KEYS, HOIDetector, checkpoint_eval_transforms, load_checkpoint_file
from .prompt_list import parse_prompt, vocabulary_from_prompts
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
    "parse_prompt",
    "to_image_detections",
    "vocabulary_from_prompts",
]
