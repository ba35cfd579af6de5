"""Dataloader throughput (images/s) of HOIDataModule on the synthetic dataset at the quickstart resolution.

    python benchmarks/dataloader_throughput.py --root data/synthetic --workers 2 --batches 40

Generates the synthetic dataset first if ``--root`` does not exist. Prints the figures and the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()

    from hoiclip_lightning.data import HOIDataModule, generate_synthetic_dataset

    root = Path(args.root)
    if not (root / "vocabulary.json").is_file():
        t0 = time.perf_counter()
        generate_synthetic_dataset(root, seed=0, num_train=400, num_test=100)
        print(f"generated the synthetic dataset in {time.perf_counter() - t0:.1f} s")
    dm = HOIDataModule(root=str(root), batch_size=args.batch_size, num_workers=args.workers,
                       train_scales=[176, 192, 208, 224], train_max_size=288, crop_resize_scales=[160, 192, 224],
                       crop_min_size=128, crop_max_size=224, test_scale=208, test_max_size=288, clip_image_size=64)
    dm.setup("fit")
    loaders = (("train (augmented)", dm.train_dataloader()), ("test (eval transform)", dm.test_dataloader()))
    for split, loader in loaders:
        it = iter(loader)
        next(it)  # worker start-up is not counted
        t0 = time.perf_counter()
        images = 0
        for _ in range(args.batches):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(loader)
                batch = next(it)
            images += len(batch)
        dt = time.perf_counter() - t0
        print(f"{split}: {images / dt:.1f} images/s ({images} images, {args.workers} workers, "
              f"batch {args.batch_size}, shape {tuple(batch.images.shape)})")
    print("machine:", describe_machine())


if __name__ == "__main__":
    main()
