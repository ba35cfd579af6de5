"""The verb-representation file: what ``hoiclip verb-embeddings`` writes and ``weights.verb_embeddings`` reads.

One module holds the format (its name and version), the writer (:func:`write_verb_embeddings`), the reader
(:func:`load_verb_embeddings`) and the check of the stored metadata against a model
(:func:`check_verb_metadata`). Layout: ``{"verb_embeddings": [C_verb, E] float32, **metadata}`` saved with
``torch.save``; the official ``verb.pth`` (a bare tensor) is read too. The metadata fields are listed in
``docs/knowledge.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError
from ..vocabulary import HOIVocabulary

log = logging.getLogger(__name__)

#: value of the ``format`` field
FILE_FORMAT = "hoiclip_lightning.verb_embeddings"
#: value of the ``format_version`` field
FILE_VERSION = 1


def write_verb_embeddings(path: str | Path, embeddings: Tensor, metadata: dict[str, Any]) -> Path:
    """Write ``{"verb_embeddings": embeddings, **metadata}`` (``[C_verb, E]``, stored float32; parents made).

    Example:
        >>> import tempfile, torch
        >>> path = write_verb_embeddings(tempfile.mkdtemp() + "/v.pt", torch.eye(3), {"embed_dim": 3})
        >>> load_verb_embeddings(path, num_verbs=3, embed_dim=3).shape
        torch.Size([3, 3])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FILE_FORMAT, "format_version": FILE_VERSION, **metadata}
    torch.save({"verb_embeddings": embeddings.detach().cpu().float(), **payload}, path)
    return path


def _looks_like_file(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.endswith((".pt", ".pth", ".bin", ".safetensors"))


def load_verb_embeddings(
    path: str | Path,
    num_verbs: int,
    embed_dim: int,
    vocabulary: HOIVocabulary | None = None,
    clip_model: str | None = None,
    clip_pretrained: str | None = None,
    zero_shot: str | None = None,
    clip_image_fingerprint: str | None = None,
) -> Tensor:
    """Read a verb-representation file and check that it fits the model.

    Accepted contents (``torch.load``): a plain ``[C_verb, E]`` tensor (the official ``verb.pth`` /
    ``vcoco_verb.pth``: no metadata, so only the shape is checked and a warning is logged) or a dict with
    the tensor under ``verb_embeddings`` or ``embeddings`` and optional metadata (``hoiclip
    verb-embeddings`` writes all of it, see ``docs/knowledge.md``). Every metadata field present is checked
    against the model: ``verbs`` and ``vocabulary_hash`` against ``vocabulary``, ``clip_model`` against
    ``clip_model``, ``clip_pretrained`` against ``clip_pretrained`` (tags must be equal; when either is a
    local file a difference is only warned about), ``embed_dim`` against ``embed_dim``. A file computed
    with unseen classes (``include_unseen``) or for another zero-shot split than ``zero_shot`` is accepted
    with a warning (the verb classifier then carries information about unseen classes).

    Args:
        path: the file.
        num_verbs: expected C_verb (from the vocabulary).
        embed_dim: expected E (from the CLIP model).
        vocabulary: the model's label space (``None``: not checked).
        clip_model: the model's open_clip name (``None``: not checked).
        clip_pretrained: the model's pretrained tag or file (``None``: random CLIP; checked when
            ``clip_model`` is given).
        zero_shot: the model's zero-shot split (``None``: not checked).
        clip_image_fingerprint: fingerprint of the model's CLIP image tower; a different stored
            ``clip_image_fingerprint`` is warned about (e.g. a random CLIP drawn with another seed).

    Returns:
        ``[C_verb, E]`` float32 tensor, as stored (rows are not re-normalised).

    Raises:
        CheckpointError: missing/unreadable file, unknown layout, wrong shape or metadata that does not
            match the model (the message names the file and the field).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"verb embedding file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(f"{path}: cannot read verb embeddings ({err})") from err
    meta: dict = {}
    if isinstance(data, dict):
        key = next((k for k in ("verb_embeddings", "embeddings") if k in data), None)
        if key is None:
            raise CheckpointError(
                f"{path}: dict without 'verb_embeddings' or 'embeddings' key (keys: {sorted(map(str, data))})"
            )
        meta = {k: v for k, v in data.items() if k != key}
        data = data[key]
    if not isinstance(data, Tensor):
        raise CheckpointError(f"{path}: expected a tensor [C_verb, E], got {type(data).__name__}")
    if not meta:
        log.warning("%s: verb embeddings without metadata (e.g. an official verb.pth); only the shape [%d, %d] "
                    "is checked, not the vocabulary or the CLIP model", path, num_verbs, embed_dim)
    check_verb_metadata(path, meta, vocabulary, clip_model, clip_pretrained, zero_shot, embed_dim)
    stored_fp = meta.get("clip_image_fingerprint")
    if clip_image_fingerprint is not None and stored_fp is not None and stored_fp != clip_image_fingerprint:
        log.warning("%s: computed with other CLIP image-tower weights than the model's (a random CLIP drawn with "
                    "another seed, another precision or fine-tuned weights); the verb rows may not match the "
                    "model's feature space", path)
    if tuple(data.shape) != (num_verbs, embed_dim):
        raise CheckpointError(
            f"{path}: verb embeddings have shape {tuple(data.shape)}, but the model needs "
            f"[{num_verbs}, {embed_dim}] (verbs of the vocabulary x CLIP embedding width); regenerate the file "
            "for this vocabulary and CLIP model"
        )
    if not torch.isfinite(data).all():
        raise CheckpointError(f"{path}: verb embeddings contain NaN or infinite values")
    return data.float()


def check_verb_metadata(path: Path, meta: dict, vocabulary: HOIVocabulary | None, clip_model: str | None,
                         clip_pretrained: str | None, zero_shot: str | None, embed_dim: int) -> None:
    hint = "; regenerate it with `hoiclip verb-embeddings` for the model's data and CLIP settings"
    if "embed_dim" in meta and int(meta["embed_dim"]) != embed_dim:
        raise CheckpointError(f"{path}: field 'embed_dim' is {meta['embed_dim']}, but the CLIP model's embedding "
                              f"width is {embed_dim}{hint}")
    if vocabulary is not None:
        verbs = meta.get("verbs")
        if verbs is not None and list(verbs) != list(vocabulary.verbs):
            diff = next((i for i, (a, b) in enumerate(zip(verbs, vocabulary.verbs, strict=False)) if a != b),
                        min(len(verbs), vocabulary.num_verbs))
            raise CheckpointError(
                f"{path}: field 'verbs' ({len(verbs)} verbs) differs from vocabulary {vocabulary.name!r} "
                f"({vocabulary.num_verbs} verbs), first difference at verb {diff}{hint}"
            )
        stored = meta.get("vocabulary_hash")
        if stored is not None and stored != vocabulary.fingerprint():
            raise CheckpointError(
                f"{path}: field 'vocabulary_hash' does not match vocabulary {vocabulary.name!r} (the file was "
                f"computed for vocabulary {meta.get('vocabulary_name', '?')!r} with other objects or HOI classes)"
                f"{hint}"
            )
    if clip_model is not None:
        stored_model = meta.get("clip_model")
        if stored_model is not None and stored_model != clip_model:
            raise CheckpointError(f"{path}: field 'clip_model' is {stored_model!r}, but the model uses CLIP "
                                  f"{clip_model!r}{hint}")
        if "clip_pretrained" in meta:
            stored_pre = meta["clip_pretrained"]
            if stored_pre != clip_pretrained:
                either_file = any(isinstance(p, str) and _looks_like_file(p) for p in (stored_pre, clip_pretrained))
                if either_file and stored_pre is not None and clip_pretrained is not None:
                    log.warning("%s: computed with CLIP weights %r, the model loads %r; assuming they are the same "
                                "weights", path, stored_pre, clip_pretrained)
                else:
                    raise CheckpointError(f"{path}: field 'clip_pretrained' is {stored_pre!r}, but the model's CLIP "
                                          f"weights are {clip_pretrained!r}{hint}")
    if zero_shot is not None and zero_shot != "default":
        if meta.get("include_unseen"):
            log.warning("%s: computed with unseen HOI classes included (include_unseen); the verb classifier of "
                        "this zero-shot model (%s) carries visual information about unseen classes", path, zero_shot)
        elif "zero_shot" in meta and meta["zero_shot"] != zero_shot:
            log.warning("%s: computed for zero-shot split %r, the model uses %r", path, meta["zero_shot"], zero_shot)
