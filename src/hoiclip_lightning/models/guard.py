"""Finiteness checks of the training state: batches, model outputs, gradients, parameters, optimizer state.

Used by :class:`~hoiclip_lightning.models.module.HOICLIPModule` to stop (or skip) a step before a NaN or
an infinity reaches the Hungarian matcher, the optimizer or a checkpoint. Every check costs one host sync
per device; names are only computed once a check has failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from ..structures import HOIBatch, HOIOutputs

_OUTPUT_FIELDS = ("sub_boxes", "obj_boxes", "obj_logits", "hoi_logits", "clip_logits", "clip_image_embeds",
                  "hoi_features", "dense_logits")


def _float_items(named: Iterable[tuple[str, Tensor | None]]) -> list[tuple[str, Tensor]]:
    return [(n, t.detach()) for n, t in named
            if isinstance(t, Tensor) and (t.is_floating_point() or t.is_complex()) and t.numel() > 0]


def non_finite_names(named: Iterable[tuple[str, Tensor | None]]) -> list[str]:
    """Names of the tensors that hold a NaN or an infinity (non-float tensors and ``None`` are ignored).

    Args:
        named: ``(name, tensor)`` pairs of any shapes, dtypes and devices.

    Returns:
        The offending names, in input order (empty when everything is finite).
    """
    items = _float_items(named)
    if not items:
        return []
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(items):
        by_device.setdefault(t.device, []).append(i)
    bad: set[int] = set()
    for idx in by_device.values():
        flags = torch.stack([torch.isfinite(items[i][1]).all() for i in idx]).cpu()
        bad.update(i for i, ok in zip(idx, flags.tolist(), strict=True) if not ok)
    return [items[i][0] for i in sorted(bad)]


def all_finite(tensors: Iterable[Tensor | None]) -> bool:
    """``True`` when every element of every float tensor is finite.

    Fused over many tensors (the kernel of ``torch.amp.GradScaler``, with a scale of 1, which leaves the
    values unchanged but writes them in place): meant for gradients, not for tensors that autograd saved.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for _, t in _float_items((str(i), t) for i, t in enumerate(tensors)):
        groups.setdefault((t.device, t.dtype), []).append(t)
    for (device, _), group in groups.items():
        found = torch.zeros(1, device=device, dtype=torch.float32)
        try:
            torch._amp_foreach_non_finite_check_and_unscale_(group, found, torch.ones(1, device=device))
        except (AttributeError, NotImplementedError, RuntimeError):  # dtype or device without the kernel
            found = torch.stack([~torch.isfinite(t).all() for t in group]).any().float()
        if bool(found.item()):
            return False
    return True


def output_tensors(outputs: HOIOutputs) -> list[tuple[str, Tensor | None]]:
    """The float fields of ``outputs`` and of its auxiliary layers, named ``hoi_logits``, ``aux[0].obj_boxes``, ..."""
    named: list[tuple[str, Tensor | None]] = [(f, getattr(outputs, f, None)) for f in _OUTPUT_FIELDS]
    for i, aux in enumerate(outputs.aux or []):
        named += [(f"aux[{i}].{f}", getattr(aux, f, None)) for f in _OUTPUT_FIELDS]
    return named


def batch_tensors(batch: HOIBatch) -> list[tuple[str, Tensor | None]]:
    """The images, CLIP images and target boxes of ``batch``, named ``images``, ``targets[1].obj_boxes``, ..."""
    named: list[tuple[str, Tensor | None]] = [("images", batch.images), ("clip_images", batch.clip_images)]
    for i, t in enumerate(batch.targets):
        named += [(f"targets[{i}].sub_boxes", t.sub_boxes), (f"targets[{i}].obj_boxes", t.obj_boxes)]
    return named


def optimizer_state_tensors(optimizer_states: Iterable[Mapping]) -> list[tuple[str, Tensor | None]]:
    """The tensors of optimizer state dicts (``optimizer_states[0].state[3].exp_avg``, ...)."""
    named: list[tuple[str, Tensor | None]] = []
    for k, opt in enumerate(optimizer_states):
        for idx, state in (opt.get("state") or {}).items():
            named += [(f"optimizer_states[{k}].state[{idx}].{key}", v) for key, v in state.items()]
    return named


def describe(names: list[str], limit: int = 5) -> str:
    """``"a, b, c and 4 more"``: a short list of offending names for an error message."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
