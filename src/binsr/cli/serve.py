"""``binsr serve``: a local web page (and API) to upscale pictures on the packed 1-bit engine."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys

HELP = """\
Serve a web page on which pictures are dropped, upscaled by a zoo model on the packed 1-bit engine,
compared with bicubic on a before/after slider and downloaded (one by one or as a zip). The
downloads are the PNG files `binsr upscale` writes with its default options. The API the page uses:
GET /api/models, POST /api/upscale (multipart field `image`, optional `model`, `scale` and
`self_ensemble`) -> PNG; errors are JSON {"error": ...} with a 4xx code. One engine job runs at a
time, the others queue. The page's x8 self-ensemble switch (8x the work) takes pictures up to
--max-ensemble-pixels, so that no job costs more than a plain one at --max-pixels.
Listens on 127.0.0.1 (this machine only) unless --host says otherwise; there is no login.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="a local web page to upscale pictures on the 1-bit engine",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free port)")
    p.add_argument("--model", help="default model: zoo:<name>, a .bsr or a .safetensors file (default: the zoo x4 "
                                   "model); the page can pick any zoo model")
    p.add_argument("--threads", type=int, help="engine threads (default: all this process may use)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload in MiB (default 50)")
    p.add_argument("--max-pixels", type=int, default=50_000_000,
                   help="largest input in pixels, the decompression-bomb guard (default 50,000,000, as binsr upscale)")
    p.add_argument("--max-queue", type=int, default=8,
                   help="requests queued or running at once; more get 503 (default 8)")
    p.add_argument("--max-ensemble-pixels", type=int,
                   help="largest input for the x8 self-ensemble, 8x the work of a plain upscale (default: "
                        "--max-pixels / 8; 0: no self-ensemble)")
    p.set_defaults(func=run)


def listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket for ``host:port``; a one-line :class:`BinsrError` when it cannot be had."""
    from binsr.errors import BinsrError

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise BinsrError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise BinsrError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def is_local(sock: socket.socket) -> bool:
    """Whether ``sock`` is bound to a loopback address only."""
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


def run(args: argparse.Namespace) -> int:
    from binsr.errors import UsageError

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_pixels < 1 or args.max_queue < 1:
        raise UsageError("--max-upload-mb, --max-pixels and --max-queue must be positive")
    if args.max_ensemble_pixels is not None and args.max_ensemble_pixels < 0:
        raise UsageError("--max-ensemble-pixels must be 0 (no self-ensemble) or more")
    try:
        import uvicorn

        from binsr.web import ServeOptions, create_app
    except ModuleNotFoundError as exc:
        raise UsageError(f"binsr serve needs the web extra ({exc.name} is missing): "
                         "pip install -e '.[web]' (make setup installs it)") from None
    app = create_app(ServeOptions(model=args.model, threads=args.threads,
                                  max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels,
                                  max_queue=args.max_queue, max_ensemble_pixels=args.max_ensemble_pixels))
    sock = listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    if not is_local(sock):
        print(f"binsr serve: warning: listening on {args.host}, not only this machine: anyone who can reach port "
              f"{port} can upload pictures and use this CPU (there is no login)", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"binsr serve: http://{shown}:{port}/ ({app.state.server.models.default}; Ctrl-C stops)", flush=True)
    config = uvicorn.Config(app, log_config=None, log_level="debug" if getattr(args, "debug", False) else "info")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises Ctrl-C: the normal way to stop
        pass
    finally:
        sock.close()
    print("binsr serve: stopped", flush=True)
    return 0
