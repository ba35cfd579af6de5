"""OpenAI's CLIP weights as users hold them: the TorchScript archives (``ViT-B-32.pt``) and their state dicts.

OpenAI publishes CLIP as TorchScript archives, the files its ``clip`` package and the reference HOICLIP
code download. ``torch.load(weights_only=True)`` refuses them, and ``torch.jit.load`` would rebuild the
archive's TorchScript program. :func:`read_torchscript_state_dict` reads the tensors only: the archive is a
zip whose ``data.pkl`` describes the module tree; it is unpickled by a restricted unpickler that knows
tensors, storages, ordered dicts and the TorchScript list helpers, turns every TorchScript class into a
plain record of its attributes, and refuses any other global (nothing of the archive is executed).

OpenAI trained every CLIP with QuickGELU, while open_clip's plain names (``ViT-B-32``) use GELU, so the
weights must be recognised as OpenAI's whatever their form (:func:`openai_weights_origin`): a TorchScript
archive, or a state dict saved from one (it keeps the archive's extra entries ``input_resolution``,
``context_length``, ``vocab_size``). The CLIP architecture of an OpenAI-layout state dict is read from
its tensors by :func:`openai_clip_architecture` and matched against open_clip's registered configs by
:func:`registered_clip_name` (``hoiclip convert-official`` uses both).

    >>> arch = openai_clip_architecture({"visual.conv1.weight": torch.zeros(64, 3, 16, 16),
    ...     "visual.positional_embedding": torch.zeros(17, 64), "visual.proj": torch.zeros(64, 32),
    ...     "visual.transformer.resblocks.0.ln_1.weight": torch.zeros(64),
    ...     "visual.transformer.resblocks.1.ln_1.weight": torch.zeros(64),
    ...     "positional_embedding": torch.zeros(77, 64), "token_embedding.weight": torch.zeros(49408, 64),
    ...     "transformer.resblocks.0.ln_1.weight": torch.zeros(64),
    ...     "transformer.resblocks.1.ln_1.weight": torch.zeros(64)})
    >>> arch["vision_cfg"], registered_clip_name(arch)
    ({'image_size': 64, 'layers': 2, 'width': 64, 'patch_size': 16}, 'hoiclip-tiny')
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError

__all__ = [
    "OPENAI_ARCHIVE_KEYS",
    "is_torchscript_archive",
    "openai_clip_architecture",
    "openai_weights_origin",
    "read_torchscript_state_dict",
    "registered_clip_name",
]

#: entries of OpenAI's archives (and of state dicts saved from them) that are not weights of the model
OPENAI_ARCHIVE_KEYS = ("input_resolution", "context_length", "vocab_size")

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with ``code/`` or ``constants.pkl`` beside ``data.pkl``)."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    has_data = any(n.endswith("/data.pkl") for n in names)
    return has_data and any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


class _ScriptObject:
    """An object of a TorchScript class in the archive: only its pickled state is kept, no code runs."""

    qualified_name = "?"

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> Tensor:
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


def _rebuild_parameter(data: Tensor, *_: Any) -> Tensor:
    return data


def _identity_list(values: Any) -> list:
    return list(values)


def _restore_type_tag(value: Any, _type: Any) -> Any:
    return value


_ALLOWED_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch.jit._pickle", "build_intlist"): _identity_list,
    ("torch.jit._pickle", "build_doublelist"): _identity_list,
    ("torch.jit._pickle", "build_boollist"): _identity_list,
    ("torch.jit._pickle", "build_tensorlist"): _identity_list,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
}


class _ArchiveUnpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, prefix: str, source: Path, data: bytes) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.source = archive, prefix, source
        self.storages: dict[str, Tensor] = {}
        self.classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            qualified = f"{module}.{name}"
            if qualified not in self.classes:
                self.classes[qualified] = type(name, (_ScriptObject,), {"qualified_name": qualified})
            return self.classes[qualified]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) in _ALLOWED_FUNCTIONS:
            return _ALLOWED_FUNCTIONS[(module, name)]
        raise CheckpointError(
            f"{self.source}: the TorchScript archive refers to {module}.{name}, which a CLIP weights archive never "
            "needs; it is not loaded (nothing of it was run)")

    def persistent_load(self, pid: Any) -> Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise CheckpointError(f"{self.source}: unexpected persistent record {pid!r:.80} in the TorchScript archive")
        storage_type, key = pid[1], str(pid[2])
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else storage_type
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"{self.source}: storage {key} has no known dtype ({storage_type!r:.60})")
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}/data/{key}")
            self.storages[key] = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return self.storages[key]


def _collect_tensors(obj: Any, prefix: str, out: dict[str, Tensor], depth: int = 0) -> None:
    if depth > 64:
        raise CheckpointError("TorchScript module tree deeper than 64 levels")
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        return
    for name, value in state.items():
        if isinstance(value, Tensor):
            out[prefix + str(name)] = value
        elif isinstance(value, _ScriptObject):
            _collect_tensors(value, f"{prefix}{name}.", out, depth + 1)


def read_torchscript_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a TorchScript archive under their module paths (``visual.conv1.weight`` ...).

    Nothing of the archive's code is run and no global outside tensors, storages and the TorchScript list
    helpers is loaded. Every tensor attribute of every module is returned (parameters, buffers and tensor
    attributes such as OpenAI's ``input_resolution``), in the archive's dtype, on the CPU, cloned.

    Args:
        path: the archive (e.g. OpenAI's ``ViT-B-32.pt``).

    Returns:
        ``{name: tensor}``.

    Raises:
        CheckpointError: the file is missing, not a TorchScript archive, or its data refers to anything else.
    """
    path = Path(path)
    if not is_torchscript_archive(path):
        raise CheckpointError(f"{path}: not a TorchScript archive")
    with zipfile.ZipFile(path) as archive:
        data_pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(data_pkl) != 1:
            raise CheckpointError(f"{path}: expected one <name>/data.pkl in the TorchScript archive, found {data_pkl}")
        prefix = data_pkl[0].split("/", 1)[0]
        unpickler = _ArchiveUnpickler(archive, prefix, path, archive.read(data_pkl[0]))
        try:
            root = unpickler.load()
        except CheckpointError:
            raise
        except Exception as err:  # noqa: BLE001 - a malformed archive, named in the message
            raise CheckpointError(f"{path}: cannot read the TorchScript archive ({err})") from err
    out: dict[str, Tensor] = {}
    _collect_tensors(root, "", out)
    if not out:
        raise CheckpointError(f"{path}: the TorchScript archive holds no tensors")
    return {k: v.clone() for k, v in out.items()}


def _load_state_dict(path: Path) -> dict[str, Tensor] | None:
    """A plain ``torch.save`` state dict (``weights_only``, memory-mapped), ``None`` for other files."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip-format torch file of plain data
        return None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        return None
    if all(str(k).startswith("module.") for k in obj):
        obj = {str(k)[len("module."):]: v for k, v in obj.items()}
    return obj


def openai_weights_origin(path: str | Path) -> tuple[str, dict[str, Tensor] | None]:
    """What a local CLIP weights file is, and its state dict when this module reads it.

    Returns:
        ``("torchscript", state)``: a TorchScript archive (OpenAI's format; ``state`` read safely);
        ``("openai_state_dict", state)``: a state dict saved from such an archive (it has
        :data:`OPENAI_ARCHIVE_KEYS`); ``("state_dict", state)``: another plain state dict;
        ``("other", None)``: any other file (safetensors ...), left to open_clip.
    """
    path = Path(path)
    if is_torchscript_archive(path):
        return "torchscript", read_torchscript_state_dict(path)
    state = _load_state_dict(path)
    if state is None:
        return "other", None
    if all(k in state for k in OPENAI_ARCHIVE_KEYS):
        return "openai_state_dict", state
    return "state_dict", state


def _count(state: dict[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def openai_clip_architecture(state: dict[str, Tensor]) -> dict[str, Any]:
    """The shape-determined part of the open_clip config of a ViT CLIP in OpenAI's key layout.

    Head counts cannot be read from the tensors and are not part of the result.

    Returns:
        ``{"embed_dim", "vision_cfg": {image_size, layers, width, patch_size}, "text_cfg": {context_length,
        vocab_size, width, layers}}``.

    Raises:
        CheckpointError: a tensor it needs is missing (not an OpenAI-layout ViT CLIP).
    """
    need = ("visual.conv1.weight", "visual.positional_embedding", "visual.proj", "positional_embedding",
            "token_embedding.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise CheckpointError(f"not a ViT CLIP in OpenAI's layout: no {missing}")
    conv = state["visual.conv1.weight"]
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = round((int(state["visual.positional_embedding"].shape[0]) - 1) ** 0.5)
    token = state["token_embedding.weight"]
    return {
        "embed_dim": int(state["visual.proj"].shape[1]),
        "vision_cfg": {"image_size": grid * patch, "layers": _count(state, "visual.transformer.resblocks."),
                       "width": width, "patch_size": patch},
        "text_cfg": {"context_length": int(state["positional_embedding"].shape[0]),
                     "vocab_size": int(token.shape[0]), "width": int(token.shape[1]),
                     "layers": _count(state, "transformer.resblocks.")},
    }


def config_architecture(config: dict[str, Any]) -> dict[str, Any] | None:
    """The part of an open_clip config that :func:`openai_clip_architecture` reads (``None``: not a plain ViT)."""
    vision, text = config.get("vision_cfg") or {}, config.get("text_cfg") or {}
    if not isinstance(vision.get("width"), int) or vision.get("timm_model_name") or text.get("hf_model_name"):
        return None
    size = vision.get("image_size")
    return {
        "embed_dim": config.get("embed_dim"),
        "vision_cfg": {"image_size": size[0] if isinstance(size, (list, tuple)) else size,
                       "layers": vision.get("layers"), "width": vision.get("width"),
                       "patch_size": vision.get("patch_size")},
        "text_cfg": {"context_length": text.get("context_length", 77), "vocab_size": text.get("vocab_size", 49408),
                     "width": text.get("width"), "layers": text.get("layers")},
    }


def registered_clip_name(architecture: dict[str, Any], prefer_quick_gelu: bool = True) -> str | None:
    """The open_clip architecture whose shapes equal ``architecture`` (:func:`openai_clip_architecture`).

    Among several matches, one with ``quick_gelu`` in its config comes first (``prefer_quick_gelu``), then
    the shortest name. ``None`` when no registered config matches.
    """
    import open_clip

    from .clip_encoder import register_library_clips

    register_library_clips()
    configs = open_clip.factory._MODEL_CONFIGS
    matches = [name for name, cfg in configs.items() if config_architecture(cfg) == architecture]
    if not matches:
        return None
    matches.sort(key=lambda n: (prefer_quick_gelu != bool(configs[n].get("quick_gelu", False)), len(n), n))
    return matches[0]


def describe_architecture(architecture: dict[str, Any]) -> str:
    """One line: ``image tower width 768 x 12 layers, patch 32, 224 px; text width 512 x 12 layers; embed 512``."""
    v, t = architecture["vision_cfg"], architecture["text_cfg"]
    return (f"image tower width {v['width']} x {v['layers']} layers, patch {v['patch_size']}, {v['image_size']} px; "
            f"text width {t['width']} x {t['layers']} layers, context {t['context_length']}; "
            f"embed {architecture['embed_dim']}")
