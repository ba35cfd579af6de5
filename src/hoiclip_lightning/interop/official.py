"""Convert the released checkpoints of the reference HOICLIP code into ``HOICLIPModule`` checkpoints.

The reference saves ``{"model": state_dict, "args": Namespace, ...}``. Its parameter names differ from
ours in two prefixes and in a few modules the reference creates but never uses; everything else keeps
its name (our modules were named after the reference's):

==============================================  ==============================================
reference key                                   this library
==============================================  ==============================================
``backbone.0.body.*``                           ``backbone.body.*``
``clip_model.*`` (OpenAI CLIP, often fp16)      ``clip.model.*`` (open_clip, fp32)
``input_proj.*``, ``query_embed_{h,o}``,        same name
``pos_guided_embedd``, ``{hum,obj}_bbox_embed``,
``inter2verb``, ``logit_scale``,
``obj_logit_scale``, ``verb_projection``,
``visual_projection``, ``eval_visual_projection``,
``obj_class_fc``, ``obj_visual_projection``,
``transformer.{encoder, instance_decoder,
clip_interaction_decoder, queries2spacial_proj,
queries2spacial_proj_norm, obj_class_fc,
obj_class_ln}.*``
``transformer.interaction_decoder.*``,          dropped: unused in the reference's forward pass
``transformer.inter_guided_embedd.weight``,
``hoi_class_fc.*``,
``transformer.clip_interaction_decoder
.layers.{i}.norm4.*``
``verb2hoi_proj``, ``verb2hoi_proj_eval``       dropped: rebuilt from the vocabulary in the stored layout
(not stored)                                    ``hoi_text_embeds``: the vocabulary's HOI prompts
                                                encoded by the converted CLIP text tower;
                                                ``transformer.clip_interaction_decoder.visual_proj``:
                                                a copy of ``clip.model.visual.proj``
==============================================  ==============================================

Any other key, a key of our model that nothing provides, or a shape that differs stops the conversion
with a :class:`~hoiclip_lightning.errors.CheckpointError` that lists them all.

The architecture is read from the checkpoint itself (query count, widths, layer counts, ResNet depth, and
the CLIP's widths, depths, patch and input sizes, matched against open_clip's registered architectures)
and from its ``args`` (dataset, zero-shot type, heads, verb weight) unless a model config is given. The
reference's CLIP is OpenAI's, trained with QuickGELU: a ``-quickgelu`` name is chosen when open_clip has
one (``ViT-B-32-quickgelu``) and ``clip_quick_gelu: true`` is set in any case (random init, then
overwritten: nothing is downloaded). The verb-to-HOI matrix the checkpoint stores decides
``verb_to_hoi_columns``: the reference fills V-COCO's by object index, and the converted model keeps
that matrix so that it reproduces the reference's outputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._torch_io import load_torch_file
from ..errors import CheckpointError, ConfigurationError
from ..models.config import HOICLIPConfig
from ..vocabulary import HOIVocabulary

log = logging.getLogger(__name__)

#: reference keys (prefixes) of modules the reference builds but never calls
UNUSED_PREFIXES = ("transformer.interaction_decoder.", "transformer.inter_guided_embedd.", "hoi_class_fc.")
_NORM4 = re.compile(r"^transformer\.clip_interaction_decoder\.layers\.\d+\.norm4\.")
#: reference keys rebuilt from the vocabulary
RECOMPUTED_KEYS = ("verb2hoi_proj", "verb2hoi_proj_eval")
#: keys of our model that the reference does not store (computed by the converter)
COMPUTED_KEYS = ("hoi_text_embeds", "transformer.clip_interaction_decoder.visual_proj")
#: our top-level names kept as they are (anything under these prefixes)
SAME_NAME_PREFIXES = (
    "input_proj.", "query_embed_h.", "query_embed_o.", "pos_guided_embedd.", "hum_bbox_embed.", "obj_bbox_embed.",
    "inter2verb.", "verb_projection.", "visual_projection.", "eval_visual_projection.", "obj_class_fc.",
    "obj_visual_projection.", "transformer.encoder.", "transformer.instance_decoder.",
    "transformer.clip_interaction_decoder.", "transformer.queries2spacial_proj.",
    "transformer.queries2spacial_proj_norm.", "transformer.obj_class_fc.", "transformer.obj_class_ln.",
)
SAME_NAME_KEYS = ("logit_scale", "obj_logit_scale")
#: report groups, by prefix of our key (first match wins)
GROUPS = (
    ("backbone", ("backbone.",)),
    ("clip", ("clip.",)),
    ("input_proj", ("input_proj.",)),
    ("encoder", ("transformer.encoder.",)),
    ("instance_decoder", ("transformer.instance_decoder.",)),
    ("interaction_decoder", ("transformer.clip_interaction_decoder.", "transformer.queries2spacial_proj",
                             "transformer.obj_class_fc.", "transformer.obj_class_ln.")),
    ("queries", ("query_embed_h.", "query_embed_o.", "pos_guided_embedd.")),
    ("box_heads", ("hum_bbox_embed.", "obj_bbox_embed.")),
    ("object_classifier", ("obj_class_fc.", "obj_visual_projection.", "obj_logit_scale")),
    ("hoi_classifier", ("visual_projection.", "eval_visual_projection.", "logit_scale")),
    ("verb_classifier", ("inter2verb.", "verb_projection.")),
)
#: reference ``zero_shot_type`` -> our split name (identical names)
_DATASETS = {"hico": "hico_det", "vcoco": "vcoco"}


def group_of(key: str) -> str:
    """Report group of one of our parameter names (``other`` when none matches)."""
    for name, prefixes in GROUPS:
        if key.startswith(prefixes):
            return name
    return "other"


def official_to_ours(key: str) -> str | None:
    """Our name for a reference key; ``None`` for keys that are dropped or not recognised.

    >>> official_to_ours("backbone.0.body.layer1.0.conv1.weight")
    'backbone.body.layer1.0.conv1.weight'
    >>> official_to_ours("clip_model.visual.proj")
    'clip.model.visual.proj'
    >>> official_to_ours("transformer.interaction_decoder.norm.weight") is None
    True
    """
    if key.startswith("backbone.0.body."):
        return "backbone.body." + key[len("backbone.0.body."):]
    if key.startswith("clip_model."):
        return "clip.model." + key[len("clip_model."):]
    if key.startswith(UNUSED_PREFIXES) or _NORM4.match(key) or key in RECOMPUTED_KEYS:
        return None
    if key.startswith(SAME_NAME_PREFIXES) or key in SAME_NAME_KEYS:
        return key
    return None


def ours_to_official(key: str) -> str | None:
    """The reference name of one of our keys (inverse of :func:`official_to_ours`); ``None`` for computed keys."""
    if key in COMPUTED_KEYS:
        return None
    if key.startswith("backbone.body."):
        return "backbone.0.body." + key[len("backbone.body."):]
    if key.startswith("clip.model."):
        return "clip_model." + key[len("clip.model."):]
    return key


def _dropped_reason(key: str) -> str | None:
    if key.startswith(UNUSED_PREFIXES) or _NORM4.match(key):
        return "unused by the reference forward pass"
    if key in RECOMPUTED_KEYS:
        return "rebuilt from the vocabulary"
    return None


@dataclass
class ConversionReport:
    """What :func:`convert_official_state_dict` did.

    Attributes:
        mapped: tensors loaded, per report group (``backbone``, ``clip``, ``encoder`` ...).
        dropped: reference keys left out, per reason.
        computed: our keys computed by the converter.
        cast: ``"float16->float32"`` style counts of converted dtypes.
        notes: other findings (e.g. a verb-to-HOI matrix that differs from the vocabulary's).
        source: the converted file, when there is one.
    """

    mapped: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    computed: list[str] = field(default_factory=list)
    cast: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def total_mapped(self) -> int:
        return sum(self.mapped.values())

    def summary(self) -> str:
        """Human-readable multi-line report."""
        lines = [f"converted {self.source or 'state dict'}: {self.total_mapped} tensors mapped"]
        lines += [f"  {name:<20} {count:>5}" for name, count in self.mapped.items()]
        for reason, keys in self.dropped.items():
            prefixes = sorted(Counter(_short(k) for k in keys).items())
            lines.append(f"dropped ({reason}): {len(keys)} tensors: " + ", ".join(f"{p} ({n})" for p, n in prefixes))
        if self.computed:
            lines.append("computed: " + ", ".join(self.computed))
        if self.cast:
            lines.append("dtype casts: " + ", ".join(f"{k} ({v})" for k, v in self.cast.items()))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _short(key: str) -> str:
    if _NORM4.match(key):
        return "transformer.clip_interaction_decoder.layers.*.norm4"
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] == "transformer" else parts[0]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _strip_module_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def convert_official_state_dict(
    official: dict[str, Tensor], model: torch.nn.Module, source: str = ""
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Map a reference state dict onto ``model`` (a :class:`~hoiclip_lightning.models.HOICLIP`) and check it.

    Nothing is loaded into ``model``: the result is a complete state dict for it, apart from the
    :data:`COMPUTED_KEYS` (see :func:`load_official_state_dict`).

    Args:
        official: the reference ``model`` state dict (a ``module.`` prefix from DDP is removed).
        model: the target model; its state dict gives the expected keys, shapes and dtypes.
        source: file name for messages.

    Returns:
        ``(state_dict, report)`` with our key names, tensors cast to the model's dtypes.

    Raises:
        CheckpointError: listing every reference key that is not recognised, every key of the model that
            the checkpoint does not provide, and every shape that differs.
    """
    official = _strip_module_prefix(dict(official))
    own = model.state_dict()
    report = ConversionReport(source=source)
    converted: dict[str, Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    mapped: Counter[str] = Counter()
    for key, value in official.items():
        if not isinstance(value, Tensor):
            unexpected.append(f"{key} (not a tensor: {type(value).__name__})")
            continue
        target = official_to_ours(key)
        if target is None:
            reason = _dropped_reason(key)
            if reason is None:
                unexpected.append(key)
            else:
                report.dropped.setdefault(reason, []).append(key)
            continue
        if target not in own:
            unexpected.append(f"{key} (-> {target}, not in the model)")
            continue
        if tuple(value.shape) != tuple(own[target].shape):
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[target].shape)} ({target})")
            continue
        if value.dtype != own[target].dtype:
            cast = f"{_dtype_name(value.dtype)}->{_dtype_name(own[target].dtype)}"
            report.cast[cast] = report.cast.get(cast, 0) + 1
        converted[target] = value.detach().to(own[target].dtype).clone()
        mapped[group_of(target)] += 1
    missing = [k for k in own if k not in converted and k not in COMPUTED_KEYS]
    if unexpected or missing or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} model key(s) missing from the checkpoint: {missing}")
        if unexpected:
            parts.append(f"{len(unexpected)} checkpoint key(s) not recognised: {unexpected}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {mismatched}")
        raise CheckpointError(
            f"{source or 'state dict'} does not fit the model ({type(model).__name__}); "
            + "; ".join(parts)
            + ". Check the model config (query count, layer counts, CLIP variant, vocabulary / zero-shot split)."
        )
    order = [name for name, _ in GROUPS] + ["other"]
    report.mapped = {name: mapped[name] for name in order if mapped[name]}
    _check_verb_matrices(official, model, report)
    return converted, report


def _check_verb_matrices(official: dict[str, Tensor], model: torch.nn.Module, report: ConversionReport) -> None:
    for key in RECOMPUTED_KEYS:
        ours = getattr(model, key, None)
        theirs = official.get(key)
        if theirs is None or ours is None:
            continue
        columns = getattr(getattr(model, "config", None), "verb_to_hoi_columns", "hoi")
        kind = "the reference's object-indexed" if columns == "object" else "the vocabulary's"
        if tuple(theirs.shape) != tuple(ours.shape) or not torch.equal(theirs.float().cpu(), ours.float().cpu()):
            report.notes.append(
                f"{key} {tuple(theirs.shape)} in the checkpoint differs from {kind} verb-to-HOI matrix "
                f"{tuple(ours.shape)} (verb_to_hoi_columns: {columns}), which is used: scores will differ from "
                "the reference's"
            )
        else:
            report.notes.append(f"{key} equals {kind} verb-to-HOI matrix (verb_to_hoi_columns: {columns})")


def load_official_state_dict(model: torch.nn.Module, official: dict[str, Tensor], source: str = "") -> ConversionReport:
    """Convert, load into ``model`` (strictly) and compute the keys the reference does not store.

    ``transformer.clip_interaction_decoder.visual_proj`` becomes a copy of the converted CLIP
    ``visual.proj``; ``hoi_text_embeds`` the L2-normalised embeddings of the vocabulary's HOI prompts by the
    converted CLIP text tower.

    Returns:
        The :class:`ConversionReport`.
    """
    import torch.nn.functional as F

    converted, report = convert_official_state_dict(official, model, source)
    own = model.state_dict()
    for key in COMPUTED_KEYS:
        if key in own:
            converted[key] = own[key]  # placeholder, replaced below
    model.load_state_dict(converted, strict=True)
    with torch.no_grad():
        decoder = model.transformer.clip_interaction_decoder
        decoder.visual_proj.copy_(model.clip.visual_proj.detach().float())
        report.computed.append("transformer.clip_interaction_decoder.visual_proj (= clip.model.visual.proj)")
        was_training = model.training
        model.eval()
        text = model.clip.encode_text(list(model.vocabulary.hoi_prompts))
        model.hoi_text_embeds.copy_(F.normalize(text, dim=-1))
        model.train(was_training)
        report.computed.append(f"hoi_text_embeds ({len(model.vocabulary.hoi_prompts)} HOI prompts through the CLIP "
                               "text tower)")
    return report


def to_official_state_dict(model: torch.nn.Module, include_unused: bool = True) -> dict[str, Tensor]:
    """Our state dict under the reference's names (the inverse mapping), e.g. to build test fixtures.

    Args:
        model: a :class:`~hoiclip_lightning.models.HOICLIP`.
        include_unused: also add the reference's unused modules with the reference's shapes
            (``transformer.interaction_decoder`` as a copy of the instance decoder,
            ``transformer.inter_guided_embedd``, ``hoi_class_fc``, ``norm4`` per interaction layer) and the
            verb-to-HOI matrices, so the dict has every key a released checkpoint has.

    Returns:
        ``{reference name: tensor}`` (tensors cloned).
    """
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        name = ours_to_official(key)
        if name is not None:
            out[name] = value.detach().clone()
    if not include_unused:
        return out
    for key in list(out):
        if key.startswith("transformer.instance_decoder."):
            out["transformer.interaction_decoder." + key[len("transformer.instance_decoder."):]] = out[key].clone()
    cfg = model.config
    width = model.clip.width
    embed = model.clip.embed_dim
    out["transformer.inter_guided_embedd.weight"] = torch.rand(cfg.num_queries, width)
    out["hoi_class_fc.0.weight"] = torch.randn(embed, cfg.hidden_dim) * 0.02
    out["hoi_class_fc.0.bias"] = torch.zeros(embed)
    out["hoi_class_fc.1.weight"] = torch.ones(embed)
    out["hoi_class_fc.1.bias"] = torch.zeros(embed)
    for i in range(len(model.transformer.clip_interaction_decoder.layers)):
        out[f"transformer.clip_interaction_decoder.layers.{i}.norm4.weight"] = torch.ones(width)
        out[f"transformer.clip_interaction_decoder.layers.{i}.norm4.bias"] = torch.zeros(width)
    for key in RECOMPUTED_KEYS:
        matrix = getattr(model, key, None)
        if matrix is not None:
            out[key] = matrix.detach().clone().float()
    return out


# ---------------------------------------------------------------------- architecture from the checkpoint
def _count_layers(state: dict[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def _clip_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k[len("clip_model."):]: v for k, v in state.items() if k.startswith("clip_model.")}


def _clip_architecture(state: dict[str, Tensor]) -> str:
    """The open_clip name of the checkpoint's CLIP, read from its tensors (width, depth, patch, sizes).

    The reference's CLIP is OpenAI's (QuickGELU): a ``-quickgelu`` name is preferred; the converter sets
    ``clip_quick_gelu: true`` in any case.

    Raises:
        CheckpointError: no ViT CLIP in the checkpoint, or no open_clip architecture of those sizes (the
            message describes it and names ``--model_config``).
    """
    from ..models.openai_clip import describe_architecture, openai_clip_architecture, registered_clip_name

    if "clip_model.visual.conv1.weight" not in state:
        raise CheckpointError(
            "the checkpoint has no clip_model.visual.conv1.weight: not a HOICLIP (ViT CLIP) checkpoint"
        )
    try:
        arch = openai_clip_architecture(_clip_state(state))
    except CheckpointError as err:
        raise CheckpointError(f"the checkpoint's CLIP (clip_model.*) is {err}") from err
    name = registered_clip_name(arch)
    if name is None:
        raise CheckpointError(
            f"the checkpoint's CLIP ({describe_architecture(arch)}) matches no open_clip architecture; register "
            "one with open_clip.add_model_config and give its name as net.clip_model in a model YAML passed with "
            "--model_config (hoiclip convert-official --src IN --dst OUT --model_config my_model.yaml)"
        )
    return name


def _check_clip_fits(state: dict[str, Tensor], clip_model: str) -> None:
    """Refuse a ``--model_config`` whose CLIP has other sizes than the checkpoint's, saying which fits."""
    import open_clip

    from ..models.clip_encoder import register_library_clips
    from ..models.openai_clip import config_architecture, describe_architecture, openai_clip_architecture

    register_library_clips()
    config = open_clip.factory._MODEL_CONFIGS.get(clip_model)
    if config is None or "clip_model.visual.conv1.weight" not in state:
        return
    arch = openai_clip_architecture(_clip_state(state))
    if config_architecture(config) != arch:
        try:
            hint = f"set net.clip_model: {_clip_architecture(state)}, or "
        except CheckpointError:
            hint = ""
        raise CheckpointError(
            f"the model config's clip_model {clip_model!r} is not the checkpoint's CLIP "
            f"({describe_architecture(arch)}); {hint}leave out --model_config to read the architecture "
            "from the checkpoint"
        )


def reference_verb_columns(state: dict[str, Tensor], vocabulary: HOIVocabulary, train_hoi_ids: list[int]) -> str:
    """``verb_to_hoi_columns`` a reference checkpoint was trained with: ``"object"`` or ``"hoi"``.

    The reference stores its verb-to-HOI matrix (``verb2hoi_proj``); it is compared with both layouts. A
    checkpoint without it is judged by its vocabulary: the reference fills V-COCO's by object index.
    """
    stored = state.get("verb2hoi_proj")
    if stored is not None:
        for columns in ("object", "hoi"):
            try:
                mine = vocabulary.verb_to_hoi_matrix(train_hoi_ids, columns)
            except ConfigurationError:
                continue
            if tuple(mine.shape) == tuple(stored.shape) and torch.equal(mine, stored.float().cpu()):
                return columns
    return "object" if vocabulary.name == "vcoco" else "hoi"


def infer_net_config(state: dict[str, Tensor], args: argparse.Namespace | None = None) -> HOICLIPConfig:
    """The architecture of a reference checkpoint, from its tensors (and ``args`` for ``verb_weight``).

    Every weight comes from the checkpoint: the module is built with no weight source.
    """
    state = _strip_module_prefix(state)
    q = state.get("query_embed_h.weight")
    lin = state.get("transformer.encoder.layers.0.linear1.weight")
    if q is None or lin is None:
        raise CheckpointError("the checkpoint lacks query_embed_h.weight or transformer.encoder.layers.0.*: "
                              "not a HOICLIP checkpoint")
    layer3 = _count_layers(state, "backbone.0.body.layer3.")
    bottleneck = "backbone.0.body.layer3.0.conv3.weight" in state
    backbones = {6: "resnet50", 23: "resnet101"} if bottleneck else {1: "resnet10", 2: "resnet18", 6: "resnet34"}
    if layer3 not in backbones:
        raise CheckpointError(f"unknown ResNet depth ({layer3} {'bottleneck' if bottleneck else 'basic'} blocks in "
                              "layer3); expected ResNet-10/18/34/50/101, or pass --model_config")
    heads = int(getattr(args, "nheads", 8)) if args is not None else 8
    verb_weight = getattr(args, "verb_weight", None) if args is not None else None
    if verb_weight is None:
        # the reference's verb weight: 0.1 for V-COCO (its verb-to-HOI matrix has a row per V-COCO verb), else 0.5
        proj = state.get("verb2hoi_proj")
        verb_weight = 0.1 if proj is not None and proj.shape[0] == HOIVocabulary.builtin("vcoco").num_verbs else 0.5
    return HOICLIPConfig(
        backbone=backbones[layer3],
        hidden_dim=int(q.shape[1]),
        nheads=heads,
        dim_feedforward=int(lin.shape[0]),
        dropout=float(getattr(args, "dropout", 0.1)) if args is not None else 0.1,
        enc_layers=_count_layers(state, "transformer.encoder.layers."),
        dec_layers=_count_layers(state, "transformer.instance_decoder.layers."),
        inter_dec_layers=_count_layers(state, "transformer.clip_interaction_decoder.layers."),
        inter_nheads=heads,
        num_queries=int(q.shape[0]),
        clip_model=_clip_architecture(state),
        clip_quick_gelu=True,
        verb_weight=float(verb_weight),
    )


def infer_label_space(state: dict[str, Tensor], args: argparse.Namespace | None) -> tuple[str, str]:
    """``(vocabulary, zero_shot)`` of a reference checkpoint from ``args`` or, failing that, its shapes.

    Raises:
        CheckpointError: the zero-shot split cannot be decided (two splits with the same seen-class count
            and no ``args``); pass it explicitly.
    """
    dataset = getattr(args, "dataset_file", None) if args is not None else None
    vocab_name = _DATASETS.get(str(dataset)) if dataset is not None else None
    if vocab_name is None:
        rows = state.get("obj_visual_projection.weight")
        # one row per object prompt (the objects and "nothing"): V-COCO's 82 or HICO-DET's 81
        vcoco_rows = len(HOIVocabulary.builtin("vcoco").object_prompts)
        vocab_name = "vcoco" if rows is not None and rows.shape[0] == vcoco_rows else "hico_det"
    if args is not None and getattr(args, "zero_shot_type", None) is not None:
        zero_shot = str(args.zero_shot_type) if vocab_name == "hico_det" else "default"
        return vocab_name, zero_shot
    if "eval_visual_projection.weight" not in state:
        return vocab_name, "default"
    vocab = HOIVocabulary.builtin(vocab_name)
    seen = int(state["visual_projection.weight"].shape[0])
    splits = [s for s in vocab.zero_shot_unseen if s != "default" and len(vocab.seen_hois(s)) == seen]
    if len(splits) != 1:
        raise CheckpointError(
            f"zero-shot checkpoint with {seen} seen HOI classes matches the splits {splits}; pass the split "
            "(--zero_shot)"
        )
    return vocab_name, splits[0]


def read_official_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], argparse.Namespace | None]:
    """Read a reference ``.pth``: ``(state_dict, args)`` (``args`` is ``None`` if the file has none).

    Raises:
        CheckpointError: missing or unreadable file, or no state dict inside.
    """
    path = Path(path)
    data = load_torch_file(path, "official checkpoint")
    args = data.get("args") if isinstance(data, dict) else None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a state dict or a dict with a 'model' state dict")
    return _strip_module_prefix(data), args if isinstance(args, argparse.Namespace) else None


def _net_from_model_config(path: str | Path) -> HOICLIPConfig:
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        data = data["model"]
    init = data.get("init_args", data) if isinstance(data, dict) else None
    net = (init or {}).get("net")
    if not isinstance(net, dict):
        raise ConfigurationError(f"{path}: no model 'net' section (expected class_path/init_args/net as in "
                                 "configs/model/*.yaml)")
    known = {f.name for f in dataclasses.fields(HOICLIPConfig)}
    bad = sorted(set(net) - known)
    if bad:
        raise ConfigurationError(f"{path}: unknown net field(s) {bad}")
    return HOICLIPConfig(**net)


def convert_official_checkpoint(
    src: str | Path,
    dst: str | Path | None = None,
    vocabulary: str | None = None,
    zero_shot: str | None = None,
    net: HOICLIPConfig | None = None,
    model_config: str | Path | None = None,
) -> tuple[Any, ConversionReport]:
    """Convert a released reference checkpoint into a ``HOICLIPModule`` and, with ``dst``, a ``.ckpt`` file.

    Args:
        src: the reference ``.pth`` (``{"model": ..., "args": ...}`` or a bare state dict).
        dst: where to write the Lightning checkpoint (``None``: do not write).
        vocabulary: ``hico_det``, ``vcoco`` or a JSON path (default: from the checkpoint's ``args`` or shapes).
        zero_shot: zero-shot split (default: from ``args`` or the classifier shapes).
        net: architecture (default: inferred by :func:`infer_net_config`). Weight paths in it are ignored.
        model_config: a model YAML (``configs/model/*.yaml``) whose ``net`` section gives the architecture
            instead of inferring it (not with ``net``).

    Returns:
        ``(module, report)``: the :class:`~hoiclip_lightning.models.HOICLIPModule` with the converted weights
        and the :class:`ConversionReport`.

    Raises:
        CheckpointError: unreadable file or a state dict that does not fit (every problem listed).
    """
    import lightning

    from ..models.module import HOICLIPModule

    if model_config is not None:
        if net is not None:
            raise ConfigurationError("give the architecture as net or as model_config, not both")
        net = _net_from_model_config(model_config)
    state, args = read_official_checkpoint(src)
    guessed_vocab, guessed_zero_shot = (None, None)
    if vocabulary is None or zero_shot is None:
        guessed_vocab, guessed_zero_shot = infer_label_space(state, args)
    vocabulary = vocabulary or guessed_vocab
    zero_shot = zero_shot or guessed_zero_shot or "default"
    if net is not None:
        _check_clip_fits(state, net.clip_model)
    cfg = net if net is not None else infer_net_config(state, args)
    vocab = HOIVocabulary.resolve(str(vocabulary))
    columns = reference_verb_columns(state, vocab, vocab.seen_hois(str(zero_shot)))
    # the reference's CLIP is OpenAI's (QuickGELU, unless a model config says otherwise), and its verb-to-HOI
    # matrix is the one it was trained with
    quick_gelu = True if cfg.clip_quick_gelu is None else cfg.clip_quick_gelu
    cfg = dataclasses.replace(cfg, clip_quick_gelu=quick_gelu, verb_to_hoi_columns=columns)
    if columns != "hoi":
        log.info("%s was trained with the reference's object-indexed verb-to-HOI matrix: verb_to_hoi_columns: %s",
                 src, columns)
    log.info("building %s (vocabulary %s, zero_shot %s) for %s", cfg.clip_model, vocabulary, zero_shot, src)
    module = HOICLIPModule(vocabulary=str(vocabulary), zero_shot=str(zero_shot), net=cfg)
    report = load_official_state_dict(module.model, state, source=str(src))
    if dst is not None:
        dst = Path(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        checkpoint = {
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": lightning.__version__,
            "state_dict": module.state_dict(),
            "hparams_name": "kwargs",
            "hyper_parameters": _cli_hyper_parameters(module),
            "hoiclip_vocabulary": module.vocabulary.to_dict(),
            "hoiclip_conversion": {**report.to_dict(), "zero_shot": zero_shot, "vocabulary": str(vocabulary)},
        }
        torch.save(checkpoint, dst)
        log.info("wrote %s", dst)
    return module, report


def _cli_hyper_parameters(module: Any) -> dict[str, Any]:
    """Hyper-parameters in the form ``hoiclip fit`` saves them (class path, dataclasses as dicts).

    With it, ``HOICLIPModule.load_from_checkpoint`` rebuilds the module through LightningCLI's instantiator,
    and ``hoiclip test/predict --ckpt_path`` applies the checkpoint's architecture over the config's.
    """
    hparams: dict[str, Any] = {"_class_path": f"{type(module).__module__.rsplit('.', 1)[0]}.{type(module).__name__}"}
    for key, value in module.hparams.items():
        hparams[key] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
    return hparams
