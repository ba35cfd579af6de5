"""Low-data subsets, zero-shot filtering of the training set, and per-class training counts.

All functions are pure: the same records, fraction and seed give the same result in every process
(no global random state is read or changed).

Examples:
    >>> kept = subsample_indices(num_images=10, fraction=0.3, seed=0)
    >>> len(kept), kept == sorted(kept)
    (3, True)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..vocabulary import RARE_THRESHOLD
from .formats import ImageRecord

log = logging.getLogger(__name__)


@dataclass
class SubsetStats:
    """What a subset keeps: images, HOI instances, HOI classes with at least one instance."""

    images: int
    hoi_instances: int
    classes_present: int


def subset_stats(records: Sequence[ImageRecord]) -> SubsetStats:
    classes: set[int] = set()
    instances = 0
    for r in records:
        instances += r.num_hois
        classes.update(int(c) for c in r.hois[:, 3])
    return SubsetStats(len(records), instances, len(classes))


def subsample_indices(num_images: int, fraction: float, seed: int = 0) -> list[int]:
    """Sorted indices of ``round(fraction * num_images)`` images (at least one) drawn without replacement.

    Deterministic in ``(num_images, fraction, seed)``; uses its own ``numpy`` generator.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigurationError(f"train_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0 or num_images == 0:
        return list(range(num_images))
    k = max(1, int(round(fraction * num_images)))
    rng = np.random.Generator(np.random.PCG64(seed))
    return sorted(int(i) for i in rng.permutation(num_images)[:k])


def subsample_records(
    records: Sequence[ImageRecord], fraction: float, seed: int = 0
) -> tuple[list[int], SubsetStats]:
    """Seeded image-level subsample of a training set.

    Returns:
        The kept indices into ``records`` (sorted) and the statistics of the kept subset (also logged).
    """
    kept = subsample_indices(len(records), fraction, seed)
    stats = subset_stats([records[i] for i in kept])
    log.info(
        "train_fraction=%g seed=%d: kept %d of %d images, %d HOI instances, %d HOI classes present",
        fraction, seed, stats.images, len(records), stats.hoi_instances, stats.classes_present,
    )
    return kept, stats


def zero_shot_filter(
    records: Sequence[ImageRecord], unseen_hoi_ids: Sequence[int], drop_empty: bool = True
) -> list[ImageRecord]:
    """Remove unseen HOIs from training records (reference behaviour, quirk D1).

    A (subject_id, object_id) pair carrying at least one unseen HOI loses **all** of its HOIs (its
    seen ones too); its boxes stay in the image as background. With ``drop_empty`` images left without
    any HOI are dropped (HICO-DET training drops images without HOIs in every setting; V-COCO keeps
    them). Records are copied, the inputs are not modified.
    """
    unseen = {int(c) for c in unseen_hoi_ids}
    out: list[ImageRecord] = []
    for r in records:
        hois = r.hois
        if unseen and hois.shape[0]:
            bad_pairs = {(int(s), int(o)) for s, o, _, c in hois if int(c) in unseen}
            mask = np.array([(int(s), int(o)) not in bad_pairs for s, o, _, _ in hois], dtype=bool)
            if not mask.all():
                r = replace(r, hois=hois[mask])
        if drop_empty and r.num_hois == 0:
            continue
        out.append(r)
    return out


def count_hoi_instances(records: Sequence[ImageRecord], num_hois: int) -> Tensor:
    """``[C_hoi]`` long: annotated HOI instances per class (every annotation counts, duplicates too)."""
    counts = np.zeros(num_hois, dtype=np.int64)
    for r in records:
        np.add.at(counts, r.hois[:, 3], 1)
    return torch.from_numpy(counts)


def rare_hoi_ids(counts: Tensor, threshold: int = RARE_THRESHOLD) -> list[int]:
    """HOI classes with fewer than ``threshold`` training instances (zero included)."""
    return [int(c) for c in torch.nonzero(counts < threshold).flatten()]
