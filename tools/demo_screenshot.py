"""Screenshot of the `hoiclip demo` page in headless chromium (the picture of docs/inference.md).

Serves the page for a checkpoint, picks an example image, optionally adds HOI prompts, presses Detect and
saves the whole page. Needs the [dev] extra (gradio, selenium) and Debian's chromium + chromium-driver.

    # docs/assets/demo.png: the best checkpoint of a `make quickstart` run (validation mAP 62.17 in its name)
    Q=data/quickstart/images/test2015
    python tools/demo_screenshot.py --ckpt_path runs/quickstart/checkpoints/epoch015-map62.17.ckpt \
        --examples $Q/synth_test_00000015.jpg $Q/synth_test_00000001.jpg $Q/synth_test_00000002.jpg \
        $Q/synth_test_00000031.jpg --add-prompt "a person riding a kite" --out docs/assets/demo.png
"""

from __future__ import annotations

import argparse
import shutil
import socket
import time
from pathlib import Path

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--examples", nargs="+", required=True, help="example images; the first is submitted")
    parser.add_argument("--add-prompt", action="append", default=[], help="prompt line appended before Detect")
    parser.add_argument("--out", default="docs/assets/demo.png")
    parser.add_argument("--width", type=int, default=1500)
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from hoiclip_lightning.inference.demo import launch_demo

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo, url = launch_demo(args.ckpt_path, port=port, examples=args.examples, device="cpu", block=False)
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={args.width},1000"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(url)
        wait.until(lambda d: d.find_elements(By.ID, "detect"))
        driver.find_element(By.CSS_SELECTOR, "#examples button").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"))
        if args.add_prompt:
            textarea = driver.find_element(By.CSS_SELECTOR, "#prompts textarea")
            textarea.send_keys(Keys.CONTROL, Keys.END)
            textarea.send_keys("".join("\n" + p for p in args.add_prompt))
        driver.find_element(By.ID, "detect").click()
        wait.until(lambda d: "triplets shown" in d.find_element(By.ID, "status").text)
        time.sleep(1.0)  # let the drawn image finish loading
        driver.set_window_size(args.width, 2000)
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.5)
        # the page without the empty space below it: down to the lowest of the button and the status line
        bottom = driver.execute_script("return Math.max(...['detect', 'status'].map("
                                       "i => document.getElementById(i).getBoundingClientRect().bottom))")
        ratio = driver.execute_script("return window.devicePixelRatio")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
        with Image.open(args.out) as shot:
            cropped = shot.crop((0, 0, shot.width, min(shot.height, round((bottom + 16) * ratio))))
        cropped.save(args.out, optimize=True)
        print(f"wrote {args.out} ({cropped.width}x{cropped.height}); status: "
              f"{driver.find_element(By.ID, 'status').text}")
    finally:
        driver.quit()
        demo.close()


if __name__ == "__main__":
    main()
