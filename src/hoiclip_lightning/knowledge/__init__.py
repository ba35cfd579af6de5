"""CLIP knowledge tools: verb representations, cached prompt embeddings and small-CLIP pretraining.

* :func:`compute_verb_embeddings` (command ``hoiclip verb-embeddings``) writes the verb-classifier file that
  ``model.init_args.net.verb_embeddings`` points to;
* :func:`encode_prompts` embeds prompts (optionally with several templates) through an on-disk cache;
* :func:`pretrain_clip` (command ``hoiclip clip-pretrain``) trains a small CLIP on image-caption pairs and
  writes the weights file that ``clip_pretrained`` loads; :func:`zero_shot_check` measures what it learned.

The verb-embedding and pretraining names are imported on first use, so :mod:`hoiclip_lightning.models` can
use the prompt cache without an import cycle.
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

_PRETRAIN_NAMES = ("pretrain_clip", "zero_shot_check", "zero_shot_scores", "CLIPPretrainModule")

__all__ = [
    "PromptEmbeddingCache",
    "cache_key",
    "default_cache_dir",
    "encode_prompts",
    "expand_prompts",
    *_VERB_NAMES,
    *_PRETRAIN_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _VERB_NAMES:
        from . import verb_embeddings

        return getattr(verb_embeddings, name)
    if name in _PRETRAIN_NAMES:
        from . import clip_pretrain

        return getattr(clip_pretrain, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
