"""Read the official V-COCO files into the ground truth that ``vsrl_eval.py`` evaluates against.

``s-gupta/v-coco`` evaluates role AP from three files, which this module reads and checks:

* ``vcoco/vcoco_{split}.json``: one record per action with ``action_name``, ``role_name`` (``agent``
  first), and one column per V-COCO person: ``ann_id``, ``image_id``, ``label`` (1: does the action) and
  ``role_object_id`` (role-major, ``len(role_name) * len(ann_id)`` values; column 0 repeats ``ann_id``,
  0 means "no object for this role");
* ``instances_vcoco_all_2014.json``: the COCO 2014 instances of the V-COCO images (written by the
  repository's ``script_pick_annotations.py`` from the COCO train and val annotations);
* ``splits/vcoco_{split}.ids``: the COCO image ids of the split, ascending.

Every valid COCO person of an image is kept, also those outside V-COCO (crowd boxes, persons that were not
annotated): ``vsrl_eval`` matches detections against all of them. See :class:`VCOCOGroundTruth`.

Examples:
    >>> gt = load_vcoco_official("v-coco/data", "test")  # doctest: +SKIP
    >>> g = gt[165]; g.person_boxes.shape, int(g.person_ignored.sum())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import AnnotationError, DatasetNotFoundError
from ..structures import VCOCOGroundTruth
from ..vocabulary import HOIVocabulary
from .formats import ImageRecord

log = logging.getLogger(__name__)

__all__ = ["attach_vcoco_official", "coco_image_id", "find_vcoco_official_files", "load_vcoco_official"]

COCO_FILE = "instances_vcoco_all_2014.json"


def coco_image_id(file_name: str) -> int:
    """The COCO image id in a file name such as ``COCO_val2014_000000000042.jpg`` (its last digit run)."""
    found = re.findall(r"\d+", Path(file_name).stem)
    if not found:
        raise AnnotationError(f"no COCO image id in file name {file_name!r}")
    return int(found[-1])


def find_vcoco_official_files(vcoco_dir: str | Path, split: str = "test") -> tuple[Path, Path, Path]:
    """``(vcoco_{split}.json, instances_vcoco_all_2014.json, vcoco_{split}.ids)`` under ``vcoco_dir``.

    ``vcoco_dir`` is the ``data`` folder of a ``s-gupta/v-coco`` checkout (``vcoco/``, ``splits/`` and the
    COCO file inside), the checkout itself, or a folder holding the three files side by side.
    """
    root = Path(vcoco_dir)
    if not root.is_dir():
        raise DatasetNotFoundError(f"V-COCO official folder not found: {root}")
    wanted = {
        "actions": [f"vcoco/vcoco_{split}.json", f"vcoco_{split}.json"],
        "coco": [COCO_FILE],
        "ids": [f"splits/vcoco_{split}.ids", f"vcoco_{split}.ids"],
    }
    found: dict[str, Path] = {}
    for key, names in wanted.items():
        cands = [base / n for base in (root, root / "data") for n in names]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            hint = " (write it with script_pick_annotations.py of s-gupta/v-coco)" if key == "coco" else ""
            raise DatasetNotFoundError(
                f"V-COCO official folder {root}: none of {[str(c.relative_to(root)) for c in cands]} exists{hint}"
            )
        found[key] = hit
    return found["actions"], found["coco"], found["ids"]


def _read_json(path: Path) -> Any:
    try:
        with path.open() as fh:
            return json.load(fh)
    except FileNotFoundError as err:
        raise DatasetNotFoundError(f"file not found: {path}") from err
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path.name}: not valid JSON ({err})") from err


def _read_ids(path: Path) -> list[int]:
    try:
        text = path.read_text()
    except FileNotFoundError as err:
        raise DatasetNotFoundError(f"file not found: {path}") from err
    ids = []
    for line_no, line in enumerate(text.splitlines(), 1):
        for tok in line.split():
            try:
                value = float(tok)
            except ValueError:
                value = float("nan")
            if not value.is_integer() or value < 0:
                raise AnnotationError(f"{path.name}: line {line_no}: {tok!r} is not a COCO image id")
            ids.append(int(value))
    return ids


def _int_list(path: Path, where: str, rec: dict, key: str, length: int | None = None) -> np.ndarray:
    if key not in rec:
        raise AnnotationError(f"{path.name}: {where}: field '{key}' is missing")
    vals = rec[key]
    if not isinstance(vals, list) or not all(isinstance(v, (int, float)) and float(v).is_integer() for v in vals):
        raise AnnotationError(f"{path.name}: {where}: field '{key}' must be a list of integers")
    arr = np.asarray(vals, dtype=np.int64).reshape(-1)
    if length is not None and arr.size != length:
        raise AnnotationError(f"{path.name}: {where}: field '{key}' has {arr.size} values, expected {length}")
    return arr


def _read_actions(path: Path) -> list[dict[str, Any]]:
    """The action records, with ``role_object_id`` as ``[N, R]`` and the labelled rows indexed by ann id."""
    data = _read_json(path)
    if not isinstance(data, list) or not data:
        raise AnnotationError(f"{path.name}: expected a non-empty list of action records")
    actions = []
    for i, rec in enumerate(data):
        where = f"record {i}"
        if not isinstance(rec, dict):
            raise AnnotationError(f"{path.name}: {where}: expected an object, got {type(rec).__name__}")
        name = rec.get("action_name")
        if not isinstance(name, str) or not name:
            raise AnnotationError(f"{path.name}: {where}: field 'action_name' must be a non-empty string")
        where = f"record {i} (action {name!r})"
        roles = rec.get("role_name")
        if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
            raise AnnotationError(f"{path.name}: {where}: field 'role_name' must be a non-empty list of strings")
        ann = _int_list(path, where, rec, "ann_id")
        label = _int_list(path, where, rec, "label", ann.size)
        _int_list(path, where, rec, "image_id", ann.size)
        role_ids = _int_list(path, where, rec, "role_object_id", ann.size * len(roles)).reshape(len(roles), -1).T
        positive: dict[int, int] = {}
        for row in np.flatnonzero(label == 1):
            a = int(ann[row])
            if a in positive:
                raise AnnotationError(f"{path.name}: {where}: ann_id {a} is labelled 1 twice")
            if role_ids[row, 0] != a:
                raise AnnotationError(f"{path.name}: {where}: role_object_id of ann_id {a} starts with "
                                      f"{int(role_ids[row, 0])}, expected the ann_id itself")
            positive[a] = int(row)
        actions.append({"name": name, "roles": roles, "ann_id": ann, "role_ids": role_ids, "positive": positive,
                        "image_id": np.asarray(rec["image_id"], dtype=np.int64)})
    return actions


def _verb_columns(actions: list[dict[str, Any]], verbs: Sequence[str], path: Path) -> list[list[tuple[int, int]]]:
    """Per action, the ``(verb index, role column)`` pairs it feeds (role column 0: the agent-only action)."""
    index = {v: k for k, v in enumerate(verbs)}
    out: list[list[tuple[int, int]]] = []
    used = set()
    for act in actions:
        pairs = []
        names = [(act["name"], 0)] if len(act["roles"]) == 1 else [
            (f"{act['name']}_{r}", j) for j, r in enumerate(act["roles"]) if j > 0]
        for name, col in names:
            if name in index:
                pairs.append((index[name], col))
                used.add(name)
        out.append(pairs)
    missing = [v for v in verbs if v not in used]
    if missing:
        raise AnnotationError(f"{path.name}: the vocabulary's verbs {missing} are not action-roles of this file "
                              "(expected '<action>_<role>', or '<action>' for an agent-only action)")
    return out


def _clean_box(bbox: Any, width: float, height: float) -> tuple[float, float, float, float]:
    """``vsrl_eval``'s box: ``x + max(0, w - 1)``, clipped to the image (float64, before the float32 cast)."""
    x1, y1, w, h = (float(v) for v in bbox)
    x2 = x1 + max(0.0, w - 1.0)
    y2 = y1 + max(0.0, h - 1.0)
    xs = [min(width - 1.0, max(0.0, v)) for v in (x1, x2)]
    ys = [min(height - 1.0, max(0.0, v)) for v in (y1, y2)]
    return xs[0], ys[0], xs[1], ys[1]


def load_vcoco_official(
    vcoco_dir: str | Path | None = None,
    split: str = "test",
    verbs: HOIVocabulary | Sequence[str] | None = None,
    *,
    vcoco_file: str | Path | None = None,
    coco_file: str | Path | None = None,
    ids_file: str | Path | None = None,
) -> dict[int, VCOCOGroundTruth]:
    """Per-image ground truth of a V-COCO split, exactly as ``vsrl_eval.py`` builds it.

    Args:
        vcoco_dir: folder with the official files (see :func:`find_vcoco_official_files`).
        split: ``train``, ``val``, ``trainval`` or ``test`` (the file names' suffix).
        verbs: the action-role class names (a vocabulary or a list): ``<action>_<role>`` for a role,
            ``<action>`` for an agent-only action. Default: the built-in ``vcoco`` vocabulary (HOIA order).
        vcoco_file: explicit path of ``vcoco_{split}.json`` (overrides what is found in ``vcoco_dir``).
        coco_file: explicit path of ``instances_vcoco_all_2014.json``.
        ids_file: explicit path of ``vcoco_{split}.ids``.

    Returns:
        ``{coco image id: VCOCOGroundTruth}`` in the order of the ids file, ``image_id = coco_image_id``.

    Raises:
        DatasetNotFoundError: a file is missing (the message names every path tried).
        AnnotationError: a record breaks a rule ``vsrl_eval`` relies on (the message names the file, the
            record and the field).
    """
    if vcoco_file is None or coco_file is None or ids_file is None:
        if vcoco_dir is None:
            raise DatasetNotFoundError("load_vcoco_official needs vcoco_dir or all of vcoco_file, coco_file, ids_file")
        found = find_vcoco_official_files(vcoco_dir, split)
        vcoco_file = vcoco_file or found[0]
        coco_file = coco_file or found[1]
        ids_file = ids_file or found[2]
    vcoco_path, coco_path, ids_path = Path(vcoco_file), Path(coco_file), Path(ids_file)
    if verbs is None:
        verbs = HOIVocabulary.builtin("vcoco")
    verb_names = list(verbs.verbs) if isinstance(verbs, HOIVocabulary) else [str(v) for v in verbs]

    image_ids = _read_ids(ids_path)
    actions = _read_actions(vcoco_path)
    columns = _verb_columns(actions, verb_names, vcoco_path)
    in_split = sorted(set(actions[0]["image_id"].tolist()))
    if in_split != image_ids:
        raise AnnotationError(f"{ids_path.name}: the ids must be the sorted image ids of {vcoco_path.name} "
                              f"({len(in_split)} images there, {len(image_ids)} here)")
    in_vcoco = set(actions[0]["ann_id"].tolist())  # vsrl_eval reads the V-COCO persons from the first action

    coco = _read_json(coco_path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco, dict) or not isinstance(coco.get(key), list):
            raise AnnotationError(f"{coco_path.name}: field '{key}' must be a list")
    if not coco["categories"]:
        raise AnnotationError(f"{coco_path.name}: field 'categories' is empty")
    person_cat = coco["categories"][0].get("id")  # vsrl_eval: contiguous class 1 = first category listed
    images: dict[int, dict] = {}
    for i, img in enumerate(coco["images"]):
        try:
            images[int(img["id"])] = {"w": float(img["width"]), "h": float(img["height"])}
        except (KeyError, TypeError, ValueError) as err:
            raise AnnotationError(f"{coco_path.name}: images[{i}]: needs integer 'id', 'width' and 'height' "
                                  f"({err!r})") from err
    wanted = set(image_ids)
    anns_of: dict[int, list[tuple[int, dict]]] = {i: [] for i in image_ids}
    for i, ann in enumerate(coco["annotations"]):
        img = ann.get("image_id") if isinstance(ann, dict) else None
        if img in wanted:
            anns_of[int(img)].append((i, ann))

    out: dict[int, VCOCOGroundTruth] = {}
    for image_id in image_ids:
        if image_id not in images:
            raise AnnotationError(f"{coco_path.name}: image {image_id} of {ids_path.name} is not in 'images'")
        w, h = images[image_id]["w"], images[image_id]["h"]
        valid_ids: list[int] = []
        boxes: list[tuple[float, float, float, float]] = []
        is_person: list[bool] = []
        for i, ann in anns_of[image_id]:
            where = f"annotations[{i}] (id {ann.get('id')}, image {image_id})"
            try:
                ann_id = int(ann["id"])
                bbox = ann["bbox"]
                area = float(ann["area"])
                cat = ann["category_id"]
                if len(bbox) != 4:
                    raise ValueError("bbox needs 4 values")
            except (KeyError, TypeError, ValueError) as err:
                raise AnnotationError(f"{coco_path.name}: {where}: needs 'id', 'bbox' [x, y, w, h], 'area' and "
                                      f"'category_id' ({err!r})") from err
            if ann.get("ignore", 0) == 1:
                continue
            box = _clean_box(bbox, w, h)
            if area > 0 and box[2] > box[0] and box[3] > box[1]:
                valid_ids.append(ann_id)
                boxes.append(box)
                is_person.append(cat == person_cat)
        box_arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        person_idx = np.flatnonzero(np.asarray(is_person, dtype=bool))
        position = {a: k for k, a in enumerate(valid_ids)}
        act_person: list[int] = []
        act_verb: list[int] = []
        role_boxes: list[np.ndarray] = []
        ignored = np.zeros(person_idx.size, dtype=bool)
        for p, k in enumerate(person_idx):
            ann_id = valid_ids[k]
            if ann_id not in in_vcoco:
                ignored[p] = True
                continue
            for act, cols in zip(actions, columns, strict=True):
                row = act["positive"].get(ann_id)
                if row is None:
                    continue
                for verb, col in cols:
                    obj = int(act["role_ids"][row, col]) if col > 0 else 0
                    if obj == 0:
                        role = np.full(4, -1.0, dtype=np.float32)
                    elif obj in position:
                        role = box_arr[position[obj]]
                    else:
                        raise AnnotationError(
                            f"{vcoco_path.name}: action {act['name']!r}, ann_id {ann_id}: role "
                            f"{act['roles'][col]!r} object {obj} is not a valid annotation of image {image_id} in "
                            f"{coco_path.name}")
                    act_person.append(p)
                    act_verb.append(verb)
                    role_boxes.append(role)
        out[image_id] = VCOCOGroundTruth(
            image_id=image_id,
            coco_image_id=image_id,
            person_boxes=torch.from_numpy(box_arr[person_idx].copy()),
            person_ignored=torch.from_numpy(ignored),
            action_person=torch.tensor(act_person, dtype=torch.long),
            action_verbs=torch.tensor(act_verb, dtype=torch.long),
            role_boxes=torch.from_numpy(np.asarray(role_boxes, dtype=np.float32).reshape(-1, 4)),
            size=(int(h), int(w)),
        )
    log.info("V-COCO %s: %d images, %d persons (%d outside V-COCO) from %s", split, len(out),
             sum(g.num_persons for g in out.values()), sum(int(g.person_ignored.sum()) for g in out.values()),
             vcoco_path)
    return out


def attach_vcoco_official(
    records: Sequence[ImageRecord], file_name: str, official: dict[int, VCOCOGroundTruth]
) -> list[VCOCOGroundTruth]:
    """The official ground truth of each record, found by the COCO id in its image file name.

    Raises :class:`AnnotationError` naming the annotation file, the record and its file name when an image
    is not in the official split. Official images without a record are only logged: ``vsrl_eval`` would
    count their positives too, so the role AP is then that of the images present.
    """
    out = []
    for rec in records:
        cid = coco_image_id(rec.file_name)
        if cid not in official:
            raise AnnotationError(f"{file_name}: record {rec.index} (file_name {rec.file_name!r}): COCO image {cid} "
                                  f"is not in the official V-COCO split ({len(official)} images)")
        out.append(official[cid])
    missing = len(official) - len({coco_image_id(r.file_name) for r in records})
    if missing:
        log.warning("%d images of the official V-COCO split are not in %s; their positives are not counted",
                    missing, file_name)
    return out
