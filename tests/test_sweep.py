"""Sweep runs are isolated: parallel local workers, W&B sweep agents in their own folders, preemption and resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from jsonargparse import Namespace
from lightning.pytorch.loggers import Logger

from hoiclip_lightning.cli import main as cli_main
from hoiclip_lightning.sweep import (
    AgentRun,
    SweepJob,
    agent_run,
    agent_run_dir,
    execute,
    fit_command,
    isolate_agent_run,
    model_first,
    worker_environments,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests/conf/hico_tiny.yaml"


# ---------------------------------------------------------------------------------------------- units
def test_model_files_come_first_so_overrides_apply_to_the_chosen_model(tmp_path):
    args = ["--model.init_args.optimizer.lr", "0.1", "--model", "a.yaml", "--trainer.max_steps", "3",
            "--model=b.yaml", "--model.init_args.net", '{"x": 1}']
    assert model_first(args) == ["--model", "a.yaml", "--model=b.yaml", "--model.init_args.optimizer.lr", "0.1",
                                 "--trainer.max_steps", "3", "--model.init_args.net", '{"x": 1}']
    cmd = fit_command("c.yaml", 0.5, tmp_path, ["--trainer.max_steps", "3", "--model", "g.yaml"], seed=1,
                      resume_from_last=True)
    assert cmd[cmd.index("fit"):cmd.index("fit") + 5] == ["fit", "--config", "c.yaml", "--model", "g.yaml"]
    assert cmd[-4:] == ["--trainer.max_steps", "3", "--ckpt_path", "last"]
    assert cmd[cmd.index("--trainer.default_root_dir") + 1] == str(tmp_path)


def test_worker_environments_one_gpu_or_a_cpu_share_each():
    assert worker_environments(1, {}) == [{}]
    assert worker_environments(3, {}, gpus=["4", "6"]) == [{"CUDA_VISIBLE_DEVICES": "4"},
                                                          {"CUDA_VISIBLE_DEVICES": "6"},
                                                          {"CUDA_VISIBLE_DEVICES": "4"}]
    assert worker_environments(3, {}, gpus=[], cpus=8) == [{"OMP_NUM_THREADS": "2"}] * 3
    assert worker_environments(4, {}, gpus=[], cpus=2) == [{"OMP_NUM_THREADS": "1"}] * 4
    assert worker_environments(2, {"OMP_NUM_THREADS": "3"}, gpus=[]) == [{}, {}]  # the user's setting stays
    with pytest.raises(ValueError, match="--parallel must be >= 1"):
        worker_environments(0, {})


def _fit_namespace(root: str | None, ckpt_path=None, ap_dir=None) -> Namespace:
    csv = Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(save_dir="runs/x", name="c"))
    wb = Namespace(class_path="lightning.pytorch.loggers.WandbLogger", init_args=Namespace(save_dir="runs/x"))
    return Namespace(trainer=Namespace(default_root_dir=root, logger=[csv, wb]), ckpt_path=ckpt_path,
                     model=Namespace(class_path="M", init_args=Namespace(per_class_ap_dir=ap_dir)))


def test_agent_run_folder_derives_from_the_run_id_and_resumes_its_own_checkpoint(tmp_path):
    env = {"WANDB_SWEEP_ID": "sw1", "WANDB_RUN_ID": "r42"}
    assert agent_run({}) is None and agent_run({"WANDB_RUN_ID": "r"}) is None  # a plain W&B run: not a sweep
    assert agent_run(env) == AgentRun("sw1", "r42")
    # outside an agent nothing changes
    config = _fit_namespace(str(tmp_path))
    assert isolate_agent_run(config, {}) is None and config.trainer.default_root_dir == str(tmp_path)
    # first start: its own folder, loggers inside it, `--ckpt_path last` means "if there is one"
    config = _fit_namespace(str(tmp_path), ckpt_path="last", ap_dir="shared")
    folder = isolate_agent_run(config, env)
    assert folder == tmp_path / "sweep-sw1" / "r42" == agent_run_dir(tmp_path, AgentRun("sw1", "r42"))
    assert config.trainer.default_root_dir == str(folder) and config.ckpt_path is None
    assert [lg.init_args.save_dir for lg in config.trainer.logger] == [str(folder)] * 2
    assert config.model.init_args.per_class_ap_dir == str(folder)
    # another run of the same sweep: another folder
    other = _fit_namespace(str(tmp_path))
    assert isolate_agent_run(other, {**env, "WANDB_RUN_ID": "r43"}) == tmp_path / "sweep-sw1" / "r43"
    # W&B hands the preempted run r42 out again: it continues from its own last.ckpt
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"x")
    again = _fit_namespace(str(tmp_path))
    isolate_agent_run(again, env)
    assert again.ckpt_path == str(folder / "checkpoints" / "last.ckpt")
    # an explicit checkpoint file is kept
    explicit = _fit_namespace(str(tmp_path), ckpt_path="my.ckpt")
    isolate_agent_run(explicit, env)
    assert explicit.ckpt_path == "my.ckpt"


def test_parallel_option_is_checked_before_any_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["sweep", "--config", str(ROOT / TINY), "--fractions", "[0.5]", "--out", str(tmp_path / "o"),
                  "--parallel", "0"])
    assert info.value.code == 2 and "--parallel must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------- parallel sweep
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from hoiclip_lightning.data import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("world")
    generate_synthetic_dataset(root, seed=7, num_train=12, num_test=4, num_val=0, image_size=64, max_people=1,
                               distractors=False, clutter=False)
    return root


def _world_args(world: Path) -> list[str]:
    return ["--data.init_args.root", str(world), "--data.init_args.vocabulary", str(world / "vocabulary.json"),
            "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
            "--trainer.log_every_n_steps", "1", "--trainer.enable_checkpointing", "true",
            "--trainer.callbacks+=hoiclip_lightning.callbacks.RunCheckpoint", "--trainer.callbacks.save_last=true"]


def _losses(folder: Path) -> list[float]:
    import csv

    with (folder / "csv/version_0/metrics.csv").open(newline="") as fh:
        return [float(r["train/loss"]) for r in csv.DictReader(fh) if r.get("train/loss")]


@pytest.mark.slow
def test_two_parallel_workers_give_the_one_by_one_results(world, tmp_path, monkeypatch, capsys):
    """3 fractions of a synthetic world, one by one and with 2 workers: equal losses, weights and metrics per run."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same thread count in both modes (workers keep it)
    fractions = "[0.25, 0.5, 1.0]"
    cli_main(["sweep", "--config", TINY, "--fractions", fractions, "--out", str(tmp_path / "seq"), "--",
              *_world_args(world)])
    cli_main(["sweep", "--config", TINY, "--fractions", fractions, "--out", str(tmp_path / "par"), "--parallel", "2",
              "--", *_world_args(world)])
    figures = {}
    for f in ("0.25", "0.5", "1"):
        seq, par = (json.loads((tmp_path / mode / f"frac_{f}" / "run.json").read_text()) for mode in ("seq", "par"))
        assert seq["returncode"] == par["returncode"] == 0
        assert seq["metrics"] and seq["metrics"].keys() == par["metrics"].keys(), f
        for key, value in seq["metrics"].items():  # exactly equal, or NaN in both (a split with no ground truth)
            assert value == par["metrics"][key] or (math.isnan(value) and math.isnan(par["metrics"][key])), key
        losses = [_losses(tmp_path / mode / f"frac_{f}") for mode in ("seq", "par")]
        assert losses[0] == losses[1], f  # every step's training loss, exactly
        a, b = (torch.load(tmp_path / mode / f"frac_{f}" / "checkpoints/last.ckpt", map_location="cpu",
                           weights_only=False) for mode in ("seq", "par"))
        assert a["global_step"] == b["global_step"] == len(losses[0])
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]), f
        figures[f] = {"steps": a["global_step"], "last loss": losses[0][-1],
                      "test/mAP_full": (seq["metrics"]["test/mAP_full"], par["metrics"]["test/mAP_full"])}
    # the fractions did reach the runs: 3, 6 and 12 training images, batch 2, 1 epoch
    assert [figures[f]["steps"] for f in ("0.25", "0.5", "1")] == [2, 3, 6]
    assert len({figures[f]["last loss"] for f in figures}) == 3  # different runs, different results
    assert "| 0.25 |" in capsys.readouterr().out
    print("sweep equality (one by one vs 2 workers):", json.dumps(figures))
    # a restarted sweep reads finished runs back instead of training them again
    before = (tmp_path / "par/frac_1/log.txt").stat().st_mtime_ns
    cli_main(["sweep", "--config", TINY, "--fractions", fractions, "--out", str(tmp_path / "par"), "--parallel", "2",
              "--resume", "true", "--", *_world_args(world)])
    assert (tmp_path / "par/frac_1/log.txt").stat().st_mtime_ns == before
    rows = (tmp_path / "par/summary.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0.25", "0.5", "1"]


def test_execute_keeps_job_order_and_resumes_finished_runs(tmp_path, monkeypatch):
    """``execute`` with fake runs: results in job order, finished ``run.json`` read back, workers' envs used."""
    import hoiclip_lightning.sweep as sweep

    seen = []

    def fake_run_one(config, fraction, folder, extra, seed, variant, loggers, keep, env, resume):
        seen.append((fraction, env))
        return sweep.SweepRun(fraction, folder, 0, 1.0, {"test/mAP_full": fraction * 10}, variant, seed)

    monkeypatch.setattr(sweep, "run_one", fake_run_one)
    monkeypatch.setattr(sweep, "worker_environments", lambda n: [{"W": str(k)} for k in range(n)])
    done = tmp_path / "done"
    done.mkdir()
    (done / "run.json").write_text(json.dumps({"returncode": 0, "seconds": 3.0, "metrics": {"test/mAP_full": 7.0}}))
    jobs = [SweepJob(0.1, tmp_path / "a"), SweepJob(0.2, done), SweepJob(0.3, tmp_path / "c")]
    runs = execute("c.yaml", jobs, parallel=2, resume=True)
    assert [r.fraction for r in runs] == [0.1, 0.2, 0.3]
    assert [r.metrics["test/mAP_full"] for r in runs] == [1.0, 7.0, 3.0]
    assert sorted(f for f, _ in seen) == [0.1, 0.3] and {e["W"] for _, e in seen} <= {"0", "1"}


# ---------------------------------------------------------------------------------------------- W&B agent run
class PreemptRecorder(Logger):
    """Test logger: its experiment records ``mark_preempting`` calls in a file."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out

    class _Experiment:
        def __init__(self, out: str) -> None:
            self.out = out

        def mark_preempting(self) -> None:
            Path(self.out).write_text("preempting")

    @property
    def experiment(self):
        return self._Experiment(self.out)

    @property
    def save_dir(self) -> str:
        return str(Path(self.out).parent)

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        pass


class SigtermAtStep(L.Callback):
    """Test helper: sends this process SIGTERM (a cluster's preemption notice) after ``step`` steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_agent_run_preempted_then_requeued_continues_in_its_own_folder(tmp_path):
    """Under a sweep agent's variables: SIGTERM at step 2 -> last.ckpt + mark_preempting; the restart resumes."""
    env = {**os.environ, "WANDB_SWEEP_ID": "sw", "WANDB_RUN_ID": "run1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    marker = tmp_path / "preempted.txt"
    base = [sys.executable, "-m", "hoiclip_lightning.cli", "fit", "--config", TINY, "--trainer.max_epochs", "2",
            "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_checkpointing", "true",
            "--trainer.callbacks+=hoiclip_lightning.callbacks.RunCheckpoint", "--trainer.callbacks.save_last=true",
            "--trainer.callbacks.enable_version_counter=false",  # as in the configs: one last.ckpt
            "--trainer.logger", json.dumps({"class_path": "test_sweep.PreemptRecorder",
                                            "init_args": {"out": str(marker)}})]
    first = subprocess.run([*base, "--trainer.callbacks+=test_sweep.SigtermAtStep", "--trainer.callbacks.step=2"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    folder = tmp_path / "sweep-sw" / "run1"
    assert first.returncode == 143, first.stderr[-2000:]  # 128 + SIGTERM: not "finished" for W&B
    assert marker.read_text() == "preempting"
    last = folder / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2  # mid-epoch (3 steps per epoch)
    assert not (tmp_path / "checkpoints").exists()  # nothing in the shared default_root_dir
    second = subprocess.run(base, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"continuing from {last}" in second.stderr
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 6  # 2 epochs in all
