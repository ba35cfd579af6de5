"""Build the package's built-in vocabulary files from the reference facts.

Run once by a developer (not at run time)::

    python tools/build_vocabularies.py ../shared/reference-data src/hoiclip_lightning/resources

It cross-checks the two sources of HICO-DET facts (COCO-ordered object indices in the HOICLIP prompt
table versus alphabetical object indices in the fredzzhang/hicodet test file) before writing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COCO_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]

VCOCO_VERBS = [
    "hold_obj", "stand", "sit_instr", "ride_instr", "walk", "look_obj", "hit_instr", "hit_obj",
    "eat_obj", "eat_instr", "jump_instr", "lay_instr", "talk_on_phone_instr", "carry_obj",
    "throw_obj", "catch_obj", "cut_instr", "cut_obj", "run", "work_on_computer_instr",
    "ski_instr", "surf_instr", "skateboard_instr", "smile", "drink_instr", "kick_obj",
    "point_instr", "read_obj", "snowboard_instr",
]


def _object_name(prompt: str) -> str:
    for prefix in ("a photo of an ", "a photo of a "):
        if prompt.startswith(prefix):
            return prompt[len(prefix):]
    raise ValueError(prompt)


def main(src: Path, dst: Path) -> None:
    facts = json.loads((src / "hoi_label_facts.json").read_text())
    test = json.loads((src / "hicodet_instances_test2015.json").read_text())
    hico = facts["hico"]
    objects = [_object_name(p) for _, p in hico["object_prompts"][:80]]
    objects[0] = "person"
    verbs = test["verbs"]
    hois = [tuple(k) for k, _ in hico["hoi_prompts"]]
    # cross-check against the alphabetical-object correspondence of the test file
    alpha = [o.replace("_", " ") for o in test["objects"]]
    for hoi_id, obj_alpha, verb in test["correspondence"]:
        v, o = hois[hoi_id]
        assert v == verb, (hoi_id, v, verb)
        assert objects[o] == alpha[obj_alpha], (hoi_id, objects[o], alpha[obj_alpha])
    hico_vocab = {
        "name": "hico_det",
        "objects": objects,
        "object_category_ids": COCO_IDS,
        "verbs": verbs,
        "verb_ids": list(range(1, 118)),
        "hois": [list(h) for h in hois],
        "hoi_prompts": [p for _, p in hico["hoi_prompts"]],
        "object_prompts": [p for _, p in hico["object_prompts"]],
        "rare_hois": sorted(test["rare"]),
        "zero_shot_unseen": {k: sorted(v) for k, v in hico["zero_shot_unseen_hoi_ids"].items()},
        "no_object_index": None,
    }
    vc = facts["vcoco"]
    vcoco_objects = objects + ["none"]
    vcoco_vocab = {
        "name": "vcoco",
        "objects": vcoco_objects,
        "object_category_ids": COCO_IDS + [-1],
        "verbs": VCOCO_VERBS,
        "verb_ids": list(range(29)),
        "hois": [list(k) for k, _ in vc["hoi_prompts"]],
        "hoi_prompts": [p for _, p in vc["hoi_prompts"]],
        "object_prompts": [p for _, p in vc["object_prompts"]],
        "rare_hois": [],
        "zero_shot_unseen": {"default": []},
        "no_object_index": 80,
    }
    dst.mkdir(parents=True, exist_ok=True)
    for vocab in (hico_vocab, vcoco_vocab):
        (dst / f"{vocab['name']}_vocabulary.json").write_text(json.dumps(vocab, indent=1) + "\n")
        print("wrote", dst / f"{vocab['name']}_vocabulary.json", len(vocab["hois"]), "HOIs")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
