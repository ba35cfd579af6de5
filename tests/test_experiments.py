"""Experiment workflow: paper configs, mixed precision, DDP, W&B offline, local sweeps, resume, monitoring."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from hoiclip_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests/conf/hico_tiny.yaml"
EXPERIMENTS = sorted((ROOT / "configs/experiments").glob("*.yaml"))


def printed_config(config: str, *extra: str) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as info:
        main(["fit", "--config", config, *extra, "--print_config"])
    assert info.value.code == 0
    return yaml.safe_load(buf.getvalue())


def csv_logger(folder: Path) -> str:
    return json.dumps({"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(folder), "name": "csv", "version": 0}})


def metric_rows(folder: Path) -> list[dict[str, str]]:
    import csv

    with (folder / "csv/version_0/metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------------------------- 1. configs
def test_every_paper_setting_has_an_experiment_file():
    names = {p.stem for p in EXPERIMENTS}
    assert {"hico_det", "hico_det_frac01", "hico_det_frac05", "hico_det_frac15", "hico_det_frac25",
            "hico_det_frac50", "hico_det_rf_uc", "hico_det_nf_uc", "hico_det_uo", "hico_det_uv", "vcoco",
            "ablation_no_clip_retrieval", "ablation_no_text_init", "ablation_no_verb_adapter", "ablation_no_tfe",
            "quickstart"} <= names


def test_experiment_key_values(monkeypatch):
    monkeypatch.chdir(ROOT)
    base = printed_config("configs/experiments/hico_det.yaml")
    net, data = base["model"]["init_args"]["net"], base["data"]["init_args"]
    assert base["trainer"]["max_epochs"] == 90 and base["trainer"]["gradient_clip_val"] == 0.1
    assert (net["num_queries"], net["verb_weight"], data["zero_shot"], data["batch_size"]) == (64, 0.5, "default", 8)
    assert base["trainer"]["logger"]["class_path"] == "lightning.pytorch.loggers.WandbLogger"
    steps = [c["init_args"].get("every_n_train_steps") for c in base["trainer"]["callbacks"]
             if c["class_path"].endswith("RunCheckpoint")]
    assert 500 in steps  # mid-epoch last.ckpt

    uv = printed_config("configs/experiments/hico_det_uv.yaml")
    assert uv["data"]["init_args"]["zero_shot"] == "unseen_verb"
    assert uv["model"]["init_args"]["net"]["verb_weight"] == 0.5
    assert uv["trainer"]["max_epochs"] == 90 and uv["data"]["init_args"]["root"] == data["root"]
    for name, split in (("rf_uc", "rare_first"), ("nf_uc", "non_rare_first"), ("uo", "unseen_object")):
        assert printed_config(f"configs/experiments/hico_det_{name}.yaml")["data"]["init_args"]["zero_shot"] == split

    for pct in (5, 15, 25, 50):
        cfg = printed_config(f"configs/experiments/hico_det_frac{pct:02d}.yaml")
        assert cfg["data"]["init_args"]["train_annotation_file"] == f"trainval_hico_{pct}%.json"
        assert cfg["data"]["init_args"]["train_fraction"] == 1.0
        assert cfg["model"]["init_args"]["rare_from_training_file"] is True
    one = printed_config("configs/experiments/hico_det_frac01.yaml")["data"]["init_args"]
    assert (one["train_fraction"], one["train_annotation_file"]) == (0.01, None)

    vcoco = printed_config("configs/experiments/vcoco.yaml")
    assert vcoco["data"]["init_args"]["dataset_format"] == "vcoco"
    assert vcoco["model"]["init_args"]["net"]["verb_weight"] == 0.1

    for name, key in (("no_clip_retrieval", "clip_retrieval"), ("no_text_init", "text_init"),
                      ("no_verb_adapter", "verb_adapter")):
        cfg = printed_config(f"configs/experiments/ablation_{name}.yaml")["model"]["init_args"]["net"]
        assert cfg[key] is False and sum(cfg[k] is False for k in ("clip_retrieval", "text_init", "verb_adapter")) == 1
    no_tfe = printed_config("configs/experiments/ablation_no_tfe.yaml")["model"]["init_args"]
    assert no_tfe["postprocess"]["tfe"] is False


def test_genvlkt_experiments_cover_low_data_and_zero_shot(monkeypatch):
    monkeypatch.chdir(ROOT)
    base = printed_config("configs/experiments/genvlkt_hico_det.yaml")
    assert base["model"]["class_path"] == "hoiclip_lightning.models.GENVLKTModule"
    assert base["model"]["init_args"]["net"]["train_text_classifiers"] is True
    for name, split in (("rf_uc", "rare_first"), ("nf_uc", "non_rare_first"), ("uo", "unseen_object"),
                        ("uv", "unseen_verb")):
        cfg = printed_config(f"configs/experiments/genvlkt_hico_det_{name}.yaml")
        assert cfg["data"]["init_args"]["zero_shot"] == split
        assert cfg["model"]["init_args"]["net"]["train_text_classifiers"] is False  # the reference's --fix_clip
        assert cfg["model"]["class_path"] == base["model"]["class_path"]
        assert cfg["trainer"]["default_root_dir"] == f"runs/genvlkt_hico_det_{name}"
    for pct in (5, 15, 25, 50):
        data = printed_config(f"configs/experiments/genvlkt_hico_det_frac{pct:02d}.yaml")["data"]["init_args"]
        assert data["train_annotation_file"] == f"trainval_hico_{pct}%.json" and data["train_fraction"] == 1.0
    one = printed_config("configs/experiments/genvlkt_hico_det_frac01.yaml")
    assert one["data"]["init_args"]["train_fraction"] == 0.01 and one["model"]["init_args"]["rare_from_training_file"]


def test_sweep_file_drives_the_cli():
    sweep = yaml.safe_load((ROOT / "configs/sweeps/data_fraction.yaml").read_text())
    assert sweep["parameters"]["data.init_args.train_fraction"]["values"] == [0.01, 0.05, 0.15, 0.25, 0.5, 1.0]
    assert sweep["command"][:2] == ["hoiclip", "fit"] and sweep["command"][-1] == "${args}"
    config = sweep["command"][sweep["command"].index("--config") + 1]
    assert (ROOT / config).is_file()


def test_model_sweep_file_compares_hoiclip_and_genvlkt(monkeypatch):
    """configs/sweeps/model_fraction.yaml, expanded as a W&B agent does: each model file gets the later overrides."""
    monkeypatch.chdir(ROOT)
    sweep = yaml.safe_load((ROOT / "configs/sweeps/model_fraction.yaml").read_text())
    command = sweep["command"]
    assert command[:2] == ["hoiclip", "fit"]
    classes = []
    for model in sweep["parameters"]["model"]["values"]:
        args = [f"--model={model}", "--data.init_args.train_fraction=0.05"]
        expanded = [a for c in command[2:] for a in (args if c == "${args}" else [c])]
        printed = printed_config(*expanded[1:])  # expanded[0] is --config
        init = printed["model"]["init_args"]
        assert init["rare_from_training_file"] is True and printed["data"]["init_args"]["train_fraction"] == 0.05
        classes.append(printed["model"]["class_path"])
    assert classes == ["hoiclip_lightning.models.HOICLIPModule", "hoiclip_lightning.models.GENVLKTModule"]


# ---------------------------------------------------------------------------------------------- 2. AMP
def test_criterion_and_matcher_stay_fp32_under_autocast():
    from hoiclip_lightning.models.criterion import SetCriterion
    from hoiclip_lightning.structures import HOIOutputs, HOITarget

    g = torch.Generator().manual_seed(0)
    b, q, c_hoi, c_obj = 2, 6, 5, 3

    def boxes(*shape):
        return torch.cat([torch.rand(*shape, 2, generator=g) * 0.5 + 0.25, torch.rand(*shape, 2, generator=g) * 0.3
                          + 0.1], -1)

    outputs = HOIOutputs(sub_boxes=boxes(b, q), obj_boxes=boxes(b, q), obj_logits=torch.randn(b, q, c_obj + 1,
                         generator=g), hoi_logits=torch.randn(b, q, c_hoi, generator=g))
    targets = [HOITarget(sub_boxes=boxes(2), obj_boxes=boxes(2), obj_labels=torch.tensor([0, 2]),
                         verb_labels=torch.zeros(2, 4), hoi_labels=torch.eye(c_hoi)[[1, 3]], image_id=i,
                         orig_size=torch.tensor([64, 64]), size=torch.tensor([64, 64])) for i in range(b)]
    criterion = SetCriterion(num_obj_classes=c_obj, aux_loss=False)
    reference = criterion(outputs, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = criterion(outputs, targets)
    for key in ("loss", "loss_hoi_labels", "loss_obj_ce", "loss_sub_giou", "loss_obj_bbox"):
        assert mixed[key].dtype == torch.float32
        assert torch.equal(mixed[key], reference[key]), key


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_with_finite_losses(tmp_path, monkeypatch, precision):
    monkeypatch.chdir(ROOT)
    accelerator = "cpu"
    if precision == "16-mixed":
        if not torch.cuda.is_available():
            pytest.skip("fp16 autocast is unsupported on CPU (Lightning would silently run bf16-mixed); needs CUDA")
        accelerator = "gpu"
    args = ["fit", "--config", TINY, "--trainer.precision", precision, "--trainer.max_steps", "2",
            "--trainer.accelerator", accelerator,
            "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger", csv_logger(tmp_path), "--trainer.log_every_n_steps", "1",
            "--trainer.callbacks+=hoiclip_lightning.callbacks.ImageThroughputMonitor",
            "--trainer.callbacks.window_size=2",
            "--trainer.callbacks+=hoiclip_lightning.callbacks.MemoryMonitor", "--trainer.callbacks.every_n_steps=1"]
    main(args)
    rows = metric_rows(tmp_path)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    # throughput: the cumulative image count (batch size 2) and a positive rate once the window is full
    samples = [int(float(r["train/samples"])) for r in rows if r.get("train/samples")]
    assert samples == [2, 4]
    rates = [float(r["train/device/samples_per_sec"]) for r in rows if r.get("train/device/samples_per_sec")]
    assert rates and all(r > 0 for r in rates)
    rss = [float(r["memory/cpu_rss_gib"]) for r in rows if r.get("memory/cpu_rss_gib")]
    assert rss and all(0.05 < r < 256 for r in rss)


# ---------------------------------------------------------------------------------------------- 3. DDP
class _GatherParameters(L.Callback):
    """Writes, from rank 0, the largest parameter difference between the ranks after training."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
        gathered = trainer.strategy.all_gather(flat)  # [world, P]
        where = trainer.strategy.all_gather(torch.tensor([trainer.global_rank, trainer.node_rank, trainer.local_rank]))
        if trainer.is_global_zero:
            Path(self.out).write_text(json.dumps({"world": int(gathered.shape[0]),
                                                  "max_diff": float((gathered - gathered[0]).abs().max()),
                                                  "global_node_local_ranks": where.tolist()}))


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, monkeypatch):
    """`strategy: ddp` (the launcher starts the second rank as a new process, as on GPUs) over gloo."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "ranks.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "hoiclip_lightning.cli", "fit", "--config", TINY, "--trainer.devices", "2",
           "--trainer.strategy", "ddp", "--trainer.max_epochs", "1", "--trainer.num_sanity_val_steps", "0",
           "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", csv_logger(tmp_path),
           "--trainer.enable_checkpointing", "true",
           "--trainer.callbacks+=hoiclip_lightning.callbacks.RunCheckpoint", "--trainer.callbacks.save_last=true",
           "--trainer.callbacks+=test_experiments._GatherParameters", f"--trainer.callbacks.out={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = json.loads(out.read_text())
    assert ranks["world"] == 2 and ranks["max_diff"] == 0.0
    logged = [r for r in metric_rows(tmp_path) if r.get("val/mAP_full")]
    ddp_map, ddp_tfe = float(logged[-1]["val/mAP_full"]), float(logged[-1]["val/tfe/mAP_full"])
    # the same weights evaluated by one process on the same split (3 test images: 2 ranks pad to 4)
    from hoiclip_lightning.cli import HOICLIPCLI
    from hoiclip_lightning.data import HOIDataModule
    from hoiclip_lightning.models import HOICLIPModule

    cli = HOICLIPCLI(HOICLIPModule, HOIDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                     args=["--config", TINY, "--trainer.default_root_dir", str(tmp_path / "single")])
    result = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False,
                                  ckpt_path=str(tmp_path / "checkpoints/last.ckpt"))[0]
    assert result["val/mAP_full"] == pytest.approx(ddp_map, abs=1e-6)
    assert result["val/tfe/mAP_full"] == pytest.approx(ddp_tfe, abs=1e-6)
    # every split, NaN where a split has no ground truth (e.g. no rare class in these 3 images)
    for key, value in result.items():
        if key.startswith("val/") and logged[-1].get(key):
            assert float(logged[-1][key]) == pytest.approx(value, abs=1e-6, nan_ok=True), key


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_environment(node: int, nodes: int, port: int) -> dict[str, str]:
    """The variables torchrun sets for the one process of ``node`` (1 process per node, static rendezvous)."""
    return {"TORCHELASTIC_RUN_ID": "hoiclip-two-nodes", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "WORLD_SIZE": str(nodes), "RANK": str(node), "GROUP_RANK": str(node), "GROUP_WORLD_SIZE": str(nodes),
            "ROLE_RANK": str(node), "ROLE_WORLD_SIZE": str(nodes), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
            "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_two_nodes_of_one_cpu_process_each(tmp_path, monkeypatch, capsys):
    """Multi-node DDP as torchrun starts it on 2 machines (here 2 "nodes" on localhost, 1 process each, gloo):
    `--trainer.num_nodes 2 --trainer.devices 1`, identical parameters on both ranks after training, and the
    validation metrics of the 2-node run equal one process validating the same weights."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "ranks.json"
    port = _free_port()
    cmd = [sys.executable, "-m", "hoiclip_lightning.cli", "fit", "--config", TINY, "--trainer.num_nodes", "2",
           "--trainer.devices", "1", "--trainer.strategy", "ddp", "--trainer.max_epochs", "1",
           "--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", str(tmp_path),
           "--trainer.logger", csv_logger(tmp_path), "--trainer.enable_checkpointing", "true",
           "--trainer.callbacks+=hoiclip_lightning.callbacks.RunCheckpoint", "--trainer.callbacks.save_last=true",
           "--trainer.callbacks+=test_experiments._GatherParameters", f"--trainer.callbacks.out={out}"]
    path = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    procs = []
    for node in (0, 1):  # the same command on each "machine" (shared folder), as in docs/experiments.md
        env = {**os.environ, "PYTHONPATH": path, **torchrun_environment(node, 2, port)}
        log = (tmp_path / f"node{node}.log").open("w")
        procs.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        codes = [proc.wait(timeout=300) for proc, _ in procs]
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
            log.close()
    assert codes == [0, 0], [(tmp_path / f"node{n}.log").read_text()[-2000:] for n in (0, 1)]
    ranks = json.loads(out.read_text())
    assert ranks["world"] == 2 and ranks["max_diff"] == 0.0
    assert ranks["global_node_local_ranks"] == [[0, 0, 0], [1, 1, 0]]  # global rank, node rank, local rank
    logged = [r for r in metric_rows(tmp_path) if r.get("val/mAP_full")]
    from hoiclip_lightning.cli import HOICLIPCLI
    from hoiclip_lightning.data import HOIDataModule
    from hoiclip_lightning.models import HOICLIPModule

    cli = HOICLIPCLI(HOICLIPModule, HOIDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                     args=["--config", TINY, "--trainer.default_root_dir", str(tmp_path / "single")])
    result = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False,
                                  ckpt_path=str(tmp_path / "checkpoints/last.ckpt"))[0]
    compared = {k: (float(logged[-1][k]), v) for k, v in result.items() if k.startswith("val/") and logged[-1].get(k)}
    assert "val/mAP_full" in compared and "val/tfe/mAP_full" in compared
    for key, (two_nodes, one) in compared.items():
        assert two_nodes == pytest.approx(one, abs=1e-6, nan_ok=True), key
    with capsys.disabled():
        print(f"\n2 nodes x 1 process: {json.dumps(ranks)}; val metrics (2 nodes, 1 process): "
              f"{json.dumps({k: v for k, v in compared.items() if 'ko' not in k})}")


# ---------------------------------------------------------------------------------------------- 4. W&B
def _wandb_records(path: Path):
    """Records of an offline ``run-*.wandb`` file (LevelDB-log framing of protobuf ``Record`` messages)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0:
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, last
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf + chunk if kind == 4 else chunk)
            yield rec
        elif kind == 2:  # first
            buf = chunk
        elif kind == 3:  # middle
            buf += chunk


@pytest.mark.slow
def test_wandb_offline_logs_metrics_tables_and_images(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = json.dumps({"class_path": "lightning.pytorch.loggers.WandbLogger",
                         "init_args": {"save_dir": str(tmp_path), "project": "hoiclip-test", "offline": True}})
    import wandb

    wandb.finish()  # no run of an earlier test in this process may receive this one's records
    main(["fit", "--config", TINY, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path),
          "--trainer.logger", logger, "--trainer.log_every_n_steps", "1",
          "--trainer.callbacks+=hoiclip_lightning.callbacks.WandbPredictionLogger", "--trainer.callbacks.num_images=2",
          "--model.init_args.per_class_ap_dir", str(tmp_path), "--test_after_fit", "true"])
    wandb.finish()
    runs = list(tmp_path.glob("wandb/offline-run-*"))
    assert len(runs) == 1
    history: dict[str, list] = {}
    config: dict[str, str] = {}
    for rec in _wandb_records(next(runs[0].glob("run-*.wandb"))):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            for item in rec.history.item:
                history.setdefault(item.key or "/".join(item.nested_key), []).append(json.loads(item.value_json))
        elif kind == "config":
            for item in rec.config.update:
                config[item.key or "/".join(item.nested_key)] = item.value_json
    # hyper-parameters of model and data
    assert json.loads(config["zero_shot"]) == "default" and json.loads(config["batch_size"]) == 2
    # losses and every metric split, with the values the module logged
    expected = ("train/loss", "train/loss_hoi_labels", "val/mAP_full", "val/mAP_rare", "val/mAP_non_rare",
                "val/tfe/mAP_full", "test/mAP_full", "test/mAP_full_ko")
    assert all(k in history for k in expected), ([k for k in expected if k not in history], sorted(history))
    ap_rows = (tmp_path / "per_class_ap.csv").read_text().splitlines()[1:]
    aps = [float(r.rsplit(",", 1)[1]) for r in ap_rows if r.rsplit(",", 1)[1]]
    assert history["test/mAP_full"][-1] == pytest.approx(sum(aps) / len(aps), abs=1e-4)
    # the per-class AP table: 600 rows, and 2 drawn validation images
    assert history["test/per_class_ap/nrows"][-1] == 600
    table = json.loads(next(runs[0].glob("files/media/table/test/per_class_ap_*.table.json")).read_text())
    assert len(table["data"]) == 600 and table["columns"][-1] == "ap"
    assert history["val/predictions/count"][-1] == 2
    assert len(list(runs[0].glob("files/media/images/val/predictions_*.png"))) == 2


# ---------------------------------------------------------------------------------------------- 5. sweep
def test_sweep_summary_table_and_plot(tmp_path):
    from hoiclip_lightning.sweep import SweepRun, summary_markdown, write_summary

    runs = [SweepRun(0.25, tmp_path / "a", 0, 10.0, {"test/mAP_full": 1.5, "test/mAP_rare": 0.5}),
            SweepRun(1.0, tmp_path / "b", 0, 20.0, {"test/mAP_full": 3.25, "test/mAP_rare": 2.0}),
            SweepRun(0.5, tmp_path / "c", 2, 5.0, {})]
    lines = summary_markdown(runs).splitlines()
    assert lines[0] == "| fraction | Full | Rare | time (s) | status |"
    assert lines[2] == "| 0.25 | 1.50 | 0.50 | 10 | ok |" and lines[4] == "| 0.5 | - | - | 5 | failed (2) |"
    write_summary(runs, tmp_path)
    rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("fraction,test/mAP_full,test/mAP_rare,seconds") and rows[2].startswith("1,3.25,2.0,")
    assert (tmp_path / "map_vs_fraction.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_sweep_subcommand_runs_fit_and_test(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    main(["sweep", "--config", TINY, "--fractions", "[0.5]", "--out", str(tmp_path), "--",
          "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0"])
    out = capsys.readouterr().out
    assert "| fraction | Full | Rare | Non-rare |" in out
    summary = (tmp_path / "summary.csv").read_text().splitlines()
    assert len(summary) == 2 and summary[1].startswith("0.5,")
    # the summary value is the one the run's own logger recorded
    from hoiclip_lightning.sweep import read_test_metrics

    metrics = read_test_metrics(tmp_path / "frac_0.5")
    assert float(summary[1].split(",")[1]) == metrics["test/mAP_full"]
    log = (tmp_path / "frac_0.5/log.txt").read_text()
    assert "--data.init_args.train_fraction 0.5" in log.splitlines()[0]
    assert "train_fraction=0.5" in log  # the datamodule subsampled


# ---------------------------------------------------------------------------------------------- 6. resume
class BlockAtStep(L.Callback):
    """Test helper: once ``step`` optimizer steps (and their checkpoint) are done, announce it and wait to be killed."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            Path(self.marker).write_text(f"{trainer.current_epoch} {batch_idx}")
            while True:
                time.sleep(1)


def _resume_args(folder: Path) -> list[str]:
    return ["fit", "--config", TINY, "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", str(folder),
            "--trainer.enable_checkpointing", "true",
            "--trainer.callbacks+=hoiclip_lightning.callbacks.RunCheckpoint",
            "--trainer.callbacks.every_n_train_steps=1",
            "--trainer.callbacks.save_top_k=0", "--trainer.callbacks.save_last=true",
            "--model.init_args.net.dropout", "0.1"]  # dropout: the global random state must be restored too


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt["global_step"], ckpt["state_dict"], ckpt["optimizer_states"][0]["state"]


@pytest.mark.slow
def test_killed_run_resumes_mid_epoch_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    marker = tmp_path / "blocked"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "hoiclip_lightning.cli", *_resume_args(killed),
           "--trainer.callbacks+=test_experiments.BlockAtStep", "--trainer.callbacks.step=4",
           f"--trainer.callbacks.marker={marker}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    epoch, batch_idx = map(int, marker.read_text().split())
    assert (epoch, batch_idx) == (1, 1)  # killed mid-epoch: 3 batches per epoch, step 4 = 2nd batch of epoch 1
    step, _, _ = _weights(killed / "checkpoints/last.ckpt")
    assert step == 4

    main([*_resume_args(killed), "--ckpt_path", "last"])
    main(_resume_args(straight))
    step_a, weights_a, opt_a = _weights(killed / "checkpoints/last.ckpt")
    step_b, weights_b, opt_b = _weights(straight / "checkpoints/last.ckpt")
    assert step_a == step_b == 6
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        torch.testing.assert_close(weights_a[key], weights_b[key], rtol=0, atol=1e-6, msg=key)
    for idx in opt_a:
        torch.testing.assert_close(opt_a[idx]["exp_avg"], opt_b[idx]["exp_avg"], rtol=0, atol=1e-6)


def test_resumable_loader_skips_consumed_batches_and_isolates_randomness():
    from hoiclip_lightning.data.resumable import ResumableDataLoader

    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.tensor([float(i), torch.rand(()).item()])

    full = ResumableDataLoader(Noisy(), batch_size=3, seed=7, num_replicas=1, rank=0)
    full.sampler.set_epoch(2)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    batches = list(full)
    assert torch.equal(torch.get_rng_state(), before)  # loading did not touch the global generator
    state = {"epoch": 2, "batches": 2, "seed": 7}
    resumed = ResumableDataLoader(Noisy(), batch_size=3, seed=7, num_replicas=1, rank=0)
    resumed.load_state_dict(state)
    rest = list(resumed)
    # same order and the same augmentation as the uninterrupted pass
    assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(rest, batches[2:], strict=True))
    assert resumed.state_dict() == {"epoch": 2, "batches": 4, "seed": 7}
    with pytest.raises(ValueError, match="seed 7"):
        ResumableDataLoader(Noisy(), batch_size=3, seed=8, num_replicas=1, rank=0).load_state_dict(state)


def test_non_finite_loss_stops_with_message_and_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    from hoiclip_lightning.models.criterion import SetCriterion
    from hoiclip_lightning.models.module import NonFiniteLossError

    original = SetCriterion.forward
    calls = {"n": 0}

    def poisoned(self, outputs, targets):
        losses = original(self, outputs, targets)
        calls["n"] += 1
        if calls["n"] == 3:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(SetCriterion, "forward", poisoned)
    with pytest.raises(NonFiniteLossError) as info:
        main(["fit", "--config", TINY, "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "0",
              "--trainer.default_root_dir", str(tmp_path),
              "--trainer.callbacks+=hoiclip_lightning.callbacks.NonFiniteLossCheckpoint"])
    path = tmp_path / "checkpoints/non_finite_loss.ckpt"
    text = str(info.value) + "".join(getattr(info.value, "__notes__", []))
    assert "non-finite training loss" in text and "step 2" in text and str(path) in text
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_validation_curve_records_prints_and_resumes(capsys):
    from types import SimpleNamespace

    from hoiclip_lightning.callbacks import ValidationCurve

    curve = ValidationCurve(metrics=["val/mAP_full", "val/tfe/mAP_full"])
    trainer = SimpleNamespace(sanity_checking=True, global_step=0, is_global_zero=True,
                              callback_metrics={"val/mAP_full": torch.tensor(9.0)})
    curve.on_validation_end(trainer, None)  # sanity check: not recorded
    trainer.sanity_checking = False
    for step, full, tfe in ((400, 1.404, 1.5), (800, 23.796, None)):
        trainer.global_step = step
        trainer.callback_metrics = {"val/mAP_full": torch.tensor(full)}
        if tfe is not None:
            trainer.callback_metrics["val/tfe/mAP_full"] = torch.tensor(tfe)
        curve.on_validation_end(trainer, None)
    expected = ("| step | val/mAP_full | val/tfe/mAP_full |\n|---:|---:|---:|\n"
                "| 400 | 1.40 | 1.50 |\n| 800 | 23.80 | - |")
    assert curve.format() == expected
    assert curve.report() == "validation curve (2 runs)\n" + expected
    assert ValidationCurve().report() == ""
    resumed = ValidationCurve()
    resumed.load_state_dict(curve.state_dict())
    assert resumed.format() == expected
