"""Typed, self-describing inference results (boxes in original-image pixels, names from the vocabulary).

One :class:`ImageDetections` per image, holding :class:`HOITriplet` objects sorted by descending score.
``ImageDetections.to_dict()`` is the JSON-lines record written by ``hoiclip predict`` (schema in
``docs/inference.md``)::

    {"file": "images/0001.jpg", "width": 640, "height": 480,
     "triplets": [{"human_box": [x1, y1, x2, y2], "object_box": [x1, y1, x2, y2],
                   "object": {"index": 40, "name": "cup"}, "verb": {"index": 36, "name": "hold"},
                   "hoi": {"index": 297, "name": "hold cup"}, "score": 0.87}]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..structures import HOIPrediction
from ..vocabulary import HOIVocabulary

#: version of the JSON-lines record layout (bump on incompatible changes)
SCHEMA_VERSION = 1


@dataclass
class HOITriplet:
    """One detected <human, verb, object> triplet.

    Attributes:
        human_box: ``(x1, y1, x2, y2)`` pixels of the original image.
        object_box: ``(x1, y1, x2, y2)`` pixels; all zeros for a role without object (V-COCO).
        object_index, object_name: object class (contiguous index into ``vocabulary.objects``).
        verb_index, verb_name: verb class (index into ``vocabulary.verbs``).
        hoi_index, hoi_name: HOI class (index into ``vocabulary.hois``); the name is ``"<verb> <object>"``.
        score: ranking score of the triplet (higher is more confident; see ``PostProcessConfig.score_mode``).
    """

    human_box: tuple[float, float, float, float]
    object_box: tuple[float, float, float, float]
    object_index: int
    object_name: str
    verb_index: int
    verb_name: str
    hoi_index: int
    hoi_name: str
    score: float

    @property
    def label(self) -> str:
        """Short caption, e.g. ``"hold cup"``."""
        return f"{self.verb_name} {self.object_name}"

    def to_dict(self, ndigits: int = 2) -> dict[str, Any]:
        """JSON-ready dict (boxes rounded to ``ndigits`` decimals, score to 4)."""
        return {
            "human_box": [round(float(v), ndigits) for v in self.human_box],
            "object_box": [round(float(v), ndigits) for v in self.object_box],
            "object": {"index": self.object_index, "name": self.object_name},
            "verb": {"index": self.verb_index, "name": self.verb_name},
            "hoi": {"index": self.hoi_index, "name": self.hoi_name},
            "score": round(float(self.score), 4),
        }


@dataclass
class ImageDetections:
    """Triplets detected in one image.

    Attributes:
        file: the image path (or ``""`` for an in-memory image).
        width, height: size of the original image in pixels (the boxes' frame).
        triplets: triplets in descending score order.
    """

    file: str
    width: int
    height: int
    triplets: list[HOITriplet] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.triplets)

    def top(self, k: int | None = None, score_threshold: float | None = None) -> list[HOITriplet]:
        """The first ``k`` triplets whose score is at least ``score_threshold`` (``None``: no limit)."""
        kept = [t for t in self.triplets if score_threshold is None or t.score >= score_threshold]
        return kept if k is None else kept[:k]

    def to_dict(self, k: int | None = None, score_threshold: float | None = None) -> dict[str, Any]:
        """The JSON-lines record (see the module docstring)."""
        return {
            "file": self.file,
            "width": self.width,
            "height": self.height,
            "triplets": [t.to_dict() for t in self.top(k, score_threshold)],
        }


def to_image_detections(
    prediction: HOIPrediction, vocabulary: HOIVocabulary, file: str, width: int, height: int
) -> ImageDetections:
    """Name the triplets of one :class:`HOIPrediction`.

    Args:
        prediction: post-processed triplets (``[K, 4]`` xyxy pixel boxes of the original image).
        vocabulary: the label space the model was trained with.
        file: image path to record.
        width, height: original image size.

    Returns:
        :class:`ImageDetections` with triplets sorted by descending score (stable).
    """
    scores = prediction.scores.detach().float().cpu()
    order = scores.argsort(descending=True, stable=True).tolist()
    sub = prediction.sub_boxes.detach().float().cpu().tolist()
    obj = prediction.obj_boxes.detach().float().cpu().tolist()
    objects = prediction.obj_labels.tolist()
    verbs = prediction.verb_labels.tolist()
    hois = prediction.hoi_labels.tolist()
    score_list = scores.tolist()
    triplets = []
    for i in order:
        o, v, c = int(objects[i]), int(verbs[i]), int(hois[i])
        object_name = vocabulary.objects[o] if 0 <= o < len(vocabulary.objects) else "nothing"
        triplets.append(
            HOITriplet(
                human_box=tuple(sub[i]),  # type: ignore[arg-type]
                object_box=tuple(obj[i]),  # type: ignore[arg-type]
                object_index=o,
                object_name=object_name,
                verb_index=v,
                verb_name=vocabulary.verbs[v],
                hoi_index=c,
                hoi_name=f"{vocabulary.verbs[v]} {object_name}",
                score=float(score_list[i]),
            )
        )
    return ImageDetections(file=file, width=int(width), height=int(height), triplets=triplets)
