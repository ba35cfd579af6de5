"""Training-step time, parameter counts and peak memory of HOICLIP on the CPU (or GPU if present).

    python benchmarks/train_step.py --preset quickstart            # tiny model, synthetic-size images
    python benchmarks/train_step.py --preset paper --steps 20       # ResNet-50 + ViT-B/32, batch 2, 640x640

Weights are random (no download). Prints total/trainable parameters, the median step time over
``--steps`` steps after ``--warmup`` steps, and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

PRESETS = {
    "quickstart": dict(net=dict(backbone="resnet10", hidden_dim=64, nheads=4, dim_feedforward=128, dropout=0.0,
                                enc_layers=1, dec_layers=2, inter_dec_layers=2, inter_nheads=2, num_queries=16,
                                clip_model="hoiclip-tiny"),
                       batch=4, size=208, clip_size=64, vocabulary="hico_det"),
    "paper": dict(net=dict(backbone="resnet50", clip_model="ViT-B-32"),
                  batch=2, size=640, clip_size=224, vocabulary="hico_det"),
}


def synthetic_batch(batch: int, size: int, clip_size: int, num_hois: int, num_verbs: int):
    import torch

    from hoiclip_lightning.structures import HOIBatch, HOITarget

    g = torch.Generator().manual_seed(0)
    targets = []
    for i in range(batch):
        n = 3
        centre = torch.rand(n, 2, generator=g) * 0.5 + 0.25
        wh = torch.rand(n, 2, generator=g) * 0.3 + 0.1
        hoi = torch.zeros(n, num_hois)
        hoi[torch.arange(n), torch.randint(0, num_hois, (n,), generator=g)] = 1
        verb = torch.zeros(n, num_verbs)
        verb[:, 0] = 1
        targets.append(HOITarget(sub_boxes=torch.cat([centre, wh], 1), obj_boxes=torch.cat([centre.flip(1), wh], 1),
                                 obj_labels=torch.randint(0, 80, (n,), generator=g), verb_labels=verb,
                                 hoi_labels=hoi, image_id=i, orig_size=torch.tensor([size, size]),
                                 size=torch.tensor([size, size])))
    return HOIBatch(images=torch.randn(batch, 3, size, size, generator=g),
                    pixel_mask=torch.zeros(batch, size, size, dtype=torch.bool),
                    clip_images=torch.randn(batch, 3, clip_size, clip_size, generator=g), targets=targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quickstart")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    import torch

    from hoiclip_lightning.models import HOICLIPConfig, HOICLIPModule

    preset = PRESETS[args.preset]
    t0 = time.perf_counter()
    module = HOICLIPModule(vocabulary=preset["vocabulary"], net=HOICLIPConfig(**preset["net"]))
    build = time.perf_counter() - t0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module.to(device).train()
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    vocab = module.vocabulary
    batch = synthetic_batch(preset["batch"], preset["size"], preset["clip_size"], vocab.num_hois, vocab.num_verbs)
    batch.images, batch.pixel_mask, batch.clip_images = (batch.images.to(device), batch.pixel_mask.to(device),
                                                         batch.clip_images.to(device))
    for t in batch.targets:
        for name in ("sub_boxes", "obj_boxes", "obj_labels", "verb_labels", "hoi_labels"):
            setattr(t, name, getattr(t, name).to(device))
    optimizer = module.configure_optimizers()["optimizer"]
    times = []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = module.training_step(batch, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 0.1)
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"preset {args.preset}: batch {preset['batch']} x {preset['size']}x{preset['size']}, "
          f"CLIP {preset['net']['clip_model']} at {preset['clip_size']}")
    print(f"parameters: total {total / 1e6:.2f} M, trainable {trainable / 1e6:.2f} M")
    print(f"model construction: {build:.1f} s")
    print(f"median training step over {args.steps} steps: {statistics.median(times):.3f} s "
          f"(min {min(times):.3f}, max {max(times):.3f})")
    print(f"peak resident memory of the process: {peak:.2f} GiB")
    if device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print("machine:", describe_machine())


if __name__ == "__main__":
    main()
