"""GEN-VLKT (Liao et al., CVPR 2022), the model HOICLIP was built from, composed of this library's blocks.

What it shares with :class:`~hoiclip_lightning.models.HOICLIP`: the ResNet backbone, the sine positions,
the DETR encoder and instance decoder, the position-guided pair queries, the box heads, the CLIP-text
object classifier and the CLIP encoder. What differs:

* interactions are decoded from the detector memory by a width-D DETR decoder whose query positions are
  the guided embeddings (:class:`~hoiclip_lightning.models.gen_transformer.GENTransformer`), not
  retrieved from CLIP's spatial tokens;
* ``hoi_class_fc`` (``Linear(D, E)`` + ``LayerNorm(E)``) maps them into CLIP's joint space, where the
  CLIP-text HOI classifier scores them; there is no verb adapter;
* CLIP's image tower is only a teacher: the image-level mimic loss
  (:func:`~hoiclip_lightning.models.criterion.mimic_loss`) pulls the query-mean of every layer's
  interaction features towards CLIP's global image embedding (``outputs.mimic_features`` /
  ``mimic_target``);
* the text classifiers are fine-tuned at ``lr_clip`` (the reference's ``--ft_clip_with_small_lr``) unless
  ``train_text_classifiers: false`` (its ``--fix_clip``, used in its zero-shot scripts).

Notation: B images, Q pair queries, D DETR width, E CLIP embedding width, C_obj objects, C_hoi scored HOI
classes, C_hoi_all all HOI classes, n decoder layers.

Parameter names follow the reference (``YueLiao/gen-vlkt``): ``backbone.body.*`` (reference
``backbone.0.body.*``), ``input_proj``, ``query_embed_h``, ``query_embed_o``, ``pos_guided_embedd``,
``hum_bbox_embed``, ``obj_bbox_embed``, ``hoi_class_fc``, ``visual_projection``,
``eval_visual_projection``, ``obj_class_fc``, ``obj_visual_projection``, ``logit_scale``,
``obj_logit_scale``, ``transformer.{encoder, instance_decoder, interaction_decoder}``. ``clip.model.*``
(the mimic teacher) and the buffer ``hoi_text_embeds`` are not in the reference's state dict.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..vocabulary import HOIVocabulary
from .backbone import Backbone
from .clip_encoder import CLIPEncoder
from .config import WeightSources
from .gen_transformer import GENTransformer
from .heads import hoi_logits
from .hoi_model import EncodedImage, HOIModel

log = logging.getLogger(__name__)


@dataclass
class GENVLKTConfig:
    """Architecture of :class:`GENVLKT` (defaults: the reference's HICO-DET script ``configs/hico_s.sh``).

    Attributes:
        backbone, train_backbone, backbone_norm, padding_invariant: the ResNet, as in
            :class:`~hoiclip_lightning.models.HOICLIPConfig`.
        hidden_dim, nheads, dim_feedforward, dropout: DETR width D and the layers' sizes.
        enc_layers: encoder layers.
        dec_layers: layers of the instance decoder and of the interaction decoder (3 in GEN-VLKT-S).
        num_queries: pair queries Q.
        clip_quick_gelu: the CLIP's activation (``None``: from the weights), as for HOICLIP.
        clip_model, clip_precision: the CLIP model (frozen; text encoder for the classifiers, image tower as
            the mimic teacher); its weights are ``WeightSources.clip_pretrained``.
        text_init: initialise the HOI and object classifiers from CLIP prompt embeddings (False: random unit
            rows, ablation).
        prompt_templates, prompt_cache, prompt_cache_dir: prompt embedding, as for HOICLIP.
        train_text_classifiers: fine-tune the text classifiers at ``optimizer.lr_clip`` (reference
            ``--ft_clip_with_small_lr``); False freezes them (``--fix_clip``, its zero-shot scripts).
        text_classifier_bias: *quirk* the text classifiers keep PyTorch's random bias (the reference's
            ``nn.Linear``); False: no bias.
        mimic: return ``mimic_features`` / ``mimic_target`` for the image-level mimic loss (reference
            ``--with_mimic``, on in every script).
        aux_loss: return auxiliary outputs of every decoder layer.
    """

    backbone: Literal["resnet10", "resnet18", "resnet34", "resnet50", "resnet101"] = "resnet50"
    train_backbone: bool = True
    backbone_norm: Literal["frozen_bn", "batch_norm", "group_norm"] = "frozen_bn"
    padding_invariant: bool = True
    hidden_dim: int = 256
    nheads: int = 8
    dim_feedforward: int = 2048
    dropout: float = 0.1
    enc_layers: int = 6
    dec_layers: int = 3
    num_queries: int = 64
    clip_model: str = "ViT-B-32"
    clip_quick_gelu: bool | None = None
    clip_precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    text_init: bool = True
    prompt_templates: list[str] | None = None
    prompt_cache: bool = True
    prompt_cache_dir: str | None = None
    train_text_classifiers: bool = True
    text_classifier_bias: bool = True
    mimic: bool = True
    aux_loss: bool = True


class GENVLKT(HOIModel):
    """The GEN-VLKT model.

    Args:
        vocabulary: label space (objects, verbs, HOI classes and prompts).
        zero_shot: zero-shot split; training scores the seen classes, evaluation (``all_classes=True``)
            a frozen head over all classes, as in the reference.
        config: architecture; ``None`` gives the reference's HICO-DET defaults.
        weights: files read once at construction: ``clip_pretrained`` (the CLIP) and ``detr_checkpoint``
            (DETR checkpoint, its two-branch conversion or ``hoiclip export-detector`` output, for the
            backbone, encoder, instance decoder and box heads; the interaction decoder starts as a copy of
            the loaded instance decoder, the reference's two-branch conversion). ``None`` reads nothing;
            ``verb_embeddings`` is refused (GEN-VLKT has no verb classifier).

    Attributes:
        vocabulary, config, zero_shot: the arguments (``weights`` is not kept).
        train_hoi_ids: HOI classes of the training head (column order of training ``hoi_logits``).
        clip: the frozen :class:`CLIPEncoder`.

    Example:
        >>> import torch
        >>> from hoiclip_lightning import HOIVocabulary
        >>> cfg = GENVLKTConfig(backbone="resnet10", hidden_dim=32, nheads=2, dim_feedforward=64, enc_layers=1,
        ...                     dec_layers=2, num_queries=4, clip_model="hoiclip-tiny", prompt_cache=False)
        >>> model = GENVLKT(HOIVocabulary.builtin("hico_det"), config=cfg).eval()
        >>> out = model(torch.randn(1, 3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.bool), torch.randn(1, 3, 64, 64))
        >>> tuple(out.hoi_logits.shape), tuple(out.mimic_features.shape), tuple(out.mimic_target.shape)
        ((1, 4, 600), (1, 4, 32), (1, 32))
    """

    def __init__(
        self,
        vocabulary: HOIVocabulary,
        zero_shot: str = "default",
        config: GENVLKTConfig | None = None,
        weights: WeightSources | None = None,
    ) -> None:
        super().__init__(vocabulary, zero_shot)
        cfg = config if config is not None else GENVLKTConfig()
        weights = weights if weights is not None else WeightSources()
        _check_config(cfg)
        if weights.verb_embeddings:
            raise ConfigurationError(f"weights.verb_embeddings ({weights.verb_embeddings}): GEN-VLKT has no verb "
                                     "classifier to initialise; set it to null")
        self.config, self.aux_loss = cfg, cfg.aux_loss
        self.prompt_options = dict(templates=cfg.prompt_templates, cache_dir=cfg.prompt_cache_dir,
                                   use_cache=cfg.prompt_cache)
        self._eval_head_bias = cfg.text_classifier_bias
        self.clip = CLIPEncoder(cfg.clip_model, weights.clip_pretrained, cfg.clip_precision, frozen=True,
                                quick_gelu=cfg.clip_quick_gelu)
        d = cfg.hidden_dim
        self._build_detector(
            Backbone(cfg.backbone, cfg.train_backbone, cfg.backbone_norm, cfg.padding_invariant), d, cfg.num_queries,
            lambda: GENTransformer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, cfg.enc_layers, cfg.dec_layers),
        )

        # CLIP-text classifiers (object: prompts + "nothing"; HOI: training classes, all classes for eval)
        hoi_text, obj_text = self._encode_vocabulary(vocabulary)
        self.register_buffer("hoi_text_embeds", F.normalize(hoi_text, dim=-1))
        if not cfg.text_init:
            hoi_text, obj_text = torch.randn_like(hoi_text), torch.randn_like(obj_text)
        bias, trainable = cfg.text_classifier_bias, cfg.train_text_classifiers
        self._build_object_classifier(d, obj_text, bias, trainable)
        self.hoi_class_fc = nn.Sequential(nn.Linear(d, self.clip.embed_dim), nn.LayerNorm(self.clip.embed_dim))
        self._build_hoi_classifier(hoi_text, bias, trainable, eval_bias=bias)

        if weights.detr_checkpoint:
            self._load_detector(weights.detr_checkpoint)

    def _load_detector(self, path: str) -> None:
        from .detr_checkpoint import load_detr_checkpoint

        report = load_detr_checkpoint(self, path)
        if any(k.startswith("transformer.instance_decoder.") for k in report.mapped):
            self.transformer.interaction_decoder.load_state_dict(self.transformer.instance_decoder.state_dict())
            log.info("interaction decoder initialised as a copy of the loaded instance decoder")

    def param_group_of(self, name: str) -> str:
        """The text classifiers train at ``lr_clip`` (the reference's ``--ft_clip_with_small_lr``)."""
        if name.startswith(("visual_projection.", "obj_visual_projection.")):
            return "clip"
        return super().param_group_of(name)

    # ------------------------------------------------------------------ the method's branch
    def decode_interactions(self, enc: EncodedImage, h_hs: Tensor, o_hs: Tensor, clip_tokens: Tensor) -> Tensor:
        """Guided interaction decoder over the memory, then ``hoi_class_fc`` into CLIP space -> ``[n, B, Q, E]``."""
        return self.hoi_class_fc(self.transformer.decode_interactions(h_hs, o_hs, enc.memory, enc.mask, enc.pos))

    def classify_interactions(self, inter: Tensor, all_classes: bool) -> Tensor:
        """The CLIP-text HOI classifier (no verb adapter)."""
        return hoi_logits(inter, self.hoi_head(all_classes), self.logit_scale)

    def extra_outputs(self, inter: Tensor, clip_embeds: Tensor) -> tuple[dict, list[dict]]:
        """``mimic_features`` (every layer) and ``mimic_target`` (CLIP's global image embedding, detached)."""
        if not self.config.mimic:
            return super().extra_outputs(inter, clip_embeds)
        return ({"mimic_features": inter[-1], "mimic_target": clip_embeds.detach()},
                [{"mimic_features": inter[i]} for i in range(inter.shape[0] - 1)])


def _check_config(cfg: GENVLKTConfig) -> None:
    if cfg.hidden_dim % 2 or cfg.hidden_dim % cfg.nheads:
        raise ConfigurationError(f"hidden_dim={cfg.hidden_dim} must be even and divisible by nheads={cfg.nheads}")
    for name in ("enc_layers", "dec_layers", "num_queries"):
        if getattr(cfg, name) < 1:
            raise ConfigurationError(f"{name} must be at least 1, got {getattr(cfg, name)}")
