"""What HOICLIP and GEN-VLKT share: the pair detector, the CLIP-text classifiers and the open vocabulary.

:class:`HOIModel` composes the blocks every CLIP-guided HOI detector of this library has and runs the
common part of the forward pass; a method is a subclass that adds its interaction branch by overriding
two methods:

* :meth:`HOIModel.decode_interactions` turns the instance decoder's human and object slots (plus the
  encoder memory and CLIP's spatial tokens) into interaction features in CLIP's joint space;
* :meth:`HOIModel.classify_interactions` scores them against the HOI classes.

Blocks: :class:`~.backbone.Backbone`, :class:`~.position_encoding.PositionEmbeddingSine`, the DETR encoder
and instance decoder (inside the method's ``transformer`` container, reference names), the learned pair
queries with their position guide, the box heads (:class:`~.heads.MLP`), the optional
:class:`DenseHead` and :class:`~.query_selection.DenseQuerySelection`, the CLIP-text object and HOI
classifiers (:func:`~.heads.text_classifier`) and the :class:`~.clip_encoder.CLIPEncoder`. Parameter names
are the references' (``backbone.body.*``, ``input_proj``, ``query_embed_h``, ``transformer.encoder`` ...),
so their checkpoints load with prefix mappings.

Notation: B images, Q pair queries, D DETR width, E CLIP embedding width, S = h * w memory cells,
C_obj objects, C_hoi scored HOI classes, C_hoi_all all HOI classes, n decoder layers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..structures import HOIOutputs
from ..vocabulary import HOIVocabulary
from .backbone import Backbone
from .heads import LOGIT_SCALE_INIT, MLP, object_logits, text_classifier
from .label_space import VOCABULARY_KEYS, remap_vocabulary_rows, vocabulary_row_ids
from .position_encoding import PositionEmbeddingSine
from .prompt_embeddings import encode_prompts
from .query_selection import DenseQuerySelection

log = logging.getLogger(__name__)


@dataclass
class EncodedImage:
    """The detector stem's output.

    Attributes:
        memory: ``[B, S, D]`` encoder memory (cells row-major).
        mask: ``[B, S]`` bool, True on padding cells.
        pos: ``[B, S, D]`` positional encoding of the cells.
        grid: ``(h, w)`` of the feature map.
        dense_logits: ``[B, S, K]`` dense-head logits, or None without a dense head.
    """

    memory: Tensor
    mask: Tensor
    pos: Tensor
    grid: tuple[int, int]
    dense_logits: Tensor | None = None


@dataclass
class PairQueries:
    """Where the instance decoder starts.

    Attributes:
        pos: ``[B, 2Q, D]`` query positions (human slots, then object slots).
        content: ``[B, 2Q, D]`` initial query content (zeros, as DETR, unless selected from the memory).
        sub_offset, obj_offset: ``[B, Q, 4]`` box-logit offsets (0 unless selected from the memory).
    """

    pos: Tensor
    content: Tensor
    sub_offset: Tensor | float = 0.0
    obj_offset: Tensor | float = 0.0


class DenseHead(nn.Linear):
    """Per-cell classifier on the encoder memory: objects, the subject human, then verbs (beyond the reference).

    A :class:`torch.nn.Linear` (its parameters stay ``dense_class_embed.weight``/``bias``) whose output
    trains the encoder with dense supervision and lets :class:`DenseQuerySelection` start the slots from
    the best cells.

    Args:
        d_model: DETR width D.
        num_objects: C_obj.
        num_verbs: C_verb.

    Example:
        >>> head = DenseHead(d_model=8, num_objects=3, num_verbs=2)
        >>> head(torch.randn(1, 6, 8)).shape  # 3 objects + subject + 2 verbs per cell
        torch.Size([1, 6, 6])
    """

    def __init__(self, d_model: int, num_objects: int, num_verbs: int) -> None:
        super().__init__(d_model, num_objects + 1 + num_verbs)


class HOIModel(nn.Module):
    """Base of the HOI detectors: subclasses build ``clip`` and ``transformer``, then call the builders here.

    Construction, in this order (the order fixes the random initialisation):
    ``self.clip = CLIPEncoder(...)``, :meth:`_build_detector` (backbone, pair queries, the given
    ``transformer`` container with ``encoder`` and ``instance_decoder``, box heads, dense aids),
    :meth:`_encode_vocabulary`, then :meth:`_build_object_classifier` and :meth:`_build_hoi_classifier`.

    Attributes:
        vocabulary, zero_shot: label space and zero-shot split.
        train_hoi_ids: HOI classes of the training head (column order of training ``hoi_logits``).
        position_in_memory: add the positional encoding to the encoder input values too.
        aux_loss: return the outputs of every decoder layer.

    Example (the two subclasses of this library; see :class:`~.hoiclip.HOICLIP` for a forward pass):
        >>> from hoiclip_lightning.models import GENVLKT, HOICLIP
        >>> [c.__name__ for c in (HOICLIP, GENVLKT) if issubclass(c, HOIModel)]
        ['HOICLIP', 'GENVLKT']
    """

    position_in_memory: bool = False
    aux_loss: bool = True

    def __init__(self, vocabulary: HOIVocabulary, zero_shot: str = "default") -> None:
        super().__init__()
        self.vocabulary, self.zero_shot = vocabulary, zero_shot
        self.train_hoi_ids: list[int] = vocabulary.seen_hois(zero_shot)
        if not self.train_hoi_ids:
            raise ConfigurationError(f"zero-shot split {zero_shot!r} leaves no training HOI class")
        self.prompt_options: dict = {}
        self.dense_class_embed: DenseHead | None = None
        self.query_selector: DenseQuerySelection | None = None

    # ------------------------------------------------------------------ construction
    def _build_detector(self, backbone: Backbone, hidden_dim: int, num_queries: int,
                        transformer: nn.Module, dense_head: bool = False, query_selection: bool = False) -> None:
        """Detector stem, pair queries, ``transformer`` (built by ``transformer()``) and box heads.

        Args:
            backbone: the ResNet block.
            hidden_dim: DETR width D (even).
            num_queries: Q.
            transformer: a zero-argument callable building the container with ``encoder`` and
                ``instance_decoder`` (and the method's interaction decoder).
            dense_head: add :class:`DenseHead` on the memory.
            query_selection: start the slots from the dense head's best cells (needs ``dense_head``).
        """
        if query_selection and not dense_head:
            raise ConfigurationError("query_selection ranks memory cells with the dense head: set dense_aux_head: true")
        self.backbone = backbone
        self.position_embedding = PositionEmbeddingSine(hidden_dim // 2)
        self.input_proj = nn.Conv2d(backbone.num_channels, hidden_dim, kernel_size=1)
        self.query_embed_h = nn.Embedding(num_queries, hidden_dim)
        self.query_embed_o = nn.Embedding(num_queries, hidden_dim)
        self.pos_guided_embedd = nn.Embedding(num_queries, hidden_dim)
        nn.init.uniform_(self.pos_guided_embedd.weight)
        self.transformer = transformer()
        self.hum_bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.obj_bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        if dense_head:
            self.dense_class_embed = DenseHead(hidden_dim, self.vocabulary.num_objects, self.vocabulary.num_verbs)
        if query_selection:
            self.query_selector = DenseQuerySelection(hidden_dim, self.vocabulary.num_objects)

    def _encode_vocabulary(self, vocabulary: HOIVocabulary) -> tuple[Tensor, Tensor]:
        """Text embeddings of a vocabulary's prompts (``self.prompt_options``: templates and cache).

        Returns:
            ``hoi_text`` ``[C_hoi_all, E]`` and ``obj_text`` ``[C_obj + 1, E]``, float32, not normalised.
        """
        with torch.no_grad():
            return (encode_prompts(self.clip, vocabulary.hoi_prompts, **self.prompt_options),
                    encode_prompts(self.clip, vocabulary.object_prompts, **self.prompt_options))

    def _build_object_classifier(self, hidden_dim: int, obj_weight: Tensor, bias: bool, trainable: bool) -> None:
        """``obj_class_fc`` (D -> E + LayerNorm), the text classifier ``obj_visual_projection`` from
        ``obj_weight`` ``[C_obj + 1, E]`` and ``obj_logit_scale``."""
        embed = obj_weight.shape[1]
        self.obj_class_fc = nn.Sequential(nn.Linear(hidden_dim, embed), nn.LayerNorm(embed))
        self.obj_visual_projection = text_classifier(obj_weight, bias, trainable)
        self.obj_logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def _build_hoi_classifier(self, hoi_weight: Tensor, bias: bool, trainable: bool, eval_bias: bool) -> None:
        """``logit_scale``, the training head ``visual_projection`` (rows ``train_hoi_ids`` of ``hoi_weight``
        ``[C_hoi_all, E]``) and, in a zero-shot split, the frozen all-class head ``eval_visual_projection``."""
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))
        self.visual_projection = text_classifier(hoi_weight[self.train_hoi_ids], bias, trainable)
        self.eval_visual_projection: nn.Linear | None = None
        if self.is_zero_shot:
            self.eval_visual_projection = text_classifier(hoi_weight, bias=eval_bias, trainable=False)

    # ------------------------------------------------------------------ info
    @property
    def is_zero_shot(self) -> bool:
        """True when training scores fewer classes than the vocabulary has."""
        return len(self.train_hoi_ids) < self.vocabulary.num_hois

    def hoi_class_ids(self, all_classes: bool) -> list[int]:
        """Vocabulary HOI class of each ``hoi_logits`` column for the given ``all_classes`` setting."""
        return list(range(self.vocabulary.num_hois)) if all_classes else list(self.train_hoi_ids)

    def query_pos(self) -> Tensor:
        """``[2Q, D]`` query positions: human slots then object slots, each + the pair's position guide."""
        guide = self.pos_guided_embedd.weight
        return torch.cat([self.query_embed_h.weight + guide, self.query_embed_o.weight + guide])

    def param_group_of(self, name: str) -> str:
        """Optimiser group of a parameter: ``backbone``, ``clip`` or ``rest`` (see :meth:`param_groups`)."""
        if name.startswith("backbone."):
            return "backbone"
        return "clip" if name.startswith("clip.") else "rest"

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimiser group (``backbone``: lr_backbone, ``clip``: lr_clip, ``rest``: lr).

        Frozen parameters are left out; the groups are :meth:`param_group_names` (possibly empty).
        """
        groups: dict[str, list[nn.Parameter]] = {name: [] for name in self.param_group_names()}
        for name, param in self.named_parameters():
            if param.requires_grad:
                groups[self.param_group_of(name)].append(param)
        return groups

    def param_group_names(self) -> tuple[str, ...]:
        """The optimiser groups this model has."""
        return ("backbone", "clip", "rest")

    # ------------------------------------------------------------------ forward
    def encode(self, images: Tensor, pixel_mask: Tensor) -> EncodedImage:
        """Detector stem: backbone, input projection and encoder (and the dense head when present).

        Args:
            images: ``[B, 3, H, W]`` detector images; ``pixel_mask`` ``[B, H, W]`` bool, True on padding.
        """
        features, mask = self.backbone(images, pixel_mask)
        pos = self.position_embedding(mask)
        src = self.input_proj(features)
        if self.position_in_memory:
            src = src + pos.to(src.dtype)
        grid = (mask.shape[-2], mask.shape[-1])
        src = rearrange(src, "b d h w -> b (h w) d")
        pos = rearrange(pos, "b d h w -> b (h w) d").to(src.dtype)
        mask = rearrange(mask, "b h w -> b (h w)")
        memory = self.transformer.encoder(src, pos, mask)
        dense = self.dense_class_embed(memory) if self.dense_class_embed is not None else None
        return EncodedImage(memory=memory, mask=mask, pos=pos, grid=grid, dense_logits=dense)

    def pair_queries(self, enc: EncodedImage, pixel_mask: Tensor) -> PairQueries:
        """The learned pair queries, or the dense head's best cells with :class:`DenseQuerySelection`."""
        query_pos = self.query_pos()
        if self.query_selector is None:
            pos = query_pos.unsqueeze(0).expand(enc.memory.shape[0], -1, -1)
            return PairQueries(pos=pos, content=torch.zeros_like(pos))
        valid = ~pixel_mask
        image_sizes = torch.stack([valid.any(dim=2).sum(dim=1), valid.any(dim=1).sum(dim=1)], dim=1)
        stride = float(self.backbone.stride)
        selected = self.query_selector(enc.memory, enc.pos, enc.dense_logits, enc.mask, query_pos, grid=enc.grid,
                                       cell_size=(stride, stride), image_sizes=image_sizes)
        sub_offset, obj_offset = selected.box_offset.chunk(2, dim=1)
        return PairQueries(pos=selected.query_pos, content=selected.tgt, sub_offset=sub_offset, obj_offset=obj_offset)

    def decode_instances(self, enc: EncodedImage, queries: PairQueries) -> tuple[Tensor, Tensor]:
        """Instance decoder over the ``2Q`` slots -> human and object slot features ``[n, B, Q, D]`` each."""
        hs = self.transformer.instance_decoder(queries.content, enc.memory, enc.mask, enc.pos, queries.pos)
        num_queries = queries.pos.shape[1] // 2
        return hs[:, :, :num_queries], hs[:, :, num_queries:]

    def decode_interactions(self, enc: EncodedImage, h_hs: Tensor, o_hs: Tensor, clip_tokens: Tensor) -> Tensor:
        """Interaction features ``[n, B, Q, E]`` in CLIP's joint space (un-normalised); the method's branch."""
        raise NotImplementedError

    def classify_interactions(self, inter: Tensor, all_classes: bool) -> Tensor:
        """HOI logits ``[n, B, Q, C_hoi]`` of the interaction features; the method's classifier."""
        raise NotImplementedError

    def extra_outputs(self, inter: Tensor, clip_embeds: Tensor) -> tuple[dict, list[dict]]:
        """Method-specific fields of :class:`HOIOutputs`: for the last layer and for each auxiliary layer."""
        return {}, [{} for _ in range(inter.shape[0] - 1)]

    def hoi_head(self, all_classes: bool) -> nn.Linear:
        """The HOI text classifier in use: the all-class head in a zero-shot split when ``all_classes``."""
        use_eval = all_classes and self.eval_visual_projection is not None
        return self.eval_visual_projection if use_eval else self.visual_projection

    def forward(
        self, images: Tensor, pixel_mask: Tensor, clip_images: Tensor, all_classes: bool | None = None
    ) -> HOIOutputs:
        """Detect human-object interactions.

        Args:
            images: ``[B, 3, H, W]`` detector images (ImageNet-normalised, zero-padded).
            pixel_mask: ``[B, H, W]`` bool, True on padding.
            clip_images: ``[B, 3, S, S]`` CLIP views (normalised with ``self.clip.mean``/``std``).
            all_classes: score all vocabulary classes (True) or the training classes (False); ``None``:
                training classes in training mode, all classes in eval mode.

        Returns:
            :class:`HOIOutputs`: ``sub_boxes``/``obj_boxes`` ``[B, Q, 4]``, ``obj_logits`` ``[B, Q, C_obj + 1]``,
            ``hoi_logits`` ``[B, Q, C_hoi]``, ``clip_logits`` ``[B, C_hoi_all]``, ``clip_image_embeds``
            ``[B, E]`` and ``hoi_features`` ``[B, Q, E]`` (normalised), the dense head's outputs when present,
            the method's extra fields, and with ``aux_loss`` ``aux`` for layers ``0 .. n-2``.
        """
        if all_classes is None:
            all_classes = not self.training
        enc = self.encode(images, pixel_mask)
        clip_embeds, clip_tokens = self.clip.encode_image(clip_images)  # [B, E], [B, L, W]
        queries = self.pair_queries(enc, pixel_mask)
        h_hs, o_hs = self.decode_instances(enc, queries)
        inter = self.decode_interactions(enc, h_hs, o_hs, clip_tokens)  # [n_inter, B, Q, E]
        hoi = self.classify_interactions(inter, all_classes)  # [n_inter, B, Q, C_hoi]

        sub_boxes = (self.hum_bbox_embed(h_hs) + queries.sub_offset).sigmoid()  # [n, B, Q, 4]
        obj_boxes = (self.obj_bbox_embed(o_hs) + queries.obj_offset).sigmoid()
        obj_logits = object_logits(o_hs, self.obj_class_fc, self.obj_visual_projection, self.obj_logit_scale)
        clip_image_embeds = F.normalize(clip_embeds, dim=-1)
        with torch.no_grad():
            clip_logits = clip_image_embeds @ self.hoi_text_embeds.t()
        last, per_layer = self.extra_outputs(inter, clip_embeds)
        aux = None
        if self.aux_loss:
            aux = [HOIOutputs(sub_boxes=sub_boxes[i], obj_boxes=obj_boxes[i], obj_logits=obj_logits[i],
                              hoi_logits=hoi[i], **per_layer[i]) for i in range(sub_boxes.shape[0] - 1)]
        dense = {}
        if enc.dense_logits is not None:
            stride = float(self.backbone.stride)
            h, w = enc.grid
            dense = dict(dense_logits=rearrange(enc.dense_logits, "b (h w) c -> b h w c", h=h, w=w),
                         dense_valid=~rearrange(enc.mask, "b (h w) -> b h w", h=h, w=w),
                         dense_cell_size=(stride, stride))
        return HOIOutputs(
            sub_boxes=sub_boxes[-1], obj_boxes=obj_boxes[-1], obj_logits=obj_logits[-1], hoi_logits=hoi[-1],
            clip_logits=clip_logits, clip_image_embeds=clip_image_embeds, hoi_features=F.normalize(inter[-1], dim=-1),
            aux=aux, **dense, **last,
        )

    # ------------------------------------------------------------------ open vocabulary
    def set_vocabulary(self, vocabulary: HOIVocabulary, zero_shot: str = "default") -> None:
        """Switch to another label space without retraining (open-vocabulary inference).

        The text-derived parts are rebuilt for ``vocabulary``: the HOI classifier (``visual_projection`` and,
        for a zero-shot split, ``eval_visual_projection``), the object classifier, the TFE text embeddings
        ``hoi_text_embeds`` and the method's own vocabulary rows (:meth:`_set_method_vocabulary`). A class
        present in both label spaces (same verb and object names; objects and verbs by name) keeps its
        current row, trained or not (weight and bias); a new class gets its L2-normalised text embedding and
        a zero bias (:mod:`.label_space`). Everything else is untouched. Call it before configuring an
        optimiser: the classifier modules are replaced.

        Args:
            vocabulary: the new label space.
            zero_shot: zero-shot split of ``vocabulary`` whose seen classes form the training head.

        Example:
            >>> from hoiclip_lightning.models import HOICLIP, HOICLIPConfig
            >>> cfg = HOICLIPConfig(backbone="resnet10", hidden_dim=32, nheads=2, dim_feedforward=64, enc_layers=1,
            ...                     dec_layers=1, inter_dec_layers=1, inter_nheads=2, num_queries=2,
            ...                     clip_model="hoiclip-tiny", prompt_cache=False)
            >>> model = HOICLIP(HOIVocabulary.builtin("hico_det"), config=cfg)
            >>> model.set_vocabulary(HOIVocabulary.builtin("vcoco"))  # or HOIVocabulary.from_json("my_vocab.json")
            >>> tuple(model.visual_projection.weight.shape), tuple(model.verb_projection.weight.shape)
            ((263, 32), (29, 32))
        """
        train_ids = vocabulary.seen_hois(zero_shot)
        if not train_ids:
            raise ConfigurationError(f"zero-shot split {zero_shot!r} leaves no training HOI class")
        old_state = {k: v.detach().cpu() for k, v in self.state_dict().items() if k in VOCABULARY_KEYS}
        old_rows = vocabulary_row_ids(self.vocabulary, self.train_hoi_ids)
        fresh = self.vocabulary_tensors(vocabulary, train_ids)
        merged = remap_vocabulary_rows(old_state, old_rows, fresh, vocabulary_row_ids(vocabulary, train_ids))
        device = self.logit_scale.device
        trainable_text = self.visual_projection.weight.requires_grad
        self.vocabulary, self.zero_shot, self.train_hoi_ids = vocabulary, zero_shot, train_ids
        self.hoi_text_embeds = merged["hoi_text_embeds"].to(device)
        self.obj_visual_projection = linear_from_state(merged, "obj_visual_projection", trainable_text, device)
        self.visual_projection = linear_from_state(merged, "visual_projection", trainable_text, device)
        self.eval_visual_projection = (linear_from_state(merged, "eval_visual_projection", False, device)
                                       if self.is_zero_shot else None)
        if self.dense_class_embed is not None:
            dense = DenseHead(self.dense_class_embed.in_features, vocabulary.num_objects, vocabulary.num_verbs)
            self.dense_class_embed = _copy_into(dense, merged, "dense_class_embed", True, device)
        if self.query_selector is not None:  # the dense channels of the objects end at the new C_obj
            self.query_selector.num_obj_classes = vocabulary.num_objects
        self._set_method_vocabulary(vocabulary, merged, device)
        log.info("vocabulary set to %r (%d HOI classes, %d scored in training)", vocabulary.name,
                 vocabulary.num_hois, len(train_ids))

    def _set_method_vocabulary(self, vocabulary: HOIVocabulary, merged: dict[str, Tensor],
                               device: torch.device) -> None:
        """Rebuild the method's own vocabulary-dependent parts from ``merged`` (none here)."""

    def vocabulary_tensors(self, vocabulary: HOIVocabulary, train_hoi_ids: list[int]) -> dict[str, Tensor]:
        """Text-derived values of this model's :data:`VOCABULARY_KEYS` tensors for a vocabulary.

        Uses the CLIP text tower as it is now. Biases of the text classifiers are 0; rows of the dense head
        are freshly initialised.

        Returns:
            CPU tensors: ``hoi_text_embeds`` / ``eval_visual_projection.weight`` ``[C_hoi_all, E]`` (unit rows),
            ``visual_projection.weight`` ``[len(train_hoi_ids), E]``, ``obj_visual_projection.weight``
            ``[C_obj + 1, E]``, their biases, ``dense_class_embed.*`` and the method's rows
            (:meth:`_method_vocabulary_tensors`).
        """
        hoi_text, obj_text = (t.detach().float().cpu() for t in self._encode_vocabulary(vocabulary))
        hoi_n, obj_n = F.normalize(hoi_text, dim=-1), F.normalize(obj_text, dim=-1)
        out = {"hoi_text_embeds": hoi_n, "visual_projection.weight": hoi_n[train_hoi_ids].clone(),
               "obj_visual_projection.weight": obj_n}
        if self.visual_projection.bias is not None:
            out["visual_projection.bias"] = torch.zeros(len(train_hoi_ids))
        if self.obj_visual_projection.bias is not None:
            out["obj_visual_projection.bias"] = torch.zeros(obj_n.shape[0])
        if len(train_hoi_ids) < vocabulary.num_hois:
            out["eval_visual_projection.weight"] = hoi_n.clone()
            if self._eval_head_bias:
                out["eval_visual_projection.bias"] = torch.zeros(vocabulary.num_hois)
        if self.dense_class_embed is not None:
            dense = DenseHead(self.dense_class_embed.in_features, vocabulary.num_objects, vocabulary.num_verbs)
            out["dense_class_embed.weight"], out["dense_class_embed.bias"] = dense.weight.detach(), dense.bias.detach()
        out.update(self._method_vocabulary_tensors(vocabulary, hoi_text, obj_text))
        return out

    #: whether the zero-shot evaluation head has a bias (GEN-VLKT: yes, HOICLIP: no)
    _eval_head_bias: bool = False

    def _method_vocabulary_tensors(self, vocabulary: HOIVocabulary, hoi_text: Tensor,
                                   obj_text: Tensor) -> dict[str, Tensor]:
        """The method's own :data:`VOCABULARY_KEYS` tensors (none here)."""
        return {}


def _copy_into(layer: nn.Linear, merged: dict[str, Tensor], name: str, trainable: bool,
               device: torch.device) -> nn.Linear:
    with torch.no_grad():
        layer.weight.copy_(merged[f"{name}.weight"])
        if layer.bias is not None:
            layer.bias.copy_(merged[f"{name}.bias"])
    return layer.requires_grad_(trainable).to(device)


def linear_from_state(merged: dict[str, Tensor], name: str, trainable: bool, device: torch.device) -> nn.Linear:
    """A linear layer holding ``merged[name.weight]`` (and its bias when present)."""
    weight = merged[f"{name}.weight"]
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=f"{name}.bias" in merged)
    return _copy_into(layer, merged, name, trainable, device)
