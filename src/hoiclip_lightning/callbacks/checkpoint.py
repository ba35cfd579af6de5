"""Checkpoints for restartable runs: a fixed checkpoint folder, and a checkpoint when the loss goes non-finite."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

log = logging.getLogger(__name__)


def _default_dir(trainer: L.Trainer) -> str:
    return os.path.join(trainer.default_root_dir, "checkpoints")


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes to ``<trainer.default_root_dir>/checkpoints`` when ``dirpath`` is unset.

    Lightning's default folder contains the logger's run id or version (``wandb/<id>/checkpoints``,
    ``version_3/checkpoints``), which changes with every launch, so ``--ckpt_path last`` would not find
    the checkpoint of the run it should continue. With a fixed folder it does. All arguments are those
    of :class:`~lightning.pytorch.callbacks.ModelCheckpoint`; the configs use two instances: one keeps
    the best ``val/mAP_full`` epoch (and ``last.ckpt`` at each validation), one writes ``last.ckpt``
    every ``every_n_train_steps`` steps so that a killed run loses at most that many steps.
    """

    def _fix_dir(self, trainer: L.Trainer) -> None:
        if self.dirpath is None:
            self.dirpath = _default_dir(trainer)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._fix_dir(trainer)
        super().setup(trainer, pl_module, stage)

    def _find_last_checkpoints(self, trainer: L.Trainer) -> set[str]:
        # called by `--ckpt_path last` before `setup`
        self._fix_dir(trainer)
        return super()._find_last_checkpoints(trainer)


class NonFiniteLossCheckpoint(Callback):
    """When training stops on :class:`~hoiclip_lightning.models.module.NonFiniteLossError`, save the state.

    The checkpoint (``<dirpath>/non_finite_loss.ckpt``, rank-suffixed under DDP) holds the weights,
    optimizer and loop state of the failing step, before any update with the bad loss, so the batch can
    be inspected or training continued with a lower learning rate
    (``--ckpt_path <dirpath>/non_finite_loss.ckpt``). ``--ckpt_path last`` does not pick it up; it keeps
    resuming from the last periodic checkpoint. The path is added to the error's message.

    Args:
        dirpath: folder of the checkpoint; ``None``: ``<trainer.default_root_dir>/checkpoints``.
        filename: file name without extension.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "non_finite_loss") -> None:
        super().__init__()
        self.dirpath = dirpath
        self.filename = filename
        self.last_path: Path | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from ..models.module import NonFiniteLossError

        if not isinstance(exception, NonFiniteLossError):
            return
        folder = Path(self.dirpath or _default_dir(trainer))
        suffix = f"-rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        path = folder / f"{self.filename}{suffix}.ckpt"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # no trainer.save_checkpoint: its barrier would hang when only this rank saw the bad loss
            checkpoint: dict[str, Any] = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, path)
        except Exception as err:  # never mask the original error
            log.error("could not write the non-finite-loss checkpoint %s: %s", path, err)
            return
        self.last_path = path
        note = f"checkpoint of the failing step written to {path}"
        log.error(note)
        if hasattr(exception, "add_note"):
            exception.add_note(note)
        else:  # Python 3.10
            exception.args = (f"{exception.args[0] if exception.args else ''} ({note})",)
