"""Typed configuration of the HOICLIP model, its weight sources, its losses and its post-processing.

Defaults are the paper's HICO-DET settings (see ``docs/configuration.md``). Each dataclass is read by
jsonargparse, so every field is a YAML key, e.g. ``model.init_args.net.num_queries: 64``.
Quirks of the reference implementation that change the numbers are reproduced by default and each
has a switch that gives the intended behaviour (fields marked *quirk*).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class WeightSources:
    """Where a model's pretrained weights are read from, apart from its architecture.

    A model reads these files once, when it is built; a checkpoint holds every weight in its state dict,
    so the LightningModule does not store them in its hyper-parameters and a model rebuilt from a
    checkpoint reads none of them. ``None`` everywhere (the default) reads nothing: a random CLIP, a
    randomly initialised detector and text-derived verb rows, so no construction ever downloads or
    reads a file unless asked. In YAML: ``model.init_args.weights.clip_pretrained: openai``.

    Attributes:
        clip_pretrained: open_clip pretrained tag (``openai``) or a local weights file (a ``hoiclip
            clip-pretrain`` file, OpenAI's TorchScript archive such as ``ViT-B-32.pt``, read without running
            its code, or a state dict) for the architecture's ``clip_model``; ``None``: random.
        detr_checkpoint: path to the public DETR checkpoint (``detr-r50-e632da11.pth``), its two-branch
            conversion or a ``hoiclip export-detector`` file; loaded non-strictly after construction.
            ``None``: random init.
        verb_embeddings: ``[C_verb, E]`` verb representation file (``hoiclip verb-embeddings`` output or the
            official ``verb.pth``) for HOICLIP's verb classifier; ``None``: derived from text embeddings
            (mean of HOI prompt minus object prompt per verb), which needs no image pass.

    Example:
        >>> WeightSources(clip_pretrained="openai")
        WeightSources(clip_pretrained='openai', detr_checkpoint=None, verb_embeddings=None)
    """

    clip_pretrained: str | None = None
    detr_checkpoint: str | None = None
    verb_embeddings: str | None = None


@dataclass
class HOICLIPConfig:
    """Architecture of :class:`~hoiclip_lightning.models.HOICLIP`.

    Attributes:
        backbone: torchvision ResNet depth (frozen batch norm; stem and layer1 frozen); ``resnet10`` (one
            block per stage) is a cheap variant for CPU tests and the quickstart.
        train_backbone: train ResNet layer2-4 (at ``lr_backbone``); False freezes the whole ResNet.
        backbone_norm: ``frozen_bn`` for pretrained (DETR) weights as in the paper; ``batch_norm`` or
            ``group_norm`` to train a randomly initialised ResNet from scratch (all stages trained).
        hidden_dim: DETR width d.
        nheads: attention heads of the DETR encoder and instance decoder.
        dim_feedforward: FFN width of the DETR layers and of the interaction decoder.
        dropout: dropout of every transformer layer.
        enc_layers: DETR encoder layers.
        dec_layers: instance-decoder layers.
        inter_dec_layers: interaction-decoder layers (must equal ``dec_layers`` for auxiliary losses).
        inter_nheads: heads of the interaction decoder (width W of the CLIP model).
        num_queries: human-object pair queries Q.
        clip_model: open_clip model name (``ViT-B-32`` in the paper), or ``hoiclip-tiny`` / ``hoiclip-small``
            (small models registered by this library, for tests and the quickstart). Its weights are a
            weight source (:class:`WeightSources`), not part of the architecture.
        clip_quick_gelu: the CLIP's activation. ``None`` decides from the weights: QuickGELU for OpenAI's
            weights (the ``openai`` tag, a TorchScript archive, a state dict with the archive's extra keys),
            the architecture's own otherwise; a plain state dict for an architecture OpenAI released with
            QuickGELU but open_clip defines with GELU (``ViT-B-32``) is refused as ambiguous. ``True`` forces
            QuickGELU, ``False`` keeps the architecture's activation (refused for OpenAI's weights).
        clip_precision: dtype the frozen CLIP towers run in (the reference runs fp16 on GPU).
        freeze_clip: keep CLIP frozen (paper); False trains it at ``lr_clip``.
        clip_retrieval: the interaction decoder cross-attends CLIP's spatial tokens (paper). False is the
            ablation "w/o CLIP retrieval": only the detector memory is attended.
        text_init: initialise the HOI and object classifiers from CLIP text embeddings (paper); False
            initialises them randomly (ablation).
        verb_adapter: use the verb adapter and the visual-semantic-arithmetic verb classifier (paper); its
            initial rows come from ``WeightSources.verb_embeddings`` or from text embeddings.
        verb_weight: weight of the verb term in the HOI logits (0.5 HICO-DET, 0.1 V-COCO).
        verb_to_hoi_columns: *reference quirk, off by default* how the verb logits are spread over the HOI
            columns. ``hoi`` (correct): verb v adds to every HOI class (v, o). ``object``: the reference's
            V-COCO matrix, filled at ``[verb, object index]``, so verb v adds to the HOI columns whose
            numbers are the object indices o of its classes. The released V-COCO weights were trained with
            it; ``hoiclip convert-official`` sets it for them (see ``docs/reference-differences.md``). New
            training keeps ``hoi``.
        prompt_templates: ``None`` embeds the vocabulary's prompts verbatim (paper). A list of format strings
            with one ``{}`` (filled with the prompt minus its leading "a photo of ") embeds each prompt with
            every template and averages the normalised embeddings (prompt ensembling, beyond the reference).
        prompt_cache: cache prompt embeddings on disk, keyed by CLIP model, weights, templates and prompts
            (never for a random CLIP, ``weights.clip_pretrained: null``); see ``docs/knowledge.md``.
        prompt_cache_dir: cache folder; ``None``: ``$HOICLIP_CACHE`` or ``~/.cache/hoiclip_lightning``.
        train_verb_classifier: *quirk* the verb classifier is fine-tuned in the reference; False freezes it.
        frozen_random_bias: *quirk* the text classifiers keep a frozen random bias; False: no bias.
        shared_fusion_attention: *quirk* the interaction decoder reuses its CLIP cross-attention for the
            detector memory without padding mask; False gives that branch its own attention and mask.
        padding_invariant: an image gets the same outputs (to float rounding) whatever the images it is
            batched with: the backbone masks the zero padding inside its layers and uses the exact
            feature extent, and the shared memory attention of quirk Q2 takes the padding mask. For an
            image without padding (batch size 1) the outputs equal the reference's. False reproduces the
            reference on padded batches too, where scores depend on the batch (and so on the eval batch
            size and the number of processes); see ``docs/metrics.md``.
        aux_loss: return auxiliary outputs of every decoder layer.
        dense_aux_head: *beyond the reference*, off in the paper configs: a linear head on every cell of the
            encoder memory predicts which object classes, subject humans and verbs cover the cell,
            trained with ``loss.dense_loss_coef``. It gives the backbone and encoder a direct,
            localised signal and lets a detector trained from scratch (the CPU quickstart) leave the
            "predict the dataset prior" plateau in hundreds rather than tens of thousands of steps.
        position_in_memory: *beyond the reference*, off in the paper configs: add the sine positional
            encoding to the projected features before the encoder, so the memory's content (the values
            the decoders read) says where each cell is. DETR gives positions only to queries and keys
            and relies on a pretrained ResNet's implicit position cues; a small backbone trained from
            scratch has none, and its box heads cannot localise without this.
        query_selection: *beyond the reference*, off in the paper configs, needs ``dense_aux_head``: start
            human slot i and object slot i of the instance decoder from the i-th best "subject human" and
            "any object" cells of the dense head (content from the cell's memory, the cell's position
            added to the query embedding, box centres relative to the cell centre), as two-stage DETRs
            do. Learned constant queries otherwise predict the same boxes for every image until the
            cross-attention has learned where to look; see :mod:`hoiclip_lightning.models.query_selection`.
    """

    backbone: Literal["resnet10", "resnet18", "resnet34", "resnet50", "resnet101"] = "resnet50"
    train_backbone: bool = True
    backbone_norm: Literal["frozen_bn", "batch_norm", "group_norm"] = "frozen_bn"
    hidden_dim: int = 256
    nheads: int = 8
    dim_feedforward: int = 2048
    dropout: float = 0.1
    enc_layers: int = 6
    dec_layers: int = 3
    inter_dec_layers: int = 3
    inter_nheads: int = 8
    num_queries: int = 64
    clip_model: str = "ViT-B-32"
    clip_quick_gelu: bool | None = None
    clip_precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    freeze_clip: bool = True
    clip_retrieval: bool = True
    text_init: bool = True
    verb_adapter: bool = True
    verb_weight: float = 0.5
    verb_to_hoi_columns: Literal["hoi", "object"] = "hoi"
    prompt_templates: list[str] | None = None
    prompt_cache: bool = True
    prompt_cache_dir: str | None = None
    train_verb_classifier: bool = True
    frozen_random_bias: bool = True
    shared_fusion_attention: bool = True
    padding_invariant: bool = True
    aux_loss: bool = True
    dense_aux_head: bool = False
    position_in_memory: bool = False
    query_selection: bool = False


@dataclass
class LossConfig:
    """Hungarian matching costs and loss weights (reference defaults).

    Attributes:
        cost_hoi: matching cost weight of the HOI term.
        cost_obj_class: matching cost weight of the object class.
        cost_bbox: matching cost weight of the L1 box distance.
        cost_giou: matching cost weight of the GIoU.
        hoi_loss_coef: weight of the focal HOI loss.
        obj_loss_coef: weight of the object cross-entropy.
        bbox_loss_coef: weight of the L1 box losses (human and object).
        giou_loss_coef: weight of the GIoU losses (human and object).
        eos_coef: cross-entropy weight of the no-object class.
        focal_alpha: alpha of the focal HOI loss (gamma is 2).
        dense_loss_coef: weight of the dense auxiliary loss (only with ``net.dense_aux_head``).
        dense_verb_loss: the dense loss includes the per-cell verb channels. False supervises only objects and
            subject humans: detector pretraining (``configs/detector_pretrain.yaml``, with
            ``hoi_loss_coef: 0``) then learns boxes and object classes and never sees a verb label.
        mimic_loss_coef: weight of GEN-VLKT's image-level mimic loss (per decoder layer, 20 in its scripts);
            only used when the model returns ``mimic_features`` (HOICLIP never does).
    """

    cost_hoi: float = 1.0
    cost_obj_class: float = 1.0
    cost_bbox: float = 2.5
    cost_giou: float = 1.0
    hoi_loss_coef: float = 2.0
    obj_loss_coef: float = 1.0
    bbox_loss_coef: float = 2.5
    giou_loss_coef: float = 1.0
    eos_coef: float = 0.1
    focal_alpha: float = 0.5
    dense_loss_coef: float = 1.0
    dense_verb_loss: bool = True
    mimic_loss_coef: float = 20.0


@dataclass
class PostProcessConfig:
    """Evaluation-time scoring.

    Attributes:
        topk: triplets kept per image.
        score_mode: *quirk* ``additive`` ranks by ``sigmoid(hoi) + p_obj**2`` (reference);
            ``multiplicative`` by ``sigmoid(hoi) * p_obj``. With TFE the boost is added to ``sigmoid(hoi)``,
            so additive scores reach ``2 + tfe_weight * sigmoid(1)`` (2.73), not 2
            (:func:`~hoiclip_lightning.models.postprocess.score_range`).
        object_score: *quirk* ``sigmoid`` of the object logits (reference) or ``softmax``.
        use_nms: per-class triplet NMS.
        nms_threshold, nms_alpha, nms_beta: suppress when ``IoU_h**alpha * IoU_o**beta > threshold``.
        tfe: training-free enhancement at evaluation.
        tfe_topk: CLIP's top-k HOI classes per image that get the boost.
        tfe_weight: weight of the CLIP term.
        tfe_mode: *quirk* ``reference`` masks before the sigmoid (non-top-k classes get +0.5·weight);
            ``intended`` adds ``weight·sigmoid(cos)`` to the top-k classes only.
    """

    topk: int = 100
    score_mode: Literal["additive", "multiplicative"] = "additive"
    object_score: Literal["sigmoid", "softmax"] = "sigmoid"
    use_nms: bool = True
    nms_threshold: float = 0.7
    nms_alpha: float = 1.0
    nms_beta: float = 0.5
    tfe: bool = True
    tfe_topk: int = 10
    tfe_weight: float = 1.0
    tfe_mode: Literal["reference", "intended"] = "reference"


@dataclass
class OptimizerConfig:
    """AdamW with three parameter groups and a step schedule (reference defaults).

    Attributes:
        lr: learning rate of everything but the backbone and CLIP.
        lr_backbone: learning rate of the ResNet.
        lr_clip: learning rate of CLIP when it is not frozen.
        weight_decay: AdamW weight decay (all groups).
        lr_drop_epochs: epochs at which the learning rate is multiplied by ``lr_drop_gamma``.
        lr_drop_gamma: factor of each drop.
    """

    lr: float = 1e-4
    lr_backbone: float = 1e-5
    lr_clip: float = 1e-5
    weight_decay: float = 1e-4
    lr_drop_epochs: list[int] = field(default_factory=lambda: [60])
    lr_drop_gamma: float = 0.1
