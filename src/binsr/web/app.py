"""The ``binsr serve`` app: one bundled page and a small API over the packed 1-bit engine.

Routes (Starlette):

* ``GET /``: the page (``static/``: HTML, script and style; no CDN, no web fonts, works offline;
  a Content-Security-Policy of ``'self'`` keeps it that way).
* ``GET /api/models``: the zoo models the server runs, its default and its limits.
* ``POST /api/upscale``: multipart field ``image`` plus optional ``model``, ``scale`` and
  ``self_ensemble`` (``1`` / ``true`` / ``on``: the x8 flips and quarter turns, averaged) returns
  the PNG ``binsr upscale`` writes for that file with its default options, ``--self-ensemble``
  with it (same encoder, so the same bytes: 16 bits, alpha and the ICC profile kept). ``?job=ID``
  lets ``GET /api/progress/ID`` follow it; the engine time is in the ``X-Engine-Seconds`` header,
  decoding, engine and encoding times in ``Server-Timing``, and whether the self-ensemble ran in
  ``X-Binsr-Self-Ensemble`` (``1`` or ``0``).
* ``POST /api/bicubic``: the same upload enlarged with Pillow's bicubic (Keys' cubic, a = -0.5, as
  MATLAB's ``imresize`` upscales; 8 bits), the "before" side of the page's slider.
* ``GET /api/progress/ID``: ``{"state": "queued" | "running", "ahead", "tiles_done",
  "tiles_total"}`` (404 once the job is over or for an unknown ID).

Errors are JSON ``{"error": "..."}``: 400 (bad form, unknown model, wrong scale, unreadable image,
self-ensemble off on this server), 413 (upload over ``max_upload_bytes``, more pixels than
``max_pixels``, or than ``max_ensemble_pixels`` with the self-ensemble), 415 (not an image), 409
(job ID in use), 503 (queue full), 500 (anything else, logged); the server keeps serving.

Jobs run one at a time on a single worker thread, first come first served, with at most
``max_queue`` waiting or running, so memory is bounded by one job (its decoded input, the output and
its PNG) plus the queued uploads (each at most ``max_upload_bytes``) plus those being received (at
most ``max_queue`` uploads' worth together; more get 503). An upload is held in memory (Starlette
spools one over 1 MiB to an unnamed temporary file while it arrives) and, while its job runs, in a
temporary folder that is removed when the job ends. A self-ensemble job does 8 times the engine
work of a plain one, so its input is held to ``max_ensemble_pixels`` (``max_pixels / 8`` unless set;
0 turns the switch off): no job in the queue costs more than a plain one at ``max_pixels``.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from binsr.data.io import write_png
from binsr.errors import BinsrError, UsageError

__all__ = ["ServeOptions", "create_app", "encode_png", "STATIC_DIR"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: multipart headers and the small fields around the image: allowed beyond ``max_upload_bytes``
_FORM_OVERHEAD = 64 << 10
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: a form's ``self_ensemble`` values (absent or empty: off)
_FLAGS = {None: False, "": False, "0": False, "false": False, "off": False, "no": False,
          "1": True, "true": True, "on": True, "yes": True}
#: the page loads nothing from elsewhere; results are shown from blob: URLs
_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'")


@dataclass(frozen=True)
class ServeOptions:
    """What ``binsr serve`` runs with (its options, same names).

    ``tile``, ``tile_overlap`` and ``png_level`` are ``binsr upscale``'s defaults, so that a
    download equals its output file. ``max_ensemble_pixels``: the largest input a self-ensemble
    request may have (None: ``max_pixels // 8``, the same engine work; 0: no self-ensemble)."""

    model: str | None = None
    threads: int | None = None
    max_upload_bytes: int = 50 << 20
    max_pixels: int = 50_000_000
    max_queue: int = 8
    max_ensemble_pixels: int | None = None
    tile: int = 256
    tile_overlap: int = 16
    png_level: int = 1


class _Reply(Exception):
    """A 4xx/5xx answer: ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status, headers=headers)


def encode_png(arr: np.ndarray, icc_profile: bytes | None, level: int) -> bytes:
    """The PNG file ``binsr upscale`` writes for ``arr``, as bytes (the same encoder,
    :func:`binsr.data.io.write_png`, so the two cannot differ)."""
    buf = io.BytesIO()
    write_png(buf, arr, icc_profile, level)
    return buf.getvalue()


def _preview(pixels: np.ndarray, alpha: np.ndarray | None, scale: int) -> bytes:
    """8-bit PNG of the input enlarged ``scale`` times with Pillow's bicubic (display only)."""
    arr = pixels if alpha is None else np.dstack([pixels, alpha])
    if arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    img = Image.fromarray(arr)
    return encode_png(np.asarray(img.resize((img.width * scale, img.height * scale), Image.Resampling.BICUBIC)), None, 1)


class _Models:
    """The models a client may name (the zoo, plus the server's ``--model`` file), loaded once each."""

    def __init__(self, default: str | None, threads: int | None) -> None:
        from binsr.infer import load_upscaler
        from binsr.pretrained import PREFIX, default_model, zoo_card, zoo_names

        self.threads = threads
        self.scales = {PREFIX + n: int(zoo_card(n)["scale"]) for n in zoo_names()}
        self.loaded: dict[str, Any] = {}
        self.ensembles: dict[str, Any] = {}
        if default is None:
            default = default_model(4)
            if default is None:
                raise UsageError("the zoo has no x4 model; pass --model")
        elif not default.startswith(PREFIX) and default.lower().endswith((".bsr", ".safetensors")):
            up = load_upscaler(default, threads=threads)  # the operator's file: listed by its name
            self.scales[up.name] = up.scale
            self.loaded[up.name] = up
            default = up.name
        default = self.resolve(default, None)
        self.get(default)  # fail at start, not on the first request
        self.default = default

    def resolve(self, model: str | None, scale: int | None) -> str:
        """The model to run for a request's ``model`` and ``scale`` (``UsageError`` when none fits)."""
        from binsr.pretrained import PREFIX, default_model

        if model is None:
            if scale is None or scale == self.scales[self.default]:
                return self.default
            model = default_model(scale)
            if model is None:
                raise UsageError(f"no model for x{scale}; scales: {', '.join(map(str, self.scale_list()))}")
        if model not in self.scales and PREFIX + model in self.scales:
            model = PREFIX + model
        if model not in self.scales:
            raise UsageError(f"unknown model {model!r}; available: {', '.join(self.scales)}")
        own = self.scales[model]
        if scale is not None and scale != own:
            raise UsageError(f"{model} is an x{own} model, not x{scale}")
        return model

    def scale_list(self) -> list[int]:
        return sorted(set(self.scales.values()))

    def get(self, name: str) -> Any:
        """The loaded :class:`binsr.infer.Upscaler` of ``name`` (once serving, on the worker thread only)."""
        from binsr.infer import load_upscaler

        if name not in self.loaded:
            self.loaded[name] = load_upscaler(name, threads=self.threads)
        return self.loaded[name]

    def get_ensemble(self, name: str) -> Any:
        """``name``'s upscaler averaged over the 8 flips and quarter turns (worker thread only)."""
        from binsr.infer import with_self_ensemble

        if name not in self.ensembles:
            self.ensembles[name] = with_self_ensemble(self.get(name))
        return self.ensembles[name]

    def describe(self) -> list[dict[str, Any]]:
        from binsr.pretrained import PREFIX, default_model, zoo_card

        out, own = [], self.scales[self.default]
        for name, scale in sorted(self.scales.items(), key=lambda kv: (kv[1], kv[0])):
            entry: dict[str, Any] = {"name": name, "scale": scale, "default": name == self.default
                                     or (scale != own and name == default_model(scale))}
            if name.startswith(PREFIX):
                card = zoo_card(name)
                entry["params_k"] = card.get("params_k")
                entry["set5_psnr"] = card.get("metrics", {}).get("Set5", {}).get("psnr")
            out.append(entry)
        return out


class _Laps(dict):
    """Seconds per step, each since the previous one (the ``Server-Timing`` header, W3C Server Timing)."""

    def __init__(self) -> None:
        super().__init__()
        self._last = time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self[step], self._last = now - self._last, now


class _Result(NamedTuple):
    png: bytes
    scale: int
    timings: _Laps


@dataclass
class _Job:
    """A request's place in the queue and its tiles, read by ``GET /api/progress``."""

    seq: int
    filename: str
    self_ensemble: bool = False
    state: str = "queued"
    tiles_done: int = 0
    tiles_total: int = 0

    def step(self, n: int = 1) -> None:
        self.tiles_done += n


@dataclass
class _Server:
    options: ServeOptions
    models: _Models
    worker: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "binsr-engine"))
    jobs: dict[str, _Job] = field(default_factory=dict)
    counter: itertools.count = field(default_factory=itertools.count)
    #: request bytes being received now, by all uploads together
    receiving: int = 0

    # ------------------------------------------------------------------ the work (worker thread)

    def _read(self, data: bytes, tmp: Path, job: _Job) -> tuple[np.ndarray, np.ndarray | None, dict]:
        from binsr.data.io import read_image_info

        path = tmp / "upload"
        path.write_bytes(data)
        try:
            return read_image_info(path, max_pixels=self.options.max_pixels)
        except BinsrError as exc:
            raise _Reply(400, str(exc).replace(str(path), job.filename)) from exc

    def upscale(self, data: bytes, name: str, job: _Job) -> _Result:
        """The PNG ``binsr upscale`` makes for an upload."""
        from binsr.infer import n_tiles, upscale_array

        o = self.options
        up = self.models.get_ensemble(name) if job.self_ensemble else self.models.get(name)
        laps = _Laps()
        with tempfile.TemporaryDirectory(prefix="binsr-serve-") as tmp:
            pixels, alpha, info = self._read(data, Path(tmp), job)
        laps("decode")
        job.tiles_total = n_tiles(pixels.shape, o.tile or None)
        out = upscale_array(up, pixels, alpha, o.tile or None, o.tile_overlap, progress=job.step)
        laps("engine")
        del pixels, alpha
        png = encode_png(out, info.get("icc_profile"), o.png_level)
        laps("encode")
        return _Result(png, up.scale, laps)

    def bicubic(self, data: bytes, name: str, job: _Job) -> _Result:
        """The upload enlarged by :func:`_preview` to the size ``name`` gives."""
        scale = self.models.scales[name]
        laps = _Laps()
        with tempfile.TemporaryDirectory(prefix="binsr-serve-") as tmp:
            pixels, alpha, _ = self._read(data, Path(tmp), job)
        laps("decode")
        png = _preview(pixels, alpha, scale)
        laps("bicubic")
        return _Result(png, scale, laps)

    # ------------------------------------------------------------------ the request side

    @property
    def max_ensemble_pixels(self) -> int:
        """The largest input of a self-ensemble request (0: none)."""
        o = self.options
        return o.max_pixels // 8 if o.max_ensemble_pixels is None else o.max_ensemble_pixels

    def _check_upload(self, data: bytes, self_ensemble: bool) -> None:
        """Refuse, before queueing, what is not an image or has too many pixels (header only)."""
        if not data:
            raise _Reply(400, "the upload is empty")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as im:
                    width, height = im.size
        except UnidentifiedImageError:
            raise _Reply(415, "not an image (PNG, JPEG, WebP, TIFF, BMP, ... that Pillow reads)") from None
        except Image.DecompressionBombError as exc:
            raise _Reply(413, str(exc)) from None
        except Exception as exc:  # any decoder's complaint about a broken header
            raise _Reply(400, f"cannot read the image: {exc}") from None
        if width * height > self.options.max_pixels:
            raise _Reply(413, f"{width}x{height} = {width * height:,} pixels is over this server's limit of "
                              f"{self.options.max_pixels:,} (binsr serve --max-pixels)")
        if self_ensemble and width * height > self.max_ensemble_pixels:
            raise _Reply(413, f"{width}x{height} = {width * height:,} pixels is over this server's limit of "
                              f"{self.max_ensemble_pixels:,} for the x8 self-ensemble, 8 times the work "
                              "(binsr serve --max-ensemble-pixels); upscale it without")

    async def _form(self, request: Request) -> tuple[bytes, str, str | None, int | None, bool]:
        """(image bytes, file name, model, scale, self-ensemble) of a multipart request, its size limited."""
        limit = self.options.max_upload_bytes
        too_large = _Reply(413, f"the upload is over this server's limit of {limit / 2**20:g} MiB "
                                "(binsr serve --max-upload-mb)")
        try:
            length = int(request.headers.get("content-length", "0"))
        except ValueError:
            raise _Reply(400, "bad Content-Length header") from None
        if length > limit + _FORM_OVERHEAD:
            raise too_large
        received = 0
        budget = self.options.max_queue * (limit + _FORM_OVERHEAD)

        async def receive() -> dict:
            nonlocal received
            message = await request.receive()
            n = len(message.get("body", b""))
            received += n
            self.receiving += n
            if received > limit + _FORM_OVERHEAD:
                raise too_large
            if self.receiving > budget:
                raise _Reply(503, "busy: too many uploads at once; try again shortly")
            return message

        try:
            async with Request(request.scope, receive).form(max_files=1, max_fields=4) as form:
                upload = form.get("image")
                if not isinstance(upload, UploadFile):
                    raise _Reply(400, "expected a multipart/form-data upload with the image in field 'image'")
                data = await upload.read(limit + 1)
                filename = upload.filename or "image"
                model, scale, ensemble = form.get("model"), form.get("scale"), form.get("self_ensemble")
        except HTTPException as exc:  # Starlette's answer to malformed multipart data
            raise _Reply(400, f"bad form data: {exc.detail}") from None
        finally:
            self.receiving -= received
        if len(data) > limit:
            raise too_large
        if scale not in (None, ""):
            if not isinstance(scale, str) or not scale.strip().isdigit():
                raise _Reply(400, f"scale must be a whole number, got {scale!r}")
            scale = int(scale)
        model = model if isinstance(model, str) and model.strip() else None
        flag = ensemble.strip().lower() if isinstance(ensemble, str) else ensemble
        if flag not in _FLAGS:  # a string or None: a second file is refused by max_files above
            raise _Reply(400, f"self_ensemble must be 1 / true / on or 0 / false / off, got {ensemble[:40]!r}")
        return data, filename, model, scale or None, _FLAGS[flag]

    async def handle(self, request: Request, work: Callable[[bytes, str, _Job], _Result],
                     suffix: Callable[[int], str], ensemble: bool = True) -> Response:
        """A request to ``work``; ``ensemble``: whether its ``self_ensemble`` field applies
        (the bicubic preview takes the page's form and leaves it)."""
        job_id = request.query_params.get("job")
        try:
            if job_id is not None and not _JOB_ID.fullmatch(job_id):
                raise _Reply(400, "job must be 1-64 letters, digits, '-' or '_'")
            data, filename, model, scale, self_ensemble = await self._form(request)
            self_ensemble = self_ensemble and ensemble
            try:
                name = self.models.resolve(model, scale)
            except UsageError as exc:
                raise _Reply(400, str(exc)) from None
            if self_ensemble and self.max_ensemble_pixels == 0:
                raise _Reply(400, "this server runs no self-ensemble (binsr serve --max-ensemble-pixels 0)")
            self._check_upload(data, self_ensemble)
            key = job_id or f"_{next(self.counter)}"
            if key in self.jobs:
                raise _Reply(409, f"job {job_id} is already running")
            if len(self.jobs) >= self.options.max_queue:
                return _error(503, f"busy: {len(self.jobs)} jobs queued or running; try again shortly",
                              {"Retry-After": "5"})
            job = self.jobs[key] = _Job(next(self.counter), filename, self_ensemble)
            try:
                result = await self._run(work, data, name, job)
            finally:
                del self.jobs[key]
        except _Reply as exc:
            return _error(exc.status, str(exc))
        stem = Path(filename.replace("\\", "/")).stem or "image"
        out_name = f"{stem}{suffix(result.scale)}.png"
        ascii_name = out_name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
        headers = {"Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(out_name)}",
                   "X-Binsr-Model": name, "X-Binsr-Scale": str(result.scale),
                   "Server-Timing": ", ".join(f"{k};dur={v * 1000:.1f}" for k, v in result.timings.items())}
        if "engine" in result.timings:
            headers["X-Engine-Seconds"] = f"{result.timings['engine']:.4f}"
            headers["X-Binsr-Self-Ensemble"] = "1" if job.self_ensemble else "0"
        return Response(result.png, media_type="image/png", headers=headers)

    async def _run(self, work: Callable[[bytes, str, _Job], _Result], data: bytes, name: str, job: _Job) -> _Result:
        def run() -> _Result:
            job.state = "running"
            return work(data, name, job)

        try:
            return await asyncio.wrap_future(self.worker.submit(run))
        except (_Reply, BinsrError) as exc:
            raise _Reply(exc.status if isinstance(exc, _Reply) else 400, str(exc)) from None
        except MemoryError:
            raise _Reply(413, "out of memory for this image on this server; try a smaller one") from None
        except Exception as exc:  # a bug: logged with its traceback, the server goes on
            log.exception("binsr serve: %s failed", name)
            raise _Reply(500, f"internal error: {type(exc).__name__}: {exc}") from None

    def progress(self, job_id: str) -> dict[str, Any] | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        ahead = sum(1 for other in list(self.jobs.values()) if other.seq < job.seq)
        return {"state": job.state, "ahead": ahead, "tiles_done": job.tiles_done, "tiles_total": job.tiles_total}


def create_app(options: ServeOptions | None = None) -> Starlette:
    """The ASGI app of ``binsr serve``; loads the default model now (``UsageError`` if unknown)."""
    options = options or ServeOptions()
    server = _Server(options, _Models(options.model, options.threads))

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": _CSP})

    async def models(request: Request) -> Response:
        return JSONResponse({"default": server.models.default, "models": server.models.describe(),
                             "scales": server.models.scale_list(), "max_upload_bytes": options.max_upload_bytes,
                             "max_pixels": options.max_pixels,
                             "max_ensemble_pixels": server.max_ensemble_pixels})

    async def upscale(request: Request) -> Response:
        return await server.handle(request, server.upscale, lambda s: f"_x{s}")

    async def bicubic(request: Request) -> Response:
        return await server.handle(request, server.bicubic, lambda s: f"_bicubic_x{s}", ensemble=False)

    async def progress(request: Request) -> Response:
        state = server.progress(request.path_params["job"])
        return _error(404, "no such job (finished or never started)") if state is None else JSONResponse(state)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        server.worker.shutdown(cancel_futures=True)

    routes = [
        Route("/", page),
        Route("/api/models", models),
        Route("/api/upscale", upscale, methods=["POST"]),
        Route("/api/bicubic", bicubic, methods=["POST"]),
        Route("/api/progress/{job}", progress),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.server = server
    return app
