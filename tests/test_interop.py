"""Conversion of released reference checkpoints (official parameter names) into HOICLIPModule checkpoints."""

import argparse
from pathlib import Path

import pytest
import torch

from hoiclip_lightning.errors import CheckpointError
from hoiclip_lightning.interop import (
    convert_official_state_dict,
    infer_net_config,
    official_to_ours,
    ours_to_official,
    to_official_state_dict,
)
from hoiclip_lightning.interop.official import COMPUTED_KEYS, _net_from_model_config, infer_label_space
from hoiclip_lightning.models import HOICLIPModule

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ROOT / "configs/model/tiny.yaml"


@pytest.fixture(scope="module")
def source_module():
    """A tiny random module; its weights under the reference's names play the released checkpoint."""
    import dataclasses

    torch.manual_seed(0)
    # the reference's CLIP is OpenAI's: QuickGELU, which the converter sets
    net = dataclasses.replace(_net_from_model_config(TINY_MODEL), clip_quick_gelu=True)
    return HOICLIPModule(vocabulary="hico_det", net=net).eval()


@pytest.fixture(scope="module")
def official(source_module):
    return to_official_state_dict(source_module.model)


def test_key_mapping_examples_and_round_trip(source_module, official):
    assert official_to_ours("backbone.0.body.layer2.0.conv1.weight") == "backbone.body.layer2.0.conv1.weight"
    assert official_to_ours("clip_model.transformer.resblocks.0.attn.in_proj_weight") == \
        "clip.model.transformer.resblocks.0.attn.in_proj_weight"
    assert official_to_ours("transformer.clip_interaction_decoder.layers.1.norm4.weight") is None
    assert official_to_ours("class_embed.weight") is None  # not a HOICLIP key: reported as unexpected
    for key in source_module.model.state_dict():
        if key not in COMPUTED_KEYS:
            assert official_to_ours(ours_to_official(key)) == key
    # a realistic official dict: prefixes of the reference, its unused modules and verb matrices included
    assert any(k.startswith("backbone.0.body.") for k in official)
    assert any(k.startswith("clip_model.visual.") for k in official)
    assert "transformer.interaction_decoder.norm.weight" in official and "hoi_class_fc.0.weight" in official
    assert "verb2hoi_proj" in official and not any(k.startswith(("backbone.body.", "clip.model.")) for k in official)


def test_convert_official_cli_round_trip(source_module, official, tmp_path, capsys):
    from hoiclip_lightning.cli import main

    src = tmp_path / "hoiclip_official.pth"
    args = argparse.Namespace(dataset_file="hico", zero_shot_type="default", verb_weight=0.5)
    fp16 = {k: (v.half() if k.startswith("clip_model.") and v.is_floating_point() else v) for k, v in official.items()}
    torch.save({"model": fp16, "args": args, "epoch": 89}, src)
    dst = tmp_path / "converted.ckpt"
    main(["convert-official", "--src", str(src), "--dst", str(dst), "--model_config", str(TINY_MODEL)])
    out = capsys.readouterr().out
    n_clip = sum(k.startswith("clip_model.") for k in official)
    n_backbone = sum(k.startswith("backbone.0.body.") for k in official)
    assert f"clip                 {n_clip:>5}" in out and f"backbone             {n_backbone:>5}" in out
    assert "dropped (unused by the reference forward pass): 47 tensors" in out
    assert "transformer.interaction_decoder (" in out and "verb2hoi_proj equals" in out
    assert "dtype casts: float16->float32" in out and f"wrote {dst}" in out

    loaded = HOICLIPModule.load_from_checkpoint(dst, map_location="cpu").eval()
    theirs, ours = source_module.model.state_dict(), loaded.model.state_dict()
    assert set(theirs) == set(ours)
    for key, value in theirs.items():
        tol = 2e-3 if key.startswith("clip.") or key in COMPUTED_KEYS else 0.0  # CLIP went through fp16
        torch.testing.assert_close(ours[key].float(), value.float(), atol=tol, rtol=tol, msg=key)


def test_converted_checkpoint_runs_hoiclip_test(source_module, official, tmp_path, capsys, monkeypatch):
    from hoiclip_lightning.cli import main
    from hoiclip_lightning.interop import convert_official_checkpoint

    src = tmp_path / "official.pth"
    torch.save(official, src)  # a bare state dict (no 'model'/'args'): label space from the shapes
    convert_official_checkpoint(src, tmp_path / "c.ckpt", net=_net_from_model_config(TINY_MODEL))
    monkeypatch.chdir(tmp_path)
    # the checkpoint's hyper-parameters replace the config's (here a wrong query count); outputs go to
    # default_root_dir because the checkpoint's per_class_ap_dir (None) replaces the command line's too
    main(["test", "--config", str(ROOT / "tests/conf/hico_tiny.yaml"), "--ckpt_path", str(tmp_path / "c.ckpt"),
          "--data.init_args.root", str(ROOT / "tests/data/hico_det"), "--trainer.default_root_dir", str(tmp_path),
          "--model.init_args.net.num_queries", "9"])
    assert "HOI detection mAP (test split)" in capsys.readouterr().out
    assert (tmp_path / "per_class_ap.csv").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing", r"1 model key\(s\) missing from the checkpoint: \['transformer.encoder.layers.0.linear1.bias'\]"),
        ("shape", r"shape mismatch.*query_embed_h.weight: checkpoint \(9, 64\) vs model \(16, 64\)"),
        ("unexpected", r"1 checkpoint key\(s\) not recognised: \['class_embed.weight'\]"),
        ("all", r"missing.*not recognised.*shape mismatch"),
    ],
)
def test_converter_refuses_a_broken_dict(source_module, official, change, message):
    broken = dict(official)
    if change in ("missing", "all"):
        del broken["transformer.encoder.layers.0.linear1.bias"]
    if change in ("shape", "all"):
        broken["query_embed_h.weight"] = torch.zeros(9, 64)
    if change in ("unexpected", "all"):
        broken["class_embed.weight"] = torch.zeros(92, 64)
    with pytest.raises(CheckpointError, match=message):
        convert_official_state_dict(broken, source_module.model, source="broken.pth")


def test_converter_cli_refusal_exits_with_message(official, tmp_path, capsys):
    from hoiclip_lightning.cli import main

    broken = {k: v for k, v in official.items() if not k.startswith("obj_visual_projection.")}
    torch.save({"model": broken}, tmp_path / "broken.pth")
    with pytest.raises(SystemExit) as info:
        main(["convert-official", "--src", str(tmp_path / "broken.pth"), "--dst", str(tmp_path / "x.ckpt"),
              "--model_config", str(TINY_MODEL)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "hoiclip convert-official: error: CheckpointError: " in err and "obj_visual_projection.weight" in err
    assert not (tmp_path / "x.ckpt").exists()


def _paper_shaped(seen: int | None = None) -> dict[str, torch.Tensor]:
    """Just the keys and shapes the architecture inference reads, with the released checkpoint's sizes."""
    state = {"query_embed_h.weight": torch.empty(64, 256),
             "clip_model.visual.conv1.weight": torch.empty(768, 3, 32, 32),
             "clip_model.visual.positional_embedding": torch.empty(50, 768),
             "clip_model.visual.proj": torch.empty(768, 512),
             "clip_model.positional_embedding": torch.empty(77, 512),
             "clip_model.token_embedding.weight": torch.empty(49408, 512),
             "visual_projection.weight": torch.empty(seen or 600, 512)}
    state |= {f"transformer.encoder.layers.{i}.linear1.weight": torch.empty(2048, 256) for i in range(6)}
    state |= {f"transformer.instance_decoder.layers.{i}.norm1.weight": torch.empty(256) for i in range(3)}
    state |= {f"transformer.clip_interaction_decoder.layers.{i}.norm1.weight": torch.empty(768) for i in range(3)}
    state |= {f"backbone.0.body.layer3.{i}.conv{j}.weight": torch.empty(1) for i in range(6) for j in (1, 2, 3)}
    state |= {f"clip_model.{tower}transformer.resblocks.{i}.ln_1.weight": torch.empty(1)
              for tower in ("visual.", "") for i in range(12)}
    if seen is not None:
        state["eval_visual_projection.weight"] = torch.empty(600, 512)
    return state


def test_architecture_and_label_space_inferred_from_released_shapes():
    cfg = infer_net_config(_paper_shaped())
    assert (cfg.backbone, cfg.hidden_dim, cfg.num_queries, cfg.dim_feedforward) == ("resnet50", 256, 64, 2048)
    assert (cfg.enc_layers, cfg.dec_layers, cfg.inter_dec_layers) == (6, 3, 3)
    assert cfg.clip_model == "ViT-B-32-quickgelu" and not hasattr(cfg, "clip_pretrained")  # weights: the state dict
    assert cfg.clip_quick_gelu is True
    assert infer_label_space(_paper_shaped(), None) == ("hico_det", "default")
    assert infer_label_space(_paper_shaped(seen=500), None) == ("hico_det", "unseen_object")
    assert infer_label_space(_paper_shaped(seen=516), None) == ("hico_det", "unseen_verb")
    with pytest.raises(CheckpointError, match="rare_first.*non_rare_first|non_rare_first.*rare_first"):
        infer_label_space(_paper_shaped(seen=480), None)
    args = argparse.Namespace(dataset_file="hico", zero_shot_type="non_rare_first")
    assert infer_label_space(_paper_shaped(seen=480), args) == ("hico_det", "non_rare_first")
    vcoco = {"obj_visual_projection.weight": torch.empty(82, 512)}
    assert infer_label_space(vcoco, None) == ("vcoco", "default")


def _small_clip_vcoco_net(**changes):
    """The tiny model with the 4-layer hoiclip-small CLIP, as the reference builds it for V-COCO: QuickGELU,
    the object-indexed verb-to-HOI matrix, verb weight 0.1, one head count for every attention."""
    import dataclasses

    net = _net_from_model_config(TINY_MODEL)
    fields = dict(clip_model="hoiclip-small", clip_quick_gelu=True, nheads=4, inter_nheads=4, verb_weight=0.1,
                  verb_to_hoi_columns="object")
    return dataclasses.replace(net, **(fields | changes))


@pytest.fixture(scope="module")
def vcoco_reference(tmp_path_factory):
    """``(module, released .pth)``: a V-COCO model trained the reference's way, saved under its names."""
    torch.manual_seed(1)
    module = HOICLIPModule(vocabulary="vcoco", net=_small_clip_vcoco_net()).eval()
    src = tmp_path_factory.mktemp("vcoco") / "hoiclip_vcoco.pth"
    args = argparse.Namespace(dataset_file="vcoco", nheads=4, verb_weight=0.1, dropout=0.0)
    torch.save({"model": to_official_state_dict(module.model), "args": args}, src)
    return module, src


def test_converted_vcoco_checkpoint_reproduces_reference_outputs(vcoco_reference, tmp_path, capsys):
    """No model config: the CLIP's depth and width (4 x 128, not ViT-B/32's 12 x 768), the ResNet depth and the
    object-indexed verb matrix are read from the checkpoint, and the HOI logits equal the reference's."""
    from hoiclip_lightning.cli import main

    reference, src = vcoco_reference
    dst = tmp_path / "vcoco.ckpt"
    main(["convert-official", "--src", str(src), "--dst", str(dst)])
    assert "verb2hoi_proj equals the reference's object-indexed verb-to-HOI matrix (verb_to_hoi_columns: object)" \
        in capsys.readouterr().out
    converted = HOICLIPModule.load_from_checkpoint(dst, map_location="cpu").eval()
    cfg = converted.model.config
    assert (cfg.clip_model, cfg.clip_quick_gelu, cfg.verb_to_hoi_columns) == ("hoiclip-small", True, "object")
    assert (cfg.backbone, cfg.enc_layers, cfg.dec_layers, cfg.num_queries) == ("resnet10", 1, 2, 16)
    assert len(converted.model.clip.model.visual.transformer.resblocks) == 4
    torch.manual_seed(2)
    images, clip_images = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    mask = torch.zeros(2, 64, 64, dtype=torch.bool)
    with torch.no_grad():
        theirs = reference.model(images, mask, clip_images).hoi_logits
        ours = converted.model(images, mask, clip_images).hoi_logits
        # the same weights with the correct matrix: the verb term lands on other HOI columns
        correct = HOICLIPModule(vocabulary="vcoco", net=_small_clip_vcoco_net(verb_to_hoi_columns="hoi")).eval()
        correct.load_state_dict(converted.state_dict())
        moved = correct.model(images, mask, clip_images).hoi_logits
    assert ours.shape == (2, 16, 263)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert (moved - theirs).abs().max() > 1e-2
    # columns 81.. never receive a verb term in the reference's V-COCO matrix
    assert converted.model.verb2hoi_proj[:, 81:].sum() == 0 and correct.model.verb2hoi_proj[:, 81:].sum() > 0


def test_converter_names_the_option_for_a_clip_it_cannot_infer(vcoco_reference, tmp_path):
    from hoiclip_lightning.interop import convert_official_checkpoint

    _, src = vcoco_reference
    data = torch.load(src, weights_only=False)
    three = {k: v for k, v in data["model"].items() if not k.startswith("clip_model.visual.transformer.resblocks.3.")}
    torch.save({"model": three, "args": data["args"]}, tmp_path / "three_layers.pth")
    with pytest.raises(CheckpointError, match=r"CLIP \(image tower width 128 x 3 layers, patch 16, 64 px; text width "
                                              r"128 x 3 layers.*matches no open_clip architecture.*--model_config"):
        convert_official_checkpoint(tmp_path / "three_layers.pth")
    with pytest.raises(CheckpointError, match=r"clip_model 'hoiclip-tiny' is not the checkpoint's CLIP \(image tower "
                                              r"width 128 x 4 layers.*set net.clip_model: hoiclip-small"):
        convert_official_checkpoint(src, net=_net_from_model_config(TINY_MODEL))
