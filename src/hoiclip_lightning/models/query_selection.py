"""Pair queries initialised from the dense auxiliary head (*beyond the reference*, off in the paper configs).

DETR's queries are learned constants: until the cross-attention has learned where to look, every image
gets the same predictions (the dataset prior), and a detector trained from scratch can stay on that
plateau for a very long time. Two-stage detectors (Deformable DETR's two-stage variant, DINO's query
selection) start the decoder from the encoder instead. :class:`DenseQuerySelection` does that for pair
queries: the dense head (``dense_aux_head``) scores every memory cell for "subject human" and for "any
object"; human slot ``i`` of the instance decoder starts from the ``i``-th best human cell and object
slot ``i`` from the ``i``-th best object cell. Each slot gets

* content: the selected cell's memory, through a linear layer and a LayerNorm (instead of zeros);
* position: the cell's sine encoding added to the learned query embedding;
* a reference point: the cell centre, to which the box head's centre is relative
  (``box = sigmoid(box_head(h) + [logit(cx), logit(cy), 0, 0])``).

The selection itself (``topk`` of the dense scores) carries no gradient; the dense head learns from its
own loss, the projection and the memory from the decoder's losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

_EPS = 1e-4


@dataclass
class SelectedQueries:
    """What :class:`DenseQuerySelection` returns (human slots first, then object slots, as the decoder).

    Attributes:
        tgt: ``[B, 2Q, D]`` initial query content.
        query_pos: ``[B, 2Q, D]`` query positional embeddings (learned + selected cell's encoding).
        box_offset: ``[B, 2Q, 4]`` added to the box heads' logits before the sigmoid
            (``logit(cx), logit(cy), 0, 0`` of the selected cell, normalised by the image size).
        cells: ``[B, 2Q]`` flattened index of the selected cell of every slot.
    """

    tgt: Tensor
    query_pos: Tensor
    box_offset: Tensor
    cells: Tensor


class DenseQuerySelection(nn.Module):
    """Start the instance decoder's human and object slots from the best-scoring memory cells.

    Args:
        d_model: DETR width D.
        num_obj_classes: C_obj; the dense logits' channels are objects ``0 .. C_obj - 1``, the subject
            human ``C_obj``, then verbs.

    Example:
        >>> select = DenseQuerySelection(d_model=8, num_obj_classes=3)
        >>> memory, pos = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
        >>> dense = torch.randn(2, 6, 3 + 1 + 2)
        >>> mask = torch.zeros(2, 6, dtype=torch.bool)
        >>> out = select(memory, pos, dense, mask, torch.zeros(4, 8), grid=(2, 3),
        ...              cell_size=(32.0, 32.0), image_sizes=torch.tensor([[64.0, 96.0], [64.0, 96.0]]))
        >>> out.tgt.shape, out.box_offset.shape
        (torch.Size([2, 4, 8]), torch.Size([2, 4, 4]))
    """

    def __init__(self, d_model: int, num_obj_classes: int) -> None:
        super().__init__()
        self.num_obj_classes = num_obj_classes
        self.content_proj = nn.Linear(d_model, d_model)
        self.content_norm = nn.LayerNorm(d_model)

    def cell_scores(self, dense_logits: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Human and object score of every cell.

        Args:
            dense_logits: ``[B, S, K]`` dense-head logits (flattened cells).
            mask: ``[B, S]`` bool, True on padding cells (never selected before a valid cell).

        Returns:
            ``human`` and ``object`` ``[B, S]`` (logits; padding cells at -1e4).
        """
        logits = dense_logits.detach().float()
        human = logits[..., self.num_obj_classes]
        obj = logits[..., : self.num_obj_classes].amax(dim=-1)
        return human.masked_fill(mask, -1e4), obj.masked_fill(mask, -1e4)

    def forward(
        self,
        memory: Tensor,
        pos: Tensor,
        dense_logits: Tensor,
        mask: Tensor,
        query_pos: Tensor,
        grid: tuple[int, int],
        cell_size: tuple[float, float],
        image_sizes: Tensor,
    ) -> SelectedQueries:
        """Select the cells and build the slots.

        Args:
            memory: ``[B, S, D]`` encoder memory (S = h * w, row-major).
            pos: ``[B, S, D]`` flattened positional encoding.
            dense_logits: ``[B, S, K]`` dense-head logits.
            mask: ``[B, S]`` bool padding mask.
            query_pos: ``[2Q, D]`` learned query embeddings (human slots first).
            grid: ``(h, w)`` of the feature map.
            cell_size: ``(cell height, cell width)`` in input pixels.
            image_sizes: ``[B, 2]`` (height, width) of every image without padding, in input pixels.

        Returns:
            :class:`SelectedQueries`.
        """
        batch, cells, _ = memory.shape
        num_queries = query_pos.shape[0] // 2
        human, obj = self.cell_scores(dense_logits, mask)
        k = min(num_queries, cells)
        # more slots than valid cells: cycle through the image's own valid cells (never padding), so an
        # image picks the same cells alone or padded in a batch
        n_valid = (~mask).sum(dim=1).clamp(min=1, max=k)  # [B]
        order = torch.arange(num_queries, device=memory.device)[None] % n_valid[:, None]  # [B, Q]
        picked = torch.cat([human.topk(k, dim=1).indices.gather(1, order),
                            obj.topk(k, dim=1).indices.gather(1, order)], dim=1)

        gather = picked[..., None].expand(-1, -1, memory.shape[-1])
        tgt = self.content_norm(self.content_proj(torch.gather(memory, 1, gather)))
        slot_pos = query_pos.unsqueeze(0).to(pos.dtype) + torch.gather(pos, 1, gather)

        rows = torch.div(picked, grid[1], rounding_mode="floor").float()
        cols = (picked % grid[1]).float()
        sizes = image_sizes.to(memory.device, torch.float32)
        cy = ((rows + 0.5) * cell_size[0] / sizes[:, :1]).clamp(_EPS, 1 - _EPS)
        cx = ((cols + 0.5) * cell_size[1] / sizes[:, 1:]).clamp(_EPS, 1 - _EPS)
        centre = torch.stack([cx, cy], dim=-1)
        offset = torch.cat([torch.logit(centre), torch.zeros_like(centre)], dim=-1)
        return SelectedQueries(tgt=tgt, query_pos=slot_pos, box_offset=offset.to(memory.dtype), cells=picked)
