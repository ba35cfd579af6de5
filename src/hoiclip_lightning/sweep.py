"""``hoiclip sweep``: train and test one config over several training-data fractions, locally.

The W&B sweep in ``configs/sweeps/data_fraction.yaml`` does the same through a W&B server; this command
needs none. Each fraction is one ``hoiclip fit`` run (a fresh Python process, one after the other) with
``--data.init_args.train_fraction F``, ``--test_after_fit true``, its own ``default_root_dir`` and a CSV
logger; the test metrics are read back from that logger's ``metrics.csv``. Results:

* ``<out>/summary.csv`` and ``<out>/summary.md``: fraction -> test mAP Full / Rare / Non-rare (and with
  the training-free enhancement when logged), plus the run time;
* ``<out>/map_vs_fraction.png``: mAP against the fraction (log-scaled x axis);
* ``<out>/frac_<F>/``: each run's checkpoints, ``metrics.csv``, ``per_class_ap.csv`` and ``log.txt``.

With ``--seeds`` and/or ``--variants.NAME "OVERRIDES"`` the sweep becomes a grid: every variant (a named
list of extra ``hoiclip fit`` overrides) at every fraction with every seed (``--seed_everything S`` and
``--data.init_args.fraction_seed S``: another initialisation *and* another subsample of the training
images). Each run gets ``<out>/<variant>/frac_<F>/seed_<S>/``; ``summary.csv`` / ``summary.md`` then hold
the mean +- standard deviation over the seeds of each (variant, fraction) (:func:`aggregate`), ``runs.csv``
every run with its wall time, and the plot one line per variant (:func:`plot_grid`).

Runs are isolated: each has its own folder (derived from its swept values), checkpoints, loggers and
process, so ``--parallel N`` runs N of them at a time (:func:`execute`; one GPU per worker when there are
GPUs, else an equal share of the CPU threads) with the same per-run results as one after the other, and
``--resume`` continues an interrupted sweep: finished runs are read back from their ``run.json``, an
unfinished run continues from its own ``checkpoints/last.ckpt``. Runs started by a W&B sweep agent
(``wandb agent``, which sets ``WANDB_SWEEP_ID`` and ``WANDB_RUN_ID``) are isolated the same way by
:func:`isolate_agent_run`: run folder ``<default_root_dir>/sweep-<sweep id>/<run id>``.

A variant (or ``--``) may choose another model with ``--model FILE`` (e.g. GEN-VLKT,
``configs/model/genvlkt_tiny.yaml``): model files are moved right after ``--config`` (:func:`model_first`),
so every other override of a model key applies to the chosen model.

Example::

    hoiclip sweep --config configs/quickstart.yaml --fractions "[0.25, 0.5, 1.0]" --out runs/sweep --parallel 2 \\
        -- --trainer.max_steps 150
    hoiclip sweep --config configs/quickstart.yaml --fractions "[0.25, 1.0]" --seeds "[0, 1, 2]" --out runs/grid \\
        --variants.full "" --variants.no_text_init "--model.init_args.net.text_init false" \\
        -- --trainer.max_steps 150
    hoiclip sweep --config configs/quickstart.yaml --fractions "[0.25, 0.5, 1.0]" --out runs/models \\
        --variants.hoiclip "" --variants.genvlkt "--model configs/model/genvlkt_tiny.yaml" -- --trainer.max_steps 150
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from .metrics.report import TABLE_COLUMNS

log = logging.getLogger(__name__)

#: (metric key, column title) of the summary, in order; absent keys are left out: the columns of the test
#: table (:data:`~hoiclip_lightning.metrics.report.TABLE_COLUMNS`), then the same with TFE
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    *((f"test/{key}", title) for key, title in TABLE_COLUMNS),
    *((f"test/tfe/{key}", f"{title} (TFE)") for key, title in TABLE_COLUMNS),
)


@dataclass
class SweepRun:
    """One run of the sweep: its fraction (and variant, seed), folder, exit status, test metrics and wall time."""

    fraction: float
    folder: Path
    returncode: int = 0
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    variant: str = ""
    seed: int | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class GroupSummary:
    """Mean and sample standard deviation (n - 1) over the seeds of one (variant, fraction).

    ``n[key]`` counts the runs that went into ``key``: successful runs that logged it (NaN excluded);
    ``std[key]`` is NaN for fewer than two. ``seconds`` is the summed wall time of all ``runs``.
    """

    variant: str
    fraction: float
    runs: int
    failed: int
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def run_folder(out: Path, fraction: float, variant: str = "", seed: int | None = None) -> Path:
    """``<out>/frac_<F>`` for a plain sweep, ``<out>/<variant>/frac_<F>/seed_<S>`` in a grid."""
    folder = out / variant if variant else out
    folder = folder / f"frac_{fraction:g}"
    return folder / f"seed_{seed}" if seed is not None else folder


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


def wandb_logger(save_dir: Path, name: str, group: str = "", project: str = "hoiclip") -> dict:
    """A ``WandbLogger`` config for one run: offline unless ``WANDB_MODE=online`` is set."""
    args = {"project": project, "save_dir": str(save_dir), "name": name, "log_model": False,
            "offline": os.environ.get("WANDB_MODE", "offline") != "online"}
    if group:
        args["group"] = group
    return {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": args}


def _split_models(args: Sequence[str]) -> tuple[list[str], list[str]]:
    models: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--model" and i + 1 < len(args):
            models += [arg, args[i + 1]]
            i += 2
            continue
        (models if arg.startswith("--model=") else rest).append(arg)
        i += 1
    return models, rest


def model_first(args: Sequence[str]) -> list[str]:
    """``args`` with every ``--model X`` / ``--model=X`` moved to the front, in their order.

    LightningCLI replaces the whole model section when it reads ``--model FILE``, so an override of a model
    key given before it would be lost; with the model files first, every override applies to the model
    finally chosen (the last ``--model``).
    """
    models, rest = _split_models(args)
    return models + rest


def fit_command(config: str, fraction: float, folder: Path, extra: Sequence[str] = (), seed: int | None = None,
                loggers: Sequence[dict] = (), resume_from_last: bool = False) -> list[str]:
    """The ``hoiclip fit`` command line of one run (with the current interpreter).

    A CSV logger in ``folder`` always records the metrics (the summary reads them back); ``loggers`` are
    added beside it. ``seed`` sets both ``seed_everything`` and the subsample's ``fraction_seed``. ``extra``
    comes last, so its overrides win, except its ``--model FILE`` arguments, which come right after
    ``--config`` (:func:`model_first`). ``resume_from_last`` adds ``--ckpt_path last`` (the run's own
    ``<folder>/checkpoints/last.ckpt``).
    """
    logger: dict | list[dict] = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                 "init_args": {"save_dir": str(folder), "name": "csv"}}
    if loggers:
        logger = [logger, *loggers]
    seeding = [] if seed is None else ["--seed_everything", str(seed), "--data.init_args.fraction_seed", str(seed)]
    models, rest = _split_models(extra)
    return [
        sys.executable, "-m", "hoiclip_lightning.cli", "fit", "--config", config, *models,
        "--data.init_args.train_fraction", f"{fraction:g}",
        *seeding,
        "--trainer.default_root_dir", str(folder),
        "--trainer.logger", json.dumps(logger),
        "--model.init_args.per_class_ap_dir", str(folder),
        "--test_after_fit", "true",
        *rest,
        *(["--ckpt_path", "last"] if resume_from_last else []),
    ]


def last_checkpoint(folder: Path) -> Path:
    """Where a run in ``folder`` keeps its ``last.ckpt`` (:class:`~hoiclip_lightning.callbacks.RunCheckpoint`)."""
    return folder / "checkpoints" / "last.ckpt"


def finished_run(folder: Path, fraction: float, seed: int | None = None, variant: str = "") -> SweepRun | None:
    """The result of a run that completed in ``folder`` (its ``run.json``), or ``None``."""
    marker = folder / "run.json"
    if not marker.is_file():
        return None
    saved = json.loads(marker.read_text())
    if saved.get("returncode") != 0:
        return None
    return SweepRun(fraction, folder, 0, float(saved["seconds"]), dict(saved["metrics"]), variant, seed)


def run_one(config: str, fraction: float, folder: Path, extra: Sequence[str] = (), seed: int | None = None,
            variant: str = "", loggers: Sequence[dict] = (), keep_checkpoints: bool = True,
            env: Mapping[str, str] | None = None, resume: bool = False) -> SweepRun:
    """Run one ``hoiclip fit`` + test in a fresh process; its output goes to ``<folder>/log.txt``.

    ``keep_checkpoints=False`` deletes the run's ``*.ckpt`` files once it has been tested (a grid of
    small runs otherwise keeps two checkpoints each). ``env`` is added to the process environment (a
    worker's GPU or thread count, :func:`worker_environments`). ``resume``: a run whose folder holds a
    ``last.ckpt`` continues from it (``--ckpt_path last``) and appends to its ``log.txt``. The result is
    also written to ``<folder>/run.json`` (:func:`finished_run` reads it back).
    """
    folder.mkdir(parents=True, exist_ok=True)
    resume_from_last = resume and last_checkpoint(folder).is_file()
    cmd = fit_command(config, fraction, folder, extra, seed, loggers, resume_from_last)
    start = time.perf_counter()
    with (folder / "log.txt").open("a" if resume_from_last else "w") as fh:
        fh.write(shlex.join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False,
                              env=None if env is None else {**os.environ, **env})
    run = SweepRun(fraction, folder, proc.returncode, time.perf_counter() - start, read_test_metrics(folder),
                   variant, seed)
    (folder / "run.json").write_text(json.dumps({"returncode": run.returncode, "seconds": run.seconds,
                                                 "metrics": run.metrics, "command": cmd}) + "\n")
    if not keep_checkpoints and run.ok:
        for ckpt in folder.rglob("*.ckpt"):
            ckpt.unlink()
    if proc.returncode != 0:
        log.error("sweep: %s failed (exit %d); see %s", describe_run(run), proc.returncode, folder / "log.txt")
    return run


def describe_run(run: SweepRun) -> str:
    parts = ([f"variant {run.variant}"] if run.variant else []) + [f"fraction {run.fraction:g}"]
    return ", ".join(parts + ([f"seed {run.seed}"] if run.seed is not None else []))


# ---------------------------------------------------------------------- parallel local workers
def _visible_gpus(environ: Mapping[str, str]) -> list[str]:
    """The GPU ids a child process may use: ``CUDA_VISIBLE_DEVICES`` if set, else ``0 .. n-1``."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA: CPU workers
        count = 0
    if count == 0:
        return []
    visible = [d.strip() for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return visible[:count] if visible else [str(i) for i in range(count)]


def worker_environments(parallel: int, environ: Mapping[str, str] | None = None,
                        gpus: Sequence[str] | None = None, cpus: int | None = None) -> list[dict[str, str]]:
    """The extra environment of each of ``parallel`` local workers.

    With GPUs (``gpus``, default: the visible ones), worker k gets ``CUDA_VISIBLE_DEVICES`` = the k-th GPU
    (round robin: more workers than GPUs share them, with a warning). Without, each worker gets
    ``OMP_NUM_THREADS`` = its share of the ``cpus`` cores (at least 1) unless the environment already
    sets it. One worker changes nothing.
    """
    if parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {parallel}")
    environ = os.environ if environ is None else environ
    if parallel == 1:
        return [{}]
    gpus = _visible_gpus(environ) if gpus is None else list(gpus)
    if gpus:
        if parallel > len(gpus):
            log.warning("sweep: %d workers share %d GPU(s)", parallel, len(gpus))
        return [{"CUDA_VISIBLE_DEVICES": gpus[k % len(gpus)]} for k in range(parallel)]
    if "OMP_NUM_THREADS" in environ:
        return [{} for _ in range(parallel)]
    share = max(1, (cpus or os.cpu_count() or 1) // parallel)
    return [{"OMP_NUM_THREADS": str(share)} for _ in range(parallel)]


@dataclass
class SweepJob:
    """One planned run: its swept values, folder and the overrides and loggers of its ``hoiclip fit``."""

    fraction: float
    folder: Path
    extra: list[str] = field(default_factory=list)
    seed: int | None = None
    variant: str = ""
    loggers: list[dict] = field(default_factory=list)


def execute(config: str, jobs: Sequence[SweepJob], parallel: int = 1, keep_checkpoints: bool = True,
            resume: bool = False, stop_on_error: bool = False,
            on_result: Callable[[list[SweepRun]], None] | None = None) -> list[SweepRun]:
    """Run ``jobs`` with ``parallel`` local workers; the results come back in the order of ``jobs``.

    Each run is its own process in its own folder (:func:`run_one`), so the workers share nothing but
    the machine; worker k runs with :func:`worker_environments`' k-th environment. ``resume``: a job whose
    folder holds a finished ``run.json`` is not run again, an unfinished one continues from its
    ``last.ckpt``. ``on_result`` receives the results finished so far (in job order) after each run.
    ``stop_on_error``: no new run starts after a failure (runs already started finish).
    """
    envs = worker_environments(parallel)
    results: dict[int, SweepRun] = {}
    todo: list[int] = []
    for i, job in enumerate(jobs):
        done = finished_run(job.folder, job.fraction, job.seed, job.variant) if resume else None
        if done is not None:
            log.info("sweep: %s already finished in %s", describe_run(done), job.folder)
            results[i] = done
        else:
            todo.append(i)
    slots: list[dict[str, str]] = list(envs)
    lock = threading.Lock()
    failed = threading.Event()

    def work(i: int) -> SweepRun | None:
        if failed.is_set() and stop_on_error:
            return None
        with lock:
            env = slots.pop()
        try:
            job = jobs[i]
            log.info("sweep: %s -> %s%s", describe_run(SweepRun(job.fraction, job.folder, variant=job.variant,
                                                                 seed=job.seed)), job.folder,
                     f" ({', '.join(f'{k}={v}' for k, v in env.items())})" if env else "")
            run = run_one(config, job.fraction, job.folder, job.extra, job.seed, job.variant, job.loggers,
                          keep_checkpoints, env or None, resume)
            if not run.ok:
                failed.set()
            return run
        finally:
            with lock:
                slots.append(env)

    with ThreadPoolExecutor(max_workers=len(envs)) as pool:
        futures = {pool.submit(work, i): i for i in todo}
        for future in as_completed(futures):
            run = future.result()
            if run is not None:
                results[futures[future]] = run
                if on_result is not None:
                    on_result([results[i] for i in sorted(results)])
    return [results[i] for i in sorted(results)]


def run_sweep(config: str, fractions: Sequence[float], out: Path, extra: Sequence[str] = (),
              stop_on_error: bool = False, parallel: int = 1, resume: bool = False) -> list[SweepRun]:
    """Run ``hoiclip fit`` + test for each fraction (``parallel`` at a time); write the summary and the plot."""
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"--fractions: every fraction must be in (0, 1], got {f}")
    if not Path(config).is_file():
        raise FileNotFoundError(f"--config: file not found: {config}")
    worker_environments(parallel)  # checks the value before anything runs
    out.mkdir(parents=True, exist_ok=True)
    jobs = [SweepJob(f, run_folder(out, f), list(extra)) for f in fractions]
    runs = execute(config, jobs, parallel, resume=resume, stop_on_error=stop_on_error,
                   on_result=lambda done: write_summary(done, out))
    write_summary(runs, out)
    return runs


def run_grid(config: str, fractions: Sequence[float], out: Path, variants: Mapping[str, Sequence[str]],
             seeds: Sequence[int], extra: Sequence[str] = (), stop_on_error: bool = False, wandb: bool = False,
             wandb_project: str = "hoiclip", keep_checkpoints: bool = True, parallel: int = 1,
             resume: bool = False) -> list[SweepRun]:
    """Every variant at every fraction with every seed (``parallel`` runs at a time); writes the grid summary.

    ``variants`` maps a name (also its folder) to the overrides added after ``extra``. With ``wandb`` each
    run also logs to W&B (offline unless ``WANDB_MODE=online``) under ``<out>/wandb``, named
    ``<variant>/frac_<F>/seed_<S>`` and grouped by variant.
    """
    _check_grid(config, fractions, variants, seeds)
    worker_environments(parallel)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [SweepJob(f, run_folder(out, f, name, seed), [*extra, *overrides], seed, name,
                     [wandb_logger(out, f"{name}/frac_{f:g}/seed_{seed}", name, wandb_project)] if wandb else [])
            for name, overrides in variants.items() for f in fractions for seed in seeds]
    runs = execute(config, jobs, parallel, keep_checkpoints, resume, stop_on_error,
                   on_result=lambda done: write_grid_summary(done, out))
    write_grid_summary(runs, out)
    return runs


# ---------------------------------------------------------------------- W&B sweep agents
@dataclass(frozen=True)
class AgentRun:
    """The W&B sweep and run ids of a process started by ``wandb agent`` (``WANDB_SWEEP_ID``, ``WANDB_RUN_ID``)."""

    sweep_id: str
    run_id: str


def agent_run(environ: Mapping[str, str] | None = None) -> AgentRun | None:
    """The W&B sweep run this process belongs to, or ``None`` outside a sweep agent."""
    environ = os.environ if environ is None else environ
    sweep, run = environ.get("WANDB_SWEEP_ID", ""), environ.get("WANDB_RUN_ID", "")
    if not sweep or not run:
        return None
    return AgentRun(sweep.replace("/", "_"), run.replace("/", "_"))


def agent_run_dir(root: str | os.PathLike | None, run: AgentRun) -> Path:
    """``<root>/sweep-<sweep id>/<run id>``: the folder of one sweep run under the config's ``default_root_dir``."""
    return Path(root if root else ".") / f"sweep-{run.sweep_id}" / run.run_id


def _loggers(trainer_config) -> list:
    logger = getattr(trainer_config, "logger", None)
    if isinstance(logger, (list, tuple)):
        return list(logger)
    return [logger] if logger is not None and not isinstance(logger, bool) else []


def isolate_agent_run(config, environ: Mapping[str, str] | None = None) -> Path | None:
    """Give a ``hoiclip fit`` started by a W&B sweep agent its own run folder, derived from its run id.

    ``config`` is the parsed ``fit`` namespace, changed in place before anything is built:
    ``trainer.default_root_dir`` becomes :func:`agent_run_dir` (so the checkpoints of
    :class:`~hoiclip_lightning.callbacks.RunCheckpoint` go to ``<run folder>/checkpoints``), every logger's
    ``save_dir`` and a set ``model.init_args.per_class_ap_dir`` move there too. When that folder already
    holds ``checkpoints/last.ckpt`` (W&B handed this agent a preempted run again, under the same run id),
    ``ckpt_path`` (unset or ``last``) becomes that file, so the run continues where it stopped; a first
    start with ``--ckpt_path last`` starts from scratch. Any number of agents can then run in parallel, on
    one or many machines sharing the folder, without touching each other's files. Outside a sweep agent
    nothing changes and ``None`` is returned; otherwise the run folder.
    """
    run = agent_run(environ)
    if run is None:
        return None
    trainer = config.trainer
    folder = agent_run_dir(getattr(trainer, "default_root_dir", None), run)
    trainer.default_root_dir = str(folder)
    for logger in _loggers(trainer):
        init = getattr(logger, "init_args", None)
        if init is not None and "save_dir" in init:
            init.save_dir = str(folder)
    model_init = getattr(getattr(config, "model", None), "init_args", None)
    if model_init is not None and getattr(model_init, "per_class_ap_dir", None):
        model_init.per_class_ap_dir = str(folder)
    ckpt = config.get("ckpt_path")
    last = last_checkpoint(folder)
    if ckpt in (None, "last"):
        if last.is_file():
            config.ckpt_path = str(last)
            log.info("W&B sweep %s, run %s: continuing from %s", run.sweep_id, run.run_id, last)
        else:
            config.ckpt_path = None
            log.info("W&B sweep %s, run %s: new run in %s", run.sweep_id, run.run_id, folder)
    return folder


def _check_grid(config: str, fractions: Sequence[float], variants: Mapping[str, Sequence[str]],
                seeds: Sequence[int]) -> None:
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"--fractions: every fraction must be in (0, 1], got {f}")
    if not Path(config).is_file():
        raise FileNotFoundError(f"--config: file not found: {config}")
    if not variants or not seeds:
        raise ValueError("a grid needs at least one variant and one seed")
    bad = [n for n in variants if not n or "/" in n or n.startswith(".")]
    if bad:
        raise ValueError(f"variant names become folder names; not allowed: {bad}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: repeated seed in {list(seeds)}")


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


def aggregate(runs: Sequence[SweepRun], keys: Sequence[str] | None = None) -> list[GroupSummary]:
    """Mean +- sample standard deviation of each metric over the seeds of each (variant, fraction).

    Groups come in the order of their first run. Failed runs and NaN values are left out of the
    statistics (``GroupSummary.n`` says how many went in); ``keys`` defaults to the summary columns present.
    """
    keys = list(keys) if keys is not None else [k for k, _ in _columns(runs)]
    groups: dict[tuple[str, float], list[SweepRun]] = {}
    for r in runs:
        groups.setdefault((r.variant, r.fraction), []).append(r)
    out: list[GroupSummary] = []
    for (variant, fraction), members in groups.items():
        g = GroupSummary(variant, fraction, len(members), sum(not r.ok for r in members),
                         seconds=sum(r.seconds for r in members))
        for key in keys:
            values = [r.metrics[key] for r in members
                      if r.ok and key in r.metrics and not math.isnan(r.metrics[key])]
            g.n[key] = len(values)
            g.mean[key] = statistics.fmean(values) if values else math.nan
            g.std[key] = statistics.stdev(values) if len(values) > 1 else math.nan
        out.append(g)
    return out


def _mean_std(g: GroupSummary, key: str) -> str:
    if not g.n.get(key):
        return "-"
    if math.isnan(g.std[key]):
        return f"{g.mean[key]:.2f}"
    return f"{g.mean[key]:.2f} ± {g.std[key]:.2f}"


def grid_markdown(runs: Sequence[SweepRun], columns: Sequence[tuple[str, str]] | None = None) -> str:
    """Markdown: mean +- std per (variant, fraction), then every run with its seed, wall time and status."""
    cols = list(columns) if columns is not None else _columns(runs)
    groups = aggregate(runs, [k for k, _ in cols])
    lines = ["| variant | fraction | seeds | " + " | ".join(t for _, t in cols) + " | time (s) |",
             "|---|---:|---:|" + "---:|" * len(cols) + "---:|"]
    for g in groups:
        seeds = f"{g.runs - g.failed}" + (f" ({g.failed} failed)" if g.failed else "")
        lines.append(f"| {g.variant} | {g.fraction:g} | {seeds} | " + " | ".join(_mean_std(g, k) for k, _ in cols)
                     + f" | {g.seconds:.0f} |")
    lines += ["", "Every run:", "",
              "| variant | fraction | seed | " + " | ".join(t for _, t in cols) + " | time (s) | status |",
              "|---|---:|---:|" + "---:|" * len(cols) + "---:|---|"]
    for r in runs:
        cells = [f"{r.metrics[k]:.2f}" if k in r.metrics else "-" for k, _ in cols]
        status = "ok" if r.ok else f"failed ({r.returncode})"
        lines.append(f"| {r.variant} | {r.fraction:g} | {'' if r.seed is None else r.seed} | " + " | ".join(cells)
                     + f" | {r.seconds:.0f} | {status} |")
    trained = {r.folder: r.seconds for r in runs}  # a run read as two variants (no_tfe) counts once
    total = sum(trained.values())
    shared = f" ({len(runs)} table rows)" if len(trained) != len(runs) else ""
    lines += ["", f"{len(trained)} runs{shared}, {total:.0f} s of wall time in all."]
    return "\n".join(lines)


def write_grid_summary(runs: Sequence[SweepRun], out: Path, columns: Sequence[tuple[str, str]] | None = None,
                       plot_runs: Sequence[SweepRun] | None = None, plot_key: str = "test/mAP_full") -> None:
    """``summary.csv`` (per variant and fraction: seeds, ``<key>_mean`` / ``<key>_std`` / ``<key>_n``,
    seconds), ``summary.md``, ``runs.csv`` (every run and its wall time) and ``map_vs_fraction.png``
    (``plot_key`` of ``plot_runs``, default all runs)."""
    cols = list(columns) if columns is not None else _columns(runs)
    keys = [k for k, _ in cols]
    with (out / "summary.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["variant", "fraction", "runs", "failed",
                         *[f"{k}_{s}" for k in keys for s in ("mean", "std", "n")], "seconds"])
        for g in aggregate(runs, keys):
            cells = []
            for k in keys:
                cells += ["" if math.isnan(g.mean[k]) else f"{g.mean[k]:.4f}",
                          "" if math.isnan(g.std[k]) else f"{g.std[k]:.4f}", g.n[k]]
            writer.writerow([g.variant, f"{g.fraction:g}", g.runs, g.failed, *cells, f"{g.seconds:.1f}"])
    with (out / "runs.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["variant", "fraction", "seed", *keys, "seconds", "returncode", "folder"])
        for r in runs:
            writer.writerow([r.variant, f"{r.fraction:g}", "" if r.seed is None else r.seed,
                             *[r.metrics.get(k, "") for k in keys], f"{r.seconds:.1f}", r.returncode, str(r.folder)])
    (out / "summary.md").write_text(grid_markdown(runs, cols) + "\n")
    try:
        plot_grid(aggregate(plot_runs if plot_runs is not None else runs, [plot_key]), out / "map_vs_fraction.png",
                  plot_key)
    except Exception as err:  # the table is the result; the plot is a convenience
        log.warning("sweep: could not draw the plot: %s", err)


def plot_grid(groups: Sequence[GroupSummary], path: Path, key: str = "test/mAP_full",
              title: str = "HOI detection mAP against training-data fraction") -> None:
    """One line per variant: mean ``key`` against the fraction, with +- std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for variant in dict.fromkeys(g.variant for g in groups):
        pts = sorted((g.fraction, g.mean[key], g.std[key]) for g in groups
                     if g.variant == variant and g.n.get(key))
        if pts:
            ax.errorbar([p[0] * 100 for p in pts], [p[1] for p in pts],
                        yerr=[0.0 if math.isnan(p[2]) else p[2] for p in pts], marker="o", capsize=3,
                        label=variant or "(default)")
    _save_fraction_plot(fig, ax, f"{key} (%), mean ± std over seeds", title, path)


def _save_fraction_plot(fig, ax, ylabel: str, title: str, path: Path) -> None:
    """Log-scaled fraction axis, labels, grid and legend; write ``path`` and close the figure."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log")
    ax.set_xlabel("training images (%)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
    _save_fraction_plot(fig, ax, "test mAP (%)", "HOI detection mAP against training-data fraction", path)


def sweep(config: str, fractions: list[float], out: str | Path, seeds: list[int] | None = None,
          variants: dict[str, str] | None = None, stop_on_error: bool = False, wandb: bool = False,
          fit_args: Sequence[str] = (), parallel: int = 1, resume: bool = False) -> list[SweepRun]:
    """Train and test a config over training-data fractions without a W&B server (``parallel`` runs at a time).

    Writes ``summary.csv``, ``summary.md`` and ``map_vs_fraction.png`` to ``out``. With none of ``seeds``,
    ``variants`` and ``wandb``, one run per fraction (:func:`run_sweep`); with any of them, a grid of every
    variant at every fraction with every seed (:func:`run_grid`).

    Args:
        config: base config of ``hoiclip fit`` (e.g. ``configs/quickstart.yaml``).
        fractions: values of ``data.init_args.train_fraction``, each in (0, 1].
        out: output folder (one sub-folder per run, plus the summary).
        seeds: grid: run each fraction with each seed (``seed_everything`` and ``fraction_seed``); the
            summary gives mean +- std over the seeds (``None``: seed 0 in a grid).
        variants: grid: variant name -> its ``hoiclip fit`` overrides in one string, e.g.
            ``{"no_tfe": "--model.init_args.postprocess.tfe false"}`` (on the command line
            ``--variants.no_tfe "--model.init_args.postprocess.tfe false"``); ``None``: one variant, ``default``,
            without overrides.
        stop_on_error: stop at the first failed run.
        wandb: grid: also log every run to W&B (offline unless ``WANDB_MODE=online``), in ``<out>/wandb``.
        fit_args: arguments added to every ``hoiclip fit`` (on the command line: after ``--``).
        parallel: runs at a time, each in its own process and folder (one GPU per worker when there are GPUs,
            else an equal share of the CPU threads).
        resume: continue an interrupted sweep in the same ``out``: finished runs are read back from their
            ``run.json``, unfinished ones continue from their own ``last.ckpt``.

    Returns:
        the runs, in the order they ran.

    Raises:
        ValueError: a fraction outside (0, 1], a bad variant name or a repeated seed.
        FileNotFoundError: ``config`` does not exist.
    """
    out = Path(out)
    if seeds is None and variants is None and not wandb:
        return run_sweep(config, fractions, out, list(fit_args), stop_on_error, parallel, resume)
    overrides = {name: shlex.split(text) for name, text in (variants or {"default": ""}).items()}
    return run_grid(config, fractions, out, overrides, seeds if seeds is not None else [0], list(fit_args),
                    stop_on_error, wandb, parallel=parallel, resume=resume)
