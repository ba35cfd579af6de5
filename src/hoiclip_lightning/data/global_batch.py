"""The global batch of a run: the per-device batch and the gradient accumulation that give it on any device count.

The paper trains with 16 images per optimizer step (2 GPUs x 8 images). With ``global_batch_size: 16``
the same step is made on 1 GPU (8 images x 2 accumulated batches), 2 GPUs (8 x 1), 8 GPUs (2 x 1), or
a CPU; the learning rate, the schedule and the number of optimizer steps per epoch stay the paper's.

Examples:
    >>> plan_global_batch(16, world_size=1, max_per_device=8)
    BatchPlan(global_batch_size=16, world_size=1, per_device_batch=8, accumulate_grad_batches=2)
    >>> plan_global_batch(16, world_size=8, max_per_device=8).per_device_batch
    2
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigurationError


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step of ``global_batch_size`` images is made.

    Attributes:
        global_batch_size: images per optimizer step, all devices and accumulated batches together.
        world_size: devices (processes) sharing the step.
        per_device_batch: images per training batch of one device.
        accumulate_grad_batches: batches whose gradients each device accumulates before the step.
    """

    global_batch_size: int
    world_size: int
    per_device_batch: int
    accumulate_grad_batches: int

    def __str__(self) -> str:
        return (f"global batch {self.global_batch_size} = {self.world_size} device(s) x {self.per_device_batch} "
                f"images x {self.accumulate_grad_batches} accumulated batch(es)")


def _divisors(n: int, at_most: int | None = None) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0 and (at_most is None or d <= at_most)]


def plan_global_batch(global_batch_size: int, world_size: int, max_per_device: int) -> BatchPlan:
    """Per-device batch and accumulation for ``global_batch_size`` images per step on ``world_size`` devices.

    Each device takes ``global_batch_size / world_size`` images per step: in one batch when that is at
    most ``max_per_device`` (the most images a device holds at once, ``batch_size`` of the datamodule),
    else in ``accumulate_grad_batches`` batches of ``max_per_device``.

    Raises:
        ConfigurationError: a value below 1, a device count that does not divide the global batch, or a
            per-device share that is not a whole number of ``max_per_device`` batches (the message lists
            the values that work).
    """
    for name, value in (("global_batch_size", global_batch_size), ("world_size", world_size),
                        ("batch_size", max_per_device)):
        if value < 1:
            raise ConfigurationError(f"{name} must be a positive integer, got {value}")
    if global_batch_size % world_size:
        raise ConfigurationError(
            f"global_batch_size {global_batch_size} cannot be split evenly over {world_size} devices; use a device "
            f"count that divides it ({', '.join(map(str, _divisors(global_batch_size)))}) or another "
            "global_batch_size")
    share = global_batch_size // world_size
    if share <= max_per_device:
        return BatchPlan(global_batch_size, world_size, share, 1)
    if share % max_per_device:
        raise ConfigurationError(
            f"global_batch_size {global_batch_size} on {world_size} device(s) is {share} images per device, more "
            f"than batch_size {max_per_device} at once, and {share} is not a multiple of {max_per_device}, so no "
            f"whole number of accumulated batches gives it; set batch_size to one of "
            f"{', '.join(map(str, _divisors(share, at_most=max_per_device)))}")
    return BatchPlan(global_batch_size, world_size, max_per_device, share // max_per_device)
