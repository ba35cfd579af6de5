"""Joint image/box transforms (DETR recipe with colour jitter) and the CLIP view.

The geometric transforms take and return ``(image, boxes, keep)``: a PIL image, ``[n, 4]`` float xyxy
pixel boxes and ``[n]`` long indices of the surviving boxes into the boxes given to the first
transform. A box that a crop leaves empty is dropped (its index disappears from ``keep``), so pairs
that refer to it can be dropped by the caller.

Examples:
    >>> import torch
    >>> from PIL import Image
    >>> img = Image.new("RGB", (40, 20))
    >>> out, boxes, keep = ResizeShortSide(10)(img, torch.tensor([[0.0, 0.0, 20.0, 10.0]]))
    >>> out.size, boxes.tolist(), keep.tolist()
    ((20, 10), [[0.0, 0.0, 10.0, 5.0]], [0])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import ColorJitter
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DETR_SCALES = tuple(range(480, 801, 32))

Sample = tuple[Image.Image, Tensor, Tensor]


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[low, high]`` (inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def _choice(values: Sequence[int], generator: torch.Generator | None) -> int:
    return int(values[_randint(0, len(values) - 1, generator)])


def resized_size(width: int, height: int, size: int, max_size: int | None = None) -> tuple[int, int]:
    """``(width, height)`` after resizing the short side to ``size`` with the long side at most ``max_size``."""
    short, long = min(width, height), max(width, height)
    if max_size is not None and long * size > max_size * short:
        size = int(round(max_size * short / long))
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def _keep_all(boxes: Tensor) -> Tensor:
    return torch.arange(boxes.shape[0], dtype=torch.long)


class HorizontalFlip:
    """Flip left-right with probability ``p``; only the box x coordinates change."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: Image.Image, boxes: Tensor, keep: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Sample:
        keep = _keep_all(boxes) if keep is None else keep
        if torch.rand(1, generator=generator).item() >= self.p:
            return image, boxes, keep
        w = image.width
        flipped = boxes.clone()
        flipped[:, 0] = w - boxes[:, 2]
        flipped[:, 2] = w - boxes[:, 0]
        return F.horizontal_flip(image), flipped, keep


class ResizeShortSide:
    """Resize the short side to ``size`` (a random choice when a list), long side at most ``max_size``."""

    def __init__(self, size: int | Sequence[int], max_size: int | None = None) -> None:
        self.sizes = [int(size)] if isinstance(size, int) else [int(s) for s in size]
        self.max_size = max_size

    def __call__(self, image: Image.Image, boxes: Tensor, keep: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Sample:
        keep = _keep_all(boxes) if keep is None else keep
        size = self.sizes[0] if len(self.sizes) == 1 else _choice(self.sizes, generator)
        w, h = image.size
        nw, nh = resized_size(w, h, size, self.max_size)
        if (nw, nh) == (w, h):
            return image, boxes, keep
        out = F.resize(image, [nh, nw], interpolation=InterpolationMode.BILINEAR, antialias=True)
        scale = torch.tensor([nw / w, nh / h, nw / w, nh / h], dtype=boxes.dtype)
        return out, boxes * scale, keep


class RandomSizeCrop:
    """Crop a random window of width and height each uniform in ``[min_size, min(side, max_size)]``.

    Boxes are shifted and clipped to the window; boxes left with zero width or height are dropped.
    """

    def __init__(self, min_size: int = 384, max_size: int = 600) -> None:
        self.min_size = min_size
        self.max_size = max_size

    def __call__(self, image: Image.Image, boxes: Tensor, keep: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Sample:
        keep = _keep_all(boxes) if keep is None else keep
        w, h = image.size
        cw = _randint(min(self.min_size, w), min(w, self.max_size), generator)
        ch = _randint(min(self.min_size, h), min(h, self.max_size), generator)
        left = _randint(0, w - cw, generator)
        top = _randint(0, h - ch, generator)
        return crop(image, boxes, keep, top, left, ch, cw)


def crop(image: Image.Image, boxes: Tensor, keep: Tensor, top: int, left: int, height: int, width: int) -> Sample:
    """Crop the image to a window; shift/clip the boxes and drop the ones left empty."""
    out = F.crop(image, top, left, height, width)
    shifted = boxes - torch.tensor([left, top, left, top], dtype=boxes.dtype)
    shifted[:, 0::2] = shifted[:, 0::2].clamp(0, width)
    shifted[:, 1::2] = shifted[:, 1::2].clamp(0, height)
    ok = (shifted[:, 2] > shifted[:, 0]) & (shifted[:, 3] > shifted[:, 1])
    return out, shifted[ok], keep[ok]


class HOITrainTransform:
    """DETR training augmentation: flip, colour jitter, then multi-scale resize or resize-crop-resize.

    Args:
        scales: short-side choices of the final resize (DETR: 480, 512, ..., 800).
        max_size: long-side limit of the final resize.
        crop_resize_scales: short-side choices of the resize before the crop (DETR: 400, 500, 600).
        crop_min_size: smallest crop width/height.
        crop_max_size: largest crop width/height.
        flip_p: probability of the horizontal flip.
        color_jitter: ``(brightness, contrast, saturation, hue)``; ``None`` disables it.
        crop_p: probability of the resize-crop-resize branch.
    """

    def __init__(
        self,
        scales: Sequence[int] = DETR_SCALES,
        max_size: int = 1333,
        crop_resize_scales: Sequence[int] = (400, 500, 600),
        crop_min_size: int = 384,
        crop_max_size: int = 600,
        flip_p: float = 0.5,
        color_jitter: tuple[float, float, float, float] | None = (0.4, 0.4, 0.4, 0.0),
        crop_p: float = 0.5,
    ) -> None:
        self.flip = HorizontalFlip(flip_p)
        self.jitter = ColorJitter(*color_jitter) if color_jitter is not None else None
        self.resize = ResizeShortSide(list(scales), max_size)
        self.crop_resize = ResizeShortSide(list(crop_resize_scales))
        self.crop = RandomSizeCrop(crop_min_size, crop_max_size)
        self.crop_p = crop_p

    def __call__(self, image: Image.Image, boxes: Tensor, generator: torch.Generator | None = None) -> Sample:
        image, boxes, keep = self.flip(image, boxes, None, generator)
        if self.jitter is not None:
            image = self.jitter(image)
        if torch.rand(1, generator=generator).item() < self.crop_p:
            image, boxes, keep = self.crop_resize(image, boxes, keep, generator)
            image, boxes, keep = self.crop(image, boxes, keep, generator)
        return self.resize(image, boxes, keep, generator)


class HOIEvalTransform:
    """Evaluation resize: short side to ``test_scale``, long side at most ``max_size``."""

    def __init__(self, test_scale: int = 800, max_size: int = 1333) -> None:
        self.resize = ResizeShortSide(test_scale, max_size)

    def __call__(self, image: Image.Image, boxes: Tensor, generator: torch.Generator | None = None) -> Sample:
        return self.resize(image, boxes, None, generator)


def to_normalized_tensor(image: Image.Image, mean: Sequence[float] = IMAGENET_MEAN,
                         std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """``[3, H, W]`` float tensor of an RGB PIL image, normalised (ImageNet statistics by default)."""
    t = F.to_dtype(F.pil_to_tensor(image.convert("RGB")), torch.float32, scale=True)
    return F.normalize(t, list(mean), list(std))


class ClipTransform:
    """CLIP preprocessing: bicubic resize of the short side to ``size``, centre crop, CLIP mean/std.

    Returns ``[3, size, size]``.
    """

    def __init__(self, size: int = 224) -> None:
        self.size = size

    def __call__(self, image: Image.Image) -> Tensor:
        img = F.resize(image.convert("RGB"), self.size, interpolation=InterpolationMode.BICUBIC, antialias=True)
        img = F.center_crop(img, [self.size, self.size])
        return to_normalized_tensor(img, CLIP_MEAN, CLIP_STD)
