"""OpenAI's CLIP weights as users hold them: TorchScript archives read without running code, QuickGELU always."""

import pickle
import zipfile

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from torch import nn

from hoiclip_lightning.errors import CheckpointError, ConfigurationError
from hoiclip_lightning.models.clip_encoder import CLIPEncoder
from hoiclip_lightning.models.openai_clip import (
    is_torchscript_archive,
    openai_clip_architecture,
    openai_weights_origin,
    read_torchscript_state_dict,
    registered_clip_name,
)


def _openai_like(seed: int = 0) -> nn.Module:
    """A tiny open_clip CLIP with QuickGELU and OpenAI's extra archive entries (OpenAI's key layout)."""
    torch.manual_seed(seed)
    model = open_clip.create_model("hoiclip-tiny", force_quick_gelu=True).eval()
    for name, value in (("input_resolution", 64), ("context_length", 77), ("vocab_size", 49408)):
        if name in vars(model):
            delattr(model, name)  # open_clip keeps two of them as ints; OpenAI's archives hold tensors
        model.register_buffer(name, torch.tensor(value))
    return model


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """``(path, fp32 reference model)``: a TorchScript archive in OpenAI's form (fp16 weights), as
    ``torch.jit.save`` of a scripted CLIP writes it, and the same weights in an fp32 model."""
    source = _openai_like()
    path = tmp_path_factory.mktemp("openai") / "ViT-tiny.pt"
    half = _openai_like()
    half.load_state_dict(source.state_dict())
    torch.jit.save(torch.jit.script(half.half()), str(path))
    reference = _openai_like()
    reference.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                               for k, v in source.state_dict().items()})
    return path, reference


def test_archive_tensors_equal_torch_jit_load(archive):
    path, _ = archive
    assert is_torchscript_archive(path)
    ours = read_torchscript_state_dict(path)
    trusted = torch.jit.load(str(path), map_location="cpu").state_dict()  # our own file: safe to run here
    assert set(trusted) <= set(ours)
    for key, value in trusted.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
    assert ours["visual.conv1.weight"].dtype == torch.float16 and int(ours["input_resolution"]) == 64
    assert openai_weights_origin(path)[0] == "torchscript"


def test_archive_referring_to_other_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "was_run"

    class Payload:
        def __reduce__(self):
            import os

            return os.makedirs, (str(marker),)

    bad = tmp_path / "evil.pt"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(Payload(), protocol=2))
        z.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
    with pytest.raises(CheckpointError, match=r"evil.pt: the TorchScript archive refers to (posix|os|nt)\.makedirs"):
        read_torchscript_state_dict(bad)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refers to"):
        CLIPEncoder("hoiclip-tiny", pretrained=str(bad))
    assert not marker.exists()


def test_openai_archive_loads_as_clip_pretrained_with_quick_gelu(archive):
    path, reference = archive
    enc = CLIPEncoder("hoiclip-tiny", pretrained=str(path))
    assert enc.quick_gelu and isinstance(enc.model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    images = torch.randn(2, 3, 64, 64)
    embeds, _ = enc.encode_image(images)
    torch.testing.assert_close(embeds, reference.encode_image(images), atol=1e-5, rtol=1e-5)
    tokens = open_clip.get_tokenizer("hoiclip-tiny")(["a photo of a person riding a horse"])
    torch.testing.assert_close(enc.encode_text(["a photo of a person riding a horse"]),
                               reference.encode_text(tokens), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigurationError, match="TorchScript archive: OpenAI's CLIP weights, trained with QuickGELU"):
        CLIPEncoder("hoiclip-tiny", pretrained=str(path), quick_gelu=False)


def test_state_dict_forms_of_openai_weights(archive, tmp_path, monkeypatch):
    path, reference = archive
    # a state dict saved from the archive keeps its extra entries: OpenAI's, so QuickGELU
    saved = tmp_path / "from_archive.pt"
    torch.save(torch.jit.load(str(path)).state_dict(), saved)
    assert openai_weights_origin(saved)[0] == "openai_state_dict"
    enc = CLIPEncoder("hoiclip-tiny", pretrained=str(saved))
    assert enc.quick_gelu and isinstance(enc.model.transformer.resblocks[0].mlp.gelu, QuickGELU)

    # a plain state dict for an architecture with a registered -quickgelu twin (as ViT-B-32 has) is ambiguous
    twin = dict(open_clip.factory._MODEL_CONFIGS["hoiclip-tiny"], quick_gelu=True)
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "hoiclip-tiny-quickgelu", twin)
    plain = tmp_path / "plain.pt"
    torch.save({k: v for k, v in reference.state_dict().items()
                if k not in ("input_resolution", "context_length", "vocab_size")}, plain)
    with pytest.raises(ConfigurationError, match=r"plain.pt: a state dict for 'hoiclip-tiny', whose open_clip config "
                                                 r"uses GELU.*set clip_model: hoiclip-tiny-quickgelu.*"
                                                 r"set clip_quick_gelu: false"):
        CLIPEncoder("hoiclip-tiny", pretrained=str(plain))
    images = torch.randn(1, 3, 64, 64)
    quick = CLIPEncoder("hoiclip-tiny-quickgelu", pretrained=str(plain))
    torch.testing.assert_close(quick.encode_image(images)[0], reference.encode_image(images), atol=1e-5, rtol=1e-5)
    assert CLIPEncoder("hoiclip-tiny", pretrained=str(plain), quick_gelu=True).quick_gelu
    gelu = CLIPEncoder("hoiclip-tiny", pretrained=str(plain), quick_gelu=False)
    assert not gelu.quick_gelu and isinstance(gelu.model.visual.transformer.resblocks[0].mlp.gelu, nn.GELU)
    assert (gelu.encode_image(images)[0] - reference.encode_image(images)).abs().max() > 1e-4


def test_architecture_read_from_openai_layout(archive):
    state = read_torchscript_state_dict(archive[0])
    arch = openai_clip_architecture(state)
    assert arch == {"embed_dim": 32,
                    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
                    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "layers": 2}}
    assert registered_clip_name(arch) == "hoiclip-tiny"
    b32 = {"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "layers": 12}}
    assert registered_clip_name(b32) == "ViT-B-32-quickgelu"
    assert registered_clip_name(dict(b32, vision_cfg=dict(b32["vision_cfg"], layers=6))) is None


def test_a_checkpoint_remembers_the_activation_its_weights_chose(archive, tmp_path):
    """`clip_quick_gelu: null` + OpenAI weights -> QuickGELU; the predictor rebuilds the model without reading
    the weights file, so the checkpoint must say QuickGELU (a GELU rebuild would change every output)."""
    from hoiclip_lightning.inference import HOIDetector
    from hoiclip_lightning.models import HOICLIPConfig, HOICLIPModule, WeightSources

    path, _ = archive
    net = HOICLIPConfig(backbone="resnet10", hidden_dim=32, nheads=2, dim_feedforward=64, enc_layers=1, dec_layers=1,
                        inter_dec_layers=1, inter_nheads=2, num_queries=2, clip_model="hoiclip-tiny",
                        prompt_cache=False)
    assert net.clip_quick_gelu is None
    module = HOICLIPModule(vocabulary="vcoco", net=net, weights=WeightSources(clip_pretrained=str(path)))
    assert module.hparams["net"].clip_quick_gelu is True and module.model.config.clip_quick_gelu is True
    ckpt = tmp_path / "openai.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "hoiclip_vocabulary": module.vocabulary.to_dict()}, ckpt)
    detector = HOIDetector.from_checkpoint(ckpt, device="cpu")
    clip = detector.module.model.clip
    assert clip.quick_gelu and isinstance(clip.model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    images = torch.randn(1, 3, 64, 64)
    module.eval()
    rebuilt = detector.module.model.clip.encode_image(images)[0]
    torch.testing.assert_close(rebuilt, module.model.clip.encode_image(images)[0])
