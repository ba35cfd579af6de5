"""GEN-VLKT's transformer: DETR encoder, instance decoder and the guided interaction decoder.

GEN-VLKT (Liao et al., CVPR 2022) decodes interactions from the *detector memory*, not from CLIP tokens
(that is HOICLIP's change, :class:`~hoiclip_lightning.models.transformer.HOITransformer`). Its interaction
decoder is a plain post-norm DETR decoder of width D whose queries start at zero and whose query positions
are *guided embeddings*: for decoder layer l, the mean of human slot i and object slot i of
instance-decoder layer l. Layer l of the interaction decoder therefore follows layer l of the instance
decoder, which is why the two decoders must have the same depth.

Notation: B images, Q pair queries, D width, S memory cells, n decoder layers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .transformer import InstanceDecoder, TransformerEncoder


class GuidedInteractionDecoder(InstanceDecoder):
    """Post-norm DETR decoder whose query positions change per layer (GEN-VLKT's interaction decoder).

    An :class:`InstanceDecoder` (same layers, same shared final LayerNorm, same parameter names) called
    with one query position per layer: ``query_pos`` ``[n, B, Q, D]``, layer l's being the mean of human
    slot i and object slot i of instance-decoder layer l. ``tgt`` is zeros in GEN-VLKT.

    Args:
        d_model: width D.
        nheads: attention heads.
        dim_feedforward: FFN hidden width.
        dropout: dropout rate.
        num_layers: number of layers n.

    Example:
        >>> import torch
        >>> dec = GuidedInteractionDecoder(d_model=16, nheads=2, dim_feedforward=32, dropout=0.0, num_layers=2)
        >>> memory, pos = torch.randn(1, 6, 16), torch.randn(1, 6, 16)
        >>> guides = torch.randn(2, 1, 3, 16)  # one [B, Q, D] query position per layer
        >>> dec(torch.zeros(1, 3, 16), memory, None, pos, guides).shape
        torch.Size([2, 1, 3, 16])
    """


class GENTransformer(nn.Module):
    """DETR encoder + instance decoder + guided interaction decoder (the reference's ``GEN`` module).

    Sub-module names follow the reference (``encoder``, ``instance_decoder``, ``interaction_decoder``), so
    its checkpoints load with a prefix mapping. Every weight matrix starts Xavier-uniform, as in DETR.

    Args:
        d_model: width D.
        nheads: attention heads of every layer.
        dim_feedforward: FFN hidden width.
        dropout: dropout rate.
        enc_layers: encoder layers.
        dec_layers: layers of each decoder (the guided embeddings pair them layer by layer).

    Example:
        >>> import torch
        >>> t = GENTransformer(d_model=16, nheads=2, dim_feedforward=32, dropout=0.0, enc_layers=1, dec_layers=2)
        >>> memory, pos = torch.randn(1, 6, 16), torch.randn(1, 6, 16)
        >>> h_hs, o_hs = torch.randn(2, 1, 4, 16), torch.randn(2, 1, 4, 16)  # 2 layers, 4 pairs
        >>> t.decode_interactions(h_hs, o_hs, memory, None, pos).shape
        torch.Size([2, 1, 4, 16])
    """

    def __init__(
        self, d_model: int, nheads: int, dim_feedforward: int, dropout: float, enc_layers: int, dec_layers: int
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.encoder = TransformerEncoder(d_model, nheads, dim_feedforward, dropout, enc_layers)
        self.instance_decoder = InstanceDecoder(d_model, nheads, dim_feedforward, dropout, dec_layers)
        self.interaction_decoder = GuidedInteractionDecoder(d_model, nheads, dim_feedforward, dropout, dec_layers)
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)

    def decode_interactions(self, h_hs: Tensor, o_hs: Tensor, memory: Tensor, mask: Tensor, pos: Tensor) -> Tensor:
        """The interaction decoder over the memory, layer l guided by the mean of instance layer l's pairs.

        Args:
            h_hs: ``[n, B, Q, D]`` human slots of every instance-decoder layer.
            o_hs: ``[n, B, Q, D]`` object slots of every instance-decoder layer.
            memory: ``[B, S, D]`` encoder memory.
            mask: ``[B, S]`` bool padding mask (or None).
            pos: ``[B, S, D]`` positional encoding of the memory.

        Returns:
            ``[n, B, Q, D]`` interaction features.
        """
        guides = (h_hs + o_hs) / 2.0
        return self.interaction_decoder(torch.zeros_like(guides[0]), memory, mask, pos, guides)
