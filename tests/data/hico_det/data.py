#!/usr/bin/env python3
"""Write the tiny HICO-DET fixture (PPDM format) next to this script. Seeded; re-running reproduces it.

Standalone on purpose (does not import hoiclip_lightning). The verb-object matrix and the unseen list
are read from the vocabulary resource as plain JSON data.

Planted cases (training file, ids are real HICO-DET verb ids and COCO category ids):
* record 0 (48x32): one pair with three verbs (ride, hold, sit_on bicycle) -> one merged target pair.
* record 1: an image without any HOI (dropped from training).
* record 2: boxes on the image border; pair (0, 1) carries the rare_first-unseen "wash bicycle" plus a
  seen "hold bicycle" (the whole pair loses its labels in zero-shot); pair (2, 1) holds the bicycle.
* record 3: "hold cup" and "drink_with cup" on one pair.
* record 4: "pet bird", a class seen once, unseen in rare_first (image dropped in zero-shot training).
* record 5: "hold cup" 9 more times (10 in total: the only non-rare class of the fixture).
Test file: two images with HOIs and one without.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
VOCAB = HERE.parents[2] / "src" / "hoiclip_lightning" / "resources" / "hico_det_vocabulary.json"

PERSON, BICYCLE, HORSE, DOG, BIRD, CUP = 1, 2, 19, 18, 16, 47  # COCO category ids
RIDE, HOLD, SIT_ON, WASH, DRINK_WITH, PET, FEED, HUG = 77, 37, 88, 112, 21, 66, 27, 40  # HICO verb ids
# 1-based HICO HOI ids
HOI = {(RIDE, BICYCLE): 19, (HOLD, BICYCLE): 12, (SIT_ON, BICYCLE): 20, (WASH, BICYCLE): 23,
       (HOLD, CUP): 298, (DRINK_WITH, CUP): 297, (PET, BIRD): 28, (RIDE, HORSE): 140, (FEED, HORSE): 130,
       (HUG, DOG): 118}


def box(x1, y1, x2, y2, cat):
    return {"bbox": [x1, y1, x2, y2], "category_id": cat}


def hoi(s, o, verb, obj_cat):
    return {"subject_id": s, "object_id": o, "category_id": verb, "hoi_category_id": HOI[(verb, obj_cat)]}


def image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    base = rng.integers(0, 256, size=3)
    grad = np.linspace(0, 60, width)[None, :, None]
    arr = np.clip(base[None, None, :] + grad + rng.integers(0, 20, size=(height, width, 3)), 0, 255)
    return Image.fromarray(arr.astype(np.uint8))


TRAIN = [
    ("HICO_train2015_00000001.jpg", (48, 32),
     [box(2, 2, 20, 30, PERSON), box(18, 10, 46, 30, BICYCLE)],
     [hoi(0, 1, RIDE, BICYCLE), hoi(0, 1, HOLD, BICYCLE), hoi(0, 1, SIT_ON, BICYCLE)]),
    ("HICO_train2015_00000002.jpg", (48, 48), [box(0, 0, 10, 10, PERSON)], []),
    ("HICO_train2015_00000003.jpg", (48, 48),
     [box(0, 0, 24, 48, PERSON), box(24, 8, 48, 40, BICYCLE), box(30, 0, 40, 20, PERSON)],
     [hoi(0, 1, WASH, BICYCLE), hoi(0, 1, HOLD, BICYCLE), hoi(2, 1, HOLD, BICYCLE)]),
    ("HICO_train2015_00000004.jpg", (48, 48),
     [box(4, 4, 28, 44, PERSON), box(26, 20, 36, 32, CUP)],
     [hoi(0, 1, HOLD, CUP), hoi(0, 1, DRINK_WITH, CUP)]),
    ("HICO_train2015_00000005.jpg", (48, 48),
     [box(6, 6, 26, 46, PERSON), box(28, 10, 44, 24, BIRD)],
     [hoi(0, 1, PET, BIRD)]),
    ("HICO_train2015_00000006.jpg", (48, 48),
     [box(2, 2, 20, 46, PERSON), box(28, 2, 46, 46, PERSON), box(20, 20, 28, 30, CUP)],
     [hoi(0, 2, HOLD, CUP)] * 5 + [hoi(1, 2, HOLD, CUP)] * 4),
]

TEST = [
    ("HICO_test2015_00000001.jpg", (48, 32),
     [box(4, 4, 20, 28, PERSON), box(20, 8, 44, 30, HORSE)],
     [hoi(0, 1, RIDE, HORSE), hoi(0, 1, FEED, HORSE)]),
    ("HICO_test2015_00000002.jpg", (32, 32),
     [box(0, 0, 16, 32, PERSON), box(16, 16, 32, 32, DOG)],
     [hoi(0, 1, HUG, DOG)]),
    ("HICO_test2015_00000003.jpg", (32, 32), [box(1, 1, 12, 12, PERSON)], []),
]


def write(split_dir: str, ann_name: str, entries, rng) -> None:
    (HERE / "images" / split_dir).mkdir(parents=True, exist_ok=True)
    records = []
    for name, (w, h), anns, hois in entries:
        image(rng, w, h).save(HERE / "images" / split_dir / name, quality=75)
        records.append({"file_name": name, "annotations": anns, "hoi_annotation": hois})
    (HERE / "annotations" / ann_name).write_text(json.dumps(records, indent=1) + "\n")


def main() -> None:
    rng = np.random.default_rng(0)
    (HERE / "annotations").mkdir(exist_ok=True)
    write("train2015", "trainval_hico.json", TRAIN, rng)
    write("test2015", "test_hico.json", TEST, rng)
    vocab = json.loads(VOCAB.read_text())
    corre = np.zeros((len(vocab["verbs"]), len(vocab["objects"])), dtype=np.uint8)
    for v, o in vocab["hois"]:
        corre[v, o] = 1
    np.save(HERE / "annotations" / "corre_hico.npy", corre)


if __name__ == "__main__":
    main()
