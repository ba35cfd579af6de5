"""The `hoiclip` command: LightningCLI subcommands, config files, extra subcommands."""

import json
from pathlib import Path

import pytest
import yaml

from hoiclip_lightning.cli import format_metric_table, main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml")
                 if p.parent.name not in ("data", "model", "sweeps", "logger") and p.name != "trainer_paper.yaml")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_print_config_of_every_experiment_file(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = "GENVLKTModule" if config.name.startswith("genvlkt_") else "HOICLIPModule"
    assert printed["model"]["class_path"] == f"hoiclip_lightning.models.{expected}"
    assert printed["data"]["class_path"] == "hoiclip_lightning.data.HOIDataModule"
    assert "net" in printed["model"]["init_args"]


def test_paper_config_values():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "hoiclip_lightning.cli", "fit", "--config",
                          str(ROOT / "configs/hico_det.yaml"), "--print_config"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    cfg = yaml.safe_load(out)
    net = cfg["model"]["init_args"]["net"]
    assert (net["backbone"], net["clip_model"], net["clip_pretrained"]) == ("resnet50", "ViT-B-32", "openai")
    assert (net["num_queries"], net["dec_layers"], net["inter_dec_layers"], net["enc_layers"]) == (64, 3, 3, 6)
    assert cfg["trainer"]["max_epochs"] == 90 and cfg["trainer"]["gradient_clip_val"] == 0.1
    assert cfg["model"]["init_args"]["optimizer"]["lr_drop_epochs"] == [60]
    assert cfg["data"]["init_args"]["batch_size"] == 8


def test_fit_then_test_on_fixture(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    main(["fit", "--config", "tests/conf/hico_tiny.yaml", "--trainer.limit_train_batches", "2",
          "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(tmp_path),
          "--trainer.max_epochs", "2", "--trainer.callbacks+=hoiclip_lightning.callbacks.ValidationCurve",
          "--model.init_args.per_class_ap_dir", str(tmp_path), "--test_after_fit", "true"])
    out = capsys.readouterr().out
    # the validation curve: one row per epoch (2 training batches each), not the sanity check
    curve = out[out.index("validation curve (2 runs)"):].splitlines()
    assert curve[1] == "| step | val/mAP_full | val/tfe/mAP_full |"
    assert [row.split("|")[1].strip() for row in curve[3:5]] == ["2", "4"]
    assert "HOI detection mAP (test split)" in out
    # the test metrics are printed once: our table, not also Lightning's per-metric listing
    assert out.count("| HOICLIP        |") == 1 and out.count("| HOICLIP + TFE  |") == 1
    assert out.count("HOI detection mAP (test split)") == 1
    assert "test/mAP_full" not in out and "Test metric" not in out
    csv_lines = (tmp_path / "per_class_ap.csv").read_text().splitlines()
    assert csv_lines[0].startswith("hoi_id,verb,object,prompt,train_instances")
    assert len(csv_lines) == 1 + 600


def test_ckpt_path_last_without_a_checkpoint_fails_loudly(tmp_path, monkeypatch):
    """`--ckpt_path last` with no last.ckpt stops with an error naming the folder searched (Lightning alone
    warns and trains from scratch); with one, the run resumes from it."""
    from hoiclip_lightning.errors import CheckpointNotFoundError

    monkeypatch.chdir(ROOT)
    run = ["--config", "tests/conf/hico_tiny.yaml", "--trainer.limit_train_batches", "2",
           "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(tmp_path),
           "--trainer.enable_checkpointing", "true", "--trainer.callbacks+=hoiclip_lightning.callbacks.RunCheckpoint",
           "--trainer.callbacks.save_last", "true"]
    folder = tmp_path / "checkpoints"
    with pytest.raises(CheckpointNotFoundError, match=rf"fit --ckpt_path last: no last checkpoint in {folder}"):
        main(["fit", *run, "--ckpt_path", "last"])
    assert not folder.exists()  # nothing was trained
    with pytest.raises(CheckpointNotFoundError, match="no last checkpoint"):
        main(["validate", *run, "--ckpt_path", "last"])
    import torch

    main(["fit", *run])
    first = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    main(["fit", *run, "--trainer.max_epochs", "2", "--ckpt_path", "last"])  # resumes: one more epoch
    assert first > 0
    assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 2 * first


def test_quickstart_checkpoints_in_one_folder_with_a_periodic_last():
    """configs/quickstart.yaml writes every checkpoint to runs/quickstart/checkpoints (the folder the docs
    name), the best by val/mAP_full and last.ckpt every 200 steps (and at each validation)."""
    cfg = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())
    trainer = cfg["trainer"]
    checkpoints = [c for c in trainer["callbacks"] if "Checkpoint" in c["class_path"]]
    assert {c["class_path"] for c in checkpoints} == {"hoiclip_lightning.callbacks.RunCheckpoint"}
    assert all("dirpath" not in c["init_args"] for c in checkpoints)  # <default_root_dir>/checkpoints
    assert trainer["default_root_dir"] == "runs/quickstart"
    assert [c["init_args"].get("every_n_train_steps") for c in checkpoints] == [None, 200]
    assert checkpoints[0]["init_args"]["monitor"] == "val/mAP_full" and checkpoints[1]["init_args"]["save_last"]
    for page in ("docs/inference.md", "docs/getting-started.md", "configs/predict.yaml"):
        assert "runs/quickstart/checkpoints/last.ckpt" in (ROOT / page).read_text(), page


def test_run_checkpoint_writes_last_at_every_validation_even_without_a_new_best(tmp_path):
    """Lightning 2.6 writes last.ckpt at validation end only when a top-k checkpoint was saved at that step;
    RunCheckpoint(monitor=..., save_last=True) writes it at every validation, so the final state of a run
    whose last epochs did not improve the monitored metric is kept (the configs' comments promise it)."""
    import lightning as L
    import torch
    from lightning.pytorch.demos.boring_classes import BoringModel

    from hoiclip_lightning.callbacks import RunCheckpoint

    class Worse(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("score", -float(self.current_epoch))  # best at epoch 0, worse afterwards
            return super().validation_step(batch, batch_idx)

    best = RunCheckpoint(monitor="score", mode="max", save_last=True, filename="best")
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=3, limit_train_batches=2, limit_val_batches=1,
                        logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[best])
    trainer.fit(Worse())
    last = torch.load(tmp_path / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 6 and last["epoch"] == 2  # the final state, not epoch 0's
    assert torch.load(tmp_path / "checkpoints/best.ckpt", map_location="cpu", weights_only=False)["global_step"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_vocabulary_and_zero_shot_are_linked_from_data(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    from hoiclip_lightning.cli import HOICLIPCLI
    from hoiclip_lightning.data import HOIDataModule
    from hoiclip_lightning.models import HOICLIPModule

    cli = HOICLIPCLI(HOICLIPModule, HOIDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                     args=["--config", "tests/conf/hico_tiny.yaml", "--data.init_args.zero_shot", "rare_first"])
    assert cli.model.zero_shot == "rare_first"
    assert cli.model.vocab.name == "hico_det"
    assert len(cli.model.model.train_hoi_ids) == 480


def test_synth_subcommand(tmp_path, capsys):
    main(["synth", "--out", str(tmp_path / "s"), "--seed", "3", "--num-train", "6", "--num-test", "3"])
    records = json.loads((tmp_path / "s/annotations/trainval_hico.json").read_text())
    assert len(records) == 6
    assert (tmp_path / "s/vocabulary.json").is_file()
    main(["synth", "--out", str(tmp_path / "s"), "--num-train", "6", "--num-test", "3"])
    assert "already present" in capsys.readouterr().out


def test_format_metric_table_hand_case():
    table = format_metric_table({"test/mAP_full": 34.691, "test/mAP_rare": 31.12, "test/mAP_non_rare": 35.74,
                                 "test/tfe/mAP_full": 35.0})
    lines = table.splitlines()
    assert lines[1].split("|")[2].strip() == "Full" and len(lines) == 5
    assert "34.69" in lines[3] and "31.12" in lines[3]
    assert lines[4].split("|")[2].strip() == "35.00" and lines[4].split("|")[3].strip() == "-"
    assert format_metric_table({}) == ""
    # every test metric has a cell (the table replaces Lightning's listing): known ones by name, others as logged
    table = format_metric_table({"test/mAP_full": 1.0, "test/mAP_seen_ko": 2.0, "test/other_metric_name": 3.0,
                                 "test/tfe/mAP_full": 4.0, "val/mAP_full": 5.0})
    header, plain, tfe = (table.splitlines()[i].split("|")[2:-1] for i in (1, 3, 4))
    assert [c.strip() for c in header] == ["Full", "Seen KO", "other_metric_name"]
    assert [c.strip() for c in plain] == ["1.00", "2.00", "3.00"] and [c.strip() for c in tfe] == ["4.00", "-", "-"]
    assert "5.00" not in table


def test_vcoco_fixture_logs_role_ap(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    main(["fit", "--config", "tests/conf/vcoco_tiny.yaml", "--trainer.limit_train_batches", "1",
          "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(tmp_path),
          "--model.init_args.per_class_ap_dir", str(tmp_path), "--test_after_fit", "true"])
    out = capsys.readouterr().out
    assert "Role AP S1" in out and "Role AP S2" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model.init_args.net.clip_model", "ViT-B-23"],
         "unknown CLIP model 'ViT-B-23' (clip_model): open_clip has no architecture of that name; did you mean "),
        (["--data.init_args.zero_shot", "rare_frist"],
         "zero-shot split 'rare_frist' is not defined for vocabulary 'hico_det'; accepted: ['default', "),
        (["--model.init_args.net.dec_layers", "3"],
         "dec_layers (3) must equal inter_dec_layers (2); or set aux_loss: false"),
        (["--data.init_args.clip_image_size", "224"],
         "data clip_image_size = 224, but the CLIP model 'hoiclip-tiny' takes 64 x 64 px images; "
         "set data.init_args.clip_image_size: 64"),
    ],
    ids=["clip_model", "zero_shot", "decoder_depths", "clip_image_size"],
)
def test_configuration_errors_end_the_output_with_one_message(flags, message, tmp_path, capsys, monkeypatch):
    """A bad value met while the CLI builds model or data: exit 2, the last stderr line is the library's message
    (no jsonargparse "Union subtypes" wrapper, no namespace dump)."""
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", "tests/conf/hico_tiny.yaml", "--trainer.default_root_dir", str(tmp_path), *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err
    last = err.rstrip().splitlines()[-1]
    assert last.startswith("error: ConfigurationError: ") and message in last, last
    assert "Union subtypes" not in err and "Namespace(" not in err
    assert len(last) < 400  # the message, not open_clip's list of every architecture
    assert not list(tmp_path.rglob("*.ckpt"))


def test_clip_image_size_is_checked_at_setup_from_python(tmp_path):
    """Without the CLI the same check runs at setup, before the first step."""
    import lightning

    from hoiclip_lightning.data import HOIDataModule
    from hoiclip_lightning.errors import ConfigurationError
    from hoiclip_lightning.interop.official import _net_from_model_config
    from hoiclip_lightning.models import HOICLIPModule

    module = HOICLIPModule(vocabulary="hico_det", net=_net_from_model_config(ROOT / "configs/model/tiny.yaml"))
    data = HOIDataModule(root=str(ROOT / "tests/data/hico_det"), dataset_format="hico_det", vocabulary="hico_det",
                         num_workers=0, clip_image_size=32)
    trainer = lightning.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False,
                                default_root_dir=str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"clip_image_size = 32, but the CLIP model 'hoiclip-tiny' takes 64"):
        trainer.fit(module, datamodule=data)
    assert trainer.global_step == 0
