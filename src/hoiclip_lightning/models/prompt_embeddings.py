"""Prompt embeddings: template ensembling and an on-disk cache keyed by model, weights and prompts.

HOICLIP embeds every HOI prompt and object prompt with the CLIP text tower when a model is built (and
again when its vocabulary changes, see :meth:`HOICLIP.set_vocabulary`). With ViT-B/32 on CPU that is
about a minute for HICO-DET's 681 prompts, so the result is cached on disk.

Cache key (SHA-256 of): the cache format version, the open_clip version, the model name, the identity
of the pretrained weights (the open_clip tag, or a local file's resolved path, size and modification
time), the tower precision, a fingerprint of the text-tower weights as they are in memory (a strided
sample of every text parameter, so a CLIP loaded from a checkpoint or fine-tuned is never served stale
embeddings), the templates and the prompts. The entry also stores the prompts and is checked against
them on read.

A CLIP with random weights (``pretrained=None``) is never cached: such models are test and ablation
models re-drawn at every construction; their entries would be valid (the weight fingerprint is in the
key) but would pile up in the cache without ever being hit again.

Cache folder: ``cache_dir`` argument, else ``$HOICLIP_CACHE``, else ``~/.cache/hoiclip_lightning``;
entries live in ``<cache>/prompt_embeddings/<key>.pt``.

Templates: ``None`` embeds the prompts verbatim (the reference). A list of format strings with one
``{}`` (e.g. ``["a photo of {}", "a picture of {}", "{}"]``) is filled with each prompt's *body* — the
prompt without a leading ``"a photo of "`` — and the L2-normalised embeddings of the filled templates are
averaged per prompt (prompt ensembling, beyond the reference).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigurationError

log = logging.getLogger(__name__)

CACHE_ENV = "HOICLIP_CACHE"
CACHE_FORMAT_VERSION = 1
PROMPT_PREFIX = "a photo of "
_SAMPLES_PER_TENSOR = 4096


class TextEncoder(Protocol):
    """What :func:`encode_prompts` needs from a CLIP model (a ``CLIPEncoder``)."""

    model_name: str
    pretrained: str | None
    precision: str
    model: nn.Module

    def encode_text(self, prompts: list[str], batch_size: int = 256) -> Tensor: ...


def default_cache_dir() -> Path:
    """``$HOICLIP_CACHE`` if set, else ``~/.cache/hoiclip_lightning``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hoiclip_lightning"


def prompt_body(prompt: str) -> str:
    """The prompt without a leading ``"a photo of "`` (case-insensitive); other prompts are returned as is."""
    return prompt[len(PROMPT_PREFIX):] if prompt.lower().startswith(PROMPT_PREFIX) else prompt


def check_templates(templates: Sequence[str] | None) -> list[str] | None:
    """Validate prompt templates (each needs exactly one ``{}``); ``None`` or empty means verbatim prompts."""
    if not templates:
        return None
    out = []
    for i, t in enumerate(templates):
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ConfigurationError(
                f"prompt_templates[{i}] = {t!r} must be a string with exactly one '{{}}' (filled with the prompt "
                f"body, e.g. 'a photo of {{}}')"
            )
        out.append(t)
    return out


def expand_prompts(prompts: Sequence[str], templates: Sequence[str] | None) -> list[str]:
    """``N·T`` texts: for each prompt (outer) each template (inner) filled with the prompt body."""
    templates = check_templates(templates)
    if templates is None:
        return list(prompts)
    return [t.format(prompt_body(p)) for p in prompts for t in templates]


def pretrained_identity(pretrained: str | None) -> str | None:
    """A string that changes when the pretrained weights change: the tag, or ``file:<path>:<size>:<mtime_ns>``."""
    if pretrained is None:
        return None
    path = Path(pretrained).expanduser()
    if path.is_file():
        st = path.stat()
        return f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return f"tag:{pretrained}"


def text_weights_fingerprint(model: nn.Module) -> str:
    """Fingerprint of the text tower: everything of an open_clip ``CLIP`` except ``visual.*`` and ``logit_*``."""
    from ..models.clip_encoder import weights_fingerprint

    return weights_fingerprint(model, exclude="visual.", samples_per_tensor=_SAMPLES_PER_TENSOR)


def cache_key(clip: TextEncoder, prompts: Sequence[str], templates: Sequence[str] | None) -> str:
    """Hex SHA-256 key of a prompt-embedding cache entry (see the module docstring for what goes in)."""
    import open_clip

    payload = {
        "version": CACHE_FORMAT_VERSION,
        "open_clip": open_clip.__version__,
        "model": clip.model_name,
        "pretrained": pretrained_identity(clip.pretrained),
        "precision": getattr(clip, "precision", "fp32"),
        "weights": text_weights_fingerprint(clip.model),
        "templates": list(templates) if templates else None,
        "prompts": list(prompts),
    }
    config = open_clip.factory._MODEL_CONFIGS.get(clip.model_name) or {}
    if getattr(clip, "quick_gelu", False) and not config.get("quick_gelu", False):
        payload["activation"] = "quick_gelu"  # forced onto a GELU architecture (OpenAI's weights)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class PromptEmbeddingCache:
    """Prompt embeddings on disk, one ``.pt`` file per key.

    Args:
        cache_dir: cache folder; ``None``: :func:`default_cache_dir`.
    """

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.folder = self.root / "prompt_embeddings"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.pt"

    def load(self, key: str, prompts: Sequence[str]) -> Tensor | None:
        """``[N, E]`` embeddings of ``key``, or ``None`` when absent, unreadable or stored for other prompts."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a damaged entry is recomputed, never fatal
            log.warning("prompt cache entry %s is unreadable (%s); recomputing", path, err)
            return None
        if not isinstance(entry, dict) or entry.get("prompts") != list(prompts):
            log.warning("prompt cache entry %s does not hold these prompts; recomputing", path)
            return None
        return entry["embeddings"]

    def save(self, key: str, prompts: Sequence[str], embeddings: Tensor, meta: dict[str, Any]) -> Path | None:
        """Write an entry atomically; a write failure (read-only disk ...) is logged, not raised."""
        path = self.path(key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save({"prompts": list(prompts), "embeddings": embeddings.detach().cpu(), **meta}, tmp)
            os.replace(tmp, path)
        except OSError as err:
            log.warning("could not write the prompt cache entry %s: %s", path, err)
            return None
        return path


def encode_prompts(
    clip: TextEncoder,
    prompts: Sequence[str],
    templates: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> Tensor:
    """Embed prompts with CLIP's text tower, from the on-disk cache when possible.

    Args:
        clip: a :class:`~hoiclip_lightning.models.clip_encoder.CLIPEncoder` (or anything with ``model_name``,
            ``pretrained``, ``precision``, ``model`` and ``encode_text``).
        prompts: N prompts.
        templates: ``None``: the prompts verbatim (reference). Otherwise T format strings with one ``{}``;
            the result is the mean of the T L2-normalised embeddings of each prompt.
        cache_dir: cache folder (``None``: ``$HOICLIP_CACHE`` or ``~/.cache/hoiclip_lightning``).
        use_cache: read and write the cache (never for ``clip.pretrained is None``).

    Returns:
        ``[N, E]`` float32 on the CLIP device; verbatim prompts are not normalised (as ``encode_text``),
        ensembled ones are means of unit vectors.
    """
    templates = check_templates(templates)
    prompts = list(prompts)
    device = next(clip.model.parameters()).device
    cacheable = use_cache and clip.pretrained is not None and len(prompts) > 0
    cache = key = None
    if cacheable:
        cache = PromptEmbeddingCache(cache_dir)
        key = cache_key(clip, prompts, templates)
        hit = cache.load(key, prompts)
        if hit is not None:
            log.info("prompt embeddings (%d prompts, %s) from cache %s", len(prompts), clip.model_name, cache.path(key))
            return hit.to(device)
    texts = expand_prompts(prompts, templates)
    with torch.no_grad():
        emb = clip.encode_text(texts).float()
    if templates is not None:
        emb = F.normalize(emb.reshape(len(prompts), len(templates), -1), dim=-1).mean(dim=1)
    if cacheable and cache is not None and key is not None:
        path = cache.save(key, prompts, emb, {"model": clip.model_name, "pretrained": clip.pretrained,
                                              "templates": templates})
        if path is not None:
            log.info("prompt embeddings (%d prompts) cached in %s", len(prompts), path)
    return emb
