"""``hoiclip sweep``: train and test one config over several training-data fractions, locally.

The W&B sweep in ``configs/sweeps/data_fraction.yaml`` does the same through a W&B server; this command
needs none. Each fraction is one ``hoiclip fit`` run (a fresh Python process, one after the other) with
``--data.init_args.train_fraction F``, ``--test_after_fit true``, its own ``default_root_dir`` and a CSV
logger; the test metrics are read back from that logger's ``metrics.csv``. Results:

* ``<out>/summary.csv`` and ``<out>/summary.md``: fraction -> test mAP Full / Rare / Non-rare (and with
  the training-free enhancement when logged), plus the run time;
* ``<out>/map_vs_fraction.png``: mAP against the fraction (log-scaled x axis);
* ``<out>/frac_<F>/``: each run's checkpoints, ``metrics.csv``, ``per_class_ap.csv`` and ``log.txt``.

Example::

    hoiclip sweep --config configs/quickstart.yaml --fractions 0.25 0.5 1.0 --out runs/sweep \\
        -- --trainer.max_steps 150
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: (metric key, column title) of the summary, in order; absent keys are left out
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("test/mAP_full", "Full"),
    ("test/mAP_rare", "Rare"),
    ("test/mAP_non_rare", "Non-rare"),
    ("test/tfe/mAP_full", "Full (TFE)"),
    ("test/tfe/mAP_rare", "Rare (TFE)"),
    ("test/tfe/mAP_non_rare", "Non-rare (TFE)"),
)


@dataclass
class SweepRun:
    """One fraction of the sweep: its folder, exit status, test metrics and wall time."""

    fraction: float
    folder: Path
    returncode: int = 0
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


def run_folder(out: Path, fraction: float) -> Path:
    return out / f"frac_{fraction:g}"


def read_test_metrics(folder: Path) -> dict[str, float]:
    """The last logged value of every ``test/...`` column of the CSV logger(s) under ``folder``."""
    metrics: dict[str, float] = {}
    files = sorted(folder.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    for path in files:
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                for key, value in row.items():
                    if key and key.startswith("test/") and value not in ("", None):
                        metrics[key] = float(value)
    return metrics


def fit_command(config: str, fraction: float, folder: Path, extra: Sequence[str] = ()) -> list[str]:
    """The ``hoiclip fit`` command line of one fraction (run with the current interpreter)."""
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
              "init_args": {"save_dir": str(folder), "name": "csv"}}
    return [
        sys.executable, "-m", "hoiclip_lightning.cli", "fit", "--config", config,
        "--data.init_args.train_fraction", f"{fraction:g}",
        "--trainer.default_root_dir", str(folder),
        "--trainer.logger", json.dumps(logger),
        "--model.init_args.per_class_ap_dir", str(folder),
        "--test_after_fit", "true",
        *extra,
    ]


def run_sweep(config: str, fractions: Sequence[float], out: Path, extra: Sequence[str] = (),
              stop_on_error: bool = False) -> list[SweepRun]:
    """Run ``hoiclip fit`` + test for each fraction, one after the other; write the summary and the plot."""
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"--fractions: every fraction must be in (0, 1], got {f}")
    if not Path(config).is_file():
        raise FileNotFoundError(f"--config: file not found: {config}")
    out.mkdir(parents=True, exist_ok=True)
    runs: list[SweepRun] = []
    for f in fractions:
        folder = run_folder(out, f)
        folder.mkdir(parents=True, exist_ok=True)
        cmd = fit_command(config, f, folder, extra)
        log.info("sweep: fraction %g -> %s", f, folder)
        start = time.perf_counter()
        with (folder / "log.txt").open("w") as fh:
            fh.write(" ".join(cmd) + "\n")
            fh.flush()
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
        run = SweepRun(f, folder, proc.returncode, time.perf_counter() - start, read_test_metrics(folder))
        runs.append(run)
        if proc.returncode != 0:
            log.error("sweep: fraction %g failed (exit %d); see %s", f, proc.returncode, folder / "log.txt")
            if stop_on_error:
                break
        write_summary(runs, out)
    write_summary(runs, out)
    return runs


def _columns(runs: Sequence[SweepRun]) -> list[tuple[str, str]]:
    return [(k, t) for k, t in SUMMARY_COLUMNS if any(k in r.metrics for r in runs)]


def summary_markdown(runs: Sequence[SweepRun]) -> str:
    """A Markdown table: one row per fraction, test mAP columns, run time and status."""
    cols = _columns(runs)
    head = "| fraction | " + " | ".join(t for _, t in cols) + " | time (s) | status |"
    sep = "|---:|" + "---:|" * len(cols) + "---:|---|"
    lines = [head, sep]
    for r in runs:
        cells = [f"{r.metrics[k]:.2f}" if k in r.metrics else "-" for k, _ in cols]
        status = "ok" if r.returncode == 0 else f"failed ({r.returncode})"
        lines.append(f"| {r.fraction:g} | " + " | ".join(cells) + f" | {r.seconds:.0f} | {status} |")
    return "\n".join(lines)


def write_summary(runs: Sequence[SweepRun], out: Path) -> None:
    cols = _columns(runs)
    with (out / "summary.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["fraction", *[k for k, _ in cols], "seconds", "returncode", "folder"])
        for r in runs:
            writer.writerow([f"{r.fraction:g}", *[r.metrics.get(k, "") for k, _ in cols], f"{r.seconds:.1f}",
                             r.returncode, str(r.folder)])
    (out / "summary.md").write_text(summary_markdown(runs) + "\n")
    try:
        plot_summary(runs, out / "map_vs_fraction.png")
    except Exception as err:  # the table is the result; the plot is a convenience
        log.warning("sweep: could not draw the plot: %s", err)


def plot_summary(runs: Sequence[SweepRun], path: Path) -> None:
    """mAP (Full, Rare, Non-rare; dashed with TFE) against the fraction of training images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = sorted((r for r in runs if r.metrics), key=lambda r: r.fraction)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, title in _columns(done):
        xs = [r.fraction * 100 for r in done if key in r.metrics and not math.isnan(r.metrics[key])]
        ys = [r.metrics[key] for r in done if key in r.metrics and not math.isnan(r.metrics[key])]
        if xs:
            ax.plot(xs, ys, marker="o", linestyle="--" if "TFE" in title else "-", label=title)
    ax.set_xscale("log")
    ax.set_xlabel("training images (%)")
    ax.set_ylabel("test mAP (%)")
    ax.set_title("HOI detection mAP against training-data fraction")
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str]) -> None:
    """Entry point of ``hoiclip sweep`` (arguments after ``--`` go to every ``hoiclip fit``)."""
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(
        prog="hoiclip sweep",
        description="Train and test a config over training-data fractions, one run after the other, without a "
                    "W&B server; writes summary.csv, summary.md and map_vs_fraction.png. Arguments after `--` "
                    "are passed to every `hoiclip fit` (e.g. -- --trainer.max_steps 200).")
    parser.add_argument("--config", required=True, help="base config of `hoiclip fit` (e.g. configs/quickstart.yaml)")
    parser.add_argument("--fractions", type=float, nargs="+", required=True,
                        help="values of data.init_args.train_fraction, each in (0, 1]")
    parser.add_argument("--out", required=True, help="output folder (one sub-folder per fraction + the summary)")
    parser.add_argument("--stop-on-error", action="store_true", help="stop at the first failed run")
    args = parser.parse_args(argv)
    try:
        runs = run_sweep(args.config, args.fractions, Path(args.out), extra, args.stop_on_error)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    sys.stdout.write(summary_markdown(runs) + "\n")
    sys.stdout.write(f"summary: {Path(args.out) / 'summary.csv'}, {Path(args.out) / 'summary.md'}, "
                     f"{Path(args.out) / 'map_vs_fraction.png'}\n")
    sys.stdout.flush()
    if any(r.returncode != 0 for r in runs):
        raise SystemExit(1)
