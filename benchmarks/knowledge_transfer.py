"""Does CLIP knowledge help HOICLIP at low data and on unseen classes? The paper's comparison, in miniature.

One command trains and tests, on the easy synthetic world (the quickstart's: 800 training, 100 validation,
100 test images at 160 px, 50 HOI classes), the quickstart model with the small CLIP
(``configs/model/knowledge_small.yaml``: ``hoiclip-small`` pretrained by ``hoiclip clip-pretrain``, text
initialisation, verb adapter, CLIP retrieval and the training-free enhancement on) against

* ``random_clip``: the same model with a random CLIP (``weights.clip_pretrained: null``);
* ``no_clip_retrieval``, ``no_text_init``, ``no_verb_adapter``: one knowledge-transfer switch off each
  (``net.clip_retrieval`` / ``net.text_init`` / ``net.verb_adapter`` false);
* ``no_tfe``: the training-free enhancement off (``postprocess.tfe: false``). TFE only changes the scores
  at evaluation, so this variant is *not trained again*: the ``full`` runs log the test split with and
  without TFE from the same checkpoint, ``full`` reads the TFE columns and ``no_tfe`` the plain ones
  (every other variant reads its TFE columns, TFE being on in all of them);
* ``genvlkt`` (not in the default list): GEN-VLKT instead of HOICLIP (``configs/model/genvlkt_tiny.yaml``:
  the same detector size, small CLIP, text-initialised classifiers and mimic loss, no TFE), with the same
  CLIP file, detector and budget, so ``--variants full genvlkt`` compares the two methods over the data
  fractions. ``--model FILE`` replaces the HOICLIP model of every variant instead (e.g. ``--model
  configs/model/genvlkt_tiny.yaml --variants full random_clip no_text_init``: GEN-VLKT's own controls;
  the switches GEN-VLKT lacks, CLIP retrieval and the verb adapter, are refused). A model that logs no TFE
  columns is read from its plain ones;

at training fractions 0.05 / 0.25 / 1.0 with seeds 0 / 1 / 2 (``seed_everything`` and the subsample's
``fraction_seed``), plus two zero-shot splits of the synthetic vocabulary at fraction 1.0: ``rare_first``
(the rarest quarter of the classes unseen, 12 of 50 in this world, as HICO-DET's RF-UC) and ``unseen_verb``
(the 3 classes of the verb "push", as UV), for ``full`` and ``random_clip``. Unseen classes are removed
from training by the datamodule as for HICO-DET. Each run is ``hoiclip fit`` + test through
:mod:`hoiclip_lightning.sweep` (a fresh process; the checkpoint is selected on the validation split, the
test split is evaluated once).

Outputs in ``--out``: ``summary.csv`` / ``summary.md`` (mean ± std over seeds of test mAP Full, Rare,
Non-rare, Seen, Unseen per variant and fraction, then every run), ``runs.csv`` (every run, its metrics and
wall time), ``map_vs_fraction.png`` (Full against fraction, one line per variant), ``plan.json`` and one
folder per run (``<variant>/frac_<F>/seed_<S>/log.txt``, ``metrics.csv``, ``per_class_ap.csv``). With
``--wandb`` every run is also logged to W&B (offline unless ``WANDB_MODE=online``) in ``<out>/wandb``.

Every run's detector starts from ``--detector`` (``data/detector/synthetic_detector.pt``; made when absent by
``configs/detector_pretrain.yaml`` on its own world, seed 2000, and ``hoiclip export-detector``): boxes and
objects only, no verb label, the analogue of the paper's DETR-R50 COCO weights (a from-scratch detector
shows no HOI mAP within this budget). ``--detector none`` trains every detector from scratch.

Budget rule (the whole benchmark must fit in ``--total-minutes``, 90 by default, on 2 CPU cores). With the
defaults there are N = 5 trained variants x 3 fractions x 3 seeds + 2 splits x 2 variants x 3 seeds = 57
runs. The two pretrainings (``--clip-minutes`` 9.5 and ``--detector-minutes`` 9.0, plus 0.5 min each for
their worlds) are reserved whether or not the files exist, so the steps do not depend on them. Every run
also pays a fixed overhead O (``--overhead-seconds``, 15: start-up and model build about 8 s, two
validations and the test on 100 images each about 5 s, measured on the 2-core machine). What is left is
shared equally:

    train seconds per run  T = (60 * total_minutes - 60 * reserved_minutes - N * O) / N
    max_steps              = T * steps_per_second, rounded down to a multiple of 10 * val_checks

with ``--steps-per-second`` 5.0 (pilot runs of this model: 5.5 steps/s on the 2-core machine). Every run gets
the same ``max_steps`` (so variants compare at equal training), validates ``--val-checks`` times, and has a
wall-clock cap of 1.5 T (``max_time``) that only a machine slower than assumed reaches. With the defaults:
T = 59 s, max_steps 280. ``--max-steps`` / ``--max-minutes`` override the rule; ``--plan`` prints it and exits.

    python benchmarks/knowledge_transfer.py --out runs/knowledge_transfer

Docs: docs/knowledge-transfer.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hoiclip_lightning.sweep import SweepRun, grid_markdown, run_folder, run_one, wandb_logger, write_grid_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "configs/quickstart.yaml"
MODEL_CONFIG = ROOT / "configs/model/knowledge_small.yaml"
GENVLKT_CONFIG = ROOT / "configs/model/genvlkt_tiny.yaml"
DETECTOR_CONFIG = ROOT / "configs/detector_pretrain.yaml"
NET = "--model.init_args.net."
WEIGHTS = "--model.init_args.weights."

#: variant -> (overrides of the trained run, which run it reads, which test columns: "tfe" or "plain")
VARIANTS: dict[str, tuple[list[str], str, str]] = {
    "full": ([], "full", "tfe"),
    # `--...weights.clip_pretrained null` arrives as the string "None" (jsonargparse, `str | None`); a dict is exact
    "random_clip": (["--model.init_args.weights", '{"clip_pretrained": null}'], "random_clip", "tfe"),
    "no_clip_retrieval": ([NET + "clip_retrieval", "false"], "no_clip_retrieval", "tfe"),
    "no_text_init": ([NET + "text_init", "false"], "no_text_init", "tfe"),
    "no_verb_adapter": ([NET + "verb_adapter", "false"], "no_verb_adapter", "tfe"),
    "no_tfe": ([], "full", "plain"),  # same training as full; the test without TFE
    # the other method; its `--model` goes before the shared overrides (sweep.model_first), which then apply to it
    "genvlkt": (["--model", str(GENVLKT_CONFIG)], "genvlkt", "plain"),
}
#: the variants of the 90-minute benchmark (``--variants`` default); ``genvlkt`` is added on request
DEFAULT_VARIANTS = ["full", "random_clip", "no_clip_retrieval", "no_text_init", "no_verb_adapter", "no_tfe"]
#: HOICLIP switches that GEN-VLKT does not have: these variants need a HOICLIP model
HOICLIP_ONLY = {"no_clip_retrieval", "no_verb_adapter"}
ZERO_SHOT_SPLITS = ("rare_first", "unseen_verb")
#: (metric key, column) of the tables; the TFE columns of a run are renamed to these keys when read
COLUMNS = (("test/mAP_full", "Full"), ("test/mAP_rare", "Rare"), ("test/mAP_non_rare", "Non-rare"),
           ("test/mAP_seen", "Seen"), ("test/mAP_unseen", "Unseen"))

log = logging.getLogger("knowledge_transfer")


@dataclass
class Budget:
    runs: int
    train_seconds: float  # T of the rule
    max_steps: int
    max_minutes: float
    val_every: int

    def describe(self) -> str:
        return (f"{self.runs} runs; {self.train_seconds:.0f} s of training each -> max_steps {self.max_steps} "
                f"(validation every {self.val_every} steps), wall-clock cap {self.max_minutes:.2f} min per run")


def plan_budget(runs: int, total_minutes: float = 90.0, clip_minutes: float = 9.5, overhead_seconds: float = 15.0,
                steps_per_second: float = 5.0, val_checks: int = 2, max_steps: int | None = None,
                max_minutes: float | None = None, detector_minutes: float = 9.0) -> Budget:
    """The per-run budget of the module docstring's rule (``max_steps`` / ``max_minutes`` override it)."""
    if runs < 1 or val_checks < 1:
        raise ValueError(f"need runs >= 1 and val_checks >= 1, got {runs}, {val_checks}")
    setup = clip_minutes + 0.5 + (detector_minutes + 0.5 if detector_minutes > 0 else 0.0)
    train = (60 * total_minutes - 60 * setup - runs * overhead_seconds) / runs
    if max_steps is None:
        unit = 10 * val_checks
        max_steps = int(train * steps_per_second) // unit * unit
        if max_steps < unit:
            raise ValueError(f"{runs} runs leave {train:.0f} s of training each in {total_minutes} min: fewer than "
                             f"{unit} steps; raise --total-minutes or run fewer variants, fractions or seeds")
    if max_minutes is None:
        max_minutes = 1.5 * max(train, max_steps / steps_per_second) / 60
    return Budget(runs, train, max_steps, max_minutes, max(1, max_steps // val_checks))


@dataclass
class Planned:
    name: str            # the trained run's folder name (a variant, ``<variant>@<split>`` for zero-shot)
    fraction: float
    seed: int
    overrides: list[str]


def plan_runs(variants: Sequence[str], fractions: Sequence[float], seeds: Sequence[int],
              zero_shot: Sequence[str], zero_shot_variants: Sequence[str]) -> list[Planned]:
    """The trained runs: each variant's run (``no_tfe`` shares ``full``'s), then the zero-shot runs at 1.0."""
    trained = list(dict.fromkeys(VARIANTS[v][1] for v in variants))
    planned = [Planned(t, f, s, list(VARIANTS[t][0])) for t in trained for f in fractions for s in seeds]
    for split in zero_shot:
        for t in dict.fromkeys(VARIANTS[v][1] for v in zero_shot_variants):
            planned += [Planned(f"{t}@{split}", 1.0, s, [*VARIANTS[t][0], "--data.init_args.zero_shot", split])
                        for s in seeds]
    return planned


def is_genvlkt(model_config: str | Path) -> bool:
    """Whether a model YAML (``class_path`` + ``init_args``) is a GEN-VLKT module."""
    import yaml

    return "GENVLKT" in str(yaml.safe_load(Path(model_config).read_text()).get("class_path", ""))


def check_variants(model_config: str | Path, variants: Sequence[str]) -> None:
    """Refuse variants that switch off a part the base model does not have (GEN-VLKT: CLIP retrieval, adapter)."""
    bad = sorted(HOICLIP_ONLY.intersection(variants)) if is_genvlkt(model_config) else []
    if bad:
        raise ValueError(f"--model {model_config} is GEN-VLKT, which has no CLIP retrieval or verb adapter to "
                         f"switch off: drop {bad} from --variants / --zero-shot-variants")


def as_variant(run: SweepRun, variant: str, columns: str) -> SweepRun:
    """The run seen as ``variant``: its TFE test columns (``test/tfe/x`` -> ``test/x``) or its plain ones.

    A run that logged no TFE column (a model without TFE, e.g. GEN-VLKT) is read from its plain columns.
    """
    if columns == "tfe" and any(k.startswith("test/tfe/") for k in run.metrics):
        metrics = {"test/" + k[len("test/tfe/"):]: v for k, v in run.metrics.items() if k.startswith("test/tfe/")}
    else:
        metrics = {k: v for k, v in run.metrics.items() if not k.startswith("test/tfe/")}
    return dataclasses.replace(run, variant=variant, metrics=metrics)


def table_runs(done: dict[str, list[SweepRun]], variants: Sequence[str], zero_shot: Sequence[str],
               zero_shot_variants: Sequence[str]) -> tuple[list[SweepRun], list[SweepRun]]:
    """(all table rows, the fraction-grid rows of the plot), each variant read from its trained run."""
    grid = [as_variant(r, v, VARIANTS[v][2]) for v in variants for r in done.get(VARIANTS[v][1], [])]
    zs = [as_variant(r, f"{v}@{split}", VARIANTS[v][2]) for split in zero_shot for v in zero_shot_variants
          for r in done.get(f"{VARIANTS[v][1]}@{split}", [])]
    return grid + zs, grid


def _run(cmd: list[str], what: str) -> None:
    log.info("%s: %s", what, " ".join(cmd))
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}")


def ensure_world(root: Path, num_train: int, num_val: int, num_test: int, image_size: int) -> None:
    if (root / "vocabulary.json").is_file() and (root / "annotations/val_hico.json").is_file():
        return
    _run([sys.executable, "-m", "hoiclip_lightning.cli", "synth", "--out", str(root), "--easy", "true", "--seed", "0",
          "--image_size", str(image_size), "--num_train", str(num_train), "--num_test", str(num_test),
          "--num_val", str(num_val)], "synthetic world")


def ensure_clip(path: Path, clip_model: str, steps: int, minutes: float) -> None:
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "hoiclip_lightning.cli", "clip-pretrain", "--out", str(path), "--clip_model",
          clip_model, "--synthetic", "3000", "--max_steps", str(steps), "--max_minutes", str(minutes),
          "--progress", "false"], "CLIP pretraining")


def ensure_detector(path: Path, root: Path, work: Path) -> None:
    """Pretrain the synthetic detector (``configs/detector_pretrain.yaml``) on its own world and export it."""
    if path.is_file():
        return
    if not (root / "vocabulary.json").is_file():
        _run([sys.executable, "-m", "hoiclip_lightning.cli", "synth", "--out", str(root), "--easy", "true", "--seed",
              "2000", "--image_size", "160", "--num_train", "2000", "--num_test", "20", "--num_val", "20"],
             "detector world")
    # the config's fixed 2500 steps decide the detector; `minutes` is only reserved by the budget
    _run([sys.executable, "-m", "hoiclip_lightning.cli", "fit", "--config", str(DETECTOR_CONFIG),
          "--data.init_args.root", str(root), "--trainer.default_root_dir", str(work),
          "--trainer.logger.init_args.save_dir", str(work), "--trainer.enable_progress_bar", "false"],
         "detector pretraining")
    path.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "hoiclip_lightning.cli", "export-detector", "--checkpoint",
          str(work / "checkpoints/last.ckpt"), "--out", str(path)], "detector export")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--clip", default="data/clip/hoiclip_small.pt",
                   help="pretrained CLIP file (hoiclip clip-pretrain); pretrained here when absent")
    p.add_argument("--clip-model", default="hoiclip-small", help="its architecture (64 px input)")
    p.add_argument("--clip-steps", type=int, default=320, help="pretraining steps when the file is absent")
    p.add_argument("--clip-minutes", type=float, default=9.5, help="pretraining wall-clock cap (reserved always)")
    p.add_argument("--detector", default="data/detector/synthetic_detector.pt",
                   help="pretrained detector file (configs/detector_pretrain.yaml + hoiclip export-detector), "
                        "pretrained here when absent; 'none': every detector from scratch")
    p.add_argument("--detector-minutes", type=float, default=9.0,
                   help="time reserved for the detector pretraining (2500 steps, about 8 min; unless --detector none)")
    p.add_argument("--detector-root", default="data/detector_world", help="its synthetic world (seed 2000)")
    p.add_argument("--data-root", default="data/knowledge_transfer", help="synthetic world; written when absent")
    p.add_argument("--world", type=int, nargs=3, default=[800, 100, 100], metavar=("TRAIN", "VAL", "TEST"),
                   help="images of the world when it is written")
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--out", default="runs/knowledge_transfer")
    p.add_argument("--model", default=str(MODEL_CONFIG),
                   help="model config of every variant (default: HOICLIP, configs/model/knowledge_small.yaml; "
                        "configs/model/genvlkt_tiny.yaml: GEN-VLKT); the genvlkt variant replaces it with GEN-VLKT")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS),
                   help=f"default {' '.join(DEFAULT_VARIANTS)}; add genvlkt to compare with GEN-VLKT")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.25, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--zero-shot", nargs="*", default=list(ZERO_SHOT_SPLITS), choices=list(ZERO_SHOT_SPLITS),
                   help="zero-shot splits (trained at fraction 1.0); none: `--zero-shot` alone")
    p.add_argument("--zero-shot-variants", nargs="+", default=["full", "random_clip"], choices=list(VARIANTS))
    p.add_argument("--total-minutes", type=float, default=90.0, help="the whole benchmark's budget")
    p.add_argument("--overhead-seconds", type=float, default=15.0, help="per-run start, validation and test")
    p.add_argument("--steps-per-second", type=float, default=5.0, help="assumed training speed")
    p.add_argument("--val-checks", type=int, default=2, help="validations per run (checkpoint selection)")
    p.add_argument("--max-steps", type=int, default=None, help="per-run steps (default: the budget rule)")
    p.add_argument("--max-minutes", type=float, default=None, help="per-run wall-clock cap (default: 1.5 T)")
    p.add_argument("--wandb", action="store_true", help="also log every run to W&B (offline by default)")
    p.add_argument("--resume", action="store_true", help="reuse runs whose folder already holds a result")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each run's checkpoints (about 200 MB)")
    p.add_argument("--plan", action="store_true", help="print the runs and the budget, run nothing")
    return p


def main(argv: list[str] | None = None) -> list[SweepRun]:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_variants(args.model, [*args.variants, *(args.zero_shot_variants if args.zero_shot else [])])
    except (ValueError, OSError) as err:
        parser.error(str(err))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out, clip, root = Path(args.out), Path(args.clip).resolve(), Path(args.data_root).resolve()
    planned = plan_runs(args.variants, args.fractions, args.seeds, args.zero_shot, args.zero_shot_variants)
    detector = None if args.detector.lower() == "none" else Path(args.detector).resolve()
    budget = plan_budget(len(planned), args.total_minutes, args.clip_minutes, args.overhead_seconds,
                         args.steps_per_second, args.val_checks, args.max_steps, args.max_minutes,
                         args.detector_minutes if detector is not None else 0.0)
    print(f"machine: {describe_machine()}")
    print(f"plan: {budget.describe()}")
    if args.plan:
        for p in planned:
            print(f"  {p.name} fraction {p.fraction:g} seed {p.seed} {' '.join(p.overrides)}")
        return []
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ensure_world(root, *args.world, args.image_size)
    ensure_clip(clip, args.clip_model, args.clip_steps, args.clip_minutes)
    if detector is not None:
        ensure_detector(detector, Path(args.detector_root).resolve(), out / "detector_pretrain")
    setup_seconds = time.perf_counter() - start
    secs = max(1, round(60 * budget.max_minutes))
    common = ["--model", str(Path(args.model).resolve()), NET + "clip_model", args.clip_model,
              WEIGHTS + "clip_pretrained", str(clip),
              *([WEIGHTS + "detr_checkpoint", str(detector)] if detector is not None
                else ["--model.init_args.weights", '{"detr_checkpoint": null}']),
              "--data.init_args.root", str(root), "--data.init_args.clip_image_size", "64",
              "--trainer.max_steps", str(budget.max_steps), "--trainer.max_epochs", "-1",
              "--trainer.max_time", f"00:{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}",
              "--trainer.check_val_every_n_epoch", "null", "--trainer.val_check_interval", str(budget.val_every),
              "--trainer.enable_progress_bar", "false"]
    (out / "plan.json").write_text(json.dumps({
        "budget": dataclasses.asdict(budget), "clip": str(clip), "detector": str(detector), "data_root": str(root),
        "args": vars(args),
        "machine": describe_machine(), "common_overrides": common,
        "runs": [dataclasses.asdict(p) for p in planned]}, indent=1) + "\n")

    done: dict[str, list[SweepRun]] = {}
    for i, p in enumerate(planned, 1):
        folder = run_folder(out, p.fraction, p.name, p.seed)
        marker = folder / "run.json"
        if args.resume and marker.is_file():
            saved = json.loads(marker.read_text())
            run = SweepRun(p.fraction, folder, saved["returncode"], saved["seconds"], saved["metrics"], p.name, p.seed)
        else:
            print(f"[{i}/{len(planned)}] {p.name} fraction {p.fraction:g} seed {p.seed}", flush=True)
            loggers = ([wandb_logger(out, f"{p.name}/frac_{p.fraction:g}/seed_{p.seed}", p.name, "hoiclip-kt")]
                       if args.wandb else [])
            run = run_one(str(BASE_CONFIG), p.fraction, folder, [*common, *p.overrides], p.seed, p.name, loggers,
                          args.keep_checkpoints)
            marker.write_text(json.dumps({"returncode": run.returncode, "seconds": run.seconds,
                                          "metrics": run.metrics}) + "\n")
        done.setdefault(p.name, []).append(run)
        rows, grid = table_runs(done, args.variants, args.zero_shot, args.zero_shot_variants)
        write_grid_summary(rows, out, COLUMNS, plot_runs=grid)
    rows, _ = table_runs(done, args.variants, args.zero_shot, args.zero_shot_variants)
    total = time.perf_counter() - start
    print(grid_markdown(rows, COLUMNS))
    print(f"set-up (worlds, CLIP, detector) {setup_seconds:.0f} s; whole benchmark {total:.0f} s "
          f"({total / 60:.1f} min); results in {out}")
    if any(not r.ok for runs in done.values() for r in runs):
        raise SystemExit(1)
    return rows


if __name__ == "__main__":
    main()
