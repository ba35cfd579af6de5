"""Sine positional encoding of a 2-D feature map (the DETR recipe)."""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn


class PositionEmbeddingSine(nn.Module):
    """Fixed sine/cosine encoding of the (y, x) position of every non-padded feature-map cell.

    Each axis coordinate is the running count of non-padded cells (1-based); with ``normalize`` it is
    divided by the valid extent of its row/column and multiplied by ``scale`` (2π). Channel ``k`` of
    an axis uses the angle ``coord / temperature ** (2 * (k // 2) / num_pos_feats)``: sine on even
    channels, cosine on odd ones. The y block comes first, then the x block (``2 * num_pos_feats = d``).

    Args:
        num_pos_feats: channels per axis (``d / 2``).
        temperature: frequency base (10000).
        normalize: normalise coordinates by the valid extent and multiply by ``scale``.
        scale: the scale (2π).

    Example:
        >>> import torch
        >>> PositionEmbeddingSine(num_pos_feats=8)(torch.zeros(1, 2, 3, dtype=torch.bool)).shape
        torch.Size([1, 16, 2, 3])
    """

    def __init__(
        self, num_pos_feats: int = 128, temperature: float = 10000.0, normalize: bool = True, scale: float = 2 * math.pi
    ) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def _encode_axis(self, coord: Tensor) -> Tensor:
        """``[B, h, w]`` coordinates -> ``[B, h, w, num_pos_feats]`` sine/cosine features."""
        k = torch.arange(self.num_pos_feats, device=coord.device)
        freq = self.temperature ** ((2 * (k // 2)).to(torch.float32) / self.num_pos_feats)
        angles = coord.unsqueeze(-1) / freq
        out = torch.empty_like(angles)
        out[..., 0::2] = angles[..., 0::2].sin()
        out[..., 1::2] = angles[..., 1::2].cos()
        return out

    def forward(self, mask: Tensor) -> Tensor:
        """Encode positions.

        Args:
            mask: ``[B, h, w]`` bool, True on padding.

        Returns:
            ``[B, 2 * num_pos_feats, h, w]`` float32 encoding (y channels first, then x channels).
        """
        valid = (~mask).to(torch.float32)
        y = valid.cumsum(dim=1)
        x = valid.cumsum(dim=2)
        if self.normalize:
            eps = 1e-6
            y = y / (y[:, -1:, :] + eps) * self.scale
            x = x / (x[:, :, -1:] + eps) * self.scale
        pos = torch.cat([self._encode_axis(y), self._encode_axis(x)], dim=-1)
        return rearrange(pos, "b h w d -> b d h w")
