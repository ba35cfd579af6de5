"""Checkpoints for restartable runs: a fixed checkpoint folder, and a checkpoint when the loss goes non-finite."""

from __future__ import annotations

import logging
import os
import signal
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
    every ``every_n_train_steps`` steps so that a killed run loses at most that many steps. With
    ``save_last`` and epoch-triggered saving, ``last.ckpt`` is written at every validation, also when the
    monitored metric did not improve (Lightning 2.6 alone writes it only with a new top-k checkpoint).
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

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_when_not_saved(trainer, at_train_epoch_end=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._save_last_when_not_saved(trainer, at_train_epoch_end=False)

    def _save_last_when_not_saved(self, trainer: L.Trainer, at_train_epoch_end: bool) -> None:
        # Lightning >= 2.6 writes last.ckpt at an epoch-triggered save only when a top-k checkpoint was saved
        # at that step; here it is written at every one, so the final state of a run whose last validations
        # did not improve the monitored metric is not lost (a no-op where Lightning already wrote it)
        if (self.save_last and self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0
                and self._should_save_on_train_epoch_end(trainer) == at_train_epoch_end
                and not self._should_skip_saving_checkpoint(trainer)):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class NonFiniteLossCheckpoint(Callback):
    """When training stops on :class:`~hoiclip_lightning.errors.NonFiniteLossError`, save the last finite state.

    :class:`~hoiclip_lightning.models.HOICLIPModule` raises that error on a non-finite batch, model output,
    loss or gradient *before* the optimizer step, so the weights and optimizer state are still those of
    the last finite update. This callback writes them, with the loop state of the failing step, to
    ``<dirpath>/non_finite_loss.ckpt`` (rank-suffixed under DDP) and adds the path to the error's
    message: resume from it with a lower learning rate (``--ckpt_path <dirpath>/non_finite_loss.ckpt``),
    or inspect the batch. ``--ckpt_path last`` does not pick it up; it keeps resuming from the last
    periodic checkpoint. When the state itself is no longer finite (an update overflowed), nothing is
    written and the message names the last checkpoint written before. ``hoiclip fit`` adds this
    callback when the config has none.

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
        from ..errors import NonFiniteLossError

        if not isinstance(exception, NonFiniteLossError):
            return
        folder = Path(self.dirpath or _default_dir(trainer))
        suffix = f"-rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        path = folder / f"{self.filename}{suffix}.ckpt"
        try:
            # no trainer.save_checkpoint: its barrier would hang when only this rank saw the bad value;
            # dump_checkpoint calls HOICLIPModule.on_save_checkpoint, which refuses a non-finite state
            checkpoint: dict[str, Any] = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            folder.mkdir(parents=True, exist_ok=True)
            trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, path)
        except Exception as err:  # never mask the original error
            earlier = sorted({p for cb in trainer.checkpoint_callbacks
                              for p in (getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", "")) if p})
            note = (f"no guard checkpoint written ({type(err).__name__}: {err}); the checkpoints written before are "
                    f"finite: {earlier or 'none'}")
            log.error(note)
            _add_note(exception, note)
            return
        self.last_path = path
        note = (f"guard checkpoint with the last finite weights and optimizer state (before step "
                f"{checkpoint.get('global_step')}) written to {path}; continue with --ckpt_path {path} and a lower "
                "learning rate")
        log.error(note)
        _add_note(exception, note)


def _add_note(exception: BaseException, note: str) -> None:
    if hasattr(exception, "add_note"):
        exception.add_note(note)
    else:  # Python 3.10
        exception.args = (f"{exception.args[0] if exception.args else ''} ({note})",)


class PreemptionCheckpoint(Callback):
    """On SIGTERM, write ``last.ckpt`` and mark the W&B run as preempting (it is then requeued by its sweep).

    Clusters announce a preemption (SLURM, spot instances) with SIGTERM. Lightning then stops after the
    current batch by raising ``SIGTERMException`` on every rank; this callback catches that moment and
    writes the full training state to ``<dirpath>/last.ckpt`` (the file ``--ckpt_path last`` and
    :func:`~hoiclip_lightning.sweep.isolate_agent_run` resume from), so nothing since the last periodic
    checkpoint is lost. It also calls ``mark_preempting()`` on every logger experiment that has it (a
    ``WandbLogger``'s run) and makes the process exit with status 143 (128 + SIGTERM; Lightning alone exits
    with 0, which W&B reads as a finished run): W&B puts a preempted sweep run back in the queue, and the
    agent that takes it gets the same run id, hence the same run folder and this checkpoint.
    ``hoiclip fit`` adds this callback to runs started by a W&B sweep agent; other configs may list it.

    Args:
        dirpath: folder of the checkpoint; ``None``: ``<trainer.default_root_dir>/checkpoints``.
        filename: file name without extension (``last``: the file ``--ckpt_path last`` looks for).
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last") -> None:
        super().__init__()
        self.dirpath = dirpath
        self.filename = filename
        self.last_path: Path | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not trainer.received_sigterm:
            return
        path = Path(self.dirpath or _default_dir(trainer)) / f"{self.filename}.ckpt"
        try:
            trainer.save_checkpoint(path)  # every rank raised SIGTERMException (Lightning broadcasts it)
            self.last_path = path
            log.warning("SIGTERM: training state at step %d written to %s", trainer.global_step, path)
        except Exception as err:  # noqa: BLE001 - the run is stopping anyway; say why nothing was written
            log.error("SIGTERM: could not write %s: %s", path, err)
        for logger in trainer.loggers:
            mark = getattr(getattr(logger, "experiment", None), "mark_preempting", None)
            if callable(mark):
                mark()
        # Lightning's SIGTERMException is a SystemExit with no code (exit status 0: "finished", never
        # requeued); give it the conventional status of a SIGTERM death, 128 + 15
        if isinstance(exception, SystemExit) and not exception.code:
            exception.code = 128 + signal.SIGTERM
