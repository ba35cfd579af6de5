"""Throughput (images per second) and memory logging."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ThroughputMonitor
from lightning.pytorch.trainer.states import RunningStage


def _num_images(batch: Any) -> int:
    """Images in an :class:`~hoiclip_lightning.structures.HOIBatch` (or any sized batch)."""
    images = getattr(batch, "images", None)
    return int(images.shape[0]) if images is not None else len(batch)


class ImageThroughputMonitor(ThroughputMonitor):
    """Lightning's ``ThroughputMonitor`` counting images, with ``/`` as separator.

    Logs (to the logger, every ``log_every_n_steps`` once ``window_size`` batches were seen)
    ``train/device/samples_per_sec`` (images/s of one rank), ``train/samples_per_sec`` (all ranks; DDP
    only), ``train/device/batches_per_sec``, the running totals ``train/samples`` and ``train/time``, and
    the ``validate/...`` counterparts; validation time is excluded from the training rate.
    ``prog_bar: true`` also shows the training images/s in the progress bar as
    ``img/s``. No FLOP counts (the model has no ``flops_per_batch``).

    Args:
        window_size: batches in the moving window of the rate.
        prog_bar: show ``img/s`` in the progress bar.
    """

    def __init__(self, window_size: int = 20, prog_bar: bool = True) -> None:
        super().__init__(batch_size_fn=_num_images, window_size=window_size, separator="/")
        self.prog_bar = prog_bar
        self._module_has_flops = False  # silence the FLOPs warning: we only count images

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, *args)
        if not self.prog_bar or trainer.global_rank != 0:
            return
        throughput = self._throughputs.get(RunningStage.TRAINING)
        if throughput is None:
            return
        rate = throughput.compute().get("device/samples_per_sec")
        if rate is not None:
            pl_module.log("img/s", float(rate) * trainer.world_size, prog_bar=True, logger=False, on_step=True,
                          on_epoch=False, batch_size=1)


class MemoryMonitor(Callback):
    """Log memory every ``every_n_steps`` training steps.

    Keys: ``memory/gpu_allocated_gib``, ``memory/gpu_reserved_gib``, ``memory/gpu_peak_gib`` (CUDA runs;
    the peak since the start of fit) and ``memory/cpu_rss_gib`` (resident memory of the process, where
    ``/proc`` or ``resource`` can tell). ``prog_bar: true`` shows the GPU peak as ``gpu_gib``.

    Args:
        every_n_steps: logging period in optimizer steps.
        prog_bar: show the GPU peak in the progress bar.
    """

    def __init__(self, every_n_steps: int = 50, prog_bar: bool = True) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"MemoryMonitor: every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.prog_bar = prog_bar

    @staticmethod
    def _cpu_rss_gib() -> float | None:
        try:
            with open(f"/proc/{os.getpid()}/statm") as fh:
                pages = int(fh.read().split()[1])
            return pages * os.sysconf("SC_PAGE_SIZE") / 2**30
        except (OSError, ValueError, IndexError):
            try:
                import resource

                return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
            except Exception:
                return None

    def memory_stats(self, device: torch.device) -> dict[str, float]:
        stats: dict[str, float] = {}
        if device.type == "cuda" and torch.cuda.is_available():
            stats["memory/gpu_allocated_gib"] = torch.cuda.memory_allocated(device) / 2**30
            stats["memory/gpu_reserved_gib"] = torch.cuda.memory_reserved(device) / 2**30
            stats["memory/gpu_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        rss = self._cpu_rss_gib()
        if rss is not None:
            stats["memory/cpu_rss_gib"] = rss
        return stats

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.every_n_steps != 0 and step != 1:
            return
        stats = self.memory_stats(pl_module.device)
        if not stats:
            return
        for logger in trainer.loggers:
            logger.log_metrics(stats, step=step)
        if self.prog_bar and "memory/gpu_peak_gib" in stats:
            pl_module.log("gpu_gib", stats["memory/gpu_peak_gib"], prog_bar=True, logger=False, on_step=True,
                          on_epoch=False, batch_size=1)


class ValidationCurve(Callback):
    """Keep the value of validation metrics after every validation run and print the curve at the end of fit.

    The curve (``step -> val/mAP_full``, and the TFE column) is what tells whether a run is still
    improving; :meth:`report` gives it as text, which ``hoiclip fit`` prints to stdout when ``fit`` ends.
    It is stored in checkpoints, so a resumed run reports the whole curve. Sanity-check runs are not recorded.

    Args:
        metrics: logged metric names to record, in column order.

    Attributes:
        points: ``[(global_step, {metric: value})]`` in order of validation.
    """

    def __init__(self, metrics: list[str] | None = None) -> None:
        self.metrics = list(metrics) if metrics is not None else ["val/mAP_full", "val/tfe/mAP_full"]
        self.points: list[tuple[int, dict[str, float]]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        values = {m: float(trainer.callback_metrics[m]) for m in self.metrics if m in trainer.callback_metrics}
        if values:
            self.points.append((int(trainer.global_step), values))

    def format(self) -> str:
        """The curve as a Markdown table (one row per validation run; ``-`` for a missing value)."""
        if not self.points:
            return ""
        lines = ["| step | " + " | ".join(self.metrics) + " |", "|---:|" + "---:|" * len(self.metrics)]
        for step, values in self.points:
            cells = [f"{values[m]:.2f}" if m in values else "-" for m in self.metrics]
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def report(self) -> str:
        """A title line and :meth:`format`'s table, or ``""`` before the first validation run."""
        return f"validation curve ({len(self.points)} runs)\n{self.format()}" if self.points else ""

    def state_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "points": [(s, dict(v)) for s, v in self.points]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.points = [(int(s), dict(v)) for s, v in state_dict.get("points", [])]
