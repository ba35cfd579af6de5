"""HOICLIP: the detector, the CLIP interaction decoder and the CLIP-text heads as one ``nn.Module``.

Notation: B images, Q pair queries, D DETR width, W CLIP visual width, E CLIP joint width, L CLIP tokens,
C_obj objects, C_verb verbs, C_hoi scored HOI classes (training classes, or all classes at evaluation in
a zero-shot split), C_hoi_all all HOI classes of the vocabulary.

Parameter names follow the reference (``Artanic30/HOICLIP``) where natural: ``backbone.body.*`` (reference
``backbone.0.body.*``), ``input_proj``, ``query_embed_h``, ``query_embed_o``, ``pos_guided_embedd``,
``hum_bbox_embed``, ``obj_bbox_embed``, ``obj_class_fc``, ``obj_visual_projection``, ``obj_logit_scale``,
``logit_scale``, ``visual_projection``, ``eval_visual_projection``, ``inter2verb``, ``verb_projection``,
``transformer.{encoder, instance_decoder, clip_interaction_decoder, queries2spacial_proj(_norm),
obj_class_fc, obj_class_ln}`` and ``clip.model.*`` (reference ``clip_model.*``). The reference's dead
modules (``transformer.interaction_decoder``, ``transformer.inter_guided_embedd``, ``hoi_class_fc``)
are not created, so no parameter is left without gradient.

Buffers: ``hoi_text_embeds`` ``[C_hoi_all, E]`` (normalised HOI prompt embeddings, persistent because they
depend on the CLIP weights), ``transformer.clip_interaction_decoder.visual_proj`` ``[W, E]`` (frozen copy
of CLIP's ``visual.proj``, persistent), ``verb2hoi_proj`` ``[C_verb, C_hoi_train]`` and
``verb2hoi_proj_eval`` ``[C_verb, C_hoi_all]`` (binary, rebuilt from the vocabulary, not persistent).
"""

from __future__ import annotations

import logging

import torch
from einops import rearrange
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..structures import HOIOutputs
from ..vocabulary import HOIVocabulary
from .backbone import Backbone
from .clip_encoder import CLIPEncoder
from .config import HOICLIPConfig
from .heads import (
    LOGIT_SCALE_INIT,
    MLP,
    hoi_logits,
    load_verb_embeddings,
    object_logits,
    text_classifier,
    verb_embeddings_from_text,
)
from .position_encoding import PositionEmbeddingSine
from .transformer import HOITransformer

log = logging.getLogger(__name__)


class HOICLIP(nn.Module):
    """The HOICLIP model (CVPR 2023).

    Args:
        vocabulary: label space (objects, verbs, HOI classes and prompts).
        zero_shot: zero-shot split of the vocabulary; ``default`` trains on all classes. Otherwise the
            training head scores only the seen classes and evaluation (``all_classes=True``) uses a frozen,
            bias-free head over all classes, as the reference does.
        config: architecture; ``None`` gives the paper's defaults.

    Attributes:
        vocabulary, config, zero_shot: the arguments.
        train_hoi_ids: HOI classes of the training head (column order of training ``hoi_logits``).
        clip: the :class:`CLIPEncoder` (its ``mean``/``std``/``image_size`` define the data's CLIP view).
    """

    def __init__(
        self, vocabulary: HOIVocabulary, zero_shot: str = "default", config: HOICLIPConfig | None = None
    ) -> None:
        super().__init__()
        cfg = config if config is not None else HOICLIPConfig()
        self.vocabulary = vocabulary
        self.config = cfg
        self.zero_shot = zero_shot
        self.train_hoi_ids: list[int] = vocabulary.seen_hois(zero_shot)
        if not self.train_hoi_ids:
            raise ConfigurationError(f"zero-shot split {zero_shot!r} leaves no training HOI class")
        self._check_config(cfg)
        d = cfg.hidden_dim

        self.clip = CLIPEncoder(cfg.clip_model, cfg.clip_pretrained, cfg.clip_precision, frozen=cfg.freeze_clip)
        width, embed = self.clip.width, self.clip.embed_dim
        if width % cfg.inter_nheads:
            raise ConfigurationError(
                f"inter_nheads={cfg.inter_nheads} must divide the CLIP width W={width} of {cfg.clip_model!r}"
            )

        # detector
        self.backbone = Backbone(cfg.backbone, cfg.train_backbone, cfg.backbone_norm)
        self.position_embedding = PositionEmbeddingSine(d // 2)
        self.input_proj = nn.Conv2d(self.backbone.num_channels, d, kernel_size=1)
        self.query_embed_h = nn.Embedding(cfg.num_queries, d)
        self.query_embed_o = nn.Embedding(cfg.num_queries, d)
        self.pos_guided_embedd = nn.Embedding(cfg.num_queries, d)
        nn.init.uniform_(self.pos_guided_embedd.weight)
        self.transformer = HOITransformer(
            d_model=d,
            nheads=cfg.nheads,
            dim_feedforward=cfg.dim_feedforward,
            dropout=cfg.dropout,
            enc_layers=cfg.enc_layers,
            dec_layers=cfg.dec_layers,
            inter_dec_layers=cfg.inter_dec_layers,
            inter_nheads=cfg.inter_nheads,
            clip_width=width,
            clip_visual_proj=self.clip.visual_proj,
            clip_retrieval=cfg.clip_retrieval,
            shared_fusion_attention=cfg.shared_fusion_attention,
        )
        self.hum_bbox_embed = MLP(d, d, 4, 3)
        self.obj_bbox_embed = MLP(d, d, 4, 3)
        self.dense_class_embed: nn.Linear | None = None
        if cfg.dense_aux_head:  # beyond the reference: per-cell objects + subject human + verbs
            self.dense_class_embed = nn.Linear(d, vocabulary.num_objects + 1 + vocabulary.num_verbs)

        # CLIP text embeddings (computed once)
        with torch.no_grad():
            hoi_text = self.clip.encode_text(vocabulary.hoi_prompts)  # [C_hoi_all, E]
            obj_text = self.clip.encode_text(vocabulary.object_prompts)  # [C_obj + 1, E]
        self.register_buffer("hoi_text_embeds", F.normalize(hoi_text, dim=-1))
        if cfg.text_init:
            hoi_weight, obj_weight = hoi_text, obj_text
        else:
            hoi_weight, obj_weight = torch.randn_like(hoi_text), torch.randn_like(obj_text)
        trainable_text = not cfg.freeze_clip

        # object classifier
        self.obj_class_fc = nn.Sequential(nn.Linear(d, embed), nn.LayerNorm(embed))
        self.obj_visual_projection = text_classifier(obj_weight, cfg.frozen_random_bias, trainable_text)
        self.obj_logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

        # HOI classifier
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))
        self.visual_projection = text_classifier(hoi_weight[self.train_hoi_ids], cfg.frozen_random_bias, trainable_text)
        self.eval_visual_projection: nn.Linear | None = None
        if self.is_zero_shot:
            self.eval_visual_projection = text_classifier(hoi_weight, bias=False, trainable=False)

        # verb adapter and verb classifier
        self.inter2verb: MLP | None = None
        self.verb_projection: nn.Linear | None = None
        if cfg.verb_adapter:
            self.inter2verb = MLP(embed, embed // 2, embed, 3)
            verb_weight = self._initial_verb_embeddings(cfg, hoi_text, obj_text, embed)
            self.verb_projection = nn.Linear(embed, vocabulary.num_verbs, bias=False)
            with torch.no_grad():
                self.verb_projection.weight.copy_(verb_weight)
            self.verb_projection.requires_grad_(cfg.train_verb_classifier)
            self.register_buffer("verb2hoi_proj", vocabulary.verb_to_hoi_matrix(self.train_hoi_ids), persistent=False)
            self.register_buffer("verb2hoi_proj_eval", vocabulary.verb_to_hoi_matrix(), persistent=False)

        if cfg.detr_checkpoint:
            from .detr_checkpoint import load_detr_checkpoint

            load_detr_checkpoint(self, cfg.detr_checkpoint)

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _check_config(cfg: HOICLIPConfig) -> None:
        if cfg.aux_loss and cfg.dec_layers != cfg.inter_dec_layers:
            raise ConfigurationError(
                f"aux_loss pairs instance-decoder layer l with interaction-decoder layer l, so dec_layers "
                f"({cfg.dec_layers}) must equal inter_dec_layers ({cfg.inter_dec_layers}); or set aux_loss: false"
            )
        if cfg.hidden_dim % 2 or cfg.hidden_dim % cfg.nheads:
            raise ConfigurationError(f"hidden_dim={cfg.hidden_dim} must be even and divisible by nheads={cfg.nheads}")
        for name in ("enc_layers", "dec_layers", "inter_dec_layers", "num_queries"):
            if getattr(cfg, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {getattr(cfg, name)}")

    def _initial_verb_embeddings(self, cfg: HOICLIPConfig, hoi_text: Tensor, obj_text: Tensor, embed: int) -> Tensor:
        vocab = self.vocabulary
        if cfg.verb_embeddings:
            log.info("verb classifier initialised from %s", cfg.verb_embeddings)
            return load_verb_embeddings(cfg.verb_embeddings, vocab.num_verbs, embed)
        if not cfg.text_init:
            return F.normalize(torch.randn(vocab.num_verbs, embed), dim=-1)
        log.info("verb classifier initialised from text embeddings (HOI prompt minus object prompt per verb)")
        return verb_embeddings_from_text(hoi_text, obj_text, vocab.hois, vocab.num_verbs)

    # ------------------------------------------------------------------ info
    @property
    def is_zero_shot(self) -> bool:
        """True when training scores fewer classes than the vocabulary has."""
        return len(self.train_hoi_ids) < self.vocabulary.num_hois

    def hoi_class_ids(self, all_classes: bool) -> list[int]:
        """Vocabulary HOI class of each ``hoi_logits`` column for the given ``all_classes`` setting."""
        return list(range(self.vocabulary.num_hois)) if all_classes else list(self.train_hoi_ids)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimiser group.

        Returns:
            ``backbone`` (ResNet layer2-4), ``clip`` (the CLIP towers; only present when CLIP is trainable)
            and ``rest`` (everything else). Frozen parameters are left out.
        """
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "rest": []}
        if not self.config.freeze_clip:
            groups["clip"] = []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith("backbone."):
                groups["backbone"].append(param)
            elif name.startswith("clip."):
                groups["clip"].append(param)
            else:
                groups["rest"].append(param)
        return groups

    # ------------------------------------------------------------------ forward
    def query_pos(self) -> Tensor:
        """``[2Q, D]`` query positional embeddings: human slots then object slots, each + position guide."""
        guide = self.pos_guided_embedd.weight
        return torch.cat([self.query_embed_h.weight + guide, self.query_embed_o.weight + guide])

    def forward(
        self, images: Tensor, pixel_mask: Tensor, clip_images: Tensor, all_classes: bool | None = None
    ) -> HOIOutputs:
        """Detect human-object interactions.

        Args:
            images: ``[B, 3, H, W]`` detector images (ImageNet-normalised, zero-padded).
            pixel_mask: ``[B, H, W]`` bool, True on padding.
            clip_images: ``[B, 3, S, S]`` CLIP views (normalised with ``self.clip.mean``/``std``).
            all_classes: score all vocabulary classes (True) or the training classes (False). ``None``:
                training classes in training mode, all classes in eval mode.

        Returns:
            :class:`HOIOutputs` with ``sub_boxes``/``obj_boxes`` ``[B, Q, 4]``, ``obj_logits``
            ``[B, Q, C_obj + 1]``, ``hoi_logits`` ``[B, Q, C_hoi]``, ``clip_logits`` ``[B, C_hoi_all]``,
            ``clip_image_embeds`` ``[B, E]``, ``hoi_features`` ``[B, Q, E]`` and, with ``aux_loss``,
            ``aux`` for layers ``0 .. n-2`` (instance-decoder layer l paired with interaction layer l).
        """
        if all_classes is None:
            all_classes = not self.training
        features, mask = self.backbone(images, pixel_mask)
        pos = self.position_embedding(mask)
        src = self.input_proj(features)
        clip_embeds, clip_tokens = self.clip.encode_image(clip_images)
        out = self.transformer(
            src, mask, pos, self.query_pos(), clip_tokens if self.config.clip_retrieval else None
        )

        sub_boxes = self.hum_bbox_embed(out.h_hs).sigmoid()  # [n_dec, B, Q, 4]
        obj_boxes = self.obj_bbox_embed(out.o_hs).sigmoid()
        obj_logits = object_logits(out.o_hs, self.obj_class_fc, self.obj_visual_projection, self.obj_logit_scale)

        use_eval_head = all_classes and self.eval_visual_projection is not None
        projection = self.eval_visual_projection if use_eval_head else self.visual_projection
        verb_to_hoi = None
        if self.inter2verb is not None:
            verb_to_hoi = self.verb2hoi_proj_eval if use_eval_head else self.verb2hoi_proj
        hoi = hoi_logits(
            out.inter_hs,
            projection,
            self.logit_scale,
            self.inter2verb,
            self.verb_projection,
            verb_to_hoi,
            self.config.verb_weight,
        )  # [n_inter, B, Q, C_hoi]

        clip_image_embeds = F.normalize(clip_embeds, dim=-1)
        with torch.no_grad():
            clip_logits = clip_image_embeds @ self.hoi_text_embeds.t()

        dense_logits = dense_valid = dense_cell_size = None
        if self.dense_class_embed is not None:
            h, w = mask.shape[-2:]
            dense_logits = rearrange(self.dense_class_embed(out.memory), "b (h w) c -> b h w c", h=h, w=w)
            dense_valid = ~mask
            dense_cell_size = (images.shape[-2] / h, images.shape[-1] / w)

        aux = None
        if self.config.aux_loss:
            aux = [
                HOIOutputs(
                    sub_boxes=sub_boxes[layer],
                    obj_boxes=obj_boxes[layer],
                    obj_logits=obj_logits[layer],
                    hoi_logits=hoi[layer],
                )
                for layer in range(sub_boxes.shape[0] - 1)
            ]
        return HOIOutputs(
            sub_boxes=sub_boxes[-1],
            obj_boxes=obj_boxes[-1],
            obj_logits=obj_logits[-1],
            hoi_logits=hoi[-1],
            clip_logits=clip_logits,
            clip_image_embeds=clip_image_embeds,
            hoi_features=F.normalize(out.inter_hs[-1], dim=-1),
            aux=aux,
            dense_logits=dense_logits,
            dense_valid=dense_valid,
            dense_cell_size=dense_cell_size,
        )
