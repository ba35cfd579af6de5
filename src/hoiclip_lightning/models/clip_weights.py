"""The CLIP weights file: one ``.pt`` that ``weights.clip_pretrained: PATH`` loads wherever a CLIP is built.

``hoiclip clip-pretrain`` (:mod:`hoiclip_lightning.knowledge.clip_pretrain`) writes it; the CLIP encoder of
the HOICLIP model, ``hoiclip verb-embeddings`` and the prompt-embedding cache read it through
:class:`~hoiclip_lightning.models.clip_encoder.CLIPEncoder`, so the model name and the file must agree.

Contents (a ``torch.save`` dict, readable with ``weights_only=True``):

* ``format`` = ``"hoiclip_lightning.clip_weights"``, ``format_version``;
* ``clip_model``: the open_clip architecture name (``hoiclip-small``), ``model_config``: its open_clip
  config dict (so a process where the name is not registered can still build it);
* ``state_dict``: the open_clip ``CLIP`` state dict (fp32, on the CPU);
* ``fingerprint``: :func:`~hoiclip_lightning.models.clip_encoder.state_dict_fingerprint` of that state dict
  (checked on load: a damaged or hand-edited file is refused), plus ``image_fingerprint`` /
  ``text_fingerprint`` of the towers;
* ``metadata``: how the weights were made (training data, steps, loss, zero-shot figures, versions).

Loading refuses, naming the file: a file of another architecture than ``clip_model``, an architecture
whose registered open_clip config differs from the file's, and a fingerprint mismatch.

Example:
    >>> import tempfile
    >>> import open_clip
    >>> from hoiclip_lightning.models.clip_encoder import CLIPEncoder
    >>> model = open_clip.create_model("hoiclip-tiny")  # registered by hoiclip_lightning.models
    >>> path = Path(tempfile.mkdtemp()) / "tiny.pt"
    >>> save_clip_weights(path, model, "hoiclip-tiny", {"note": "random"}).name
    'tiny.pt'
    >>> encoder = CLIPEncoder("hoiclip-tiny", pretrained=str(path))
    >>> bool(torch.equal(encoder.model.logit_scale, model.logit_scale))
    True
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CheckpointError

log = logging.getLogger(__name__)

CLIP_WEIGHTS_FORMAT = "hoiclip_lightning.clip_weights"
CLIP_WEIGHTS_VERSION = 1

__all__ = ["CLIP_WEIGHTS_FORMAT", "CLIPWeights", "read_clip_weights", "save_clip_weights"]


@dataclass
class CLIPWeights:
    """A CLIP weights file as read.

    Attributes:
        path: the file.
        clip_model: architecture name.
        model_config: open_clip config of the architecture.
        state_dict: open_clip ``CLIP`` state dict.
        fingerprint: weights fingerprint (verified).
        metadata: how the weights were made.
    """

    path: Path
    clip_model: str
    model_config: dict[str, Any]
    state_dict: dict[str, Tensor]
    fingerprint: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _open_clip_config(name: str) -> dict[str, Any] | None:
    import open_clip

    return open_clip.factory._MODEL_CONFIGS.get(name)


def _write_weights_file(path: str | Path, payload: dict[str, Any], state: dict[str, Tensor]) -> Path:
    """Write ``payload`` with ``state`` and its three fingerprints (parents created; atomic replace)."""
    from .clip_encoder import state_dict_fingerprint

    payload = dict(payload, state_dict=state, fingerprint=state_dict_fingerprint(state),
                   image_fingerprint=state_dict_fingerprint(state, include="visual."),
                   text_fingerprint=state_dict_fingerprint(state, exclude="visual."))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def save_clip_weights(path: str | Path, model: nn.Module, clip_model: str,
                      metadata: dict[str, Any] | None = None) -> Path:
    """Write an open_clip ``CLIP`` model as a CLIP weights file (parents created; atomic replace).

    Args:
        path: output file (``.pt``).
        model: the open_clip model (any device or dtype; stored as fp32 on the CPU).
        clip_model: its open_clip architecture name (must be registered with open_clip).
        metadata: free-form, ``torch.load(weights_only=True)``-readable provenance.

    Returns:
        the path written.
    """
    config = _open_clip_config(clip_model)
    if config is None:
        raise CheckpointError(f"cannot save {path}: architecture {clip_model!r} is not registered with open_clip")
    state = {k: (v.detach().float() if torch.is_floating_point(v) else v.detach()).cpu().clone()
             for k, v in model.state_dict().items()}
    payload = {
        "format": CLIP_WEIGHTS_FORMAT,
        "format_version": CLIP_WEIGHTS_VERSION,
        "clip_model": clip_model,
        "model_config": copy.deepcopy(config),
        "metadata": dict(metadata or {}),
    }
    return _write_weights_file(path, payload, state)


def convert_clip_weights(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Rewrite a CLIP weights file with its floating-point tensors in ``dtype`` (fingerprints recomputed).

    fp16 halves the file (``weights/hoiclip_small.pt``, committed for the quickstart, is the fp16 form of
    a ``hoiclip clip-pretrain`` output); the model casts the tensors back to its own dtype when loading.

    Args:
        src: a file written by :func:`save_clip_weights`.
        dst: the file to write (may equal ``src``).
        dtype: the floating-point dtype to store.

    Returns:
        the path written.
    """
    src = Path(src)
    obj = _peek(src)
    if obj is None:
        raise CheckpointError(f"{src}: not a CLIP weights file (written by save_clip_weights / hoiclip clip-pretrain)")
    read_clip_weights(src, obj["clip_model"])  # refuses a damaged file before anything is written
    state = {k: (v.to(dtype) if torch.is_floating_point(v) else v).clone() for k, v in obj["state_dict"].items()}
    metadata = {**dict(obj.get("metadata") or {}), "stored_dtype": str(dtype).replace("torch.", "")}
    return _write_weights_file(dst, dict(obj, metadata=metadata), state)


def _peek(path: Path) -> dict[str, Any] | None:
    """The file's dict when it is a CLIP weights file, else ``None`` (open_clip then reads it as before)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip-format torch file (TorchScript archive, safetensors ...)
        return None
    if isinstance(obj, dict) and obj.get("format") == CLIP_WEIGHTS_FORMAT:
        return obj
    return None


def read_clip_weights(pretrained: str | Path | None, clip_model: str) -> CLIPWeights | None:
    """Read and check a CLIP weights file for the architecture ``clip_model``.

    Args:
        pretrained: the ``weights.clip_pretrained`` value: a path, or an open_clip tag (``openai``) / ``None``.
        clip_model: the architecture the caller builds.

    Returns:
        the weights, or ``None`` when ``pretrained`` is not a CLIP weights file (a tag, ``None``, or another
        kind of file, which open_clip loads itself).

    Raises:
        CheckpointError: the file is for another architecture, its architecture's config differs from the one
            registered under that name, its format version is unknown, or its fingerprint does not match.
    """
    if pretrained is None:
        return None
    path = Path(str(pretrained)).expanduser()
    if not path.is_file():
        return None
    obj = _peek(path)
    if obj is None:
        return None
    from .clip_encoder import state_dict_fingerprint

    version = obj.get("format_version")
    if version != CLIP_WEIGHTS_VERSION:
        raise CheckpointError(f"{path}: CLIP weights file format_version {version!r}; this version of "
                              f"hoiclip_lightning reads {CLIP_WEIGHTS_VERSION}")
    stored = obj.get("clip_model")
    if stored != clip_model:
        raise CheckpointError(
            f"{path}: CLIP weights of architecture {stored!r}, but the CLIP to load is {clip_model!r}; set "
            f"clip_model: {stored} (or give the weights file of {clip_model!r})")
    config = obj.get("model_config") or {}
    registered = _open_clip_config(clip_model)
    if registered is None:
        import open_clip

        open_clip.factory._MODEL_CONFIGS[clip_model] = copy.deepcopy(config)
        log.info("architecture %s registered with open_clip from %s", clip_model, path)
    elif registered != config:
        raise CheckpointError(
            f"{path}: architecture {clip_model!r} in the file is {config}, but open_clip has {registered} "
            "registered under that name (the architecture changed since the file was written)")
    state = obj["state_dict"]
    fingerprint = state_dict_fingerprint(state)
    if fingerprint != obj.get("fingerprint"):
        raise CheckpointError(f"{path}: the weights do not match the file's fingerprint (damaged or edited file): "
                              f"stored {str(obj.get('fingerprint'))[:16]}..., computed {fingerprint[:16]}...")
    return CLIPWeights(path=path, clip_model=clip_model, model_config=config, state_dict=dict(state),
                       fingerprint=fingerprint, metadata=dict(obj.get("metadata") or {}))
