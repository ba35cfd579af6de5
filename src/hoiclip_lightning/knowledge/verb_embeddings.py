"""Verb representations by visual semantic arithmetic (the HOICLIP verb classifier initialisation).

For every training HOI annotation (human box h, object box o, union box u = the smallest box holding
both, all in original image pixels, clamped to the image) three crops of the raw image are embedded with
CLIP's image tower (projected global embedding, not normalised; each crop resized on its short side to the
CLIP input size with bicubic interpolation, centre-cropped and normalised with the CLIP mean/std):

* object accumulator ``Obj[C_obj, E]``: the person row gets, per image, the mean of the image's human-crop
  features; the row of the annotated object class gets each object-crop feature;
* HOI accumulator ``Hoi[C_hoi, E]``: the row of the annotated HOI class gets each union-crop feature.

After the pass: ``d_c = Hoi_c/‖Hoi_c‖ − Obj_o(c)/‖Obj_o(c)‖`` for every HOI class c (union minus object),
``verb_v = mean of d_c over the HOI classes c of verb v`` (unweighted by instance counts), and finally
``verb_v / ‖verb_v‖``. This is the arithmetic of the reference (§4 of the design notes); the differences:

* **Only training classes.** By default only the HOI annotations of the datamodule's training split are
  used: its ``train_fraction`` subset and, for a zero-shot split, only seen classes (pairs carrying an
  unseen class are dropped as in training). ``include_unseen=True`` keeps the unseen classes (the
  reference's file is computed on all 600 classes and reused by its zero-shot models, quirk V5); combine
  it with ``train_fraction: 1`` to reproduce the reference exactly.
* **Classes and verbs without a training instance.** The reference divides a zero accumulator by its zero
  norm (0/0): such a class would make its verb's row NaN (it never happens in the reference's setting, where
  every class has instances). Here a HOI class without instance is left out of its verb's mean (the mean
  runs over the verb's classes that have instances), and a verb none of whose classes has an instance
  gets, with ``missing_verbs="zero"`` (default), a zero row — its verb term adds nothing to the HOI logits
  until the classifier is fine-tuned — or, with ``missing_verbs="text"``, its text-derived representation
  (HOI prompt minus object prompt, :func:`~hoiclip_lightning.models.heads.verb_embeddings_from_text`).
  Both cases are listed in the file (``hois_without_instance``, ``verbs_without_instance``).
* **Every annotation counts.** The reference's in-place indexed addition keeps one instance per class per
  image (quirk V2); ``reference_duplicates=True`` reproduces that (the first instance is kept). The
  reference also runs the random training augmentation only to decide which annotations survive it; here
  every annotation whose boxes are valid counts (deterministic); the first ``max_boxes`` boxes rule of the
  datamodule is applied.
* **Roles without object** (V-COCO, ``object_id = -1``): the union box is the human box, no object
  feature is accumulated, and the class subtracts the person representation. Rows are always normalised
  (the official ``vcoco_verb.pth`` is not, quirk V6).

Example:
    >>> result = compute_verb_embeddings(datamodule, CLIPEncoder("ViT-B-32", "openai"))  # doctest: +SKIP
    >>> result.save("params/verb_hico.pt")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigurationError, DatasetNotFoundError
from ..models.heads import verb_embeddings_from_text
from ..models.prompt_embeddings import encode_prompts
from ..models.verb_embedding_file import FILE_FORMAT, FILE_VERSION, write_verb_embeddings
from ..vocabulary import HOIVocabulary

log = logging.getLogger(__name__)

MissingVerbs = Literal["zero", "text"]
_MISSING = ("zero", "text")


# ---------------------------------------------------------------------- arithmetic
def person_index(vocabulary: HOIVocabulary) -> int:
    """Object index of "person" (index 0 by the vocabulary convention when no object is named so)."""
    return vocabulary.objects.index("person") if "person" in vocabulary.objects else 0


def hoi_object_rows(vocabulary: HOIVocabulary) -> list[int]:
    """Object-accumulator row subtracted from each HOI class: its object, or person for "no object"."""
    person = person_index(vocabulary)
    return [person if o == vocabulary.no_object_index else o for _, o in vocabulary.hois]


def verb_arithmetic(
    hoi_sums: Tensor,
    obj_sums: Tensor,
    hoi_counts: Tensor,
    hois: Sequence[tuple[int, int]],
    object_rows: Sequence[int],
    num_verbs: int,
) -> tuple[Tensor, list[int]]:
    """Verb representations from accumulated crop features.

    Args:
        hoi_sums: ``[C_hoi, E]`` sum of union-crop features per HOI class.
        obj_sums: ``[C_obj, E]`` sum of object-crop features per object (person row: also human crops).
        hoi_counts: ``[C_hoi]`` instances accumulated per HOI class (0: the class is left out).
        hois: ``(verb, object)`` per HOI class.
        object_rows: ``obj_sums`` row subtracted from each HOI class (:func:`hoi_object_rows`).
        num_verbs: C_verb.

    Returns:
        ``[C_verb, E]`` float32 with unit rows, and the verbs without any class with instances (their rows
        are zero).
    """
    hoi_n = F.normalize(hoi_sums.float(), dim=-1)
    obj_n = F.normalize(obj_sums.float(), dim=-1)
    rows = torch.as_tensor(list(object_rows), dtype=torch.long, device=hoi_n.device)
    verbs = torch.as_tensor([v for v, _ in hois], dtype=torch.long, device=hoi_n.device)
    used = hoi_counts.to(hoi_n.device) > 0
    diff = hoi_n - obj_n[rows]  # [C_hoi, E]
    sums = torch.zeros(num_verbs, hoi_n.shape[1], device=hoi_n.device).index_add_(0, verbs[used], diff[used])
    counts = torch.bincount(verbs[used], minlength=num_verbs)
    mean = sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype)
    missing = (counts == 0).nonzero().flatten().tolist()
    return F.normalize(mean, dim=-1), missing


# ---------------------------------------------------------------------- crops
def clip_crop(image: Image.Image, box: Sequence[float], size: int, mean: Sequence[float],
              std: Sequence[float]) -> Tensor:
    """``[3, size, size]`` CLIP view of an image region: crop (box rounded to pixels, at least 1 px),
    bicubic resize of the short side to ``size``, centre crop, normalisation with ``mean``/``std``."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    region = image.crop((x0, y0, x1, y1))
    region = TF.resize(region, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
    region = TF.center_crop(region, [size, size])
    t = TF.to_dtype(TF.pil_to_tensor(region), torch.float32, scale=True)
    return TF.normalize(t, list(mean), list(std))


@dataclass
class PairInstances:
    """The HOI instances of one image that enter the arithmetic (n of them).

    Attributes:
        boxes: ``[n, 3, 4]`` xyxy pixels of the human, object and union crops.
        hoi: ``[n]`` HOI class.
        obj_row: ``[n]`` object-accumulator row of the object crop.
        hoi_mask: ``[n]`` bool, the union feature is added to ``Hoi``.
        obj_mask: ``[n]`` bool, the object feature is added to ``Obj`` (False for roles without object).
    """

    boxes: np.ndarray
    hoi: np.ndarray
    obj_row: np.ndarray
    hoi_mask: np.ndarray
    obj_mask: np.ndarray


def select_instances(record: Any, allowed_hois: set[int] | None, person: int, max_boxes: int | None,
                     reference_duplicates: bool = False) -> PairInstances:
    """The instances of an annotation record (``ImageRecord``) used for the arithmetic.

    Boxes beyond ``max_boxes`` and boxes without area after clamping to the image are dropped with the
    HOIs that use them; HOIs of classes outside ``allowed_hois`` (``None``: all) are dropped.
    """
    w, h = record.width, record.height
    boxes = np.asarray(record.boxes, dtype=np.float64).reshape(-1, 4).copy()
    if max_boxes is not None:
        boxes = boxes[:max_boxes]
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    n_boxes = boxes.shape[0]
    out_boxes, hois, rows, obj_ok = [], [], [], []
    for sub, obj, _verb, cls in np.asarray(record.hois).reshape(-1, 4).tolist():
        if allowed_hois is not None and cls not in allowed_hois:
            continue
        if not (0 <= sub < n_boxes and valid[sub]):
            continue
        hb = boxes[sub]
        if obj == -1:
            ob, row, has_obj = hb, person, False
        elif 0 <= obj < n_boxes and valid[obj]:
            ob, row, has_obj = boxes[obj], int(record.labels[obj]), True
        else:
            continue
        ub = np.array([min(hb[0], ob[0]), min(hb[1], ob[1]), max(hb[2], ob[2]), max(hb[3], ob[3])])
        out_boxes.append(np.stack([hb, ob, ub]))
        hois.append(cls)
        rows.append(row)
        obj_ok.append(has_obj)
    n = len(hois)
    hoi_mask = np.ones(n, dtype=bool)
    obj_mask = np.array(obj_ok, dtype=bool)
    if reference_duplicates:  # quirk V2: one instance per class per image (the first)
        seen_h: set[int] = set()
        seen_o: set[int] = set()
        for i in range(n):
            hoi_mask[i] = hois[i] not in seen_h
            seen_h.add(hois[i])
            if obj_mask[i]:
                obj_mask[i] = rows[i] not in seen_o
                seen_o.add(rows[i])
    return PairInstances(
        boxes=np.stack(out_boxes) if n else np.zeros((0, 3, 4)),
        hoi=np.asarray(hois, dtype=np.int64),
        obj_row=np.asarray(rows, dtype=np.int64),
        hoi_mask=hoi_mask,
        obj_mask=obj_mask,
    )


class PairCropDataset(Dataset):
    """Per image: the human, object and union CLIP crops of its selected HOI instances.

    Args:
        records: annotation records (``ImageRecord``: ``path``, ``width``, ``height``, ``boxes``, ``labels``,
            ``hois``).
        vocabulary: the label space.
        image_size: CLIP input size S.
        mean, std: CLIP normalisation.
        allowed_hois: HOI classes used (``None``: all).
        max_boxes: only the first ``max_boxes`` boxes of an image are used.
        reference_duplicates: keep one instance per class per image (quirk V2).

    Items: dict with ``crops`` ``[n, 3, 3, S, S]`` (human, object, union), ``hoi``, ``obj_row`` ``[n]`` long,
    ``hoi_mask``, ``obj_mask`` ``[n]`` bool, ``human_weight`` ``[n]`` (1/n: the image's human-crop mean).
    """

    def __init__(self, records: Sequence[Any], vocabulary: HOIVocabulary, image_size: int,
                 mean: Sequence[float], std: Sequence[float], allowed_hois: set[int] | None = None,
                 max_boxes: int | None = None, reference_duplicates: bool = False) -> None:
        self.records = list(records)
        self.image_size, self.mean, self.std = int(image_size), tuple(mean), tuple(std)
        person = person_index(vocabulary)
        self.instances = [select_instances(r, allowed_hois, person, max_boxes, reference_duplicates)
                          for r in self.records]

    @property
    def num_pairs(self) -> int:
        return sum(len(i.hoi) for i in self.instances)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> dict[str, Tensor]:
        inst = self.instances[idx]
        n = len(inst.hoi)
        s = self.image_size
        crops = torch.zeros(n, 3, 3, s, s)
        if n:
            from ..data.datasets import load_image

            image = load_image(self.records[idx].path)
            for i in range(n):
                for k in range(3):
                    crops[i, k] = clip_crop(image, inst.boxes[i, k], s, self.mean, self.std)
        return {
            "crops": crops,
            "hoi": torch.from_numpy(inst.hoi),
            "obj_row": torch.from_numpy(inst.obj_row),
            "hoi_mask": torch.from_numpy(inst.hoi_mask),
            "obj_mask": torch.from_numpy(inst.obj_mask),
            "human_weight": torch.full((n,), 1.0 / max(n, 1)),
        }


def collate_pairs(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Concatenate the items of :class:`PairCropDataset` along the instance axis."""
    return {k: torch.cat([it[k] for it in items]) for k in items[0]}


# ---------------------------------------------------------------------- result and file
@dataclass
class VerbEmbeddings:
    """Verb representations plus what they were computed from.

    Attributes:
        embeddings: ``[C_verb, E]`` float32 (unit rows; zero rows for verbs without instance with
            ``missing_verbs="zero"``).
        metadata: the file's metadata fields (see ``docs/knowledge.md``).
        seconds: wall time of the image pass.
    """

    embeddings: Tensor
    metadata: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def save(self, path: str | Path) -> Path:
        """Write ``{"verb_embeddings": [C_verb, E], **metadata}`` with ``torch.save`` (parents created)."""
        return write_verb_embeddings(path, self.embeddings, self.metadata)


def training_split(datamodule: Any, include_unseen: bool = False) -> tuple[list[Any], list[int] | None]:
    """Training records of a datamodule (``setup("fit")``) and the HOI classes to use.

    With ``include_unseen`` and a zero-shot split, the records come from a copy of the datamodule with
    ``zero_shot="default"`` (same fraction and seed, so the same images, but unseen HOIs kept).

    Returns:
        the records, and the allowed HOI classes (``None``: all classes).
    """
    dm = datamodule
    if include_unseen and dm.zero_shot != "default":
        hparams = dict(dm.hparams)
        hparams["zero_shot"] = "default"
        dm = type(datamodule)(**hparams)
    dm.setup("fit")
    if dm.train_dataset is None:
        raise DatasetNotFoundError(f"{dm.root}: the datamodule has no training split")
    allowed = None if include_unseen else list(datamodule.train_hoi_ids)
    return list(dm.train_dataset.records), allowed


def _encode_images(encoder: Any, images: Tensor) -> Tensor:
    out = encoder.encode_image(images) if hasattr(encoder, "encode_image") else encoder(images)
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.float()


def compute_verb_embeddings(
    datamodule: Any,
    clip: Any,
    include_unseen: bool = False,
    missing_verbs: MissingVerbs = "zero",
    reference_duplicates: bool = False,
    batch_size: int = 16,
    num_workers: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    max_crops_per_pass: int = 512,
) -> VerbEmbeddings:
    """Verb representations of a datamodule's training split by visual semantic arithmetic.

    Args:
        datamodule: a :class:`~hoiclip_lightning.data.HOIDataModule` (its ``train_fraction``, ``fraction_seed``,
            ``zero_shot`` and ``max_boxes`` are honoured).
        clip: the image encoder: a :class:`~hoiclip_lightning.models.clip_encoder.CLIPEncoder` or any module
            with ``encode_image(images [N, 3, S, S]) -> [N, E]`` (or a tuple whose first item is that), and
            attributes ``image_size`` (S), ``mean``, ``std``, ``embed_dim`` (E); ``model_name`` and
            ``pretrained`` are recorded when present. ``missing_verbs="text"`` also needs ``encode_text``.
        include_unseen: also use unseen classes of a zero-shot split (the reference's leaky behaviour).
        missing_verbs: row of a verb without training instance: ``zero`` or ``text`` (see module docstring).
        reference_duplicates: one instance per class per image, as the reference (quirk V2).
        batch_size: images per loader batch.
        num_workers: loader worker processes (image decoding and cropping); ``None``: the datamodule's
            ``num_workers`` hyper-parameter (0 when it has none).
        device: where the encoder runs; ``None``: CUDA when available, else CPU.
        progress: show a tqdm progress bar.
        max_crops_per_pass: crops per encoder forward pass.

    Returns:
        :class:`VerbEmbeddings` with ``[C_verb, E]`` embeddings and metadata.
    """
    if missing_verbs not in _MISSING:
        raise ConfigurationError(f"missing_verbs {missing_verbs!r} is not supported; accepted: {_MISSING}")
    if batch_size < 1 or max_crops_per_pass < 3:
        raise ConfigurationError("batch_size must be >= 1 and max_crops_per_pass >= 3")
    from tqdm.auto import tqdm

    vocab: HOIVocabulary = datamodule.vocabulary
    records, allowed = training_split(datamodule, include_unseen)
    hp = datamodule.hparams
    dataset = PairCropDataset(records, vocab, clip.image_size, clip.mean, clip.std,
                              allowed_hois=set(allowed) if allowed is not None else None,
                              max_boxes=hp.get("max_boxes"), reference_duplicates=reference_duplicates)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    was_training = getattr(clip, "training", False)
    if hasattr(clip, "to"):
        clip = clip.to(dev)
    if hasattr(clip, "eval"):
        clip.eval()
    embed = int(clip.embed_dim)
    person = person_index(vocab)
    hoi_sums = torch.zeros(vocab.num_hois, embed, device=dev)
    hoi_counts = torch.zeros(vocab.num_hois, dtype=torch.long, device=dev)
    obj_sums = torch.zeros(vocab.num_objects, embed, device=dev)
    if num_workers is None:
        num_workers = int(getattr(datamodule, "hparams", {}).get("num_workers", 0))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_pairs, pin_memory=dev.type == "cuda")
    log.info("verb embeddings: %d training images, %d HOI instances, on %s", len(dataset), dataset.num_pairs, dev)
    start = time.perf_counter()
    with torch.no_grad():
        for batch in tqdm(loader, desc="verb embeddings", unit="batch", disable=not progress):
            n = batch["hoi"].numel()
            if n == 0:
                continue
            crops = batch["crops"].flatten(0, 1)  # [n * 3, 3, S, S], per instance: human, object, union
            feats = torch.cat([_encode_images(clip, chunk.to(dev, non_blocking=True))
                               for chunk in crops.split(max_crops_per_pass)])
            feats = feats.view(n, 3, -1)
            f_h, f_o, f_u = feats.unbind(1)
            hoi = batch["hoi"].to(dev)
            rows = batch["obj_row"].to(dev)
            hm, om = batch["hoi_mask"].to(dev), batch["obj_mask"].to(dev)
            obj_sums[person] += (f_h * batch["human_weight"].to(dev)[:, None]).sum(0)
            obj_sums.index_add_(0, rows[om], f_o[om])
            hoi_sums.index_add_(0, hoi[hm], f_u[hm])
            hoi_counts.index_add_(0, hoi[hm], torch.ones_like(hoi[hm]))
    seconds = time.perf_counter() - start
    if hasattr(clip, "train"):
        clip.train(was_training)

    verbs, missing = verb_arithmetic(hoi_sums, obj_sums, hoi_counts, vocab.hois, hoi_object_rows(vocab),
                                     vocab.num_verbs)
    verbs = verbs.cpu()
    if missing:
        names = [vocab.verbs[v] for v in missing]
        if missing_verbs == "text":
            hoi_text = encode_prompts(clip, vocab.hoi_prompts).cpu()
            obj_text = encode_prompts(clip, vocab.object_prompts).cpu()
            text = verb_embeddings_from_text(hoi_text, obj_text, vocab.hois, vocab.num_verbs)
            verbs[missing] = text[missing]
            log.warning("%d verb(s) without training instance get their text-derived representation: %s",
                        len(missing), names[:10])
        else:
            log.warning("%d verb(s) without training instance get a zero row: %s", len(missing), names[:10])
    counts = hoi_counts.cpu()
    used_ids = allowed if allowed is not None else list(range(vocab.num_hois))
    without = [c for c in used_ids if counts[c] == 0]
    metadata = _metadata(datamodule, clip, vocab, include_unseen, missing_verbs, reference_duplicates,
                         counts, missing, without, len(dataset), dataset.num_pairs)
    return VerbEmbeddings(embeddings=verbs, metadata=metadata, seconds=seconds)


def _metadata(datamodule: Any, clip: Any, vocab: HOIVocabulary, include_unseen: bool, missing_verbs: str,
              reference_duplicates: bool, counts: Tensor, missing: list[int], without: list[int],
              num_images: int, num_pairs: int) -> dict[str, Any]:
    from .. import __version__

    hp = datamodule.hparams
    root = getattr(datamodule, "root", hp.get("root"))
    return {
        "format": FILE_FORMAT,
        "format_version": FILE_VERSION,
        "clip_model": getattr(clip, "model_name", None),
        "clip_pretrained": getattr(clip, "pretrained", None),
        "clip_precision": getattr(clip, "precision", None),
        "embed_dim": int(clip.embed_dim),
        "clip_image_fingerprint": clip.image_fingerprint() if hasattr(clip, "image_fingerprint") else None,
        "clip_seed": getattr(clip, "seed", None),
        "dataset_root": str(Path(str(root)).resolve()) if root is not None else None,
        "dataset_format": hp.get("dataset_format"),
        "train_fraction": float(hp.get("train_fraction", 1.0)),
        "fraction_seed": int(hp.get("fraction_seed", 0)),
        "train_annotation_file": hp.get("train_annotation_file"),
        "zero_shot": datamodule.zero_shot,
        "include_unseen": bool(include_unseen),
        "missing_verbs": missing_verbs,
        "reference_duplicates": bool(reference_duplicates),
        "vocabulary_name": vocab.name,
        "vocabulary_hash": vocab.fingerprint(),
        "vocabulary": vocab.to_dict(),
        "verbs": list(vocab.verbs),
        "hoi_instances": [int(c) for c in counts.tolist()],
        "hois_without_instance": [int(c) for c in without],
        "verbs_without_instance": [int(v) for v in missing],
        "num_images": int(num_images),
        "num_pairs": int(num_pairs),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hoiclip_lightning_version": __version__,
    }
