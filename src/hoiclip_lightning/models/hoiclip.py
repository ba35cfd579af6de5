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
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigurationError
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
from .query_selection import DenseQuerySelection
from .transformer import HOITransformer

log = logging.getLogger(__name__)

#: state-dict keys (relative to :class:`HOICLIP`) whose rows follow the vocabulary
VOCABULARY_KEYS = (
    "hoi_text_embeds",
    "visual_projection.weight",
    "visual_projection.bias",
    "eval_visual_projection.weight",
    "obj_visual_projection.weight",
    "obj_visual_projection.bias",
    "verb_projection.weight",
    "dense_class_embed.weight",
    "dense_class_embed.bias",
)
_NOTHING = ("object", "<nothing>")
_SUBJECT = ("dense", "<subject human>")


def vocabulary_row_ids(vocabulary: HOIVocabulary, train_hoi_ids: list[int]) -> dict[str, list[tuple]]:
    """Identity of every row of each :data:`VOCABULARY_KEYS` tensor, by name.

    HOI classes are ``("hoi", verb name, object name)``, objects ``("object", name)`` (plus the final
    "nothing" slot), verbs ``("verb", name)``; rows with equal identities in two vocabularies are the same
    class.
    """
    hoi = [("hoi", vocabulary.verbs[v], vocabulary.objects[o]) for v, o in vocabulary.hois]
    objects = [("object", o) for o in vocabulary.objects]
    verbs = [("verb", v) for v in vocabulary.verbs]
    train = [hoi[c] for c in train_hoi_ids]
    return {
        "hoi_text_embeds": hoi,
        "visual_projection.weight": train,
        "visual_projection.bias": train,
        "eval_visual_projection.weight": hoi,
        "obj_visual_projection.weight": objects + [_NOTHING],
        "obj_visual_projection.bias": objects + [_NOTHING],
        "verb_projection.weight": verbs,
        "dense_class_embed.weight": objects + [_SUBJECT] + verbs,
        "dense_class_embed.bias": objects + [_SUBJECT] + verbs,
    }


def remap_vocabulary_rows(
    old_state: dict[str, Tensor],
    old_rows: dict[str, list[tuple]],
    new_state: dict[str, Tensor],
    new_rows: dict[str, list[tuple]],
    prefix: str = "",
) -> dict[str, Tensor]:
    """Carry the rows of classes present in both vocabularies from ``old_state`` into ``new_state``.

    For every key ``prefix + k`` of ``new_state`` with ``k`` in :data:`VOCABULARY_KEYS`: a copy of the new
    tensor (``[C_new, ...]``, freshly built from text) whose rows of classes that also exist in the old
    vocabulary are replaced by the old rows (``old_state[prefix + k]``, ``[C_old, ...]``). New classes of
    the two text-classifier biases get 0. Keys missing from ``old_state`` keep the new tensor.

    Returns:
        the remapped tensors, keyed like ``new_state`` (vocabulary keys only).
    """
    out: dict[str, Tensor] = {}
    for full, new in new_state.items():
        key = full[len(prefix):] if full.startswith(prefix) else None
        if key not in VOCABULARY_KEYS:
            continue
        value = new.detach().clone()
        old = old_state.get(full)
        if old is not None:
            index = {ident: i for i, ident in enumerate(old_rows[key])}
            if len(index) != old.shape[0]:
                raise CheckpointError(f"{full}: {old.shape[0]} rows stored, but the stored vocabulary "
                                      f"describes {len(index)}")
            pairs = [(j, index[ident]) for j, ident in enumerate(new_rows[key]) if ident in index]
            kept = set()
            if pairs:
                dst, src = (torch.tensor(x, dtype=torch.long) for x in zip(*pairs, strict=True))
                value[dst] = old.to(value.device, value.dtype)[src]
                kept = set(dst.tolist())
            if key in ("visual_projection.bias", "obj_visual_projection.bias"):
                fresh_rows = [j for j in range(value.shape[0]) if j not in kept]
                value[fresh_rows] = 0.0
        out[full] = value
    return out


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

        self.clip = CLIPEncoder(cfg.clip_model, cfg.clip_pretrained, cfg.clip_precision, frozen=cfg.freeze_clip,
                                quick_gelu=cfg.clip_quick_gelu)
        width, embed = self.clip.width, self.clip.embed_dim
        if width % cfg.inter_nheads:
            raise ConfigurationError(
                f"inter_nheads={cfg.inter_nheads} must divide the CLIP width W={width} of {cfg.clip_model!r}"
            )

        # detector
        self.backbone = Backbone(cfg.backbone, cfg.train_backbone, cfg.backbone_norm, cfg.padding_invariant)
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
            mask_shared_memory=cfg.padding_invariant,
        )
        self.hum_bbox_embed = MLP(d, d, 4, 3)
        self.obj_bbox_embed = MLP(d, d, 4, 3)
        self.dense_class_embed: nn.Linear | None = None
        if cfg.dense_aux_head:  # beyond the reference: per-cell objects + subject human + verbs
            self.dense_class_embed = nn.Linear(d, vocabulary.num_objects + 1 + vocabulary.num_verbs)
        self.query_selector: DenseQuerySelection | None = None
        if cfg.query_selection:  # beyond the reference: slots start from the dense head's best cells
            self.query_selector = DenseQuerySelection(d, vocabulary.num_objects)

        # CLIP text embeddings (computed once; cached on disk for pretrained CLIP weights)
        hoi_text, obj_text = self.encode_vocabulary(vocabulary)  # [C_hoi_all, E], [C_obj + 1, E]
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
            columns = cfg.verb_to_hoi_columns
            self.register_buffer("verb2hoi_proj", vocabulary.verb_to_hoi_matrix(self.train_hoi_ids, columns),
                                 persistent=False)
            self.register_buffer("verb2hoi_proj_eval", vocabulary.verb_to_hoi_matrix(columns=columns),
                                 persistent=False)

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
        if cfg.query_selection and not cfg.dense_aux_head:
            raise ConfigurationError("query_selection ranks memory cells with the dense head: set dense_aux_head: true")
        for name in ("enc_layers", "dec_layers", "inter_dec_layers", "num_queries"):
            if getattr(cfg, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {getattr(cfg, name)}")

    def _initial_verb_embeddings(self, cfg: HOICLIPConfig, hoi_text: Tensor, obj_text: Tensor, embed: int) -> Tensor:
        vocab = self.vocabulary
        if cfg.verb_embeddings:
            log.info("verb classifier initialised from %s", cfg.verb_embeddings)
            return load_verb_embeddings(cfg.verb_embeddings, vocab.num_verbs, embed, vocabulary=vocab,
                                        clip_model=cfg.clip_model, clip_pretrained=cfg.clip_pretrained,
                                        zero_shot=self.zero_shot,
                                        clip_image_fingerprint=self.clip.image_fingerprint())
        if not cfg.text_init:
            return F.normalize(torch.randn(vocab.num_verbs, embed), dim=-1)
        log.info("verb classifier initialised from text embeddings (HOI prompt minus object prompt per verb)")
        return verb_embeddings_from_text(hoi_text, obj_text, vocab.hois, vocab.num_verbs)

    def encode_vocabulary(self, vocabulary: HOIVocabulary) -> tuple[Tensor, Tensor]:
        """Text embeddings of a vocabulary's prompts (templates and disk cache from the config).

        Returns:
            ``hoi_text`` ``[C_hoi_all, E]`` and ``obj_text`` ``[C_obj + 1, E]``, float32, not normalised.
        """
        from ..knowledge.prompts import encode_prompts

        cfg = self.config
        kwargs = dict(templates=cfg.prompt_templates, cache_dir=cfg.prompt_cache_dir, use_cache=cfg.prompt_cache)
        with torch.no_grad():
            hoi_text = encode_prompts(self.clip, vocabulary.hoi_prompts, **kwargs)
            obj_text = encode_prompts(self.clip, vocabulary.object_prompts, **kwargs)
        return hoi_text, obj_text

    # ------------------------------------------------------------------ open vocabulary
    def set_vocabulary(self, vocabulary: HOIVocabulary, zero_shot: str = "default") -> None:
        """Switch to another label space without retraining (open-vocabulary inference).

        The text-derived parts are rebuilt for ``vocabulary``: the HOI classifier (``visual_projection`` and,
        for a zero-shot split, ``eval_visual_projection``), the object classifier, the TFE text embeddings
        ``hoi_text_embeds``, the verb classifier rows and the verb->HOI matrices. A class present in both
        label spaces (same verb name and object name; objects and verbs by name) keeps its current row,
        trained or not (weight and bias); a new class gets its L2-normalised text embedding and a zero bias
        (not the reference's random frozen bias, which would add noise to a class nothing was trained on);
        a new verb gets its text-derived representation (:func:`verb_embeddings_from_text`). Rows of the
        dense auxiliary head follow the same rule (new rows keep their fresh initialisation). Everything
        else (detector, decoders, adapter, logit scales) is untouched. Call it before configuring an
        optimiser: the classifier modules are replaced.

        Args:
            vocabulary: the new label space.
            zero_shot: zero-shot split of ``vocabulary`` whose seen classes form the training head.

        Example:
            >>> model.set_vocabulary(HOIVocabulary.from_json("my_vocab.json"))  # doctest: +SKIP
            >>> model(images, mask, clip_images).hoi_logits.shape[-1] == model.vocabulary.num_hois  # doctest: +SKIP
            True
        """
        train_ids = vocabulary.seen_hois(zero_shot)
        if not train_ids:
            raise ConfigurationError(f"zero-shot split {zero_shot!r} leaves no training HOI class")
        old_state = {k: v.detach().cpu() for k, v in self.state_dict().items() if k in VOCABULARY_KEYS}
        old_rows = vocabulary_row_ids(self.vocabulary, self.train_hoi_ids)
        fresh = self.vocabulary_tensors(vocabulary, train_ids)
        merged = remap_vocabulary_rows(old_state, old_rows, fresh, vocabulary_row_ids(vocabulary, train_ids))
        device = self.logit_scale.device
        cfg = self.config

        def linear(name: str, trainable: bool) -> nn.Linear:
            weight, bias = merged[f"{name}.weight"], merged.get(f"{name}.bias")
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            with torch.no_grad():
                layer.weight.copy_(weight)
                if bias is not None:
                    layer.bias.copy_(bias)
            return layer.requires_grad_(trainable).to(device)

        self.vocabulary, self.zero_shot, self.train_hoi_ids = vocabulary, zero_shot, train_ids
        self.hoi_text_embeds = merged["hoi_text_embeds"].to(device)
        self.obj_visual_projection = linear("obj_visual_projection", not cfg.freeze_clip)
        self.visual_projection = linear("visual_projection", not cfg.freeze_clip)
        self.eval_visual_projection = linear("eval_visual_projection", False) if self.is_zero_shot else None
        if self.verb_projection is not None:
            self.verb_projection = linear("verb_projection", cfg.train_verb_classifier)
            columns = cfg.verb_to_hoi_columns
            self.verb2hoi_proj = vocabulary.verb_to_hoi_matrix(train_ids, columns).to(device)
            self.verb2hoi_proj_eval = vocabulary.verb_to_hoi_matrix(columns=columns).to(device)
        if self.dense_class_embed is not None:
            self.dense_class_embed = linear("dense_class_embed", True)
        if self.query_selector is not None:  # the dense channels of the objects end at the new C_obj
            self.query_selector.num_obj_classes = vocabulary.num_objects
        log.info("vocabulary set to %r (%d HOI classes, %d scored in training)", vocabulary.name,
                 vocabulary.num_hois, len(train_ids))

    def vocabulary_tensors(self, vocabulary: HOIVocabulary, train_hoi_ids: list[int]) -> dict[str, Tensor]:
        """Text-derived values of the :data:`VOCABULARY_KEYS` tensors this model has, for a vocabulary.

        Uses the CLIP text tower as it is now. Biases of the text classifiers are 0; rows of the dense head
        are freshly initialised.

        Returns:
            CPU tensors: ``hoi_text_embeds`` / ``eval_visual_projection.weight`` ``[C_hoi_all, E]`` (unit rows),
            ``visual_projection.weight`` ``[len(train_hoi_ids), E]``, ``obj_visual_projection.weight``
            ``[C_obj + 1, E]``, ``verb_projection.weight`` ``[C_verb, E]``, biases, ``dense_class_embed.*``.
        """
        hoi_text, obj_text = (t.detach().float().cpu() for t in self.encode_vocabulary(vocabulary))
        hoi_n, obj_n = F.normalize(hoi_text, dim=-1), F.normalize(obj_text, dim=-1)
        out = {"hoi_text_embeds": hoi_n, "visual_projection.weight": hoi_n[train_hoi_ids].clone(),
               "obj_visual_projection.weight": obj_n}
        if self.visual_projection.bias is not None:
            out["visual_projection.bias"] = torch.zeros(len(train_hoi_ids))
        if self.obj_visual_projection.bias is not None:
            out["obj_visual_projection.bias"] = torch.zeros(obj_n.shape[0])
        if len(train_hoi_ids) < vocabulary.num_hois:
            out["eval_visual_projection.weight"] = hoi_n.clone()
        if self.verb_projection is not None:
            out["verb_projection.weight"] = verb_embeddings_from_text(hoi_text, obj_text, vocabulary.hois,
                                                                      vocabulary.num_verbs)
        if self.dense_class_embed is not None:
            dense = nn.Linear(self.dense_class_embed.in_features, vocabulary.num_objects + 1 + vocabulary.num_verbs)
            out["dense_class_embed.weight"], out["dense_class_embed.bias"] = dense.weight.detach(), dense.bias.detach()
        return out

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
        if self.config.position_in_memory:  # beyond the reference: positions in the values too
            src = src + pos.to(src.dtype)
        clip_embeds, clip_tokens = self.clip.encode_image(clip_images)
        memory, flat_mask, flat_pos = self.transformer.encode(src, mask, pos)

        dense_logits = dense_valid = dense_cell_size = None
        if self.dense_class_embed is not None:
            dense_cell_size = (float(self.backbone.stride), float(self.backbone.stride))
            dense_flat = self.dense_class_embed(memory)  # [B, S, C_obj + 1 + C_verb]
            dense_logits = rearrange(dense_flat, "b (h w) c -> b h w c", h=mask.shape[-2], w=mask.shape[-1])
            dense_valid = ~mask

        query_pos, tgt = self.query_pos(), None
        sub_offset = obj_offset = 0.0  # box-logit offsets: the selected cells' centres with query_selection
        if self.query_selector is not None:
            valid = ~pixel_mask
            image_sizes = torch.stack([valid.any(dim=2).sum(dim=1), valid.any(dim=1).sum(dim=1)], dim=1)
            selected = self.query_selector(memory, flat_pos, dense_flat, flat_mask, query_pos,
                                           grid=tuple(mask.shape[-2:]), cell_size=dense_cell_size,
                                           image_sizes=image_sizes)
            query_pos, tgt = selected.query_pos, selected.tgt
            sub_offset, obj_offset = selected.box_offset.chunk(2, dim=1)  # [B, Q, 4] each
        out = self.transformer.decode(memory, flat_mask, flat_pos, query_pos,
                                      clip_tokens if self.config.clip_retrieval else None, tgt=tgt)

        sub_boxes = (self.hum_bbox_embed(out.h_hs) + sub_offset).sigmoid()  # [n_dec, B, Q, 4]
        obj_boxes = (self.obj_bbox_embed(out.o_hs) + obj_offset).sigmoid()
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
