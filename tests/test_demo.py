"""`hoiclip demo`: the page's table, the open-vocabulary DemoModel, and the page itself in a real headless
browser (Debian's chromium + chromedriver, driven by Selenium; skipped when they are absent)."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import time
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from hoiclip_lightning.data.synthetic import synthetic_vocabulary
from hoiclip_lightning.inference import HOIDetector, HOITriplet, ImageDetections
from hoiclip_lightning.inference.demo import TABLE_HEADERS, DemoModel, format_box, triplet_rows
from hoiclip_lightning.inference.prompt_list import vocabulary_from_prompts
from hoiclip_lightning.models import HOICLIPModule
from hoiclip_lightning.models.config import HOICLIPConfig, PostProcessConfig

ROOT = Path(__file__).resolve().parents[1]
KITE = "a person riding a kite"


# ---------------------------------------------------------------------- the table
def test_triplet_rows_hand_computed():
    def triplet(score, verb, obj):
        return HOITriplet((1.0, 2.04, 30.06, 40.0), (5.55, 6.0, 7.0, 8.25), 1, obj, 2, verb, 3, f"{verb} {obj}", score)

    dets = ImageDetections("", 64, 48, [triplet(1.23456, "hold", "cup"), triplet(0.5, "ride", "kite"),
                                        triplet(0.2, "fly", "kite")])
    assert format_box((1.0, 2.04, 30.06, 40.0)) == "1.0, 2.0, 30.1, 40.0"
    assert triplet_rows(dets) == [
        [1, "hold", "cup", 1.2346, "1.0, 2.0, 30.1, 40.0", "5.5, 6.0, 7.0, 8.2"],
        [2, "ride", "kite", 0.5, "1.0, 2.0, 30.1, 40.0", "5.5, 6.0, 7.0, 8.2"],
        [3, "fly", "kite", 0.2, "1.0, 2.0, 30.1, 40.0", "5.5, 6.0, 7.0, 8.2"],
    ]
    assert [r[1] for r in triplet_rows(dets, topk=2)] == ["hold", "ride"]
    assert [r[1] for r in triplet_rows(dets, score_threshold=0.5)] == ["hold", "ride"]
    assert [r[1] for r in triplet_rows(dets, topk=1, score_threshold=0.3)] == ["hold"]
    assert len(TABLE_HEADERS) == 6


# ---------------------------------------------------------------------- a tiny checkpoint
def _tiny_checkpoint(folder: Path) -> Path:
    """A randomly initialised tiny HOICLIP (configs/model/tiny.yaml) of the synthetic vocabulary, saved as
    `hoiclip fit` saves it (plain-dict hyper-parameters, stored vocabulary, evaluation transforms).

    Its HOI classifier biases are set to -1, so that a class added by a prompt (bias 0, see
    `HOICLIP.set_vocabulary`) outranks them: the tests can see the new class on top of the table."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocabulary.json"
    synthetic_vocabulary().to_json(vocab_file)
    init = yaml.safe_load((ROOT / "configs/model/tiny.yaml").read_text())["init_args"]
    torch.manual_seed(0)
    # no triplet NMS: the untrained queries give near-identical boxes, which NMS would reduce to a few triplets
    module = HOICLIPModule(vocabulary=str(vocab_file), net=HOICLIPConfig(**init["net"]),
                           postprocess=PostProcessConfig(**init["postprocess"], use_nms=False))
    with torch.no_grad():  # an unconfident model: its classes get a bias of -1, a class added later gets 0
        module.model.visual_projection.bias.fill_(-1.0)
    hparams = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in module.hparams.items()}
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": hparams,
            "datamodule_hyper_parameters": {"root": str(folder / "no_data"), "test_scale": 64, "test_max_size": 96,
                                            "clip_image_size": 64},
            "pytorch-lightning_version": lightning.__version__}
    module.on_save_checkpoint(ckpt)
    path = folder / "tiny_synthetic.ckpt"
    torch.save(ckpt, path)
    return path


def _example_image(path: Path) -> Path:
    """A 96x72 picture: a stick figure holding a ball on a noisy background (lossless PNG)."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(150, 200, (72, 96, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 8, 52, 20), fill=(120, 70, 30))
    draw.line((46, 20, 46, 46), fill=(20, 20, 20), width=3)
    draw.line((46, 46, 38, 66), fill=(20, 20, 20), width=3)
    draw.line((46, 46, 54, 66), fill=(20, 20, 20), width=3)
    draw.line((46, 28, 62, 34), fill=(20, 20, 20), width=2)
    draw.ellipse((60, 30, 72, 42), fill=(200, 40, 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    return _tiny_checkpoint(folder), _example_image(folder / "examples" / "stick.png")


def test_demo_model_equals_the_detector_and_follows_the_prompts(tiny_demo):
    ckpt, image = tiny_demo
    model = DemoModel(HOIDetector.from_checkpoint(ckpt, device="cpu", batch_size=1))
    reference = HOIDetector.from_checkpoint(ckpt, device="cpu", batch_size=1)

    # the checkpoint's prompts and TFE setting: exactly HOIDetector.predict
    result = model.detect(image, score_threshold=None, topk=7)
    expected = reference.predict(image)
    assert result.detections == expected and result.rows == triplet_rows(expected, 7) and len(result.rows) == 7
    assert result.drawn.size == (640, 480)  # 96x72 enlarged to a short side of 480
    assert result.new_classes == [] and "TFE on" in result.message

    # one prompt added: the label space of HOIDetector.set_vocabulary, the new class among the scored ones
    prompts = model.base_prompts + "\n" + KITE
    added = model.detect(image, score_threshold=None, topk=None, prompts=prompts)
    switched = HOIDetector.from_checkpoint(ckpt, device="cpu", batch_size=1)
    switched.set_vocabulary(vocabulary_from_prompts(switched.vocabulary, prompts), zero_shot="default")
    assert added.vocabulary.num_hois == 51 and added.new_classes == ["ride kite"]
    assert added.detections == switched.predict(image)
    assert added.rows[0][1:3] == ["ride", "kite"] and expected.triplets[0].hoi_name != "ride kite"  # a new top

    # back to the checkpoint's prompts: its own (trained) rows again, and the checkpoint detector untouched
    again = model.detect(image, score_threshold=None, topk=7, prompts=model.base_prompts)
    assert again.rows == result.rows and model.detector.vocabulary.num_hois == 50

    # TFE off: the scores of a module whose post-processing has no TFE
    off = model.detect(image, score_threshold=None, topk=None, tfe=False)
    reference.module.use_tfe = False
    assert off.detections == reference.predict(image) and off.detections != expected
    assert model.detector.module.use_tfe  # restored after the request

    # threshold and top-k act on the shown rows only
    high = expected.triplets[2].score
    assert model.detect(image, score_threshold=high, topk=7).rows == triplet_rows(expected, 7, high)


def test_demo_subcommand_is_listed_and_has_help(capsys):
    from hoiclip_lightning.cli import EXTRA_SUBCOMMANDS, main

    assert "demo" in EXTRA_SUBCOMMANDS
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--ckpt_path" in out and "--examples" in out and "lightning[demo]" in out  # the hint, maybe wrapped


def test_demo_subcommand_reports_a_missing_checkpoint_or_gradio_in_one_line(tmp_path, capsys):
    import importlib.util

    from hoiclip_lightning.cli import main

    with pytest.raises(SystemExit) as info:
        main(["demo", "--ckpt_path", str(tmp_path / "missing.ckpt")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    if importlib.util.find_spec("gradio") is None:  # the optional dependency is checked first
        assert err.startswith("hoiclip demo: error: ConfigurationError: the demo page needs Gradio") and "[demo]" in err
    else:
        assert err.startswith("hoiclip demo: error: CheckpointError: checkpoint not found:") and "missing.ckpt" in err


# ---------------------------------------------------------------------- the page in a real browser
def _browser_missing() -> str | None:
    for module in ("gradio", "selenium"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[dev]')"
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            return f"{program} is not installed (Debian: apt-get install chromium chromium-driver; .ci/run does it)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _table(driver) -> list[list[str]]:
    """The cells of the page's triplet table (Gradio renders its rows as ARIA rows of grid cells)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#triplets [role=row]'))"
        ".map(r => Array.from(r.querySelectorAll('[role=gridcell]')).map(c => c.textContent.trim()))"
        ".filter(cells => cells.length > 0)")


def _as_text(rows: list[list]) -> list[list[str]]:
    return [[f"{v:g}" if isinstance(v, float) else str(v) for v in row] for row in rows]


@pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))
def test_demo_page_in_headless_chromium(tiny_demo):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from hoiclip_lightning.inference.demo import launch_demo

    started = time.perf_counter()
    ckpt, image = tiny_demo
    expected = HOIDetector.from_checkpoint(ckpt, device="cpu", batch_size=1).predict(image)
    demo, url = launch_demo(ckpt, port=_free_port(), examples=[image], device="cpu", block=False)
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(url)
        wait.until(lambda d: d.find_elements(By.ID, "detect"))
        assert driver.title == "HOICLIP demo"
        assert driver.find_element(By.CSS_SELECTOR, "#prompts textarea").get_attribute("value").splitlines() == \
            synthetic_vocabulary().hoi_prompts

        # the example image, submitted: the drawn image and the table of HOIDetector's top 5 triplets
        driver.find_element(By.CSS_SELECTOR, "#examples button").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"))
        driver.find_element(By.ID, "detect").click()
        wait.until(lambda d: "TFE on" in d.find_element(By.ID, "status").text)
        wait.until(lambda d: len(_table(d)) == 5)
        first = _table(driver)
        assert first == _as_text(triplet_rows(expected, 5))
        size = driver.execute_script("const i = document.querySelector('#drawn img');"
                                     "return i && i.complete ? [i.naturalWidth, i.naturalHeight] : null")
        assert size == [640, 480]  # the drawing of the 96x72 example, enlarged to a short side of 480

        # a new prompt: the table follows the new label space (HOIDetector.set_vocabulary)
        textarea = driver.find_element(By.CSS_SELECTOR, "#prompts textarea")
        textarea.send_keys(Keys.CONTROL, Keys.END)
        textarea.send_keys("\n" + KITE)
        driver.find_element(By.ID, "detect").click()
        wait.until(lambda d: "new: ride kite" in d.find_element(By.ID, "status").text)
        wait.until(lambda d: _table(d) != first)
        assert _table(driver)[0][1:3] == ["ride", "kite"]  # the new class tops the table (see _tiny_checkpoint)
        switched = HOIDetector.from_checkpoint(ckpt, device="cpu", batch_size=1)
        base_prompts = "\n".join(switched.vocabulary.hoi_prompts)
        switched.set_vocabulary(vocabulary_from_prompts(switched.vocabulary, f"{base_prompts}\n{KITE}"))
        assert _table(driver) == _as_text(triplet_rows(switched.predict(image), 5))
    finally:
        driver.quit()
        demo.close()
    print(f"browser test: {time.perf_counter() - started:.1f} s")
