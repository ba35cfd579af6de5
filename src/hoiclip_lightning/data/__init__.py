"""Data: annotation formats, datasets, transforms, subsets, collation and the Lightning datamodule."""

from .collate import collate_hoi, pad_images
from .datamodule import HOIDataModule
from .datasets import HOIDataset, load_image
from .formats import AnnotationSet, ImageRecord, load_annotations, load_verb_object_matrix
from .global_batch import BatchPlan, plan_global_batch
from .subsets import (
    SubsetStats,
    count_hoi_instances,
    rare_hoi_ids,
    subsample_indices,
    subsample_records,
    subset_stats,
    zero_shot_filter,
)
from .synthetic import SyntheticSummary, generate_synthetic_dataset, resize_split_images, synthetic_vocabulary
from .transforms import (
    CLIP_MEAN,
    CLIP_STD,
    DETR_SCALES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipTransform,
    HOIEvalTransform,
    HOITrainTransform,
    HorizontalFlip,
    RandomSizeCrop,
    ResizeShortSide,
    resized_size,
    to_normalized_tensor,
)
from .vcoco_official import attach_vcoco_official, coco_image_id, find_vcoco_official_files, load_vcoco_official

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DETR_SCALES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AnnotationSet",
    "BatchPlan",
    "ClipTransform",
    "HOIDataModule",
    "HOIDataset",
    "HOIEvalTransform",
    "HOITrainTransform",
    "HorizontalFlip",
    "ImageRecord",
    "RandomSizeCrop",
    "ResizeShortSide",
    "SubsetStats",
    "SyntheticSummary",
    "attach_vcoco_official",
    "coco_image_id",
    "collate_hoi",
    "generate_synthetic_dataset",
    "resize_split_images",
    "count_hoi_instances",
    "load_annotations",
    "find_vcoco_official_files",
    "load_image",
    "load_vcoco_official",
    "load_verb_object_matrix",
    "pad_images",
    "plan_global_batch",
    "rare_hoi_ids",
    "resized_size",
    "subsample_indices",
    "subsample_records",
    "subset_stats",
    "synthetic_vocabulary",
    "to_normalized_tensor",
    "zero_shot_filter",
]
