"""Tests of the open_clip wrapper: token extraction, text encoding, freezing, supported towers."""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch

from hoiclip_lightning.errors import ConfigurationError
from hoiclip_lightning.models.clip_encoder import TINY_CLIP_CONFIG, CLIPEncoder


@pytest.fixture(scope="module")
def encoder() -> CLIPEncoder:
    torch.manual_seed(0)
    return CLIPEncoder("hoiclip-tiny", pretrained=None)


def test_tiny_clip_dimensions_come_from_the_model(encoder):
    assert (encoder.width, encoder.embed_dim, encoder.image_size, encoder.num_tokens) == (64, 32, 64, 17)
    assert encoder.visual_proj.shape == (64, 32)
    assert len(encoder.mean) == 3 and len(encoder.std) == 3
    torch.testing.assert_close(torch.tensor(encoder.mean), torch.tensor(open_clip.OPENAI_DATASET_MEAN))


def test_token_zero_projection_equals_encode_image(encoder):
    images = torch.randn(3, 3, 64, 64)
    embeds, tokens = encoder.encode_image(images)
    assert embeds.shape == (3, 32) and tokens.shape == (3, 17, 64)
    reference = encoder.model.encode_image(images)
    torch.testing.assert_close(embeds, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tokens[:, 0] @ encoder.visual_proj, reference, atol=1e-5, rtol=1e-5)
    # tokens are after ln_post: zero mean per token up to the LayerNorm bias (0 at init)
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(3, 17), atol=1e-4, rtol=0)


def test_text_encoding_matches_open_clip(encoder):
    prompts = ["a photo of a person riding a bike", "a photo of nothing", "a photo of a cup"]
    out = encoder.encode_text(prompts, batch_size=2)
    expected = encoder.model.encode_text(encoder.tokenizer(prompts))
    assert out.shape == (3, 32)
    torch.testing.assert_close(out, expected)


def test_frozen_clip_stays_in_eval_mode_and_has_no_grad(encoder):
    encoder.train()
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.parameters())
    images = torch.randn(1, 3, 64, 64, requires_grad=True)
    embeds, _ = encoder.encode_image(images)
    assert not embeds.requires_grad


def test_trainable_clip_follows_train_mode():
    torch.manual_seed(0)
    enc = CLIPEncoder("hoiclip-tiny", pretrained=None, frozen=False)
    enc.train()
    assert enc.model.training
    embeds, tokens = enc.encode_image(torch.randn(1, 3, 64, 64))
    (embeds.sum() + tokens.sum()).backward()
    assert enc.model.visual.conv1.weight.grad is not None


def test_low_precision_returns_fp32_and_needs_frozen_clip():
    enc = CLIPEncoder("hoiclip-tiny", pretrained=None, precision="bf16")
    embeds, tokens = enc.encode_image(torch.randn(1, 3, 64, 64))
    assert embeds.dtype == torch.float32 and tokens.dtype == torch.float32
    assert enc.model.visual.conv1.weight.dtype == torch.bfloat16
    with pytest.raises(ConfigurationError, match="frozen"):
        CLIPEncoder("hoiclip-tiny", pretrained=None, precision="fp16", frozen=False)


def test_resnet_clip_is_rejected():
    cfg = copy.deepcopy(TINY_CLIP_CONFIG)
    cfg["vision_cfg"] = {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8}
    open_clip.factory._MODEL_CONFIGS["hoiclip-test-tiny-rn"] = cfg
    with pytest.raises(ConfigurationError, match="ViT"):
        CLIPEncoder("hoiclip-test-tiny-rn", pretrained=None)


def test_unknown_model_or_tag_is_a_configuration_error():
    with pytest.raises(ConfigurationError):
        CLIPEncoder("hoiclip-tiny", pretrained="no-such-tag-or-file")
