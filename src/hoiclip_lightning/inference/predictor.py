"""``HOIDetector``: HOI detection from Python with a trained (or converted) checkpoint.

Example::

    from hoiclip_lightning.inference import HOIDetector

    detector = HOIDetector.from_checkpoint("runs/quickstart/checkpoints/last.ckpt")
    result = detector.predict("photo.jpg")             # ImageDetections
    for t in result.top(5):
        print(t.verb_name, t.object_name, round(t.score, 2), t.human_box, t.object_box)
    results = detector.predict([pil_image, uint8_tensor, "other.jpg"])   # list, batched

The images get the evaluation transforms of the checkpoint's datamodule (``test_scale``,
``test_max_size``, ``clip_image_size`` from its saved hyper-parameters) and go through the module's own
``predict_step``, so the triplets equal those of ``hoiclip predict`` with the same batch composition.

Image files (and PIL images) are turned upright by their EXIF orientation tag first, as photo viewers and
``hoiclip predict`` show them: a phone photo stored sideways with an orientation tag gives boxes, ``width``
and ``height`` in the upright frame (``exif_transpose=False`` keeps the stored frame).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from .._torch_io import load_torch_file
from ..data.collate import collate_hoi
from ..data.image_folder import eval_sample
from ..data.transforms import ClipTransform, HOIEvalTransform
from ..errors import CheckpointError
from ..models.config import HOICLIPConfig, LossConfig, OptimizerConfig, PostProcessConfig, WeightSources
from ..models.label_space import checkpoint_vocabulary, same_label_space
from ..models.module import HOICLIPModule
from ..vocabulary import HOIVocabulary
from .results import ImageDetections, to_image_detections

ImageInput = Image.Image | str | Path | Tensor
_CONFIGS = {"net": HOICLIPConfig, "loss": LossConfig, "postprocess": PostProcessConfig, "optimizer": OptimizerConfig}
_LEGACY_WEIGHT_SOURCES = frozenset(f.name for f in dataclasses.fields(WeightSources))


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """Read a Lightning checkpoint of :class:`HOICLIPModule` (CPU tensors).

    Raises:
        CheckpointError: missing or unreadable file, or no ``state_dict`` / ``hyper_parameters``.
    """
    path = Path(path)
    ckpt = load_torch_file(path, "checkpoint")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        keys = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path}: not a HOICLIPModule checkpoint (needs 'state_dict' and 'hyper_parameters'; found {keys}). "
            "An official HOICLIP .pth file must be converted first: "
            "hoiclip convert-official --src IN.pth --dst OUT.ckpt"
        )
    return ckpt


#: the datamodule arguments that set the evaluation transforms (resize and CLIP view)
EVAL_TRANSFORM_KEYS = ("test_scale", "test_max_size", "clip_image_size")


def checkpoint_eval_transforms(ckpt: dict[str, Any]) -> dict[str, int]:
    """The evaluation transforms a checkpoint was trained with.

    Args:
        ckpt: a checkpoint read by :func:`load_checkpoint_file`.

    Returns:
        ``{key: value}`` for the keys of :data:`EVAL_TRANSFORM_KEYS` (``test_scale``, ``test_max_size``,
        ``clip_image_size``) found in the saved datamodule hyper-parameters; empty when the checkpoint has
        none (e.g. a converted official checkpoint). ``HOIDetector.from_checkpoint`` and ``hoiclip predict``
        both use these, so they resize an image the same way.
    """
    saved = ckpt.get("datamodule_hyper_parameters") or {}
    return {key: int(saved[key]) for key in EVAL_TRANSFORM_KEYS if saved.get(key) is not None}


class HOIDetector:
    """A :class:`HOICLIPModule` in eval mode plus the evaluation transforms of its data.

    Args:
        module: the trained module (moved to ``device``, set to eval mode).
        test_scale: short side of the evaluation resize.
        test_max_size: long-side limit of the evaluation resize.
        clip_image_size: side of the CLIP view (default: the CLIP model's input size).
        device: where to run (default: CUDA when available, else CPU).
        batch_size: images per forward pass in :meth:`predict`.
        exif_transpose: turn image files and PIL images upright by their EXIF orientation tag (boxes are then
            in the upright frame, as a photo viewer shows the image); ``False``: use the stored pixels.

    Attributes:
        module, vocabulary, device, batch_size, transform, clip_transform, exif_transpose.
    """

    def __init__(
        self,
        module: HOICLIPModule,
        test_scale: int = 800,
        test_max_size: int = 1333,
        clip_image_size: int | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        exif_transpose: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.module = module.to(self.device).eval()
        self.vocabulary: HOIVocabulary = module.vocabulary
        size = clip_image_size if clip_image_size is not None else module.model.clip.image_size
        self.transform = HOIEvalTransform(test_scale, test_max_size)
        self.clip_transform = ClipTransform(size)
        self.batch_size = batch_size
        self.exif_transpose = exif_transpose

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        vocabulary: str | Path | HOIVocabulary | None = None,
        batch_size: int = 8,
        exif_transpose: bool = True,
    ) -> HOIDetector:
        """Load a ``.ckpt`` written by ``hoiclip fit`` or ``hoiclip convert-official``.

        No file other than the checkpoint is read: the vocabulary stored in the checkpoint is used, CLIP,
        DETR and verb-embedding weights come from the state dict (the hyper-parameters hold no weight
        source; in checkpoints written before weight sources left ``net``, their paths are dropped), and
        the evaluation transforms come from the saved datamodule hyper-parameters (defaults 800 / 1333 /
        the CLIP input size when the checkpoint has none).

        Args:
            path: the checkpoint.
            device: where to run (default: CUDA when available, else CPU).
            vocabulary: replace the names of the stored vocabulary (built-in name, JSON path or object). It
                must have the same label space (HOI classes, object and verb counts); a different label
                space needs new text classifiers and is refused.
            batch_size: images per forward pass in :meth:`predict`.
            exif_transpose: turn images upright by their EXIF orientation tag (see the class).

        Raises:
            CheckpointError: unreadable checkpoint, a state dict that does not fit the saved architecture,
                or a ``vocabulary`` with another label space.
        """
        ckpt = load_checkpoint_file(path)
        hp = dict(ckpt["hyper_parameters"])
        vocab, _ = checkpoint_vocabulary(ckpt, source=str(path))
        if vocabulary is not None:
            override = HOIVocabulary.resolve(vocabulary)
            if not same_label_space(override, vocab):
                raise CheckpointError(
                    f"vocabulary {override.name!r} ({override.num_hois} HOIs, {override.num_objects} objects, "
                    f"{override.num_verbs} verbs) has another label space than the checkpoint's {vocab.name!r} "
                    f"({vocab.num_hois} HOIs, {vocab.num_objects} objects, {vocab.num_verbs} verbs); the text "
                    "classifiers would have to be rebuilt for it"
                )
            vocab = override
        # checkpoints written through the CLI hold the dataclass arguments as plain dicts
        for key, config_cls in _CONFIGS.items():
            if isinstance(hp.get(key), dict):
                values = hp[key]
                if key == "net":  # older checkpoints kept the weight sources in `net`; the state dict has them
                    values = {k: v for k, v in values.items() if k not in _LEGACY_WEIGHT_SOURCES}
                hp[key] = config_cls(**values)
        net = hp.get("net") or HOICLIPConfig()
        # no weight source is given (the hyper-parameters hold none): every weight comes from the state dict
        hp.update(vocabulary=vocab, net=net, per_class_ap_dir=None)
        known = set(HOICLIPModule.__init__.__code__.co_varnames[1 : HOICLIPModule.__init__.__code__.co_argcount])
        module = HOICLIPModule(**{k: v for k, v in hp.items() if k in known})
        state = ckpt["state_dict"]
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: the state dict does not fit the saved architecture; missing {len(missing)} "
                f"{missing[:8]}, unexpected {len(unexpected)} {unexpected[:8]}"
            )
        sizes = checkpoint_eval_transforms(ckpt)
        return cls(
            module,
            test_scale=sizes.get("test_scale", 800),
            test_max_size=sizes.get("test_max_size", 1333),
            clip_image_size=sizes.get("clip_image_size"),
            device=device,
            batch_size=batch_size,
            exif_transpose=exif_transpose,
        )

    # ------------------------------------------------------------------ label space
    def set_vocabulary(self, vocabulary: str | Path | HOIVocabulary, zero_shot: str | None = None) -> None:
        """Score another label space without retraining (open vocabulary; :meth:`HOICLIPModule.set_vocabulary`).

        Classes shared with the current vocabulary (same verb and object names) keep their trained rows; a
        new class is scored through its prompt's CLIP text embedding. The results name the new classes.

        Args:
            vocabulary: built-in name, vocabulary JSON path or an :class:`HOIVocabulary`.
            zero_shot: split of the new vocabulary (``None``: the current one if it defines it, else
                ``default``).
        """
        self.module.set_vocabulary(vocabulary, zero_shot)
        self.module.eval()  # the rebuilt classifier layers are created in training mode
        self.vocabulary = self.module.vocabulary

    # ------------------------------------------------------------------ inputs
    def _upright(self, image: Image.Image) -> Image.Image:
        return ImageOps.exif_transpose(image) if self.exif_transpose else image

    def _to_pil(self, image: ImageInput, index: int) -> tuple[Image.Image, str]:
        """RGB PIL image (upright by its EXIF orientation unless ``exif_transpose`` is off) and its file name
        (``""`` for in-memory inputs)."""
        if isinstance(image, Image.Image):
            if image.width < 1 or image.height < 1:
                raise ValueError(f"input {index}: the PIL image is empty ({image.width}x{image.height} pixels)")
            return self._upright(image).convert("RGB"), ""
        if isinstance(image, (str, Path)):
            path = Path(image)
            if not path.is_file():
                raise FileNotFoundError(f"input {index}: image file not found: {path}")
            try:
                with Image.open(path) as img:
                    pil = self._upright(img).convert("RGB")
            except Exception as err:  # noqa: BLE001
                raise ValueError(f"input {index}: cannot decode image {path}: {err}") from err
            if pil.width < 1 or pil.height < 1:
                raise ValueError(f"input {index}: image file {path} is empty ({pil.width}x{pil.height} pixels)")
            return pil, str(path)
        if isinstance(image, Tensor):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"input {index}: expected an image tensor [3, H, W], got shape {tuple(image.shape)}")
            if image.shape[1] < 1 or image.shape[2] < 1:
                raise ValueError(f"input {index}: the image tensor is empty (shape {tuple(image.shape)}); expected "
                                 "[3, H, W] with H, W >= 1")
            t = image.detach().cpu()
            if t.dtype == torch.uint8:
                return TF.to_pil_image(t), ""
            if not t.is_floating_point():
                raise ValueError(f"input {index}: image tensor must be uint8 or float, got {t.dtype}")
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                bad = int((~finite).sum())
                raise ValueError(f"input {index}: the float image tensor holds {bad} non-finite value(s) (NaN or "
                                 f"infinity) of {t.numel()}; expected RGB values in [0, 1]")
            lo, hi = float(t.min()), float(t.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"input {index}: float image tensor must hold values in [0, 1] (got [{lo:.3g}, {hi:.3g}]); "
                    "pass un-normalised RGB"
                )
            return TF.to_pil_image((t * 255.0).round().to(torch.uint8)), ""
        raise TypeError(
            f"input {index}: expected a PIL image, a path or a [3, H, W] tensor, got {type(image).__name__}"
        )

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict(self, images: ImageInput | Sequence[ImageInput]) -> ImageDetections | list[ImageDetections]:
        """Detect HOI triplets.

        Args:
            images: one image or a list: PIL images, file paths, ``uint8`` tensors ``[3, H, W]`` (0..255)
                or float tensors ``[3, H, W]`` in [0, 1] (RGB, not normalised; quantised to 8 bits like a
                decoded file).

        Returns:
            One :class:`ImageDetections` (single input) or a list (list input), boxes in the original
            image's pixels (upright by EXIF orientation, see the class), triplets sorted by descending score.

        Raises:
            FileNotFoundError: a path that does not exist.
            ValueError: an input that cannot be used: a file that does not decode, an empty image (no pixels),
                a float tensor with NaN or infinite values or values outside [0, 1], a tensor not ``[3, H, W]``
                (the message names the input's position).
            TypeError: an input of another type.
        """
        single = not isinstance(images, (list, tuple))
        inputs = [images] if single else list(images)  # an empty list gives an empty list
        results: list[ImageDetections] = []
        for start in range(0, len(inputs), self.batch_size):
            chunk = inputs[start : start + self.batch_size]
            samples, names = [], []
            for offset, item in enumerate(chunk):
                pil, name = self._to_pil(item, start + offset)
                samples.append(eval_sample(pil, self.transform, self.clip_transform, start + offset, name))
                names.append(name)
            batch = collate_hoi(samples)
            batch = self.module.transfer_batch_to_device(batch, self.device, 0)
            preds = self.module.predict_step(batch, start // self.batch_size)
            for pred, target, name in zip(preds, batch.targets, names, strict=True):
                height, width = (int(v) for v in target.orig_size.tolist())
                results.append(to_image_detections(pred, self.vocabulary, name, width, height))
        return results[0] if single else results

    __call__ = predict
