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
from ..structures import HOIOutputs
from ..vocabulary import HOIVocabulary
from .backbone import Backbone
from .clip_encoder import CLIPEncoder
from .gen_transformer import GENTransformer
from .heads import LOGIT_SCALE_INIT, MLP, hoi_logits, object_logits, text_classifier
from .position_encoding import PositionEmbeddingSine

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
        detr_checkpoint: DETR checkpoint (or its two-branch conversion, or ``hoiclip export-detector``
            output) for the backbone, encoder, instance decoder and box heads; the interaction decoder
            starts as a copy of the loaded instance decoder (the reference's two-branch conversion).
        clip_model, clip_pretrained, clip_precision: the CLIP model (frozen; text encoder for the
            classifiers, image tower as the mimic teacher).
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
    detr_checkpoint: str | None = None
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "openai"
    clip_precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    text_init: bool = True
    prompt_templates: list[str] | None = None
    prompt_cache: bool = True
    prompt_cache_dir: str | None = None
    train_text_classifiers: bool = True
    text_classifier_bias: bool = True
    mimic: bool = True
    aux_loss: bool = True


class GENVLKT(nn.Module):
    """The GEN-VLKT model.

    Args:
        vocabulary: label space (objects, verbs, HOI classes and prompts).
        zero_shot: zero-shot split; training scores the seen classes, evaluation (``all_classes=True``)
            a frozen head over all classes, as in the reference.
        config: architecture; ``None`` gives the reference's HICO-DET defaults.

    Attributes:
        vocabulary, config, zero_shot: the arguments.
        train_hoi_ids: HOI classes of the training head (column order of training ``hoi_logits``).
        clip: the frozen :class:`CLIPEncoder`.

    Example:
        >>> import torch
        >>> from hoiclip_lightning import HOIVocabulary
        >>> cfg = GENVLKTConfig(backbone="resnet10", hidden_dim=32, nheads=2, dim_feedforward=64, enc_layers=1,
        ...                     dec_layers=2, num_queries=4, clip_model="hoiclip-tiny", clip_pretrained=None,
        ...                     prompt_cache=False)
        >>> model = GENVLKT(HOIVocabulary.builtin("hico_det"), config=cfg).eval()
        >>> out = model(torch.randn(1, 3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.bool), torch.randn(1, 3, 64, 64))
        >>> tuple(out.hoi_logits.shape), tuple(out.mimic_features.shape), tuple(out.mimic_target.shape)
        ((1, 4, 600), (1, 4, 32), (1, 32))
    """

    def __init__(
        self, vocabulary: HOIVocabulary, zero_shot: str = "default", config: GENVLKTConfig | None = None
    ) -> None:
        super().__init__()
        cfg = config if config is not None else GENVLKTConfig()
        _check_config(cfg)
        self.vocabulary, self.config, self.zero_shot = vocabulary, cfg, zero_shot
        self.train_hoi_ids: list[int] = vocabulary.seen_hois(zero_shot)
        if not self.train_hoi_ids:
            raise ConfigurationError(f"zero-shot split {zero_shot!r} leaves no training HOI class")
        d = cfg.hidden_dim
        self.clip = CLIPEncoder(cfg.clip_model, cfg.clip_pretrained, cfg.clip_precision, frozen=True)
        embed = self.clip.embed_dim

        # detector: backbone, encoder, instance decoder, guided interaction decoder, box heads
        self.backbone = Backbone(cfg.backbone, cfg.train_backbone, cfg.backbone_norm, cfg.padding_invariant)
        self.position_embedding = PositionEmbeddingSine(d // 2)
        self.input_proj = nn.Conv2d(self.backbone.num_channels, d, kernel_size=1)
        self.query_embed_h = nn.Embedding(cfg.num_queries, d)
        self.query_embed_o = nn.Embedding(cfg.num_queries, d)
        self.pos_guided_embedd = nn.Embedding(cfg.num_queries, d)
        nn.init.uniform_(self.pos_guided_embedd.weight)
        self.transformer = GENTransformer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, cfg.enc_layers,
                                          cfg.dec_layers)
        self.hum_bbox_embed = MLP(d, d, 4, 3)
        self.obj_bbox_embed = MLP(d, d, 4, 3)

        # CLIP-text classifiers (object: prompts + "nothing"; HOI: training classes, all classes for eval)
        hoi_text, obj_text = self._encode_prompts(vocabulary)
        self.register_buffer("hoi_text_embeds", F.normalize(hoi_text, dim=-1))
        if not cfg.text_init:
            hoi_text, obj_text = torch.randn_like(hoi_text), torch.randn_like(obj_text)
        bias, trainable = cfg.text_classifier_bias, cfg.train_text_classifiers
        self.obj_class_fc = nn.Sequential(nn.Linear(d, embed), nn.LayerNorm(embed))
        self.obj_visual_projection = text_classifier(obj_text, bias, trainable)
        self.obj_logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))
        self.hoi_class_fc = nn.Sequential(nn.Linear(d, embed), nn.LayerNorm(embed))
        self.visual_projection = text_classifier(hoi_text[self.train_hoi_ids], bias, trainable)
        self.eval_visual_projection: nn.Linear | None = None
        if len(self.train_hoi_ids) < vocabulary.num_hois:
            self.eval_visual_projection = text_classifier(hoi_text, bias, trainable=False)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

        if cfg.detr_checkpoint:
            self._load_detector(cfg.detr_checkpoint)

    def _encode_prompts(self, vocabulary: HOIVocabulary) -> tuple[Tensor, Tensor]:
        from ..knowledge.prompts import encode_prompts

        cfg = self.config
        kwargs = dict(templates=cfg.prompt_templates, cache_dir=cfg.prompt_cache_dir, use_cache=cfg.prompt_cache)
        with torch.no_grad():
            return (encode_prompts(self.clip, vocabulary.hoi_prompts, **kwargs),
                    encode_prompts(self.clip, vocabulary.object_prompts, **kwargs))

    def _load_detector(self, path: str) -> None:
        from .detr_checkpoint import load_detr_checkpoint

        report = load_detr_checkpoint(self, path)
        if any(k.startswith("transformer.instance_decoder.") for k in report.mapped):
            self.transformer.interaction_decoder.load_state_dict(self.transformer.instance_decoder.state_dict())
            log.info("interaction decoder initialised as a copy of the loaded instance decoder")

    # ------------------------------------------------------------------ what HOICLIPModule asks of a model
    @property
    def is_zero_shot(self) -> bool:
        """True when training scores fewer classes than the vocabulary has."""
        return len(self.train_hoi_ids) < self.vocabulary.num_hois

    def hoi_class_ids(self, all_classes: bool) -> list[int]:
        """Vocabulary HOI class of each ``hoi_logits`` column for the given ``all_classes`` setting."""
        return list(range(self.vocabulary.num_hois)) if all_classes else list(self.train_hoi_ids)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters: ``backbone`` (lr_backbone), ``clip`` (the text classifiers, lr_clip, as the
        reference's ``--ft_clip_with_small_lr``) and ``rest`` (lr). Frozen parameters are left out."""
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "clip": [], "rest": []}
        for name, param in self.named_parameters():
            if param.requires_grad:
                group = ("backbone" if name.startswith("backbone.") else
                         "clip" if name.startswith(("visual_projection.", "obj_visual_projection.")) else "rest")
                groups[group].append(param)
        return groups

    def set_vocabulary(self, vocabulary: HOIVocabulary, zero_shot: str = "default") -> None:
        """Not available for GEN-VLKT yet (HOICLIP has it); raises :class:`ConfigurationError`."""
        raise ConfigurationError("GENVLKT cannot switch its vocabulary after construction yet; build a new model "
                                 "with the vocabulary (the classifiers are initialised from its prompts)")

    def vocabulary_tensors(self, vocabulary: HOIVocabulary, train_hoi_ids: list[int]) -> dict[str, Tensor]:
        """Not available for GEN-VLKT yet (see :meth:`set_vocabulary`)."""
        self.set_vocabulary(vocabulary)
        return {}

    def query_pos(self) -> Tensor:
        """``[2Q, D]`` query positions: human slots then object slots, each + the pair's position guide."""
        guide = self.pos_guided_embedd.weight
        return torch.cat([self.query_embed_h.weight + guide, self.query_embed_o.weight + guide])

    # ------------------------------------------------------------------ forward
    def forward(
        self, images: Tensor, pixel_mask: Tensor, clip_images: Tensor, all_classes: bool | None = None
    ) -> HOIOutputs:
        """Detect human-object interactions.

        Args:
            images: ``[B, 3, H, W]`` detector images (ImageNet-normalised, zero-padded).
            pixel_mask: ``[B, H, W]`` bool, True on padding.
            clip_images: ``[B, 3, S, S]`` CLIP views (the mimic teacher's input).
            all_classes: score all vocabulary classes (True) or the training classes (False); ``None``:
                training classes in training mode, all classes in eval mode.

        Returns:
            :class:`HOIOutputs`: ``sub_boxes``/``obj_boxes`` ``[B, Q, 4]``, ``obj_logits`` ``[B, Q, C_obj + 1]``,
            ``hoi_logits`` ``[B, Q, C_hoi]``, ``clip_logits`` ``[B, C_hoi_all]``, ``clip_image_embeds``
            ``[B, E]`` (normalised), ``hoi_features`` ``[B, Q, E]`` (normalised), with ``mimic``
            ``mimic_features`` ``[B, Q, E]`` and ``mimic_target`` ``[B, E]``, and with ``aux_loss`` ``aux``
            for layers ``0 .. n-2`` (boxes, logits and their ``mimic_features``).
        """
        if all_classes is None:
            all_classes = not self.training
        features, mask = self.backbone(images, pixel_mask)
        pos = self.position_embedding(mask)
        out = self.transformer(self.input_proj(features), mask, pos, self.query_pos())

        sub_boxes = self.hum_bbox_embed(out.h_hs).sigmoid()  # [n, B, Q, 4]
        obj_boxes = self.obj_bbox_embed(out.o_hs).sigmoid()
        obj_logits = object_logits(out.o_hs, self.obj_class_fc, self.obj_visual_projection, self.obj_logit_scale)
        inter = self.hoi_class_fc(out.inter_hs)  # [n, B, Q, E] un-normalised interaction features
        use_eval_head = all_classes and self.eval_visual_projection is not None
        head = self.eval_visual_projection if use_eval_head else self.visual_projection
        hoi = hoi_logits(inter, head, self.logit_scale)  # [n, B, Q, C_hoi]

        clip_embeds, _ = self.clip.encode_image(clip_images)  # [B, E] un-normalised
        clip_embeds = clip_embeds.float()
        clip_image_embeds = F.normalize(clip_embeds, dim=-1)
        with torch.no_grad():
            clip_logits = clip_image_embeds @ self.hoi_text_embeds.t()
        mimic = self.config.mimic
        aux = None
        if self.config.aux_loss:
            aux = [HOIOutputs(sub_boxes=sub_boxes[i], obj_boxes=obj_boxes[i], obj_logits=obj_logits[i],
                              hoi_logits=hoi[i], mimic_features=inter[i] if mimic else None)
                   for i in range(sub_boxes.shape[0] - 1)]
        return HOIOutputs(
            sub_boxes=sub_boxes[-1], obj_boxes=obj_boxes[-1], obj_logits=obj_logits[-1], hoi_logits=hoi[-1],
            clip_logits=clip_logits, clip_image_embeds=clip_image_embeds,
            hoi_features=F.normalize(inter[-1], dim=-1), aux=aux,
            mimic_features=inter[-1] if mimic else None, mimic_target=clip_embeds.detach() if mimic else None,
        )


def _check_config(cfg: GENVLKTConfig) -> None:
    if cfg.hidden_dim % 2 or cfg.hidden_dim % cfg.nheads:
        raise ConfigurationError(f"hidden_dim={cfg.hidden_dim} must be even and divisible by nheads={cfg.nheads}")
    for name in ("enc_layers", "dec_layers", "num_queries"):
        if getattr(cfg, name) < 1:
            raise ConfigurationError(f"{name} must be at least 1, got {getattr(cfg, name)}")
