"""How long ``fxlower view``'s page takes to become interactive on the 6,000-node graph of bench_export.py
(BlockStack: 2,000 blocks of [Linear, ReLU, add]), in headless Chromium.

    PYTHONPATH=. python3 benchmarks/bench_viewer.py [--blocks 2000] [--runs 3]

Reports: the Python side (load + layout + page written), the page's size, and per run the time from the
navigation's start until the page says it is ready (``fxview.ready``, set after the first frame is drawn:
``performance.now()`` then, i.e. since navigation start, the HTML parse included), the wall time seen by the
driver, then the time of a search over every node, of revealing and selecting a node, and of one full redraw.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch
import torch.fx as fx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_export import BlockStack  # noqa: E402

import fxlower  # noqa: E402
from fxlower.tools.viewer import write_html  # noqa: E402


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="bench-viewer-")
    try:
        torch.manual_seed(0)
        model = BlockStack(args.blocks).eval()
        art_path = os.path.join(d, "graph.fxl")
        fxlower.export(fx.symbolic_trace(model), art_path, (torch.randn(4, 16),))
        page = os.path.join(d, "graph.html")
        t = time.perf_counter()
        with fxlower.load(art_path) as art:
            nodes = sum(len(g.nodes) for g in art.manifest.graphs)
            size = write_html(art, page)
        py = time.perf_counter() - t
        print(f"graph: {nodes} nodes; load + layout + write page {py:.2f} s; page {size / 1e6:.2f} MB", flush=True)
        drv = _browser()
        try:
            ready, wall, find, reveal, redraw = [], [], [], [], []
            for _ in range(args.runs):
                t = time.perf_counter()
                drv.get("file://" + page)
                while not drv.execute_script("return !!(window.fxview && window.fxview.ready)"):
                    time.sleep(0.01)
                wall.append(time.perf_counter() - t)
                ready.append(drv.execute_script("return fxview.tti") / 1000)
                stats = drv.execute_script("return fxview.stats()")[0]
                assert stats["laidOut"] == nodes, stats
                find.append(drv.execute_script(
                    "var t = performance.now(); var b = document.getElementById('search'); b.value = 'relu';"
                    "b.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}));"
                    "return performance.now() - t;") / 1000)
                matches = drv.execute_script("return document.querySelector('#results .count').textContent")
                reveal.append(drv.execute_script(
                    "var t = performance.now(); fxview.reveal(0, 'blocks_1500_linear'); return performance.now() - t;")
                    / 1000)
                redraw.append(drv.execute_script(
                    "return new Promise(function (done) { var t = performance.now(); fxview.reveal(0, 'blocks_10_relu');"
                    "requestAnimationFrame(function () { requestAnimationFrame(function () {"
                    " done(performance.now() - t); }); }); });") / 1000)
            print(f"search 'relu': {matches}")
            med = statistics.median
            print(f"ready (navigation start -> first frame, interactive): median {med(ready):.2f} s "
                  f"({', '.join(f'{x:.2f}' for x in ready)}); driver wall {med(wall):.2f} s")
            print(f"search over all nodes {med(find) * 1000:.0f} ms; reveal + select {med(reveal) * 1000:.0f} ms; "
                  f"pan + redraw (two frames) {med(redraw) * 1000:.0f} ms")
        finally:
            drv.quit()
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
