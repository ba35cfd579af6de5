"""Reading ``.pth``/``.ckpt`` files safely (``weights_only``), with errors that name the file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError


def load_torch_file(path: Path, what: str = "checkpoint") -> Any:
    """``torch.load`` on the CPU with ``weights_only=True`` (``argparse.Namespace`` allowed, as the
    reference and DETR store their arguments that way).

    Args:
        path: the file.
        what: how the file is called in the "not found" message (e.g. ``"DETR checkpoint"``).

    Raises:
        CheckpointError: the file is missing or cannot be unpickled.
    """
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise CheckpointError(f"{path}: cannot read the checkpoint ({err})") from err
