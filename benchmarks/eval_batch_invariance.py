"""Does the mAP depend on the eval batch size? One checkpoint validated at several batch sizes, both layouts.

Trains the quickstart's tiny model for ``--train-steps`` on an easy synthetic world (or takes
``--ckpt``), resizes the test images to ``--num-test`` different sizes, then validates the same weights
at every ``--batch-sizes`` value (and with ``--ddp`` on 2 CPU processes) with ``net.padding_invariant``
true (the default) and false (the reference's behaviour), and prints the table of ``val/mAP_full``.
Then, in-process with :class:`~hoiclip_lightning.inference.HOIDetector`, it compares every image's
triplets at each batch size with batch size 1: the largest score difference and how many images change
their top triplet.

    python benchmarks/eval_batch_invariance.py --out /tmp/invariance --train-steps 300

Figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], log: Path) -> None:
    with log.open("w") as fh:
        proc = subprocess.run([sys.executable, "-m", "hoiclip_lightning.cli", *args], cwd=ROOT, stdout=fh,
                              stderr=subprocess.STDOUT, env=dict(os.environ))
    if proc.returncode:
        raise SystemExit(f"command failed (see {log}): hoiclip {' '.join(args)}")


def _last_metric(folder: Path) -> float:
    with (folder / "csv/version_0/metrics.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val/mAP_full")]
    return float(rows[-1]["val/mAP_full"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ckpt", type=Path, default=None, help="skip training and use this checkpoint")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--num-test", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 3, 7, 16])
    parser.add_argument("--ddp", action="store_true", help="also validate on 2 CPU processes (batch 3)")
    args = parser.parse_args()
    out = args.out
    data = out / "data"
    if not data.exists():
        from hoiclip_lightning.data import generate_synthetic_dataset, resize_split_images

        generate_synthetic_dataset(data, seed=0, num_train=400, num_test=args.num_test, image_size=160,
                                   max_people=1, distractors=False, clutter=False)
        sizes = [(96 + 11 * (i % 9), 90 + 13 * ((i * 5) % 7)) for i in range(args.num_test)]
        print(f"test images of {resize_split_images(data, 'test', sizes)} different sizes")
    common = ["--config", str(ROOT / "configs/quickstart.yaml"), "--data.init_args.root", str(data),
              "--trainer.max_time", "null"]
    checkpoint = args.ckpt
    if checkpoint is None:
        found = sorted((out / "train/checkpoints").glob("*.ckpt"))
        if not found:
            start = time.perf_counter()
            _run(["fit", *common, "--trainer.max_steps", str(args.train_steps), "--trainer.default_root_dir",
                  str(out / "train"), "--trainer.logger", "false", "--trainer.limit_val_batches", "0",
                  "--trainer.callbacks", json.dumps([{
                      "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                      "init_args": {"dirpath": str(out / "train/checkpoints"), "save_last": True}}]),
                  "--trainer.enable_checkpointing", "true", "--trainer.enable_progress_bar", "false",
                  "--test_after_fit", "false"], out / "train.log")
            print(f"trained {args.train_steps} steps in {time.perf_counter() - start:.0f} s")
            found = sorted((out / "train/checkpoints").glob("*.ckpt"))
        checkpoint = found[-1]
    rows = []
    for invariant in ("true", "false"):
        for batch in args.batch_sizes + (["ddp"] if args.ddp else []):
            name = f"{'inv' if invariant == 'true' else 'ref'}_b{batch}"
            logger = json.dumps({"class_path": "lightning.pytorch.loggers.CSVLogger",
                                 "init_args": {"save_dir": str(out / name), "name": "csv", "version": 0}})
            extra = ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.init_args.eval_batch_size",
                     "3"] if batch == "ddp" else ["--data.init_args.eval_batch_size", str(batch)]
            _run(["validate", *common, "--model.init_args.net.padding_invariant", invariant, "--trainer.logger",
                  logger, "--trainer.callbacks", "[]", "--trainer.default_root_dir", str(out / name),
                  "--ckpt_path", str(checkpoint), *extra], out / f"{name}.log")
            rows.append((invariant, batch, _last_metric(out / name)))
            print(f"padding_invariant={invariant:5s} eval batch {batch!s:>4}: val/mAP_full {rows[-1][2]:.2f}",
                  flush=True)
    print("\n| eval batch | " + " | ".join(str(b) for b in args.batch_sizes + (["2 processes x 3"] if args.ddp
                                                                               else [])) + " |")
    print("|---" * (1 + len(args.batch_sizes) + bool(args.ddp)) + "|")
    for invariant, label in (("true", "padding_invariant: true"), ("false", "false (reference)")):
        print(f"| {label} | " + " | ".join(f"{m:.2f}" for inv, _, m in rows if inv == invariant) + " |")

    images = sorted((data / "images/test2015").glob("*.jpg"))
    print(f"\nper-image triplets against batch size 1 ({len(images)} images; max |score difference|, "
          "images whose top triplet changed)")
    print("| layout | " + " | ".join(f"batch {b}" for b in args.batch_sizes if b > 1) + " |")
    print("|---" * (1 + sum(b > 1 for b in args.batch_sizes)) + "|")
    for invariant, label in ((True, "padding_invariant: true"), (False, "false (reference)")):
        drift = score_drift(checkpoint, images, [b for b in args.batch_sizes if b > 1], invariant, out)
        print(f"| {label} | " + " | ".join(f"{d:.1e}, {c}" for d, c in drift.values()) + " |")


def score_drift(checkpoint: Path, images: list[Path], batch_sizes: list[int], invariant: bool, tmp: Path):
    """``{batch size: (max |score - score at batch 1|, images whose top-1 triplet changed)}``."""
    import dataclasses

    import torch

    from hoiclip_lightning.inference import HOIDetector
    from hoiclip_lightning.models import HOICLIPConfig

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    net = ckpt["hyper_parameters"]["net"]
    net = dataclasses.asdict(net) if dataclasses.is_dataclass(net) else dict(net)
    ckpt["hyper_parameters"]["net"] = HOICLIPConfig(**{**net, "padding_invariant": invariant})
    path = tmp / f"layout_{invariant}.ckpt"
    torch.save(ckpt, path)
    runs = {}
    for batch in sorted({1, *batch_sizes}):
        detector = HOIDetector.from_checkpoint(path, device="cpu", batch_size=batch)
        runs[batch] = detector.predict([str(p) for p in images])
    out = {}
    for batch in batch_sizes:
        drift, changed = 0.0, 0
        for a, b in zip(runs[1], runs[batch], strict=True):
            sa = sorted(t.score for t in a.triplets)
            sb = sorted(t.score for t in b.triplets)
            drift = max(drift, max((abs(x - y) for x, y in zip(sa, sb, strict=True)), default=0.0))
            ta, tb = a.triplets[0], b.triplets[0]
            same = ta.hoi_index == tb.hoi_index and all(abs(x - y) < 0.5 for x, y in zip(ta.human_box + ta.object_box,
                                                                                tb.human_box + tb.object_box,
                                                                                strict=True))
            changed += not same
        out[batch] = (drift, changed)
    return out


if __name__ == "__main__":
    main()
