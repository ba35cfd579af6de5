"""ResNet backbone with frozen batch norm (the detector's feature extractor).

The backbone returns the last ResNet stage (C5, output stride 32) together with the image padding mask
down-sampled to the feature resolution. Parameter names are ``body.<torchvision name>`` (for example
``body.layer2.0.conv1.weight``), so the public DETR checkpoint's ``backbone.0.body.*`` keys map onto
``backbone.body.*`` of :class:`~hoiclip_lightning.models.HOICLIP` by dropping the ``0.``.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

from ..errors import ConfigurationError

log = logging.getLogger(__name__)

RESNET_DEPTHS = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101")
NORM_LAYERS = ("frozen_bn", "batch_norm", "group_norm")
_TRAINABLE_STAGES = ("layer2", "layer3", "layer4")


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels)


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

    Attributes:
        num_channels: channels C of the C5 map (512 for resnet18/34, 2048 for resnet50/101).
    """

    def __init__(self, name: str = "resnet50", train_backbone: bool = True, norm: str = "frozen_bn") -> None:
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

    def forward(self, images: Tensor, pixel_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Run the ResNet.

        Args:
            images: ``[B, 3, H, W]`` float images.
            pixel_mask: ``[B, H, W]`` bool, True on padding.

        Returns:
            ``features`` ``[B, C, h, w]`` (C5, h = ceil(H / 32)) and ``mask`` ``[B, h, w]`` bool
            (nearest down-sampling of ``pixel_mask``, True on padding).
        """
        features = self.body(images)["0"]
        mask = F.interpolate(pixel_mask[:, None].float(), size=features.shape[-2:], mode="nearest")[:, 0]
        return features, mask.to(torch.bool)
