"""``hoiclip demo``: a web page that runs a checkpoint on an image, with HOI prompts edited live (Gradio).

The page (``hoiclip demo --ckpt_path X``, or :func:`launch_demo` from Python) takes an uploaded image or
one of the example images, draws the best triplets on it and lists them in a table (rank, verb, object,
score, human box, object box). A score threshold, a top-k and the training-free enhancement (TFE) switch
choose what is shown, and the list of HOI prompts (one per line) sets the label space: a line added
(``a person riding a kite``) becomes a new class scored through its CLIP text embedding, a line removed
drops its class (the open-vocabulary path, :meth:`HOIDetector.set_vocabulary`).

Gradio is an optional dependency (``pip install 'hoiclip-lightning[demo]'``); only :func:`build_demo`,
:func:`launch_demo` and :func:`main` import it. Everything the page computes goes through the pure
functions and the :class:`DemoModel` of this module, which need no Gradio::

    from hoiclip_lightning.inference import HOIDetector
    from hoiclip_lightning.inference.demo import DemoModel

    model = DemoModel(HOIDetector.from_checkpoint("last.ckpt", device="cpu"))
    prompts = model.base_prompts + "\\na person riding a kite"
    result = model.detect("photo.jpg", score_threshold=0.0, topk=5, tfe=True, prompts=prompts)
    result.rows      # the table of the page
    result.drawn     # the drawn image of the page

The prompt lines are read by :func:`~hoiclip_lightning.inference.prompt_list.vocabulary_from_prompts`
(grammar ``[a photo of] a person <verb phrase> <a|an|the> <object>``).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from ..errors import ConfigurationError
from ..vocabulary import HOIVocabulary
from .drawing import draw_triplets
from .predictor import HOIDetector, ImageInput, load_checkpoint_file
from .prompt_list import vocabulary_from_prompts
from .results import ImageDetections

log = logging.getLogger(__name__)

__all__ = [
    "DEMO_INSTALL_HINT",
    "TABLE_HEADERS",
    "DemoModel",
    "DemoResult",
    "build_demo",
    "checkpoint_examples",
    "format_box",
    "launch_demo",
    "triplet_rows",
]

DEMO_INSTALL_HINT = "pip install 'hoiclip-lightning[demo]'"
#: columns of the page's table (one row per triplet, rank order)
TABLE_HEADERS = ("rank", "verb", "object", "score", "human box", "object box")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


# ---------------------------------------------------------------------- table
def format_box(box: Sequence[float]) -> str:
    """``"x1, y1, x2, y2"`` with one decimal (pixels of the original image)."""
    return ", ".join(f"{float(v):.1f}" for v in box)


def triplet_rows(detections: ImageDetections, topk: int | None = None,
                 score_threshold: float | None = None) -> list[list[Any]]:
    """The page's table: one row per shown triplet, in the columns of :data:`TABLE_HEADERS`.

    Args:
        detections: one image's result (triplets in descending score order).
        topk: at most this many rows (``None``: all).
        score_threshold: leave out triplets scoring below it (``None``: none left out).

    Returns:
        ``[[rank, verb, object, score, human box, object box], ...]``: rank from 1, score rounded to 4
        decimals, boxes as :func:`format_box` writes them.
    """
    return [[rank, t.verb_name, t.object_name, round(float(t.score), 4), format_box(t.human_box),
             format_box(t.object_box)]
            for rank, t in enumerate(detections.top(topk, score_threshold), start=1)]


# ---------------------------------------------------------------------- the state behind the page
@dataclass
class DemoResult:
    """What the page shows for one request.

    Attributes:
        drawn: the image with the shown triplets drawn (:func:`draw_triplets`).
        rows: the table (:func:`triplet_rows`).
        detections: every triplet the post-processor kept (before threshold and top-k).
        vocabulary: the label space the image was scored in.
        message: a one-line summary (shown under the table).
        new_classes: ``"<verb> <object>"`` of the classes the prompt list adds to the checkpoint's.
    """

    drawn: Image.Image
    rows: list[list[Any]]
    detections: ImageDetections
    vocabulary: HOIVocabulary
    message: str = ""
    new_classes: list[str] = field(default_factory=list)


class DemoModel:
    """A detector plus the label spaces of edited prompt lists (one detector per list, the last one kept).

    Args:
        detector: the checkpoint's :class:`HOIDetector`; its vocabulary is the page's starting prompt list.

    Attributes:
        detector: the checkpoint's detector (never changed).
        base_vocabulary: its vocabulary.
        tfe_available: the model has the CLIP image tower that the TFE needs.
    """

    def __init__(self, detector: HOIDetector) -> None:
        self.detector = detector
        self.base_vocabulary = detector.vocabulary
        self.tfe_available = detector.module.net_config.clip_model is not None
        self._derived: tuple[HOIVocabulary, HOIDetector] | None = None
        self._lock = threading.Lock()

    @property
    def base_prompts(self) -> str:
        """The checkpoint's HOI prompts, one per line (the page's starting prompt list)."""
        return "\n".join(self.base_vocabulary.hoi_prompts)

    @property
    def default_tfe(self) -> bool:
        """Whether the checkpoint's post-processing has the TFE on."""
        return bool(self.detector.module.use_tfe)

    def detector_for(self, prompts: str) -> HOIDetector:
        """The detector of a prompt list: the checkpoint's for its own prompts, else a copy whose label space
        was switched with :meth:`HOIDetector.set_vocabulary` (always from the checkpoint's rows, so removing
        a class and adding it back gives its trained row again)."""
        vocabulary = vocabulary_from_prompts(self.base_vocabulary, prompts)
        if vocabulary is self.base_vocabulary:
            return self.detector
        if self._derived is not None and self._derived[0] == vocabulary:
            return self._derived[1]
        derived = copy.deepcopy(self.detector)
        derived.set_vocabulary(vocabulary, zero_shot="default")
        self._derived = (vocabulary, derived)
        return derived

    def detect(self, image: ImageInput, score_threshold: float | None = None, topk: int | None = 5,
               tfe: bool | None = None, prompts: str | None = None) -> DemoResult:
        """Run the detector of ``prompts`` on one image.

        Args:
            image: a PIL image, a path or a ``[3, H, W]`` tensor (as :meth:`HOIDetector.predict`).
            score_threshold: triplets scoring below it are neither drawn nor listed.
            topk: at most this many are drawn and listed.
            tfe: training-free enhancement on or off (``None``: the checkpoint's setting). Ignored without a
                CLIP image tower.
            prompts: the prompt list (``None``: the checkpoint's prompts).

        Returns:
            :class:`DemoResult`. With the checkpoint's prompts and TFE setting its ``detections`` are
            ``HOIDetector.predict(image)``.
        """
        with self._lock:
            detector = self.detector_for(self.base_prompts if prompts is None else prompts)
            module = detector.module
            saved = module.use_tfe
            module.use_tfe = (saved if tfe is None else bool(tfe)) and self.tfe_available
            try:
                detections = detector.predict(image)
            finally:
                module.use_tfe = saved
        if isinstance(image, Image.Image):
            picture = ImageOps.exif_transpose(image) if detector.exif_transpose else image
        elif isinstance(image, (str, Path)):
            with Image.open(image) as img:
                picture = (ImageOps.exif_transpose(img) if detector.exif_transpose else img).convert("RGB")
        else:
            picture = detector._to_pil(image, 0)[0]
        drawn = draw_triplets(picture, detections.triplets, topk=topk, score_threshold=score_threshold)
        rows = triplet_rows(detections, topk, score_threshold)
        vocab = detector.vocabulary
        base_pairs = {(self.base_vocabulary.verbs[v], self.base_vocabulary.objects[o])
                      for v, o in self.base_vocabulary.hois}
        new = [f"{vocab.verbs[v]} {vocab.objects[o]}" for v, o in vocab.hois
               if (vocab.verbs[v], vocab.objects[o]) not in base_pairs]
        tfe_on = (self.default_tfe if tfe is None else bool(tfe)) and self.tfe_available
        message = (f"{len(rows)} of {len(detections)} triplets shown (score >= {score_threshold or 0:g}, top {topk}); "
                   f"TFE {'on' if tfe_on else 'off'}; {vocab.num_hois} HOI classes"
                   + (f", new: {', '.join(new)}" if new else ""))
        return DemoResult(drawn=drawn, rows=rows, detections=detections, vocabulary=vocab, message=message,
                          new_classes=new)


# ---------------------------------------------------------------------- examples
def checkpoint_examples(ckpt_path: str | Path, limit: int = 4) -> list[Path]:
    """Example images for a checkpoint: the first ``limit`` test images of the dataset it was trained on.

    The dataset root is read from the checkpoint's saved datamodule hyper-parameters (``root``; relative
    roots are tried from the working directory); the HICO-DET layout keeps test images in
    ``images/test2015`` (V-COCO: ``images/val2014``). Returns an empty list when there is none.
    """
    saved = load_checkpoint_file(ckpt_path).get("datamodule_hyper_parameters") or {}
    root = saved.get("root")
    if not root:
        return []
    for folder in ("images/test2015", "images/val2014", "images"):
        path = Path(root) / folder
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if files:
                return files[:limit]
    return []


def example_paths(given: Sequence[str | Path]) -> list[Path]:
    """Image files, and the images of folders, of the ``--examples`` list (a missing path is an error)."""
    paths: list[Path] = []
    for item in given:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            paths.append(path)
        else:
            raise ConfigurationError(f"--examples: {path} is neither an image file nor a folder")
    return paths


# ---------------------------------------------------------------------- the page (Gradio)
def _gradio():
    try:
        import gradio as gr
    except ImportError as err:
        raise ConfigurationError(f"the demo page needs Gradio, an optional dependency: {DEMO_INSTALL_HINT}") from err
    return gr


def build_demo(model: DemoModel, examples: Sequence[str | Path] = (), title: str = "HOICLIP demo"):
    """The Gradio page over a :class:`DemoModel` (not launched).

    Element ids (for scripts and browser tests): ``input-image``, ``threshold``, ``topk``, ``tfe``,
    ``prompts``, ``detect``, ``drawn``, ``triplets`` (the table), ``status``.

    Args:
        model: what the page runs.
        examples: example image paths shown under the input image (one click loads one).
        title: the page title.

    Returns:
        ``gradio.Blocks``.
    """
    gr = _gradio()
    from ..models.postprocess import score_range

    pp = model.detector.module.postprocess_config
    high = score_range(pp.score_mode, pp.tfe_weight if model.tfe_available else None, pp.tfe_mode)[1]
    base_topk = int(pp.topk)

    def run(image, threshold, topk, tfe, prompts):
        if image is None:
            raise gr.Error("upload an image or pick an example first")
        try:
            result = model.detect(image, score_threshold=float(threshold), topk=int(topk), tfe=bool(tfe),
                                  prompts=prompts)
        except ConfigurationError as err:
            raise gr.Error(str(err)) from None
        return result.drawn, result.rows, result.message

    def rerun(image, threshold, topk, tfe, prompts):  # a display setting changed: redraw if there is an image
        if image is None:
            return gr.skip(), gr.skip(), gr.skip()
        return run(image, threshold, topk, tfe, prompts)

    with gr.Blocks(title=title, analytics_enabled=False, fill_width=True) as demo:
        gr.Markdown(f"## {title}\nUpload an image or pick an example, then **Detect**. Edit the HOI prompts "
                    "(one class per line) to add or remove classes, e.g. add `a person riding a kite`.")
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(type="pil", label="image", sources=["upload", "clipboard"], height=320,
                                 elem_id="input-image")
                if examples:
                    gr.Examples(examples=[[str(p)] for p in examples], inputs=[image], label="examples",
                                elem_id="examples")
                with gr.Row():
                    threshold = gr.Slider(0.0, round(high, 2), value=0.0, step=0.01, label="score threshold",
                                          elem_id="threshold")
                    topk = gr.Slider(1, base_topk, value=min(5, base_topk), step=1, label="top-k triplets",
                                     elem_id="topk")
                tfe = gr.Checkbox(value=model.default_tfe, label="training-free enhancement (TFE)",
                                  interactive=model.tfe_available, elem_id="tfe")
                prompts = gr.Textbox(value=model.base_prompts, lines=6, max_lines=6,
                                     label=f"HOI prompts, one class per line ({model.base_vocabulary.num_hois} "
                                           "in the checkpoint)", elem_id="prompts")
                detect = gr.Button("Detect", variant="primary", elem_id="detect")
            with gr.Column(scale=3):
                drawn = gr.Image(type="pil", label="detections", interactive=False, height=420, elem_id="drawn")
                table = gr.Dataframe(headers=list(TABLE_HEADERS),
                                     datatype=["number", "str", "str", "number", "str", "str"],
                                     column_widths=["7%", "13%", "14%", "10%", "28%", "28%"],
                                     interactive=False, label="triplets", elem_id="triplets")
                status = gr.Markdown(elem_id="status")
        inputs, outputs = [image, threshold, topk, tfe, prompts], [drawn, table, status]
        detect.click(run, inputs=inputs, outputs=outputs)
        threshold.release(rerun, inputs=inputs, outputs=outputs)
        topk.release(rerun, inputs=inputs, outputs=outputs)
        tfe.input(rerun, inputs=inputs, outputs=outputs)
    return demo


def launch_demo(ckpt_path: str | Path, host: str = "127.0.0.1", port: int | None = None,
                examples: Sequence[str | Path] | None = None, device: str | None = None, block: bool = True,
                share: bool = False):
    """Load a checkpoint and serve its page.

    Args:
        ckpt_path: a ``.ckpt`` of ``hoiclip fit`` or ``hoiclip convert-official``.
        host: address to serve on (``0.0.0.0``: every interface).
        port: port to serve on (``None``: Gradio's first free port from 7860).
        examples: example images (``None``: :func:`checkpoint_examples`).
        device: as :meth:`HOIDetector.from_checkpoint` (``None``: CUDA when present).
        block: serve until interrupted; ``False`` returns at once (the page keeps running; ``.close()``).
        share: ask Gradio for a public link (needs internet).

    Returns:
        ``(blocks, url)``: the running ``gradio.Blocks`` and the local URL.
    """
    gr = _gradio()
    detector = HOIDetector.from_checkpoint(ckpt_path, device=device, batch_size=1)
    model = DemoModel(detector)
    paths = checkpoint_examples(ckpt_path) if examples is None else [Path(p) for p in examples]
    demo = build_demo(model, paths)
    allowed = sorted({str(Path(p).resolve().parent) for p in paths})
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: the page works offline
    _, url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, share=share,
                            allowed_paths=allowed, quiet=True, theme=theme, footer_links=[])
    log.info("demo of %s at %s (%d example images)", ckpt_path, url, len(paths))
    if block:
        try:
            demo.block_thread()
        finally:
            demo.close()
    return demo, url
