"""ResNet backbone with frozen batch norm (the detector's feature extractor).

The backbone returns the last ResNet stage (C5, output stride 32) together with the image padding mask
down-sampled to the feature resolution.

Padding invariance (``padding_invariant=True``): images of a batch are zero-padded at the bottom/right
to a common size. A plain ResNet lets that padding reach valid cells near the border in two ways: from
the second layer on, the padded area holds non-zero activations (normalisation shifts, biases) that the
3x3 convolutions and the max pool read, and group norm computes its statistics over it. With the
option on, the input of every spatial convolution and of the max pool is zeroed outside each image's
valid area at that resolution, group norm uses the valid positions only, and the feature mask is the
exact valid extent ``ceil(size / 2^k)`` of every stage. An image then gets the same features (to float
rounding) whatever it is batched with; the cost is one multiply per spatial layer, and nothing at all for
batches without padding. ``False`` reproduces the reference (and DETR) exactly.

Parameter names are ``body.<torchvision name>`` (for example ``body.layer2.0.conv1.weight``), so the
public DETR checkpoint's ``backbone.0.body.*`` keys map onto ``backbone.body.*`` of
:class:`~hoiclip_lightning.models.HOICLIP` by dropping the ``0.``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

from ..errors import ConfigurationError

RESNET_DEPTHS = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101")
NORM_LAYERS = ("frozen_bn", "batch_norm", "group_norm")
_TRAINABLE_STAGES = ("layer2", "layer3", "layer4")


class PaddingContext:
    """Valid extent of every image of the batch being processed, shared by the backbone's layers.

    ``set(valid_hw, full_hw)`` is called by :meth:`Backbone.forward` for a padded batch and ``clear()``
    after it; :meth:`mask` gives the ``[B, 1, h, w]`` float mask (1 on valid positions) of a feature map
    of spatial size ``(h, w)``. Every stride-2 layer of a ResNet maps a size ``n`` to ``ceil(n / 2)``, so
    at ``k`` halvings the padded size is ``ceil(H / 2^k)`` and an image of valid size ``v`` covers
    ``ceil(v / 2^k)`` positions, exactly what the image alone would give.
    """

    def __init__(self) -> None:
        self.valid: Tensor | None = None  # [B, 2] valid (height, width) in input pixels
        self.full: tuple[int, int] = (0, 0)
        self._cache: dict[tuple[int, int], Tensor] = {}

    @property
    def active(self) -> bool:
        return self.valid is not None

    def set(self, valid: Tensor, full: tuple[int, int]) -> None:
        self.valid, self.full, self._cache = valid, full, {}

    def clear(self) -> None:
        self.valid, self._cache = None, {}

    @staticmethod
    def _halvings(full: int, size: int) -> int:
        k, n = 0, full
        while n > size:
            n, k = -(-n // 2), k + 1
        if n != size:
            raise RuntimeError(f"feature size {size} is not a stride-2 reduction of the input size {full}")
        return k

    def valid_extent(self, size: tuple[int, int]) -> Tensor:
        """``[B, 2]`` valid (height, width) of every image at a feature map of spatial size ``size``."""
        assert self.valid is not None
        k = torch.tensor([self._halvings(self.full[0], size[0]), self._halvings(self.full[1], size[1])],
                         device=self.valid.device)
        step = 2 ** k
        return torch.div(self.valid + step - 1, step, rounding_mode="floor")

    def mask(self, size: tuple[int, int], device: torch.device, dtype: torch.dtype) -> Tensor:
        """``[B, 1, h, w]`` mask, 1 where the position lies inside its image at this resolution."""
        key = (int(size[0]), int(size[1]))
        if key not in self._cache:
            extent = self.valid_extent(key)
            rows = torch.arange(key[0], device=extent.device)[None, :, None] < extent[:, 0, None, None]
            cols = torch.arange(key[1], device=extent.device)[None, None, :] < extent[:, 1, None, None]
            self._cache[key] = (rows & cols)[:, None]
        return self._cache[key].to(device=device, dtype=dtype)


class _ZeroPadding:
    """Forward pre-hook: zero a layer's input outside every image's valid area (picklable)."""

    def __init__(self, context: PaddingContext) -> None:
        self.context = context

    def __call__(self, module: nn.Module, args: tuple) -> tuple | None:
        if not self.context.active:
            return None
        x = args[0]
        return (x * self.context.mask(x.shape[-2:], x.device, x.dtype), *args[1:])


class MaskedGroupNorm(nn.GroupNorm):
    """Group norm whose statistics skip padded positions while a :class:`PaddingContext` is active.

    Without an active context (or without one attached) it is :class:`torch.nn.GroupNorm`. Outputs at
    padded positions are not meaningful (the next spatial layer zeroes them).
    """

    context: PaddingContext | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.context is None or not self.context.active:
            return super().forward(x)
        mask = self.context.mask(x.shape[-2:], x.device, x.dtype)  # [B, 1, h, w]
        b, c = x.shape[:2]
        g = self.num_groups
        xg = x.reshape(b, g, c // g, *x.shape[-2:])
        m = mask[:, None]  # [B, 1, 1, h, w]
        count = m.sum(dim=(2, 3, 4), keepdim=True) * (c // g)
        mean = (xg * m).sum(dim=(2, 3, 4), keepdim=True) / count
        var = (((xg - mean) * m) ** 2).sum(dim=(2, 3, 4), keepdim=True) / count
        out = ((xg - mean) / torch.sqrt(var + self.eps)).reshape_as(x)
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def _group_norm(channels: int) -> nn.GroupNorm:
    return MaskedGroupNorm(min(32, channels // 4), channels)


_NORMS = {"frozen_bn": FrozenBatchNorm2d, "batch_norm": nn.BatchNorm2d, "group_norm": _group_norm}


class Backbone(nn.Module):
    """Torchvision ResNet without ImageNet weights (weights come from the DETR checkpoint).

    With ``norm="frozen_bn"`` (DETR and the paper) every batch norm is a
    :class:`torchvision.ops.FrozenBatchNorm2d` (fixed statistics and affine), the stem
    (``conv1``/``bn1``) and ``layer1`` are frozen and ``layer2``-``layer4`` are trainable when
    ``train_backbone`` is True. Frozen statistics only make sense for pretrained weights: a randomly
    initialised ResNet with frozen batch norm has no normalisation at all and barely trains. Training
    from scratch (the quickstart, custom small models) therefore uses ``norm="batch_norm"`` or
    ``"group_norm"``, with which every stage, stem included, is trained.

    Args:
        name: ``resnet10`` (one block per stage, for CPU tests), ``resnet18``,
            ``resnet34``, ``resnet50`` or ``resnet101``.
        train_backbone: train the ResNet (``layer2``-``layer4`` with frozen batch norm, all of it
            otherwise); False freezes it whole.
        norm: ``frozen_bn`` (pretrained weights), ``batch_norm`` or ``group_norm`` (from scratch).
        padding_invariant: mask the padding inside the network (see the module docstring); False is
            the reference's plain ResNet with a nearest-neighbour feature mask.

    Attributes:
        num_channels: channels C of the C5 map (512 for resnet18/34, 2048 for resnet50/101).
        stride: input pixels per feature cell (32).

    Example:
        >>> import torch
        >>> backbone = Backbone("resnet10")
        >>> mask = torch.zeros(1, 64, 96, dtype=torch.bool)
        >>> features, small_mask = backbone(torch.randn(1, 3, 64, 96), mask)
        >>> tuple(features.shape), tuple(small_mask.shape), backbone.stride
        ((1, 512, 2, 3), (1, 2, 3), 32)
    """

    stride = 32

    def __init__(
        self, name: str = "resnet50", train_backbone: bool = True, norm: str = "frozen_bn",
        padding_invariant: bool = True,
    ) -> None:
        super().__init__()
        if name not in RESNET_DEPTHS:
            raise ConfigurationError(f"unknown backbone {name!r}; accepted: {RESNET_DEPTHS}")
        if norm not in NORM_LAYERS:
            raise ConfigurationError(f"unknown backbone_norm {norm!r}; accepted: {NORM_LAYERS}")
        norm_layer = _NORMS[norm]
        if name == "resnet10":  # one BasicBlock per stage: a cheap depth for CPU tests and the quickstart
            from torchvision.models.resnet import BasicBlock, ResNet

            resnet = ResNet(BasicBlock, [1, 1, 1, 1], norm_layer=norm_layer)
        else:
            resnet = getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer)
        for pname, param in resnet.named_parameters():
            in_trained_stage = norm != "frozen_bn" or any(stage in pname for stage in _TRAINABLE_STAGES)
            param.requires_grad_(train_backbone and in_trained_stage)
        self.body = IntermediateLayerGetter(resnet, return_layers={"layer4": "0"})
        self.num_channels = 512 if name in ("resnet10", "resnet18", "resnet34") else 2048
        self.name = name
        self.norm = norm
        self.padding_invariant = padding_invariant
        self.padding = PaddingContext()
        if padding_invariant:
            for module in self.body.modules():
                spatial_conv = isinstance(module, nn.Conv2d) and max(module.kernel_size) > 1
                if spatial_conv or isinstance(module, nn.MaxPool2d):
                    module.register_forward_pre_hook(_ZeroPadding(self.padding))
                elif isinstance(module, MaskedGroupNorm):
                    module.context = self.padding

    def forward(self, images: Tensor, pixel_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Run the ResNet.

        Args:
            images: ``[B, 3, H, W]`` float images.
            pixel_mask: ``[B, H, W]`` bool, True on padding.

        Padding must lie at the bottom/right of each image (as :func:`~hoiclip_lightning.data.collate_hoi`
        pads).

        Returns:
            ``features`` ``[B, C, h, w]`` (C5, h = ceil(H / 32)) and ``mask`` ``[B, h, w]`` bool, True on
            padding: the cells beyond ``ceil(valid size / 32)`` with ``padding_invariant``, else the
            nearest down-sampling of ``pixel_mask`` (the reference).
        """
        if not self.padding_invariant:
            features = self.body(images)["0"]
            mask = F.interpolate(pixel_mask[:, None].float(), size=features.shape[-2:], mode="nearest")[:, 0]
            return features, mask.to(torch.bool)
        valid = ~pixel_mask
        valid_hw = torch.stack([valid.any(dim=2).sum(dim=1), valid.any(dim=1).sum(dim=1)], dim=1)
        padded = bool(pixel_mask.any())
        if padded:
            self.padding.set(valid_hw, (int(images.shape[-2]), int(images.shape[-1])))
        try:
            features = self.body(images)["0"]
            if not padded:
                return features, pixel_mask.new_zeros(images.shape[0], *features.shape[-2:])
            keep = self.padding.mask(features.shape[-2:], features.device, torch.bool)[:, 0]
        finally:
            self.padding.clear()
        return features, ~keep
