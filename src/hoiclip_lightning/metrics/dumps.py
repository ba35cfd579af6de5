"""Reading the prediction and annotation files other HOI code bases write, without executing them.

Prediction files (:func:`read_predictions`):

* **QPIC-family evaluator dumps**: GEN-VLKT / HOICLIP write ``results.json`` as
  ``json.dumps(str({"preds": [...], "gts": [...]}))``: a JSON string holding the Python ``repr`` of the
  dict, with NumPy scalars (``np.float32(0.5)`` under NumPy 2). It is read as data: the NumPy wrappers
  are removed and the rest parsed as JSON, or, when that fails, by a literal-only walk of the syntax
  tree (no ``eval``). A plain JSON ``{"preds": [...]}`` or list of such records is read too.
* **Pickles of post-processor outputs** (``.pkl``, ``.pickle``, ``.pt``, ``.pth``): a list of per-image
  dicts (or a dict keyed by file name or position). Plain pickles go through an unpickler that only
  accepts NumPy arrays and scalars, torch tensors and ``OrderedDict``; ``torch.save`` files through
  ``torch.load(weights_only=True)`` with the same NumPy types allowed. Anything else is refused.
* **JSON lines** of ``hoiclip predict`` (one record per image with ``file`` and ``triplets``).

Annotation files (:func:`read_annotations`): the PPDM / HOIA JSON list, or ``fredzzhang/hicodet``
``instances_*.json``.
"""

from __future__ import annotations

import ast
import collections
import io
import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import AnnotationError, DatasetNotFoundError

PREDICTION_KINDS = ("qpic_outputs", "upt_outputs", "hoi_dump", "jsonl")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth")


@dataclass
class PredictionFile:
    """The records of a prediction file.

    Attributes:
        path: the file.
        kind: ``qpic_outputs`` (post-processor dicts with ``sub_ids``), ``upt_outputs`` (with
            ``pairing``), ``hoi_dump`` (evaluator records with ``hoi_prediction``) or ``jsonl``.
        records: one per image.
        names: the image file name of each record (base name), ``None`` where the record names none.
        positions: the image position of each record when the file keyed them by position, else ``None``.
    """

    path: Path
    kind: str
    records: list[Any]
    names: list[str | None] = field(default_factory=list)
    positions: list[int] | None = None


@dataclass
class AnnotationFile:
    """An annotation file: ``kind`` is ``ppdm`` (PPDM / HOIA list) or ``instances`` (fredzzhang)."""

    path: Path
    kind: str
    data: Any

    @property
    def file_names(self) -> list[str]:
        if self.kind == "instances":
            return [str(n) for n in self.data["filenames"]]
        return [str(r.get("file_name", "")) if isinstance(r, dict) else "" for r in self.data]


# ---------------------------------------------------------------------- safe pickle
def _load_storage_bytes(data: bytes) -> Any:
    """What ``torch.storage._load_from_bytes`` does for a plain pickle of tensors, but weights-only."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Accepts only NumPy arrays and scalars, torch tensors and ``OrderedDict``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return torch._utils._rebuild_tensor_v2
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _load_storage_bytes
        hint = f"; {_VSRL_DETECTIONS}" if name == "CacheTemplate" else ""  # UPT's V-COCO cache.pkl
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only tensors, arrays and plain containers "
                                     f"are read){hint}")


def load_safe_pickle(path: str | Path) -> Any:
    """Read a pickle or ``torch.save`` file holding only containers, tensors and NumPy arrays / scalars.

    Raises:
        AnnotationError: the file holds anything else (a class, a function) or cannot be read.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):  # torch.save's format
            multiarray = getattr(np, "_core", None) or np.core  # NumPy 2 / 1
            allowed = [multiarray.multiarray._reconstruct, np.ndarray, np.dtype, multiarray.multiarray.scalar,
                       *(getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType"))]
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        with path.open("rb") as fh:
            return _SafeUnpickler(fh).load()
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise AnnotationError(f"{path}: cannot read the pickle safely ({err})") from None


# ---------------------------------------------------------------------- python-literal dumps
_NUMPY_CALL = re.compile(r"\b(?:np|numpy)\.(?:float|int|uint|bool_|str_)\w*\(([^()]*)\)")


def _literal(node: ast.AST) -> Any:
    """Value of a literal-only syntax tree (containers, constants, signs, NumPy scalar calls)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in ("nan", "inf"):
        return float(node.id)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
            and node.func.value.id in ("np", "numpy") and len(node.args) == 1 and not node.keywords):
        return _literal(node.args[0])
    raise ValueError(f"not a literal: {ast.dump(node)[:80]}")


def parse_python_literal(text: str) -> Any:
    """Parse the ``str()`` of a dict / list of NumPy values (as the reference evaluators dump it) as data."""
    stripped = _NUMPY_CALL.sub(r"\1", text)
    as_json = re.sub(r"\bnan\b", "NaN", stripped.replace("'", '"'))
    as_json = re.sub(r"\binf\b", "Infinity", as_json)
    as_json = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null", as_json)))
    try:
        return json.loads(as_json)
    except json.JSONDecodeError:
        pass  # e.g. a quote inside a file name: the slower, exact walk below
    return _literal(ast.parse(text.strip(), mode="eval").body)


# ---------------------------------------------------------------------- prediction files
def _base_name(value: Any) -> str | None:
    return None if value is None else Path(str(value)).name


def _record_name(record: Any) -> str | None:
    if isinstance(record, dict):
        for key in ("filename", "file_name", "file"):
            if key in record:
                return _base_name(record[key])
    return None


_VSRL_DETECTIONS = (
    "this is a vsrl_eval detection file (one dict per person with 'person_box', '<action>_agent' and "
    "'<action>_<role>' entries, as generate_vcoco_official.py of QPIC / CDN / GEN-VLKT / HOICLIP and UPT's "
    "--cache write it), which is not read: it is the input of the official vsrl_eval.py, which scores it as it "
    "stands; for hoiclip evaluate give the post-processor outputs of the same run (a pickle of the per-image "
    "dicts) with the HOIA test_vcoco.json")


def _kind_of(record: Any, where: str) -> str:
    if not isinstance(record, dict):
        raise AnnotationError(f"{where}: expected a dict per image, got {type(record).__name__}")
    if "hoi_prediction" in record:
        return "hoi_dump"
    if "triplets" in record:
        return "jsonl"
    if "pairing" in record:
        return "upt_outputs"
    if "sub_ids" in record:
        return "qpic_outputs"
    if "person_box" in record and "image_id" in record:
        raise AnnotationError(f"{where}: {_VSRL_DETECTIONS}")
    raise AnnotationError(f"{where}: cannot tell the format from the fields {sorted(map(str, record))}: expected "
                          "'sub_ids' (QPIC family), 'pairing' (UPT family), 'hoi_prediction' (evaluator dump) or "
                          "'triplets' (hoiclip predict)")


def _from_container(path: Path, data: Any) -> PredictionFile:
    positions = None
    names: list[str | None]
    if isinstance(data, dict) and "preds" in data:
        data = data["preds"]
    if isinstance(data, dict):
        keys = list(data)
        records = [data[k] for k in keys]
        if all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in keys):
            positions, names = [int(k) for k in keys], [None] * len(keys)
        else:
            names = [_base_name(k) for k in keys]
    elif isinstance(data, (list, tuple)):
        records = list(data)
        names = [_record_name(r) for r in records]
    else:
        raise AnnotationError(f"{path}: expected a list of per-image records (or a dict of them), "
                              f"got {type(data).__name__}")
    if not records:
        raise AnnotationError(f"{path}: holds no prediction records")
    kinds = {_kind_of(r, f"{path}: record {i}") for i, r in enumerate(records)}
    if len(kinds) != 1:
        raise AnnotationError(f"{path}: records of several formats are mixed: {sorted(kinds)}")
    return PredictionFile(path=path, kind=kinds.pop(), records=records, names=names, positions=positions)


def read_predictions(path: str | Path) -> PredictionFile:
    """Read a prediction file of any supported kind (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"prediction file not found: {path}")
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        return _from_container(path, load_safe_pickle(path))
    text = path.read_text()
    stripped = text.lstrip()
    if path.suffix.lower() == ".jsonl" or (stripped.startswith("{") and "\n{" in stripped.rstrip()):
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise AnnotationError(f"{path}: line {n}: not valid JSON ({err})") from None
        return _from_container(path, records)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, str):  # json.dumps(str({...})) of the reference evaluators
        try:
            data = parse_python_literal(data)
        except (ValueError, SyntaxError) as err:
            raise AnnotationError(f"{path}: the JSON string is not a Python literal of a dump ({err})") from None
    return _from_container(path, data)


# ---------------------------------------------------------------------- annotation files
def read_annotations(path: str | Path) -> AnnotationFile:
    """Read a PPDM / HOIA JSON list or a ``fredzzhang/hicodet`` ``instances_*.json``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, list):
        return AnnotationFile(path=path, kind="ppdm", data=data)
    if isinstance(data, dict) and "annotation" in data and "filenames" in data:
        return AnnotationFile(path=path, kind="instances", data=data)
    if isinstance(data, dict) and "annotations" in data and "classes" in data and "action_to_object" in data:
        raise AnnotationError(f"{path}: a fredzzhang/vcoco instances_vcoco_*.json is not read as ground truth: it "
                              "keeps only the pairs with a role object, so the role AP counts would differ from "
                              "V-COCO's; give the HOIA test_vcoco.json (and key UPT outputs by file name)")
    fields = sorted(data) if isinstance(data, dict) else type(data).__name__
    raise AnnotationError(f"{path}: neither a PPDM/HOIA list of image records nor an instances file with "
                          f"'annotation' and 'filenames' (got {fields})")
