"""Convert the released checkpoints of the reference GEN-VLKT code into :class:`GENVLKT` / ``GENVLKTModule``.

The reference (``YueLiao/gen-vlkt``) saves ``{"model": state_dict, "args": Namespace, ...}``. Our
:class:`~hoiclip_lightning.models.GENVLKT` was named after it, so the mapping is one prefix:

==============================================  ==============================================
reference key                                   this library
==============================================  ==============================================
``backbone.0.body.*``                           ``backbone.body.*``
every other key (``input_proj``,                same name
``query_embed_{h,o}``, ``pos_guided_embedd``,
``{hum,obj}_bbox_embed``, ``hoi_class_fc``,
``visual_projection``, ``eval_visual_projection``,
``obj_class_fc``, ``obj_visual_projection``,
``logit_scale``, ``obj_logit_scale``,
``transformer.{encoder, instance_decoder,
interaction_decoder}``)
(not stored: the reference deletes its CLIP      ``clip.model.*``: the CLIP the converter loads
after reading the prompt embeddings)            (its ``clip_pretrained``, the mimic teacher);
                                                ``hoi_text_embeds``: the vocabulary's HOI prompts
                                                through that CLIP's text tower
==============================================  ==============================================

A key of the checkpoint that the model does not have, a key of the model that the checkpoint does not
provide (other than the two CLIP-side ones above) or a shape that differs stops the conversion with a
:class:`~hoiclip_lightning.errors.CheckpointError` listing all of them.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError
from ..models.config import WeightSources
from ..models.genvlkt import GENVLKTConfig
from .official import ConversionReport, _cli_hyper_parameters, _dtype_name, read_official_checkpoint

log = logging.getLogger(__name__)

#: our keys the reference does not store (taken from the model as constructed)
MODEL_SIDE_PREFIXES = ("clip.", "hoi_text_embeds")
#: report groups, by prefix of our key (first match wins)
GROUPS = (
    ("backbone", ("backbone.",)),
    ("input_proj", ("input_proj.",)),
    ("encoder", ("transformer.encoder.",)),
    ("instance_decoder", ("transformer.instance_decoder.",)),
    ("interaction_decoder", ("transformer.interaction_decoder.",)),
    ("queries", ("query_embed_h.", "query_embed_o.", "pos_guided_embedd.")),
    ("box_heads", ("hum_bbox_embed.", "obj_bbox_embed.")),
    ("object_classifier", ("obj_class_fc.", "obj_visual_projection.", "obj_logit_scale")),
    ("hoi_classifier", ("hoi_class_fc.", "visual_projection.", "eval_visual_projection.", "logit_scale")),
)
_BACKBONE = "backbone.0.body."


def genvlkt_to_ours(key: str) -> str:
    """Our name for a reference GEN-VLKT key.

    >>> genvlkt_to_ours("backbone.0.body.layer1.0.conv1.weight")
    'backbone.body.layer1.0.conv1.weight'
    >>> genvlkt_to_ours("transformer.interaction_decoder.norm.weight")
    'transformer.interaction_decoder.norm.weight'
    """
    return "backbone.body." + key[len(_BACKBONE):] if key.startswith(_BACKBONE) else key


def ours_to_genvlkt(key: str) -> str | None:
    """The reference name of one of our keys; ``None`` for the keys the reference does not store."""
    if key.startswith(MODEL_SIDE_PREFIXES):
        return None
    return _BACKBONE + key[len("backbone.body."):] if key.startswith("backbone.body.") else key


def _group(key: str) -> str:
    return next((name for name, prefixes in GROUPS if key.startswith(prefixes)), "other")


def convert_genvlkt_state_dict(
    official: dict[str, Tensor], model: torch.nn.Module, source: str = ""
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Map a reference GEN-VLKT state dict onto ``model`` (a :class:`GENVLKT`) and check it; nothing is loaded.

    Args:
        official: the reference ``model`` state dict (a DDP ``module.`` prefix is removed).
        model: the target; its state dict gives the expected keys, shapes and dtypes.
        source: file name for messages.

    Returns:
        ``(state_dict, report)``: our names, tensors cast to the model's dtypes, without the
        :data:`MODEL_SIDE_PREFIXES` keys.

    Raises:
        CheckpointError: listing every checkpoint key the model lacks, every model key the checkpoint lacks
            and every shape that differs.
    """
    if official and all(k.startswith("module.") for k in official):
        official = {k[len("module."):]: v for k, v in official.items()}
    own = model.state_dict()
    report = ConversionReport(source=source)
    converted: dict[str, Tensor] = {}
    unexpected, mismatched, misshapen = [], [], set()
    mapped: Counter[str] = Counter()
    for key, value in official.items():
        target = genvlkt_to_ours(key)
        if not isinstance(value, Tensor) or target not in own or target.startswith(MODEL_SIDE_PREFIXES):
            unexpected.append(key if isinstance(value, Tensor) else f"{key} (not a tensor)")
        elif tuple(value.shape) != tuple(own[target].shape):
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[target].shape)}")
            misshapen.add(target)
        else:
            if value.dtype != own[target].dtype:
                cast = f"{_dtype_name(value.dtype)}->{_dtype_name(own[target].dtype)}"
                report.cast[cast] = report.cast.get(cast, 0) + 1
            converted[target] = value.detach().to(own[target].dtype).clone()
            mapped[_group(target)] += 1
    missing = [k for k in own if k not in converted and k not in misshapen and not k.startswith(MODEL_SIDE_PREFIXES)]
    if unexpected or missing or mismatched:
        parts = [f"{len(missing)} model key(s) missing from the checkpoint: {missing}"] if missing else []
        if unexpected:
            parts.append(f"{len(unexpected)} checkpoint key(s) not in the model: {unexpected}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {mismatched}")
        raise CheckpointError(
            f"{source or 'state dict'} does not fit the model ({type(model).__name__}); " + "; ".join(parts)
            + ". Check the model config (query count, layer counts, CLIP embedding width, vocabulary / zero-shot "
            "split, text_classifier_bias)."
        )
    report.mapped = {name: mapped[name] for name, _ in (*GROUPS, ("other", ())) if mapped[name]}
    clip = getattr(model, "clip", None)
    report.computed.append("clip.model.* and hoi_text_embeds: kept from the model's CLIP "
                           f"({getattr(clip, 'model_name', '?')}, {getattr(clip, 'pretrained', '?')})")
    return converted, report


def load_genvlkt_state_dict(model: torch.nn.Module, official: dict[str, Tensor], source: str = "") -> ConversionReport:
    """Convert and load ``official`` into ``model`` (strict on every key the reference stores)."""
    converted, report = convert_genvlkt_state_dict(official, model, source)
    own = model.state_dict()
    converted.update({k: v for k, v in own.items() if k.startswith(MODEL_SIDE_PREFIXES)})
    model.load_state_dict(converted, strict=True)
    return report


def genvlkt_to_official(model: torch.nn.Module) -> dict[str, Tensor]:
    """Our state dict under the reference's names (the inverse mapping; CLIP-side keys left out)."""
    out = {}
    for key, value in model.state_dict().items():
        name = ours_to_genvlkt(key)
        if name is not None:
            out[name] = value.detach().clone()
    return out


def _count_layers(state: dict[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def infer_genvlkt_config(state: dict[str, Tensor], args: argparse.Namespace | None = None) -> GENVLKTConfig:
    """The architecture of a reference GEN-VLKT checkpoint, from its tensors (and ``args``).

    CLIP is not in the checkpoint: the embedding width chooses ViT-B-32 (512; ``args.clip_model`` picks
    ViT-B-16) or ViT-L-14 (768); its weights (OpenAI's) are the converter's ``clip_pretrained``.
    """
    q, lin, fc = (state.get(k) for k in ("query_embed_h.weight", "transformer.encoder.layers.0.linear1.weight",
                                          "hoi_class_fc.0.weight"))
    if q is None or lin is None or fc is None:
        raise CheckpointError("the checkpoint lacks query_embed_h.weight, transformer.encoder.layers.0.* or "
                              "hoi_class_fc.0.weight: not a GEN-VLKT checkpoint (with CLIP-text classifiers)")
    bottleneck = _BACKBONE + "layer3.0.conv3.weight" in state
    backbones = {(False, 1): "resnet10", (False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50",
                 (True, 23): "resnet101"}
    layer3 = _count_layers(state, _BACKBONE + "layer3.")
    if (bottleneck, layer3) not in backbones:
        raise CheckpointError(f"unknown ResNet depth ({layer3} blocks in layer3)")
    embed = int(fc.shape[0])
    clip_names = {512: "ViT-B-32", 768: "ViT-L-14"}
    if embed not in clip_names:
        raise CheckpointError(f"no CLIP of embedding width {embed} known; pass a model config")
    clip_model = clip_names[embed]
    if args is not None and str(getattr(args, "clip_model", "")).replace("/", "-") == "ViT-B-16":
        clip_model = "ViT-B-16"
    dec = _count_layers(state, "transformer.instance_decoder.layers.")
    inter = _count_layers(state, "transformer.interaction_decoder.layers.")
    if dec != inter:
        raise CheckpointError(f"{dec} instance-decoder layers but {inter} interaction-decoder layers")
    return GENVLKTConfig(
        backbone=backbones[(bottleneck, layer3)], hidden_dim=int(q.shape[1]),
        nheads=int(getattr(args, "nheads", 8) or 8),
        dim_feedforward=int(lin.shape[0]), dropout=float(getattr(args, "dropout", 0.1) if args else 0.1),
        enc_layers=_count_layers(state, "transformer.encoder.layers."), dec_layers=dec, num_queries=int(q.shape[0]),
        clip_model=clip_model,
        train_text_classifiers=not bool(getattr(args, "fix_clip", False)),
        text_classifier_bias="visual_projection.bias" in state,
    )


def convert_genvlkt_checkpoint(
    src: str | Path,
    dst: str | Path | None = None,
    vocabulary: str | None = None,
    zero_shot: str | None = None,
    net: GENVLKTConfig | None = None,
    clip_pretrained: str | None = "openai",
) -> tuple[Any, ConversionReport]:
    """Convert a released GEN-VLKT checkpoint into a ``GENVLKTModule`` and, with ``dst``, a ``.ckpt`` file.

    Args:
        src: the reference ``.pth``.
        dst: where to write the Lightning checkpoint (``None``: do not write).
        vocabulary: ``hico_det``, ``vcoco`` or a JSON path (default: from ``args`` or the classifier shapes).
        zero_shot: zero-shot split (default: from ``args`` or the classifier shapes).
        net: architecture (default: :func:`infer_genvlkt_config`); its ``clip_model`` names the CLIP the
            checkpoint does not contain.
        clip_pretrained: that CLIP's weights (``openai``, as the reference used, or a local file such as
            ``params/ViT-B-32.pt``); the written ``.ckpt`` stores them in its state dict, so loading it reads
            no other file. ``None``: a random CLIP (tests only).

    Returns:
        ``(module, report)``.
    """
    import lightning

    from ..models.genvlkt_module import GENVLKTModule
    from .official import infer_label_space

    state, args = read_official_checkpoint(src)
    if vocabulary is None or zero_shot is None:
        guessed_vocab, guessed_split = infer_label_space(state, args)
        vocabulary, zero_shot = vocabulary or guessed_vocab, zero_shot or guessed_split
    cfg = net if net is not None else infer_genvlkt_config(state, args)
    module = GENVLKTModule(vocabulary=str(vocabulary), zero_shot=str(zero_shot), net=cfg,
                           weights=WeightSources(clip_pretrained=clip_pretrained))
    report = load_genvlkt_state_dict(module.model, state, source=str(src))
    if dst is not None:
        dst = Path(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"epoch": 0, "global_step": 0, "pytorch-lightning_version": lightning.__version__,
                    "state_dict": module.state_dict(), "hparams_name": "kwargs",
                    "hyper_parameters": _cli_hyper_parameters(module),
                    "hoiclip_vocabulary": module.vocabulary.to_dict(),
                    "hoiclip_conversion": {**report.to_dict(), "zero_shot": zero_shot, "vocabulary": str(vocabulary)}},
                   dst)
        log.info("wrote %s", dst)
    return module, report
