"""Weight sources (CLIP weights, DETR checkpoint, verb file) are an argument apart from the architecture.

Rules checked: a module built with weight files reads them (the weights it gets are the files'); its
checkpoint's hyper-parameters hold no weight source; a checkpoint loads with every file deleted (nothing is
read) and gives the same outputs, from Python (``load_from_checkpoint``, ``HOIDetector.from_checkpoint``) and
through the command line (a checkpoint written by ``hoiclip fit``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lightning
import pytest
import torch
import torch.nn.functional as F

from hoiclip_lightning.cli import main
from hoiclip_lightning.models import (
    GENVLKTConfig,
    GENVLKTModule,
    HOICLIPConfig,
    HOICLIPModule,
    WeightSources,
    export_detector,
)
from hoiclip_lightning.models.clip_encoder import CLIPEncoder
from hoiclip_lightning.vocabulary import HOIVocabulary

ROOT = Path(__file__).resolve().parents[1]
SOURCE_NAMES = {f.name for f in dataclasses.fields(WeightSources)}
SMALL = dict(backbone="resnet10", hidden_dim=32, nheads=2, dim_feedforward=64, dropout=0.0, enc_layers=1,
             dec_layers=2, num_queries=4, clip_model="hoiclip-tiny", prompt_cache=False)
HOICLIP_NET = HOICLIPConfig(**SMALL, inter_dec_layers=2, inter_nheads=2)
GENVLKT_NET = GENVLKTConfig(**SMALL)


def weight_files(folder: Path, embed_dim: int, num_verbs: int) -> WeightSources:
    """A CLIP weights file, a detector file and a verb file, each with values no random init gives."""
    torch.manual_seed(11)
    clip_file = folder / "clip.pt"
    torch.save(CLIPEncoder("hoiclip-tiny", pretrained=None).model.state_dict(), clip_file)
    torch.manual_seed(12)
    donor = HOICLIPModule(vocabulary="hico_det", net=HOICLIP_NET).model
    detector_file = folder / "detector.pt"
    export_detector_from(donor, detector_file, folder)
    verb_file = folder / "verbs.pt"
    torch.save({"verb_embeddings": F.normalize(torch.randn(num_verbs, embed_dim), dim=-1),
                "clip_model": "hoiclip-tiny"}, verb_file)
    return WeightSources(clip_pretrained=str(clip_file), detr_checkpoint=str(detector_file),
                         verb_embeddings=str(verb_file))


def export_detector_from(model: torch.nn.Module, out: Path, folder: Path) -> None:
    torch.save(model.state_dict(), folder / "donor_state.pt")
    export_detector(folder / "donor_state.pt", out)
    (folder / "donor_state.pt").unlink()


def weight_source_keys(value: Any, path: str = "") -> list[str]:
    """Every key named like a weight source (or ``weights``) anywhere in nested dicts / dataclasses."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if not isinstance(value, dict):
        return []
    found = []
    for key, item in value.items():
        if key in SOURCE_NAMES or key == "weights":
            found.append(f"{path}{key}")
        found += weight_source_keys(item, f"{path}{key}.")
    return found


def outputs(module: HOICLIPModule) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    images, clip_images = torch.randn(1, 3, 64, 64, generator=gen), torch.randn(1, 3, 64, 64, generator=gen)
    module.eval()
    with torch.no_grad():
        out = module.model(images, torch.zeros(1, 64, 64, dtype=torch.bool), clip_images, all_classes=True)
    return {k: v for k, v in vars(out).items() if isinstance(v, torch.Tensor)}


def save(module: HOICLIPModule, path: Path) -> dict[str, Any]:
    """A checkpoint as Lightning writes it from Python (``hparams`` + ``on_save_checkpoint``)."""
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return ckpt


def test_weight_files_are_read_at_construction_and_only_then(tmp_path):
    """HOICLIP: the module gets the files' CLIP, detector and verb rows; its checkpoint holds no weight source
    and, with the three files deleted, loads (Python and predictor) to the same outputs."""
    from hoiclip_lightning.inference import HOIDetector

    vocab = HOIVocabulary.builtin("hico_det")
    weights = weight_files(tmp_path, embed_dim=32, num_verbs=vocab.num_verbs)
    torch.manual_seed(0)
    module = HOICLIPModule(vocabulary="hico_det", net=HOICLIP_NET, weights=weights)
    model = module.model
    # the files were read: CLIP, detector and verb classifier are theirs, not a random init's
    clip_state = torch.load(weights.clip_pretrained, weights_only=True)
    key = "visual.transformer.resblocks.0.mlp.c_fc.weight"
    torch.testing.assert_close(model.clip.model.state_dict()[key], clip_state[key])
    detector = torch.load(weights.detr_checkpoint, weights_only=True)["model"]
    for name in ("transformer.encoder.layers.0.linear1.weight", "hum_bbox_embed.layers.2.weight"):
        torch.testing.assert_close(model.state_dict()[name], detector[name])
    torch.testing.assert_close(model.verb_projection.weight,
                               torch.load(weights.verb_embeddings, weights_only=True)["verb_embeddings"])

    ckpt = save(module, tmp_path / "module.ckpt")
    assert weight_source_keys(ckpt["hyper_parameters"]) == []
    assert set(ckpt["hyper_parameters"]) >= {"vocabulary", "net", "loss"}
    expected = outputs(module)
    for path in (weights.clip_pretrained, weights.detr_checkpoint, weights.verb_embeddings):
        Path(path).unlink()

    loaded = HOICLIPModule.load_from_checkpoint(tmp_path / "module.ckpt")
    got = outputs(loaded)
    assert set(got) == set(expected) and {"hoi_logits", "obj_logits", "sub_boxes", "clip_logits"} <= set(got)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)
    detector_module = HOIDetector.from_checkpoint(tmp_path / "module.ckpt", device="cpu").module
    torch.testing.assert_close(outputs(detector_module)["hoi_logits"], expected["hoi_logits"], rtol=0, atol=0)


def test_genvlkt_checkpoint_holds_no_weight_source_and_reads_no_file(tmp_path):
    weights = dataclasses.replace(weight_files(tmp_path, embed_dim=32, num_verbs=117), verb_embeddings=None)
    torch.manual_seed(0)
    module = GENVLKTModule(vocabulary="hico_det", net=GENVLKT_NET, weights=weights)
    detector = torch.load(weights.detr_checkpoint, weights_only=True)["model"]
    # the interaction decoder starts as a copy of the loaded instance decoder (the DETR file was read)
    name = "layers.1.linear2.weight"
    torch.testing.assert_close(module.model.transformer.interaction_decoder.state_dict()[name],
                               detector[f"transformer.instance_decoder.{name}"])
    ckpt = save(module, tmp_path / "genvlkt.ckpt")
    assert weight_source_keys(ckpt["hyper_parameters"]) == []
    expected = outputs(module)
    Path(weights.clip_pretrained).unlink()
    Path(weights.detr_checkpoint).unlink()
    got = outputs(GENVLKTModule.load_from_checkpoint(tmp_path / "genvlkt.ckpt"))
    assert {"hoi_logits", "mimic_features", "mimic_target"} <= set(got)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def test_a_checkpoint_of_hoiclip_fit_holds_no_weight_source(tmp_path, monkeypatch, capsys):
    """`hoiclip fit` with the three files in `model.init_args.weights`: the checkpoint's hyper-parameters
    (LightningCLI's form, with `_class_path`) name none of them, and it loads with the files deleted, from
    Python and through `hoiclip test --ckpt_path` with a config that still names them."""
    monkeypatch.chdir(ROOT)
    weights = weight_files(tmp_path, embed_dim=32, num_verbs=117)
    # the detector of configs/model/tiny.yaml is wider than HOICLIP_NET's: export one of its own size
    tiny = HOICLIPConfig(backbone="resnet10", hidden_dim=64, nheads=4, dim_feedforward=128, enc_layers=1,
                         dec_layers=2, inter_dec_layers=2, inter_nheads=2, num_queries=16, clip_model="hoiclip-tiny")
    torch.manual_seed(12)
    export_detector_from(HOICLIPModule(vocabulary="hico_det", net=tiny).model, Path(weights.detr_checkpoint),
                         tmp_path)
    main(["fit", "--config", "tests/conf/hico_tiny.yaml", "--trainer.max_steps", "1",
          "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(tmp_path),
          "--trainer.enable_checkpointing", "true",
          "--model.init_args.weights.clip_pretrained", weights.clip_pretrained,
          "--model.init_args.weights.detr_checkpoint", weights.detr_checkpoint,
          "--model.init_args.weights.verb_embeddings", weights.verb_embeddings])
    (path,) = tmp_path.rglob("*.ckpt")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    hparams = ckpt["hyper_parameters"]
    assert hparams["_class_path"] == "hoiclip_lightning.models.HOICLIPModule"
    assert weight_source_keys(hparams) == []
    net = hparams["net"]  # a dict, or the dataclass once the resolved CLIP activation is recorded in it
    assert (net if isinstance(net, dict) else dataclasses.asdict(net))["clip_model"] == "hoiclip-tiny"
    for file in (weights.clip_pretrained, weights.detr_checkpoint, weights.verb_embeddings):
        Path(file).unlink()
    loaded = HOICLIPModule.load_from_checkpoint(path)
    state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.clip.")}
    for key, value in state.items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    # `hoiclip test --ckpt_path` with a config naming the (deleted) files: the model is built without them
    main(["test", "--config", "tests/conf/hico_tiny.yaml", "--ckpt_path", str(path),
          "--model.init_args.weights.clip_pretrained", weights.clip_pretrained,
          "--model.init_args.weights.detr_checkpoint", weights.detr_checkpoint,
          "--model.init_args.weights.verb_embeddings", weights.verb_embeddings])
    assert "HOI detection mAP (test split)" in capsys.readouterr().out


def test_weight_sources_are_refused_where_a_model_has_no_use_for_them(tmp_path):
    """A verb file for a model without verb classifier is a configuration error, not silently dropped."""
    from hoiclip_lightning.errors import ConfigurationError

    verbs = str(tmp_path / "verbs.pt")
    with pytest.raises(ConfigurationError, match="GEN-VLKT has no verb classifier"):
        GENVLKTModule(vocabulary="hico_det", net=GENVLKT_NET, weights=WeightSources(verb_embeddings=verbs))
    with pytest.raises(ConfigurationError, match="verb_adapter is false"):
        HOICLIPModule(vocabulary="hico_det", net=dataclasses.replace(HOICLIP_NET, verb_adapter=False),
                      weights=WeightSources(verb_embeddings=verbs))
