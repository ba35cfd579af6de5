"""GEN-VLKT: shapes, the detector-memory interaction decoder, the mimic loss, the converter, training.

Tiny configs (ResNet-18, width 32, the tiny CLIP: W=64, E=32) on a toy vocabulary.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
import yaml

from hoiclip_lightning.errors import CheckpointError, ConfigurationError
from hoiclip_lightning.interop import (
    convert_genvlkt_state_dict,
    genvlkt_to_official,
    infer_genvlkt_config,
    load_genvlkt_state_dict,
)
from hoiclip_lightning.models import GENVLKT, GENVLKTConfig, GENVLKTModule, LossConfig, SetCriterion, WeightSources
from hoiclip_lightning.models.criterion import mimic_loss
from hoiclip_lightning.structures import HOIOutputs, HOITarget
from hoiclip_lightning.vocabulary import HOIVocabulary

ROOT = Path(__file__).resolve().parents[1]
Q = 4


@pytest.fixture(scope="module")
def vocab() -> HOIVocabulary:
    return HOIVocabulary(
        name="toy", objects=["person", "cup", "bicycle"], object_category_ids=[1, 47, 2],
        verbs=["hold", "ride", "look at", "no_interaction"], verb_ids=[1, 2, 3, 4],
        hois=[(0, 1), (1, 2), (2, 0), (2, 1), (2, 2), (3, 1)],
        hoi_prompts=["a photo of a person holding a cup", "a photo of a person riding a bicycle",
                     "a photo of a person looking at a person", "a photo of a person looking at a cup",
                     "a photo of a person looking at a bicycle", "a photo of a person and a cup"],
        zero_shot_unseen={"default": [], "toy_uc": [1, 3]},
    )


def tiny(**overrides) -> GENVLKTConfig:
    base = dict(backbone="resnet18", hidden_dim=32, nheads=2, dim_feedforward=64, dropout=0.0, enc_layers=1,
                dec_layers=2, num_queries=Q, clip_model="hoiclip-tiny", prompt_cache=False)
    return GENVLKTConfig(**{**base, **overrides})


def build(vocab, zero_shot="default", seed=0, weights: WeightSources | None = None, **overrides) -> GENVLKT:
    torch.manual_seed(seed)
    return GENVLKT(vocab, zero_shot=zero_shot, config=tiny(**overrides), weights=weights)


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 96, 64, generator=gen)
    mask = torch.zeros(2, 96, 64, dtype=torch.bool)
    mask[1, 64:, :] = True
    return images, mask, torch.randn(2, 3, 64, 64, generator=gen)


@pytest.fixture(scope="module")
def zs_model(vocab) -> GENVLKT:
    return build(vocab, "toy_uc")


def test_output_shapes_train_and_eval_in_zero_shot(zs_model, vocab, inputs):
    model = zs_model.train()
    out = model(*inputs)
    assert out.sub_boxes.shape == (2, Q, 4) and out.obj_boxes.shape == (2, Q, 4)
    assert out.obj_logits.shape == (2, Q, vocab.num_objects + 1)
    assert out.hoi_logits.shape == (2, Q, 4)  # the 4 seen classes
    assert out.mimic_features.shape == (2, Q, 32) and out.mimic_target.shape == (2, 32)  # E of the tiny CLIP
    assert out.clip_logits.shape == (2, vocab.num_hois) and out.hoi_features.shape == (2, Q, 32)
    assert len(out.aux) == 1 and out.aux[0].mimic_features.shape == (2, Q, 32) and out.aux[0].aux is None
    # the mimic target is CLIP's un-normalised global image embedding
    torch.testing.assert_close(out.mimic_target, model.clip.model.encode_image(inputs[2]), atol=1e-5, rtol=1e-5)
    model.eval()
    with torch.no_grad():
        assert model(*inputs).hoi_logits.shape == (2, Q, vocab.num_hois)  # frozen eval head over all classes
    assert not model.eval_visual_projection.weight.requires_grad
    assert model.hoi_class_ids(False) == [0, 2, 4, 5]


def test_mimic_switch_and_default_split(vocab, inputs):
    model = build(vocab, mimic=False, aux_loss=False).eval()
    with torch.no_grad():
        out = model(*inputs)
    assert out.mimic_features is None and out.mimic_target is None and out.aux is None
    assert model.eval_visual_projection is None and out.hoi_logits.shape == (2, Q, 6)


def test_interactions_come_from_the_detector_memory_not_from_clip(zs_model, inputs):
    """GEN-VLKT's CLIP is only the mimic teacher: another CLIP view changes the target, not the detections."""
    model = zs_model.eval()
    images, mask, clip_images = inputs
    with torch.no_grad():
        a = model(images, mask, clip_images)
        b = model(images, mask, torch.randn_like(clip_images))
        c = model(images.flip(-1), mask, clip_images)
    torch.testing.assert_close(a.hoi_logits, b.hoi_logits)
    torch.testing.assert_close(a.mimic_features, b.mimic_features)
    assert not torch.allclose(a.mimic_target, b.mimic_target)
    assert not torch.allclose(a.hoi_logits, c.hoi_logits)  # the detector image does matter


def test_mimic_loss_hand_computed():
    # image 0: query mean of (1, 2) and (3, 0) is (2, 1), target (1, 3): |1| + |-2| = 3
    # image 1: query mean of (0, 0) and (2, 2) is (1, 1), target (1, 1): 0       -> mean over 4 entries 0.75
    features = torch.tensor([[[1.0, 2.0], [3.0, 0.0]], [[0.0, 0.0], [2.0, 2.0]]])
    target = torch.tensor([[1.0, 3.0], [1.0, 1.0]])
    assert mimic_loss(features, target).item() == pytest.approx(0.75)


def test_criterion_adds_the_mimic_term_per_layer_with_its_weight():
    gen = torch.Generator().manual_seed(0)

    def layer(feat):
        boxes = [torch.rand(1, 2, 4, generator=gen) * 0.4 + 0.3 for _ in range(2)]
        return HOIOutputs(*boxes, torch.randn(1, 2, 4, generator=gen), torch.randn(1, 2, 6, generator=gen),
                          mimic_features=feat)

    last, aux = layer(torch.tensor([[[1.0, 2.0], [3.0, 0.0]]])), layer(torch.tensor([[[1.0, 3.0], [1.0, 3.0]]]))
    last.aux, last.mimic_target = [aux], torch.tensor([[1.0, 3.0]])  # mimic 1.5 (last layer), 0 (aux)
    target = HOITarget(torch.tensor([[0.5, 0.5, 0.2, 0.2]]), torch.tensor([[0.4, 0.4, 0.2, 0.2]]), torch.tensor([1]),
                       torch.zeros(1, 2), torch.eye(6)[:1], 0, torch.tensor([10, 10]), torch.tensor([10, 10]))
    criterion = SetCriterion(num_obj_classes=3, config=LossConfig(mimic_loss_coef=20.0))
    with_mimic = criterion(last, [target])
    plain = HOIOutputs(last.sub_boxes, last.obj_boxes, last.obj_logits, last.hoi_logits,
                       aux=[HOIOutputs(aux.sub_boxes, aux.obj_boxes, aux.obj_logits, aux.hoi_logits)])
    without = criterion(plain, [target])
    assert "loss_feat_mimic" not in without  # HOICLIP-style outputs: no mimic term
    assert with_mimic["loss_feat_mimic"].item() == pytest.approx(1.5)
    assert with_mimic["loss_feat_mimic_0"].item() == pytest.approx(0.0)
    aux.mimic_features = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])  # aux: |1| + |3| over 2 entries = 2
    moved = criterion(last, [target])
    assert moved["loss_feat_mimic_0"].item() == pytest.approx(2.0)
    assert (moved["loss"] - without["loss"]).item() == pytest.approx(20.0 * (1.5 + 2.0), rel=1e-5)


def test_param_groups_put_text_classifiers_at_lr_clip(vocab):
    model = build(vocab)
    groups = {k: {id(p) for p in v} for k, v in model.param_groups().items()}
    assert groups["clip"] == {id(p) for p in (*model.visual_projection.parameters(),
                                              *model.obj_visual_projection.parameters())}
    assert not any(p.requires_grad for p in model.clip.parameters())
    frozen = build(vocab, train_text_classifiers=False, text_classifier_bias=False)
    assert frozen.param_groups()["clip"] == [] and frozen.visual_projection.bias is None


def test_detector_checkpoint_also_initialises_the_interaction_decoder(vocab, tmp_path):
    source = build(vocab, seed=3)
    detector = {k: v for k, v in source.state_dict().items() if k.startswith("transformer.instance_decoder.")}
    torch.save({"model": detector}, tmp_path / "detector.pt")
    model = build(vocab, seed=4, weights=WeightSources(detr_checkpoint=str(tmp_path / "detector.pt")))
    for key, value in source.transformer.instance_decoder.state_dict().items():
        torch.testing.assert_close(model.transformer.interaction_decoder.state_dict()[key], value)
    with pytest.raises(ConfigurationError, match="GEN-VLKT has no verb classifier"):
        build(vocab, weights=WeightSources(verb_embeddings=str(tmp_path / "detector.pt")))


# ---------------------------------------------------------------------------------------------- converter
def test_converter_round_trip_gives_identical_outputs(zs_model, vocab, inputs):
    official = genvlkt_to_official(zs_model)
    assert "backbone.0.body.conv1.weight" in official and not any(k.startswith("clip.") for k in official)
    other = build(vocab, "toy_uc", seed=7)
    other.clip.load_state_dict(zs_model.clip.state_dict())  # the CLIP is not in a GEN-VLKT checkpoint
    report = load_genvlkt_state_dict(other, official, source="round trip")
    assert report.mapped["interaction_decoder"] > 0 and report.mapped["hoi_classifier"] > 0
    zs_model.eval(), other.eval()
    with torch.no_grad():
        a, b = zs_model(*inputs), other(*inputs)
    torch.testing.assert_close(a.hoi_logits, b.hoi_logits, atol=0, rtol=0)
    torch.testing.assert_close(a.obj_boxes, b.obj_boxes, atol=0, rtol=0)


def test_converter_refuses_missing_misshapen_and_unknown_keys_listing_all(zs_model):
    official = genvlkt_to_official(zs_model)
    del official["transformer.interaction_decoder.norm.weight"], official["hoi_class_fc.1.bias"]
    official["query_embed_h.weight"] = torch.zeros(Q + 1, 32)
    official["visual_projection.weight"] = torch.zeros(6, 32)  # 600-way head for a seen-only model
    official["transformer.inter_guided_embedd.weight"] = torch.zeros(Q, 32)
    with pytest.raises(CheckpointError) as info:
        convert_genvlkt_state_dict(official, zs_model, source="broken.pth")
    message = str(info.value)
    for expected in ("broken.pth", "2 model key(s) missing", "transformer.interaction_decoder.norm.weight",
                     "hoi_class_fc.1.bias", "2 shape mismatch(es)", "query_embed_h.weight: checkpoint (5, 32)",
                     "visual_projection.weight: checkpoint (6, 32) vs model (4, 32)",
                     "1 checkpoint key(s) not in the model", "transformer.inter_guided_embedd.weight"):
        assert expected in message


def test_architecture_inferred_from_released_shapes():
    z = torch.zeros
    state = {"query_embed_h.weight": z(64, 256), "hoi_class_fc.0.weight": z(512, 256), "visual_projection.bias": z(600)}
    state |= {f"transformer.encoder.layers.{i}.linear1.weight": z(2048, 256) for i in range(6)}
    state |= {f"backbone.0.body.layer3.{i}.conv3.weight": z(1) for i in range(6)}
    for dec in ("instance_decoder", "interaction_decoder"):
        state |= {f"transformer.{dec}.layers.{i}.linear1.weight": z(1) for i in range(3)}
    cfg = infer_genvlkt_config(state)
    got = (cfg.backbone, cfg.hidden_dim, cfg.num_queries, cfg.enc_layers, cfg.dec_layers)
    assert got == ("resnet50", 256, 64, 6, 3)
    assert (cfg.clip_model, cfg.text_classifier_bias) == ("ViT-B-32", True)
    del state["transformer.interaction_decoder.layers.2.linear1.weight"]
    with pytest.raises(CheckpointError, match="3 instance-decoder layers but 2 interaction-decoder layers"):
        infer_genvlkt_config(state)


# ---------------------------------------------------------------------------------------------- module
def test_quickstart_command_with_the_genvlkt_model_config(monkeypatch):
    from hoiclip_lightning.cli import main

    monkeypatch.chdir(ROOT)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as info:
        main(["fit", "--config", "configs/quickstart.yaml", "--model", "configs/model/genvlkt_tiny.yaml",
              "--print_config"])
    assert info.value.code == 0
    model = yaml.safe_load(buf.getvalue())["model"]
    assert model["class_path"] == "hoiclip_lightning.models.GENVLKTModule"
    assert set(model["init_args"]["net"]) == set(GENVLKTConfig.__dataclass_fields__)  # nothing left of HOICLIP's
    assert model["init_args"]["postprocess"]["tfe"] is False and model["init_args"]["loss"]["mimic_loss_coef"] == 20


def test_module_trains_and_overfits_four_images(tmp_path):
    """A tiny GENVLKTModule fits 4 synthetic images: the loss and the mimic loss fall, classes are learned."""
    from hoiclip_lightning.models import OptimizerConfig, PostProcessConfig
    from test_module_learning import evaluate, make_eight_images, overfit

    vocab, batch = make_eight_images(tmp_path)
    batch.images, batch.pixel_mask, batch.clip_images = batch.images[:4], batch.pixel_mask[:4], batch.clip_images[:4]
    batch.targets = batch.targets[:4]
    torch.manual_seed(0)
    module = GENVLKTModule(
        vocabulary=str(tmp_path / "vocabulary.json"),
        net=GENVLKTConfig(backbone="resnet10", backbone_norm="batch_norm", hidden_dim=64, nheads=4,
                          dim_feedforward=128, dropout=0.0, enc_layers=1, dec_layers=2, num_queries=4,
                          clip_model="hoiclip-tiny", text_init=False, prompt_cache=False),
        optimizer=OptimizerConfig(lr=1e-3, lr_backbone=1e-3, lr_clip=1e-3),
        postprocess=PostProcessConfig(topk=20, tfe=False),
    )
    assert {g["name"] for g in module.configure_optimizers()["optimizer"].param_groups} == {"backbone", "clip", "rest"}
    first = module.criterion(module(batch, all_classes=False), batch.targets)
    losses = overfit(module, batch, steps=100)
    module.train()
    last = module.criterion(module(batch, all_classes=False), batch.targets)
    learned = evaluate(module, vocab, batch)
    report = (f"loss {losses[0]:.2f} -> {losses[-1]:.3f}, mimic {first['loss_feat_mimic']:.3f} -> "
              f"{last['loss_feat_mimic']:.4f}, top-1 class {learned.top1_correct}/4, mAP {learned.map_full:.1f}")
    assert losses[-1] < 0.1 * losses[0], report
    assert last["loss_feat_mimic"] < 0.2 * first["loss_feat_mimic"], report
    assert learned.top1_correct >= 3, report


def test_set_vocabulary_keeps_shared_rows_and_embeds_new_classes(vocab, inputs):
    """The open-vocabulary path of the shared base (HOIModel.set_vocabulary) works for GEN-VLKT too."""
    model = build(vocab, "toy_uc").eval()
    with torch.no_grad():  # "trained" rows: make them differ from their text initialisation
        model.visual_projection.weight.add_(0.5)
        model.obj_visual_projection.bias.fill_(0.25)
    trained_hold_cup = model.visual_projection.weight[0].clone()  # seen class 0 = (hold, cup)
    bigger = HOIVocabulary(
        name="toy_plus", objects=[*vocab.objects, "kite"], object_category_ids=[*vocab.object_category_ids, 38],
        verbs=list(vocab.verbs), verb_ids=list(vocab.verb_ids), hois=[*vocab.hois, (1, 3)],
        hoi_prompts=[*vocab.hoi_prompts, "a photo of a person riding a kite"],
        zero_shot_unseen={"default": []},
    )
    model.set_vocabulary(bigger)
    assert model.eval_visual_projection is None and model.visual_projection.weight.shape == (7, 32)
    torch.testing.assert_close(model.visual_projection.weight[0], trained_hold_cup)
    kite = model.vocabulary_tensors(bigger, list(range(7)))["visual_projection.weight"][6]
    torch.testing.assert_close(model.visual_projection.weight[6], kite)  # new class: its text embedding
    assert model.visual_projection.bias[6].item() == 0.0 and model.obj_visual_projection.bias[3].item() == 0.0
    assert model.obj_visual_projection.bias[0].item() == 0.25  # "person" kept its trained bias
    out = model(*inputs)
    assert out.hoi_logits.shape == (2, Q, 7) and out.obj_logits.shape == (2, Q, 5)
