"""Unit tests of the model's building blocks: backbone, position encoding, transformer, fusion layer, heads."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hoiclip_lightning.errors import CheckpointError, ConfigurationError
from hoiclip_lightning.models.backbone import Backbone
from hoiclip_lightning.models.heads import (
    MLP,
    hoi_logits,
    verb_embeddings_from_text,
)
from hoiclip_lightning.models.interaction import CLIPInteractionDecoder, FusionDecoderLayer
from hoiclip_lightning.models.position_encoding import PositionEmbeddingSine
from hoiclip_lightning.models.transformer import InstanceDecoder, TransformerEncoder
from hoiclip_lightning.models.verb_embedding_file import load_verb_embeddings


def test_backbone_shapes_mask_and_freezing():
    torch.manual_seed(0)
    backbone = Backbone("resnet18", train_backbone=True)
    images = torch.randn(2, 3, 96, 96)
    mask = torch.zeros(2, 96, 96, dtype=torch.bool)
    mask[1, :, 64:] = True  # image 1 is 64 px wide, padded to 96
    feats, small = backbone(images, mask)
    assert feats.shape == (2, 512, 3, 3)
    assert small.dtype == torch.bool and small.shape == (2, 3, 3)
    assert not small[0].any()
    assert small[1, :, 2].all() and not small[1, :, :2].any()
    for name, param in backbone.named_parameters():
        expected = any(stage in name for stage in ("layer2", "layer3", "layer4"))
        assert param.requires_grad == expected, name
    assert not any(p.requires_grad for p in Backbone("resnet18", train_backbone=False).parameters())
    with pytest.raises(ConfigurationError):
        Backbone("resnet9")


@pytest.mark.parametrize("norm, norm_type", [("batch_norm", torch.nn.BatchNorm2d), ("group_norm", torch.nn.GroupNorm)])
def test_backbone_trained_from_scratch_normalises_and_trains_every_stage(norm, norm_type):
    torch.manual_seed(0)
    backbone = Backbone("resnet10", train_backbone=True, norm=norm)
    norms = [m for m in backbone.modules() if isinstance(m, norm_type)]
    assert len(norms) == 1 + 4 * 2 + 3  # stem, two per BasicBlock, one per down-sampling shortcut
    assert all(p.requires_grad for p in backbone.parameters())
    assert not any(p.requires_grad for p in Backbone("resnet10", False, norm).parameters())
    x, mask = torch.randn(4, 3, 64, 64), torch.zeros(4, 64, 64, dtype=torch.bool)
    feats, _ = backbone(x, mask)
    assert feats.shape == (4, 512, 2, 2)
    # normalised: the features do not scale with the input; frozen (identity) batch norm: they do, linearly
    assert torch.allclose(backbone(10 * x, mask)[0], feats, atol=1e-3 * feats.abs().max().item())
    frozen = Backbone("resnet10", True, "frozen_bn")
    assert torch.allclose(frozen(10 * x, mask)[0], 10 * frozen(x, mask)[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigurationError, match="backbone_norm"):
        Backbone("resnet10", True, "layer_norm")


def test_sine_position_encoding_matches_formula():
    enc = PositionEmbeddingSine(num_pos_feats=4)
    mask = torch.zeros(1, 2, 4, dtype=torch.bool)
    mask[0, :, 3] = True  # last column is padding -> valid width 3
    pos = enc(mask)
    assert pos.shape == (1, 8, 2, 4)
    eps = 1e-6
    y = 2 / (2 + eps) * 2 * math.pi  # row 1
    x = 2 / (3 + eps) * 2 * math.pi  # column 1
    expected = [math.sin(y), math.cos(y), math.sin(y / 100), math.cos(y / 100),
                math.sin(x), math.cos(x), math.sin(x / 100), math.cos(x / 100)]
    torch.testing.assert_close(pos[0, :, 1, 1], torch.tensor(expected), atol=1e-5, rtol=1e-5)


def test_encoder_and_instance_decoder_shapes_and_padding():
    torch.manual_seed(0)
    enc = TransformerEncoder(16, 2, 32, 0.0, num_layers=2).eval()
    dec = InstanceDecoder(16, 2, 32, 0.0, num_layers=3).eval()
    src, pos = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    memory = enc(src, pos, mask)
    assert memory.shape == (2, 5, 16)
    query_pos = torch.randn(2, 6, 16)
    hs = dec(torch.zeros_like(query_pos), memory, mask, pos, query_pos)
    assert hs.shape == (3, 2, 6, 16)
    # every layer output goes through the shared final LayerNorm
    torch.testing.assert_close(hs[0].mean(-1), torch.zeros(2, 6), atol=1e-5, rtol=0)
    # padded memory positions do not influence image 1
    src2 = src.clone()
    src2[1, 3:] += 100.0
    hs2 = dec(torch.zeros_like(query_pos), enc(src2, pos, mask), mask, pos, query_pos)
    torch.testing.assert_close(hs2[:, 1], hs[:, 1])
    assert not torch.allclose(enc(src2, pos, None)[1], enc(src, pos, None)[1])


def _ffn(layer, x):
    return layer.norm3(x + layer.linear2(F.relu(layer.linear1(x))))


def test_fusion_layer_formula_and_clip_retrieval_ablation():
    torch.manual_seed(0)
    full = FusionDecoderLayer(8, 2, 16, 0.0).eval()
    t, tokens, mem = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[False] * 4, [False, False, True, True]])
    t1 = full.norm1(t + full.self_attn(t, t, t)[0])
    a = full.norm2(t1 + full.multihead_attn(t1, tokens, tokens)[0])
    b = full.norm2(t1 + full.multihead_attn(t1, mem, mem)[0])  # quirk: same module, no mask
    torch.testing.assert_close(full(t, tokens, mem, mask), _ffn(full, a + b))

    no_clip = FusionDecoderLayer(8, 2, 16, 0.0, clip_retrieval=False).eval()
    no_clip.load_state_dict(full.state_dict())
    torch.testing.assert_close(no_clip(t, tokens, mem, mask), _ffn(full, b))
    torch.testing.assert_close(no_clip(t, None, mem, mask), no_clip(t, tokens * 5, mem, mask))


def test_fusion_layer_unshared_attention_uses_the_padding_mask():
    torch.manual_seed(0)
    t, tokens, mem = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[False] * 4, [False, False, True, True]])
    mem2 = mem.clone()
    mem2[1, 2:] += 10.0
    shared = FusionDecoderLayer(8, 2, 16, 0.0).eval()
    assert not torch.allclose(shared(t, tokens, mem, mask)[1], shared(t, tokens, mem2, mask)[1])
    own = FusionDecoderLayer(8, 2, 16, 0.0, shared_fusion_attention=False).eval()
    torch.testing.assert_close(own(t, tokens, mem, mask)[1], own(t, tokens, mem2, mask)[1])
    names = {n for n, _ in own.named_parameters()}
    own_no_clip = FusionDecoderLayer(8, 2, 16, 0.0, clip_retrieval=False, shared_fusion_attention=False)
    removed = names - {n for n, _ in own_no_clip.named_parameters()}
    assert removed and all(n.startswith(("multihead_attn.", "norm2.")) for n in removed)
    assert {n for n in names if n.startswith(("multihead_attn.", "norm2."))} == removed


def test_interaction_decoder_projects_with_frozen_clip_projection():
    torch.manual_seed(0)
    proj = torch.randn(8, 6)
    dec = CLIPInteractionDecoder(8, 2, 16, 0.0, 2, proj).eval()
    out = dec(torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 4, 8), None)
    assert out.shape == (2, 2, 3, 6)
    assert "visual_proj" in dict(dec.named_buffers())
    assert "visual_proj" not in dict(dec.named_parameters())
    torch.testing.assert_close(dec.visual_proj, proj)


def test_verb_embeddings_from_text_hand_computed():
    hoi_text = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    obj_text = torch.tensor([[0.0, 1.0], [1.0, 1.0], [5.0, 5.0]])  # last row: "nothing"
    hois = [(0, 0), (0, 1), (1, 0)]
    r = 1 / math.sqrt(2)
    v0 = torch.tensor([((1 - 0) + (0 - r)) / 2, ((0 - 1) + (1 - r)) / 2])
    v1 = torch.tensor([r - 0, r - 1])
    expected = torch.stack([v0 / v0.norm(), v1 / v1.norm(), torch.zeros(2)])
    out = verb_embeddings_from_text(hoi_text, obj_text, hois, num_verbs=3)
    torch.testing.assert_close(out, expected)


def test_load_verb_embeddings_formats_and_errors(tmp_path):
    emb = torch.randn(4, 6)
    torch.save(emb, tmp_path / "plain.pth")
    torch.save({"verb_embeddings": emb, "clip_model": "x", "verbs": ["a", "b", "c", "d"]}, tmp_path / "meta.pth")
    torch.save({"embeddings": emb}, tmp_path / "emb.pth")
    for name in ("plain.pth", "meta.pth", "emb.pth"):
        torch.testing.assert_close(load_verb_embeddings(tmp_path / name, 4, 6), emb)
    with pytest.raises(CheckpointError, match=r"\(4, 6\).*\[5, 6\]"):
        load_verb_embeddings(tmp_path / "plain.pth", 5, 6)
    with pytest.raises(CheckpointError, match="not found"):
        load_verb_embeddings(tmp_path / "missing.pth", 4, 6)
    torch.save({"weights": emb}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="verb_embeddings"):
        load_verb_embeddings(tmp_path / "bad.pth", 4, 6)


def test_hoi_logits_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6)
    vis = torch.nn.Linear(6, 5)
    adapter = MLP(6, 3, 6, 3)
    verb = torch.nn.Linear(6, 4, bias=False)
    proj = torch.zeros(4, 5)
    proj[0, 0] = proj[1, 1] = proj[1, 2] = proj[3, 4] = 1.0
    scale = torch.tensor(math.log(10.0))
    out = hoi_logits(x, vis, scale, adapter, verb, proj, verb_weight=0.5)
    v = verb(F.normalize(adapter(x), dim=-1))
    expected = 10.0 * vis(F.normalize(x, dim=-1))
    expected[..., 0] += 0.5 * 10.0 * v[..., 0]
    expected[..., 1] += 0.5 * 10.0 * v[..., 1]
    expected[..., 2] += 0.5 * 10.0 * v[..., 1]
    expected[..., 4] += 0.5 * 10.0 * v[..., 3]
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(hoi_logits(x, vis, scale), 10.0 * vis(F.normalize(x, dim=-1)))
