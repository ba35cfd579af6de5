"""`hoiclip evaluate` on a full-size QPIC-family dump: time, peak memory, table; and the metric's import cost.

Usage:
    python benchmarks/evaluate_dump.py ANNOTATIONS_JSON [--queries 64] [--per-image 100] [--seed 0] [--out DIR]

ANNOTATIONS_JSON is the HICO-DET test ground truth in the fredzzhang format (``instances_test2015.json``:
per image ``boxes_h``, ``boxes_o``, ``hoi``; 9,658 images). The script writes, for every image, a
GEN-VLKT / HOICLIP evaluator dump record exactly as those code bases write ``results.json``
(``json.dumps(str({"preds": [...], "gts": []}))`` of NumPy values): ``--queries`` subject and object boxes
and the ``--per-image`` best triplets referring to them. Synthetic detections: 60 % of the queries are GT
pairs of the image moved by a few pixels (their triplets take the GT class 70 % of the time), the rest
random boxes; triplet classes otherwise random, float32 scores higher for the GT-based ones.

Printed:

* the dump's size and the time to write it;
* ``hoiclip evaluate --predictions DUMP --annotations ANNOTATIONS_JSON`` run as a child process
  (``python -m hoiclip_lightning.cli evaluate``, i.e. with the CLI's Lightning import), and with
  ``--metrics-only-too`` the same run through ``python -m hoiclip_lightning.metrics.evaluate``: wall time, CPU
  time and peak resident memory of the child (its own ``ru_*`` from ``wait4``; on a loaded machine the CPU
  time is the steadier figure), the command's own split (read / convert / compute, wall) and its table;
* as the baseline timed in the same run, ``python -c "import torch"``; then the import time of
  ``from hoiclip_lightning.metrics import HICODetMAP`` in a fresh interpreter and the hoiclip / lightning /
  open_clip modules it imports (best of 3 for both import times).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

NUM_HOIS = 600


def synthetic_dump(annotations: dict, queries: int, per_image: int, seed: int) -> list[dict]:
    """One evaluator record per image: 2 * queries boxes (subjects, then objects) and the top triplets."""
    rng = np.random.default_rng(seed)
    preds = []
    for name, ann, (w, h) in zip(annotations["filenames"], annotations["annotation"], annotations["size"],
                                 strict=True):
        gt_h = np.asarray(ann["boxes_h"], np.float64).reshape(-1, 4) - 1.0  # 0-based, like the PPDM files
        gt_o = np.asarray(ann["boxes_o"], np.float64).reshape(-1, 4) - 1.0
        gt_c = np.asarray(ann["hoi"], np.int64)
        from_gt = (rng.random(queries) < 0.6) & (gt_c.size > 0)
        pick = rng.integers(0, max(gt_c.size, 1), queries)
        xy = rng.uniform(0, [w * 0.7, h * 0.7], (queries, 2))
        wh = rng.uniform(20, [max(w * 0.3, 21), max(h * 0.3, 21)], (queries, 2))
        sub = np.concatenate([xy, xy + wh], 1)
        obj = sub + rng.normal(0, 40, (queries, 4))
        if gt_c.size:
            sub[from_gt] = gt_h[pick[from_gt]] + rng.normal(0, 4, (int(from_gt.sum()), 4))
            obj[from_gt] = gt_o[pick[from_gt]] + rng.normal(0, 4, (int(from_gt.sum()), 4))
        q = rng.integers(0, queries, per_image)
        cls = rng.integers(0, NUM_HOIS, per_image)
        true_cls = from_gt[q] & (rng.random(per_image) < 0.7)
        if gt_c.size:
            cls[true_cls] = gt_c[pick[q[true_cls]]]
        score = (rng.random(per_image) * 0.5 + 0.5 * from_gt[q]).astype(np.float32)
        order = np.argsort(-score, kind="stable")
        boxes = np.concatenate([sub, obj]).astype(np.float32)
        preds.append({
            "filename": name,
            "predictions": [{"bbox": list(b)} for b in boxes],
            "hoi_prediction": [{"subject_id": np.int64(q[k]), "object_id": np.int64(queries + q[k]),
                                "category_id": np.int64(cls[k]), "score": score[k]} for k in order],
        })
    return preds


def run_measured(args: list[str], env: dict, log_dir: Path) -> tuple[float, float, int, str]:
    """Wall time, CPU time (user + system), peak resident memory (its own ``ru_maxrss``, bytes) and stdout
    of a child process."""
    out_path, err_path = log_dir / "stdout.txt", log_dir / "stderr.txt"
    with out_path.open("w") as out, err_path.open("w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:5])} ... failed:\n{err_path.read_text()[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, out_path.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("annotations", type=Path, help="instances_test2015.json (fredzzhang format)")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--per-image", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-dump", action="store_true", help="keep OUT/results.json if it exists")
    parser.add_argument("--metrics-only-too", action="store_true",
                        help="also run python -m hoiclip_lightning.metrics.evaluate (no Lightning import)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the dump and the outputs (default: temp)")
    args = parser.parse_args()
    print(f"machine: {describe_machine()}; load average {os.getloadavg()[0]:.2f}")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    out = args.out or Path(tempfile.mkdtemp(prefix="evaluate_dump_"))
    out.mkdir(parents=True, exist_ok=True)

    annotations = json.loads(args.annotations.read_text())
    t0 = time.perf_counter()
    dump = out / "results.json"
    reused = args.reuse_dump and dump.is_file()
    if not reused:
        dump.write_text(json.dumps(str({"preds": synthetic_dump(annotations, args.queries, args.per_image, args.seed),
                                        "gts": []})))
    print(f"dump: {dump} ({dump.stat().st_size / 2**20:.1f} MiB, {len(annotations['filenames'])} images x "
          f"{args.per_image} triplets, {2 * args.queries} boxes each), "
          + ("reused" if reused else f"written in {time.perf_counter() - t0:.1f} s"))

    runs = [("hoiclip evaluate (python -m hoiclip_lightning.cli evaluate)", "hoiclip_lightning.cli")]
    if args.metrics_only_too:
        runs.append(("metrics only (python -m hoiclip_lightning.metrics.evaluate)",
                     "hoiclip_lightning.metrics.evaluate"))
    for label, module in runs:
        sub = ["evaluate"] if module.endswith("cli") else []
        cmd = [sys.executable, "-m", module, *sub, "--predictions", str(dump), "--annotations",
               str(args.annotations), "--out", str(out / "eval")]
        wall, cpu, peak, stdout = run_measured(cmd, env, out)
        report = json.loads((out / "eval" / "metrics.json").read_text())
        split = ", ".join(f"{k} {v:.2f} s" for k, v in report["seconds"].items())
        print(f"\n{label}: wall {wall:.1f} s, CPU {cpu:.1f} s (user + system), peak RSS {peak / 2**20:.0f} MiB; "
              f"inside (wall): {split}")
        print(stdout.rstrip())

    code_torch = "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"
    code_metric = ("import sys, time, json; t = time.perf_counter(); from hoiclip_lightning.metrics import HICODetMAP; "
                   "dt = time.perf_counter() - t; mods = sorted(m for m in sys.modules if m.split('.')[0] in "
                   "('hoiclip_lightning', 'lightning', 'pytorch_lightning', 'open_clip')); "
                   "print(json.dumps([dt, mods]))")
    torch_times, metric_times, modules = [], [], []
    for _ in range(3):
        torch_times.append(float(subprocess.run([sys.executable, "-c", code_torch], capture_output=True, text=True,
                                                env=env, check=True).stdout))
        dt, modules = json.loads(subprocess.run([sys.executable, "-c", code_metric], capture_output=True, text=True,
                                                env=env, check=True).stdout)
        metric_times.append(dt)
    t_torch, t_metric = min(torch_times), min(metric_times)
    print(f"\nimport torch (baseline): {t_torch:.2f} s; from hoiclip_lightning.metrics import HICODetMAP: "
          f"{t_metric:.2f} s ({t_metric / t_torch:.2f}x import torch; best of 3)")
    print(f"modules of hoiclip_lightning / lightning / open_clip it imports ({len(modules)}): {', '.join(modules)}")


if __name__ == "__main__":
    main()
