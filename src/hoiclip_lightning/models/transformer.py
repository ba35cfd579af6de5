"""DETR encoder, the instance decoder and HOICLIP's container that holds them with its interaction decoder.

All attention modules are :class:`torch.nn.MultiheadAttention` with ``batch_first=True``, so every
sequence here is ``[B, S, D]`` (batch first) rather than DETR's sequence-first ``[S, B, D]``. The
parameter names of ``nn.MultiheadAttention`` do not depend on ``batch_first`` and the sub-module names
follow DETR (``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``, ``norm1..3``), so DETR and
official HOICLIP checkpoints load with a pure prefix mapping (see :mod:`.detr_checkpoint`).

Layers are post-norm (LayerNorm after each residual sum), ReLU FFNs, as in DETR.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .interaction import CLIPInteractionDecoder


def _with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


class EncoderLayer(nn.Module):
    """Post-norm DETR encoder layer: self-attention (``+pos`` on queries and keys) then FFN.

    Args:
        d_model: width D.
        nheads: attention heads.
        dim_feedforward: FFN hidden width.
        dropout: dropout of attention output, FFN and residuals.
    """

    def __init__(self, d_model: int, nheads: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nheads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        """``src``/``pos`` ``[B, S, D]``, ``key_padding_mask`` ``[B, S]`` (True = pad) -> ``[B, S, D]``."""
        qk = _with_pos(src, pos)
        attn = self.self_attn(qk, qk, src, key_padding_mask=key_padding_mask, need_weights=False)[0]
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class TransformerEncoder(nn.Module):
    """Stack of :class:`EncoderLayer` without a final norm (post-norm DETR).

    Args:
        d_model: width D.
        nheads: attention heads.
        dim_feedforward: FFN hidden width.
        dropout: dropout rate (see :class:`EncoderLayer`).
        num_layers: number of layers (6 in DETR / HOICLIP).

    Example:
        >>> import torch
        >>> enc = TransformerEncoder(d_model=16, nheads=2, dim_feedforward=32, dropout=0.0, num_layers=2)
        >>> enc(torch.randn(1, 6, 16), torch.randn(1, 6, 16), torch.zeros(1, 6, dtype=torch.bool)).shape
        torch.Size([1, 6, 16])
    """

    def __init__(self, d_model: int, nheads: int, dim_feedforward: int, dropout: float, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [EncoderLayer(d_model, nheads, dim_feedforward, dropout) for _ in range(num_layers)]
        )

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        """``src``/``pos`` ``[B, S, D]``, ``key_padding_mask`` ``[B, S]`` -> memory ``[B, S, D]``."""
        for layer in self.layers:
            src = layer(src, pos, key_padding_mask)
        return src


class InstanceDecoderLayer(nn.Module):
    """Post-norm DETR decoder layer: self-attention over all query slots, cross-attention, FFN.

    Self-attention uses ``q = k = tgt + query_pos``, ``v = tgt``; cross-attention uses
    ``q = tgt + query_pos``, ``k = memory + pos``, ``v = memory`` with the image padding mask.
    """

    def __init__(self, d_model: int, nheads: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nheads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nheads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Tensor | None, pos: Tensor, query_pos: Tensor
    ) -> Tensor:
        """``tgt``/``query_pos`` ``[B, T, D]``, ``memory``/``pos`` ``[B, S, D]``, mask ``[B, S]`` -> ``[B, T, D]``."""
        qk = _with_pos(tgt, query_pos)
        attn = self.self_attn(qk, qk, tgt, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(attn))
        attn = self.multihead_attn(
            _with_pos(tgt, query_pos),
            _with_pos(memory, pos),
            memory,
            key_padding_mask=memory_key_padding_mask,
            need_weights=False,
        )[0]
        tgt = self.norm2(tgt + self.dropout2(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class InstanceDecoder(nn.Module):
    """Stack of :class:`InstanceDecoderLayer` returning every layer's output through a shared final norm.

    Args:
        d_model: width D.
        nheads: attention heads.
        dim_feedforward: FFN hidden width.
        dropout: dropout rate (see :class:`InstanceDecoderLayer`).
        num_layers: number of layers (3 in HOICLIP).

    Example:
        >>> import torch
        >>> dec = InstanceDecoder(d_model=16, nheads=2, dim_feedforward=32, dropout=0.0, num_layers=3)
        >>> memory, pos, query_pos = torch.randn(1, 6, 16), torch.randn(1, 6, 16), torch.randn(1, 8, 16)
        >>> dec(torch.zeros(1, 8, 16), memory, None, pos, query_pos).shape  # every layer, 8 slots
        torch.Size([3, 1, 8, 16])
    """

    def __init__(self, d_model: int, nheads: int, dim_feedforward: int, dropout: float, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [InstanceDecoderLayer(d_model, nheads, dim_feedforward, dropout) for _ in range(num_layers)]
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Tensor | None, pos: Tensor, query_pos: Tensor
    ) -> Tensor:
        """``tgt`` ``[B, T, D]``, ``memory``/``pos`` ``[B, S, D]`` -> ``[n_layers, B, T, D]``.

        ``query_pos`` is ``[B, T, D]`` for every layer, or ``[n_layers, B, T, D]``: one per layer (GEN-VLKT's
        guided embeddings, :class:`~.gen_transformer.GuidedInteractionDecoder`).
        """
        outputs = []
        for i, layer in enumerate(self.layers):
            layer_pos = query_pos[i] if query_pos.dim() == 4 else query_pos
            tgt = layer(tgt, memory, memory_key_padding_mask, pos, layer_pos)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class HOITransformer(nn.Module):
    """DETR encoder + instance decoder + CLIP interaction decoder (the reference's ``GEN`` module).

    A container with the reference's parameter names; :class:`~.hoi_model.HOIModel` runs the encoder and
    the instance decoder, :meth:`decode_interactions` the interaction branch.

    Sub-module names follow the reference: ``encoder``, ``instance_decoder``, ``clip_interaction_decoder``,
    ``queries2spacial_proj`` / ``queries2spacial_proj_norm`` (pair query -> width W) and ``obj_class_fc`` /
    ``obj_class_ln`` (encoder memory -> width W; the reference's name, although they project the memory).
    The reference's unused ``interaction_decoder`` and ``inter_guided_embedd`` are not created.

    Args:
        d_model: DETR width D.
        nheads: heads of encoder and instance decoder.
        dim_feedforward: FFN width of all layers (also of the interaction decoder).
        dropout: dropout of all layers.
        enc_layers: encoder layers.
        dec_layers: instance-decoder layers.
        inter_dec_layers: interaction-decoder layers.
        inter_nheads: interaction-decoder heads (must divide W).
        clip_width: CLIP visual width W.
        clip_visual_proj: ``[W, E]`` CLIP visual projection (copied into a frozen buffer).
        clip_retrieval: attend the CLIP spatial tokens in the interaction decoder.
        shared_fusion_attention: *quirk* reuse the CLIP cross-attention for the memory, without mask.
        mask_shared_memory: give that shared attention the padding mask (padding invariance).

    Example:
        >>> import torch
        >>> t = HOITransformer(d_model=16, nheads=2, dim_feedforward=32, dropout=0.0, enc_layers=1, dec_layers=2,
        ...                    inter_dec_layers=2, inter_nheads=2, clip_width=24, clip_visual_proj=torch.randn(24, 12))
        >>> h, o, memory = torch.randn(1, 4, 16), torch.randn(1, 4, 16), torch.randn(1, 6, 16)
        >>> t.decode_interactions(h, o, memory, None, clip_tokens=torch.randn(1, 5, 24)).shape
        torch.Size([2, 1, 4, 12])
    """

    def __init__(
        self,
        d_model: int,
        nheads: int,
        dim_feedforward: int,
        dropout: float,
        enc_layers: int,
        dec_layers: int,
        inter_dec_layers: int,
        inter_nheads: int,
        clip_width: int,
        clip_visual_proj: Tensor,
        clip_retrieval: bool = True,
        shared_fusion_attention: bool = True,
        mask_shared_memory: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.encoder = TransformerEncoder(d_model, nheads, dim_feedforward, dropout, enc_layers)
        self.instance_decoder = InstanceDecoder(d_model, nheads, dim_feedforward, dropout, dec_layers)
        self.queries2spacial_proj = nn.Linear(d_model, clip_width)
        self.queries2spacial_proj_norm = nn.LayerNorm(clip_width)
        self.obj_class_fc = nn.Linear(d_model, clip_width)
        self.obj_class_ln = nn.LayerNorm(clip_width)
        self.clip_interaction_decoder = CLIPInteractionDecoder(
            width=clip_width,
            nheads=inter_nheads,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            num_layers=inter_dec_layers,
            visual_proj=clip_visual_proj,
            clip_retrieval=clip_retrieval,
            shared_fusion_attention=shared_fusion_attention,
            mask_shared_memory=mask_shared_memory,
        )
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)

    def decode_interactions(
        self, h_last: Tensor, o_last: Tensor, memory: Tensor, mask: Tensor, clip_tokens: Tensor | None
    ) -> Tensor:
        """The CLIP interaction decoder, started from the mean of each pair's last-layer slots.

        Args:
            h_last: ``[B, Q, D]`` human slots of the last instance-decoder layer.
            o_last: ``[B, Q, D]`` object slots of the last instance-decoder layer.
            memory: ``[B, S, D]`` encoder memory.
            mask: ``[B, S]`` bool padding mask.
            clip_tokens: ``[B, L, W]`` CLIP spatial tokens (None when CLIP retrieval is off).

        Returns:
            ``[n_inter, B, Q, E]`` interaction features in CLIP's joint space (un-normalised).
        """
        q0 = self.queries2spacial_proj_norm(self.queries2spacial_proj((h_last + o_last) / 2))  # [B, Q, W]
        mem_w = self.obj_class_ln(self.obj_class_fc(memory))  # [B, S, W]
        return self.clip_interaction_decoder(q0, clip_tokens, mem_w, mask)
