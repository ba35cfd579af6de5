"""Tests of the CLIP knowledge tools: visual semantic arithmetic, the prompt cache, verb-file checks and
open-vocabulary switching (tiny models, CPU, a few seconds each)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from hoiclip_lightning.data import HOIDataModule
from hoiclip_lightning.errors import CheckpointError, ConfigurationError
from hoiclip_lightning.knowledge import compute_verb_embeddings, encode_prompts, verb_arithmetic
from hoiclip_lightning.models.clip_encoder import CLIPEncoder
from hoiclip_lightning.models.config import HOICLIPConfig, WeightSources
from hoiclip_lightning.models.heads import verb_embeddings_from_text
from hoiclip_lightning.models.hoiclip import HOICLIP
from hoiclip_lightning.models.module import HOICLIPModule
from hoiclip_lightning.models.prompt_embeddings import PromptEmbeddingCache
from hoiclip_lightning.models.verb_embedding_file import load_verb_embeddings
from hoiclip_lightning.vocabulary import HOIVocabulary

# ---------------------------------------------------------------------- a tiny dataset with known crops
# Objects / verbs / HOI classes of the crop world. HOI 3 ("look_at ball") is unseen in split "uc";
# all HOIs of "kick" are unseen in split "uv".
WORLD_VOCAB = {
    "name": "crops",
    "objects": ["person", "cup", "ball"],
    "object_category_ids": [1, 47, 37],
    "verbs": ["hold", "kick", "look_at"],
    "verb_ids": [1, 2, 3],
    "hois": [[0, 1], [1, 2], [2, 1], [2, 2], [0, 2], [2, 0]],
    "hoi_prompts": ["a photo of a person holding a cup", "a photo of a person kicking a ball",
                    "a photo of a person looking at a cup", "a photo of a person looking at a ball",
                    "a photo of a person holding a ball", "a photo of a person looking at a person"],
    "zero_shot_unseen": {"default": [], "uc": [3], "uv": [1]},
}
S = 32  # stub CLIP input size
# colours (RGB) of the human region, the object region and a patch at the union-box centre of each image
COLOURS = {
    "A": ((200, 60, 60), (60, 200, 60), (60, 60, 200)),
    "B": ((180, 120, 40), (40, 120, 180), (120, 40, 180)),
    "C": ((90, 160, 130), (160, 90, 60), (130, 130, 30)),
}


def _paint(path: Path, colours) -> None:
    human, obj, patch = colours
    arr = np.zeros((48, 48, 3), dtype=np.uint8)
    arr[:, :24] = human  # human box  [0, 0, 24, 48]  (crop centre (12, 24))
    arr[:, 24:] = obj    # object box [24, 8, 48, 40]  (crop centre (36, 24))
    arr[18:30, 18:30] = patch  # union box [0, 0, 48, 48] (crop centre (24, 24))
    Image.fromarray(arr).save(path)


def _record(name: str, object_cat: int, hois: list[tuple[int, int]]) -> dict:
    return {
        "file_name": name,
        "annotations": [{"bbox": [0, 0, 24, 48], "category_id": 1},
                        {"bbox": [24, 8, 48, 40], "category_id": object_cat}],
        "hoi_annotation": [{"subject_id": 0, "object_id": 1, "category_id": verb_id, "hoi_category_id": hoi + 1}
                           for verb_id, hoi in hois],
    }


@pytest.fixture(scope="module")
def crop_world(tmp_path_factory) -> Path:
    """Image A: hold cup + look_at cup; B: kick ball + look_at ball; C: look_at person (object = a person)."""
    root = tmp_path_factory.mktemp("crop_world")
    (root / "annotations").mkdir()
    for split in ("train2015", "test2015"):
        (root / "images" / split).mkdir(parents=True)
    for key in COLOURS:
        _paint(root / "images" / "train2015" / f"{key}.png", COLOURS[key])
    _paint(root / "images" / "test2015" / "T.png", COLOURS["A"])
    train = [_record("A.png", 47, [(1, 0), (3, 2)]), _record("B.png", 37, [(2, 1), (3, 3)]),
             _record("C.png", 1, [(3, 5)])]
    (root / "annotations" / "trainval_hico.json").write_text(json.dumps(train))
    (root / "annotations" / "test_hico.json").write_text(json.dumps([_record("T.png", 47, [(1, 0)])]))
    corre = np.zeros((3, 3), dtype=np.uint8)
    for v, o in WORLD_VOCAB["hois"]:
        corre[v, o] = 1
    np.save(root / "annotations" / "corre_hico.npy", corre)
    (root / "vocabulary.json").write_text(json.dumps(WORLD_VOCAB))
    return root


class StubCLIP(nn.Module):
    """An 'image encoder' whose feature is the mean colour of the 2x2 centre pixels of the normalised crop
    (E = 3), and a 'text encoder' with simple counting features (E = 3)."""

    model_name = "stub"
    pretrained = None
    precision = "fp32"
    image_size = S
    embed_dim = 3
    mean = (0.5, 0.4, 0.3)
    std = (0.2, 0.25, 0.3)

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Linear(1, 1)
        self.image_calls = 0

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.image_calls += 1
        c = S // 2
        return images[:, :, c - 1:c + 1, c - 1:c + 1].mean(dim=(2, 3))

    def encode_text(self, prompts: list[str], batch_size: int = 256) -> torch.Tensor:
        return torch.tensor([[len(p), p.count("a") + 1.0, len(p.split())] for p in prompts])


def feature(rgb) -> torch.Tensor:
    """The stub's feature of a uniform region of colour ``rgb``."""
    return (torch.tensor(rgb, dtype=torch.float64) / 255 - torch.tensor(StubCLIP.mean)) / torch.tensor(StubCLIP.std)


def n(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm()


def datamodule(root: Path, **kwargs) -> HOIDataModule:
    return HOIDataModule(str(root), num_workers=0, **kwargs)


# ---------------------------------------------------------------------- arithmetic
def test_verb_arithmetic_hand_computed_with_excluded_class_and_missing_verb():
    hoi_sums = torch.tensor([[3.0, 4.0], [0.0, 2.0], [0.0, 0.0], [1.0, 0.0]])
    obj_sums = torch.tensor([[0.0, 5.0], [6.0, 0.0]])
    counts = torch.tensor([2, 1, 0, 1])  # class 2 has no instance: left out of its verb's mean
    hois = [(0, 1), (0, 0), (0, 1), (1, 1)]  # verb 2 has no class at all
    out, missing = verb_arithmetic(hoi_sums, obj_sums, counts, hois, [1, 0, 1, 1], num_verbs=3)
    d0 = torch.tensor([0.6 - 1.0, 0.8 - 0.0])
    d1 = torch.tensor([0.0 - 0.0, 1.0 - 1.0])
    d3 = torch.tensor([1.0 - 1.0, 0.0])
    v0 = (d0 + d1) / 2
    expected = torch.stack([v0 / v0.norm(), torch.zeros(2), torch.zeros(2)])
    assert d3.norm() == 0  # verb 1's only difference is zero -> zero row after normalisation
    torch.testing.assert_close(out, expected)
    assert missing == [2]


def _expected_verbs(images: list[str], hoi_ids: dict[str, list[int]], human_mean: bool = True) -> torch.Tensor:
    """Hand computation for the crop world: Hoi/Obj accumulators, union minus object, mean, normalise.

    ``human_mean=False`` adds every human crop to the person row instead of the per-image mean (wrong).
    """
    hoi_rows = {c: torch.zeros(3, dtype=torch.float64) for c in range(6)}
    obj = {o: torch.zeros(3, dtype=torch.float64) for o in range(3)}
    object_of_image = {"A": 1, "B": 2, "C": 0}
    for key in images:
        human, obj_c, patch = (feature(c) for c in COLOURS[key])
        # per-image mean of the human crops (all identical within an image)
        obj[0] += human if human_mean else human * len(hoi_ids[key])
        for c in hoi_ids[key]:
            hoi_rows[c] += patch
            obj[object_of_image[key]] += obj_c
    vocab = WORLD_VOCAB
    used = [c for c in range(6) if hoi_rows[c].norm() > 0]
    verbs = []
    for v in range(3):
        ds = [n(hoi_rows[c]) - n(obj[vocab["hois"][c][1]]) for c in used if vocab["hois"][c][0] == v]
        verbs.append(n(sum(ds) / len(ds)) if ds else torch.zeros(3, dtype=torch.float64))
    return torch.stack(verbs).float()


def test_stub_encoder_gives_the_hand_computed_verbs(crop_world):
    stub = StubCLIP()
    result = compute_verb_embeddings(datamodule(crop_world), stub, progress=False, device="cpu", batch_size=2)
    expected = _expected_verbs(["A", "B", "C"], {"A": [0, 2], "B": [1, 3], "C": [5]})
    torch.testing.assert_close(result.embeddings, expected, atol=1e-5, rtol=1e-5)
    meta = result.metadata
    assert meta["num_images"] == 3 and meta["num_pairs"] == 5
    assert meta["hoi_instances"] == [1, 1, 1, 1, 0, 1]
    assert meta["hois_without_instance"] == [4] and meta["verbs_without_instance"] == []
    assert stub.image_calls == 2  # batched: 2 loader batches of images, one encoder pass each


def test_person_row_takes_the_per_image_mean_of_human_crops(crop_world):
    # the person row mixes image A (2 instances), B (2) and C (1, plus a person as object); adding every
    # human crop instead of each image's mean weights A and B twice and changes the look_at verb
    result = compute_verb_embeddings(datamodule(crop_world), StubCLIP(), progress=False, device="cpu")
    ids = {"A": [0, 2], "B": [1, 3], "C": [5]}
    right, wrong = _expected_verbs(["A", "B", "C"], ids), _expected_verbs(["A", "B", "C"], ids, human_mean=False)
    assert (right[2] - wrong[2]).abs().max() > 1e-3
    torch.testing.assert_close(result.embeddings[2], right[2], atol=1e-5, rtol=1e-5)


def test_zero_shot_split_excludes_unseen_classes_unless_asked(crop_world):
    # split "uc": HOI 3 (look_at ball) is unseen; its pair also carries kick ball, so image B loses every
    # label and is dropped, and "kick" has no training instance left -> zero row
    result = compute_verb_embeddings(datamodule(crop_world, zero_shot="uc"), StubCLIP(), progress=False,
                                     device="cpu")
    expected = _expected_verbs(["A", "C"], {"A": [0, 2], "C": [5]})
    torch.testing.assert_close(result.embeddings, expected, atol=1e-5, rtol=1e-5)
    assert result.embeddings[1].abs().sum() == 0
    meta = result.metadata
    assert meta["verbs_without_instance"] == [1] and meta["zero_shot"] == "uc" and not meta["include_unseen"]
    assert meta["num_images"] == 2

    leaky = compute_verb_embeddings(datamodule(crop_world, zero_shot="uc"), StubCLIP(), include_unseen=True,
                                    progress=False, device="cpu")
    torch.testing.assert_close(leaky.embeddings,
                               _expected_verbs(["A", "B", "C"], {"A": [0, 2], "B": [1, 3], "C": [5]}),
                               atol=1e-5, rtol=1e-5)
    assert leaky.metadata["include_unseen"] and leaky.metadata["verbs_without_instance"] == []


def test_missing_verb_can_fall_back_to_its_text_representation(crop_world):
    stub = StubCLIP()
    result = compute_verb_embeddings(datamodule(crop_world, zero_shot="uv"), stub, missing_verbs="text",
                                     progress=False, device="cpu")
    vocab = HOIVocabulary.from_dict(WORLD_VOCAB)
    text = verb_embeddings_from_text(stub.encode_text(vocab.hoi_prompts), stub.encode_text(vocab.object_prompts),
                                     vocab.hois, vocab.num_verbs)
    torch.testing.assert_close(result.embeddings[1], text[1])
    assert result.metadata["verbs_without_instance"] == [1] and result.metadata["missing_verbs"] == "text"
    with pytest.raises(ConfigurationError, match="missing_verbs"):
        compute_verb_embeddings(datamodule(crop_world), stub, missing_verbs="nan", progress=False)


def test_train_fraction_is_honoured(crop_world):
    dm = datamodule(crop_world, train_fraction=0.4, fraction_seed=3)
    result = compute_verb_embeddings(dm, StubCLIP(), progress=False, device="cpu")
    kept = [r.file_name[0] for r in dm.train_dataset.records]
    assert result.metadata["num_images"] == len(kept) < 3
    assert result.metadata["train_fraction"] == 0.4 and result.metadata["fraction_seed"] == 3
    ids = {"A": [0, 2], "B": [1, 3], "C": [5]}
    torch.testing.assert_close(result.embeddings, _expected_verbs(kept, {k: ids[k] for k in kept}),
                               atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------- verb files
def tiny_config(**overrides) -> HOICLIPConfig:
    base = dict(backbone="resnet18", hidden_dim=32, nheads=2, dim_feedforward=64, dropout=0.0, enc_layers=1,
                dec_layers=2, inter_dec_layers=2, inter_nheads=2, num_queries=4, clip_model="hoiclip-tiny")
    base.update(overrides)
    return HOICLIPConfig(**base)


def test_verb_file_metadata_is_checked_at_model_construction(crop_world, tmp_path, caplog):
    vocab = HOIVocabulary.from_dict(WORLD_VOCAB)
    result = compute_verb_embeddings(datamodule(crop_world), StubCLIP(), progress=False, device="cpu")
    # a file for the tiny CLIP (E = 32) with the real metadata of the crop world
    meta = dict(result.metadata, clip_model="hoiclip-tiny", embed_dim=32)
    emb = F.normalize(torch.randn(3, 32), dim=-1)
    good = tmp_path / "good.pt"
    torch.save({"verb_embeddings": emb, **meta}, good)
    model = HOICLIP(vocab, config=tiny_config(), weights=WeightSources(verb_embeddings=str(good)))
    torch.testing.assert_close(model.verb_projection.weight, emb)

    other = HOIVocabulary.from_dict(dict(WORLD_VOCAB, verbs=["hold", "kick", "watch"]))
    with pytest.raises(CheckpointError, match=r"good\.pt.*'verbs'"):
        HOICLIP(other, config=tiny_config(), weights=WeightSources(verb_embeddings=str(good)))
    more_hois = HOIVocabulary.from_dict(dict(WORLD_VOCAB, hois=WORLD_VOCAB["hois"] + [[1, 0]],
                                             hoi_prompts=WORLD_VOCAB["hoi_prompts"] + ["a person kicking a person"]))
    with pytest.raises(CheckpointError, match="vocabulary_hash"):
        load_verb_embeddings(good, 3, 32, vocabulary=more_hois)
    torch.save({"verb_embeddings": emb, **dict(meta, clip_model="ViT-B-32")}, tmp_path / "vitb.pt")
    with pytest.raises(CheckpointError, match="'clip_model' is 'ViT-B-32'"):
        HOICLIP(vocab, config=tiny_config(), weights=WeightSources(verb_embeddings=str(tmp_path / "vitb.pt")))
    torch.save({"verb_embeddings": emb, **dict(meta, clip_pretrained="openai")}, tmp_path / "openai.pt")
    with pytest.raises(CheckpointError, match="clip_pretrained"):
        HOICLIP(vocab, config=tiny_config(), weights=WeightSources(verb_embeddings=str(tmp_path / "openai.pt")))
    torch.save({"verb_embeddings": torch.randn(3, 512), **dict(meta, embed_dim=512)}, tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match="embed_dim"):
        HOICLIP(vocab, config=tiny_config(), weights=WeightSources(verb_embeddings=str(tmp_path / "wide.pt")))
    # an official-style file (plain tensor, no metadata) loads with a warning; only its shape is checked
    torch.save(emb, tmp_path / "official.pth")
    with caplog.at_level(logging.WARNING, logger="hoiclip_lightning.models.heads"):
        model = HOICLIP(vocab, config=tiny_config(),
                        weights=WeightSources(verb_embeddings=str(tmp_path / "official.pth")))
    assert "without metadata" in caplog.text
    torch.testing.assert_close(model.verb_projection.weight, emb)


def test_saved_file_round_trips_through_the_loader(crop_world, tmp_path):
    result = compute_verb_embeddings(datamodule(crop_world), StubCLIP(), progress=False, device="cpu")
    path = result.save(tmp_path / "sub" / "verbs.pt")
    vocab = HOIVocabulary.from_dict(WORLD_VOCAB)
    loaded = load_verb_embeddings(path, 3, 3, vocabulary=vocab, clip_model="stub", clip_pretrained=None)
    torch.testing.assert_close(loaded, result.embeddings)
    stored = torch.load(path, weights_only=True)
    assert stored["dataset_root"] == str(crop_world.resolve()) and stored["vocabulary"]["verbs"] == vocab.verbs


# ---------------------------------------------------------------------- prompt cache
@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    torch.save(CLIPEncoder("hoiclip-tiny", pretrained=None).model.state_dict(), path)
    return path


def counting(clip: CLIPEncoder) -> list[int]:
    calls = [0]
    original = clip.encode_text

    def wrapped(prompts, batch_size=256):
        calls[0] += 1
        return original(prompts, batch_size)

    clip.encode_text = wrapped  # type: ignore[method-assign]
    return calls


def test_prompt_cache_hit_and_invalidation(tiny_weights, tmp_path):
    clip = CLIPEncoder("hoiclip-tiny", pretrained=str(tiny_weights))
    calls = counting(clip)
    prompts = ["a photo of a person holding a cup", "a photo of a cup"]
    first = encode_prompts(clip, prompts, cache_dir=tmp_path)
    assert calls[0] == 1 and len(list((tmp_path / "prompt_embeddings").glob("*.pt"))) == 1
    second = encode_prompts(clip, prompts, cache_dir=tmp_path)
    assert calls[0] == 1  # served from disk
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(first, clip.model.encode_text(clip.tokenizer(prompts)).float())

    encode_prompts(clip, prompts + ["a photo of nothing"], cache_dir=tmp_path)  # other prompts
    assert calls[0] == 2
    encode_prompts(clip, prompts, templates=["a picture of {}"], cache_dir=tmp_path)  # other templates
    assert calls[0] == 3
    with torch.no_grad():  # other weights (e.g. a fine-tuned or checkpoint-loaded CLIP)
        clip.model.token_embedding.weight.mul_(1.5)
    encode_prompts(clip, prompts, cache_dir=tmp_path)
    assert calls[0] == 4
    other_model = CLIPEncoder("hoiclip-tiny", pretrained=str(tiny_weights))  # other weights file identity
    other_calls = counting(other_model)
    torch.save(other_model.model.state_dict(), tmp_path / "copy.pt")
    copy = CLIPEncoder("hoiclip-tiny", pretrained=str(tmp_path / "copy.pt"))
    copy_calls = counting(copy)
    encode_prompts(copy, prompts, cache_dir=tmp_path)
    assert copy_calls[0] == 1
    encode_prompts(other_model, prompts, cache_dir=tmp_path)  # same file and weights as the first call
    assert other_calls[0] == 0


def test_random_clip_is_never_cached_and_the_model_uses_the_cache(tiny_weights, tmp_path):
    random_clip = CLIPEncoder("hoiclip-tiny", pretrained=None)
    calls = counting(random_clip)
    encode_prompts(random_clip, ["a photo of a cup"], cache_dir=tmp_path)
    encode_prompts(random_clip, ["a photo of a cup"], cache_dir=tmp_path)
    assert calls[0] == 2 and not (tmp_path / "prompt_embeddings").exists()

    vocab = HOIVocabulary.from_dict(WORLD_VOCAB)
    cfg, weights = tiny_config(prompt_cache_dir=str(tmp_path)), WeightSources(clip_pretrained=str(tiny_weights))
    a = HOICLIP(vocab, config=cfg, weights=weights)
    entries = sorted((tmp_path / "prompt_embeddings").glob("*.pt"))
    assert len(entries) == 2  # HOI prompts and object prompts
    b = HOICLIP(vocab, config=cfg, weights=weights)
    torch.testing.assert_close(a.hoi_text_embeds, b.hoi_text_embeds)
    torch.testing.assert_close(a.visual_projection.weight, b.visual_projection.weight)
    assert PromptEmbeddingCache(tmp_path).folder == tmp_path / "prompt_embeddings"


def test_prompt_templates_are_averaged_after_normalisation(tmp_path):
    clip = StubCLIP()
    templates = ["a photo of {}", "a picture of {}", "{}"]
    out = encode_prompts(clip, ["a photo of a person holding a cup", "nothing here"], templates=templates,
                         cache_dir=tmp_path)
    texts = [["a photo of a person holding a cup", "a picture of a person holding a cup",
              "a person holding a cup"], ["a photo of nothing here", "a picture of nothing here", "nothing here"]]
    expected = torch.stack([F.normalize(clip.encode_text(t), dim=-1).mean(0) for t in texts])
    torch.testing.assert_close(out, expected)
    with pytest.raises(ConfigurationError, match=r"prompt_templates\[0\]"):
        encode_prompts(clip, ["x"], templates=["no placeholder"])
    # the default (None) embeds the prompts verbatim, as the reference
    torch.testing.assert_close(encode_prompts(clip, ["a photo of a cup"]), clip.encode_text(["a photo of a cup"]))


# ---------------------------------------------------------------------- open vocabulary
TOY_A = {
    "name": "toy_a",
    "objects": ["person", "cup", "bicycle"],
    "object_category_ids": [1, 47, 2],
    "verbs": ["hold", "ride", "look at", "no_interaction"],
    "verb_ids": [1, 2, 3, 4],
    "hois": [[0, 1], [1, 2], [2, 0], [2, 1], [2, 2], [3, 1]],
    "hoi_prompts": ["a photo of a person holding a cup", "a photo of a person riding a bicycle",
                    "a photo of a person looking at a person", "a photo of a person looking at a cup",
                    "a photo of a person looking at a bicycle", "a photo of a person and a cup"],
    "zero_shot_unseen": {"default": [], "toy_uc": [1, 3]},
}
# B: a new object (kite) and verb (fly), new combinations, one class of A dropped, others reordered
TOY_B = {
    "name": "toy_b",
    "objects": ["person", "kite", "cup", "bicycle"],
    "object_category_ids": [1, 38, 47, 2],
    "verbs": ["fly", "hold", "ride", "look at"],
    "verb_ids": [1, 2, 3, 4],
    "hois": [[0, 1], [1, 2], [3, 3], [1, 1], [2, 3], [3, 2], [1, 3]],
    "hoi_prompts": ["a photo of a person flying a kite", "a photo of a person holding a cup",
                    "a photo of a person looking at a bicycle", "a photo of a person holding a kite",
                    "a photo of a person riding a bicycle", "a photo of a person looking at a cup",
                    "a photo of a person holding a bicycle"],
}
# B class -> A class (same verb and object names)
SHARED = {1: 0, 2: 4, 4: 1, 5: 3}


def build_module(vocabulary: str, zero_shot: str = "default") -> HOICLIPModule:
    torch.manual_seed(0)
    return HOICLIPModule(vocabulary=vocabulary, zero_shot=zero_shot, net=tiny_config())


def pretend_trained(module: HOICLIPModule) -> None:
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in (module.model.visual_projection.weight, module.model.visual_projection.bias,
                  module.model.obj_visual_projection.weight, module.model.verb_projection.weight):
            p.add_(0.3 * torch.randn(p.shape, generator=gen))


@pytest.fixture(scope="module")
def vocab_files(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("vocabs")
    (root / "a.json").write_text(json.dumps(TOY_A))
    (root / "b.json").write_text(json.dumps(TOY_B))
    return str(root / "a.json"), str(root / "b.json")


def forward(module: HOICLIPModule) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 64, 64, generator=gen)
    mask = torch.zeros(2, 64, 64, dtype=torch.bool)
    clip_images = torch.randn(2, 3, 64, 64, generator=gen)
    module.eval()
    with torch.no_grad():
        return module.model(images, mask, clip_images, all_classes=True).hoi_logits


def test_set_vocabulary_rebuilds_text_classifiers_and_keeps_trained_rows(vocab_files):
    path_a, path_b = vocab_files
    module = build_module(path_a)
    pretend_trained(module)
    model = module.model
    trained_w = model.visual_projection.weight.detach().clone()
    trained_b = model.visual_projection.bias.detach().clone()
    trained_verbs = model.verb_projection.weight.detach().clone()
    trained_obj = model.obj_visual_projection.weight.detach().clone()
    same = forward(module)
    module.set_vocabulary(path_a)  # same vocabulary: nothing changes
    torch.testing.assert_close(forward(module), same)

    module.set_vocabulary(path_b)
    vocab_b = HOIVocabulary.from_dict(TOY_B)
    assert forward(module).shape == (2, 4, vocab_b.num_hois)
    assert module.vocabulary.name == "toy_b" and module.postprocessor.hoi_to_object.shape == (7,)
    assert module.criterion.num_obj_classes == 4
    w, b = model.visual_projection.weight, model.visual_projection.bias
    for new, old in SHARED.items():
        torch.testing.assert_close(w[new], trained_w[old])
        torch.testing.assert_close(b[new], trained_b[old])
    text = F.normalize(model.clip.encode_text(vocab_b.hoi_prompts), dim=-1)
    for new in (0, 3, 6):  # new classes: text embedding, zero bias
        torch.testing.assert_close(w[new], text[new])
        assert b[new] == 0
    torch.testing.assert_close(model.hoi_text_embeds, text)
    for new_v, old_v in ((1, 0), (2, 1), (3, 2)):
        torch.testing.assert_close(model.verb_projection.weight[new_v], trained_verbs[old_v])
    for new_o, old_o in ((0, 0), (2, 1), (3, 2), (4, 3)):  # person, cup, bicycle, "nothing"
        torch.testing.assert_close(model.obj_visual_projection.weight[new_o], trained_obj[old_o])
    torch.testing.assert_close(model.verb2hoi_proj_eval, vocab_b.verb_to_hoi_matrix())
    assert not model.visual_projection.weight.requires_grad  # frozen like the paper's text classifier
    assert model.verb_projection.weight.requires_grad


def save_checkpoint(module: HOICLIPModule, path: Path, hook: bool = True) -> None:
    ckpt = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    if hook:
        module.on_save_checkpoint(ckpt)
    else:  # a checkpoint written before the vocabulary spec and split were recorded
        ckpt["hoiclip_vocabulary"] = module.vocabulary.to_dict()
    torch.save(ckpt, path)


@pytest.mark.parametrize("hook", [True, False], ids=["current", "older"])
def test_load_from_checkpoint_with_another_vocabulary(vocab_files, tmp_path, hook):
    path_a, path_b = vocab_files
    module = build_module(path_a, zero_shot="toy_uc")  # zero-shot A: 4 training classes + an eval head
    pretend_trained(module)
    save_checkpoint(module, tmp_path / "a.ckpt", hook)
    trained_w = module.model.visual_projection.weight.detach().clone()  # rows: A classes 0, 2, 4, 5

    loaded = HOICLIPModule.load_from_checkpoint(tmp_path / "a.ckpt", vocabulary=path_b, zero_shot="default")
    assert loaded.vocabulary.name == "toy_b" and loaded.model.eval_visual_projection is None
    assert forward(loaded).shape == (2, 4, 7)
    w = loaded.model.visual_projection.weight
    torch.testing.assert_close(w[2], trained_w[2])  # look at bicycle = A class 4 (train row 2)
    torch.testing.assert_close(w[1], trained_w[0])  # hold cup = A class 0 (train row 0)
    text = F.normalize(loaded.model.clip.encode_text(TOY_B["hoi_prompts"]), dim=-1)
    torch.testing.assert_close(w[4], text[4])  # ride bicycle: unseen in A's training head -> text
    torch.testing.assert_close(loaded.model.backbone.state_dict()["body.conv1.weight"],
                               module.model.backbone.state_dict()["body.conv1.weight"])

    # without a vocabulary request the checkpoint's own label space is used
    again = HOICLIPModule.load_from_checkpoint(tmp_path / "a.ckpt")
    torch.testing.assert_close(again.model.visual_projection.weight, trained_w)


def test_vocabulary_set_in_python_travels_with_the_checkpoint(vocab_files, tmp_path):
    path_a, _ = vocab_files
    module = build_module(path_a)
    module.set_vocabulary(HOIVocabulary.from_dict(TOY_B))  # an instance: the hparams keep the spec of A
    pretend_trained(module)
    save_checkpoint(module, tmp_path / "b.ckpt")
    loaded = HOICLIPModule.load_from_checkpoint(tmp_path / "b.ckpt")
    assert loaded.vocabulary.name == "toy_b"
    torch.testing.assert_close(loaded.model.visual_projection.weight, module.model.visual_projection.weight)
    torch.testing.assert_close(forward(loaded), forward(module))
