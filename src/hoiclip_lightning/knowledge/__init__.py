"""CLIP knowledge tools: verb representations by visual semantic arithmetic and cached prompt embeddings.

* :func:`compute_verb_embeddings` (command ``hoiclip verb-embeddings``) writes the verb-classifier file that
  ``model.init_args.net.verb_embeddings`` points to;
* :func:`encode_prompts` embeds prompts (optionally with several templates) through an on-disk cache.

The verb-embedding names are imported on first use, so :mod:`hoiclip_lightning.models` can use the prompt
cache without an import cycle.
"""

from __future__ import annotations

from typing import Any

from .prompts import PromptEmbeddingCache, cache_key, default_cache_dir, encode_prompts, expand_prompts

_VERB_NAMES = (
    "PairCropDataset",
    "VerbEmbeddings",
    "compute_verb_embeddings",
    "training_split",
    "verb_arithmetic",
)

__all__ = [
    "PromptEmbeddingCache",
    "cache_key",
    "default_cache_dir",
    "encode_prompts",
    "expand_prompts",
    *_VERB_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _VERB_NAMES:
        from . import verb_embeddings

        return getattr(verb_embeddings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
