"""``fxlower view`` in a real browser: headless Chromium driven by selenium (scripts/setup.sh installs Debian's
chromium and chromium-driver, and selenium with the test extras).

Expected values come from the traced torch.fx modules (node counts, the Conv2d's stride and weight shape) and,
for the two-view page, from the manifest's origin links, not from the viewer's data.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

import fxlower
from fxlower.tools.viewer import write_html
from models import MODELS, trace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _browser():
    if not (CHROMIUM and DRIVER):
        pytest.fail("the viewer tests need Debian's chromium and chromium-driver: run scripts/setup.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


@pytest.fixture(scope="module")
def browser():
    d = _browser()
    yield d
    d.quit()


def _page(browser, tmp_path, gm, inputs, name):
    art_path = str(tmp_path / f"{name}.fxl")
    fxlower.export(gm, art_path, inputs)
    page = str(tmp_path / f"{name}.html")
    with fxlower.load(art_path) as art:
        write_html(art, page)
    browser.get("file://" + page)
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return !!(window.fxview && window.fxview.ready)"))
    return art_path


def _nested_count(gm: fx.GraphModule) -> int:
    """Every node of ``gm``'s graph and, recursively, of the GraphModules its call_module nodes call."""
    total = 0
    for n in gm.graph.nodes:
        total += 1
        if n.op == "call_module":
            sub = gm.get_submodule(n.target)
            if isinstance(sub, fx.GraphModule):
                total += _nested_count(sub)
    return total


@pytest.fixture(scope="module")
def resnet_page(browser, tmp_path_factory):
    case = MODELS["resnet"]()
    gm = trace(case)
    count = len(gm.graph.nodes)
    _page(browser, tmp_path_factory.mktemp("view"), trace(case), case.inputs, "resnet")
    return case, count


def test_renders_every_node_of_resnet(browser, resnet_page):
    case, count = resnet_page
    stats = browser.execute_script("return fxview.stats()")
    assert len(stats) == 1  # no core view: one pane
    assert stats[0]["laidOut"] == count
    assert stats[0]["instances"] == count
    assert len(browser.find_elements("css selector", ".pane canvas")) == 1


def _click_node(browser, view: int, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    assert browser.execute_script("return fxview.reveal(arguments[0], arguments[1])", view, key)
    pos = browser.execute_script("return fxview.screenPos(arguments[0], arguments[1])", view, key)
    canvas = browser.find_elements("css selector", ".pane canvas")[view]
    rect = browser.execute_script("var r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.width, r.height]",
                                  canvas)
    ActionChains(browser).move_to_element_with_offset(
        canvas, int(pos["x"] - rect[0] - rect[2] / 2), int(pos["y"] - rect[1] - rect[3] / 2)).click().perform()


def test_clicking_a_conv2d_shows_its_stride_and_weight_shape(browser, resnet_page):
    case, _ = resnet_page
    conv = case.module.get_submodule("layer2.0.conv1")  # the strided 3x3 conv of the second stage
    assert conv.stride == (2, 2)
    _click_node(browser, 0, "layer2_0_conv1")
    assert browser.execute_script("return fxview.selected()") == [0, "layer2_0_conv1"]
    panel = browser.find_element("id", "panel")
    assert panel.find_element("css selector", "h3").text == "layer2_0_conv1"
    assert panel.find_element("css selector", "tr[data-f='target'] td:nth-child(2)").text == "layer2.0.conv1"
    stride = [td.text for td in panel.find_elements("css selector", "#lowering tr[data-attr='stride'] td")]
    assert stride[0] == "stride" and stride[2] == f"({conv.stride[0]}, {conv.stride[1]})"
    assert stride[1] not in ("", "?")  # the declared attribute type (Manifest.modules)
    weight = [td.text for td in panel.find_elements("css selector", "#tensors tr[data-tensor='layer2.0.conv1.weight'] td")]
    shape = list(conv.weight.shape)
    assert weight[1] == "F32" and weight[2] == "[" + ", ".join(map(str, shape)) + "]"
    n = 1
    for d in shape:
        n *= d
    assert weight[3] == f"{n * 4 / 1024:.1f} KiB"
    assert len(weight[4]) == 64


def test_search_by_target_lists_every_match_and_selects_the_first(browser, resnet_page):
    from selenium.webdriver.common.keys import Keys

    case, _ = resnet_page
    gm = trace(case)
    adds = [n.name for n in gm.graph.nodes if n.op == "call_function" and n.target.__name__ == "add"]
    assert len(adds) == 8
    box = browser.find_element("id", "search")
    box.clear()
    box.send_keys("operator.add", Keys.ENTER)
    rows = browser.find_elements("css selector", "#results div[data-key]")
    assert [r.get_attribute("data-key") for r in rows] == adds
    assert browser.find_element("css selector", "#results .count").text == "8 matches"
    assert browser.execute_script("return fxview.selected()") == [0, adds[0]]


def test_nested_graph_collapses_and_expands(browser, tmp_path):
    case = MODELS["nested_graphmodule"]()
    gm = trace(case)
    _page(browser, tmp_path, trace(case), case.inputs, "nested")
    root, total = len(gm.graph.nodes), _nested_count(gm)
    assert total > root
    stats = browser.execute_script("return fxview.stats()")[0]
    assert (stats["laidOut"], stats["instances"]) == (root, total)
    browser.find_element("id", "expandall").click()
    assert browser.execute_script("return fxview.stats()")[0]["laidOut"] == total
    browser.find_element("id", "collapseall").click()
    assert browser.execute_script("return fxview.stats()")[0]["laidOut"] == root
    # revealing a node inside the nested graph expands its parent only
    inner = next(n.name for n in gm.get_submodule("block").graph.nodes if n.op == "call_module")
    assert browser.execute_script("return fxview.reveal(0, arguments[0])", "block>" + inner)
    assert browser.execute_script("return fxview.stats()")[0]["laidOut"] == total


def test_page_needs_no_network(tmp_path):
    case = MODELS["resnet"]()
    art_path = str(tmp_path / "r.fxl")
    fxlower.export(trace(case), art_path)
    page = str(tmp_path / "r.html")
    with fxlower.load(art_path) as art:
        write_html(art, page)
    text = open(page, encoding="utf-8").read()
    for needle in ("http://", "https://", "src=", "<link", "@import", "fetch(", "XMLHttpRequest"):
        assert needle not in text, needle


def test_layout_layers_by_longest_path_and_keeps_slots_apart():
    from types import SimpleNamespace as N

    from fxlower.tools.viewer import layout

    # x -> a, x -> b, (a, b) -> c, x -> d (a skip edge), (c, d) -> out
    nodes = [N(name="x", inputs=[]), N(name="a", inputs=["x"]), N(name="b", inputs=["x"]),
             N(name="c", inputs=["a", "b"]), N(name="d", inputs=["x"]), N(name="out", inputs=["c", "d"])]
    layers, xs = layout(nodes)
    assert layers == [0, 1, 1, 2, 1, 3]
    row1 = sorted(xs[i] for i in (1, 2, 4))
    assert row1 == [0.0, 1.0, 2.0]  # three nodes of layer 1 pulled to x's slot 0, pushed one slot apart
    assert xs[3] == (xs[1] + xs[2]) / 2 and xs[5] == (xs[3] + xs[4]) / 2


def test_layout_puts_a_constant_just_above_its_first_user():
    from types import SimpleNamespace as N

    from fxlower.tools.viewer import layout

    nodes = [N(name="x", op="placeholder", inputs=[]), N(name="w", op="get_attr", inputs=[]),
             N(name="a", op="call_function", inputs=["x"]), N(name="b", op="call_function", inputs=["a"]),
             N(name="c", op="call_function", inputs=["b", "w"]), N(name="out", op="output", inputs=["c"])]
    assert layout(nodes)[0] == [0, 2, 1, 2, 3, 4]


def test_two_view_artifact_links_module_and_core_nodes_both_ways(browser, tmp_path):
    """Selecting a module node highlights exactly its linked core nodes (those whose origin names it), and
    selecting a core node highlights its module node."""
    import msgpack

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2)).eval()
    gm = fx.symbolic_trace(model)
    art_path = tmp_path / "two.fxl"
    fxlower.export(gm, art_path, (torch.randn(1, 3, 6, 6),), core=True)
    page = tmp_path / "two.html"
    with fxlower.load(art_path) as art:
        write_html(art, str(page))
    browser.get("file://" + str(page))
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return !!(window.fxview && window.fxview.ready)"))
    assert len(browser.find_elements("css selector", ".pane canvas")) == 2
    manifest = msgpack.unpackb((art_path / "manifest.msgpack").read_bytes())
    core = manifest["core"]["graphs"][0]["nodes"]
    expected = sorted(n["name"] for n in core if n["origin"] == {"graph": 0, "node": "_0"})
    assert expected  # the conv's core nodes (aten.convolution.default at least)
    _click_node(browser, 0, "_0")
    assert browser.execute_script("return fxview.selected()") == [0, "_0"]
    assert browser.execute_script("return fxview.linked(1)") == expected
    _click_node(browser, 1, expected[0])
    assert browser.execute_script("return fxview.linked(0)") == ["_0"]
