"""HOICLIP: the shared detector (:class:`~.hoi_model.HOIModel`) plus the CLIP interaction decoder and the verb adapter.

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
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..vocabulary import HOIVocabulary
from .backbone import Backbone
from .clip_encoder import CLIPEncoder
from .config import HOICLIPConfig, WeightSources
from .heads import MLP, hoi_logits, verb_embeddings_from_text
from .hoi_model import EncodedImage, HOIModel, linear_from_state
from .label_space import VOCABULARY_KEYS, remap_vocabulary_rows, vocabulary_row_ids
from .transformer import HOITransformer
from .verb_embedding_file import load_verb_embeddings

__all__ = ["HOICLIP", "VOCABULARY_KEYS", "remap_vocabulary_rows", "vocabulary_row_ids"]

log = logging.getLogger(__name__)


class HOICLIP(HOIModel):
    """The HOICLIP model (CVPR 2023).

    Args:
        vocabulary: label space (objects, verbs, HOI classes and prompts).
        zero_shot: zero-shot split of the vocabulary; ``default`` trains on all classes. Otherwise the
            training head scores only the seen classes and evaluation (``all_classes=True``) uses a frozen,
            bias-free head over all classes, as the reference does.
        config: architecture; ``None`` gives the paper's defaults.
        weights: files read once at construction (CLIP weights, DETR checkpoint, verb representation);
            ``None`` reads nothing (random CLIP and detector, text-derived verb rows).

    Attributes:
        vocabulary, config, zero_shot: the arguments (``weights`` is not kept).
        train_hoi_ids: HOI classes of the training head (column order of training ``hoi_logits``).
        clip: the :class:`CLIPEncoder` (its ``mean``/``std``/``image_size`` define the data's CLIP view).

    Example:
        >>> import torch
        >>> from hoiclip_lightning import HOIVocabulary
        >>> cfg = HOICLIPConfig(backbone="resnet10", hidden_dim=32, nheads=2, dim_feedforward=64, enc_layers=1,
        ...                     dec_layers=2, inter_dec_layers=2, inter_nheads=2, num_queries=4,
        ...                     clip_model="hoiclip-tiny", prompt_cache=False)
        >>> model = HOICLIP(HOIVocabulary.builtin("hico_det"), config=cfg).eval()
        >>> out = model(torch.randn(1, 3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.bool), torch.randn(1, 3, 64, 64))
        >>> tuple(out.hoi_logits.shape), tuple(out.obj_logits.shape), tuple(out.sub_boxes.shape)
        ((1, 4, 600), (1, 4, 81), (1, 4, 4))
    """

    def __init__(
        self,
        vocabulary: HOIVocabulary,
        zero_shot: str = "default",
        config: HOICLIPConfig | None = None,
        weights: WeightSources | None = None,
    ) -> None:
        super().__init__(vocabulary, zero_shot)
        cfg = config if config is not None else HOICLIPConfig()
        weights = weights if weights is not None else WeightSources()
        _check_config(cfg)
        self.config = cfg
        self.position_in_memory, self.aux_loss = cfg.position_in_memory, cfg.aux_loss
        self.prompt_options = dict(templates=cfg.prompt_templates, cache_dir=cfg.prompt_cache_dir,
                                   use_cache=cfg.prompt_cache)
        self.clip = CLIPEncoder(cfg.clip_model, weights.clip_pretrained, cfg.clip_precision, frozen=cfg.freeze_clip,
                                quick_gelu=cfg.clip_quick_gelu)
        if self.clip.width % cfg.inter_nheads:
            raise ConfigurationError(
                f"inter_nheads={cfg.inter_nheads} must divide the CLIP width W={self.clip.width} of {cfg.clip_model!r}"
            )
        d = cfg.hidden_dim
        self._build_detector(
            Backbone(cfg.backbone, cfg.train_backbone, cfg.backbone_norm, cfg.padding_invariant), d, cfg.num_queries,
            lambda: HOITransformer(
                d_model=d, nheads=cfg.nheads, dim_feedforward=cfg.dim_feedforward, dropout=cfg.dropout,
                enc_layers=cfg.enc_layers, dec_layers=cfg.dec_layers, inter_dec_layers=cfg.inter_dec_layers,
                inter_nheads=cfg.inter_nheads, clip_width=self.clip.width, clip_visual_proj=self.clip.visual_proj,
                clip_retrieval=cfg.clip_retrieval, shared_fusion_attention=cfg.shared_fusion_attention,
                mask_shared_memory=cfg.padding_invariant,
            ),
            dense_head=cfg.dense_aux_head, query_selection=cfg.query_selection,
        )

        # CLIP-text classifiers (the text embeddings are cached on disk for pretrained CLIP weights)
        hoi_text, obj_text = self._encode_vocabulary(vocabulary)  # [C_hoi_all, E], [C_obj + 1, E]
        self.register_buffer("hoi_text_embeds", F.normalize(hoi_text, dim=-1))
        hoi_weight, obj_weight = (hoi_text, obj_text) if cfg.text_init else (torch.randn_like(hoi_text),
                                                                              torch.randn_like(obj_text))
        self._build_object_classifier(d, obj_weight, cfg.frozen_random_bias, not cfg.freeze_clip)
        self._build_hoi_classifier(hoi_weight, cfg.frozen_random_bias, not cfg.freeze_clip, eval_bias=False)

        # verb adapter and the verb classifier (visual semantic arithmetic file, or text-derived rows)
        self.inter2verb: MLP | None = None
        self.verb_projection: nn.Linear | None = None
        if cfg.verb_adapter:
            embed = self.clip.embed_dim
            self.inter2verb = MLP(embed, embed // 2, embed, 3)
            self.verb_projection = nn.Linear(embed, vocabulary.num_verbs, bias=False)
            with torch.no_grad():
                self.verb_projection.weight.copy_(self._initial_verb_embeddings(hoi_text, obj_text, weights))
            self.verb_projection.requires_grad_(cfg.train_verb_classifier)
            self._register_verb_to_hoi(vocabulary)

        elif weights.verb_embeddings:
            raise ConfigurationError(f"weights.verb_embeddings ({weights.verb_embeddings}) initialises the verb "
                                     "classifier, but net.verb_adapter is false: remove one of them")

        if weights.detr_checkpoint:
            from .detr_checkpoint import load_detr_checkpoint

            load_detr_checkpoint(self, weights.detr_checkpoint)

    def _register_verb_to_hoi(self, vocabulary: HOIVocabulary) -> None:
        """Buffers ``verb2hoi_proj`` ``[C_verb, C_hoi_train]`` and ``verb2hoi_proj_eval`` ``[C_verb, C_hoi_all]``."""
        columns = self.config.verb_to_hoi_columns
        device = self.logit_scale.device
        self.register_buffer("verb2hoi_proj", vocabulary.verb_to_hoi_matrix(self.train_hoi_ids, columns).to(device),
                             persistent=False)
        self.register_buffer("verb2hoi_proj_eval", vocabulary.verb_to_hoi_matrix(columns=columns).to(device),
                             persistent=False)

    def _initial_verb_embeddings(self, hoi_text: Tensor, obj_text: Tensor, weights: WeightSources) -> Tensor:
        cfg, vocab = self.config, self.vocabulary
        if weights.verb_embeddings:
            log.info("verb classifier initialised from %s", weights.verb_embeddings)
            return load_verb_embeddings(weights.verb_embeddings, vocab.num_verbs, self.clip.embed_dim,
                                        vocabulary=vocab, clip_model=cfg.clip_model,
                                        clip_pretrained=weights.clip_pretrained,
                                        zero_shot=self.zero_shot,
                                        clip_image_fingerprint=self.clip.image_fingerprint())
        if not cfg.text_init:
            return F.normalize(torch.randn(vocab.num_verbs, self.clip.embed_dim), dim=-1)
        log.info("verb classifier initialised from text embeddings (HOI prompt minus object prompt per verb)")
        return verb_embeddings_from_text(hoi_text, obj_text, vocab.hois, vocab.num_verbs)

    def encode_vocabulary(self, vocabulary: HOIVocabulary) -> tuple[Tensor, Tensor]:
        """Text embeddings of a vocabulary's prompts: ``[C_hoi_all, E]`` and ``[C_obj + 1, E]`` (not normalised)."""
        return self._encode_vocabulary(vocabulary)

    def param_group_names(self) -> tuple[str, ...]:
        """``backbone``, ``rest`` and, when CLIP is trainable (``freeze_clip: false``), ``clip``."""
        return ("backbone", "rest") if self.config.freeze_clip else ("backbone", "clip", "rest")

    # ------------------------------------------------------------------ the method's branch
    def decode_interactions(self, enc: EncodedImage, h_hs: Tensor, o_hs: Tensor, clip_tokens: Tensor) -> Tensor:
        """CLIP interaction decoder from the last instance layer's pairs -> ``[n_inter, B, Q, E]``."""
        tokens = clip_tokens if self.config.clip_retrieval else None
        return self.transformer.decode_interactions(h_hs[-1], o_hs[-1], enc.memory, enc.mask, tokens)

    def classify_interactions(self, inter: Tensor, all_classes: bool) -> Tensor:
        """Text classifier plus the verb adapter's verb scores spread over the HOI classes."""
        verb_to_hoi = None
        if self.inter2verb is not None:
            use_eval = all_classes and self.eval_visual_projection is not None
            verb_to_hoi = self.verb2hoi_proj_eval if use_eval else self.verb2hoi_proj
        return hoi_logits(inter, self.hoi_head(all_classes), self.logit_scale, self.inter2verb,
                          self.verb_projection, verb_to_hoi, self.config.verb_weight)

    # ------------------------------------------------------------------ open vocabulary
    def _set_method_vocabulary(self, vocabulary: HOIVocabulary, merged: dict[str, Tensor],
                               device: torch.device) -> None:
        if self.verb_projection is not None:
            self.verb_projection = linear_from_state(merged, "verb_projection", self.config.train_verb_classifier,
                                                     device)
            self._register_verb_to_hoi(vocabulary)

    def _method_vocabulary_tensors(self, vocabulary: HOIVocabulary, hoi_text: Tensor,
                                   obj_text: Tensor) -> dict[str, Tensor]:
        if self.verb_projection is None:
            return {}
        return {"verb_projection.weight": verb_embeddings_from_text(hoi_text, obj_text, vocabulary.hois,
                                                                    vocabulary.num_verbs)}


def _check_config(cfg: HOICLIPConfig) -> None:
    if cfg.aux_loss and cfg.dec_layers != cfg.inter_dec_layers:
        raise ConfigurationError(
            f"aux_loss pairs instance-decoder layer l with interaction-decoder layer l, so dec_layers "
            f"({cfg.dec_layers}) must equal inter_dec_layers ({cfg.inter_dec_layers}); or set aux_loss: false"
        )
    if cfg.hidden_dim % 2 or cfg.hidden_dim % cfg.nheads:
        raise ConfigurationError(f"hidden_dim={cfg.hidden_dim} must be even and divisible by nheads={cfg.nheads}")
    if cfg.query_selection and not cfg.dense_aux_head:
        raise ConfigurationError("query_selection ranks memory cells with the dense head: set dense_aux_head: true")
    for name in ("enc_layers", "dec_layers", "inter_dec_layers", "num_queries"):
        if getattr(cfg, name) < 1:
            raise ConfigurationError(f"{name} must be at least 1, got {getattr(cfg, name)}")
