"""A procedural HOI world written in the HICO-DET (PPDM) layout, for tests, demos and the quickstart.

Every image shows 1 to 3 stick-figure people and 1 to 4 objects drawn with PIL. Each verb is defined by
the *geometry* between a person and an object (pose of the limbs, relative position, contact), never by a
colour code alone:

* ``hold`` -- a hand touches the object at hand height (umbrella: handle in the hand, suitcase: hanging);
* ``ride`` -- the person is on top of the object (seated on a bicycle/dog, standing on a skateboard);
* ``sit_on`` -- seated pose, hips on the object, thighs horizontal, hands on the lap;
* ``kick`` -- a leg extended, the foot touching the object;
* ``look_at`` -- eye turned toward the object and a dashed eye-line (also added on top of other verbs);
* ``carry`` -- both arms raised, the object resting above the head;
* ``throw`` -- an arm raised, the object in the air away from the hand, with motion marks;
* ``push`` -- leaning forward, arms extended, hands on the object's near side;
* ``fly`` -- a kite high up, a string from the raised hand;
* ``walk`` -- a leash from the hand to a dog walking ahead;
* ``no_interaction`` -- the object far away, the person facing away from it.

Boxes are the exact pixel extents of what was drawn (``[x1, y1, x2, y2]``, ``x2``/``y2`` exclusive).
Output is deterministic: the same seed gives byte-identical JSON and JPEG files.

Examples:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()) / "synth"
    >>> summary = generate_synthetic_dataset(root, seed=0, num_train=4, num_test=2, image_size=64)
    >>> summary.images
    {'train': 4, 'test': 2}
    >>> HOIVocabulary.from_json(root / "vocabulary.json").num_hois
    50
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import ConfigurationError
from ..vocabulary import RARE_THRESHOLD, HOIVocabulary

logger = logging.getLogger(__name__)

__all__ = ["EASY_WORLD", "SyntheticSummary", "generate_synthetic_dataset", "synthetic_vocabulary"]

# ---------------------------------------------------------------------------------------------- label space
OBJECTS = ["person", "bicycle", "dog", "umbrella", "suitcase", "sports ball", "kite", "skateboard", "bottle",
           "cup", "chair"]
OBJECT_CATEGORY_IDS = [1, 2, 18, 28, 33, 37, 38, 41, 44, 47, 62]  # COCO ids
VERBS = ["carry", "fly", "hold", "kick", "look_at", "no_interaction", "push", "ride", "sit_on", "throw", "walk"]
_GERUND = {"carry": "carrying", "fly": "flying", "hold": "holding", "kick": "kicking", "look_at": "looking at",
           "push": "pushing", "ride": "riding", "sit_on": "sitting on", "throw": "throwing", "walk": "walking"}

# (verb, object) -> design frequency weight of the primary interaction (long tail on purpose)
_DESIGN_WEIGHTS: dict[tuple[str, str], float] = {
    # head
    ("hold", "cup"): 10, ("hold", "sports ball"): 9, ("ride", "bicycle"): 10, ("kick", "sports ball"): 9,
    ("sit_on", "chair"): 9, ("fly", "kite"): 8, ("walk", "dog"): 8, ("hold", "umbrella"): 8,
    ("ride", "skateboard"): 8, ("hold", "bottle"): 7,
    # upper middle
    ("throw", "sports ball"): 6, ("carry", "suitcase"): 6, ("push", "bicycle"): 5.5, ("carry", "skateboard"): 5,
    ("hold", "suitcase"): 5, ("look_at", "dog"): 4.5, ("look_at", "kite"): 4.5, ("push", "chair"): 5,
    ("sit_on", "suitcase"): 5, ("hold", "kite"): 5, ("carry", "umbrella"): 4.5,
    ("no_interaction", "sports ball"): 4.5, ("no_interaction", "bicycle"): 4.5, ("no_interaction", "dog"): 4.5,
    ("no_interaction", "chair"): 4.5,
    # lower middle
    ("look_at", "sports ball"): 3.5, ("look_at", "bicycle"): 3.5, ("look_at", "cup"): 3.5, ("look_at", "chair"): 3.5,
    ("look_at", "umbrella"): 3.5, ("look_at", "bottle"): 3.5, ("look_at", "skateboard"): 3.5,
    ("look_at", "suitcase"): 3.5, ("throw", "bottle"): 4, ("push", "suitcase"): 4, ("hold", "skateboard"): 4,
    ("carry", "chair"): 4.5, ("no_interaction", "cup"): 4, ("no_interaction", "skateboard"): 4,
    # tail
    ("ride", "dog"): 0.6, ("throw", "cup"): 0.6, ("kick", "bottle"): 0.5, ("kick", "suitcase"): 0.6,
    ("carry", "dog"): 0.5, ("carry", "bicycle"): 0.5, ("sit_on", "bicycle"): 0.6,
    ("no_interaction", "bottle"): 0.6, ("no_interaction", "kite"): 0.5, ("no_interaction", "umbrella"): 0.5,
    ("no_interaction", "suitcase"): 0.5,
}
_HOI_PAIRS = sorted(_DESIGN_WEIGHTS, key=lambda vo: (OBJECTS.index(vo[1]), VERBS.index(vo[0])))
_LOOK_PROB = 0.3  # probability that a touching interaction also carries ``look_at``
_NO_LOOK = {"look_at", "no_interaction"}

# object sizes (width, height) in units of the person height, at scale 1
_OBJ_SIZE = {"bicycle": (0.95, 0.58), "dog": (0.62, 0.42), "umbrella": (0.6, 0.62), "suitcase": (0.42, 0.36),
             "sports ball": (0.24, 0.24), "kite": (0.36, 0.52), "skateboard": (0.62, 0.12), "bottle": (0.14, 0.38),
             "cup": (0.21, 0.22), "chair": (0.4, 0.62)}
_AIRBORNE = {"kite"}

_DARK = [(178, 34, 34), (25, 25, 112), (0, 100, 0), (128, 0, 128), (139, 69, 19), (0, 0, 205), (199, 21, 133),
         (47, 79, 79), (160, 82, 45), (70, 50, 150), (0, 110, 110), (200, 80, 0), (30, 30, 30), (105, 20, 60)]
_SKIN = [(141, 85, 36), (198, 134, 66), (224, 172, 105), (110, 70, 40), (170, 110, 70)]

#: the easier world of the CPU quickstart (``hoiclip synth --easy true``): one annotated pair per image, plain
#: background; the keyword arguments of :func:`generate_synthetic_dataset` that make it
EASY_WORLD: dict[str, Any] = {"max_people": 1, "distractors": False, "clutter": False}

# split -> (image folder, annotation file, random stream): each split draws from its own stream of the seed,
# so its images differ from those of every other split and adding a split leaves the others byte-identical
_SPLITS = {"train": ("train2015", "trainval_hico.json", 1), "test": ("test2015", "test_hico.json", 2),
           "val": ("val2015", "val_hico.json", 3)}


@dataclass
class SyntheticSummary:
    """What :func:`generate_synthetic_dataset` wrote.

    Attributes:
        root: dataset root (HICO-DET layout).
        images: images per split (``train``/``test``, and ``val`` when a validation split was written).
        pairs: distinct annotated (person, object) pairs per split.
        hoi_instances: HOI annotations (one per pair and verb) per split.
        num_objects, num_verbs, num_hois: size of the label space.
        rare_hois: HOI classes with fewer than 10 training instances in the generated train split.
        hoi_counts: training instances per HOI class.
    """

    root: Path
    images: dict[str, int]
    pairs: dict[str, int]
    hoi_instances: dict[str, int]
    num_objects: int
    num_verbs: int
    num_hois: int
    rare_hois: list[int] = field(default_factory=list)
    hoi_counts: list[int] = field(default_factory=list)

    @property
    def num_rare(self) -> int:
        return len(self.rare_hois)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _hoi_prompt(verb: str, obj: str) -> str:
    if verb == "no_interaction":
        return f"a photo of a person and {_article(obj)} {obj}"
    return f"a photo of a person {_GERUND[verb]} {_article(obj)} {obj}"


def _zero_shot(counts: list[int]) -> dict[str, list[int]]:
    n = len(_HOI_PAIRS)
    k = max(1, round(0.25 * n))
    order = sorted(range(n), key=lambda c: (counts[c], c))
    rare = [c for c in order if counts[c] < RARE_THRESHOLD]
    rare_first = sorted((rare + [c for c in order if c not in rare])[:k])
    non_rare = [c for c in reversed(order) if counts[c] >= RARE_THRESHOLD and _HOI_PAIRS[c][0] != "no_interaction"]
    return {
        "default": [],
        "rare_first": rare_first,
        "non_rare_first": sorted(non_rare[:k]),
        "unseen_object": [c for c, (_, o) in enumerate(_HOI_PAIRS) if o == "umbrella"],
        "unseen_verb": [c for c, (v, _) in enumerate(_HOI_PAIRS) if v == "push"],
    }


def synthetic_vocabulary(hoi_counts: list[int] | None = None) -> HOIVocabulary:
    """The vocabulary of the synthetic world (11 objects, 11 verbs, 50 HOI classes).

    Args:
        hoi_counts: training instances per HOI class; the rare set (fewer than ``RARE_THRESHOLD``) and the
            ``rare_first`` / ``non_rare_first`` zero-shot splits are computed from it. Without it, the counts
            expected for the default 400 training images are used (about 4 per unit of design weight; the generator
            passes the measured counts instead).
    """
    if hoi_counts is None:
        hoi_counts = [round(4 * _DESIGN_WEIGHTS[p]) for p in _HOI_PAIRS]
    if len(hoi_counts) != len(_HOI_PAIRS):
        raise ConfigurationError(f"hoi_counts must have {len(_HOI_PAIRS)} entries, got {len(hoi_counts)}")
    return HOIVocabulary(
        name="synthetic",
        objects=list(OBJECTS),
        object_category_ids=list(OBJECT_CATEGORY_IDS),
        verbs=list(VERBS),
        verb_ids=list(range(1, len(VERBS) + 1)),
        hois=[(VERBS.index(v), OBJECTS.index(o)) for v, o in _HOI_PAIRS],
        hoi_prompts=[_hoi_prompt(v, o) for v, o in _HOI_PAIRS],
        object_prompts=[f"a photo of {_article(o)} {o}" for o in OBJECTS] + ["a photo of nothing"],
        rare_hois=[c for c, n in enumerate(hoi_counts) if n < RARE_THRESHOLD],
        zero_shot_unseen=_zero_shot(list(hoi_counts)),
    )


# ---------------------------------------------------------------------------------------------- geometry
# Local coordinates of a group, in units of the person height: x to the right (toward the object), y down,
# ground at y = 0. Everything is designed facing right and mirrored for groups facing left.
Pt = tuple[float, float]


def _standing() -> dict[str, Any]:
    return {
        "head": (0.0, -0.89), "r": 0.11, "neck": (0.0, -0.77), "hip": (0.0, -0.45),
        "fe": (0.08, -0.6), "fh": (0.12, -0.46), "be": (-0.08, -0.6), "bh": (-0.12, -0.46),
        "fk": (0.05, -0.23), "ff": (0.1, 0.0), "bk": (-0.05, -0.23), "bf": (-0.1, 0.0),
    }


def _shift(p: Pt, dx: float, dy: float) -> Pt:
    return (p[0] + dx, p[1] + dy)


def _mid(a: Pt, b: Pt, bend: float = 0.0) -> Pt:
    """Midpoint of a-b pushed sideways (perpendicular, +y side for bend > 0) by ``bend``."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    n = math.hypot(dx, dy) or 1.0
    return ((a[0] + b[0]) / 2 - dy / n * bend, (a[1] + b[1]) / 2 + dx / n * bend)


def _anchor(box: tuple[float, float, float, float], u: float, v: float) -> Pt:
    return (box[0] + u * (box[2] - box[0]), box[1] + v * (box[3] - box[1]))


def _raise_upper(p: dict[str, Any], dy: float) -> None:
    for k in ("head", "neck", "hip", "fe", "fh", "be", "bh"):
        p[k] = _shift(p[k], 0.0, dy)


def _layout_group(verb: str, obj: str, scale: float, rng: np.random.Generator) -> dict[str, Any]:
    """Person joints, object box and decorations of one person-object group, facing right, in h units."""
    w, hh = (s * scale for s in _OBJ_SIZE[obj])
    p = _standing()
    lines: list[tuple[str, Pt, Pt]] = []  # ("leash" | "string" | "motion", a, b)
    jit = float(rng.uniform(-0.03, 0.03))

    def on_ground(x0: float) -> tuple[float, float, float, float]:
        return (x0, -hh, x0 + w, 0.0)

    if verb == "hold":
        if obj == "umbrella":
            p["fh"], p["fe"] = (0.22, -0.66 + jit), (0.16, -0.55)
            hx, hy = p["fh"]
            box = (hx - 0.5 * w, hy - 0.9 * hh, hx + 0.5 * w, hy + 0.1 * hh)
        elif obj == "suitcase":
            p["fh"], p["fe"] = (0.2, -0.42), (0.13, -0.57)
            hx, hy = p["fh"]
            box = (hx - 0.35 * w, hy - 0.02, hx + 0.65 * w, hy - 0.02 + hh)
        else:
            p["fh"], p["fe"] = (0.3, -0.52 + jit), (0.17, -0.56)
            hx, hy = p["fh"]
            box = (hx - 0.03, hy - hh / 2, hx - 0.03 + w, hy + hh / 2)
    elif verb == "carry":
        cx = float(rng.uniform(-0.05, 0.08))
        box = (cx - w / 2, -1.1 - hh, cx + w / 2, -1.1)
        p["fh"], p["fe"] = (cx + min(0.16, w / 3), -1.09), (0.2, -0.92)
        p["bh"], p["be"] = (cx - min(0.16, w / 3), -1.09), (-0.2, -0.92)
    elif verb == "throw":
        p["fh"], p["fe"] = (0.2, -1.07), (0.14, -0.9)
        p["be"], p["bh"] = (-0.12, -0.62), (-0.22, -0.55)
        cx, cy = 0.2 + 0.32 + w / 2 + float(rng.uniform(0, 0.1)), -1.1 - float(rng.uniform(0.0, 0.15))
        box = (cx - w / 2, cy - hh / 2, cx + w / 2, cy + hh / 2)
        lines.append(("motion", (0.26, -1.1), (cx - w / 2 - 0.04, cy)))
    elif verb == "push":
        x0 = 0.42 + float(rng.uniform(0.0, 0.04))
        box = on_ground(x0)
        p["head"], p["neck"] = (0.13, -0.85), (0.09, -0.74)
        p["bf"], p["bk"] = (-0.26, 0.0), (-0.13, -0.22)
        hy = max(box[1] + 0.06, -0.72)
        p["fh"], p["bh"] = (x0 + 0.01, hy), (x0 + 0.0, hy + 0.05)
        p["fe"], p["be"] = _mid(p["neck"], p["fh"]), _mid(p["neck"], p["bh"])
    elif verb == "kick":
        p["fk"], p["ff"] = (0.17, -0.27), (0.34, -0.1)
        p["bk"], p["bf"] = (-0.02, -0.23), (-0.05, 0.0)
        p["be"], p["bh"] = (-0.14, -0.62), (-0.27, -0.62)
        p["fe"], p["fh"] = (0.12, -0.62), (0.22, -0.7)
        box = on_ground(p["ff"][0] - 0.01)
    elif verb == "look_at":
        gap = float(rng.uniform(0.25, 0.45))
        box = (0.2 + gap, -1.3, 0.2 + gap + w, -1.3 + hh) if obj in _AIRBORNE else on_ground(0.2 + gap)
    elif verb == "fly":
        cx, top = 0.4 + w / 2 + float(rng.uniform(0.0, 0.2)), -1.45 + float(rng.uniform(0.0, 0.08))
        box = (cx - w / 2, top, cx + w / 2, top + hh)
        p["fh"], p["fe"] = (0.2, -0.98), (0.15, -0.8)
        lines.append(("string", p["fh"], _anchor(box, 0.5, 0.7)))
    elif verb == "walk":
        x0 = 0.32 + float(rng.uniform(0.0, 0.12))
        box = on_ground(x0)
        p["ff"], p["fk"], p["bf"], p["bk"] = (0.17, 0.0), (0.08, -0.23), (-0.17, 0.0), (-0.08, -0.23)
        p["fh"], p["fe"] = (0.22, -0.45), (0.12, -0.57)
        lines.append(("leash", p["fh"], _anchor(box, 0.76, 0.42)))
    elif verb == "no_interaction":
        gap = float(rng.uniform(0.75, 1.0))
        box = (0.2 + gap, -1.3, 0.2 + gap + w, -1.3 + hh) if obj in _AIRBORNE else on_ground(0.2 + gap)
    elif verb == "ride" and obj == "skateboard":
        box = (-w / 2, -hh, w / 2, 0.0)
        p["ff"], p["bf"] = (0.17, -0.8 * hh), (-0.17, -0.8 * hh)
        _raise_upper(p, -0.8 * hh - 0.02)
        p["fk"], p["bk"] = _mid(p["hip"], p["ff"], -0.02), _mid(p["hip"], p["bf"], 0.02)
        p["fe"], p["fh"] = _shift(p["neck"], 0.14, 0.02), _shift(p["neck"], 0.27, 0.08)
        p["be"], p["bh"] = _shift(p["neck"], -0.14, 0.02), _shift(p["neck"], -0.27, 0.08)
    elif verb in ("ride", "sit_on"):
        if obj == "bicycle":
            box = on_ground(-0.32 * w)
            seat = _anchor(box, 0.3, 0.02)
        elif obj == "dog":
            box = on_ground(-0.45 * w)
            seat = _anchor(box, 0.45, 0.3)
        elif obj == "chair":
            box = on_ground(-0.35 * w)
            seat = _anchor(box, 0.4, 0.48)
        else:  # suitcase lying on the ground
            box = on_ground(-0.5 * w)
            seat = _anchor(box, 0.5, 0.17)
        hip = (seat[0], seat[1] - 0.03)
        lean = 0.1 if (verb == "ride" and obj == "bicycle") else 0.0
        p["hip"] = hip
        p["neck"] = (hip[0] + lean, hip[1] - 0.32)
        p["head"] = (hip[0] + lean * 1.3, hip[1] - 0.44)
        if verb == "ride" and obj == "bicycle":
            bar, crank = _anchor(box, 0.77, 0.0), _anchor(box, 0.45, 1.0 - 0.25 * w / hh)
            p["fh"] = p["bh"] = bar
            p["fe"], p["be"] = _mid(p["neck"], bar, -0.03), _mid(p["neck"], bar, -0.05)
            p["ff"], p["bf"] = _shift(crank, 0.06, 0.02), _shift(crank, -0.04, 0.05)
            p["fk"], p["bk"] = _shift(hip, 0.2, 0.1), _shift(hip, 0.13, 0.16)
        else:
            p["fe"], p["be"] = _shift(p["neck"], 0.07, 0.14), _shift(p["neck"], 0.03, 0.15)
            p["fh"], p["bh"] = _shift(hip, 0.16, -0.04), _shift(hip, 0.12, -0.03)
            if obj == "dog" or obj == "bicycle":
                p["fk"], p["ff"] = _shift(hip, 0.1, 0.16), _shift(hip, 0.06, 0.32)
                p["bk"], p["bf"] = _shift(hip, 0.06, 0.17), _shift(hip, 0.02, 0.33)
            else:
                knee_y = hip[1] + 0.02
                p["fk"], p["bk"] = (hip[0] + 0.24, knee_y), (hip[0] + 0.21, knee_y + 0.01)
                p["ff"], p["bf"] = (hip[0] + 0.27, 0.0), (hip[0] + 0.22, 0.0)
    else:  # pragma: no cover - the vocabulary has no other verb
        raise ConfigurationError(f"no layout for verb {verb!r}")
    return {"person": p, "box": box, "lines": lines}


def _person_extent(p: dict[str, Any]) -> tuple[float, float, float, float]:
    pts = [v for k, v in p.items() if k not in ("r", "eye_dir")]
    pad = 0.04
    xs, ys = [q[0] for q in pts], [q[1] for q in pts]
    r = p["r"]
    return (min(min(xs), p["head"][0] - r) - pad, min(min(ys), p["head"][1] - r) - pad,
            max(max(xs), p["head"][0] + r) + pad, max(ys) + pad)


def _union(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float, float]:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


# ---------------------------------------------------------------------------------------------- drawing
class _Frame:
    """Maps unit-box coordinates of an object (facing right) to pixels, mirrored when ``flip``."""

    def __init__(self, box: tuple[float, float, float, float], flip: bool) -> None:
        self.x0, self.y0, self.x1, self.y1 = box
        self.w, self.h, self.flip = self.x1 - self.x0, self.y1 - self.y0, flip

    def __call__(self, u: float, v: float) -> tuple[float, float]:
        if self.flip:
            u = 1.0 - u
        return (self.x0 + u * self.w, self.y0 + v * self.h)

    def rect(self, u0: float, v0: float, u1: float, v1: float) -> list[float]:
        a, b = self(u0, v0), self(u1, v1)
        return [min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1])]


def _draw_object(d: ImageDraw.ImageDraw, obj: str, box: tuple[float, float, float, float], flip: bool,
                 color: tuple[int, int, int], rng: np.random.Generator) -> None:
    f = _Frame(box, flip)
    lw = max(2, round(0.06 * min(f.w, f.h) + 1))
    ink = (20, 20, 20)
    if obj == "sports ball":
        d.ellipse(f.rect(0, 0, 1, 1), fill=color, outline=ink, width=max(1, lw // 2))
        d.arc(f.rect(0.25, -0.1, 1.25, 1.1), 110, 250, fill=(245, 245, 245), width=max(1, lw // 2))
        d.line([f(0.05, 0.5), f(0.95, 0.5)], fill=(245, 245, 245), width=max(1, lw // 2))
    elif obj == "bicycle":
        rw = 0.25 * f.w
        for u in (0.25, 0.75):
            c = f(u, 1.0 - rw / f.h)
            d.ellipse([c[0] - rw, c[1] - rw, c[0] + rw, c[1] + rw], outline=ink, width=lw)
            d.ellipse([c[0] - 2, c[1] - 2, c[0] + 2, c[1] + 2], fill=ink)
        hub_v = 1.0 - rw / f.h
        rear, front, crank = f(0.25, hub_v), f(0.75, hub_v), f(0.45, hub_v)
        seat_post, neck, bar = f(0.32, 0.12), f(0.72, 0.14), f(0.77, 0.0)
        d.line([rear, crank, seat_post, rear], fill=color, width=lw)
        d.line([seat_post, neck, crank], fill=color, width=lw)
        d.line([neck, front], fill=color, width=lw)
        d.line([neck, bar], fill=color, width=lw)
        d.line([f(0.7, 0.0), f(0.84, 0.0)], fill=ink, width=lw)
        d.line([f(0.22, 0.03), f(0.38, 0.03)], fill=ink, width=lw + 1)
    elif obj == "cup":
        d.ellipse(f.rect(0.55, 0.22, 1.0, 0.72), outline=color, width=lw + 1)
        d.polygon([f(0.0, 0.04), f(0.7, 0.04), f(0.62, 1.0), f(0.08, 1.0)], fill=color, outline=ink)
        d.line([f(0.0, 0.04), f(0.7, 0.04)], fill=ink, width=max(1, lw // 2))
    elif obj == "chair":
        d.rectangle(f.rect(0.0, 0.0, 0.16, 0.56), fill=color, outline=ink)
        d.rectangle(f.rect(0.0, 0.48, 1.0, 0.6), fill=color, outline=ink)
        d.rectangle(f.rect(0.02, 0.6, 0.14, 1.0), fill=color)
        d.rectangle(f.rect(0.86, 0.6, 0.98, 1.0), fill=color)
        d.line([f(0.05, 0.12), f(0.05, 0.42)], fill=ink, width=1)
    elif obj == "kite":
        d.polygon([f(0.5, 0.0), f(1.0, 0.3), f(0.5, 0.72), f(0.0, 0.3)], fill=color, outline=ink)
        d.line([f(0.5, 0.0), f(0.5, 0.72)], fill=ink, width=1)
        d.line([f(0.0, 0.3), f(1.0, 0.3)], fill=ink, width=1)
        pts = [f(0.5 + (0.12 if i % 2 else -0.12) * (i > 0), 0.72 + 0.07 * i) for i in range(5)]
        d.line(pts, fill=ink, width=max(1, lw // 2))
    elif obj == "umbrella":
        d.pieslice(f.rect(0.0, 0.0, 1.0, 0.8), 180, 360, fill=color, outline=ink)
        d.line([f(0.5, 0.38), f(0.5, 0.9)], fill=ink, width=lw)
        d.arc(f.rect(0.5, 0.8, 0.68, 1.0), 0, 180, fill=ink, width=lw)
    elif obj == "bottle":
        d.rectangle(f.rect(0.0, 0.36, 1.0, 1.0), fill=color, outline=ink)
        d.polygon([f(0.0, 0.37), f(0.3, 0.2), f(0.7, 0.2), f(1.0, 0.37)], fill=color, outline=ink)
        d.rectangle(f.rect(0.3, 0.06, 0.7, 0.22), fill=color, outline=ink)
        d.rectangle(f.rect(0.24, 0.0, 0.76, 0.07), fill=ink)
        d.rectangle(f.rect(0.0, 0.55, 1.0, 0.72), fill=(235, 235, 220))
    elif obj == "skateboard":
        r = max(1, round(0.25 * f.h))
        d.rounded_rectangle(f.rect(0.0, 0.0, 1.0, 0.55), radius=r, fill=color, outline=ink)
        wr = 0.22 * f.h
        for u in (0.2, 0.8):
            c = f(u, 0.78)
            d.ellipse([c[0] - wr, c[1] - wr, c[0] + wr, c[1] + wr], fill=ink)
    elif obj == "dog":
        for u in (0.2, 0.32, 0.6, 0.72):
            d.rectangle(f.rect(u, 0.55, u + 0.08, 1.0), fill=color, outline=ink)
        d.line([f(0.14, 0.45), f(0.0, 0.15)], fill=color, width=lw)
        d.ellipse(f.rect(0.1, 0.28, 0.84, 0.72), fill=color, outline=ink)
        d.ellipse(f.rect(0.66, 0.02, 0.96, 0.44), fill=color, outline=ink)
        d.polygon([f(0.9, 0.26), f(1.0, 0.3), f(1.0, 0.4), f(0.88, 0.4)], fill=color, outline=ink)
        d.polygon([f(0.68, 0.12), f(0.72, 0.0), f(0.78, 0.1)], fill=ink)
        d.ellipse(f.rect(0.82, 0.14, 0.86, 0.2), fill=ink)
    elif obj == "suitcase":
        d.rectangle(f.rect(0.34, 0.0, 0.66, 0.22), outline=ink, width=lw)
        d.rounded_rectangle(f.rect(0.0, 0.18, 1.0, 1.0), radius=max(1, round(0.08 * f.w)), fill=color, outline=ink)
        for u in (0.25, 0.75):
            d.line([f(u, 0.2), f(u, 0.98)], fill=ink, width=max(1, lw // 2))
    else:  # pragma: no cover
        raise ConfigurationError(f"no drawing for object {obj!r}")


def _draw_person(d: ImageDraw.ImageDraw, px: dict[str, Any], colors: dict[str, tuple[int, int, int]]) -> None:
    r = px["r"]
    limb = max(2, round(0.42 * r))
    torso = max(4, round(1.15 * r))
    d.line([px["bk"], px["bf"]], fill=colors["pants"], width=limb)
    d.line([px["hip"], px["bk"]], fill=colors["pants"], width=limb)
    d.line([px["hip"], px["fk"], px["ff"]], fill=colors["pants"], width=limb, joint="curve")
    d.line([px["neck"], px["be"], px["bh"]], fill=colors["shirt"], width=limb, joint="curve")
    d.line([px["neck"], px["hip"]], fill=colors["shirt"], width=torso)
    d.line([px["neck"], px["fe"], px["fh"]], fill=colors["shirt"], width=limb, joint="curve")
    hr = max(2.0, 0.3 * r)
    for k in ("fh", "bh"):
        x, y = px[k]
        d.ellipse([x - hr, y - hr, x + hr, y + hr], fill=colors["skin"])
    for k in ("ff", "bf"):
        x, y = px[k]
        d.ellipse([x - hr, y - hr * 0.8, x + hr, y + hr * 0.8], fill=(25, 25, 25))
    hx, hy = px["head"]
    d.ellipse([hx - r, hy - r, hx + r, hy + r], fill=colors["skin"], outline=(20, 20, 20), width=max(1, round(r / 8)))
    ex, ey = hx + 0.5 * r * px["eye_dir"], hy - 0.1 * r
    er = max(1.5, 0.2 * r)
    d.ellipse([ex - er, ey - er, ex + er, ey + er], fill=(255, 255, 255))
    d.ellipse([ex - er / 2, ey - er / 2, ex + er / 2, ey + er / 2], fill=(0, 0, 0))


def _dashed(d: ImageDraw.ImageDraw, a: Pt, b: Pt, color: tuple[int, int, int], on: float = 4, off: float = 3,
            width: int = 1) -> None:
    length = math.hypot(b[0] - a[0], b[1] - a[1])
    if length < 1:
        return
    ux, uy = (b[0] - a[0]) / length, (b[1] - a[1]) / length
    t = 0.0
    while t < length:
        e = min(length, t + on)
        d.line([(a[0] + ux * t, a[1] + uy * t), (a[0] + ux * e, a[1] + uy * e)], fill=color, width=width)
        t += on + off


def _background(rng: np.random.Generator, size: int, clutter: bool = True) -> Image.Image:
    base = rng.integers(175, 236, size=3)
    img = Image.new("RGB", (size, size), tuple(int(c) for c in base))
    d = ImageDraw.Draw(img)
    horizon = int(rng.uniform(0.45, 0.7) * size)
    ground = np.clip(base + rng.integers(-25, 10, size=3), 150, 245)
    d.rectangle([0, horizon, size, size], fill=tuple(int(c) for c in ground))
    for _ in range(int(rng.integers(3, 8)) if clutter else 0):
        c = np.clip(base + rng.integers(-22, 22, size=3), 150, 250)
        x, y = rng.uniform(-0.2, 1.0, size=2) * size
        w, h = rng.uniform(0.1, 0.5, size=2) * size
        shape = d.ellipse if rng.random() < 0.5 else d.rectangle
        shape([x, y, x + w, y + h], fill=tuple(int(v) for v in c))
    return img


def _to_px(p: Pt, ox: float, gy: float, h: float, flip: bool) -> tuple[float, float]:
    return (ox + (-p[0] if flip else p[0]) * h, gy + p[1] * h)


def _box_px(b: tuple[float, ...], ox: float, gy: float, h: float, flip: bool) -> tuple[float, float, float, float]:
    (ax, ay), (bx, by) = _to_px((b[0], b[1]), ox, gy, h, flip), _to_px((b[2], b[3]), ox, gy, h, flip)
    return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


def _choice(rng: np.random.Generator, seq: list[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _render(args: tuple[int, str, int, int, str, int, bool, bool]) -> tuple[dict[str, Any], str]:
    """Render one image, write it, and return its annotation record and caption."""
    seed, split, index, size, image_dir, max_people, distractors_on, clutter = args
    rng = np.random.default_rng([seed, _SPLITS[split][2], index])
    weights = np.array([_DESIGN_WEIGHTS[p] for p in _HOI_PAIRS], dtype=np.float64)
    weights /= weights.sum()
    n_people = min(int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2])), max_people)
    groups = []
    for _ in range(n_people):
        c = int(rng.choice(len(_HOI_PAIRS), p=weights))
        verb, obj = _HOI_PAIRS[c]
        lay = _layout_group(verb, obj, float(rng.uniform(0.85, 1.15)), rng)
        verbs = [verb]
        if verb not in _NO_LOOK and ("look_at", obj) in _DESIGN_WEIGHTS and rng.random() < _LOOK_PROB:
            verbs.append("look_at")
        lay["person"]["eye_dir"] = -1.0 if verb == "no_interaction" else (1.0 if "look_at" in verbs else -1.0)
        ext = _union(_person_extent(lay["person"]), lay["box"])
        groups.append({"obj": obj, "verbs": verbs, "lay": lay, "ext": ext, "flip": bool(rng.random() < 0.5)})

    # scale: person height in pixels, shrinking or dropping groups until everything fits
    target = {1: (0.45, 0.62), 2: (0.38, 0.52), 3: (0.3, 0.42)}
    margin, gap = 0.03 * size, 0.04 * size
    while True:
        lo, hi = target[len(groups)]
        widths = [g["ext"][2] - g["ext"][0] for g in groups]
        heights = [g["ext"][3] - g["ext"][1] for g in groups]
        h = min(float(rng.uniform(lo, hi)) * size,
                (size - 2 * margin - gap * (len(groups) - 1)) / sum(widths),
                (size - 2 * margin) / max(heights))
        if h >= 0.25 * size or len(groups) == 1:
            break
        groups.pop()
    slack = size - 2 * margin - gap * (len(groups) - 1) - h * sum(widths)
    cuts = np.sort(rng.uniform(0, max(slack, 0.0), size=len(groups)))
    x = margin
    prev = 0.0
    for g, cut, wd in zip(groups, cuts, widths, strict=True):
        x += float(cut - prev)
        prev = float(cut)
        e0, e1 = g["ext"][0], g["ext"][2]
        g["ox"] = x - e0 * h if not g["flip"] else x + e1 * h
        lo_g, hi_g = margin - g["ext"][1] * h, size - margin - g["ext"][3] * h
        g["gy"] = float(rng.uniform(lo_g, max(lo_g, hi_g)))
        x += wd * h + gap

    img = _background(rng, size, clutter)
    canvas = img.convert("RGBA")
    entities: list[dict[str, Any]] = []  # {"kind": "person"/obj, "bbox"}
    line_layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ld = ImageDraw.Draw(line_layer)

    def paint(draw_fn: Any) -> tuple[int, int, int, int] | None:
        nonlocal canvas
        layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        draw_fn(ImageDraw.Draw(layer))
        bb = layer.getchannel("A").getbbox()
        canvas = Image.alpha_composite(canvas, layer)
        return bb

    # distractors first (drawn behind), placed away from the groups
    placed = [_box_px(g["ext"], g["ox"], g["gy"], h, g["flip"]) for g in groups]
    n_extra = int(rng.integers(0, 4 - len(groups) + 1)) if rng.random() < 0.5 else 0
    n_extra = n_extra if distractors_on else 0
    distractors = []
    for _ in range(n_extra):
        obj = _choice(rng, OBJECTS[1:])
        s = float(rng.uniform(0.8, 1.0)) * h
        w, hh = _OBJ_SIZE[obj][0] * s, _OBJ_SIZE[obj][1] * s
        for _try in range(20):
            x0 = float(rng.uniform(margin, size - margin - w))
            y0 = float(rng.uniform(margin, size - margin - hh))
            cand = (x0, y0, x0 + w, y0 + hh)
            sep = 0.3 * h
            if all(cand[2] + sep < b[0] or b[2] + sep < cand[0] or cand[3] + sep < b[1] or b[3] + sep < cand[1]
                   for b in placed):
                placed.append(cand)
                distractors.append((obj, cand, bool(rng.random() < 0.5), _choice(rng, _DARK)))
                break
    for obj, cand, flip, color in distractors:
        bb = paint(lambda d, o=obj, c=cand, fl=flip, col=color: _draw_object(d, o, c, fl, col, rng))
        if bb is not None:
            entities.append({"kind": obj, "bbox": bb, "person": False})

    hois: list[tuple[int, int, str]] = []  # (subject entity, object entity, verb)
    people_px = []
    for g in groups:
        ox, gy, flip, lay = g["ox"], g["gy"], g["flip"], g["lay"]
        obox = _box_px(lay["box"], ox, gy, h, flip)
        color = _choice(rng, _DARK)
        bb = paint(lambda d, o=g["obj"], c=obox, fl=flip, col=color: _draw_object(d, o, c, fl, col, rng))
        g["obj_entity"] = len(entities)
        entities.append({"kind": g["obj"], "bbox": bb, "person": False})
        px = {k: (v * h if k == "r" else (v * (-1 if flip else 1) if k == "eye_dir" else _to_px(v, ox, gy, h, flip)))
              for k, v in lay["person"].items()}
        colors = {"skin": _choice(rng, _SKIN), "shirt": _choice(rng, _DARK), "pants": _choice(rng, _DARK)}
        while colors["pants"] == colors["shirt"]:
            colors["pants"] = _choice(rng, _DARK)
        people_px.append((g, px, colors, obox))
    for g, px, colors, obox in people_px:  # people on top of every object
        bb = paint(lambda d, p=px, c=colors: _draw_person(d, p, c))
        g["person_entity"] = len(entities)
        entities.append({"kind": "person", "bbox": bb, "person": True})
        ox, gy, flip = g["ox"], g["gy"], g["flip"]
        for kind, a, b in g["lay"]["lines"]:
            pa, pb = _to_px(a, ox, gy, h, flip), _to_px(b, ox, gy, h, flip)
            if kind == "motion":
                for k in (-1, 0, 1):
                    off = k * 0.05 * h
                    _dashed(ld, (pa[0], pa[1] + off), (pb[0], pb[1] + off), (60, 60, 60, 255), on=3, off=4)
            else:
                ld.line([pa, pb], fill=(40, 40, 40, 255), width=1 if kind == "string" else 2)
        if "look_at" in g["verbs"]:
            r = px["r"]
            eye = (px["head"][0] + 0.5 * r * px["eye_dir"], px["head"][1] - 0.1 * r)
            tgt = ((obox[0] + obox[2]) / 2, (obox[1] + obox[3]) / 2)
            _dashed(ld, eye, tgt, (90, 90, 90, 255), on=4, off=4)
        for v in g["verbs"]:
            hois.append((g["person_entity"], g["obj_entity"], v))
    canvas = Image.alpha_composite(canvas, line_layer)

    arr = np.asarray(canvas.convert("RGB"), dtype=np.int16)
    arr = arr + rng.normal(0.0, 6.0, size=arr.shape).astype(np.int16)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    file_name = f"synth_{split}_{index + 1:08d}.jpg"
    out.save(Path(image_dir) / file_name, format="JPEG", quality=90)

    # annotation record: persons first, then objects (indices remapped)
    order = [i for i, e in enumerate(entities) if e["person"]] + [i for i, e in enumerate(entities) if not e["person"]]
    remap = {old: new for new, old in enumerate(order)}
    annotations = []
    for i in order:
        e = entities[i]
        x1, y1, x2, y2 = (int(v) for v in e["bbox"])
        annotations.append({"bbox": [x1, y1, x2, y2], "category_id": OBJECT_CATEGORY_IDS[OBJECTS.index(e["kind"])]})
    hoi_annotation = []
    for s, o, v in hois:
        obj = entities[o]["kind"]
        hoi_annotation.append({"subject_id": remap[s], "object_id": remap[o], "category_id": VERBS.index(v) + 1,
                               "hoi_category_id": _HOI_PAIRS.index((v, obj)) + 1})
    record = {"file_name": file_name, "width": size, "height": size, "annotations": annotations,
              "hoi_annotation": hoi_annotation}
    return record, _caption(groups, [d[0] for d in distractors])


def _caption(groups: list[dict[str, Any]], distractors: list[str]) -> str:
    parts = []
    for g in groups:
        obj = g["obj"]
        if g["verbs"] == ["no_interaction"]:
            parts.append(f"a person standing far from {_article(obj)} {obj}")
        else:
            verbs = [_GERUND[v] for v in g["verbs"]]
            parts.append(f"a person {' and '.join(verbs)} {_article(obj)} {obj}")
    text = " and ".join(parts)
    if distractors:
        text += ", with " + " and ".join(f"{_article(o)} {o}" for o in distractors) + " nearby"
    return text


# ---------------------------------------------------------------------------------------------- driver
def generate_synthetic_dataset(out: str | Path, seed: int = 0, num_train: int = 400, num_test: int = 100,
                               image_size: int = 224, overwrite: bool = False, workers: int = 1,
                               max_people: int = 3, distractors: bool = True, clutter: bool = True,
                               num_val: int = 0) -> SyntheticSummary:
    """Write a synthetic HOI dataset in the HICO-DET layout under ``out``.

    Layout: ``images/{train2015,test2015}/*.jpg``, ``annotations/{trainval_hico,test_hico}.json``,
    ``annotations/corre_hico.npy`` (bool ``[C_verb, C_obj]``), ``vocabulary.json`` (with the rare set and
    the zero-shot splits computed from the generated train split) and ``captions.json`` (file name ->
    caption). With ``num_val > 0`` also a validation split, ``images/val2015/*.jpg`` and
    ``annotations/val_hico.json``, drawn from its own random stream (no image in common with train or
    test); :class:`~hoiclip_lightning.data.HOIDataModule` then validates on it instead of the test split.

    Args:
        out: dataset root; must be empty or absent unless ``overwrite``.
        seed: random seed; the same seed gives byte-identical files (independent of ``workers``).
        num_train: training images.
        num_test: test images.
        image_size: side of the square images, in pixels.
        overwrite: replace the generated files of an existing non-empty root.
        workers: processes used to render (1 = in this process; the spawn start-up makes 2+ pay off only
            for large images or many thousands of them).
        max_people: at most this many people (1 to 3) per image; each brings its interaction group.
        distractors: also draw objects nobody interacts with (they are annotated, without HOI).
        clutter: draw background shapes (False: plain sky and ground).
        num_val: validation images, drawn from their own random stream (0: no validation split).

    The defaults give the full world of the tests; :data:`EASY_WORLD` (``max_people=1, distractors=False,
    clutter=False``) gives the easier world of the CPU quickstart (one annotated pair per image, plain background),
    which a tiny model trained from scratch learns within minutes.

    Raises:
        ConfigurationError: on a non-empty ``out`` without ``overwrite`` or an invalid count/size.
    """
    if num_train < 1 or num_test < 0 or num_val < 0:
        raise ConfigurationError(f"num_train must be >= 1, num_test and num_val >= 0, got {num_train}, {num_test}, "
                                 f"{num_val}")
    if not 64 <= image_size <= 2048:
        raise ConfigurationError(f"image_size must be in [64, 2048], got {image_size}")
    if workers < 1:
        raise ConfigurationError(f"workers must be >= 1, got {workers}")
    if not 1 <= max_people <= 3:
        raise ConfigurationError(f"max_people must be in [1, 3], got {max_people}")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ConfigurationError(f"{root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise ConfigurationError(f"{root} is not empty; pass overwrite=True to replace its synthetic dataset")
        for sub in ("images/train2015", "images/test2015", "images/val2015"):
            if (root / sub).is_dir():
                shutil.rmtree(root / sub)
        stale_val = root / "annotations" / _SPLITS["val"][1]
        if stale_val.is_file():
            stale_val.unlink()
    (root / "annotations").mkdir(parents=True, exist_ok=True)

    records: dict[str, list[dict[str, Any]]] = {}
    captions: dict[str, str] = {}
    counts_per_split = [("train", num_train), ("test", num_test)] + ([("val", num_val)] if num_val > 0 else [])
    for split, n in counts_per_split:
        image_dir = root / "images" / _SPLITS[split][0]
        image_dir.mkdir(parents=True, exist_ok=True)
        jobs = [(int(seed), split, i, int(image_size), str(image_dir), int(max_people), bool(distractors),
                 bool(clutter)) for i in range(n)]
        if workers > 1 and n > 1:
            with get_context("spawn").Pool(workers) as pool:
                results = pool.map(_render, jobs, chunksize=max(1, n // (8 * workers)))
        else:
            results = [_render(j) for j in jobs]
        records[split] = [r for r, _ in results]
        captions.update({r["file_name"]: c for r, c in results})
        logger.info("synthetic %s split: %d images in %s", split, n, image_dir)

    counts = Counter(h["hoi_category_id"] - 1 for r in records["train"] for h in r["hoi_annotation"])
    hoi_counts = [counts.get(c, 0) for c in range(len(_HOI_PAIRS))]
    vocab = synthetic_vocabulary(hoi_counts)
    for split in records:
        path = root / "annotations" / _SPLITS[split][1]
        path.write_text(json.dumps(records[split]) + "\n")
    np.save(root / "annotations" / "corre_hico.npy", vocab.verb_object_matrix().numpy())
    vocab.to_json(root / "vocabulary.json")
    (root / "captions.json").write_text(json.dumps(captions, indent=1, sort_keys=True) + "\n")

    def pairs(recs: list[dict[str, Any]]) -> int:
        return sum(len({(h["subject_id"], h["object_id"]) for h in r["hoi_annotation"]}) for r in recs)

    summary = SyntheticSummary(
        root=root,
        images={s: len(records[s]) for s in records},
        pairs={s: pairs(records[s]) for s in records},
        hoi_instances={s: sum(len(r["hoi_annotation"]) for r in records[s]) for s in records},
        num_objects=vocab.num_objects, num_verbs=vocab.num_verbs, num_hois=vocab.num_hois,
        rare_hois=list(vocab.rare_hois), hoi_counts=hoi_counts,
    )
    logger.info("synthetic dataset at %s: %s images, %s HOI instances, %d/%d rare classes", root,
                summary.images, summary.hoi_instances, summary.num_rare, summary.num_hois)
    return summary


def resize_split_images(root: str | Path, split: str, sizes: list[tuple[int, int]]) -> int:
    """Give the images of a generated split their own sizes, as real datasets have (boxes follow).

    The generator draws square images; evaluating images of one size never pads a batch. This resizes
    image ``i`` of ``annotations/{split}_hico.json`` to ``sizes[i % len(sizes)]`` (width, height), scales
    its boxes with it (rounded to whole pixels) and rewrites the record's ``width``/``height``.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = generate_synthetic_dataset(root, seed=0, num_train=1, num_test=3, image_size=64)
        >>> resize_split_images(root, "test", [(64 + 11 * i, 70 + 13 * i) for i in range(16)])
        3

    Args:
        root: a dataset written by :func:`generate_synthetic_dataset`.
        split: ``train``, ``val`` or ``test``.
        sizes: ``(width, height)`` pairs, used in turn.

    Returns:
        the number of distinct image sizes of the split afterwards.
    """
    if split not in _SPLITS:
        raise ConfigurationError(f"unknown split {split!r}; accepted: {sorted(_SPLITS)}")
    if not sizes:
        raise ConfigurationError("sizes is empty")
    folder, annotation_file, _ = _SPLITS[split]
    root = Path(root)
    path = root / "annotations" / annotation_file
    image_dir = root / "images" / folder
    records = json.loads(path.read_text())
    for i, rec in enumerate(records):
        w, h = sizes[i % len(sizes)]
        with Image.open(image_dir / rec["file_name"]) as im:
            sx, sy = w / im.width, h / im.height
            im.convert("RGB").resize((w, h)).save(image_dir / rec["file_name"], quality=95)
        rec["width"], rec["height"] = w, h
        for ann in rec["annotations"]:
            ann["bbox"] = [round(v * s) for v, s in zip(ann["bbox"], (sx, sy, sx, sy), strict=True)]
    path.write_text(json.dumps(records))
    return len({(r["width"], r["height"]) for r in records})
