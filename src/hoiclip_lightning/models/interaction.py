"""The CLIP interaction decoder: pair queries retrieve from CLIP's spatial tokens and the DETR memory.

Each :class:`FusionDecoderLayer` (width W, the CLIP visual width) computes, post-norm::

    t = LN1(t + Drop1(SelfAttn(t, t, t)))
    a = LN2(t + Drop2(CrossAttn(t, tokens, tokens)))            # CLIP spatial tokens, no mask
    b = LN2(t + Drop2(CrossAttn(t, mem_w, mem_w)))              # DETR memory (quirk: same module, no mask)
    t = a + b                                                   # knowledge integration
    t = LN3(t + Drop3(Linear2(Drop(ReLU(Linear1(t))))))

With ``mask_shared_memory=True`` the shared attention of the memory branch takes the padding mask too (the
outputs then do not depend on how much padding the batch adds; the reference attends the padded cells).
With ``shared_fusion_attention=False`` the memory branch has its own ``memory_attn``/``norm4``/``dropout4``
and uses the DETR padding mask. With ``clip_retrieval=False`` (ablation) the CLIP branch is removed
(``t = b``); when the attention is not shared, its ``multihead_attn``/``norm2`` parameters disappear too.
No positional embedding is added anywhere in this decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FusionDecoderLayer(nn.Module):
    """One knowledge-integration layer of the CLIP interaction decoder.

    Args:
        width: CLIP visual width W.
        nheads: attention heads (must divide W).
        dim_feedforward: FFN hidden width.
        dropout: dropout rate.
        clip_retrieval: attend the CLIP spatial tokens.
        shared_fusion_attention: *quirk* reuse ``multihead_attn``/``norm2`` for the DETR memory, unmasked.
        mask_shared_memory: give the shared memory attention the padding mask (padding invariance).
    """

    def __init__(
        self,
        width: int,
        nheads: int,
        dim_feedforward: int,
        dropout: float,
        clip_retrieval: bool = True,
        shared_fusion_attention: bool = True,
        mask_shared_memory: bool = False,
    ) -> None:
        super().__init__()
        self.clip_retrieval = clip_retrieval
        self.shared_fusion_attention = shared_fusion_attention
        self.mask_shared_memory = mask_shared_memory
        self.self_attn = nn.MultiheadAttention(width, nheads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(width)
        self.dropout1 = nn.Dropout(dropout)
        if clip_retrieval or shared_fusion_attention:
            self.multihead_attn = nn.MultiheadAttention(width, nheads, dropout=dropout, batch_first=True)
            self.norm2 = nn.LayerNorm(width)
            self.dropout2 = nn.Dropout(dropout)
        if not shared_fusion_attention:
            self.memory_attn = nn.MultiheadAttention(width, nheads, dropout=dropout, batch_first=True)
            self.norm4 = nn.LayerNorm(width)
            self.dropout4 = nn.Dropout(dropout)
        self.linear1 = nn.Linear(width, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, width)
        self.norm3 = nn.LayerNorm(width)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self, tgt: Tensor, clip_tokens: Tensor | None, memory: Tensor, memory_key_padding_mask: Tensor | None
    ) -> Tensor:
        """Args: ``tgt`` ``[B, Q, W]``; ``clip_tokens`` ``[B, L, W]`` (ignored without CLIP retrieval);
        ``memory`` ``[B, S, W]`` projected DETR memory; mask ``[B, S]`` (True = pad). Returns ``[B, Q, W]``."""
        attn = self.self_attn(tgt, tgt, tgt, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(attn))
        if self.shared_fusion_attention:
            shared_mask = memory_key_padding_mask if self.mask_shared_memory else None
            attn = self.multihead_attn(tgt, memory, memory, key_padding_mask=shared_mask, need_weights=False)[0]
            fused = self.norm2(tgt + self.dropout2(attn))
        else:
            attn = self.memory_attn(tgt, memory, memory, key_padding_mask=memory_key_padding_mask, need_weights=False)
            fused = self.norm4(tgt + self.dropout4(attn[0]))
        if self.clip_retrieval:
            if clip_tokens is None:
                raise ValueError("clip_tokens are required when clip_retrieval is on")
            attn = self.multihead_attn(tgt, clip_tokens, clip_tokens, need_weights=False)[0]
            fused = fused + self.norm2(tgt + self.dropout2(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(fused))))
        return self.norm3(fused + self.dropout3(ffn))


class CLIPInteractionDecoder(nn.Module):
    """Stack of :class:`FusionDecoderLayer` projected into CLIP's joint space.

    Every layer output passes through the shared final ``norm`` (LayerNorm W) and is multiplied by the
    frozen CLIP visual projection ``visual_proj`` (``[W, E]`` buffer, a copy of CLIP's ``visual.proj``).

    Args:
        width: CLIP visual width W.
        nheads: attention heads.
        dim_feedforward: FFN width.
        dropout: dropout rate.
        num_layers: number of fusion layers.
        visual_proj: ``[W, E]`` projection (copied; stored as a buffer, never trained).
        clip_retrieval: attend the CLIP spatial tokens.
        shared_fusion_attention: *quirk*, see :class:`FusionDecoderLayer`.
        mask_shared_memory: see :class:`FusionDecoderLayer`.

    Example:
        >>> import torch
        >>> dec = CLIPInteractionDecoder(width=24, nheads=2, dim_feedforward=32, dropout=0.0, num_layers=2,
        ...                              visual_proj=torch.randn(24, 12))
        >>> queries, tokens, memory = torch.randn(1, 4, 24), torch.randn(1, 5, 24), torch.randn(1, 6, 24)
        >>> dec(queries, tokens, memory, None).shape  # every layer, projected into CLIP's joint space
        torch.Size([2, 1, 4, 12])
    """

    def __init__(
        self,
        width: int,
        nheads: int,
        dim_feedforward: int,
        dropout: float,
        num_layers: int,
        visual_proj: Tensor,
        clip_retrieval: bool = True,
        shared_fusion_attention: bool = True,
        mask_shared_memory: bool = False,
    ) -> None:
        super().__init__()
        if visual_proj.shape[0] != width:
            raise ValueError(f"visual_proj has {visual_proj.shape[0]} rows, expected the CLIP width {width}")
        self.layers = nn.ModuleList(
            [
                FusionDecoderLayer(width, nheads, dim_feedforward, dropout, clip_retrieval, shared_fusion_attention,
                                   mask_shared_memory)
                for _ in range(num_layers)
            ]
        )
        self.norm = nn.LayerNorm(width)
        self.register_buffer("visual_proj", visual_proj.detach().clone().float())

    def forward(
        self, tgt: Tensor, clip_tokens: Tensor | None, memory: Tensor, memory_key_padding_mask: Tensor | None
    ) -> Tensor:
        """Args: ``tgt`` ``[B, Q, W]`` initial interaction queries; ``clip_tokens`` ``[B, L, W]``;
        ``memory`` ``[B, S, W]``; mask ``[B, S]``. Returns ``inter_hs`` ``[n_layers, B, Q, E]``."""
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, clip_tokens, memory, memory_key_padding_mask)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs) @ self.visual_proj.to(tgt.dtype)
