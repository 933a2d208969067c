"""``binsr serve``: a local web page and API that upscale pictures on the packed 1-bit engine.

Needs the ``web`` extra (Starlette, uvicorn, python-multipart). :func:`create_app` builds the ASGI
app; :mod:`binsr.web.app` documents its routes; ``static/`` is the page, bundled whole.
"""

from binsr.web.app import STATIC_DIR, ServeOptions, create_app, encode_png

__all__ = ["ServeOptions", "create_app", "encode_png", "STATIC_DIR"]
