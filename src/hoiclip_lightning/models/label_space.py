"""Open-vocabulary label space: which rows of a model follow the vocabulary, and how they move between two.

Used by the models (:meth:`HOIModel.set_vocabulary`), by the LightningModule (a checkpoint trained on another
label space, ``load_from_checkpoint(path, vocabulary=...)``) and by the predictor (the vocabulary stored in a
checkpoint). A class is identified by names, not indices: HOI classes by ``("hoi", verb, object)``, objects by
``("object", name)``, verbs by ``("verb", name)``, so a class present in two vocabularies keeps its row.

Notation: C_obj objects, C_verb verbs, C_hoi_all HOI classes of a vocabulary, E CLIP embedding width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError
from ..vocabulary import HOIVocabulary

#: state-dict keys (relative to the model) whose rows follow the vocabulary; a model has a subset of them
VOCABULARY_KEYS = (
    "hoi_text_embeds",
    "visual_projection.weight",
    "visual_projection.bias",
    "eval_visual_projection.weight",
    "eval_visual_projection.bias",
    "obj_visual_projection.weight",
    "obj_visual_projection.bias",
    "verb_projection.weight",
    "dense_class_embed.weight",
    "dense_class_embed.bias",
)
#: keys whose rows of classes new to the model start at 0 (text-classifier biases)
ZERO_FOR_NEW_CLASSES = ("visual_projection.bias", "eval_visual_projection.bias", "obj_visual_projection.bias")
_NOTHING = ("object", "<nothing>")
_SUBJECT = ("dense", "<subject human>")


def vocabulary_row_ids(vocabulary: HOIVocabulary, train_hoi_ids: list[int]) -> dict[str, list[tuple]]:
    """Identity of every row of each :data:`VOCABULARY_KEYS` tensor.

    Args:
        vocabulary: the label space.
        train_hoi_ids: HOI classes of the training head (its row order).

    Returns:
        key -> row identities; equal identities in two vocabularies are the same class.

    Example:
        >>> v = HOIVocabulary.builtin("vcoco")
        >>> vocabulary_row_ids(v, [0])["visual_projection.weight"]
        [('hoi', 'hold_obj', 'cup')]
    """
    hoi = [("hoi", vocabulary.verbs[v], vocabulary.objects[o]) for v, o in vocabulary.hois]
    objects = [("object", o) for o in vocabulary.objects]
    verbs = [("verb", v) for v in vocabulary.verbs]
    train = [hoi[c] for c in train_hoi_ids]
    dense = objects + [_SUBJECT] + verbs
    return {
        "hoi_text_embeds": hoi,
        "visual_projection.weight": train,
        "visual_projection.bias": train,
        "eval_visual_projection.weight": hoi,
        "eval_visual_projection.bias": hoi,
        "obj_visual_projection.weight": objects + [_NOTHING],
        "obj_visual_projection.bias": objects + [_NOTHING],
        "verb_projection.weight": verbs,
        "dense_class_embed.weight": dense,
        "dense_class_embed.bias": dense,
    }


def remap_vocabulary_rows(
    old_state: dict[str, Tensor],
    old_rows: dict[str, list[tuple]],
    new_state: dict[str, Tensor],
    new_rows: dict[str, list[tuple]],
    prefix: str = "",
) -> dict[str, Tensor]:
    """Carry the rows of classes present in both vocabularies from ``old_state`` into ``new_state``.

    For every key ``prefix + k`` of ``new_state`` with ``k`` in :data:`VOCABULARY_KEYS`: a copy of the new
    tensor (``[C_new, ...]``, built from text) whose rows of classes also in the old vocabulary are the old
    rows (``old_state[prefix + k]``, ``[C_old, ...]``). New classes of the text-classifier biases get 0
    (:data:`ZERO_FOR_NEW_CLASSES`). Keys missing from ``old_state`` keep the new tensor.

    Returns:
        the remapped tensors, keyed like ``new_state`` (vocabulary keys only).
    """
    out: dict[str, Tensor] = {}
    for full, new in new_state.items():
        key = full[len(prefix):] if full.startswith(prefix) else None
        if key not in VOCABULARY_KEYS:
            continue
        value = new.detach().clone()
        old = old_state.get(full)
        if old is not None:
            index = {ident: i for i, ident in enumerate(old_rows[key])}
            if len(index) != old.shape[0]:
                raise CheckpointError(f"{full}: {old.shape[0]} rows stored, but the stored vocabulary "
                                      f"describes {len(index)}")
            pairs = [(j, index[ident]) for j, ident in enumerate(new_rows[key]) if ident in index]
            kept = set()
            if pairs:
                dst, src = (torch.tensor(x, dtype=torch.long) for x in zip(*pairs, strict=True))
                value[dst] = old.to(value.device, value.dtype)[src]
                kept = set(dst.tolist())
            if key in ZERO_FOR_NEW_CLASSES:
                value[[j for j in range(value.shape[0]) if j not in kept]] = 0.0
        out[full] = value
    return out


def same_label_space(a: HOIVocabulary, b: HOIVocabulary) -> bool:
    """True when two vocabularies have the same HOI classes and as many objects and verbs (names may differ)."""
    return a.hois == b.hois and len(a.objects) == len(b.objects) and len(a.verbs) == len(b.verbs)


def split_of_state(vocabulary: HOIVocabulary, state: dict[str, Any], guess: str, prefix: str = "model.") -> str:
    """The zero-shot split whose seen-class count matches the stored training head (``guess`` if unclear)."""
    head = state.get(prefix + "visual_projection.weight")
    if head is None or (guess in vocabulary.zero_shot_unseen and len(vocabulary.seen_hois(guess)) == head.shape[0]):
        return guess
    matches = [s for s in vocabulary.zero_shot_splits if len(vocabulary.seen_hois(s)) == head.shape[0]]
    return matches[0] if len(matches) == 1 else guess


def checkpoint_vocabulary(checkpoint: dict[str, Any], source: str = "checkpoint") -> tuple[HOIVocabulary, str]:
    """The vocabulary and zero-shot split a Lightning checkpoint was trained with.

    Read from the checkpoint's own copy (``hoiclip_vocabulary``, written by every save), else from its
    hyper-parameters (older checkpoints: built-in name or JSON path; the split is then inferred from the
    shape of the stored training head, :func:`split_of_state`).
    """
    hp = checkpoint.get("hyper_parameters") or {}
    stored = checkpoint.get("hoiclip_vocabulary")
    zero_shot = checkpoint.get("hoiclip_zero_shot", hp.get("zero_shot", "default"))
    if stored is not None:
        vocabulary = HOIVocabulary.from_dict(dict(stored), source=f"{source} (stored vocabulary)")
    else:
        vocabulary = HOIVocabulary.resolve(hp.get("vocabulary", "hico_det"))
    if "hoiclip_zero_shot" not in checkpoint:
        zero_shot = split_of_state(vocabulary, checkpoint.get("state_dict") or {}, zero_shot)
    return vocabulary, zero_shot
