"""Regenerate docs/viewer.png: `fxlower view` on the ResNet-shaped zoo model (tests/models.py) in headless
Chromium (scripts/setup.sh installs it), a strided Conv2d selected.

    PYTHONPATH=.:tests python3 scripts/gen_viewer_png.py
"""

import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import fxlower  # noqa: E402
from fxlower.tools.viewer import write_html  # noqa: E402
from models import MODELS, trace  # noqa: E402


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    case = MODELS["resnet"]()
    with tempfile.TemporaryDirectory() as d:
        art_path = os.path.join(d, "resnet.fxl")
        fxlower.export(trace(case), art_path, case.inputs)
        page = os.path.join(d, "resnet.html")
        with fxlower.load(art_path) as art:
            write_html(art, page)
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium")
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,860", "--hide-scrollbars"):
            opts.add_argument(a)
        drv = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        try:
            drv.get("file://" + page)
            while not drv.execute_script("return !!(window.fxview && window.fxview.ready)"):
                time.sleep(0.02)
            drv.execute_script("var b = document.getElementById('search'); b.value = 'layer2_0_conv1';"
                               "b.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}));")
            time.sleep(0.3)
            drv.save_screenshot(os.path.join(ROOT, "docs", "viewer.png"))
        finally:
            drv.quit()


if __name__ == "__main__":
    main()
