"""HOI vocabulary: objects, verbs, HOI triplets, prompts, the rare set and zero-shot splits.

A vocabulary is everything the model and the metrics need to know about a label space; nothing in the
library hard-codes HICO-DET's 80/117/600. Two are built in (``hico_det``, ``vcoco``); a custom dataset
brings its own JSON file with the same fields (see :meth:`HOIVocabulary.to_json`).

Examples:
    >>> vocab = HOIVocabulary.builtin("hico_det")
    >>> vocab.num_objects, vocab.num_verbs, vocab.num_hois, len(vocab.rare_hois)
    (80, 117, 600, 138)
    >>> vocab.hoi_prompts[0]
    'a photo of a person boarding an airplane'
    >>> len(vocab.seen_hois("rare_first"))
    480
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import AnnotationError, ConfigurationError

BUILTIN_VOCABULARIES = ("hico_det", "vcoco")

_REQUIRED = ("name", "objects", "object_category_ids", "verbs", "verb_ids", "hois", "hoi_prompts")


#: a HOI class is rare when it has fewer than this many training instances (HICO-DET's rule, 138 of 600 classes)
RARE_THRESHOLD = 10


@dataclass
class HOIVocabulary:
    """Label space of an HOI dataset.

    Attributes:
        name: short name (``hico_det``, ``vcoco`` or a custom one).
        objects: object class names; position = contiguous object index (person is index 0).
        object_category_ids: the ``category_id`` each object has in the annotation files (COCO ids for
            HICO-DET and V-COCO); ``-1`` for a pseudo-class that never appears in a file.
        verbs: verb names; position = contiguous verb index.
        verb_ids: the ``category_id`` each verb has in the annotation files (1-based for HICO-DET,
            0-based for V-COCO).
        hois: ``[verb_index, object_index]`` per HOI class; position = HOI class index.
        hoi_prompts: one text prompt per HOI class.
        object_prompts: one prompt per object plus a final "nothing" prompt (``num_objects + 1``).
        rare_hois: HOI classes with fewer than :data:`RARE_THRESHOLD` (10) training instances in the full
            training set.
        zero_shot_unseen: unseen HOI classes per zero-shot split name (``default`` has none).
        no_object_index: object index that stands for "no object" (V-COCO roles with
            ``object_id = -1``), or ``None`` when every HOI has an object.
    """

    name: str
    objects: list[str]
    object_category_ids: list[int]
    verbs: list[str]
    verb_ids: list[int]
    hois: list[tuple[int, int]]
    hoi_prompts: list[str]
    object_prompts: list[str] = field(default_factory=list)
    rare_hois: list[int] = field(default_factory=list)
    zero_shot_unseen: dict[str, list[int]] = field(default_factory=lambda: {"default": []})
    no_object_index: int | None = None

    def __post_init__(self) -> None:
        self.hois = [tuple(int(x) for x in h) for h in self.hois]  # type: ignore[misc]
        if not self.object_prompts:
            self.object_prompts = [f"a photo of {_article(o)} {o}" for o in self.objects] + ["a photo of nothing"]
        self.zero_shot_unseen.setdefault("default", [])
        self._validate()
        self._hoi_index = {h: i for i, h in enumerate(self.hois)}
        self._object_by_category = {c: i for i, c in enumerate(self.object_category_ids) if c != -1}
        self._verb_by_id = {v: i for i, v in enumerate(self.verb_ids)}

    # ------------------------------------------------------------------ construction
    @classmethod
    def builtin(cls, name: str) -> HOIVocabulary:
        """Load a built-in vocabulary: ``"hico_det"`` or ``"vcoco"``."""
        if name not in BUILTIN_VOCABULARIES:
            raise ConfigurationError(f"unknown built-in vocabulary {name!r}; accepted: {BUILTIN_VOCABULARIES}")
        text = resources.files("hoiclip_lightning.resources").joinpath(f"{name}_vocabulary.json").read_text()
        return cls.from_dict(json.loads(text), source=f"<builtin {name}>")

    @classmethod
    def from_json(cls, path: str | Path) -> HOIVocabulary:
        """Read a vocabulary JSON file (the format :meth:`to_json` writes)."""
        path = Path(path)
        if not path.is_file():
            from .errors import DatasetNotFoundError

            raise DatasetNotFoundError(f"vocabulary file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise AnnotationError(f"{path}: not valid JSON ({err})") from err
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> HOIVocabulary:
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise AnnotationError(f"{source}: vocabulary is missing field(s) {missing}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AnnotationError(f"{source}: unknown vocabulary field(s) {unknown}; accepted: {sorted(known)}")
        try:
            return cls(**data)
        except AnnotationError as err:
            raise AnnotationError(f"{source}: {err}") from None

    @classmethod
    def resolve(cls, spec: str | Path | HOIVocabulary) -> HOIVocabulary:
        """A vocabulary from a built-in name, a JSON path, or an instance (returned as is)."""
        if isinstance(spec, HOIVocabulary):
            return spec
        if str(spec) in BUILTIN_VOCABULARIES:
            return cls.builtin(str(spec))
        return cls.from_json(spec)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hois"] = [list(h) for h in self.hois]
        return data

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the label space: object names, verb names and HOI (verb, object) pairs.

        Prompts, the rare list and the zero-shot splits are left out: they do not change what a class row
        means, so files computed for one vocabulary (verb representations, checkpoints) stay valid when
        only those change.

        Example:
            >>> v = HOIVocabulary.builtin("hico_det")
            >>> len(v.fingerprint()), v.fingerprint() == HOIVocabulary.builtin("hico_det").fingerprint()
            (64, True)
        """
        payload = {"objects": list(self.objects), "verbs": list(self.verbs), "hois": [list(h) for h in self.hois]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    # ------------------------------------------------------------------ sizes
    @property
    def num_objects(self) -> int:
        """Object classes, without the no-object/background slot of the classifier."""
        return len(self.objects)

    @property
    def num_verbs(self) -> int:
        return len(self.verbs)

    @property
    def num_hois(self) -> int:
        return len(self.hois)

    # ------------------------------------------------------------------ look-ups
    def hoi_index(self, verb: int, obj: int) -> int | None:
        """HOI class of (verb index, object index), or ``None`` if the pair is not in the vocabulary."""
        return self._hoi_index.get((int(verb), int(obj)))

    def object_index(self, category_id: int) -> int | None:
        """Contiguous object index of an annotation ``category_id`` (None if unknown)."""
        return self._object_by_category.get(int(category_id))

    def verb_index(self, verb_id: int) -> int | None:
        """Contiguous verb index of an annotation verb ``category_id`` (None if unknown)."""
        return self._verb_by_id.get(int(verb_id))

    def hoi_to_verb(self) -> Tensor:
        """``[C_hoi]`` long: verb index of each HOI class."""
        return torch.tensor([v for v, _ in self.hois], dtype=torch.long)

    def hoi_to_object(self) -> Tensor:
        """``[C_hoi]`` long: object index of each HOI class."""
        return torch.tensor([o for _, o in self.hois], dtype=torch.long)

    def verb_to_hoi_matrix(self, hoi_ids: list[int] | None = None, columns: str = "hoi") -> Tensor:
        """``[C_verb, len(hoi_ids)]`` float binary matrix P that adds verb logits to HOI logits.

        Args:
            hoi_ids: the HOI classes of the columns, in order (default: all).
            columns: ``"hoi"`` (correct): ``P[verb(c), j] = 1`` for ``c = hoi_ids[j]``. ``"object"``: the
                reference's V-COCO matrix, filled at ``[verb, object index]`` instead of ``[verb, HOI index]``
                (for each HOI class ``(v, o)`` of the vocabulary, ``P_full[v, o] = 1``; then the columns
                ``hoi_ids`` are taken), so a verb's logit lands on the HOI columns numbered like its objects.
                Only for checkpoints trained that way (released V-COCO weights).

        >>> v = HOIVocabulary.builtin("vcoco")
        >>> v.hois[0], v.verb_to_hoi_matrix()[0, 0].item(), v.verb_to_hoi_matrix(columns="object")[0, 41].item()
        ((0, 41), 1.0, 1.0)

        Raises:
            ConfigurationError: unknown ``columns``, or ``"object"`` with an object index beyond the HOI count.
        """
        ids = list(range(self.num_hois)) if hoi_ids is None else list(hoi_ids)
        if columns == "hoi":
            mat = torch.zeros(self.num_verbs, len(ids))
            for j, c in enumerate(ids):
                mat[self.hois[c][0], j] = 1.0
            return mat
        if columns != "object":
            raise ConfigurationError(f"verb-to-HOI columns {columns!r} unknown; accepted: ('hoi', 'object')")
        if self.num_objects > self.num_hois:
            raise ConfigurationError(
                f"vocabulary {self.name!r}: an object-indexed verb-to-HOI matrix needs at least as many HOI classes "
                f"({self.num_hois}) as objects ({self.num_objects})")
        full = torch.zeros(self.num_verbs, self.num_hois)
        for v, o in self.hois:
            full[v, o] = 1.0
        return full[:, ids].contiguous()

    def verb_object_matrix(self) -> Tensor:
        """``[C_verb, C_obj]`` bool validity of (verb, object) combinations (``corre_*.npy``)."""
        mat = torch.zeros(self.num_verbs, self.num_objects, dtype=torch.bool)
        for v, o in self.hois:
            mat[v, o] = True
        return mat

    # ------------------------------------------------------------------ splits
    @property
    def zero_shot_splits(self) -> list[str]:
        return sorted(self.zero_shot_unseen)

    def unseen_hois(self, split: str = "default") -> list[int]:
        """Unseen HOI classes of a zero-shot split (empty for ``default``)."""
        if split not in self.zero_shot_unseen:
            raise ConfigurationError(
                f"zero-shot split {split!r} is not defined for vocabulary {self.name!r}; "
                f"accepted: {self.zero_shot_splits}"
            )
        return sorted(self.zero_shot_unseen[split])

    def seen_hois(self, split: str = "default") -> list[int]:
        """Seen (training) HOI classes of a zero-shot split, in class order."""
        unseen = set(self.unseen_hois(split))
        return [c for c in range(self.num_hois) if c not in unseen]

    def rare_mask(self) -> Tensor:
        """``[C_hoi]`` bool, True for rare classes."""
        mask = torch.zeros(self.num_hois, dtype=torch.bool)
        mask[list(self.rare_hois)] = True
        return mask

    # ------------------------------------------------------------------ checks
    def _validate(self) -> None:
        def fail(msg: str) -> None:
            raise AnnotationError(f"vocabulary {self.name!r}: {msg}")

        if len(self.object_category_ids) != len(self.objects):
            fail(f"object_category_ids has {len(self.object_category_ids)} entries, objects has {len(self.objects)}")
        if len(self.verb_ids) != len(self.verbs):
            fail(f"verb_ids has {len(self.verb_ids)} entries, verbs has {len(self.verbs)}")
        if len(self.hoi_prompts) != len(self.hois):
            fail(f"hoi_prompts has {len(self.hoi_prompts)} entries, hois has {len(self.hois)}")
        if len(self.object_prompts) != len(self.objects) + 1:
            fail(f"object_prompts must have num_objects + 1 = {len(self.objects) + 1} entries (last = nothing), "
                 f"got {len(self.object_prompts)}")
        first_pair: dict[tuple[int, int], int] = {}
        for i, pair in enumerate(self.hois):
            if pair in first_pair:
                v, o = pair
                verb = repr(self.verbs[v]) if 0 <= v < len(self.verbs) else "?"
                obj = repr(self.objects[o]) if 0 <= o < len(self.objects) else "?"
                fail(f"hois has the duplicate (verb, object) pair ({v}, {o}) ({verb} {obj}) at positions "
                     f"{first_pair[pair]} and {i}; each pair must be unique")
            first_pair[pair] = i
        # a repeated name, id or prompt makes two classes indistinguishable (a duplicated category id maps
        # every box of that id to the later class; a repeated prompt gives two classes one text embedding)
        for name, values, names in (
            ("objects", self.objects, None),
            ("verbs", self.verbs, None),
            ("object_category_ids", self.object_category_ids, ("objects", self.objects)),
            ("verb_ids", self.verb_ids, ("verbs", self.verbs)),
            ("hoi_prompts", self.hoi_prompts, None),
            ("object_prompts", self.object_prompts, None),
        ):
            kind = int if name.endswith("_ids") else str
            first: dict[Any, int] = {}
            for i, value in enumerate(values):
                if not isinstance(value, kind) or isinstance(value, bool):
                    fail(f"{name}[{i}] = {value!r}, expected {'an integer' if kind is int else 'a string'}")
                if name == "object_category_ids" and value == -1:
                    continue  # pseudo-classes that never appear in a file
                if value in first:
                    j = first[value]
                    what = f" ({names[0]} {names[1][j]!r} and {names[1][i]!r})" if names else ""
                    fail(f"{name} has the duplicate {value!r} at positions {j} and {i}{what}; each entry must be "
                         "unique")
                first[value] = i
        for i, (v, o) in enumerate(self.hois):
            if not 0 <= v < len(self.verbs):
                fail(f"hois[{i}] verb index {v} is outside 0..{len(self.verbs) - 1}")
            if not 0 <= o < len(self.objects):
                fail(f"hois[{i}] object index {o} is outside 0..{len(self.objects) - 1}")
        for c in self.rare_hois:
            if not 0 <= c < len(self.hois):
                fail(f"rare_hois contains {c}, outside 0..{len(self.hois) - 1}")
        for split, ids in self.zero_shot_unseen.items():
            bad = [c for c in ids if not 0 <= c < len(self.hois)]
            if bad:
                fail(f"zero_shot_unseen[{split!r}] contains class ids outside 0..{len(self.hois) - 1}: {bad[:5]}")
        if self.no_object_index is not None and not 0 <= self.no_object_index < len(self.objects):
            fail(f"no_object_index {self.no_object_index} is outside 0..{len(self.objects) - 1}")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
