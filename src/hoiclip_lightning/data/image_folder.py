"""Unannotated images for prediction: a folder of images or a text file that lists image paths.

Each sample has the layout of the evaluation split (``image [3, H, W]``, ``clip_image [3, S, S]``,
:class:`~hoiclip_lightning.structures.HOITarget`), so :func:`~hoiclip_lightning.data.collate_hoi` and the
model's ``predict_step`` work unchanged. The target carries no pair (``N = 0``); only ``image_id`` (the
position in the list), ``orig_size``, ``size`` and ``file_name`` (the image path) are filled.

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

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import AnnotationError, DatasetNotFoundError
from ..structures import HOITarget
from .transforms import ClipTransform, HOIEvalTransform, to_normalized_tensor

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


def check_image_files(files: Sequence[Path]) -> list[tuple[int, int]]:
    """Open every image header; ``(width, height)`` per file.

    Raises:
        AnnotationError: a file that PIL cannot identify (the message names it).
    """
    sizes = []
    for file in files:
        try:
            with Image.open(file) as img:
                img.verify()
            with Image.open(file) as img:
                sizes.append(img.size)
        except FileNotFoundError as err:
            raise DatasetNotFoundError(f"image file not found: {file}") from err
        except Exception as err:  # noqa: BLE001 - PIL raises many types for broken files
            raise AnnotationError(f"cannot read image {file}: {err}") from err
    return sizes


def _open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError as err:
        raise DatasetNotFoundError(f"image file not found: {path}") from err
    except Exception as err:  # noqa: BLE001
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
    """

    def __init__(self, files: Sequence[str | Path], test_scale: int = 800, max_size: int = 1333,
                 clip_image_size: int = 224) -> None:
        self.files = [Path(f) for f in files]
        self.transform = HOIEvalTransform(test_scale, max_size)
        self.clip_transform = ClipTransform(clip_image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int) -> tuple[Tensor, Tensor, HOITarget]:
        path = self.files[idx]
        return eval_sample(_open_rgb(path), self.transform, self.clip_transform, idx, str(path))
