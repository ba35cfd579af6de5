"""Box heads, CLIP-text classifiers and the verb adapter of HOICLIP, plus verb-embedding helpers.

Notation: B images, Q pair queries, D DETR width, E CLIP embedding width, C_obj objects, C_verb verbs,
C_hoi HOI classes scored by a head (training classes or all classes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError
from ..vocabulary import HOIVocabulary

log = logging.getLogger(__name__)

LOGIT_SCALE_INIT = math.log(1 / 0.07)


class MLP(nn.Module):
    """Multi-layer perceptron with ReLU between layers (none after the last).

    Parameter names are ``layers.{i}.*`` (as the reference's box heads and ``inter2verb``).

    Args:
        input_dim: input width.
        hidden_dim: width of every hidden layer.
        output_dim: output width.
        num_layers: number of linear layers.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: Tensor) -> Tensor:
        """``[..., input_dim]`` -> ``[..., output_dim]``."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def text_classifier(weight: Tensor, bias: bool, trainable: bool) -> nn.Linear:
    """A linear classifier ``E -> C`` whose weight is the L2-normalised ``weight``.

    Args:
        weight: ``[C, E]`` class embeddings (text embeddings or random vectors).
        bias: keep PyTorch's default random bias (the reference's *quirk*).
        trainable: whether weight and bias require grad.

    Returns:
        ``nn.Linear(E, C)``.
    """
    num_classes, dim = weight.shape
    layer = nn.Linear(dim, num_classes, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(F.normalize(weight.float(), dim=-1))
    layer.requires_grad_(trainable)
    return layer


def verb_embeddings_from_text(
    hoi_text: Tensor, obj_text: Tensor, hois: list[tuple[int, int]], num_verbs: int
) -> Tensor:
    """Verb representations by visual-semantic arithmetic on text embeddings.

    ``verb_v = normalise(mean over HOIs c with verb v of (t̂_hoi[c] - t̂_obj[o(c)]))`` where ``t̂`` are
    L2-normalised embeddings. A verb without HOI gets a zero row (and a warning).

    Args:
        hoi_text: ``[C_hoi, E]`` HOI prompt embeddings (any norm).
        obj_text: ``[C_obj (+1), E]`` object prompt embeddings (any norm).
        hois: ``(verb, object)`` per HOI class (length C_hoi).
        num_verbs: C_verb.

    Returns:
        ``[C_verb, E]`` float32, unit rows (zero rows for verbs without HOI).
    """
    hoi_n = F.normalize(hoi_text.float(), dim=-1)
    obj_n = F.normalize(obj_text.float(), dim=-1)
    verbs = torch.tensor([v for v, _ in hois], dtype=torch.long, device=hoi_n.device)
    objs = torch.tensor([o for _, o in hois], dtype=torch.long, device=hoi_n.device)
    diff = hoi_n - obj_n[objs]
    sums = torch.zeros(num_verbs, hoi_n.shape[1], device=hoi_n.device).index_add_(0, verbs, diff)
    counts = torch.bincount(verbs, minlength=num_verbs).clamp(min=1).unsqueeze(1)
    missing = (torch.bincount(verbs, minlength=num_verbs) == 0).nonzero().flatten().tolist()
    if missing:
        log.warning("verbs %s have no HOI class; their text-derived verb embeddings are zero", missing)
    return F.normalize(sums / counts, dim=-1)


def vocabulary_fingerprint(vocabulary: HOIVocabulary) -> str:
    """SHA-256 (hex) of a vocabulary's label space: object names, verb names and HOI (verb, object) pairs.

    Prompts, the rare list and the zero-shot splits are not part of it: they do not change what a verb
    representation row means.
    """
    payload = {"objects": list(vocabulary.objects), "verbs": list(vocabulary.verbs),
               "hois": [list(h) for h in vocabulary.hois]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


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
    _check_verb_metadata(path, meta, vocabulary, clip_model, clip_pretrained, zero_shot, embed_dim)
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


def _check_verb_metadata(path: Path, meta: dict, vocabulary: HOIVocabulary | None, clip_model: str | None,
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
        if stored is not None and stored != vocabulary_fingerprint(vocabulary):
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


def object_logits(
    o_hs: Tensor, obj_class_fc: nn.Module, obj_visual_projection: nn.Linear, obj_logit_scale: Tensor
) -> Tensor:
    """Object logits ``exp(s_obj) * W_text(normalise(LN(Linear(o))))``.

    Args:
        o_hs: ``[..., D]`` object-slot features.
        obj_class_fc: ``Linear(D, E)`` + ``LayerNorm(E)``.
        obj_visual_projection: ``Linear(E, C_obj + 1)`` (object prompts + "nothing").
        obj_logit_scale: scalar log-scale.

    Returns:
        ``[..., C_obj + 1]``.
    """
    feats = F.normalize(obj_class_fc(o_hs), dim=-1)
    return obj_logit_scale.exp() * obj_visual_projection(feats)


def hoi_logits(
    inter_hs: Tensor,
    visual_projection: nn.Linear,
    logit_scale: Tensor,
    inter2verb: nn.Module | None = None,
    verb_projection: nn.Linear | None = None,
    verb_to_hoi: Tensor | None = None,
    verb_weight: float = 0.5,
) -> Tensor:
    """HOI logits ``s * W_hoi(x̂) + verb_weight * s * (W_verb(normalise(adapter(x))) @ P)``.

    Args:
        inter_hs: ``[..., E]`` un-normalised interaction features x.
        visual_projection: ``Linear(E, C_hoi)`` (HOI prompt embeddings).
        logit_scale: scalar log-scale s (shared by both terms).
        inter2verb: verb adapter ``E -> E`` applied to the un-normalised x; ``None``: no verb term.
        verb_projection: ``Linear(E, C_verb, bias=False)`` verb classifier.
        verb_to_hoi: ``[C_verb, C_hoi]`` binary verb -> HOI matrix P.
        verb_weight: weight of the verb term.

    Returns:
        ``[..., C_hoi]``.
    """
    scale = logit_scale.exp()
    logits = scale * visual_projection(F.normalize(inter_hs, dim=-1))
    if inter2verb is not None:
        assert verb_projection is not None and verb_to_hoi is not None
        verb = F.normalize(inter2verb(inter_hs), dim=-1)
        logits = logits + verb_weight * scale * (verb_projection(verb) @ verb_to_hoi.to(logits.dtype))
    return logits
