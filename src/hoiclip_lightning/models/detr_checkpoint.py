"""Initialise HOICLIP's detector from the public DETR-R50 COCO checkpoint.

The conversion is the one the reference applies (its ``tools/convert_parameters.py`` followed by a
non-strict load), done in memory:

* ``backbone.0.body.*`` -> ``backbone.body.*``; ``input_proj.*`` and ``transformer.encoder.layers.{i}.*``
  (``i < enc_layers``) keep their names;
* ``transformer.decoder.layers.{i}.*`` (``i < dec_layers``) and ``transformer.decoder.norm.*`` ->
  ``transformer.instance_decoder.*`` (DETR layers ``>= dec_layers`` are dropped);
* ``bbox_embed.layers.{0,1,2}.*`` -> both ``hum_bbox_embed.*`` and ``obj_bbox_embed.*``.

The attention modules of this library are ``nn.MultiheadAttention`` like DETR's (only ``batch_first``
differs, which does not change parameter names or layouts), so attention weights map one to one.
DETR's ``query_embed``, ``class_embed`` and the reference's ``obj_class_embed`` / ``interaction_decoder``
are not used by HOICLIP and are reported as unexpected. A checkpoint already converted by the
reference (``detr-r50-pre-2branch-hico.pth``, with ``transformer.instance_decoder.*``,
``hum_bbox_embed.*``, ``obj_bbox_embed.*``) is accepted as well.

A detector file written by :func:`export_detector` (``hoiclip export-detector``, from a trained
checkpoint of this library, for example the synthetic detector pretraining of
``configs/detector_pretrain.yaml``) has this library's names, and also carries the parts DETR lacks
(:data:`LIBRARY_DETECTOR_PREFIXES`: the pair query embeddings and the dense auxiliary head); they load
when the model has them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .._torch_io import load_torch_file
from ..errors import CheckpointError

log = logging.getLogger(__name__)

#: model prefixes a DETR checkpoint is expected to initialise
DETR_PREFIXES = (
    "backbone.",
    "input_proj.",
    "transformer.encoder.",
    "transformer.instance_decoder.",
    "hum_bbox_embed.",
    "obj_bbox_embed.",
)
#: detector parts of this library beyond DETR's, loaded by name when a detector file carries them
EXTRA_DETECTOR_PREFIXES = ("query_embed_h.", "query_embed_o.", "pos_guided_embedd.", "dense_class_embed.")
#: everything :func:`export_detector` writes
LIBRARY_DETECTOR_PREFIXES = DETR_PREFIXES + EXTRA_DETECTOR_PREFIXES
_LAYER = re.compile(r"^transformer\.(encoder|decoder|instance_decoder)\.layers\.(\d+)\.(.*)$")


@dataclass
class DETRLoadReport:
    """What :func:`load_detr_checkpoint` did.

    Attributes:
        mapped: model keys loaded from the checkpoint.
        missing: model keys under the detector prefixes (:data:`DETR_PREFIXES`) the checkpoint did not provide.
        unexpected: checkpoint keys HOICLIP does not use.
    """

    mapped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def convert_detr_state_dict(state_dict: dict[str, Tensor], dec_layers: int) -> tuple[dict[str, Tensor], list[str]]:
    """Rename DETR keys to HOICLIP keys.

    Args:
        state_dict: DETR (or reference 2-branch) state dict.
        dec_layers: instance-decoder layers of the model (DETR decoder layers beyond are dropped).

    Returns:
        ``(converted, unused)``: the HOICLIP-named tensors and the checkpoint keys that have no target.
    """
    converted: dict[str, Tensor] = {}
    unused: list[str] = []
    for key, value in state_dict.items():
        targets: list[str] = []
        match = _LAYER.match(key)
        if key.startswith("backbone.0.body."):
            targets = ["backbone.body." + key[len("backbone.0.body.") :]]
        elif key.startswith("backbone.body."):
            targets = [key]
        elif key.startswith("input_proj."):
            targets = [key]
        elif match and match.group(1) == "encoder":
            targets = [key]
        elif match and match.group(1) in ("decoder", "instance_decoder"):
            if int(match.group(2)) < dec_layers:
                targets = [f"transformer.instance_decoder.layers.{match.group(2)}.{match.group(3)}"]
        elif key.startswith(("transformer.decoder.norm.", "transformer.instance_decoder.norm.")):
            targets = ["transformer.instance_decoder.norm." + key.rsplit("norm.", 1)[1]]
        elif key.startswith("bbox_embed.layers."):
            rest = key[len("bbox_embed.") :]
            targets = ["hum_bbox_embed." + rest, "obj_bbox_embed." + rest]
        elif key.startswith(("hum_bbox_embed.", "obj_bbox_embed.") + EXTRA_DETECTOR_PREFIXES):
            targets = [key]
        if not targets:
            unused.append(key)
        for target in targets:
            converted[target] = value
    return converted, unused


def _read_checkpoint(path: Path) -> dict[str, Tensor]:
    data = load_torch_file(path, "DETR checkpoint")
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a state dict or a dict with a 'model' state dict")
    return data


def load_detr_checkpoint(model: nn.Module, path: str | Path) -> DETRLoadReport:
    """Load the DETR checkpoint into ``model`` (a :class:`~hoiclip_lightning.models.HOICLIP`), non-strictly.

    Args:
        model: the model; its ``config.dec_layers`` decides how many DETR decoder layers are used.
        path: ``detr-r50-e632da11.pth`` (dict with ``model``) or the reference's 2-branch conversion.

    Returns:
        :class:`DETRLoadReport` (also logged).

    Raises:
        CheckpointError: unreadable file, or a mapped tensor whose shape differs from the model's (e.g. a
            ResNet-50 checkpoint for a ResNet-18 model, or another ``hidden_dim``).
    """
    path = Path(path)
    dec_layers = len(model.transformer.instance_decoder.layers)
    converted, unused = convert_detr_state_dict(_read_checkpoint(path), dec_layers)
    own = model.state_dict()
    loadable: dict[str, Tensor] = {}
    mismatched: list[str] = []
    for key, value in converted.items():
        if key not in own:
            unused.append(key)
        elif own[key].shape != value.shape:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            loadable[key] = value
    if mismatched:
        raise CheckpointError(
            f"{path}: {len(mismatched)} tensor(s) do not fit the model (backbone depth or hidden_dim differ?): "
            + "; ".join(mismatched[:5])
        )
    model.load_state_dict(loadable, strict=False)
    missing = [k for k in own if k.startswith(DETR_PREFIXES) and k not in loadable]
    report = DETRLoadReport(mapped=sorted(loadable), missing=missing, unexpected=sorted(set(unused)))
    log.info(
        "DETR checkpoint %s: %d tensors loaded, %d detector tensors missing, %d checkpoint tensors unused",
        path, len(report.mapped), len(report.missing), len(report.unexpected),
    )
    if missing:
        log.warning("detector tensors not in %s (kept at random init): %s", path, missing[:10])
    return report


def export_detector(checkpoint: str | Path, out: str | Path) -> dict[str, Tensor]:
    """Write the detector of a trained checkpoint as a file ``detr_checkpoint`` loads.

    The analogue of DETR's COCO weights for a world without them: train a model on other images (the
    synthetic world drawn with its own seed, ``configs/detector_pretrain.yaml``), then initialise other
    models' detectors from it.

    Args:
        checkpoint: a Lightning ``.ckpt`` of :class:`~hoiclip_lightning.models.HOICLIPModule` (tensors under
            ``model.``) or a plain HOICLIP state dict.
        out: the file to write: ``{"model": {name: tensor}, "source": str(checkpoint)}`` with the tensors
            under :data:`LIBRARY_DETECTOR_PREFIXES` (backbone, input projection, encoder, instance decoder,
            box heads, pair queries, dense head), in this library's names.

    Returns:
        The exported state dict.

    Raises:
        CheckpointError: unreadable file, or no detector tensor in it.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    data = load_torch_file(checkpoint, "checkpoint")
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{checkpoint}: expected a Lightning checkpoint or a state dict")
    prefix = "model." if any(k.startswith("model.") for k in state) else ""
    detector = {k[len(prefix):]: v.detach().clone() for k, v in state.items()
                if k.startswith(prefix) and k[len(prefix):].startswith(LIBRARY_DETECTOR_PREFIXES)}
    if not detector:
        raise CheckpointError(f"{checkpoint}: no detector tensor (keys starting with {LIBRARY_DETECTOR_PREFIXES})")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": detector, "source": str(checkpoint)}, out)
    log.info("wrote %s: %d detector tensors from %s", out, len(detector), checkpoint)
    return detector
