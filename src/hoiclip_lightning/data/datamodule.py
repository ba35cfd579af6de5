"""HOIDataModule: HICO-DET / V-COCO folders (or any folder in the same layout) as a LightningDataModule.

Folder layout (annotation files may also sit directly in ``root``)::

    root/annotations/trainval_hico.json  test_hico.json  corre_hico.npy      (hico_det)
    root/annotations/trainval_vcoco.json test_vcoco.json corre_vcoco.npy     (vcoco)
    root/images/train2015  root/images/test2015                              (hico_det)
    root/images/train2014  root/images/val2014                               (vcoco)
    root/vocabulary.json                                                     (optional custom label space)
    root/annotations/val_hico.json  root/images/val2015                      (optional validation split)
    root/annotations/val_vcoco.json (images in images/train2014)             (optional validation split)

Examples:
    >>> dm = HOIDataModule("/data/hico_20160224_det", zero_shot="rare_first")
    >>> dm.vocabulary.num_hois, len(dm.train_hoi_ids), len(dm.unseen_hoi_ids)
    (600, 480, 120)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning as L
from torch import Tensor
from torch.utils.data import DataLoader

from ..errors import ConfigurationError, DatasetNotFoundError
from ..vocabulary import HOIVocabulary
from .collate import collate_hoi
from .datasets import HOIDataset
from .formats import AnnotationSet, load_annotations, load_verb_object_matrix
from .global_batch import BatchPlan, plan_global_batch
from .image_check import VERIFY_IMAGES, ImageChecker, cache_file_for
from .image_folder import ImageFolderDataset, check_image_files, list_image_files
from .subsets import (
    SubsetStats,
    count_hoi_instances,
    rare_hoi_ids,
    subsample_records,
    subset_stats,
    zero_shot_filter,
)
from .transforms import DETR_SCALES, ClipTransform, HOIEvalTransform, HOITrainTransform
from .vcoco_official import attach_vcoco_official, load_vcoco_official

log = logging.getLogger(__name__)

_LAYOUT = {
    "hico_det": {
        "train": "trainval_hico.json",
        "test": "test_hico.json",
        "corre": "corre_hico.npy",
        "train_images": "images/train2015",
        "test_images": "images/test2015",
        "val": "val_hico.json",
    },
    "vcoco": {
        "train": "trainval_vcoco.json",
        "test": "test_vcoco.json",
        "corre": "corre_vcoco.npy",
        "train_images": "images/train2014",
        "test_images": "images/val2014",
        "val": "val_vcoco.json",
    },
}
# image folders of a validation file, first existing one wins (a validation file carved out of the training
# images, e.g. V-COCO's val split of COCO train2014, has its images in the training folder)
_VAL_IMAGE_DIRS = {"hico_det": ("images/val2015", "images/train2015"), "vcoco": ("images/train2014",)}
_FORMATS = tuple(_LAYOUT)
_BAD_RECORD = ("error", "skip")
_VAL_SPLITS = ("auto", "val", "test")


def _check_evaluation_split(path: Path, annotations: AnnotationSet) -> None:
    """Refuse a validation/test split that cannot give a metric (no image, or no annotated HOI).

    A run on such a split would end with exit status 0 and no mAP at all; this names the file instead.
    """
    skipped = ", ".join(f"{reason}: {n}" for reason, n in annotations.skipped.items()) or "none"
    if not annotations.records:
        raise DatasetNotFoundError(
            f"{path}: the evaluation split (validation and test) has no image left (records skipped: "
            f"{skipped}); fix the file or its image folder")
    if sum(record.num_hois for record in annotations.records) == 0:
        raise DatasetNotFoundError(
            f"{path}: the evaluation split has {len(annotations.records)} images but no annotated HOI "
            f"(records skipped: {skipped}), so no mAP can be computed")


def resolve_vocabulary_source(vocabulary: str | Path | None, root: str | Path, dataset_format: str) -> str:
    """The label space a data module uses, as a built-in name or a JSON path (the ``vocabulary: null`` rule).

    ``vocabulary`` itself when given; for ``None``, ``<root>/vocabulary.json`` when that file exists (a
    custom dataset such as the synthetic world), else the built-in vocabulary of ``dataset_format``.

    Example:
        >>> resolve_vocabulary_source(None, "/no/such/folder", "vcoco")
        'vcoco'
        >>> resolve_vocabulary_source("my_labels.json", "/no/such/folder", "hico_det")
        'my_labels.json'
    """
    if vocabulary is not None:
        return str(vocabulary)
    custom = Path(root) / "vocabulary.json"
    return str(custom) if custom.is_file() else dataset_format


class HOIDataModule(L.LightningDataModule):
    """Training, validation, test and predict loaders of an HOI dataset.

    ``val_dataloader`` serves the **validation split** when the dataset has one (``val_split="auto"``
    and the validation annotation file ``annotations/val_hico.json`` — ``val_vcoco.json`` — or
    ``val_annotation_file`` exists; the synthetic world writes one). Otherwise it serves the **test split**,
    as the reference does: HICO-DET as distributed has no validation split, so checkpoint selection on
    ``val/*`` is then selection on the test set (logged at set-up). ``test_dataloader`` and
    ``predict_dataloader`` always serve the test split.
    After set-up, :attr:`val_source` names what validation reads: the validation file's path, or ``"test"``.

    Training set: the training annotation file (or ``train_annotation_file``), optionally subsampled
    to ``train_fraction`` of its images (seeded by ``fraction_seed``), then zero-shot filtered: a
    (subject, object) pair carrying any unseen HOI of the ``zero_shot`` split loses all its labels;
    for ``hico_det`` images without any HOI left are dropped (V-COCO keeps every image).
    ``hoi_train_counts`` / ``rare_hoi_ids_from_train`` are counted on the training records in use
    (after subsampling, before zero-shot filtering).

    All files are read and validated in :meth:`setup`, image files included (``verify_images``): a record
    whose image is unreadable, cut short or of another size than the record says is an error, or is left
    out and counted with ``on_bad_record="skip"``. Passed image checks are cached (``image_check_cache``),
    so a second run opens no image at set-up. An image that still fails to decode mid-epoch raises an error
    naming it, or (``skip``) is logged, counted and replaced by the next readable record.

    Args:
        root: dataset folder.
        dataset_format: ``"hico_det"`` or ``"vcoco"`` (file names, folder names, verb id base).
        vocabulary: ``"hico_det"``, ``"vcoco"`` or a JSON path; ``None``: ``root/vocabulary.json`` if it
            exists, else the built-in vocabulary of ``dataset_format``. The ``hoiclip`` command links it into
            the model.
        train_fraction: fraction of training images kept, in (0, 1].
        fraction_seed: seed of the subsample (same subset in every process).
        train_annotation_file: training annotation file to use instead of the default one (e.g. an
            official fractional file); relative paths are looked up in the annotation folder, then root.
        zero_shot: zero-shot split of the vocabulary (``default``: fully supervised). The ``hoiclip`` command
            links it into the model.
        batch_size: images per training batch and device; with ``global_batch_size`` set, the most images a
            device takes at once.
        global_batch_size: images per optimizer step over all devices and accumulated batches (the paper:
            16). At ``setup("fit")`` the per-device batch and the trainer's ``accumulate_grad_batches`` are
            derived from it, ``batch_size`` and the trainer's device count (:func:`plan_global_batch`;
            :attr:`batch_plan` holds the result); settings that do not divide are refused. The learning
            rate is not changed (the step sees the same number of images). ``None``: ``batch_size`` per
            device, accumulation as the trainer says.
        eval_batch_size: images per evaluation batch (``None``: ``batch_size``).
        num_workers: DataLoader worker processes.
        pin_memory: DataLoader ``pin_memory``.
        train_scales: short-side choices of the final multi-scale resize of training images.
        train_max_size: long-side limit of that resize.
        crop_resize_scales: short-side choices of the resize before the crop (resize-and-crop branch).
        crop_min_size: smallest crop width/height of that branch.
        crop_max_size: largest crop width/height of that branch.
        test_scale: short side of the evaluation resize.
        test_max_size: long-side limit of the evaluation resize.
        clip_image_size: side of the square CLIP view (the CLIP model's input size: 224 for ``ViT-B-32``, 64
            for ``hoiclip-tiny`` and ``hoiclip-small``).
        on_bad_record: ``"error"`` (raise) or ``"skip"`` (drop and count bad records / HOIs).
        max_boxes: training images keep only their first ``max_boxes`` boxes (reference quirk D2).
        check_images: check image files at setup (existence, and what ``verify_images`` asks).
        verify_images: how each image file is checked at setup: ``header`` (the header is readable, the file
            is complete — JPEG/PNG end markers, a file without one is decoded to decide — and its size agrees
            with the record's ``width``/``height`` when the record gives them), ``full`` (also decoded in
            full: finds damage inside the compressed data, at the cost of one decode per image, once) or
            ``none`` (existence only; the header is read when the record gives no size).
        image_check_cache: folder of the cache of passed image checks (a JSON file per dataset root, keyed by
            file path, size and modification time). ``None``: ``$HOICLIP_CACHE_DIR``, else
            ``$XDG_CACHE_HOME/hoiclip_lightning``, else ``~/.cache/hoiclip_lightning``. Nothing is written
            into the dataset root; a cache folder that cannot be written only costs the checks again.
        predict_images: images for ``predict``: a folder (its image files) or a text file listing image
            paths; they get the evaluation transforms. ``None``: ``predict`` runs on the test split. With
            it set, ``setup("predict")`` reads neither the dataset root nor its annotations.
        vcoco_official_dir: ``vcoco`` only: folder with the official V-COCO files (``vcoco/vcoco_test.json``,
            ``instances_vcoco_all_2014.json``, ``splits/vcoco_test.ids``; the ``data`` folder of a
            ``s-gupta/v-coco`` checkout). Each test image's ground truth then carries them
            (``HOIGroundTruth.vcoco``), and :class:`~hoiclip_lightning.metrics.VCOCORoleAP` evaluates
            exactly as ``vsrl_eval.py``. The image is found by the COCO id in its file name.
        vcoco_official_split: which official split the test file holds (``test`` for the HOIA test file).
        val_split: what ``val_dataloader`` serves: ``auto`` (the validation file when it exists, else the
            test split), ``val`` (the validation file; its absence is an error) or ``test`` (the test split,
            the reference's behaviour).
        val_annotation_file: the validation annotation file (``None``: ``val_hico.json`` / ``val_vcoco.json``);
            relative paths are looked up as given, in the annotation folder, then in root. Its images are read
            from ``images/val2015`` when that folder exists, else from the training image folder
            (``hico_det``); from ``images/train2014`` (``vcoco``).
    """

    def __init__(
        self,
        root: str,
        dataset_format: Literal["hico_det", "vcoco"] = "hico_det",
        vocabulary: str | None = None,
        train_fraction: float = 1.0,
        fraction_seed: int = 0,
        train_annotation_file: str | None = None,
        zero_shot: str = "default",
        batch_size: int = 2,
        global_batch_size: int | None = None,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        train_scales: Sequence[int] = DETR_SCALES,
        train_max_size: int = 1333,
        crop_resize_scales: Sequence[int] = (400, 500, 600),
        crop_min_size: int = 384,
        crop_max_size: int = 600,
        test_scale: int = 800,
        test_max_size: int = 1333,
        clip_image_size: int = 224,
        on_bad_record: Literal["error", "skip"] = "error",
        max_boxes: int = 64,
        pin_memory: bool = False,
        check_images: bool = True,
        verify_images: Literal["header", "full", "none"] = "header",
        image_check_cache: str | None = None,
        predict_images: str | None = None,
        vcoco_official_dir: str | None = None,
        vcoco_official_split: str = "test",
        val_split: Literal["auto", "val", "test"] = "auto",
        val_annotation_file: str | None = None,
    ) -> None:
        super().__init__()
        if dataset_format not in _FORMATS:
            raise ConfigurationError(f"dataset_format {dataset_format!r} is not supported; accepted: {_FORMATS}")
        if val_split not in _VAL_SPLITS:
            raise ConfigurationError(f"val_split {val_split!r} is not supported; accepted: {_VAL_SPLITS}")
        if val_split == "test" and val_annotation_file is not None:
            raise ConfigurationError("val_annotation_file is set but val_split='test' would ignore it; use "
                                     "val_split 'auto' or 'val'")
        if verify_images not in VERIFY_IMAGES:
            raise ConfigurationError(f"verify_images {verify_images!r} is not supported; accepted: {VERIFY_IMAGES}")
        if on_bad_record not in _BAD_RECORD:
            raise ConfigurationError(f"on_bad_record {on_bad_record!r} is not supported; accepted: {_BAD_RECORD}")
        if not 0.0 < train_fraction <= 1.0:
            raise ConfigurationError(f"train_fraction must be in (0, 1], got {train_fraction}")
        for name, value in (("batch_size", batch_size), ("clip_image_size", clip_image_size),
                            ("test_scale", test_scale), ("max_boxes", max_boxes)):
            if value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value}")
        if global_batch_size is not None and global_batch_size < 1:
            raise ConfigurationError(f"global_batch_size must be a positive integer or None, got {global_batch_size}")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ConfigurationError(f"eval_batch_size must be a positive integer or None, got {eval_batch_size}")
        if num_workers < 0:
            raise ConfigurationError(f"num_workers must be >= 0, got {num_workers}")
        if not train_scales:
            raise ConfigurationError("train_scales must not be empty")
        if vcoco_official_dir is not None and dataset_format != "vcoco":
            raise ConfigurationError(f"vcoco_official_dir needs dataset_format 'vcoco', got {dataset_format!r}")
        # record what `None` resolves to, so the hyper-parameters name the label space that was used
        vocabulary = resolve_vocabulary_source(vocabulary, root, dataset_format)
        self.save_hyperparameters()
        self.root = Path(root)
        self.dataset_format = dataset_format
        self._vocab: HOIVocabulary | None = None
        self.train_dataset: HOIDataset | None = None
        self.test_dataset: HOIDataset | None = None
        self.val_dataset: HOIDataset | None = None
        self.val_source: str | None = None
        self.predict_dataset: ImageFolderDataset | None = None
        self.verb_object_matrix: Tensor | None = None
        self.subset_stats: SubsetStats | None = None
        self._counts: Tensor | None = None
        self._skip_counts: dict[str, dict[str, int]] = {}
        self._train_set: AnnotationSet | None = None
        self.batch_plan: BatchPlan | None = None
        self.image_checker: ImageChecker | None = None

    # ------------------------------------------------------------------ label space
    @property
    def vocabulary(self) -> HOIVocabulary:
        """The label space (resolved on first use; cheap)."""
        if self._vocab is None:
            spec = self.vocabulary_source
            log.info("vocabulary: %s", spec)
            self._vocab = HOIVocabulary.resolve(spec)
        return self._vocab

    def use_vocabulary(self, vocabulary: HOIVocabulary) -> None:
        """Take ``vocabulary`` as the label space instead of resolving :attr:`vocabulary_source`.

        For ``hoiclip predict`` away from the training data: when ``vocabulary: null`` finds no
        ``<root>/vocabulary.json``, the command names the triplets with the checkpoint's stored vocabulary
        and gives it to the datamodule too. Call it before :meth:`setup` (the annotations of the train and
        test splits are validated against the label space there).
        """
        if self._train_set is not None or getattr(self, "test_dataset", None) is not None:
            raise ConfigurationError("use_vocabulary must be called before setup")
        self._vocab = vocabulary

    @property
    def vocabulary_source(self) -> str:
        """What the vocabulary was resolved from: a built-in name or a JSON path (linked into the model)."""
        return resolve_vocabulary_source(self.hparams.vocabulary, self.root, self.dataset_format)

    @property
    def zero_shot(self) -> str:
        """The zero-shot split name (``default`` = fully supervised)."""
        return self.hparams.zero_shot

    @property
    def unseen_hoi_ids(self) -> list[int]:
        """Unseen HOI classes of the ``zero_shot`` split (empty for ``default``)."""
        return self.vocabulary.unseen_hois(self.hparams.zero_shot)

    @property
    def train_hoi_ids(self) -> list[int]:
        """Seen (training) HOI classes; the ``hoi_labels`` column order of training targets."""
        return self.vocabulary.seen_hois(self.hparams.zero_shot)

    @property
    def hoi_train_counts(self) -> Tensor:
        """``[C_hoi]`` long: HOI instances per class in the training records in use (before zero-shot filtering)."""
        if self._counts is None:
            raise RuntimeError("hoi_train_counts is available after setup() found a training annotation file")
        return self._counts

    @property
    def rare_hoi_ids_from_train(self) -> list[int]:
        """Classes with fewer than 10 instances in the training records in use (the 'reference' rare set)."""
        return rare_hoi_ids(self.hoi_train_counts)

    @property
    def skip_counts(self) -> dict[str, dict[str, int]]:
        """Skipped problems per split (``"train"``, ``"val"``, ``"test"``, ``"predict"``) and reason
        (``on_bad_record="skip"``)."""
        return {k: dict(v) for k, v in self._skip_counts.items()}

    # ------------------------------------------------------------------ files
    def _checker(self, root: Path) -> ImageChecker | None:
        """The image checker of this set-up (``None`` when images are not verified); its cache is ``root``'s."""
        hp = self.hparams
        if not hp.check_images or hp.verify_images == "none":
            return None
        if self.image_checker is None:
            self.image_checker = ImageChecker(hp.verify_images, cache_file_for(root, hp.image_check_cache))
        return self.image_checker

    def _save_image_checks(self) -> None:
        if self.image_checker is not None:
            self.image_checker.save()

    def _annotation_path(self, name: str, required: bool = True) -> Path | None:
        for folder in (self.root / "annotations", self.root):
            if (folder / name).is_file():
                return folder / name
        if not required:
            return None
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"dataset root not found: {self.root} (format {self.dataset_format})")
        raise DatasetNotFoundError(
            f"dataset root {self.root} (format {self.dataset_format}): required file 'annotations/{name}' "
            f"not found (also looked for '{name}' directly in the root)"
        )

    def _train_annotation_path(self) -> Path | None:
        spec = self.hparams.train_annotation_file
        if spec is None:
            return self._annotation_path(_LAYOUT[self.dataset_format]["train"], required=False)
        path = Path(spec)
        for cand in (path, self.root / "annotations" / path, self.root / path):
            if cand.is_file():
                return cand
        raise DatasetNotFoundError(
            f"train_annotation_file {spec!r} not found (searched it as given, under {self.root / 'annotations'} "
            f"and under {self.root})"
        )

    def _val_annotation_path(self) -> Path | None:
        """The validation file (``None``: none found and ``val_split='auto'``)."""
        hp = self.hparams
        if hp.val_split == "test":
            return None
        name = hp.val_annotation_file or _LAYOUT[self.dataset_format]["val"]
        path = Path(name)
        for cand in (path, self.root / "annotations" / path, self.root / path):
            if cand.is_file():
                return cand
        if hp.val_annotation_file is None and hp.val_split == "auto":
            return None
        raise DatasetNotFoundError(
            f"validation annotation file {name!r} not found (val_split={hp.val_split!r}; searched it as given, "
            f"under {self.root / 'annotations'} and under {self.root})"
        )

    def _val_image_dir(self) -> Path:
        candidates = _VAL_IMAGE_DIRS[self.dataset_format]
        for rel in candidates:
            if (self.root / rel).is_dir():
                return self.root / rel
        if self.hparams.check_images:
            raise DatasetNotFoundError(f"dataset root {self.root} (format {self.dataset_format}): no image folder "
                                       f"for the validation split (looked for {', '.join(candidates)})")
        return self.root / candidates[0]

    def _image_dir(self, key: str) -> Path:
        rel = _LAYOUT[self.dataset_format][key]
        path = self.root / rel
        if self.hparams.check_images and not path.is_dir():
            raise DatasetNotFoundError(f"dataset root {self.root} (format {self.dataset_format}): image folder "
                                       f"'{rel}' not found")
        return path

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Nothing to download or convert; files are validated in :meth:`setup`."""

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in (None, "fit") and hp.global_batch_size is not None:
            self._plan_global_batch()
        if stage == "predict" and hp.predict_images is not None:
            self._setup_predict_images(hp.predict_images)
            return
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"dataset root not found: {self.root} (format {self.dataset_format})")
        try:
            self._setup_splits(stage)
        finally:
            self._save_image_checks()  # what passed is remembered even when a later record fails

    def _setup_splits(self, stage: str | None) -> None:
        hp = self.hparams
        vocab = self.vocabulary
        seen, unseen = self.train_hoi_ids, self.unseen_hoi_ids
        layout = _LAYOUT[self.dataset_format]
        if self.verb_object_matrix is None:
            self.verb_object_matrix = load_verb_object_matrix(self._annotation_path(layout["corre"]), vocab)

        need_train = stage in (None, "fit")
        if self._train_set is None or (need_train and self.train_dataset is None):
            train_path = self._train_annotation_path()
            if train_path is None and need_train:
                self._annotation_path(layout["train"])  # raises naming the missing file
            if train_path is not None:
                self._load_train(train_path, vocab, seen, unseen, need_train)
        if self._counts is None:
            log.info("no training annotation file; the rare set comes from the vocabulary")

        if self.test_dataset is None:
            test_path = self._annotation_path(layout["test"])
            test_set = load_annotations(
                test_path, vocab, self._image_dir("test_images"), self.dataset_format,
                hp.on_bad_record, check_images=hp.check_images, verify_images=hp.verify_images,
                image_checker=self._checker(self.root),
            )
            self._skip_counts["test"] = test_set.skipped
            if stage != "predict":
                _check_evaluation_split(test_path, test_set)
            official = None
            if hp.vcoco_official_dir is not None:
                official = attach_vcoco_official(
                    test_set.records, test_path.name,
                    load_vcoco_official(hp.vcoco_official_dir, hp.vcoco_official_split, vocab),
                )
            self.test_dataset = HOIDataset(
                test_set.records, vocab, train=False,
                transform=HOIEvalTransform(hp.test_scale, hp.test_max_size),
                clip_transform=ClipTransform(hp.clip_image_size), max_boxes=None, return_gt=True,
                official_gt=official, on_bad_image=hp.on_bad_record, source=test_path.name,
            )
            log.info("test split: %d images", len(self.test_dataset))
        if stage in (None, "fit", "validate") and self.val_source is None:
            self._setup_val(vocab)

    def _plan_global_batch(self) -> None:
        """Derive the per-device batch and the trainer's ``accumulate_grad_batches`` from ``global_batch_size``."""
        hp = self.hparams
        trainer = self.trainer
        plan = plan_global_batch(hp.global_batch_size, trainer.world_size if trainer is not None else 1,
                                 hp.batch_size)
        if trainer is not None:
            current = trainer.accumulate_grad_batches
            if current not in (1, plan.accumulate_grad_batches):
                raise ConfigurationError(
                    f"trainer.accumulate_grad_batches {current} contradicts global_batch_size {hp.global_batch_size} "
                    f"({plan}); leave accumulate_grad_batches unset: it is derived")
            trainer.accumulate_grad_batches = plan.accumulate_grad_batches
        self.batch_plan = plan
        log.info("%s (learning rate unchanged)", plan)

    @property
    def train_batch_size(self) -> int:
        """Images per training batch of one device: derived from ``global_batch_size`` when set."""
        return self.batch_plan.per_device_batch if self.batch_plan is not None else self.hparams.batch_size

    def _setup_val(self, vocab: HOIVocabulary) -> None:
        """Build :attr:`val_dataset` from the validation file, or record that validation uses the test split."""
        hp = self.hparams
        path = self._val_annotation_path()
        if path is None:
            self.val_source = "test"
            why = "val_split='test'" if hp.val_split == "test" else (
                f"no validation file '{_LAYOUT[self.dataset_format]['val']}' in {self.root}")
            log.info("validation on the TEST split (%s), as the reference does: checkpoints selected on val/* are "
                     "selected on the test set", why)
            return
        val_set = load_annotations(path, vocab, self._val_image_dir(), self.dataset_format, hp.on_bad_record,
                                   check_images=hp.check_images, verify_images=hp.verify_images,
                                   image_checker=self._checker(self.root))
        self._skip_counts["val"] = val_set.skipped
        _check_evaluation_split(path, val_set)
        self.val_dataset = HOIDataset(
            val_set.records, vocab, train=False, transform=HOIEvalTransform(hp.test_scale, hp.test_max_size),
            clip_transform=ClipTransform(hp.clip_image_size), max_boxes=None, return_gt=True,
            on_bad_image=hp.on_bad_record, source=path.name,
        )
        self.val_source = str(path)
        log.info("validation split: %d images from %s", len(self.val_dataset), path)

    def _setup_predict_images(self, spec: str) -> None:
        """Build :attr:`predict_dataset`; every image header is read now, so a bad file fails here."""
        if self.predict_dataset is not None:
            return
        hp = self.hparams
        files = list_image_files(spec)
        checker = ImageChecker("header" if hp.verify_images == "none" else hp.verify_images,
                               cache_file_for(Path(spec).parent if Path(spec).is_file() else spec,
                                              hp.image_check_cache))
        try:
            files, skipped = check_image_files(files, hp.verify_images, hp.on_bad_record, checker)
        finally:
            checker.save()
        self._skip_counts["predict"] = skipped
        if not files:
            raise DatasetNotFoundError(f"predict_images {spec}: no readable image is left (skipped: {skipped})")
        self.predict_dataset = ImageFolderDataset(files, hp.test_scale, hp.test_max_size, hp.clip_image_size,
                                                  on_bad_image=hp.on_bad_record)
        log.info("predict: %d images from %s", len(files), spec)

    def _load_train(self, path: Path, vocab: HOIVocabulary, seen: list[int], unseen: list[int],
                    build_dataset: bool) -> None:
        hp = self.hparams
        check = hp.check_images and build_dataset
        image_dir = self._image_dir("train_images") if check else self.root / _LAYOUT[self.dataset_format][
            "train_images"]
        train_set = load_annotations(path, vocab, image_dir, self.dataset_format, hp.on_bad_record, check_images=check,
                                     verify_images=hp.verify_images,
                                     image_checker=self._checker(self.root) if check else None)
        self._train_set = train_set
        self._skip_counts["train"] = train_set.skipped
        records = train_set.records
        if hp.train_fraction < 1.0:
            kept, self.subset_stats = subsample_records(records, hp.train_fraction, hp.fraction_seed)
            records = [records[i] for i in kept]
        else:
            self.subset_stats = subset_stats(records)
        self._counts = count_hoi_instances(records, vocab.num_hois)
        records = zero_shot_filter(records, unseen, drop_empty=self.dataset_format == "hico_det")
        if not build_dataset:
            return
        if not records:
            raise DatasetNotFoundError(f"{path.name}: no training image with an HOI is left (zero_shot="
                                       f"{hp.zero_shot!r}, train_fraction={hp.train_fraction})")
        self.train_dataset = HOIDataset(
            records, vocab, train=True,
            transform=HOITrainTransform(hp.train_scales, hp.train_max_size, hp.crop_resize_scales,
                                        hp.crop_min_size, hp.crop_max_size),
            clip_transform=ClipTransform(hp.clip_image_size), train_hoi_ids=seen, max_boxes=hp.max_boxes,
            return_gt=False, on_bad_image=hp.on_bad_record, source=path.name,
        )
        log.info("training split: %d images, %d seen HOI classes", len(self.train_dataset), len(seen))

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset: HOIDataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.hparams.num_workers,
            collate_fn=collate_hoi, pin_memory=self.hparams.pin_memory, drop_last=False,
            persistent_workers=self.hparams.num_workers > 0,
        )

    @property
    def _eval_batch_size(self) -> int:
        return self.hparams.eval_batch_size or self.hparams.batch_size

    def train_dataloader(self) -> DataLoader:
        """Seeded (``PL_GLOBAL_SEED``) shuffle that a mid-epoch checkpoint can resume (data/resumable.py)."""
        from .resumable import ResumableDataLoader

        if self.train_dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        workers = self.hparams.num_workers
        return ResumableDataLoader(
            self.train_dataset, batch_size=self.train_batch_size, collate_fn=collate_hoi, num_workers=workers,
            pin_memory=self.hparams.pin_memory, persistent_workers=workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        """The validation split when there is one, else the test split (reference behaviour; see the class
        docstring and :attr:`val_source`)."""
        dataset = self.val_dataset if self.val_dataset is not None else self.test_dataset
        return self._loader(dataset, self._eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, self._eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The ``predict_images`` when given, else the test split."""
        if self.hparams.predict_images is not None:
            return self._loader(self.predict_dataset, self._eval_batch_size, shuffle=False)
        return self._loader(self.test_dataset, self._eval_batch_size, shuffle=False)
