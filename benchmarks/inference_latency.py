"""Single-image CPU latency of ``HOIDetector.predict`` (end to end: resize, forward, scoring, NMS).

Two models, both with random weights (latency does not depend on the values):

* ``tiny``: ``configs/model/tiny.yaml`` with the quickstart's data transforms (``configs/data/synthetic.yaml``:
  short side 208, CLIP view 64 px) on a 224x224 image;
* ``paper``: ``configs/model/hoiclip_vitb32.yaml`` (ResNet-50, 6+3+3 layers, 64 queries, ViT-B/32) without
  its ``weights`` section (nothing is read or downloaded), the paper's evaluation transforms (short side
  800, long side at most 1333, CLIP view 224) on a 640x480 image (a typical HICO-DET size).

For each: 2 warm-up calls, then the median (and min/max) of ``--repeats`` calls, plus the median of the
model forward alone on the same batch. On a CPU shared with other jobs, ``--threads 1`` gives stable
figures (several torch threads competing with other processes give multi-second outliers). Usage::

    python benchmarks/inference_latency.py [--models tiny paper] [--repeats 20] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {
    "tiny": dict(model="configs/model/tiny.yaml", data="configs/data/synthetic.yaml", image=(224, 224)),
    "paper": dict(model="configs/model/hoiclip_vitb32.yaml", data=None, image=(640, 480)),
}


def build_detector(name: str):
    from hoiclip_lightning.inference import HOIDetector
    from hoiclip_lightning.models import HOICLIPConfig, HOICLIPModule, PostProcessConfig

    setup = SETUPS[name]
    init = yaml.safe_load((ROOT / setup["model"]).read_text())["init_args"]
    net = HOICLIPConfig(**init["net"])  # init["weights"] is not passed: random weights, no file read
    post = PostProcessConfig(**init.get("postprocess", {}))
    module = HOICLIPModule(vocabulary="hico_det", net=net, postprocess=post)
    data = {"test_scale": 800, "test_max_size": 1333, "clip_image_size": None}
    if setup["data"]:
        data.update({k: v for k, v in yaml.safe_load((ROOT / setup["data"]).read_text())["init_args"].items()
                     if k in data})
    return HOIDetector(module, data["test_scale"], data["test_max_size"], data["clip_image_size"], device="cpu",
                       batch_size=1)


def timed(fn, repeats: int) -> list[float]:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(SETUPS), default=["tiny", "paper"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(describe_machine())
    rng = np.random.default_rng(0)
    for name in args.models:
        detector = build_detector(name)
        w, h = SETUPS[name]["image"]
        image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        end_to_end = timed(lambda d=detector, im=image: d.predict(im), args.repeats)

        from hoiclip_lightning.data.collate import collate_hoi
        from hoiclip_lightning.data.image_folder import eval_sample

        batch = collate_hoi([eval_sample(image, detector.transform, detector.clip_transform, 0, "")])

        def forward(module=detector.module, batch=batch):
            with torch.no_grad():
                module(batch, all_classes=True)

        forward_only = timed(forward, args.repeats)
        params = sum(p.numel() for p in detector.module.model.parameters()) / 1e6
        print(f"{name:<6} {params:6.1f} M params, image {w}x{h} -> input {tuple(batch.images.shape[-2:])}, "
              f"CLIP {tuple(batch.clip_images.shape[-2:])}: predict median {statistics.median(end_to_end):8.1f} ms "
              f"(min {min(end_to_end):.1f}, max {max(end_to_end):.1f}; n={args.repeats}), "
              f"forward only median {statistics.median(forward_only):8.1f} ms")


if __name__ == "__main__":
    main()
