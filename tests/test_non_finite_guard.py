"""The non-finite guard: batches, model outputs, losses and gradients are checked before the matcher and the
optimizer step; no checkpoint ever holds non-finite weights or optimizer state (docs/experiments.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from hoiclip_lightning.cli import HOICLIPCLI, main
from hoiclip_lightning.data import HOIDataModule, HOIDataset
from hoiclip_lightning.errors import CheckpointError, NonFiniteLossError
from hoiclip_lightning.models import HOICLIPModule
from hoiclip_lightning.models.criterion import SetCriterion
from hoiclip_lightning.models.hoiclip import HOICLIP
from hoiclip_lightning.models.matcher import HungarianMatcher

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests/conf/hico_tiny.yaml"
TRAIN_FILES = {f"HICO_train2015_{i:08d}.jpg" for i in range(1, 7)}  # image 2 has no HOI and is left out


def _args(folder: Path, *extra: str, every_step_checkpoint: bool = False) -> list[str]:
    """Two epochs of 3 batches (6 optimizer steps) of the tiny model; no validation."""
    args = ["fit", "--config", TINY, "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", str(folder), *extra]
    if every_step_checkpoint:
        args += ["--trainer.enable_checkpointing", "true",
                 "--trainer.callbacks+=hoiclip_lightning.callbacks.RunCheckpoint",
                 "--trainer.callbacks.every_n_train_steps=1",
                 "--trainer.callbacks.save_top_k=0", "--trainer.callbacks.save_last=true"]
    return args


def _fit_error(args: list[str]) -> tuple[str, NonFiniteLossError]:
    with pytest.raises(NonFiniteLossError) as info:
        main(args)
    return str(info.value) + " " + " ".join(getattr(info.value, "__notes__", [])), info.value


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _assert_finite(ckpt: dict) -> None:
    tensors = [v for v in ckpt["state_dict"].values() if v.is_floating_point()]
    for opt in ckpt.get("optimizer_states", []):
        tensors += [v for state in opt["state"].values() for v in state.values() if v.is_floating_point()]
    assert tensors and all(torch.isfinite(t).all() for t in tensors)


def _files_in(text: str) -> set[str]:
    return {name for name in TRAIN_FILES if name in text}


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_nan_outputs_stop_before_the_matcher_with_step_files_and_guard_checkpoint(tmp_path, in_root, monkeypatch):
    forward, calls, matched = HOICLIP.forward, {"n": 0}, []

    def poisoned(self, *args, **kwargs):
        outputs = forward(self, *args, **kwargs)
        calls["n"] += 1 if self.training else 0
        if self.training and calls["n"] == 3:
            outputs.hoi_logits = outputs.hoi_logits + float("nan")
        return outputs

    match = HungarianMatcher.forward

    def recording(self, outputs, targets):
        matched.append(bool(torch.isfinite(outputs.hoi_logits).all()))
        return match(self, outputs, targets)

    monkeypatch.setattr(HOICLIP, "forward", poisoned)
    monkeypatch.setattr(HungarianMatcher, "forward", recording)
    # no NonFiniteLossCheckpoint in the config: `hoiclip fit` adds it
    text, _ = _fit_error(_args(tmp_path))
    guard = tmp_path / "checkpoints/non_finite_loss.ckpt"
    assert "non-finite model outputs (hoi_logits)" in text and "epoch 0, step 2" in text
    assert len(_files_in(text)) == 1  # the image of the third batch (5 training images with an HOI, batch 2)
    assert f"written to {guard}" in text and "last finite weights" in text
    assert matched and all(matched)  # the matcher never saw the NaN outputs (it ran for steps 0 and 1 only)
    ckpt = _load(guard)
    assert ckpt["global_step"] == 2
    _assert_finite(ckpt)


def test_huge_learning_rate_stops_with_the_guard_error(tmp_path, in_root):
    """The reproduction of the issue: lr 1e6 makes the outputs of the second step non-finite."""
    text, _ = _fit_error(_args(tmp_path, "--model.init_args.optimizer.lr", "1e6",
                               "--model.init_args.optimizer.lr_backbone", "1e6"))
    assert "non-finite model outputs" in text and "step 1;" in text and len(_files_in(text)) == 2
    assert "matching cost" not in text
    ckpt = _load(tmp_path / "checkpoints/non_finite_loss.ckpt")
    assert ckpt["global_step"] == 1
    _assert_finite(ckpt)


def test_nan_loss_stops_and_resuming_from_the_guard_checkpoint_finishes(tmp_path, in_root, monkeypatch):
    original, calls = SetCriterion.forward, {"n": 0}

    def poisoned(self, outputs, targets):
        losses = original(self, outputs, targets)
        calls["n"] += 1
        if calls["n"] == 4:
            losses["loss"] = losses["loss"] * float("inf")
        return losses

    monkeypatch.setattr(SetCriterion, "forward", poisoned)
    text, _ = _fit_error(_args(tmp_path / "run", every_step_checkpoint=True))
    guard = tmp_path / "run/checkpoints/non_finite_loss.ckpt"
    assert "non-finite training loss {'loss': inf}" in text and "epoch 1, step 3" in text
    assert _load(guard)["global_step"] == 3 == _load(tmp_path / "run/checkpoints/last.ckpt")["global_step"]

    monkeypatch.setattr(SetCriterion, "forward", original)
    main(_args(tmp_path / "run", "--ckpt_path", str(guard), every_step_checkpoint=True))
    last = _load(tmp_path / "run/checkpoints/last.ckpt")
    assert last["epoch"] == 1 and last["global_step"] >= 5  # the second epoch was completed
    _assert_finite(last)
    before = _load(guard)["state_dict"]
    assert any(not torch.equal(before[k], v) for k, v in last["state_dict"].items())  # it trained on


def test_nan_gradient_never_reaches_a_checkpoint(tmp_path, in_root, monkeypatch):
    """Step 3 has a finite loss but NaN gradients: last.ckpt (written every step) keeps step 3's finite state."""
    original, calls = SetCriterion.forward, {"n": 0}

    def poisoned(self, outputs, targets):
        losses = original(self, outputs, targets)
        calls["n"] += 1
        if calls["n"] == 4:  # sqrt(|0 * x|) is 0, its gradient inf * 0 = NaN
            losses["loss"] = losses["loss"] + (outputs.hoi_logits.sum() * 0).abs().sqrt()
        return losses

    monkeypatch.setattr(SetCriterion, "forward", poisoned)
    text, _ = _fit_error(_args(tmp_path, every_step_checkpoint=True))
    assert "non-finite gradients" in text and "epoch 1, step 3" in text and "images of the accumulated batches" in text
    assert len(_files_in(text)) == 2
    last, guard = _load(tmp_path / "checkpoints/last.ckpt"), _load(tmp_path / "checkpoints/non_finite_loss.ckpt")
    assert last["global_step"] == guard["global_step"] == 3
    _assert_finite(last)
    _assert_finite(guard)
    for key, value in last["state_dict"].items():
        assert torch.equal(value, guard["state_dict"][key]), key  # no update was made with the NaN gradient


def test_skip_non_finite_steps_counts_logs_and_then_stops(tmp_path, in_root, monkeypatch, caplog):
    """A NaN image is skipped once (no update), the second time the budget of 1 is spent and the run stops."""
    getitem = HOIDataset.__getitem__
    bad_file = "HICO_train2015_00000004.jpg"

    def poisoned(self, idx):
        image, clip_image, target = getitem(self, idx)
        if target.file_name == bad_file:
            image = image * float("nan")
        return image, clip_image, target

    monkeypatch.setattr(HOIDataset, "__getitem__", poisoned)
    with caplog.at_level(logging.WARNING, logger="hoiclip_lightning.models.module"):
        text, _ = _fit_error(_args(tmp_path, "--model.init_args.skip_non_finite_steps", "1"))
    skips = [r.getMessage() for r in caplog.records if "Skipped (1 of 1" in r.getMessage()]
    assert len(skips) == 1 and "non-finite values in the batch (images)" in skips[0] and bad_file in skips[0]
    assert "non-finite values in the batch (images)" in text and bad_file in text
    assert "1 of 1 allowed skips already used" in text
    guard = _load(tmp_path / "checkpoints/non_finite_loss.ckpt")
    _assert_finite(guard)
    assert guard["hoiclip_non_finite_skips"] == 1
    # the skipped batch made no update: AdamW counted one step fewer than the loop
    adam_steps = {int(s["step"]) for s in guard["optimizer_states"][0]["state"].values()}
    assert adam_steps == {guard["global_step"] - 1}


def test_checkpoints_with_non_finite_weights_are_neither_written_nor_loaded(tmp_path, in_root):
    cli = HOICLIPCLI(HOICLIPModule, HOIDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                     args=["--config", TINY, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
                           "--trainer.default_root_dir", str(tmp_path)])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    good = tmp_path / "good.ckpt"
    cli.trainer.save_checkpoint(good)
    name, param = next((n, p) for n, p in cli.model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    bad = tmp_path / "bad.ckpt"
    with pytest.raises(NonFiniteLossError, match=rf"refusing to write a checkpoint .*{name}"):
        cli.trainer.save_checkpoint(bad)
    assert not bad.exists()

    # a checkpoint that was corrupted elsewhere is refused at load time, naming the parameter
    ckpt = _load(good)
    ckpt["state_dict"][name] = ckpt["state_dict"][name] * float("nan")
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match=name):
        HOICLIPModule.load_from_checkpoint(bad, weights_only=False)


def test_skip_non_finite_steps_must_not_be_negative():
    from hoiclip_lightning.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="skip_non_finite_steps"):
        HOICLIPModule(net=None, skip_non_finite_steps=-1)
