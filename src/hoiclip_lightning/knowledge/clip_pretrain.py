"""Contrastive image-caption pretraining of a small CLIP (``hoiclip clip-pretrain``) and its zero-shot check.

A randomly initialised CLIP carries no knowledge (its prompt embeddings are nearly parallel), so there is
nothing for HOICLIP to transfer. This module trains one of the library's small open_clip architectures
(``hoiclip-small`` by default, :mod:`~hoiclip_lightning.models.clip_encoder`) on image-caption pairs with
open_clip's ``ClipLoss``, in a Lightning loop, and writes a CLIP weights file
(:mod:`~hoiclip_lightning.models.clip_weights`) that ``net.clip_model`` + ``weights.clip_pretrained: PATH`` load
wherever a CLIP is built.

Training pairs (:class:`CaptionedView`, all resized once to the CLIP input and held in memory as uint8):

* a **synthetic pretraining world** rendered with its own seed (``synthetic`` images; its validation split
  is the default held-out set of the zero-shot check, so no checked image is ever trained on);
* **HOI dataset roots** in the HICO-DET layout (only their *training* split): each whole image with its
  caption (``captions.json`` when present, else the prompts of its HOI classes), and each annotated
  (person, object) pair's union crop captioned with the prompts of its HOI classes;
* **JSON-lines files** (one ``{"image": path, "caption": text}`` per line; paths relative to the file)
  and **folders** of images with a same-named ``.txt`` caption, for a user's own domain.

Zero-shot check (:func:`zero_shot_check`): held-out pair crops and whole images are classified against the
vocabulary's HOI prompts; reported are top-1 / top-5 HOI accuracy (a prediction counts when it is one of
the sample's HOI classes), and verb-only / object-only accuracy from the HOI probabilities marginalised
per verb and per object, each next to the accuracy of a uniform random guess (chance).

Example:
    >>> result = pretrain_clip("data/clip/hoiclip_small.pt", synthetic=3000, max_steps=500)  # doctest: +SKIP
    >>> CLIPEncoder("hoiclip-small", "data/clip/hoiclip_small.pt")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..data.transforms import CLIP_MEAN, CLIP_STD
from ..errors import ConfigurationError, DatasetNotFoundError
from ..vocabulary import HOIVocabulary

log = logging.getLogger(__name__)

__all__ = [
    "CLIPPretrainModule",
    "CaptionedView",
    "PretrainResult",
    "ZeroShotResult",
    "ZeroShotSet",
    "collect_views",
    "load_zero_shot_set",
    "pretrain_clip",
    "zero_shot_check",
    "zero_shot_scores",
]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_HOI_SPLITS = {"train": ("trainval_hico.json", "images/train2015"), "val": ("val_hico.json", "images/val2015"),
               "test": ("test_hico.json", "images/test2015")}
EvalSplit = Literal["val", "test"]


# ---------------------------------------------------------------------- training pairs
@dataclass
class CaptionedView:
    """One training pair: an image (or a region of it) and its caption.

    Attributes:
        path: image file.
        caption: text.
        box: ``(x1, y1, x2, y2)`` pixels of the region, or ``None`` for the whole image.
    """

    path: Path
    caption: str
    box: tuple[float, float, float, float] | None = None


def _prompt_body(prompt: str) -> str:
    from ..models.prompt_embeddings import prompt_body

    return prompt_body(prompt)


def _pair_caption(vocab: HOIVocabulary, hoi_ids: Sequence[int]) -> str:
    """Caption of a (person, object) pair: the prompts of its HOI classes, the first one whole."""
    prompts = [vocab.hoi_prompts[c] for c in sorted(set(hoi_ids))]
    return " and ".join([prompts[0]] + [_prompt_body(p) for p in prompts[1:]])


def _with_prefix(caption: str) -> str:
    """The caption in the prompts' style (``"a photo of ..."``), so that crops and whole images share it and the
    prefix cannot tell the two kinds of view apart."""
    from ..models.prompt_embeddings import PROMPT_PREFIX

    return caption if caption.lower().startswith(PROMPT_PREFIX) else PROMPT_PREFIX + caption


def _hoi_root_vocabulary(root: Path) -> HOIVocabulary:
    custom = root / "vocabulary.json"
    return HOIVocabulary.resolve(str(custom) if custom.is_file() else "hico_det")


def _hoi_records(root: Path, split: str, vocab: HOIVocabulary) -> list[Any]:
    from ..data.formats import load_annotations

    file_name, image_dir = _HOI_SPLITS[split]
    for folder in (root / "annotations", root):
        if (folder / file_name).is_file():
            return load_annotations(folder / file_name, vocab, root / image_dir, "hico_det", "skip",
                                    check_images=True).records
    raise DatasetNotFoundError(f"{root}: no '{split}' annotation file 'annotations/{file_name}'")


def _pairs(record: Any) -> dict[tuple[int, int], list[int]]:
    """(subject box, object box) -> HOI classes of one record (roles without object use the person box)."""
    out: dict[tuple[int, int], list[int]] = {}
    for sub, obj, _verb, cls in np.asarray(record.hois).reshape(-1, 4).tolist():
        out.setdefault((int(sub), int(obj)), []).append(int(cls))
    return out


def _union_box(record: Any, sub: int, obj: int) -> tuple[float, float, float, float]:
    boxes = np.asarray(record.boxes, dtype=np.float64).reshape(-1, 4)
    hb = boxes[sub]
    ob = boxes[obj] if obj >= 0 else hb
    return (float(min(hb[0], ob[0])), float(min(hb[1], ob[1])), float(max(hb[2], ob[2])), float(max(hb[3], ob[3])))


def views_from_hoi_root(root: str | Path, pair_crops: bool = True, whole_images: bool = True) -> list[CaptionedView]:
    """Training pairs of the *training* split of a HICO-DET-layout root (see the module docstring)."""
    root = Path(root)
    vocab = _hoi_root_vocabulary(root)
    captions_file = root / "captions.json"
    captions = json.loads(captions_file.read_text()) if captions_file.is_file() else {}
    views = []
    for record in _hoi_records(root, "train", vocab):
        pairs = _pairs(record)
        if whole_images:
            caption = captions.get(record.file_name)
            if caption is None and pairs:
                caption = " and ".join(_prompt_body(_pair_caption(vocab, ids)) for ids in pairs.values())
            if caption:
                views.append(CaptionedView(record.path, _with_prefix(caption)))
        if pair_crops:
            views.extend(CaptionedView(record.path, _pair_caption(vocab, ids), _union_box(record, s, o))
                         for (s, o), ids in pairs.items())
    return views


def views_from_jsonl(path: str | Path) -> list[CaptionedView]:
    """Pairs of a JSON-lines file: one ``{"image": path, "caption": text}`` per line (relative to the file)."""
    path = Path(path)
    views = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            image, caption = row["image"], row["caption"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ConfigurationError(f"{path}: line {i + 1} must be a JSON object with 'image' and 'caption' "
                                     f"({err})") from err
        image_path = Path(image) if Path(image).is_absolute() else path.parent / image
        if not image_path.is_file():
            raise DatasetNotFoundError(f"{path}: line {i + 1}: image file not found: {image_path}")
        views.append(CaptionedView(image_path, str(caption)))
    return views


def views_from_folder(folder: str | Path) -> list[CaptionedView]:
    """Pairs of a folder: every image with a same-named ``.txt`` caption beside it (others are skipped)."""
    folder = Path(folder)
    views = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in _IMAGE_SUFFIXES and p.with_suffix(".txt").is_file():
            views.append(CaptionedView(p, p.with_suffix(".txt").read_text().strip()))
    return views


def collect_views(source: str | Path, pair_crops: bool = True, whole_images: bool = True) -> list[CaptionedView]:
    """Training pairs of one source: a HICO-DET-layout root, a ``.jsonl`` file or an image + ``.txt`` folder."""
    path = Path(source)
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        views = views_from_jsonl(path)
    elif path.is_dir() and any((path / sub / _HOI_SPLITS["train"][0]).is_file() for sub in ("annotations", ".")):
        views = views_from_hoi_root(path, pair_crops, whole_images)
    elif path.is_dir():
        views = views_from_folder(path)
    else:
        raise DatasetNotFoundError(f"pretraining data {source!r} not found (expected a HICO-DET-layout root, a "
                                   "JSON-lines file or a folder of images with .txt captions)")
    if not views:
        raise DatasetNotFoundError(f"pretraining data {source!r} holds no image-caption pair")
    return views


def render_views(views: Sequence[CaptionedView], size: int) -> Tensor:
    """``[N, 3, size, size]`` uint8: each view cropped to its box, short side resized (bicubic), centre-cropped."""
    from ..data.datasets import load_image

    out = torch.empty(len(views), 3, size, size, dtype=torch.uint8)
    cache: tuple[Path, Image.Image] | None = None
    for i, view in enumerate(views):
        if cache is None or cache[0] != view.path:
            cache = (view.path, load_image(view.path))
        image = cache[1]
        if view.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in view.box)
            image = image.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
        image = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
        out[i] = TF.pil_to_tensor(TF.center_crop(image, [size, size]))
    return out


def normalize_views(images: Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> Tensor:
    """uint8 ``[N, 3, S, S]`` -> float, normalised with the CLIP mean/std (as the data pipeline's CLIP view)."""
    x = images.float().div_(255.0)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


# ---------------------------------------------------------------------- zero-shot check
@dataclass
class ZeroShotSet:
    """Held-out samples of the zero-shot check.

    Attributes:
        images: ``[N, 3, S, S]`` uint8 views.
        hois: per sample, its HOI classes (at least one).
        kinds: per sample, ``"pair"`` (union crop of one annotated pair) or ``"image"`` (whole image).
        source: where they come from (annotation file).
    """

    images: Tensor
    hois: list[list[int]]
    kinds: list[str]
    source: str = ""


def load_zero_shot_set(root: str | Path, split: EvalSplit, size: int, pair_crops: bool = True,
                       whole_images: bool = True, max_images: int | None = None) -> tuple[ZeroShotSet, HOIVocabulary]:
    """The pair crops and whole images of a held-out split (``val`` or ``test``) of a HICO-DET-layout root."""
    root = Path(root)
    vocab = _hoi_root_vocabulary(root)
    records = _hoi_records(root, split, vocab)[:max_images]
    views, hois, kinds = [], [], []
    for record in records:
        pairs = _pairs(record)
        if not pairs:
            continue
        if whole_images:
            views.append(CaptionedView(record.path, ""))
            hois.append(sorted({c for ids in pairs.values() for c in ids}))
            kinds.append("image")
        if pair_crops:
            for (s, o), ids in pairs.items():
                views.append(CaptionedView(record.path, "", _union_box(record, s, o)))
                hois.append(sorted(set(ids)))
                kinds.append("pair")
    if not views:
        raise DatasetNotFoundError(f"{root}: the {split} split has no annotated HOI for the zero-shot check")
    return ZeroShotSet(render_views(views, size), hois, kinds, f"{root}/{_HOI_SPLITS[split][0]}"), vocab


@dataclass
class ZeroShotResult:
    """Zero-shot accuracies of one kind of sample (``pair`` / ``image``), each with its chance level.

    Attributes:
        kind: ``pair`` or ``image``.
        n: samples.
        top1, top5: HOI accuracy (the prediction is one of the sample's classes).
        verb, obj: accuracy of the verb / object marginal of the HOI probabilities.
        chance_top1, chance_top5, chance_verb, chance_obj: the same for a uniform random guess.
    """

    kind: str
    n: int
    top1: float
    top5: float
    verb: float
    obj: float
    chance_top1: float
    chance_top5: float
    chance_verb: float
    chance_obj: float

    def row(self) -> str:
        return (f"| {self.kind:<6} | {self.n:>5} | {self.top1:.3f} ({self.chance_top1:.3f}) | "
                f"{self.top5:.3f} ({self.chance_top5:.3f}) | {self.verb:.3f} ({self.chance_verb:.3f}) | "
                f"{self.obj:.3f} ({self.chance_obj:.3f}) |")


def format_zero_shot(results: Sequence[ZeroShotResult], title: str = "") -> str:
    """A table of :class:`ZeroShotResult` rows (accuracy, chance in parentheses)."""
    lines = [title] if title else []
    lines += ["| kind   |     n | top-1 (chance) | top-5 (chance) | verb (chance)  | object (chance) |",
              "|--------|------:|----------------|----------------|----------------|-----------------|"]
    lines += [r.row() for r in results]
    return "\n".join(lines)


def zero_shot_scores(image_features: Tensor, text_features: Tensor, vocabulary: HOIVocabulary,
                     hois: Sequence[Sequence[int]], kind: str = "pair", temperature: float = 100.0) -> ZeroShotResult:
    """Zero-shot accuracies from embeddings.

    Args:
        image_features: ``[N, E]`` image embeddings.
        text_features: ``[C_hoi, E]`` embeddings of the vocabulary's HOI prompts.
        vocabulary: the label space (``hois`` gives each class's verb and object).
        hois: per sample, its HOI classes (non-empty).
        kind: label of the result.
        temperature: scale of the cosine similarities before the softmax whose marginals give verb / object.

    Returns:
        a :class:`ZeroShotResult`.
    """
    n, c = image_features.shape[0], text_features.shape[0]
    if n != len(hois) or n == 0:
        raise ConfigurationError(f"zero_shot_scores: {n} image features for {len(hois)} label sets")
    if c != vocabulary.num_hois:
        raise ConfigurationError(f"zero_shot_scores: {c} text features for {vocabulary.num_hois} HOI classes")
    sim = F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).T  # [N, C]
    probs = (temperature * sim).softmax(dim=-1)
    verbs = torch.as_tensor([v for v, _ in vocabulary.hois])
    objs = torch.as_tensor([o for _, o in vocabulary.hois])
    verb_ids, obj_ids = sorted(set(verbs.tolist())), sorted(set(objs.tolist()))
    verb_marg = torch.zeros(n, vocabulary.num_verbs).index_add_(1, verbs, probs)
    obj_marg = torch.zeros(n, vocabulary.num_objects).index_add_(1, objs, probs)
    top5 = sim.topk(min(5, c), dim=-1).indices
    top1 = top5[:, 0]
    v_pred, o_pred = verb_marg.argmax(-1), obj_marg.argmax(-1)
    hit1 = hit5 = hit_v = hit_o = 0.0
    ch1 = ch5 = ch_v = ch_o = 0.0
    k = min(5, c)
    for i, labels in enumerate(hois):
        labels = set(int(x) for x in labels)
        lv = {vocabulary.hois[x][0] for x in labels}
        lo = {vocabulary.hois[x][1] for x in labels}
        hit1 += int(top1[i]) in labels
        hit5 += bool(labels & set(top5[i].tolist()))
        hit_v += int(v_pred[i]) in lv
        hit_o += int(o_pred[i]) in lo
        ch1 += len(labels) / c
        ch5 += 1.0 - math.comb(c - len(labels), k) / math.comb(c, k)
        ch_v += len(lv) / len(verb_ids)
        ch_o += len(lo) / len(obj_ids)
    return ZeroShotResult(kind, n, hit1 / n, hit5 / n, hit_v / n, hit_o / n, ch1 / n, ch5 / n, ch_v / n, ch_o / n)


@torch.no_grad()
def zero_shot_check(model: torch.nn.Module, tokenizer: Any, samples: ZeroShotSet, vocabulary: HOIVocabulary,
                    batch_size: int = 256) -> list[ZeroShotResult]:
    """Classify held-out samples against the HOI prompts with an open_clip model (one result per kind)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    text = model.encode_text(tokenizer(list(vocabulary.hoi_prompts)).to(device)).float().cpu()
    feats = torch.cat([model.encode_image(normalize_views(chunk.to(device))).float().cpu()
                       for chunk in samples.images.split(batch_size)])
    model.train(was_training)
    results = []
    for kind in ("pair", "image"):
        idx = [i for i, k in enumerate(samples.kinds) if k == kind]
        if idx:
            results.append(zero_shot_scores(feats[idx], text, vocabulary, [samples.hois[i] for i in idx], kind))
    return results


# ---------------------------------------------------------------------- Lightning module
class CLIPPretrainModule(L.LightningModule):
    """Contrastive (``open_clip.ClipLoss``) training of an open_clip architecture from random weights.

    Batches are ``(images [B, 3, S, S] uint8, tokens [B, context] long)``; images get a random horizontal
    flip and the CLIP normalisation on the device. AdamW (no weight decay on gains, biases, embeddings of
    positions and the logit scale), linear warm-up then cosine decay to ``max_steps``; the logit scale is
    clamped to ``ln 100`` as in CLIP.

    With a :class:`ZeroShotSet`, each validation run logs ``val/zs_{pair,image}_{top1,top5,verb,obj}``.

    Args:
        clip_model: open_clip architecture (registered; ``hoiclip-small``).
        lr: peak learning rate.
        weight_decay: AdamW weight decay of the matrices.
        warmup_steps: linear warm-up steps.
        max_steps: length of the cosine schedule.
        flip: random horizontal flip (captions of the synthetic world name no side).
    """

    def __init__(self, clip_model: str = "hoiclip-small", lr: float = 5e-4, weight_decay: float = 0.1,
                 warmup_steps: int = 50, max_steps: int = 600, flip: bool = True) -> None:
        super().__init__()
        import open_clip

        from ..models.clip_encoder import _quiet_random_init, register_tiny_clip

        register_tiny_clip()
        self.save_hyperparameters()
        with _quiet_random_init():
            self.model = open_clip.create_model(clip_model, pretrained=None, output_dict=True)
        self.tokenizer = open_clip.get_tokenizer(clip_model)
        self.loss = open_clip.ClipLoss()
        self.zero_shot: tuple[ZeroShotSet, HOIVocabulary] | None = None
        self.zero_shot_history: list[dict[str, float]] = []

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, tokens = batch
        x = normalize_views(images)
        if self.hparams.flip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        out = self.model(x, tokens)
        loss = self.loss(out["image_features"], out["text_features"], out["logit_scale"])
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        self.log("train/logit_scale", out["logit_scale"].detach(), batch_size=x.shape[0])
        return loss

    def on_train_batch_end(self, *args: Any) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100.0))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Validation is the zero-shot check of :meth:`on_validation_epoch_end` (the loader is a stub)."""

    def on_validation_epoch_end(self) -> None:
        if self.zero_shot is None or self.trainer.sanity_checking:
            return
        samples, vocab = self.zero_shot
        results = zero_shot_check(self.model, self.tokenizer, samples, vocab)
        metrics = {f"val/zs_{r.kind}_{name}": getattr(r, name) for r in results
                   for name in ("top1", "top5", "verb", "obj")}
        self.log_dict(metrics, batch_size=1)
        self.zero_shot_history.append({"step": float(self.global_step), **metrics})

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            plain = p.ndim < 2 or "logit_scale" in name or "positional_embedding" in name or "token_embedding" in name
            (no_decay if plain else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr, betas=(0.9, 0.98), eps=1e-6)
        warm, total = max(1, hp.warmup_steps), max(hp.max_steps, hp.warmup_steps + 1)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / (total - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# ---------------------------------------------------------------------- driver
@dataclass
class PretrainResult:
    """What :func:`pretrain_clip` did.

    Attributes:
        path: the CLIP weights file.
        clip_model: architecture.
        steps: optimiser steps.
        seconds: wall time of the training loop.
        num_pairs: training pairs.
        zero_shot: final zero-shot results (empty without a held-out set).
        history: the zero-shot figures at each validation (step and ``val/zs_*`` keys).
        module: the trained module (its ``model`` is what the file holds).
    """

    path: Path
    clip_model: str
    steps: int
    seconds: float
    num_pairs: int
    zero_shot: list[ZeroShotResult] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    module: CLIPPretrainModule | None = None


def pretrain_clip(
    out: str,
    data: list[str] | None = None,
    synthetic: int = 3000,
    synthetic_seed: int = 1000,
    synthetic_dir: str | None = None,
    synthetic_image_size: int = 128,
    synthetic_easy: bool = True,
    synthetic_val: int = 200,
    eval_data: str | None = None,
    eval_split: EvalSplit = "val",
    clip_model: str = "hoiclip-small",
    pair_crops: bool = True,
    whole_images: bool = True,
    max_steps: int = 600,
    max_minutes: float | None = 9.0,
    batch_size: int = 128,
    lr: float = 5e-4,
    weight_decay: float = 0.1,
    warmup_steps: int = 50,
    val_every_n_steps: int = 100,
    seed: int = 0,
    accelerator: str = "auto",
    precision: str | None = None,
    num_threads: int | None = None,
    run_dir: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> PretrainResult:
    """Pretrain a small CLIP contrastively and write its weights file.

    Args:
        out: the CLIP weights file to write (``.pt``); ``weights.clip_pretrained: <out>`` with ``net.clip_model``
            loads it.
        data: training sources: HICO-DET-layout roots (their training split only), ``.jsonl`` files
            (``{"image", "caption"}`` per line) or folders of images with ``.txt`` captions.
        synthetic: images of a synthetic pretraining world (0: none), rendered once into ``synthetic_dir``.
        synthetic_seed: seed of that world (its images differ from those of any other seed).
        synthetic_dir: where it is written (``None``: ``<out without suffix>_data``); an existing world
            there is reused.
        synthetic_image_size: side of its images in pixels.
        synthetic_easy: one person-object pair per image on a plain background (the quickstart's world);
            ``False``: the full world (up to 3 people, distractors, clutter).
        synthetic_val: held-out images of that world (its validation split), never trained on: the
            zero-shot check's default held-out set.
        eval_data: HICO-DET-layout root whose ``eval_split`` is the zero-shot check's held-out set
            (``None``: the synthetic world's validation split, when there is one).
        eval_split: ``val`` or ``test``.
        clip_model: open_clip architecture to train (``hoiclip-small``; ``hoiclip-tiny`` for tests).
        pair_crops: train on the union crop of each annotated pair (HOI roots), captioned with its prompts.
        whole_images: train on whole images with their captions (HOI roots).
        max_steps: optimiser steps (and length of the cosine schedule).
        max_minutes: wall-clock cap of the training loop (``None``: none).
        batch_size: pairs per step (the contrastive batch).
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        val_every_n_steps: steps between zero-shot checks during training (logged as ``val/zs_*``).
        seed: seed of initialisation, shuffling and augmentation.
        accelerator: Lightning accelerator (``auto``: a GPU when there is one).
        precision: Lightning precision (``None``: ``bf16-mixed`` on a GPU with bf16, else ``32-true``).
        num_threads: torch CPU threads (``None``: torch's default).
        run_dir: Lightning's folder for logs (CSV) and checkpoints (``None``: ``<out without suffix>_run``).
        progress: show the progress bar.
        overwrite: replace an existing ``out``.

    Returns:
        a :class:`PretrainResult`.
    """
    from .. import __version__
    from ..models.clip_weights import save_clip_weights

    out_path = Path(out)
    if out_path.exists() and not overwrite:
        raise ConfigurationError(f"{out_path} exists; pass overwrite=True (--overwrite true) to replace it")
    if synthetic < 0 or max_steps < 1 or batch_size < 2:
        raise ConfigurationError(f"need synthetic >= 0, max_steps >= 1 and batch_size >= 2; got {synthetic}, "
                                 f"{max_steps}, {batch_size}")
    if eval_split not in ("val", "test"):
        raise ConfigurationError(f"eval_split {eval_split!r} is not supported; accepted: ('val', 'test')")
    if not (pair_crops or whole_images):
        raise ConfigurationError("pair_crops and whole_images cannot both be false")
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    L.seed_everything(seed, verbose=False)
    stem = out_path.with_suffix("")
    sources = [str(s) for s in (data or [])]
    if synthetic > 0:
        from ..data.synthetic import EASY_WORLD, generate_synthetic_dataset

        world = Path(synthetic_dir) if synthetic_dir else Path(f"{stem}_data")
        marker = world / "pretrain_world.json"
        spec = {"seed": synthetic_seed, "num_train": synthetic, "num_val": synthetic_val,
                "image_size": synthetic_image_size, "easy": synthetic_easy}
        if not (marker.is_file() and json.loads(marker.read_text()) == spec):
            t0 = time.perf_counter()
            extra = EASY_WORLD if synthetic_easy else {}
            generate_synthetic_dataset(world, seed=synthetic_seed, num_train=synthetic, num_test=0,
                                       num_val=synthetic_val, image_size=synthetic_image_size, overwrite=True,
                                       **extra)
            marker.write_text(json.dumps(spec) + "\n")
            log.info("synthetic pretraining world (%d + %d val images) rendered in %.1f s at %s", synthetic,
                     synthetic_val, time.perf_counter() - t0, world)
        sources.insert(0, str(world))
        if eval_data is None and synthetic_val > 0:
            eval_data = str(world)
    if not sources:
        raise ConfigurationError("no training data: give data sources or synthetic > 0")

    module = CLIPPretrainModule(clip_model, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
                                max_steps=max_steps)
    size = module.image_size
    t0 = time.perf_counter()
    views = [v for s in sources for v in collect_views(s, pair_crops, whole_images)]
    images = render_views(views, size)
    tokens = module.tokenizer([v.caption for v in views])
    log.info("%d training pairs (%d distinct captions) from %s, %d px, prepared in %.1f s", len(views),
             len({v.caption for v in views}), sources, size, time.perf_counter() - t0)
    if len(views) < batch_size:
        raise ConfigurationError(f"{len(views)} training pairs is fewer than batch_size {batch_size}")
    val_loader = None
    if eval_data is not None:
        module.zero_shot = load_zero_shot_set(eval_data, eval_split, size)
        val_loader = DataLoader(TensorDataset(torch.zeros(1)), batch_size=1)
        log.info("zero-shot check on %d held-out samples of %s", len(module.zero_shot[0].kinds),
                 module.zero_shot[0].source)

    loader = DataLoader(TensorDataset(images, tokens), batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=0)
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if precision is None:
        precision = "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"
    root = Path(run_dir) if run_dir else Path(f"{stem}_run")
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, precision=precision, max_steps=max_steps,
        max_time={"minutes": max_minutes} if max_minutes else None,
        val_check_interval=min(val_every_n_steps, len(loader)) if val_loader is not None else None,
        check_val_every_n_epoch=None if val_loader is not None else 1,
        limit_val_batches=1 if val_loader is not None else 0, num_sanity_val_steps=0,
        default_root_dir=str(root), logger=L.pytorch.loggers.CSVLogger(str(root), name="csv"),
        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=str(root / "checkpoints"), save_last=True,
                                                       save_top_k=0)],
        enable_progress_bar=progress, enable_model_summary=False, log_every_n_steps=10,
    )
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=val_loader)
    seconds = time.perf_counter() - t0
    module = module.cpu().float()
    results: list[ZeroShotResult] = []
    if module.zero_shot is not None:
        results = zero_shot_check(module.model, module.tokenizer, *module.zero_shot)
    import open_clip

    metadata = {
        "created_by": "hoiclip clip-pretrain",
        "hoiclip_lightning_version": __version__,
        "open_clip_version": open_clip.__version__,
        "torch_version": str(torch.__version__),
        "sources": sources,
        "num_pairs": len(views),
        "steps": int(trainer.global_step),
        "seconds": round(seconds, 1),
        "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
        "precision": precision,
        "zero_shot_source": module.zero_shot[0].source if module.zero_shot else None,
        "zero_shot": [asdict(r) for r in results],
    }
    save_clip_weights(out_path, module.model, clip_model, metadata)
    return PretrainResult(out_path, clip_model, int(trainer.global_step), seconds, len(views), results,
                          list(module.zero_shot_history), module)
