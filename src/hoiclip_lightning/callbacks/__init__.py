"""Lightning callbacks used by the experiment configs (``trainer.callbacks`` in ``configs/``).

* :class:`RunCheckpoint` -- a ``ModelCheckpoint`` whose folder is ``<default_root_dir>/checkpoints``
  (independent of the logger's run id), so ``hoiclip fit --ckpt_path last`` finds the previous run.
* :class:`NonFiniteLossCheckpoint` -- when training stops on a non-finite batch, output, loss or gradient,
  writes a checkpoint of the last finite state and names it in the error.
* :class:`PreemptionCheckpoint` -- on SIGTERM (a cluster's preemption notice), writes ``last.ckpt`` and marks
  the W&B run preempting, so a W&B sweep requeues it and its next start continues from that checkpoint.
* :class:`ImageThroughputMonitor` -- training/validation images per second (Lightning's
  ``ThroughputMonitor`` counting images), also shown in the progress bar.
* :class:`MemoryMonitor` -- GPU memory (allocated, reserved, peak) and process RSS.
* :class:`ValidationCurve` -- the validation mAP after every validation run (``hoiclip fit`` prints it).
* :class:`WandbPredictionLogger` -- a few validation images with their predicted triplets drawn, and
  the per-class AP table of a test run, sent to a ``WandbLogger``.
"""

from .checkpoint import NonFiniteLossCheckpoint, PreemptionCheckpoint, RunCheckpoint
from .monitoring import ImageThroughputMonitor, MemoryMonitor, ValidationCurve
from .wandb import WandbPredictionLogger

__all__ = [
    "ImageThroughputMonitor",
    "MemoryMonitor",
    "NonFiniteLossCheckpoint",
    "PreemptionCheckpoint",
    "RunCheckpoint",
    "ValidationCurve",
    "WandbPredictionLogger",
]
