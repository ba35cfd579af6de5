"""A training DataLoader whose position can be saved and restored, so a killed run resumes mid-epoch exactly.

Lightning restarts the training dataloader from its first batch when a run resumes from a mid-epoch
checkpoint, unless the loader is *stateful* (has ``state_dict``/``load_state_dict``; Lightning saves the
state in the checkpoint's loop state and restores it before the first batch is drawn).
:class:`ResumableDataLoader` is such a loader:

* the order of an epoch is a seeded permutation of ``(seed, epoch)`` split over the ranks
  (:class:`ResumableSampler`, a ``DistributedSampler``, so Lightning keeps it under DDP instead of
  inserting its own);
* its state is ``(epoch, batches handed out in that epoch)``; on restore the sampler skips those batches;
* each sample's random augmentation draws from a generator seeded by ``(seed, epoch, position in the
  epoch)`` in isolation from the global random state (:class:`SeededSampleDataset`), so a sample is
  augmented the same way whichever worker or process loads it and whether or not the run was resumed.

Together with the global random state kept in the checkpoint by ``HOICLIPModule`` (dropout), a resumed
run continues bit-for-bit where the killed one stopped (CPU; GPU kernels may add their own
non-determinism).

Examples:
    >>> data = list(range(10))
    >>> loader = ResumableDataLoader(data, batch_size=4, seed=0, num_replicas=1, rank=0)
    >>> first = [b.tolist() for b in loader]
    >>> state = {"epoch": 0, "batches": 1, "seed": 0}
    >>> loader2 = ResumableDataLoader(data, batch_size=4, seed=0, num_replicas=1, rank=0)
    >>> loader2.load_state_dict(state)
    >>> [b.tolist() for b in loader2] == first[1:]
    True
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant that spreads consecutive integers over the seed space


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the ``position``-th sample of ``epoch`` (a 63-bit integer)."""
    x = (seed * _MIX + epoch) * _MIX + position
    x ^= x >> 31
    return (x * _MIX) & 0x7FFF_FFFF_FFFF_FFFF


class SeededSampleDataset(Dataset):
    """Wraps a dataset whose transforms draw from torch's global generator.

    Indexed by ``(index, seed)`` pairs; each item is loaded with the global CPU generator seeded with
    ``seed`` and restored afterwards, so the model's random state is untouched by data loading.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only: CUDA generators stay untouched
            return self.dataset[index]


class ResumableSampler(DistributedSampler):
    """Seeded per-epoch shuffle over ranks that yields ``(index, augmentation seed)`` and can skip batches.

    Args:
        dataset: the dataset (only its length is used).
        batch_size: images per batch (to turn skipped batches into skipped samples).
        shuffle: permute each epoch (``False``: dataset order).
        seed: permutation and augmentation seed; ``None`` reads ``PL_GLOBAL_SEED`` (set by
            ``seed_everything``), else 0.
        num_replicas, rank: ranks; ``None`` asks ``torch.distributed`` (1 and 0 when it is not initialised).
        drop_last: drop the tail that does not divide evenly over the ranks (else pad by repetition).
    """

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int | None = None,
                 num_replicas: int | None = None, rank: int | None = None, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        initialised = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if initialised else 1
        if rank is None:
            rank = dist.get_rank() if initialised else 0
        if seed is None:
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.batch_size = batch_size
        self._skip: tuple[int, int] | None = None  # (epoch, batches) to skip once

    def skip_batches(self, epoch: int, batches: int) -> None:
        """Make the next iteration over ``epoch`` start after its first ``batches`` batches."""
        self._skip = (epoch, batches)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())
        start = 0
        if self._skip is not None and self._skip[0] == self.epoch:
            start = min(self._skip[1] * self.batch_size, len(indices))
        self._skip = None
        # positions are global over ranks (index i of rank r is sample i * num_replicas + r of the epoch)
        for pos in range(start, len(indices)):
            yield indices[pos], sample_seed(self.seed, self.epoch, pos * self.num_replicas + self.rank)


def _default_collate(batch: list[Any]) -> Any:
    from torch.utils.data import default_collate

    return default_collate(batch)


class ResumableDataLoader(DataLoader):
    """A shuffling training DataLoader with ``state_dict``/``load_state_dict`` (see the module docstring).

    Args:
        dataset: the training dataset (transforms may use torch's global generator).
        batch_size: images per batch.
        seed: see :class:`ResumableSampler`.
        shuffle: permute each epoch.
        drop_last: drop the last incomplete batch.
        collate_fn: batch collation.
        num_replicas, rank: see :class:`ResumableSampler` (``None``: from ``torch.distributed``).
        **kwargs: other ``DataLoader`` arguments (``num_workers``, ``pin_memory``, ...).
    """

    def __init__(self, dataset: Dataset, batch_size: int = 1, seed: int | None = None, shuffle: bool = True,
                 drop_last: bool = False, collate_fn: Callable[[list[Any]], Any] | None = None,
                 num_replicas: int | None = None, rank: int | None = None, **kwargs: Any) -> None:
        sampler = kwargs.pop("sampler", None)
        if not isinstance(sampler, ResumableSampler):
            sampler = ResumableSampler(dataset, batch_size, shuffle=shuffle, seed=seed, num_replicas=num_replicas,
                                       rank=rank)
        wrapped = dataset if isinstance(dataset, SeededSampleDataset) else SeededSampleDataset(dataset)
        # the iterator draws its worker base seed from `generator`; a private one leaves the global state alone
        kwargs.setdefault("generator", torch.Generator().manual_seed(0))
        super().__init__(wrapped, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                         collate_fn=collate_fn or _default_collate, **kwargs)
        self._epoch = 0
        self._batches = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        skip = sampler._skip
        self._epoch = sampler.epoch
        self._batches = skip[1] if skip is not None and skip[0] == sampler.epoch else 0
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``epoch``: the epoch being iterated; ``batches``: batches handed out in it; ``seed``."""
        return {"epoch": self._epoch, "batches": self._batches, "seed": int(self.sampler.seed)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue after the saved position (a finished epoch continues with the next one)."""
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        if int(state.get("seed", sampler.seed)) != sampler.seed:
            raise ValueError(f"the checkpoint's data order was drawn with seed {state['seed']}, this run uses "
                             f"seed {sampler.seed}; resume with the same seed_everything")
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        sampler.set_epoch(epoch)
        sampler.skip_batches(epoch, batches)
