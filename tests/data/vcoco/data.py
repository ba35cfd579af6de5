#!/usr/bin/env python3
"""Write the tiny V-COCO fixture (HOIA format) next to this script. Seeded; re-running reproduces it.

Standalone on purpose (does not import hoiclip_lightning); the verb-object prior is built from the
vocabulary resource read as plain JSON. Verb ids are 0..28 in the reference order; ``object_id = -1``
marks a role without object.

Planted cases (training file):
* record 0: pair (0, -1) with "stand" and "smile" (no object), pair (0, 1) "hold_obj" cup.
* record 1: "sit_instr" and "ride_instr" horse on one pair.
* record 2: no HOI (V-COCO keeps it; empty target).
Test file: one image with "eat_obj"/"hold_obj" pizza and an object-less "walk".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
VOCAB = HERE.parents[2] / "src" / "hoiclip_lightning" / "resources" / "vcoco_vocabulary.json"

PERSON, CUP, HORSE, PIZZA = 1, 47, 19, 59  # COCO category ids
HOLD_OBJ, STAND, SIT_INSTR, RIDE_INSTR, WALK, EAT_OBJ, SMILE = 0, 1, 2, 3, 4, 8, 23  # V-COCO verb ids


def box(x1, y1, x2, y2, cat):
    return {"bbox": [x1, y1, x2, y2], "category_id": cat}


def hoi(s, o, verb):
    return {"subject_id": s, "object_id": o, "category_id": verb}


def image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    base = rng.integers(0, 256, size=3)
    grad = np.linspace(0, 60, height)[:, None, None]
    arr = np.clip(base[None, None, :] + grad + rng.integers(0, 20, size=(height, width, 3)), 0, 255)
    return Image.fromarray(arr.astype(np.uint8))


TRAIN = [
    ("COCO_train2014_000000000001.jpg", (48, 48),
     [box(2, 2, 22, 46, PERSON), box(24, 20, 40, 36, CUP)],
     [hoi(0, -1, STAND), hoi(0, 1, HOLD_OBJ), hoi(0, -1, SMILE)]),
    ("COCO_train2014_000000000002.jpg", (48, 32),
     [box(10, 0, 30, 20, PERSON), box(4, 8, 44, 32, HORSE)],
     [hoi(0, 1, SIT_INSTR), hoi(0, 1, RIDE_INSTR)]),
    ("COCO_train2014_000000000003.jpg", (32, 32), [box(4, 4, 20, 30, PERSON)], []),
]

TEST = [
    ("COCO_val2014_000000000001.jpg", (48, 48),
     [box(0, 0, 24, 48, PERSON), box(24, 24, 44, 40, PIZZA)],
     [hoi(0, 1, EAT_OBJ), hoi(0, 1, HOLD_OBJ), hoi(0, -1, WALK)]),
]


def write(split_dir: str, ann_name: str, entries, rng) -> None:
    (HERE / "images" / split_dir).mkdir(parents=True, exist_ok=True)
    records = []
    for name, (w, h), anns, hois in entries:
        image(rng, w, h).save(HERE / "images" / split_dir / name, quality=75)
        records.append({"file_name": name, "annotations": anns, "hoi_annotation": hois})
    (HERE / "annotations" / ann_name).write_text(json.dumps(records, indent=1) + "\n")


def main() -> None:
    rng = np.random.default_rng(1)
    (HERE / "annotations").mkdir(exist_ok=True)
    write("train2014", "trainval_vcoco.json", TRAIN, rng)
    write("val2014", "test_vcoco.json", TEST, rng)
    vocab = json.loads(VOCAB.read_text())
    real_objects = [i for i, c in enumerate(vocab["object_category_ids"]) if c != -1]
    corre = np.zeros((len(vocab["verbs"]), len(real_objects)), dtype=np.uint8)
    for v, o in vocab["hois"]:
        if o in real_objects:
            corre[v, o] = 1
    np.save(HERE / "annotations" / "corre_vcoco.npy", corre)


if __name__ == "__main__":
    main()
