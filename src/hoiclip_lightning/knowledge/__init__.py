"""CLIP knowledge tools: verb representations by visual semantic arithmetic and small-CLIP pretraining.

* :func:`compute_verb_embeddings` (command ``hoiclip verb-embeddings``) writes the verb-classifier file that
  ``model.init_args.weights.verb_embeddings`` points to (format:
  :mod:`hoiclip_lightning.models.verb_embedding_file`);
* :func:`pretrain_clip` (command ``hoiclip clip-pretrain``) trains a small CLIP on image-caption pairs and
  writes the weights file that ``weights.clip_pretrained`` loads; :func:`zero_shot_check` measures what it learned;
* :func:`encode_prompts` (defined in :mod:`hoiclip_lightning.models.prompt_embeddings`, which the models use)
  embeds prompts, optionally with several templates, through an on-disk cache.

This package sits above :mod:`hoiclip_lightning.models`: it uses the models' parts, the models never import it.
"""

from ..models.prompt_embeddings import (
    PromptEmbeddingCache,
    cache_key,
    default_cache_dir,
    encode_prompts,
    expand_prompts,
)
from .clip_pretrain import CLIPPretrainModule, pretrain_clip, zero_shot_check, zero_shot_scores
from .verb_embeddings import PairCropDataset, VerbEmbeddings, compute_verb_embeddings, training_split, verb_arithmetic

__all__ = [
    "CLIPPretrainModule",
    "PairCropDataset",
    "PromptEmbeddingCache",
    "VerbEmbeddings",
    "cache_key",
    "compute_verb_embeddings",
    "default_cache_dir",
    "encode_prompts",
    "expand_prompts",
    "pretrain_clip",
    "training_split",
    "verb_arithmetic",
    "zero_shot_check",
    "zero_shot_scores",
]
