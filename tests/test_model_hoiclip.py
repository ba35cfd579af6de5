"""Tests of the whole HOICLIP module on tiny configs (ResNet-18, width 32, tiny CLIP W=64, E=32)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from hoiclip_lightning.errors import CheckpointError, ConfigurationError
from hoiclip_lightning.models.config import HOICLIPConfig, WeightSources
from hoiclip_lightning.models.detr_checkpoint import load_detr_checkpoint
from hoiclip_lightning.models.hoiclip import HOICLIP
from hoiclip_lightning.models.query_selection import DenseQuerySelection
from hoiclip_lightning.vocabulary import HOIVocabulary

Q = 4


@pytest.fixture(scope="module")
def vocab() -> HOIVocabulary:
    return HOIVocabulary(
        name="toy",
        objects=["person", "cup", "bicycle"],
        object_category_ids=[1, 47, 2],
        verbs=["hold", "ride", "look at", "no_interaction"],
        verb_ids=[1, 2, 3, 4],
        hois=[(0, 1), (1, 2), (2, 0), (2, 1), (2, 2), (3, 1)],
        hoi_prompts=[
            "a photo of a person holding a cup",
            "a photo of a person riding a bicycle",
            "a photo of a person looking at a person",
            "a photo of a person looking at a cup",
            "a photo of a person looking at a bicycle",
            "a photo of a person and a cup",
        ],
        zero_shot_unseen={"default": [], "toy_uc": [1, 3]},
    )


def tiny_config(**overrides) -> HOICLIPConfig:
    base = dict(
        backbone="resnet18", hidden_dim=32, nheads=2, dim_feedforward=64, dropout=0.0, enc_layers=1,
        dec_layers=2, inter_dec_layers=2, inter_nheads=2, num_queries=Q, clip_model="hoiclip-tiny",
    )
    base.update(overrides)
    return HOICLIPConfig(**base)


def build(vocab, zero_shot="default", seed=0, weights: WeightSources | None = None, **overrides) -> HOICLIP:
    torch.manual_seed(seed)
    return HOICLIP(vocab, zero_shot=zero_shot, config=tiny_config(**overrides), weights=weights)


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 96, 64, generator=gen)
    mask = torch.zeros(2, 96, 64, dtype=torch.bool)
    mask[1, 64:, :] = True
    clip_images = torch.randn(2, 3, 64, 64, generator=gen)
    return images, mask, clip_images


@pytest.fixture(scope="module")
def zs_model(vocab) -> HOICLIP:
    return build(vocab, "toy_uc")


def names(model) -> set[str]:
    return {n for n, _ in model.named_parameters()}


def test_output_shapes_train_and_eval_in_zero_shot(zs_model, vocab, inputs):
    model = zs_model
    assert model.train_hoi_ids == [0, 2, 4, 5]
    model.train()
    out = model(*inputs)
    assert out.sub_boxes.shape == (2, Q, 4) and out.obj_boxes.shape == (2, Q, 4)
    assert ((out.sub_boxes > 0) & (out.sub_boxes < 1)).all()
    assert out.obj_logits.shape == (2, Q, vocab.num_objects + 1)
    assert out.hoi_logits.shape == (2, Q, 4)  # seen classes only
    assert out.clip_logits.shape == (2, vocab.num_hois)
    assert out.clip_image_embeds.shape == (2, 32)  # E of the tiny CLIP, not 512
    assert out.hoi_features.shape == (2, Q, 32)
    torch.testing.assert_close(out.hoi_features.norm(dim=-1), torch.ones(2, Q))
    assert len(out.aux) == 1 and out.aux[0].hoi_logits.shape == (2, Q, 4) and out.aux[0].aux is None
    assert model.transformer.clip_interaction_decoder.visual_proj.shape == (64, 32)  # W, E not 768, 512
    model.eval()
    with torch.no_grad():
        ev = model(*inputs)
        assert ev.hoi_logits.shape == (2, Q, vocab.num_hois)
        tr = model(*inputs, all_classes=False)
    assert tr.hoi_logits.shape == (2, Q, 4)
    assert model.hoi_class_ids(True) == list(range(6)) and model.hoi_class_ids(False) == [0, 2, 4, 5]
    # clip_logits: cosine of the normalised image embedding with every normalised HOI prompt embedding
    text = F.normalize(model.clip.encode_text(vocab.hoi_prompts), dim=-1)
    embeds = F.normalize(model.clip.model.encode_image(inputs[2]), dim=-1)
    torch.testing.assert_close(ev.clip_logits, embeds @ text.t(), atol=1e-5, rtol=1e-5)


def test_zero_shot_heads_and_verb_projection(zs_model, vocab):
    model = zs_model
    text = F.normalize(model.clip.encode_text(vocab.hoi_prompts), dim=-1)
    torch.testing.assert_close(model.visual_projection.weight, text[[0, 2, 4, 5]])
    torch.testing.assert_close(model.eval_visual_projection.weight, text)
    assert model.eval_visual_projection.bias is None and model.visual_projection.bias is not None
    assert not model.eval_visual_projection.weight.requires_grad
    assert model.verb2hoi_proj.shape == (4, 4) and model.verb2hoi_proj_eval.shape == (4, 6)
    assert model.verb2hoi_proj[2].tolist() == [0, 1, 1, 0]
    assert model.verb2hoi_proj_eval[2].tolist() == [0, 0, 1, 1, 1, 0]
    obj = F.normalize(model.clip.encode_text(vocab.object_prompts), dim=-1)
    torch.testing.assert_close(model.obj_visual_projection.weight, obj)
    # text-derived verb classifier: verb 1 (ride) has a single HOI (ride bicycle)
    expected = F.normalize(text[1] - obj[2], dim=-1)
    torch.testing.assert_close(model.verb_projection.weight[1], expected)
    assert torch.isclose(model.logit_scale.exp(), torch.tensor(1 / 0.07))


def test_default_split_has_no_eval_head(vocab, inputs):
    model = build(vocab).eval()
    assert model.eval_visual_projection is None
    with torch.no_grad():
        assert model(*inputs).hoi_logits.shape == (2, Q, 6)


def test_frozen_parts_get_no_gradient_and_trainable_parts_do(vocab, inputs):
    model = build(vocab, "toy_uc")
    # at initialisation the first decoder layer's self-attention sees tgt = 0 with zero biases, which gives
    # some weights an exactly zero gradient (a DETR property); random biases, as after DETR loading, avoid it
    with torch.no_grad():
        attn = model.transformer.instance_decoder.layers[0].self_attn
        attn.in_proj_bias.normal_()
        attn.out_proj.bias.normal_()
    model.train()
    out = model(*inputs)
    total = out.sub_boxes.sum() + out.obj_boxes.sum() + out.obj_logits.sum() + out.hoi_logits.sum()
    total = total + sum(a.hoi_logits.sum() + a.obj_logits.sum() + a.sub_boxes.sum() for a in out.aux)
    total.backward()
    frozen_prefixes = ("clip.", "backbone.body.conv1", "backbone.body.bn1", "backbone.body.layer1",
                       "visual_projection.", "obj_visual_projection.", "eval_visual_projection.")
    for name, param in model.named_parameters():
        if name.startswith(frozen_prefixes):
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.requires_grad, name
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert model.verb_projection.weight.requires_grad  # quirk: fine-tuned by default
    groups = model.param_groups()
    assert set(groups) == {"backbone", "rest"}
    grouped = {id(p) for ps in groups.values() for p in ps}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}
    assert all(any(p is q for _, q in model.backbone.named_parameters()) for p in groups["backbone"])


def test_trainable_clip_has_its_own_param_group(vocab):
    model = build(vocab, freeze_clip=False, train_backbone=False, train_verb_classifier=False)
    groups = model.param_groups()
    assert not groups["backbone"]
    assert {id(p) for p in groups["clip"]} == {id(p) for p in model.clip.parameters()}
    assert model.visual_projection.weight.requires_grad
    assert not model.verb_projection.weight.requires_grad
    model.train()
    assert model.clip.model.training


def test_verb_adapter_off_removes_exactly_its_parameters_and_effect(vocab, inputs):
    full = build(vocab, "toy_uc").eval()
    plain = build(vocab, "toy_uc", verb_adapter=False).eval()
    assert names(full) - names(plain) == {n for n in names(full) if n.startswith(("inter2verb.", "verb_projection."))}
    assert names(plain) <= names(full)
    plain.load_state_dict(full.state_dict(), strict=False)
    with torch.no_grad():
        assert not torch.allclose(full(*inputs).hoi_logits, plain(*inputs).hoi_logits)
        full.verb_projection.weight.zero_()  # the verb term vanishes -> identical logits
        for all_classes in (True, False):
            torch.testing.assert_close(
                full(*inputs, all_classes=all_classes).hoi_logits, plain(*inputs, all_classes=all_classes).hoi_logits
            )


def test_clip_retrieval_off_removes_its_effect_and_parameters(vocab, inputs):
    images, mask, clip_images = inputs
    other_clip = torch.randn_like(clip_images)
    on = build(vocab).eval()
    off = build(vocab, clip_retrieval=False).eval()
    assert names(on) == names(off)  # shared (quirk) attention: the module still serves the DETR memory
    with torch.no_grad():
        assert not torch.allclose(on(images, mask, clip_images).hoi_logits, on(images, mask, other_clip).hoi_logits)
        a, b = off(images, mask, clip_images), off(images, mask, other_clip)
    torch.testing.assert_close(a.hoi_logits, b.hoi_logits)
    assert not torch.allclose(a.clip_logits, b.clip_logits)

    own = build(vocab, shared_fusion_attention=False)
    own_off = build(vocab, shared_fusion_attention=False, clip_retrieval=False)
    removed = names(own) - names(own_off)
    assert names(own_off) <= names(own)
    assert removed == {
        n for n in names(own)
        if n.startswith("transformer.clip_interaction_decoder.layers.") and (".multihead_attn." in n or ".norm2." in n)
    }
    assert len(removed) == 2 * 6  # per layer: in_proj w/b, out_proj w/b, norm2 w/b


def test_text_init_off_and_bias_switch(vocab):
    model = build(vocab, text_init=False, frozen_random_bias=False)
    text = F.normalize(model.clip.encode_text(vocab.hoi_prompts), dim=-1)
    assert not torch.allclose(model.visual_projection.weight, text, atol=1e-2)
    torch.testing.assert_close(model.visual_projection.weight.norm(dim=-1), torch.ones(6))
    ref = build(vocab)
    assert names(ref) - names(model) == {"visual_projection.bias", "obj_visual_projection.bias"}
    assert names(model) <= names(ref)


def test_verb_embedding_file(vocab, tmp_path):
    emb = F.normalize(torch.randn(vocab.num_verbs, 32), dim=-1)
    torch.save({"verb_embeddings": emb, "clip_model": "hoiclip-tiny"}, tmp_path / "verbs.pth")
    model = build(vocab, weights=WeightSources(verb_embeddings=str(tmp_path / "verbs.pth")))
    torch.testing.assert_close(model.verb_projection.weight, emb)
    torch.save(torch.randn(vocab.num_verbs, 512), tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="512"):
        build(vocab, weights=WeightSources(verb_embeddings=str(tmp_path / "wrong.pth")))
    # a verb file for a model without verb classifier is refused, not ignored
    with pytest.raises(ConfigurationError, match="verb_adapter is false"):
        build(vocab, verb_adapter=False, weights=WeightSources(verb_embeddings=str(tmp_path / "verbs.pth")))


def test_configuration_errors(vocab):
    with pytest.raises(ConfigurationError, match="inter_dec_layers"):
        build(vocab, inter_dec_layers=1)
    with pytest.raises(ConfigurationError, match="inter_nheads"):
        build(vocab, inter_nheads=3)
    with pytest.raises(ConfigurationError, match="zero-shot split"):
        build(vocab, "no_such_split")


def _fake_detr_state_dict(model: HOICLIP) -> dict[str, torch.Tensor]:
    """A state dict with DETR's key names and the shapes of ``model`` (3 decoder layers, 100 queries)."""
    gen = torch.Generator().manual_seed(7)
    sd: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbone.body."):
            sd["backbone.0.body." + key[len("backbone.body."):]] = torch.randn(value.shape, generator=gen)
        elif key.startswith(("input_proj.", "transformer.encoder.")):
            sd[key] = torch.randn(value.shape, generator=gen)
        elif key.startswith("transformer.instance_decoder."):
            detr_key = "transformer.decoder." + key[len("transformer.instance_decoder."):]
            sd[detr_key] = torch.randn(value.shape, generator=gen)
            if key.startswith("transformer.instance_decoder.layers.1."):
                extra = "transformer.decoder.layers.2." + key[len("transformer.instance_decoder.layers.1."):]
                sd[extra] = torch.randn(value.shape, generator=gen)
        elif key.startswith("hum_bbox_embed."):
            sd["bbox_embed." + key[len("hum_bbox_embed."):]] = torch.randn(value.shape, generator=gen)
    d = model.config.hidden_dim
    sd["query_embed.weight"] = torch.randn(100, d, generator=gen)
    sd["class_embed.weight"] = torch.randn(92, d, generator=gen)
    sd["class_embed.bias"] = torch.randn(92, generator=gen)
    return sd


def test_load_detr_checkpoint_maps_detr_names(vocab, tmp_path):
    model = build(vocab)
    sd = _fake_detr_state_dict(model)
    path = tmp_path / "detr-r50-e632da11.pth"
    torch.save({"model": sd, "args": argparse.Namespace(lr=1e-4)}, path)
    report = load_detr_checkpoint(model, path)
    own = model.state_dict()
    torch.testing.assert_close(own["backbone.body.layer2.0.conv1.weight"], sd["backbone.0.body.layer2.0.conv1.weight"])
    torch.testing.assert_close(own["backbone.body.bn1.running_var"], sd["backbone.0.body.bn1.running_var"])
    key = "transformer.instance_decoder.layers.1.multihead_attn.in_proj_weight"
    torch.testing.assert_close(own[key], sd["transformer.decoder.layers.1.multihead_attn.in_proj_weight"])
    torch.testing.assert_close(own["transformer.instance_decoder.norm.weight"], sd["transformer.decoder.norm.weight"])
    torch.testing.assert_close(own["transformer.encoder.layers.0.self_attn.in_proj_weight"],
                               sd["transformer.encoder.layers.0.self_attn.in_proj_weight"])
    for head in ("hum_bbox_embed", "obj_bbox_embed"):
        torch.testing.assert_close(own[f"{head}.layers.2.weight"], sd["bbox_embed.layers.2.weight"])
    assert report.missing == []
    assert "query_embed.weight" in report.unexpected and "class_embed.bias" in report.unexpected
    assert any(k.startswith("transformer.decoder.layers.2.") for k in report.unexpected)
    assert len(report.mapped) == len(sd) - 3 - sum(k.startswith("transformer.decoder.layers.2.") for k in sd) + 6
    # the same file through the config option
    loaded = build(vocab, seed=3, weights=WeightSources(detr_checkpoint=str(path)))
    torch.testing.assert_close(loaded.state_dict()[key], own[key])

    bad = dict(sd)
    bad["input_proj.weight"] = torch.randn(32, 2048, 1, 1)  # a ResNet-50 checkpoint for a ResNet-18 model
    torch.save({"model": bad}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="input_proj.weight"):
        load_detr_checkpoint(model, tmp_path / "bad.pth")


def test_export_detector_round_trip_loads_only_the_detector(vocab, tmp_path):
    from hoiclip_lightning.models import export_detector
    from hoiclip_lightning.models.detr_checkpoint import LIBRARY_DETECTOR_PREFIXES

    trained = build(vocab, seed=1, dense_aux_head=True, query_selection=True)
    # a Lightning checkpoint holds the model under "model." next to other state
    ckpt = {"state_dict": {"model." + k: v for k, v in trained.state_dict().items()}, "epoch": 3}
    torch.save(ckpt, tmp_path / "last.ckpt")
    exported = export_detector(tmp_path / "last.ckpt", tmp_path / "detector.pt")
    assert exported and all(k.startswith(LIBRARY_DETECTOR_PREFIXES) for k in exported)
    assert "dense_class_embed.weight" in exported and "query_embed_h.weight" in exported
    assert not any(k.startswith(("visual_projection", "clip.", "inter2verb", "transformer.interaction"))
                   for k in exported)

    fresh = build(vocab, seed=2, dense_aux_head=True, query_selection=True)
    reference = {k: v.clone() for k, v in fresh.state_dict().items()}
    report = load_detr_checkpoint(fresh, tmp_path / "detector.pt")
    assert report.missing == [] and report.unexpected == []
    own, src = fresh.state_dict(), trained.state_dict()
    for key in own:
        if key in exported:
            torch.testing.assert_close(own[key], src[key])
        else:  # everything else (CLIP, interaction decoder, classifiers) is the fresh model's own init
            torch.testing.assert_close(own[key], reference[key])
    changed = [k for k in exported if not torch.equal(reference[k], src[k])]
    assert "backbone.body.conv1.weight" in changed and "dense_class_embed.weight" in changed

    torch.save({"state_dict": {"optimizer": torch.zeros(1)}}, tmp_path / "empty.ckpt")
    with pytest.raises(CheckpointError, match="no detector tensor"):
        export_detector(tmp_path / "empty.ckpt", tmp_path / "x.pt")


def test_config_is_a_plain_dataclass():
    # the model reads only documented fields of HOICLIPConfig
    assert {f.name for f in dataclasses.fields(HOICLIPConfig)} >= {"clip_retrieval", "verb_adapter", "text_init"}


def test_dense_aux_head_adds_only_its_head_and_a_valid_cell_grid(vocab, inputs):
    plain = build(vocab).eval()
    dense = build(vocab, dense_aux_head=True).eval()
    assert names(dense) - names(plain) == {"dense_class_embed.weight", "dense_class_embed.bias"}
    dense.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        a, b = plain(*inputs), dense(*inputs)
    assert a.dense_logits is None
    torch.testing.assert_close(a.hoi_logits, b.hoi_logits)  # the head adds a loss, never changes predictions
    # 96x64 input -> 3x2 cells of 32 px; image 1 is 64 px high, so its last row is padding
    assert b.dense_logits.shape == (2, 3, 2, vocab.num_objects + 1 + vocab.num_verbs)
    assert b.dense_cell_size == (32.0, 32.0)
    assert b.dense_valid[0].all() and b.dense_valid[1, :2].all() and not b.dense_valid[1, 2].any()


def test_position_in_memory_adds_the_encoding_to_the_encoder_input(vocab, inputs):
    plain = build(vocab).eval()
    with_pos = build(vocab, position_in_memory=True).eval()
    assert names(plain) == names(with_pos)
    with_pos.load_state_dict(plain.state_dict())
    seen = {}
    plain.transformer.encoder.register_forward_hook(lambda m, a, o: seen.__setitem__("plain", a[0]))
    with_pos.transformer.encoder.register_forward_hook(lambda m, a, o: seen.__setitem__("pos", a[0]))
    with torch.no_grad():
        plain(*inputs), with_pos(*inputs)
        images, mask, _ = inputs
        pos = plain.position_embedding(plain.backbone(images, mask)[1])  # [B, D, h, w]
    torch.testing.assert_close(seen["pos"], seen["plain"] + pos.flatten(2).transpose(1, 2))


def test_query_selection_needs_the_dense_head(vocab):
    with pytest.raises(ConfigurationError, match="dense_aux_head"):
        build(vocab, query_selection=True)


def test_query_selection_picks_the_best_cells_in_order_and_never_padding():
    select = DenseQuerySelection(d_model=4, num_obj_classes=2)
    # 2x3 grid of 32 px cells; image 64 px high and 80 px wide (last column is partly padding)
    logits = torch.full((1, 6, 2 + 1 + 1), -5.0)
    logits[0, [4, 1, 0, 2], 2] = torch.tensor([3.0, 2.0, -1.0, 9.0])  # subject human; cell 2 is padding
    logits[0, [0, 5], 1] = torch.tensor([1.0, 4.0])  # objects (class 1): 5 beats 0
    logits[0, 3, 0] = 0.5  # object class 0 on cell 3
    mask = torch.tensor([[False, False, True, False, False, False]])
    memory = torch.arange(6.0)[None, :, None].expand(1, 6, 4).clone()
    pos = torch.zeros(1, 6, 4)
    out = select(memory, pos, logits, mask, torch.zeros(6, 4), grid=(2, 3), cell_size=(32.0, 32.0),
                 image_sizes=torch.tensor([[64.0, 80.0]]))
    assert out.cells.tolist() == [[4, 1, 0, 5, 0, 3]]  # human slots: 4, 1, 0 (not 2); objects 5, 0, 3
    # content is the selected cell's memory through the projection
    expected = select.content_norm(select.content_proj(memory[0, out.cells[0]]))
    torch.testing.assert_close(out.tgt[0], expected)
    # centre of cell 4 (row 1, col 1): x = 48 / 80, y = 48 / 64; cell 5 (col 2) centre x = 80 / 80 -> clamped
    centres = torch.sigmoid(out.box_offset[0, :, :2])
    torch.testing.assert_close(centres[0], torch.tensor([0.6, 0.75]))
    torch.testing.assert_close(centres[3], torch.tensor([1 - 1e-4, 0.75]))
    assert (out.box_offset[..., 2:] == 0).all()


def test_query_selection_puts_box_centres_on_the_selected_cells(vocab, inputs):
    plain = build(vocab, dense_aux_head=True).eval()
    model = build(vocab, dense_aux_head=True, query_selection=True).eval()
    assert names(model) - names(plain) == {"query_selector.content_proj.weight", "query_selector.content_proj.bias",
                                           "query_selector.content_norm.weight", "query_selector.content_norm.bias"}
    for head in (model.hum_bbox_embed, model.obj_bbox_embed):  # zero box regression: boxes sit on the anchors
        torch.nn.init.zeros_(head.layers[-1].weight)
        torch.nn.init.zeros_(head.layers[-1].bias)
    seen = {}
    model.query_selector.register_forward_hook(lambda m, a, o: seen.__setitem__("cells", o.cells))
    with torch.no_grad():
        out = model(*inputs)
    cells = seen["cells"]  # [B, 2Q] on the 3x2 grid of 32 px cells
    rows, cols = cells // 2, cells % 2
    heights = torch.tensor([96.0, 64.0])[:, None]
    cx, cy = (cols + 0.5) * 32 / 64, ((rows + 0.5) * 32 / heights).clamp(max=1 - 1e-4)
    boxes = torch.cat([out.sub_boxes, out.obj_boxes], dim=1)  # [B, 2Q, 4]
    torch.testing.assert_close(boxes[..., 0], cx)
    torch.testing.assert_close(boxes[..., 1], cy)
    assert (rows[1] < 2).all()  # image 1's padding row is never an anchor


def test_query_selection_follows_a_new_vocabulary(vocab, inputs):
    model = build(vocab, dense_aux_head=True, query_selection=True).eval()
    prompts = vocab.object_prompts[:-1] + ["a photo of a kite", vocab.object_prompts[-1]]  # "nothing" stays last
    bigger = dataclasses.replace(vocab, name="toy+", objects=vocab.objects + ["kite"],
                                 object_category_ids=vocab.object_category_ids + [38], object_prompts=prompts)
    model.set_vocabulary(bigger)
    assert model.query_selector.num_obj_classes == 4
    with torch.no_grad():
        out = model(*inputs)
    assert out.dense_logits.shape[-1] == 4 + 1 + len(vocab.verbs)

