"""``binsr serve`` measured as a person uses it: the time from dropping a photo on the page to the
upscaled result shown (Debian's Chromium driven by Playwright), and the server's peak memory while
two requests run at once.

    .venv/bin/python benchmarks/serve.py [--image PHOTO] [--size 640x480] [--threads 1] [--repeat 5]

The photo is a centre crop of ``--image`` (default: the first SunHays80 picture under the data
root) to ``--size``. "Drop to result" is the page's own clock (``performance.now()``): from the
files reaching the page to the upscaled PNG decoded, so it holds the upload, the queue, decoding,
the engine, PNG encoding, the transfer and the browser's decoding; the server's steps are those of
its ``Server-Timing`` header. Peak memory is the server process's ``VmHWM`` after it is
reset (``/proc/PID/clear_refs`` = 5) and two uploads of the photo are posted together.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from PIL import Image

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _photo(src: Path | None, size: str, out: Path) -> Path:
    from binsr.data.paths import data_root

    if src is None:
        src = sorted((data_root() / "train" / "SunHays80").glob("*"))[0]
    w, h = map(int, size.split("x"))
    with Image.open(src) as im:
        im = im.convert("RGB")
        if im.width < w or im.height < h:
            sys.exit(f"benchmarks/serve.py: {src} is {im.width}x{im.height}, smaller than {size}")
        left, top = (im.width - w) // 2, (im.height - h) // 2
        im.crop((left, top, left + w, top + h)).save(out)
    return out


def _status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, help="photo to crop (default: the first SunHays80 picture)")
    p.add_argument("--size", default="640x480", help="crop WxH (default 640x480)")
    p.add_argument("--threads", type=int, default=1, help="engine threads of the server (default 1)")
    p.add_argument("--repeat", type=int, default=5, help="drops to time (default 5; the median is kept)")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args()

    import httpx2 as httpx
    from playwright.sync_api import expect, sync_playwright

    from binsr.cpu import cpu_name

    tmp = Path(tempfile.mkdtemp(prefix="binsr-bench-serve-"))
    photo = _photo(args.image, args.size, tmp / "photo.png")
    server = subprocess.Popen([sys.executable, "-m", "binsr", "serve", "--port", "0", "--threads", str(args.threads)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = re.search(r"http://\S+/", server.stdout.readline()).group(0)
        totals, steps = [], []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page()
            for _ in range(args.repeat + 1):  # the first drop warms the server and the browser up
                page.goto(url)
                page.wait_for_selector("#model option", state="attached")
                page.set_input_files("#files", str(photo))
                card = page.locator(".card[data-result-seconds]")
                expect(card).to_have_count(1, timeout=120_000)
                totals.append(float(card.get_attribute("data-result-seconds")))
                timing = card.get_attribute("data-server-timing")  # "decode;dur=12.3, engine;dur=..."
                steps.append({k: float(v) / 1000 for k, v in re.findall(r"(\w+);dur=([\d.]+)", timing)})
            browser.close()
        totals, steps = totals[1:], steps[1:]

        rss_idle = _status_kib(server.pid, "VmRSS")
        Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        data = photo.read_bytes()
        codes: list[int] = []

        def post() -> None:
            reply = httpx.post(url + "api/upscale", files={"image": ("photo.png", data)}, timeout=300)
            codes.append(reply.status_code)

        threads = [threading.Thread(target=post) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = _status_kib(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait(30)

    print(f"CPU: {cpu_name()}; server threads: {args.threads}; photo {args.size} at x4 "
          f"({Path(args.image or 'SunHays80').name}); {args.repeat} drops")
    parts = ", ".join(f"{k} {statistics.median(s[k] for s in steps):.2f} s" for k in steps[0])
    print(f"drop to result: median {statistics.median(totals):.2f} s (min {min(totals):.2f}, max {max(totals):.2f}); "
          f"on the server (medians): {parts}")
    print(f"server memory: {rss_idle / 1024:.0f} MiB RSS idle, peak {peak / 1024:.0f} MiB while two requests ran "
          f"(HTTP {', '.join(map(str, codes))})")


if __name__ == "__main__":
    main()
