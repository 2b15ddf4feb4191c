"""``pnpseg demo``: the Gradio app, driven through gradio_client and seen in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.testing import make_scene

pytestmark = pytest.mark.slow  # a few seconds each: not in the quick loop

gr = pytest.importorskip("gradio", reason="the demo needs the [demo] extra")
pytest.importorskip("matplotlib", reason="the demo needs the [viz] extra")
from gradio_client import Client, handle_file  # noqa: E402

from pnpseg.demo import DemoSession, build_demo  # noqa: E402

CLASSES = "red,blue,green"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    make_scene(96, 160, ["red", "blue", "green"], seed=3)[0].save(path)
    return path


def segment_cli(scene, out, *flags):
    result = CliRunner().invoke(
        app, ["segment", str(scene), "--classes", CLASSES, "--adapter", "synthetic", "--out", str(out), *flags]
    )
    assert result.exit_code == 0, result.output
    return np.array(Image.open(out / "scene.png"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(scene):
    """The demo on a free loopback port, opened with the scene prefilled."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    port = free_port()
    page = build_demo(DemoSession("synthetic", device="cpu"), scene, CLASSES)
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    page.close()


def test_sliders_re_render_without_another_model_pass(scene, tmp_path, monkeypatch):
    session = DemoSession("synthetic", device="cpu")
    image = Image.open(scene).convert("RGB")
    cached = session.saliency(image, CLASSES.split(","), "all", 3, 2)
    calls = []
    adapter = session.segmenter().adapter
    monkeypatch.setattr(adapter, "forward", lambda *a, **k: calls.append(a) or pytest.fail("model ran"))
    rendered = session.render(cached, 0.3, 0.02, 3, 2)
    assert not calls
    assert np.array_equal(rendered["labels"], segment_cli(scene, tmp_path / "cli", "--threshold", "0.3"))
    assert rendered["record"]["settings"]["params"]["threshold"] == 0.3
    assert [name for _, name in rendered["maps"]] == CLASSES.split(",")


def test_the_page_segments_and_re_renders_like_the_cli(served, scene, tmp_path):
    client = Client(served, verbose=False)
    first = client.predict(handle_file(str(scene)), CLASSES, "all", 3, 2, 0.15, 0.02, api_name="/segment")
    files = [entry if isinstance(entry, str) else entry["path"] for entry in first[2]]
    png = next(f for f in files if f.endswith(".png"))
    before = segment_cli(scene, tmp_path / "a")
    assert np.array_equal(np.array(Image.open(png)), before)
    assert json.loads(first[3])["classes"]["red"] > 0.01
    moved = client.predict(3, 2, 0.4, 0.05, api_name="/rerender")  # the threshold slider
    png = next((e if isinstance(e, str) else e["path"]) for e in moved[2] if str(e).find(".png") >= 0)
    expected = segment_cli(scene, tmp_path / "b", "--threshold", "0.4", "--blur-sigma", "0.05")
    assert np.array_equal(np.array(Image.open(png)), expected) and not np.array_equal(expected, before)


def test_a_missing_model_is_the_cli_message_in_the_page(scene, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cli = CliRunner().invoke(app, ["segment", str(scene), "--classes", "red", "--model", "Salesforce/no-such-model"])
    message = cli.output.strip().removeprefix("error:").strip()
    assert cli.exit_code != 0 and "not in the local cache" in message
    port = free_port()
    page = build_demo(DemoSession("blip", model="Salesforce/no-such-model", device="cpu"))
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        with pytest.raises(Exception) as raised:
            client.predict(handle_file(str(scene)), "red", "all", 1, 1, 0.15, 0.05, api_name="/segment")
    finally:
        page.close()
    assert " ".join(message.split()) in " ".join(str(raised.value).split())


def _browser():
    """Headless Chromium driven by Selenium with the OS's chromedriver (never a download)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser check needs selenium")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no chromium/chromedriver on this machine (.ci/run installs them with apt-get)")
    os.environ["SE_AVOID_STATS"] = "true"  # Selenium Manager stays offline
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1150"):
        options.add_argument(flag)
    options.binary_location = chromium
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def test_a_real_browser_renders_the_demo(served, tmp_path):
    browser = _browser()
    try:
        browser.get(served)
        deadline = time.monotonic() + 60
        count = "return document.querySelectorAll('img').length"
        while browser.execute_script(count) < 5:  # the image, the overlay and three class maps
            assert time.monotonic() < deadline, "the page never showed a segmentation"
            time.sleep(0.5)
        time.sleep(1.0)
        shot = tmp_path / "demo.png"
        browser.save_screenshot(str(shot))
    finally:
        browser.quit()
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] > 800 and pixels.std() > 20  # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # text, images and widgets
    if os.environ.get("PNPSEG_DOCS_SCREENSHOT"):  # how docs/images/demo.png is made
        shutil.copy(shot, os.environ["PNPSEG_DOCS_SCREENSHOT"])


# -- issue 21.20: the demo keeps the CLI's bounds ----------------------------------------------
@pytest.fixture
def counted_page(monkeypatch):
    """A fresh demo page with the model passes it makes counted."""
    from pnpseg.testing import SyntheticAdapter

    passes = []
    real = SyntheticAdapter.forward
    monkeypatch.setattr(SyntheticAdapter, "forward", lambda self, *a: passes.append(a) or real(self, *a))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    port = free_port()
    page = build_demo(DemoSession("synthetic", device="cpu"))
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield Client(f"http://127.0.0.1:{port}/", verbose=False), passes
    page.close()


def test_an_upload_over_the_pixel_limit_is_refused_before_the_model(counted_page, tmp_path, monkeypatch):
    """A small file of many pixels took the server from 2.3 to 9.9 GB: the demo ignored the limit."""
    client, passes = counted_page
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # what --max-image-pixels 1000000 sets
    bomb = tmp_path / "bomb.png"
    Image.new("L", (1200, 1000)).save(bomb)  # 1.2 MP: over the limit, under PIL's own 2x error
    with pytest.raises(Exception, match="image too large") as raised:
        client.predict(handle_file(str(bomb)), CLASSES, "all", 3, 2, 0.15, 0.02, api_name="/segment")
    assert passes == [] and "bomb.png" not in str(raised.value)


def test_more_classes_than_a_label_png_holds_are_refused_before_the_model(counted_page, scene):
    client, passes = counted_page
    names = ",".join(f"class {i}" for i in range(500))
    with pytest.raises(Exception, match="label PNGs hold at most 255"):
        client.predict(handle_file(str(scene)), names, "all", 3, 2, 0.15, 0.02, api_name="/segment")
    assert passes == []


def test_page_messages_do_not_speak_of_command_line_flags(counted_page, scene):
    client, _ = counted_page
    with pytest.raises(Exception, match="no class names given") as raised:
        client.predict(handle_file(str(scene)), " , ", "all", 3, 2, 0.15, 0.02, api_name="/segment")
    assert "--classes" not in str(raised.value)
