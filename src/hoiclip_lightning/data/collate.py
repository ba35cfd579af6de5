"""Collate samples into an :class:`~hoiclip_lightning.structures.HOIBatch` (zero padding + mask).

Examples:
    >>> import torch
    >>> from hoiclip_lightning.structures import HOITarget
    >>> t = HOITarget(torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
    ...               torch.zeros(0, 2), torch.zeros(0, 3), 0, torch.tensor([2, 3]), torch.tensor([2, 3]))
    >>> batch = collate_hoi([(torch.ones(3, 2, 3), torch.zeros(3, 4, 4), t),
    ...                      (torch.ones(3, 4, 1), torch.zeros(3, 4, 4), t)])
    >>> batch.images.shape, batch.pixel_mask[1, 0].tolist()
    (torch.Size([2, 3, 4, 3]), [False, True, True])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..structures import HOIBatch, HOITarget


def pad_images(images: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Zero-pad ``[3, H_i, W_i]`` images to ``[B, 3, H, W]`` (bottom/right); mask ``[B, H, W]`` True on padding."""
    c = images[0].shape[0]
    h = max(int(im.shape[1]) for im in images)
    w = max(int(im.shape[2]) for im in images)
    out = images[0].new_zeros(len(images), c, h, w)
    mask = torch.ones(len(images), h, w, dtype=torch.bool)
    for i, im in enumerate(images):
        out[i, :, : im.shape[1], : im.shape[2]] = im
        mask[i, : im.shape[1], : im.shape[2]] = False
    return out, mask


def collate_hoi(samples: Sequence[tuple[Tensor, Tensor, HOITarget]]) -> HOIBatch:
    """``(image, clip_image, target)`` samples -> :class:`HOIBatch` (picklable; works with worker processes)."""
    images, mask = pad_images([s[0] for s in samples])
    clip = torch.stack([s[1] for s in samples])
    return HOIBatch(images=images, pixel_mask=mask, clip_images=clip, targets=[s[2] for s in samples])
