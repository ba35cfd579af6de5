"""Unannotated images for prediction: a folder of images or a text file that lists image paths.

Each sample has the layout of the evaluation split (``image [3, H, W]``, ``clip_image [3, S, S]``,
:class:`~hoiclip_lightning.structures.HOITarget`), so :func:`~hoiclip_lightning.data.collate_hoi` and the
model's ``predict_step`` work unchanged. The target carries no pair (``N = 0``); only ``image_id`` (the
position in the list), ``orig_size``, ``size`` and ``file_name`` (the image path) are filled.

Unlike annotated images, whose boxes are given in the stored pixel frame, these images are turned upright
by their EXIF orientation tag (:func:`open_upright`), as a photo viewer shows them: predicted boxes and
``orig_size`` are in that upright frame.

Examples:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> folder = Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (40, 20)).save(folder / "a.png")
    >>> ds = ImageFolderDataset(list_image_files(folder), test_scale=10, max_size=40, clip_image_size=8)
    >>> image, clip, target = ds[0]
    >>> tuple(image.shape), tuple(clip.shape), target.orig_size.tolist(), Path(target.file_name).name
    ((3, 10, 20), (3, 8, 8), [20, 40], 'a.png')
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import AnnotationError, DatasetNotFoundError
from ..structures import HOITarget
from .image_check import ImageChecker, ImageCheckError, VerifyImages
from .transforms import ClipTransform, HOIEvalTransform, to_normalized_tensor

log = logging.getLogger(__name__)

#: file suffixes taken from a folder (case-insensitive); a list file may name any image PIL can read
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def list_image_files(spec: str | Path) -> list[Path]:
    """The images named by ``spec``.

    Args:
        spec: a folder (its image files, sorted by name, not recursive) or a text file with one image path
            per line (blank lines and lines starting with ``#`` are skipped; relative paths are relative
            to the list file's folder).

    Returns:
        Image paths, in folder order or list order.

    Raises:
        DatasetNotFoundError: ``spec`` does not exist, the folder holds no image, the list is empty, or a
            listed file does not exist (the message names the list file and the line).
    """
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetNotFoundError(f"predict_images folder {path} holds no image file (suffixes {IMAGE_SUFFIXES})")
        return files
    if not path.is_file():
        raise DatasetNotFoundError(f"predict_images {path} not found (expected a folder of images or a text file "
                                   "listing image paths)")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [path]
    files: list[Path] = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetNotFoundError(f"predict_images list {path} cannot be read as text: {err}") from err
    for lineno, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        image = Path(entry) if Path(entry).is_absolute() else path.parent / entry
        if not image.is_file():
            raise DatasetNotFoundError(f"{path}, line {lineno}: image file {image} not found")
        files.append(image)
    if not files:
        raise DatasetNotFoundError(f"predict_images list {path} names no image")
    return files


def check_image_files(
    files: Sequence[Path],
    verify_images: VerifyImages = "header",
    on_bad_image: Literal["error", "skip"] = "error",
    checker: ImageChecker | None = None,
) -> tuple[list[Path], dict[str, int]]:
    """Check every image file (see :mod:`~hoiclip_lightning.data.image_check`).

    Args:
        files: the image paths.
        verify_images: ``"header"`` (readable and complete), ``"full"`` (decoded in full) or ``"none"``
            (the header is read).
        on_bad_image: ``"error"`` raises on the first bad file; ``"skip"`` leaves it out, logs it at WARNING
            and counts it.
        checker: the checker to use (with its cache); ``None``: a new one at ``verify_images``.

    Returns:
        The files that passed, in order, and the skip counts (``{"unreadable_image": n}`` or ``{}``).

    Raises:
        DatasetNotFoundError: a file is missing.
        AnnotationError: a file fails the check (``on_bad_image="error"``; the message names it).
    """
    if checker is None:
        checker = ImageChecker("header" if verify_images == "none" else verify_images)
    kept: list[Path] = []
    bad = 0
    for file in files:
        try:
            checker.check(file)
        except FileNotFoundError as err:
            raise DatasetNotFoundError(f"image file not found: {file}") from err
        except ImageCheckError as err:
            if on_bad_image == "error":
                raise AnnotationError(f"image file {file}: {err}") from err
            bad += 1
            log.warning("image file %s: %s; skipped (unreadable_image)", file, err)
            continue
        kept.append(Path(file))
    if bad:
        log.warning("predict images: skipped %d unreadable image(s) of %d", bad, len(files))
    return kept, ({"unreadable_image": bad} if bad else {})


def open_upright(path: str | Path) -> Image.Image:
    """Open an image file as RGB, turned upright by its EXIF orientation tag (if it has one).

    Raises:
        DatasetNotFoundError: the file is missing.
        AnnotationError: the file cannot be decoded (the message names it).
    """
    try:
        with Image.open(path) as img:
            return ImageOps.exif_transpose(img).convert("RGB")
    except FileNotFoundError as err:
        raise DatasetNotFoundError(f"image file not found: {path}") from err
    except Exception as err:  # noqa: BLE001 - PIL raises many types for broken files
        raise AnnotationError(f"cannot decode image {path}: {err}") from err


def eval_sample(
    image: Image.Image, transform: HOIEvalTransform, clip_transform: ClipTransform, image_id: int, file_name: str
) -> tuple[Tensor, Tensor, HOITarget]:
    """The evaluation view of one RGB image (the same steps as the test split of :class:`HOIDataset`).

    Returns:
        ``image`` ``[3, H', W']`` ImageNet-normalised after the evaluation resize, ``clip_image``
        ``[3, S, S]`` and an empty :class:`HOITarget` with ``orig_size = (H, W)`` and ``size = (H', W')``.
    """
    w, h = image.size
    resized, _, _ = transform(image, torch.zeros(0, 4))
    tw, th = resized.size
    target = HOITarget(
        sub_boxes=torch.zeros(0, 4),
        obj_boxes=torch.zeros(0, 4),
        obj_labels=torch.zeros(0, dtype=torch.long),
        verb_labels=torch.zeros(0, 0),
        hoi_labels=torch.zeros(0, 0),
        image_id=image_id,
        orig_size=torch.tensor([h, w], dtype=torch.long),
        size=torch.tensor([th, tw], dtype=torch.long),
        file_name=file_name,
    )
    return to_normalized_tensor(resized), clip_transform(resized), target


class ImageFolderDataset(Dataset):
    """Images without annotations, transformed like the evaluation split.

    Args:
        files: image paths (see :func:`list_image_files`).
        test_scale: short side after the evaluation resize.
        max_size: long-side limit of the evaluation resize.
        clip_image_size: side S of the square CLIP view.
        on_bad_image: an image that cannot be read when its sample is built (it passed the set-up check):
            ``"error"`` raises :class:`AnnotationError` naming it; ``"skip"`` logs it at WARNING, counts it in
            :attr:`skipped_images` and serves the next readable image in its place (its image id repeats,
            and :class:`~hoiclip_lightning.inference.HOIPredictionWriter` writes each image id once).

    Attributes:
        skipped_images: position -> reason of the images skipped so far in this process.
    """

    def __init__(self, files: Sequence[str | Path], test_scale: int = 800, max_size: int = 1333,
                 clip_image_size: int = 224, on_bad_image: Literal["error", "skip"] = "error") -> None:
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"on_bad_image {on_bad_image!r} is not supported; accepted: ('error', 'skip')")
        self.files = [Path(f) for f in files]
        self.transform = HOIEvalTransform(test_scale, max_size)
        self.clip_transform = ClipTransform(clip_image_size)
        self.on_bad_image = on_bad_image
        self.skipped_images: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int) -> tuple[Tensor, Tensor, HOITarget]:
        n = len(self.files)
        for step in range(n):
            j = (idx + step) % n
            if j in self.skipped_images:
                continue
            path = self.files[j]
            try:
                image = open_upright(path)
            except (AnnotationError, DatasetNotFoundError) as err:
                if self.on_bad_image == "error":
                    raise type(err)(f"predict image {j}: {err}. The set-up check did not catch it (verify_images: "
                                    "full decodes every image at set-up)") from err
                self.skipped_images[j] = "missing_image" if isinstance(err, DatasetNotFoundError) else \
                    "unreadable_image"
                log.warning("predict image %d: %s; skipped (%d image(s) skipped in this process)", j, err,
                            len(self.skipped_images))
                continue
            return eval_sample(image, self.transform, self.clip_transform, j, str(path))
        raise AnnotationError(f"no predict image of the {n} can be read")
