"""Joint image/box transforms and the CLIP view (transforms.py)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hoiclip_lightning.data import (
    ClipTransform,
    HOIEvalTransform,
    HOITrainTransform,
    HorizontalFlip,
    ResizeShortSide,
    resized_size,
    to_normalized_tensor,
)
from hoiclip_lightning.data.transforms import crop


@pytest.mark.parametrize(
    ("w", "h", "size", "max_size", "expected"),
    [
        (48, 32, 32, None, (48, 32)),  # already there
        (40, 20, 10, None, (20, 10)),  # short side is the height
        (20, 40, 10, None, (10, 20)),
        (100, 10, 20, 100, (100, 10)),  # long side would be 200 > 100 -> short side 10
        (30, 20, 25, 1333, (37, 25)),  # int() truncates 37.5
    ],
)
def test_resized_size(w, h, size, max_size, expected):
    assert resized_size(w, h, size, max_size) == expected


def test_resize_scales_boxes():
    img = Image.new("RGB", (40, 20))
    out, boxes, keep = ResizeShortSide(10)(img, torch.tensor([[4.0, 2.0, 20.0, 10.0]]))
    assert out.size == (20, 10)
    assert boxes.tolist() == [[2.0, 1.0, 10.0, 5.0]]
    assert keep.tolist() == [0]


def test_flip_moves_only_x():
    img = Image.new("RGB", (48, 32))
    img.putpixel((0, 5), (255, 0, 0))
    out, boxes, keep = HorizontalFlip(p=1.0)(img, torch.tensor([[2.0, 2.0, 20.0, 30.0]]))
    assert boxes.tolist() == [[28.0, 2.0, 46.0, 30.0]]
    assert out.getpixel((47, 5)) == (255, 0, 0)
    assert keep.tolist() == [0]
    same, boxes0, _ = HorizontalFlip(p=0.0)(img, torch.tensor([[2.0, 2.0, 20.0, 30.0]]))
    assert boxes0.tolist() == [[2.0, 2.0, 20.0, 30.0]] and same is img


def test_crop_clips_and_drops_empty_boxes():
    img = Image.new("RGB", (40, 40))
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [5.0, 12.0, 25.0, 18.0]])
    out, b, keep = crop(img, boxes, torch.tensor([7, 8, 9]), top=2, left=4, height=13, width=15)
    assert out.size == (15, 13)
    # box 0 shifted by (4, 2); box 1 leaves the window entirely; box 2 clipped at x = 15
    assert b.tolist() == [[0.0, 0.0, 6.0, 8.0], [1.0, 10.0, 15.0, 13.0]]
    assert keep.tolist() == [7, 9]


def test_eval_transform_size():
    img = Image.new("RGB", (48, 32))
    out, boxes, _ = HOIEvalTransform(test_scale=16, max_size=1333)(img, torch.tensor([[2.0, 2.0, 20.0, 30.0]]))
    assert out.size == (24, 16)
    assert boxes.tolist() == [[1.0, 1.0, 10.0, 15.0]]


def test_normalisation_values():
    white = to_normalized_tensor(Image.new("RGB", (2, 2), (255, 255, 255)))
    assert white.shape == (3, 2, 2)
    assert white[:, 0, 0].tolist() == pytest.approx([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    clip = ClipTransform(8)(Image.new("RGB", (24, 12), (128, 128, 128)))
    assert clip.shape == (3, 8, 8)
    assert clip[0, 4, 4].item() == pytest.approx((128 / 255 - 0.48145466) / 0.26862954, abs=1e-4)


def test_clip_view_centre_crops_non_square():
    img = Image.new("RGB", (30, 10), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 10))  # white left third, outside the centre crop
    clip = ClipTransform(10)(img)
    black = (0 - 0.48145466) / 0.26862954
    assert clip[0].max().item() == pytest.approx(black, abs=1e-3)


@settings(max_examples=12, deadline=None)
@given(
    w=st.integers(16, 48),
    h=st.integers(16, 48),
    raw=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)), min_size=1,
                 max_size=6),
    seed=st.integers(0, 2**16),
)
def test_train_transform_keeps_boxes_consistent(w, h, raw, seed):
    boxes = torch.tensor([[min(a, c) * w, min(b, d) * h, max(a, c) * w + 1, max(b, d) * h + 1] for a, b, c, d in raw])
    boxes[:, 2] = boxes[:, 2].clamp(max=w)
    boxes[:, 3] = boxes[:, 3].clamp(max=h)
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    tf = HOITrainTransform(scales=[20, 24], max_size=40, crop_resize_scales=[24, 28], crop_min_size=12,
                           crop_max_size=20, color_jitter=None, crop_p=0.5)
    gen = torch.Generator().manual_seed(seed)
    img, out, keep = tf(Image.new("RGB", (w, h)), boxes, generator=gen)
    iw, ih = img.size
    # the DETR size rule shrinks the short side so the long side fits max_size; rounding can add 1 pixel
    assert min(iw, ih) in (20, 24) or max(iw, ih) <= 40 + 1
    assert out.shape == (keep.shape[0], 4)
    assert keep.tolist() == sorted(set(keep.tolist())) and all(0 <= k < len(boxes) for k in keep.tolist())
    assert bool((out[:, 2] > out[:, 0]).all()) and bool((out[:, 3] > out[:, 1]).all())
    tol = 1e-3
    assert bool((out[:, 0::2] >= -tol).all()) and bool((out[:, 0::2] <= iw + tol).all())
    assert bool((out[:, 1::2] >= -tol).all()) and bool((out[:, 1::2] <= ih + tol).all())
    # without the crop branch nothing is dropped and areas scale with the image
    tf_nocrop = HOITrainTransform(scales=[20], max_size=1000, color_jitter=None, crop_p=0.0)
    img2, out2, keep2 = tf_nocrop(Image.new("RGB", (w, h)), boxes, generator=gen)
    assert keep2.tolist() == list(range(len(boxes)))
    sx, sy = img2.size[0] / w, img2.size[1] / h
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * sx * sy
    assert torch.allclose((out2[:, 2] - out2[:, 0]) * (out2[:, 3] - out2[:, 1]), area, rtol=1e-4, atol=1e-3)


def test_train_transform_deterministic_with_generator():
    img = Image.new("RGB", (40, 30))
    boxes = torch.tensor([[1.0, 1.0, 20.0, 20.0], [10.0, 5.0, 39.0, 29.0]])
    tf = HOITrainTransform(scales=[16, 20, 24], max_size=64, crop_resize_scales=[30], crop_min_size=10,
                           crop_max_size=25, color_jitter=None)
    a = tf(img, boxes, generator=torch.Generator().manual_seed(3))
    b = tf(img, boxes, generator=torch.Generator().manual_seed(3))
    assert a[0].size == b[0].size and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
