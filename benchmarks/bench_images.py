"""Image decoding under hostile inputs: time, peak memory and outcome per probe file.

    python benchmarks/bench_images.py [--out DIR]

Each probe is decoded by `load_image` (resized to Qwen2.5-VL's default pixel bounds, like serving
does) in a fresh child process, so its peak RSS is its own. A last probe measures how long a small
image takes to decode while four large ones are decoding in other threads of the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from image_probes import jpeg_declaring, png_with_chunk  # noqa: E402
RESIZE_MAX_PIXELS = 16384 * 28 * 28  # Qwen2.5-VL processor default


def make_probes(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    probes: dict[str, bytes | Image.Image] = {}
    stripes = np.zeros((9000, 9000), dtype=np.uint16)
    stripes[::97, :] = 40000
    probes["png16_81mp.png"] = Image.fromarray(stripes)  # ~157 KB, 81 megapixels, 16-bit
    under_cap = np.zeros((4000, 6000), dtype=np.uint16)
    under_cap[::97, :] = 40000
    probes["png16_24mp.png"] = Image.fromarray(under_cap)  # under the cap: decodes, but is heavy
    big = np.random.default_rng(0).integers(0, 255, (4000, 6000, 3), dtype=np.uint8)
    probes["jpeg_24mp.jpg"] = Image.fromarray(big)
    probes["jpeg_48mp.jpg"] = Image.fromarray(np.tile(big, (2, 2, 1))[:6000, :8000])
    probes["png_ztxt_64mb.png"] = png_with_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * (64 << 20)))
    probes["png_iccp_64mb.png"] = png_with_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(b"a" * (64 << 20)))
    probes["ppm_maxval.ppm"] = b"P6 4 4 70000\n" + b"\0" * 96
    probes["sgi_mode.sgi"] = struct.pack(">hBBHHHH", 474, 1, 3, 3, 4, 4, 3) + b"\0" * 500
    probes["wide_20000x1.png"] = Image.new("RGB", (20000, 1))
    probes["wide_20000x28.png"] = Image.new("RGB", (20000, 28))
    probes["jpeg_631b_9000x9000.jpg"] = jpeg_declaring(9000, 9000)
    probes["small_512.jpg"] = Image.new("RGB", (512, 512), (120, 80, 60))
    paths = {}
    for name, content in probes.items():
        path = folder / name
        if isinstance(content, Image.Image):
            content.save(path)
        else:
            path.write_bytes(content)
        paths[name] = path
    return paths


CHILD = """
import json, sys, time
from skinr1.data.images import ImageError, load_image
start = time.perf_counter()
try:
    image = load_image(sys.argv[1], max_pixels=int(sys.argv[3]))
    outcome = f"ok {image.size[0]}x{image.size[1]}"
except ImageError as error:
    outcome = f"ImageError {error.kind}"
except BaseException as error:
    outcome = f"UNCAUGHT {type(error).__name__}"
elapsed = time.perf_counter() - start
# VmHWM: this process's own peak resident set (ru_maxrss would include the parent's, copied at fork).
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": round(elapsed, 3), "peak_rss_mb": round(peak_kb / 1024), "outcome": outcome}))
"""

CONCURRENT = """
import sys, threading, time
from skinr1.data.images import ImageError, load_image
def decode(path):
    try:
        load_image(path, max_pixels=int(sys.argv[4]))
    except ImageError:
        pass
threads = [threading.Thread(target=decode, args=(sys.argv[1],)) for _ in range(4)]
for thread in threads:
    thread.start()
time.sleep(0.05)
start = time.perf_counter()
decode(sys.argv[2])
small = time.perf_counter() - start
for thread in threads:
    thread.join()
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(round(small, 3), round(peak_kb / 1024))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for the probe files (default: a temporary folder)")
    parser.add_argument("--code", default=str(ROOT), help="repository whose skinr1 to measure (default: this one)")
    args = parser.parse_args()
    folder = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="skinr1-image-probes-"))
    paths = make_probes(folder)
    # PYTHONPATH, not sys.path: an editable install's import hook would shadow a runtime insert.
    env = {**os.environ, "PYTHONPATH": args.code}
    results = {}
    for name, path in paths.items():
        run = subprocess.run([sys.executable, "-c", CHILD, str(path), args.code, str(RESIZE_MAX_PIXELS)],
                             capture_output=True, text=True, check=True, env=env)
        results[name] = {"bytes": path.stat().st_size, **json.loads(run.stdout)}
        print(f"{name:<26} {results[name]['bytes']:>10} B {results[name]['seconds']:>7.2f} s "
              f"{results[name]['peak_rss_mb']:>6} MB  {results[name]['outcome']}")
    for big in ("png16_81mp.png", "png16_24mp.png", "jpeg_24mp.jpg"):
        run = subprocess.run([sys.executable, "-c", CONCURRENT, str(paths[big]), str(paths["small_512.jpg"]),
                              args.code, str(RESIZE_MAX_PIXELS)], capture_output=True, text=True, check=True, env=env)
        small, peak = run.stdout.split()
        print(f"small decode while 4x {big} decode: {float(small):.2f} s (process peak {peak} MB)")


if __name__ == "__main__":
    main()
