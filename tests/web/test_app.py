"""``binsr serve``'s routes through Starlette's TestClient: the page, the zoo list, downloads equal to
``binsr upscale``'s files for every kind of picture, every bad upload answered with a JSON 4xx while
the server keeps working, the one-job-at-a-time queue and its progress."""

import io
import re
import threading
import time

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from binsr.pretrained import PREFIX, default_model, zoo_names
from binsr.web import STATIC_DIR, ServeOptions, create_app


def _client(**options) -> TestClient:
    return TestClient(create_app(ServeOptions(threads=1, **options)))


@pytest.fixture(scope="module")
def client():
    with _client() as c:
        yield c


def _post(client, data: bytes, name: str = "pic.png", route: str = "/api/upscale", **fields):
    return client.post(route, files={"image": (name, data, "application/octet-stream")},
                       data={k: str(v) for k, v in fields.items()})


def test_models_lists_the_zoo_and_the_limits(client):
    info = client.get("/api/models").json()
    assert info["default"] == default_model(4)
    assert sorted(m["name"] for m in info["models"]) == sorted(PREFIX + n for n in zoo_names())
    assert info["scales"] == sorted({m["scale"] for m in info["models"]})
    assert {m["scale"] for m in info["models"] if m["default"]} == set(info["scales"])
    assert info["max_upload_bytes"] == 50 << 20 and info["max_pixels"] == 50_000_000
    assert info["max_ensemble_pixels"] == 50_000_000 // 8  # a self-ensemble job: no more work than a plain one


def test_page_is_bundled_whole(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert refs and all(r.startswith("/static/") for r in refs)
    for ref in refs:
        assert client.get(ref).status_code == 200
    for path in STATIC_DIR.iterdir():  # no CDN, no web font, nothing fetched from elsewhere
        text = path.read_text()
        assert not re.search(r"https?://|@import|@font-face|url\(", text), path.name


@pytest.mark.parametrize("kind", ["rgb", "rgb16", "rgba", "gray"])
def test_upscale_gives_the_bytes_binsr_upscale_writes(client, cli_output, kind, png_bytes):
    data = png_bytes(kind)
    reply = _post(client, data, f"{kind}.png")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "image/png"
    assert reply.content == cli_output(data, f"{kind}.png")
    assert f'filename="{kind}_x4.png"' in reply.headers["content-disposition"]
    assert reply.headers["x-binsr-model"] == default_model(4) and reply.headers["x-binsr-scale"] == "4"
    assert float(reply.headers["x-engine-seconds"]) > 0
    steps = dict(re.fullmatch(r"(\w+);dur=([\d.]+)", t).groups() for t in reply.headers["server-timing"].split(", "))
    assert list(steps) == ["decode", "engine", "encode"]
    assert float(steps["engine"]) == pytest.approx(float(reply.headers["x-engine-seconds"]) * 1000, abs=0.1)
    out = Image.open(io.BytesIO(reply.content))
    assert out.size == (28 * 4, 20 * 4)
    assert out.mode == {"rgb": "RGB", "rgb16": "RGB", "rgba": "RGBA", "gray": "L"}[kind]
    if kind == "rgb":
        assert out.info["icc_profile"] == Image.open(io.BytesIO(data)).info["icc_profile"]
    if kind == "rgb16":
        assert reply.content[24] == 16  # IHDR bit depth: 16 bits kept


def test_scale_and_model_pick_the_zoo_entry(client, cli_output, png_bytes):
    data = png_bytes("rgb", 12, 10)
    reply = _post(client, data, "s.png", scale=2)
    assert reply.status_code == 200 and reply.headers["x-binsr-model"] == default_model(2)
    assert reply.content == cli_output(data, "s.png", "--scale", "2")
    name = default_model(3)
    reply = _post(client, data, "s.png", model=name.removeprefix(PREFIX), scale=3)  # prefix optional
    assert reply.status_code == 200 and reply.headers["x-binsr-model"] == name
    assert Image.open(io.BytesIO(reply.content)).size == (30, 36)


def test_bicubic_is_pillows_enlargement(client, png_bytes):
    data = png_bytes("rgba")
    reply = _post(client, data, route="/api/bicubic", scale=2)
    assert reply.status_code == 200 and reply.headers["x-binsr-scale"] == "2"
    src = Image.open(io.BytesIO(data))
    want = src.resize((src.width * 2, src.height * 2), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(reply.content))), np.asarray(want))


def test_self_ensemble_gives_the_bytes_binsr_upscale_self_ensemble_writes(client, cli_output, png_bytes):
    data = png_bytes("rgb")
    plain = _post(client, data, "e.png")
    reply = _post(client, data, "e.png", self_ensemble="on")
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-binsr-self-ensemble"] == "1" and plain.headers["x-binsr-self-ensemble"] == "0"
    assert reply.content == cli_output(data, "e.png", "--self-ensemble") != plain.content
    assert 'filename="e_x4.png"' in reply.headers["content-disposition"]  # binsr upscale's name
    for off in ("0", "false", ""):
        assert _post(client, data, "e.png", self_ensemble=off).content == plain.content
    # the page sends its form to the bicubic preview too, which leaves the switch alone
    bicubic = [_post(client, data, route="/api/bicubic", **f).content for f in ({}, {"self_ensemble": 1})]
    assert bicubic[0] == bicubic[1]


def test_self_ensemble_limits(png_bytes):
    data = png_bytes("rgb")  # 28 x 20 = 560 pixels
    with _client(max_ensemble_pixels=500) as client:
        assert client.get("/api/models").json()["max_ensemble_pixels"] == 500
        reply = _post(client, data, self_ensemble=1)
        assert reply.status_code == 413 and "--max-ensemble-pixels" in reply.json()["error"]
        assert _post(client, data).status_code == 200  # the same picture without it
        assert _post(client, png_bytes("rgb", 20, 25), self_ensemble=1).status_code == 200
        reply = _post(client, data, self_ensemble="maybe")
        assert reply.status_code == 400 and "self_ensemble must be" in reply.json()["error"]
    with _client(max_ensemble_pixels=0) as client:
        assert client.get("/api/models").json()["max_ensemble_pixels"] == 0
        reply = _post(client, png_bytes("rgb", 8, 8), self_ensemble=1)
        assert reply.status_code == 400 and "no self-ensemble" in reply.json()["error"]


def test_bad_uploads_get_json_4xx_and_the_server_goes_on(cli_output, png_bytes):
    good = png_bytes("rgb")
    with _client(max_upload_bytes=4096, max_pixels=30 * 30) as client:
        bad = {
            "text file": (_post(client, b"just some text\n" * 20, "notes.txt"), 415, "not an image"),
            "truncated PNG": (_post(client, good[:200], "cut.png"), 400, "cut.png"),
            "empty file": (_post(client, b"", "empty.png"), 400, "empty"),
            "oversize upload": (_post(client, good + b"\0" * 8192), 413, "--max-upload-mb"),
            "oversize, no length": (client.post("/api/upscale", content=(b"\0" * 8192 for _ in range(20)),
                                                headers={"content-type": "multipart/form-data; boundary=x"}),
                                    413, "--max-upload-mb"),
            "too many pixels": (_post(client, png_bytes("gray", 40, 40)), 413, "--max-pixels"),
            "unknown model": (_post(client, good, model="zoo:nope"), 400, "unknown model"),
            "wrong scale": (_post(client, good, model=default_model(4), scale=3), 400, "not x3"),
            "scale not a number": (_post(client, good, scale="four"), 400, "whole number"),
            "no zoo model for the scale": (_post(client, good, scale=7), 400, "no model for x7"),
            "no image field": (client.post("/api/upscale", data={"model": "x"}), 400, "field 'image'"),
            "not multipart": (client.post("/api/upscale", content=b"\x89PNG"), 400, "field 'image'"),
            "multipart without boundary": (client.post("/api/upscale", content=b"--x\r\nbad",
                                                       headers={"content-type": "multipart/form-data"}),
                                           400, "bad form data"),
            "self_ensemble a file too": (client.post("/api/upscale", files={"image": ("a.png", good),
                                                                            "self_ensemble": ("x", b"1")}),
                                         400, "bad form data"),
            "bad job id": (client.post("/api/upscale?job=../x", files={"image": ("a.png", good)}), 400, "job"),
            "wrong method": (client.get("/api/upscale"), 405, "Method Not Allowed"),
        }
        for what, (reply, status, words) in bad.items():
            assert reply.status_code == status, (what, reply.text)
            assert words in reply.json()["error"], what
            assert "\n" not in reply.json()["error"] and "/tmp" not in reply.json()["error"], what
        reply = _post(client, good, "after.png")
        assert reply.status_code == 200 and reply.content == cli_output(good, "after.png")


def test_jobs_run_one_at_a_time_with_progress(monkeypatch, png_bytes):
    """Two requests at once: the second waits (``queued``, one ahead) while the first runs; each
    reports its tiles; a third is refused with 503 when ``max_queue`` are in."""
    data = png_bytes("rgb", 40, 36)
    with _client(max_queue=2, tile=16) as client:
        server = client.app.state.server
        real, gate, active, peak = server.upscale, threading.Event(), [0], [0]

        def gated(*args):
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            gate.wait(10)
            try:
                return real(*args)
            finally:
                active[0] -= 1

        monkeypatch.setattr(server, "upscale", gated)
        replies = {}
        threads = [threading.Thread(target=lambda j=j: replies.__setitem__(j, client.post(
            f"/api/upscale?job={j}", files={"image": ("p.png", data)}))) for j in ("first", "second")]
        threads[0].start()
        _wait(lambda: client.get("/api/progress/first").json().get("state") == "running")
        threads[1].start()
        _wait(lambda: client.get("/api/progress/second").status_code == 200)
        assert client.get("/api/progress/second").json() == {"state": "queued", "ahead": 1, "tiles_done": 0,
                                                             "tiles_total": 0}
        busy = _post(client, data)
        assert busy.status_code == 503 and "busy" in busy.json()["error"] and busy.headers["retry-after"]
        same = client.post("/api/upscale?job=first", files={"image": ("p.png", data)})
        assert same.status_code == 409
        gate.set()
        for t in threads:
            t.join(30)
        assert peak[0] == 1
        assert replies["first"].status_code == replies["second"].status_code == 200
        assert replies["first"].content == replies["second"].content
        assert client.get("/api/progress/first").status_code == 404


def test_uploads_arriving_together_are_bounded(png_bytes):
    """Bytes being received by all uploads together stay under ``max_queue`` uploads' worth."""
    with _client(max_queue=2, max_upload_bytes=1 << 20) as client:
        server = client.app.state.server
        server.receiving = 2 * ((1 << 20) + (64 << 10))  # as if two full uploads were arriving now
        busy = _post(client, png_bytes("rgb"))
        assert busy.status_code == 503 and "too many uploads" in busy.json()["error"]
        server.receiving = 0
        assert _post(client, png_bytes("rgb")).status_code == 200
        assert server.receiving == 0


def test_progress_counts_the_tiles(monkeypatch, png_bytes):
    with _client(tile=8, tile_overlap=4) as client:
        server, seen = client.app.state.server, []
        real = server.upscale

        def watched(data, name, job):
            out = real(data, name, job)
            seen.append((job.tiles_done, job.tiles_total))
            return out

        monkeypatch.setattr(server, "upscale", watched)
        assert _post(client, png_bytes("rgb", 20, 28)).status_code == 200
        assert seen == [(12, 12)]  # ceil(20/8) * ceil(28/8) tiles, all reported


def _wait(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)
