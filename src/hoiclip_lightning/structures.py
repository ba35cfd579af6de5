"""Dataclasses that carry data between the parts of the library.

Notation: B images, Q pair queries, N ground-truth pairs of an image, M annotated HOI instances of an
image, K predicted triplets, C_obj object classes (without the no-object slot), C_verb verbs, C_hoi HOI
classes, E CLIP embedding width. Boxes are either ``cxcywh`` normalised to [0, 1] by the (augmented)
image size, or ``xyxy`` in pixels of the original image; every field says which.

The dataclasses are mutable on purpose: Lightning's ``apply_to_collection`` (used to move batches to
the device) rebuilds dataclasses field by field and refuses frozen ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class HOIGroundTruth:
    """Annotated HOI instances of one image, in original-image pixels (used by the metrics).

    One row per annotated HOI instance (not merged per pair; duplicates are kept as annotated).

    Attributes:
        image_id: dataset-wide image index (used to de-duplicate under DDP padding).
        sub_boxes: ``[M, 4]`` float xyxy, pixels of the original image, as in the annotation file.
        obj_boxes: ``[M, 4]`` float xyxy pixels; all zeros where the HOI has no object (V-COCO roles).
        obj_labels: ``[M]`` long, contiguous object index (``vocab.no_object_index`` when no object).
        verb_labels: ``[M]`` long, contiguous verb index.
        hoi_labels: ``[M]`` long, HOI class index in the full vocabulary (all classes, seen and unseen).
        size: ``(height, width)`` of the original image.
        vcoco: what the official V-COCO files say about the image (every COCO person, who is outside
            V-COCO, role boxes), when the data module was pointed at them; :class:`VCOCORoleAP` then
            follows ``vsrl_eval.py`` on it instead of on the rows above. ``None`` otherwise.
    """

    image_id: int
    sub_boxes: Tensor
    obj_boxes: Tensor
    obj_labels: Tensor
    verb_labels: Tensor
    hoi_labels: Tensor
    size: tuple[int, int] = (0, 0)
    vcoco: VCOCOGroundTruth | None = None

    @staticmethod
    def empty(image_id: int, size: tuple[int, int] = (0, 0)) -> HOIGroundTruth:
        z4 = torch.zeros(0, 4)
        zl = torch.zeros(0, dtype=torch.long)
        return HOIGroundTruth(image_id, z4, z4.clone(), zl, zl.clone(), zl.clone(), size)

    def __len__(self) -> int:
        return int(self.hoi_labels.shape[0])


@dataclass
class VCOCOGroundTruth:
    """One image of a V-COCO split as ``s-gupta/v-coco`` ``vsrl_eval.py`` sees it (official files).

    Built by :func:`hoiclip_lightning.data.load_vcoco_official`. The persons are every valid COCO
    person annotation of the image, in the order of the COCO instances file (annotations flagged
    ``ignore``, with zero area or with a degenerate box are left out, as ``vsrl_eval`` does); a
    detection is matched to the first person of largest overlap among them. Boxes follow ``vsrl_eval``:
    ``x2 = x + max(0, w - 1)``, ``y2 = y + max(0, h - 1)``, every coordinate clipped to
    ``[0, width - 1]`` / ``[0, height - 1]``, stored as float32.

    Attributes:
        image_id: the id that pairs this image with :attr:`HOIPrediction.image_id` (the loader puts the
            COCO id here; a dataset replaces it with its own index).
        coco_image_id: COCO image id; images are evaluated in ascending COCO id, as ``vsrl_eval`` does.
        person_boxes: ``[P, 4]`` float32 xyxy pixels, the convention above.
        person_ignored: ``[P]`` bool, True for persons without V-COCO annotation (crowd boxes and
            persons left out of V-COCO): a detection whose best person is one of them is neither a true
            nor a false positive.
        action_person: ``[A]`` long, index into ``person_boxes`` of each (person, action-role) row; a
            V-COCO person without any row does no action (a detection matched to it is a false positive).
        action_verbs: ``[A]`` long, action-role class (verb index of the vocabulary).
        role_boxes: ``[A, 4]`` float32 xyxy pixels of the role object, all ``-1`` where the person does the
            action without an object for this role (``vsrl_eval``'s marker).
        size: ``(height, width)`` of the image.
    """

    image_id: int
    coco_image_id: int
    person_boxes: Tensor
    person_ignored: Tensor
    action_person: Tensor
    action_verbs: Tensor
    role_boxes: Tensor
    size: tuple[int, int] = (0, 0)

    @property
    def num_persons(self) -> int:
        return int(self.person_boxes.shape[0])

    def __len__(self) -> int:
        return int(self.action_verbs.shape[0])


@dataclass
class HOITarget:
    """Training target of one image: unique human-object pairs after augmentation.

    Attributes:
        sub_boxes: ``[N, 4]`` float cxcywh normalised by the augmented image size.
        obj_boxes: ``[N, 4]`` float cxcywh normalised; all zeros where the pair has no object.
        obj_labels: ``[N]`` long, contiguous object index (``vocab.no_object_index`` when none).
        verb_labels: ``[N, C_verb]`` float multi-hot.
        hoi_labels: ``[N, C_hoi]`` float multi-hot over the *training* HOI classes (seen classes only
            in zero-shot training; all classes otherwise).
        image_id: dataset-wide image index.
        orig_size: ``[2]`` long ``(height, width)`` of the original image.
        size: ``[2]`` long ``(height, width)`` of the augmented image (before batch padding).
        gt: annotations in original pixels, for evaluation (``None`` if not requested).
        file_name: the image file name, for error messages and prediction dumps.
    """

    sub_boxes: Tensor
    obj_boxes: Tensor
    obj_labels: Tensor
    verb_labels: Tensor
    hoi_labels: Tensor
    image_id: int
    orig_size: Tensor
    size: Tensor
    gt: HOIGroundTruth | None = None
    file_name: str = ""

    def __len__(self) -> int:
        return int(self.obj_labels.shape[0])


@dataclass
class HOIBatch:
    """A collated batch.

    Attributes:
        images: ``[B, 3, H, W]`` float, ImageNet-normalised, zero-padded to the largest image.
        pixel_mask: ``[B, H, W]`` bool, True on padding.
        clip_images: ``[B, 3, S, S]`` float, the CLIP view (S = CLIP input size, 224 for ViT-B/32).
        targets: one :class:`HOITarget` per image.
    """

    images: Tensor
    pixel_mask: Tensor
    clip_images: Tensor
    targets: list[HOITarget] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class HOIOutputs:
    """Raw model outputs (last decoder layer, plus auxiliary layers).

    Attributes:
        sub_boxes: ``[B, Q, 4]`` cxcywh normalised (sigmoid output).
        obj_boxes: ``[B, Q, 4]`` cxcywh normalised.
        obj_logits: ``[B, Q, C_obj + 1]``; the last slot is "no object".
        hoi_logits: ``[B, Q, C_hoi]`` over the classes the model currently scores (the training classes
            in training, all classes at evaluation in zero-shot settings).
        clip_logits: ``[B, C_hoi_all]`` cosine similarity of CLIP's global image embedding with every
            HOI prompt embedding (for the training-free enhancement); ``None`` if CLIP is off.
        clip_image_embeds: ``[B, E]`` L2-normalised CLIP image embedding; ``None`` if CLIP is off.
        hoi_features: ``[B, Q, E]`` L2-normalised interaction features; ``None`` if not computed.
        aux: outputs of the earlier decoder layers (same fields, ``aux=None``), first layer first.
        dense_logits: ``[B, h, w, C_obj + 1 + C_verb]`` per-cell logits of the optional dense auxiliary
            head on the encoder memory (object classes, "subject human", verbs); ``None`` when off.
        dense_valid: ``[B, h, w]`` bool, True on cells of the image (not padding).
        dense_cell_size: ``(cell height, cell width)`` of the feature map in input pixels (the backbone stride).
        mimic_features: ``[B, Q, E]`` un-normalised interaction features that GEN-VLKT's image-level mimic
            loss pulls (averaged over queries) towards ``mimic_target``; ``None`` for models without it.
        mimic_target: ``[B, E]`` CLIP's global image embedding (un-normalised), the mimic loss's target.
    """

    sub_boxes: Tensor
    obj_boxes: Tensor
    obj_logits: Tensor
    hoi_logits: Tensor
    clip_logits: Tensor | None = None
    clip_image_embeds: Tensor | None = None
    hoi_features: Tensor | None = None
    aux: list[HOIOutputs] | None = None
    dense_logits: Tensor | None = None
    dense_valid: Tensor | None = None
    dense_cell_size: tuple[float, float] | None = None
    mimic_features: Tensor | None = None
    mimic_target: Tensor | None = None


@dataclass
class HOIPrediction:
    """Detected triplets of one image, in original-image pixels (what the metrics consume).

    Attributes:
        image_id: dataset-wide image index.
        sub_boxes: ``[K, 4]`` float xyxy pixels of the original image.
        obj_boxes: ``[K, 4]`` float xyxy pixels.
        obj_labels: ``[K]`` long, object index of the triplet's HOI class.
        verb_labels: ``[K]`` long, verb index of the triplet's HOI class.
        hoi_labels: ``[K]`` long, HOI class in the full vocabulary.
        scores: ``[K]`` float, higher is more confident.
    """

    image_id: int
    sub_boxes: Tensor
    obj_boxes: Tensor
    obj_labels: Tensor
    verb_labels: Tensor
    hoi_labels: Tensor
    scores: Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])
