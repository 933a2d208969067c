"""The page (``binsr/web/static``) in a real browser: Debian's Chromium driven by Playwright against
``binsr serve``'s app under uvicorn on 127.0.0.1. Pictures are chosen with the file input, upscaled,
compared on the slider, zoomed to 1:1 and downloaded, one by one and as a zip; the downloads must
be the files ``binsr upscale`` writes. ``BINSR_WEB_SCREENSHOT=docs/serve.png`` also saves the
screenshot there (the README's picture)."""

import io
import os
import shutil
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SAMPLE = Path(__file__).resolve().parents[2] / "src" / "binsr" / "assets" / "sample_hr.png"


@pytest.fixture(scope="module")
def server_url():
    """``binsr serve``'s app under uvicorn on 127.0.0.1, on a free port, in a thread."""
    import uvicorn

    from binsr.cli.serve import listen
    from binsr.web import ServeOptions, create_app

    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(ServeOptions(threads=1)), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < end, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_upscale_compare_and_download_in_a_browser(server_url, browser, tmp_path, cli_output, png_bytes):
    inputs = {"sample.png": SAMPLE.read_bytes(), "rgba.png": png_bytes("rgba"), "notes.txt": b"not a picture\n"}
    for name, data in inputs.items():
        (tmp_path / name).write_bytes(data)
    want = {f"{Path(n).stem}_x4.png": cli_output(d, n) for n, d in inputs.items() if n.endswith(".png")}
    context = browser.new_context(viewport={"width": 1100, "height": 860}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # CSP refusals and script errors; "Failed to load resource" is the 415 of notes.txt and the
    # progress polls that end in 404 with their job
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    page.goto(server_url)
    page.wait_for_selector("#model option", state="attached")
    assert page.input_value("#model") == "zoo:srresnet_lite_e2fif_x4" and page.input_value("#scale") == "4"

    page.set_input_files("#files", [str(tmp_path / n) for n in inputs])
    expect(page.locator(".card[data-state=done], .card[data-state=error]")).to_have_count(3, timeout=20_000)
    cards = page.locator(".card")
    assert [cards.nth(i).get_attribute("data-state") for i in range(3)] == ["done", "done", "error"]
    assert "not an image" in cards.nth(2).locator(".message").inner_text()
    assert "engine" in cards.first.locator(".info").inner_text()
    assert float(cards.first.get_attribute("data-result-seconds")) > 0

    got = {}
    for i in range(2):
        with page.expect_download() as download:
            cards.nth(i).locator("a.download").click()
        got[download.value.suggested_filename] = Path(download.value.path()).read_bytes()
    assert got.keys() == want.keys()
    for name, data in got.items():  # the very file binsr upscale writes, so the same pixels
        assert data == want[name] and np.array_equal(_pixels(data), _pixels(want[name])), name

    with page.expect_download() as download:
        page.click("#zip")
    with zipfile.ZipFile(download.value.path()) as zf:
        assert zf.testzip() is None
        assert {n: zf.read(n) for n in zf.namelist()} == want

    card = cards.first
    compare, slider = card.locator(".compare"), card.locator(".slider")
    box = compare.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    assert abs(float(slider.input_value()) - 30) < 1
    handle = card.locator(".handle").bounding_box()
    assert abs(handle["x"] + 1 - (box["x"] + box["width"] * 0.3)) < 2
    # the bicubic side is the server's enlargement, as large as the result
    sizes = compare.evaluate("c => [...c.querySelectorAll('img')].map(i => [i.naturalWidth, i.naturalHeight])")
    assert sizes == [[384, 384], [384, 384]]

    card.locator(".zoom").click()
    shown = card.locator(".after").evaluate("i => i.getBoundingClientRect().width * devicePixelRatio")
    assert abs(shown - 384) < 1
    card.locator(".zoom").click()
    assert not errors, errors

    shot = tmp_path / "serve.png"  # the page's top down to the first picture's slider
    bottom = card.bounding_box()
    page.screenshot(path=str(shot), clip={"x": 0, "y": 0, "width": 1100, "height": bottom["y"] + bottom["height"] + 12})
    assert Image.open(shot).width == 1100
    if os.environ.get("BINSR_WEB_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["BINSR_WEB_SCREENSHOT"])
    context.close()


def test_self_ensemble_switch_in_a_browser(server_url, browser, tmp_path, cli_output, png_bytes):
    (tmp_path / "rgba.png").write_bytes(png_bytes("rgba"))
    want = cli_output(png_bytes("rgba"), "rgba.png", "--self-ensemble")
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(server_url)
    page.wait_for_selector("#model option", state="attached")
    assert "with the self-ensemble" in page.inner_text("#limits")
    page.check("#ensemble")
    page.set_input_files("#files", [str(tmp_path / "rgba.png")])
    card = page.locator(".card")
    expect(card).to_have_attribute("data-state", "done", timeout=20_000)
    assert "x8 self-ensemble" in card.locator(".info").inner_text()
    with page.expect_download() as download:
        card.locator("a.download").click()
    assert download.value.suggested_filename == "rgba_x4.png"
    assert Path(download.value.path()).read_bytes() == want
    context.close()
