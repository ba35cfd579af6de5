"""Compare ``VCOCORoleAP`` with ``vsrl_eval.py`` of ``s-gupta/v-coco`` on random V-COCO-structured data.

``vsrl_eval.py`` is *not* part of this project; point ``--vcoco-repo`` at a copy of that repository (only
``vsrl_eval.py`` is imported from it, at run time)::

    G=<git dir of s-gupta/v-coco>
    mkdir -p /tmp/v-coco && git --git-dir=$G archive HEAD vsrl_eval.py | tar -x -C /tmp/v-coco
    python benchmarks/compare_vcoco_official.py --vcoco-repo /tmp/v-coco --seeds 0 1 2 3 4

``vsrl_eval`` needs ``pycocotools`` (``pip install pycocotools``; not a dependency of this project). When it
is not installed, or with ``--coco-shim``, the script uses a small stand-in for ``pycocotools.coco.COCO``
with the five look-ups vsrl_eval calls, returning what pycocotools returns in the same order. One line of
``vsrl_eval.py`` is adapted at load time for NumPy 2, which refuses to store a one-element array into an
array element (``role_id[i, j - 1] = aid`` becomes ``aid[0]``); the rest runs as published.

Per seed the script writes, in the official formats, a COCO instances file, ``vcoco_test.json`` and
``vcoco_test.ids`` for a few dozen images with the 26 V-COCO actions and their roles, and a detection
pickle in vsrl_eval's format. The data plants every rule that HOIA files cannot express:

* persons outside V-COCO, crowd persons and persons flagged ``ignore`` (dropped from the file by vsrl_eval),
  in random annotation order, so an image's first person is sometimes outside V-COCO;
* V-COCO persons without any action; objectless roles; role objects that are persons;
* boxes with zero area, width below one pixel, or beyond the image border (vsrl_eval's box cleaning);
* detections on any of those persons, off every person, with role boxes that are copies, jittered, random,
  zeros or NaN, with NaN scores, and with scores drawn from a handful of values so that many are exactly
  tied within an image and a class (some images carry 40 detections, past NumPy's small-array sort).

vsrl_eval's ``_do_role_eval`` runs unmodified for both scenarios; its ``voc_ap`` is wrapped to record each
class's AP (it only prints two decimals). Our side: :func:`load_vcoco_official` on the same three files,
the detections as triplets (one per detection and action-role, in the pickle's order), and
:class:`VCOCORoleAP` fed in shuffled batches. For contrast the script also evaluates the HOIA-only path on
what a HOIA converter keeps (V-COCO persons with an action, boxes ``x + w``).

Prints the largest absolute difference in AP points per role class over all seeds, for both scenarios.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import itertools
import json
import pickle
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

from hoiclip_lightning.data.vcoco_official import load_vcoco_official
from hoiclip_lightning.metrics import VCOCORoleAP
from hoiclip_lightning.structures import HOIGroundTruth, HOIPrediction
from hoiclip_lightning.vocabulary import HOIVocabulary

VOCAB = HOIVocabulary.builtin("vcoco")
CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person"},
              {"id": 2, "name": "bicycle", "supercategory": "vehicle"},
              {"id": 37, "name": "sports ball", "supercategory": "sports"},
              {"id": 47, "name": "cup", "supercategory": "kitchen"},
              {"id": 62, "name": "chair", "supercategory": "furniture"}]


def vcoco_actions() -> list[tuple[str, list[str]]]:
    """The 26 V-COCO actions and their roles, in the file's order, from the HOIA verb names."""
    actions: list[tuple[str, list[str]]] = []
    for verb in VOCAB.verbs:
        for role in ("obj", "instr"):
            if verb.endswith("_" + role):
                name = verb[: -len(role) - 1]
                if actions and actions[-1][0] == name:
                    actions[-1][1].append(role)
                else:
                    actions.append((name, ["agent", role]))
                break
        else:
            actions.append((verb, ["agent"]))
    return actions


ACTIONS = vcoco_actions()


# ---------------------------------------------------------------------------------------------- pycocotools
class _CocoShim:
    """The part of ``pycocotools.coco.COCO`` that vsrl_eval uses, with the same orders."""

    def __init__(self, path: str) -> None:
        with open(path) as fh:
            self.dataset = json.load(fh)
        self.imgs = {img["id"]: img for img in self.dataset["images"]}
        self.anns = {ann["id"]: ann for ann in self.dataset["annotations"]}
        self.cats = {cat["id"]: cat for cat in self.dataset["categories"]}
        self.img_to_anns: dict[int, list[dict]] = {}
        for ann in self.dataset["annotations"]:
            self.img_to_anns.setdefault(ann["image_id"], []).append(ann)

    def getCatIds(self) -> list[int]:  # noqa: N802 (pycocotools' names)
        return [cat["id"] for cat in self.dataset["categories"]]

    def loadCats(self, ids: list[int]) -> list[dict]:  # noqa: N802
        return [self.cats[i] for i in ids]

    def loadImgs(self, ids: list) -> list[dict]:  # noqa: N802
        return [self.imgs[i] for i in ids]

    def getAnnIds(self, imgIds, iscrowd=None) -> list[int]:  # noqa: N802, N803
        ids = imgIds if isinstance(imgIds, list) else [imgIds]
        anns = list(itertools.chain.from_iterable(self.img_to_anns.get(i, []) for i in ids))
        return [a["id"] for a in anns if iscrowd is None or a["iscrowd"] == iscrowd]

    def loadAnns(self, ids: list[int]) -> list[dict]:  # noqa: N802
        return [self.anns[i] for i in ids]


# NumPy >= 2.? refuses to store a one-element array into one array element, which vsrl_eval does when it
# records a role object's index; storing the element itself means the same and is the only change made.
_NUMPY2_FIX = ("role_id[i, j - 1] = aid\n", "role_id[i, j - 1] = aid[0]\n")


def import_vsrl_eval(repo: Path, shim: bool) -> types.ModuleType:
    """``vsrl_eval`` from ``repo``, with the one-line NumPy 2 fix above, as a module of its own."""
    if shim:
        pkg = types.ModuleType("pycocotools")
        mod = types.ModuleType("pycocotools.coco")
        mod.COCO = _CocoShim
        pkg.coco = mod
        sys.modules["pycocotools"], sys.modules["pycocotools.coco"] = pkg, mod
    path = repo / "vsrl_eval.py"
    source = path.read_text()
    if source.count(_NUMPY2_FIX[0]) != 1:
        raise SystemExit(f"{path}: expected the line {_NUMPY2_FIX[0].strip()!r} once; is this s-gupta/v-coco?")
    module = types.ModuleType("vsrl_eval")
    module.__file__ = str(path)
    exec(compile(source.replace(*_NUMPY2_FIX), str(path), "exec"), module.__dict__)  # noqa: S102
    return module


# ---------------------------------------------------------------------------------------------- data
def _box(rng, w_img, h_img, kind):
    """COCO ``[x, y, w, h]`` of the given kind; integer or 2-decimal coordinates."""
    if kind == "zero_width":
        x, y = rng.uniform(0, w_img - 10), rng.uniform(0, h_img - 10)
        return [round(x, 2), round(y, 2), round(float(rng.uniform(0.2, 1.0)), 2), round(float(rng.uniform(5, 40)), 2)]
    if kind == "border":
        x, y = rng.uniform(-15, w_img * 0.8), rng.uniform(-15, h_img * 0.8)
        w, h = rng.uniform(20, w_img * 0.6), rng.uniform(20, h_img * 0.6)
    else:
        x, y = rng.uniform(0, w_img * 0.75), rng.uniform(0, h_img * 0.75)
        w = rng.uniform(6, max(7.0, min(w_img - x, w_img * 0.5)))
        h = rng.uniform(6, max(7.0, min(h_img - y, h_img * 0.5)))
    vals = [x, y, w, h]
    return [float(round(v)) for v in vals] if rng.random() < 0.5 else [round(float(v), 2) for v in vals]


def _clean(bbox, w_img, h_img):
    """vsrl_eval's box of a COCO ``[x, y, w, h]``: ``x + max(0, w - 1)``, clipped to the image."""
    x1, y1, w, h = bbox
    x2, y2 = x1 + max(0.0, w - 1.0), y1 + max(0.0, h - 1.0)
    return [min(w_img - 1.0, max(0.0, x1)), min(h_img - 1.0, max(0.0, y1)),
            min(w_img - 1.0, max(0.0, x2)), min(h_img - 1.0, max(0.0, y2))]


def _valid(ann, w_img, h_img):
    c = _clean(ann["bbox"], w_img, h_img)
    return ann["area"] > 0 and c[2] > c[0] and c[3] > c[1]


def make_dataset(rng: np.random.Generator, num_images: int):
    """COCO instances, V-COCO records and per-image facts (for the detections and the HOIA contrast)."""
    image_ids = sorted(int(i) for i in rng.choice(np.arange(1, 580000), num_images, replace=False))
    images, annotations, facts = [], [], {}
    vcoco_persons: list[tuple[int, int]] = []  # (ann id, image id)
    next_ann = int(rng.integers(1000, 5000))
    for image_id in image_ids:
        w_img, h_img = int(rng.integers(120, 400)), int(rng.integers(120, 400))
        images.append({"id": image_id, "width": w_img, "height": h_img,
                       "file_name": f"COCO_val2014_{image_id:012d}.jpg"})
        kinds = ["vcoco"] + list(rng.choice(["vcoco", "vcoco", "outside", "crowd", "ignore", "degenerate"],
                                            int(rng.integers(0, 5))))
        kinds += ["object"] * int(rng.integers(0, 5))
        kinds = [kinds[i] for i in rng.permutation(len(kinds))]
        anns = []
        for kind in kinds:
            box_kind = "zero_width" if kind == "degenerate" and rng.random() < 0.5 else (
                "border" if kind != "vcoco" and rng.random() < 0.3 else "normal")
            bbox = _box(rng, w_img, h_img, box_kind)
            area = 0.0 if kind == "degenerate" and box_kind != "zero_width" else round(bbox[2] * bbox[3], 2)
            ann = {"id": next_ann, "image_id": image_id, "bbox": bbox, "area": area,
                   "category_id": 1 if kind != "object" else int(rng.choice([2, 37, 47, 62])),
                   "iscrowd": int(kind == "crowd")}
            if kind == "ignore":
                ann["ignore"] = 1
            next_ann += int(rng.integers(1, 4))
            anns.append((kind, ann))
            annotations.append(ann)
            if kind == "vcoco":
                vcoco_persons.append((ann["id"], image_id))
        # role objects: valid, not ignored annotations (vsrl_eval asserts this)
        usable = [a for k, a in anns if k in ("vcoco", "outside", "object") and _valid(a, w_img, h_img)]
        facts[image_id] = {"size": (w_img, h_img), "anns": anns, "usable": usable}

    # V-COCO records: one column per V-COCO person, every action
    n = len(vcoco_persons)
    labels = (rng.random((len(ACTIONS), n)) < 0.15).astype(int)
    labels[:, rng.random(n) < 0.2] = 0  # persons without any action
    for a in range(len(ACTIONS)):
        if not labels[a].any():
            labels[a, int(rng.integers(0, n))] = 1
    records = []
    for a, (name, roles) in enumerate(ACTIONS):
        role_ids = np.zeros((len(roles), n), dtype=int)
        role_ids[0] = [p for p, _ in vcoco_persons]
        for col, (ann_id, image_id) in enumerate(vcoco_persons):
            if not labels[a, col]:
                continue
            cands = [u["id"] for u in facts[image_id]["usable"] if u["id"] != ann_id]
            for j in range(1, len(roles)):
                if cands and rng.random() < 0.75:
                    role_ids[j, col] = int(rng.choice(cands))
        records.append({"action_name": name, "role_name": roles, "ann_id": [p for p, _ in vcoco_persons],
                        "image_id": [i for _, i in vcoco_persons], "label": labels[a].tolist(),
                        "role_object_id": role_ids.reshape(-1).tolist(), "include": [[] for _ in roles]})
    coco = {"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": CATEGORIES}
    return coco, records, facts, labels, vcoco_persons


def _truth(records) -> dict[int, dict[str, int]]:
    """Per V-COCO person (ann id): ``{"<action>_<role>" or "<action>": role object ann id (0: none)}``."""
    out: dict[int, dict[str, int]] = {}
    for rec in records:
        roles = rec["role_name"]
        role_ids = np.asarray(rec["role_object_id"]).reshape(len(roles), -1)
        for col, (ann_id, label) in enumerate(zip(rec["ann_id"], rec["label"], strict=True)):
            if label == 1:
                for j in range(1, len(roles)):
                    out.setdefault(ann_id, {})[f"{rec['action_name']}_{roles[j]}"] = int(role_ids[j, col])
    return out


def make_detections(rng: np.random.Generator, facts: dict, records) -> list[dict]:
    """Detections in vsrl_eval's format: person box, ``<action>_agent`` scores, ``<action>_<role>`` 5-vectors.

    A detection on a person who does an action gets, most of the time, a high score and the true role box
    (copied or jittered) for it; everything else is noise.
    """
    coarse = np.array([0.2, 0.35, 0.5, 0.65, 0.8], dtype=np.float64)
    truth = _truth(records)
    dets = []
    for image_id, f in facts.items():
        w_img, h_img = f["size"]
        persons = [a for k, a in f["anns"] if a["category_id"] == 1]
        by_id = {a["id"]: a for _, a in f["anns"]}
        num = 40 if rng.random() < 0.15 else int(rng.integers(2, 12))
        for _ in range(num):
            person = rng.choice(persons) if persons and rng.random() < 0.85 else None
            if person is not None:
                base = np.array(_clean(person["bbox"], w_img, h_img))
                sigma = float(rng.choice([0.0, 0.0, 1.0, 3.0, 8.0]))
                pbox = base + rng.normal(0, sigma, 4) if sigma else base
            elif rng.random() < 0.5:
                pbox = np.array([w_img + 50.0, h_img + 50.0, w_img + 90.0, h_img + 120.0])  # overlaps nobody
            else:
                xy = rng.uniform(0, [w_img, h_img])
                pbox = np.r_[xy, xy + rng.uniform(5, 60, 2)]
            does = truth.get(person["id"], {}) if person is not None else {}
            det = {"image_id": image_id, "person_box": pbox.tolist()}
            tie_mode = rng.random() < 0.5
            for name, roles in ACTIONS:
                det[f"{name}_agent"] = float(rng.random())
                for role in roles[1:]:
                    verb = f"{name}_{role}"
                    u = rng.random()
                    if verb in does and u < 0.7:
                        obj = does[verb]
                        rbox = np.array(_clean(by_id[obj]["bbox"], w_img, h_img)) if obj else (
                            np.zeros(4) if rng.random() < 0.6 else rng.uniform(0, 100, 4))
                        rbox = rbox + (rng.normal(0, 2, 4) if obj and rng.random() < 0.4 else 0.0)
                        score = float(rng.uniform(0.4, 1.0))
                    else:
                        if u < 0.45:
                            rbox = np.array(_clean(rng.choice(list(by_id.values()))["bbox"], w_img, h_img))
                        elif u < 0.6:
                            rbox = np.zeros(4)
                        elif u < 0.7:
                            rbox = np.full(4, np.nan)
                        else:
                            xy = rng.uniform(0, [w_img, h_img])
                            rbox = np.r_[xy, xy + rng.uniform(5, 80, 2)]
                        score = float(rng.uniform(0.0, 0.7))
                    if tie_mode:
                        score = float(coarse[np.abs(coarse - score).argmin()])
                    if rng.random() < 0.08:
                        score = float("nan")
                    det[verb] = np.r_[rbox, score].tolist()
            dets.append(det)
    return dets


# ---------------------------------------------------------------------------------------------- both sides
def run_vsrl(vsrl_eval, files: dict[str, Path], det_file: Path) -> dict[int, dict[str, float]]:
    """Per scenario, ``{"<action>_<role>": AP}`` from an unmodified ``_do_role_eval``."""
    recorded: list[float] = []
    original = vsrl_eval.voc_ap

    def recording_voc_ap(rec, prec):
        ap = original(rec, prec)
        recorded.append(float(ap))
        return ap

    vsrl_eval.voc_ap = recording_voc_ap
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            ev = vsrl_eval.VCOCOeval(str(files["vcoco"]), str(files["coco"]), str(files["ids"]))
            db = ev._get_vcocodb()
        out = {}
        for scenario in (1, 2):
            recorded.clear()
            with contextlib.redirect_stdout(io.StringIO()):
                ev._do_role_eval(db, str(det_file), ovr_thresh=0.5, eval_type=f"scenario_{scenario}")
            names = [f"{ev.actions[a]}_{ev.roles[a][r + 1]}" for a in range(ev.num_actions)
                     for r in range(len(ev.roles[a]) - 1)]
            out[scenario] = dict(zip(names, recorded, strict=True))
        return out
    finally:
        vsrl_eval.voc_ap = original


def triplets(dets: list[dict]) -> dict[int, HOIPrediction]:
    """One triplet per detection and action-role, in the pickle's order (obj label 0: not the no-object one)."""
    rows: dict[int, list] = {}
    for det in dets:
        out = rows.setdefault(det["image_id"], [])
        for name, roles in ACTIONS:
            if len(roles) == 1:
                out.append((det["person_box"], [0.0] * 4, VOCAB.verbs.index(name), det[f"{name}_agent"]))
            for role in roles[1:]:
                v = det[f"{name}_{role}"]
                out.append((det["person_box"], v[:4], VOCAB.verbs.index(f"{name}_{role}"), v[4]))
    preds = {}
    for image_id, r in rows.items():
        preds[image_id] = HOIPrediction(
            image_id, torch.tensor([x[0] for x in r], dtype=torch.float32),
            torch.tensor([x[1] for x in r], dtype=torch.float32), torch.zeros(len(r), dtype=torch.long),
            torch.tensor([x[2] for x in r]), torch.zeros(len(r), dtype=torch.long),
            torch.tensor([x[3] for x in r], dtype=torch.float32))
    return preds


def hoia_ground_truth(facts, records) -> dict[int, HOIGroundTruth]:
    by_id = {a["id"]: a for f in facts.values() for _, a in f["anns"]}
    rows: dict[int, list] = {i: [] for i in facts}

    def xyxy(a):
        x, y, w, h = a["bbox"]
        return [x, y, x + w, y + h]

    no_obj = VOCAB.no_object_index
    for rec in records:
        roles = rec["role_name"]
        n = len(rec["ann_id"])
        role_ids = np.asarray(rec["role_object_id"]).reshape(len(roles), n)
        for col, (ann_id, image_id, label) in enumerate(zip(rec["ann_id"], rec["image_id"], rec["label"],
                                                            strict=True)):
            if label != 1:
                continue
            person = xyxy(by_id[ann_id])
            targets = [(rec["action_name"], 0)] if len(roles) == 1 else [
                (f"{rec['action_name']}_{roles[j]}", int(role_ids[j, col])) for j in range(1, len(roles))]
            for verb, obj in targets:
                box = xyxy(by_id[obj]) if obj else [0.0] * 4
                rows[image_id].append((person, box, VOCAB.verbs.index(verb), 0 if obj else no_obj))
    out = {}
    for image_id, r in rows.items():
        if not r:
            out[image_id] = HOIGroundTruth.empty(image_id)
            continue
        out[image_id] = HOIGroundTruth(
            image_id, torch.tensor([x[0] for x in r]), torch.tensor([x[1] for x in r]),
            torch.tensor([x[3] for x in r]), torch.tensor([x[2] for x in r]), torch.zeros(len(r), dtype=torch.long))
    return out


def run_ours(targets: dict, preds: dict[int, HOIPrediction], rng: np.random.Generator, batch: int = 3):
    metric = VCOCORoleAP(VOCAB)
    ids = list(targets)
    ids = [ids[i] for i in rng.permutation(len(ids))]  # update order must not matter
    empty = HOIPrediction(0, torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                          torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    for k in range(0, len(ids), batch):
        chunk = ids[k:k + batch]
        p = [preds.get(i) or HOIPrediction(i, *[getattr(empty, f) for f in
                                                ("sub_boxes", "obj_boxes", "obj_labels", "verb_labels",
                                                 "hoi_labels", "scores")]) for i in chunk]
        metric.update(p, [targets[i] for i in chunk])
    res = metric.compute()
    return {s: {VOCAB.verbs[v]: float(res[f"ap_role_s{s}"][v]) for v in metric.role_verbs} for s in (1, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vcoco-repo", type=Path, required=True, help="folder holding vsrl_eval.py")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--images", type=int, default=40, help="images per seed")
    parser.add_argument("--coco-shim", action="store_true", help="use the stand-in COCO class, not pycocotools")
    args = parser.parse_args(argv)
    shim = args.coco_shim or importlib.util.find_spec("pycocotools") is None
    vsrl_eval = import_vsrl_eval(args.vcoco_repo, shim)
    print(f"vsrl_eval from {args.vcoco_repo}; COCO API: {'stand-in' if shim else 'pycocotools'}; "
          f"numpy {np.__version__}; seeds {args.seeds}; {args.images} images per seed")

    worst: dict[tuple[str, int, str], float] = {}
    totals = {"dets": 0, "tied": 0, "persons": 0, "outside": 0, "no_action": 0}
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        coco, records, facts, labels, vcoco_persons = make_dataset(rng, args.images)
        dets = make_detections(rng, facts, records)
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            files = {"coco": d / "instances_vcoco_all_2014.json", "vcoco": d / "vcoco" / "vcoco_test.json",
                     "ids": d / "splits" / "vcoco_test.ids"}
            for p in files.values():
                p.parent.mkdir(parents=True, exist_ok=True)
            files["coco"].write_text(json.dumps(coco))
            files["vcoco"].write_text(json.dumps(records))
            files["ids"].write_text("".join(f"{i}\n" for i in sorted(facts)))
            det_file = d / "detections.pkl"
            with det_file.open("wb") as fh:
                pickle.dump(dets, fh)
            reference = run_vsrl(vsrl_eval, files, det_file)
            official = load_vcoco_official(d, "test", VOCAB)
        preds = triplets(dets)
        ours = run_ours(official, preds, rng)
        hoia = run_ours(hoia_ground_truth(facts, records), preds, rng)
        for s in (1, 2):
            for name, ap in reference[s].items():
                for side, res in (("official", ours), ("hoia", hoia)):
                    diff = abs(res[s][name] - 100.0 * ap)
                    key = (name, s, side)
                    worst[key] = max(worst.get(key, 0.0), diff)
        # what the data exercised
        for p in preds.values():
            v, s = p.verb_labels.numpy(), p.scores.numpy()
            keys = [(int(a), float(b)) for a, b in zip(v, s, strict=True) if not np.isnan(b)]
            totals["dets"] += len(keys)
            totals["tied"] += len(keys) - len(set(keys))
        totals["persons"] += sum(g.num_persons for g in official.values())
        totals["outside"] += sum(int(g.person_ignored.sum()) for g in official.values())
        acting = {(i, int(p)) for i, g in official.items() for p in g.action_person.tolist()}
        totals["no_action"] += sum(int((~g.person_ignored).sum()) for g in official.values()) - len(acting)
        m1 = np.mean(list(reference[1].values())) * 100
        m2 = np.mean(list(reference[2].values())) * 100
        print(f"seed {seed}: vsrl_eval role mAP S1 {m1:.4f} S2 {m2:.4f} | ours (official) "
              f"{np.mean(list(ours[1].values())):.4f} {np.mean(list(ours[2].values())):.4f} | ours (HOIA rows) "
              f"{np.mean(list(hoia[1].values())):.4f} {np.mean(list(hoia[2].values())):.4f}")
    print(f"data: {totals['dets']} role triplets with a score, {totals['tied']} of them tied with an earlier one of "
          f"the same image and class; {totals['persons']} valid persons, {totals['outside']} outside V-COCO, "
          f"{totals['no_action']} V-COCO persons without action")
    print("\nlargest |AP difference| in AP points over all seeds, per role class")
    print(f"{'class':<24} {'official S1':>12} {'official S2':>12} {'HOIA S1':>10} {'HOIA S2':>10}")
    names = list(reference[1])
    for name in names:
        vals = [worst[(name, s, side)] for side in ("official", "hoia") for s in (1, 2)]
        print(f"{name:<24} {vals[0]:>12.3g} {vals[1]:>12.3g} {vals[2]:>10.3f} {vals[3]:>10.3f}")
    for side in ("official", "hoia"):
        print(f"max over classes, {side}: S1 {max(worst[(n, 1, side)] for n in names):.3g}, "
              f"S2 {max(worst[(n, 2, side)] for n in names):.3g}")


if __name__ == "__main__":
    main()
