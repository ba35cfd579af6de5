"""The `hoiclip` command: LightningCLI subcommands, config files, extra subcommands."""

import json
import re
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
    """Rule: the paper's experiment config gives its architecture in `net` and its weight files in `weights`."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "hoiclip_lightning.cli", "fit", "--config",
                          str(ROOT / "configs/experiments/hico_det.yaml"), "--print_config"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    cfg = yaml.safe_load(out)
    net, weights = cfg["model"]["init_args"]["net"], cfg["model"]["init_args"]["weights"]
    assert (net["backbone"], net["clip_model"]) == ("resnet50", "ViT-B-32")
    assert weights == {"clip_pretrained": "openai", "detr_checkpoint": "params/detr-r50-e632da11.pth",
                       "verb_embeddings": None}
    assert not {"clip_pretrained", "detr_checkpoint", "verb_embeddings"} & set(net)
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
    assert cli.model.vocabulary.name == "hico_det"
    assert len(cli.model.model.train_hoi_ids) == 480


def test_synth_subcommand(tmp_path, capsys):
    main(["synth", "--out", str(tmp_path / "s"), "--seed", "3", "--num_train", "6", "--num_test", "3"])
    records = json.loads((tmp_path / "s/annotations/trainval_hico.json").read_text())
    assert len(records) == 6
    assert (tmp_path / "s/vocabulary.json").is_file()
    main(["synth", "--out", str(tmp_path / "s"), "--num_train", "6", "--num_test", "3"])
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


# ---------------------------------------------------------------------- extra subcommands: flags from signatures
def _option_help(text: str, flag: str) -> str:
    """The help entry of ``flag`` in ``--help`` output, on one line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{flag} ") or line.strip() == flag)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("-")), len(lines))
    return " ".join(" ".join(lines[start:end]).split())


def _flag_parameters(name: str) -> dict:
    """The parameters of the function behind subcommand ``name`` that must be flags (``**kwargs`` followed)."""
    import inspect

    from hoiclip_lightning.cli import EXTRA_SUBCOMMANDS
    from hoiclip_lightning.metrics.evaluate import evaluate_files

    command = EXTRA_SUBCOMMANDS[name]
    params = dict(inspect.signature(command.target()).parameters)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        assert name == "evaluate", f"{name}: which function receives **kwargs?"
        params = {k: p for k, p in params.items() if p.kind is not p.VAR_KEYWORD}
        params.update({k: p for k, p in inspect.signature(evaluate_files).parameters.items() if k not in params})
    return {k: p for k, p in params.items() if k not in command.skip}


@pytest.mark.parametrize("name", ["synth", "verb-embeddings", "clip-pretrain", "export-detector", "sweep", "evaluate",
                                  "convert-official"])
def test_subcommand_help_lists_every_parameter_of_its_function_with_its_default(name, capsys):
    """Rule: an extra subcommand's flags are the parameters of the function it calls (jsonargparse), named as the
    parameters, with the function's own default and the docstring's description; nothing else declares them."""
    import inspect

    params = _flag_parameters(name)
    assert len(params) >= 2
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: hoiclip {name} ")
    for param in params.values():
        entry = _option_help(text, f"--{param.name}")
        if param.default is inspect.Parameter.empty:
            assert "(required," in entry, entry
        else:
            shown = "null" if param.default is None else str(param.default)
            # (help wraps long values at hyphens: compare without spaces)
            assert re.search(rf"default:{re.escape(shown.replace(' ', ''))}[,)]", entry.replace(" ", "")), entry
        # the description is the docstring's (no reStructuredText markup left)
        assert "``" not in entry and ":class:" not in entry
        assert len(entry.split("(type:")[0]) > len(f"--{param.name} {param.name.upper()}") + 2, entry
    # one flag style: no dashed spelling of a multi-word parameter
    assert not [p for p in params if "_" in p and f"--{p.replace('_', '-')}" in text]


def test_subcommand_flags_reach_the_function_with_its_defaults(tmp_path, monkeypatch, capsys):
    """`hoiclip synth`: given flags reach generate_synthetic_dataset as typed values, the others are the function's
    defaults; `--easy true` sets the easy world's values but an explicit flag still wins."""
    import functools
    import inspect

    import hoiclip_lightning.data.synthetic as synthetic

    calls = []

    @functools.wraps(synthetic.generate_synthetic_dataset)
    def spy(**kwargs):
        calls.append(kwargs)
        return "summary"

    monkeypatch.setattr(synthetic, "generate_synthetic_dataset", spy)
    main(["synth", "--out", str(tmp_path / "a"), "--num_train", "7", "--clutter", "false"])
    main(["synth", "--out", str(tmp_path / "b"), "--easy", "true", "--max_people", "2"])
    assert capsys.readouterr().out == "summary\nsummary\n"
    defaults = {k: p.default for k, p in inspect.signature(synthetic.generate_synthetic_dataset).parameters.items()}
    assert calls[0] == {**defaults, "out": str(tmp_path / "a"), "num_train": 7, "clutter": False}
    assert calls[1] == {**defaults, "out": str(tmp_path / "b"), "max_people": 2, "distractors": False, "clutter": False}
    with pytest.raises(SystemExit) as info:
        main(["synth", "--out", str(tmp_path / "c"), "--num-train", "7"])  # the dashed spelling is not a flag
    assert info.value.code == 2 and "--num-train" in capsys.readouterr().err


def test_subcommand_library_error_ends_with_status_2_and_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["synth", "--out", str(tmp_path), "--num_train", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "hoiclip synth: error: ConfigurationError: num_train must be >= 1, num_test and num_val >= 0, got 0, 100, 0"]


def test_verb_embeddings_subcommand_on_the_fixture(tmp_path, capsys, monkeypatch):
    """`hoiclip verb-embeddings --config <fit config>`: the file has one row per verb, at the CLIP's width, and the
    options of compute_verb_embeddings reach it (--include_unseen recorded in the metadata)."""
    import torch

    monkeypatch.chdir(ROOT)
    out = tmp_path / "verbs.pt"
    main(["verb-embeddings", "--config", "tests/conf/hico_tiny.yaml", "--out", str(out), "--progress", "false",
          "--include_unseen", "true", "--num_workers", "0", "--device", "cpu"])
    assert f"written to {out}" in capsys.readouterr().out
    payload = torch.load(out, map_location="cpu", weights_only=False)
    assert payload["verb_embeddings"].shape == (117, payload["embed_dim"])
    assert payload["include_unseen"] is True and payload["clip_model"] == "hoiclip-tiny"
    main(["verb-embeddings", "--config", "tests/conf/hico_tiny.yaml", "--out", str(out)])
    assert "exists; pass --overwrite true" in capsys.readouterr().out


def _documented_subcommand_lines() -> list[tuple[str, str, str]]:
    """``(file, subcommand, line)`` for every ``hoiclip <extra subcommand> ...`` line of the docs, README,
    Makefile, configs, notebooks and benchmark docstrings (continuation lines joined)."""
    from hoiclip_lightning.cli import EXTRA_SUBCOMMANDS

    files = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").rglob("*.md")),
             *sorted((ROOT / "configs").rglob("*.yaml")), *sorted((ROOT / "notebooks").glob("*.ipynb")),
             *sorted((ROOT / "src").rglob("*.py"))]
    found = []
    pattern = re.compile(r"hoiclip (" + "|".join(map(re.escape, EXTRA_SUBCOMMANDS)) + r")((?: +[^`\n]*)?)")
    for path in files:
        text = re.sub(r"\\\n\s*(#\s*)?", " ", path.read_text())  # join continuation lines
        for match in pattern.finditer(text):
            found.append((str(path.relative_to(ROOT)), match.group(1), match.group(2)))
    return found


def test_documented_subcommand_lines_use_existing_flags(capsys):
    """Rule: every `hoiclip <extra subcommand> --flag` written in the docs, README, Makefile, configs, notebooks
    and docstrings names a flag the subcommand has (the old dashed spellings are gone)."""
    lines = _documented_subcommand_lines()
    assert {name for _, name, _ in lines} >= {"synth", "verb-embeddings", "clip-pretrain", "export-detector", "sweep",
                                              "evaluate", "convert-official"}
    helps = {}
    bad = []
    for path, name, line in lines:
        if name not in helps:
            with pytest.raises(SystemExit):
                main([name, "--help"])
            helps[name] = set(re.findall(r"--[\w.]+", capsys.readouterr().out))
        command = re.split(r" -- |&&|;|\|", line)[0]  # this command only, not the fit arguments after `--`
        command = re.sub(r"\"[^\"]*\"|'[^']*'", "VALUE", command)  # quoted values (a variant's overrides)
        for flag in re.findall(r"(?<![\w-])--[A-Za-z][\w.-]*", command):
            if flag.split(".")[0] not in helps[name]:
                bad.append(f"{path}: hoiclip {name} ... {flag}")
    assert not bad, bad
