"""``python -m bench import``: how fast ``tagrate import`` brings a rated
collection in, against the plain sequential /addrating loop a user would
write, in the same run on the same stack (the one ``make run`` starts: the
background tagger tags what each of them stores, competing for the CPU).

Photos: ``--count`` real-size JPEGs (1-3 megapixels: random crops of
scikit-image's photographs, scaled, colour-shifted), made once and cached
under bench/results/. Each contender gets the same photos with its own JPEG
comment, so both store the same pixels as new images. Before each contender
the tagger's backlog is drained, so neither pays for the other's.

Also measured: sequential /updaterating (no upload) against sequential
/addrating, to tell whether per-request overhead dominates (it would argue
for a bulk endpoint) or the upload itself does.

CPU per image, by process: each service's CPU seconds (from /proc) while
the contender ran ("upload") and until the tagger's backlog was drained
("+ backlog"), and the client's own (the CLI process, or this benchmark's
loop), divided by the image count: where an upload's cost goes.

Target (issue 15): the command line at >= 3x the loop's images/s."""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from tagrate_cli.main import DEFAULT_CONCURRENCY

from bench.harness.processes import cpu_seconds
from bench.harness.supervised_stack import Stack

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def make_photos(count: int, seed: int = 2026) -> list[Path]:
    """``count`` cached JPEGs of 1-3 megapixels."""
    import skimage.data

    folder = RESULTS / f"import-photos-n{count}-s{seed}-v1"
    paths = [folder / f"{i:05}.jpg" for i in range(count)]
    if all(p.exists() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = [getattr(skimage.data, name)() for name in PHOTOS]
    for i, path in enumerate(paths):
        photo = sources[i % len(sources)]
        h, w = photo.shape[:2]
        ch, cw = int(rng.integers(h // 2, h + 1)), int(rng.integers(w // 2, w + 1))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        pixels = photo[y : y + ch, x : x + cw].astype(np.float32) * rng.uniform(0.75, 1.2, 3)
        megapixels = rng.uniform(1.0, 3.0)
        scale = (megapixels * 1e6 / (ch * cw)) ** 0.5
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        img = img.resize((round(cw * scale), round(ch * scale)), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=88)
        path.write_bytes(buf.getvalue())
    return paths


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a comment segment after SOI: other bytes (a new
    stored image), same pixels."""
    body = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


def variant(photos: list[Path], folder: Path, label: str) -> list[Path]:
    folder.mkdir(parents=True)
    out = []
    for path in photos:
        target = folder / path.name
        target.write_bytes(with_comment(path.read_bytes(), label))
        out.append(target)
    return out


def rating(i: int) -> str:
    return format(i % 7 / 6, ".4f")


def wait_tagged(url: str, timeout: float) -> float:
    """Seconds until the background tagger has caught up."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        state = httpx.get(f"{url}/verifydatasets", timeout=30).json()
        if state.get("untagged_images", 0) == 0:
            break
        time.sleep(1)
    return time.monotonic() - start


def sequential_loop(url: str, files: list[Path], user: str) -> tuple[float, float]:
    """What a user writes: one /addrating per file, one after another.
    Returns (seconds, the loop's own CPU seconds)."""
    start, cpu = time.perf_counter(), time.process_time()
    with httpx.Client(base_url=url, timeout=120) as http:
        for i, path in enumerate(files):
            with path.open("rb") as f:
                response = http.post("/addrating", data={"user": user, "rating": rating(i)}, files={"image": f})
            response.raise_for_status()
    return time.perf_counter() - start, time.process_time() - cpu


class CpuMeter:
    """CPU seconds each service process used since :meth:`mark`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = self.now()

    def now(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def since(self) -> dict[str, float]:
        now = self.now()
        return {name: now[name] - self.start[name] for name in self.pids}


def print_cpu(label: str, count: int, upload: dict[str, float], drained: dict[str, float], client: float) -> dict:
    """One line per process: ms of CPU per image during the upload, and in all (backlog drained)."""
    print(f"  CPU ms per image ({label}): upload phase / with its backlog drained")
    rows = {}
    for name in upload:
        rows[name] = (upload[name] / count * 1000, drained[name] / count * 1000)
        print(f"    {name:<10} {rows[name][0]:7.1f} / {rows[name][1]:7.1f}")
    rows["client"] = (client / count * 1000, client / count * 1000)
    print(f"    {'client':<10} {rows['client'][0]:7.1f}")
    total = (sum(a for a, _ in rows.values()), sum(b for _, b in rows.values()))
    print(f"    {'total':<10} {total[0]:7.1f} / {total[1]:7.1f}")
    return {name: {"upload_ms": a, "drained_ms": b} for name, (a, b) in rows.items()}


def cli_import(url: str, folder: Path, files: list[Path], user: str, concurrency: int) -> tuple[float, float, dict]:
    """Returns (seconds, the CLI's CPU seconds, its summary)."""
    ratings = folder.parent / f"{folder.name}.csv"
    ratings.write_text("path,user,rating\n" + "".join(f"{p.name},{user},{rating(i)}\n" for i, p in enumerate(files)))
    summary = folder.parent / f"{folder.name}-summary.json"
    command = [sys.executable, "-m", "tagrate_cli", "--url", url, "import", str(folder), "--ratings", str(ratings)]
    command += ["--concurrency", str(concurrency), "--summary-json", str(summary)]
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, command)
    return elapsed, usage.ru_utime + usage.ru_stime, json.loads(summary.read_text())


def update_loop(url: str, names: list[str], user: str) -> float:
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=120) as http:
        for i, name in enumerate(names):
            http.post("/updaterating", data={"image": name, "user": user, "rating": rating(i + 1)}).raise_for_status()
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench import", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="photos per contender (default 1000)")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[DEFAULT_CONCURRENCY],
        help=f"the CLI's --concurrency values (default its own, {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument("--drain-timeout", type=float, default=900, help="seconds to wait for the tagger's backlog")
    args = parser.parse_args(argv)

    photos = make_photos(args.count)
    size = sum(p.stat().st_size for p in photos)
    megapixels = [Image.open(p).size for p in photos[:50]]
    mean_mp = sum(w * h for w, h in megapixels) / len(megapixels) / 1e6
    print(f"{len(photos)} photos, {size / len(photos) / 1024:.0f} KiB and ~{mean_mp:.1f} MP each on average")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    work = Path(tempfile.mkdtemp(prefix="tagrate-bench-import-"))
    stack = Stack(work / "data", None)
    results: dict[str, object] = {"count": len(photos)}
    try:
        stack.wait_running()
        url = stack.url
        pids = {name: pid for name, pid in stack.children.items() if name in ("gateway", "dataset", "tagger", "rater")}
        files = variant(photos, work / "loop", "loop")
        meter = CpuMeter(pids)
        loop_s, loop_cpu = sequential_loop(url, files, "loop")
        upload = meter.since()
        results["loop_images_per_s"] = len(files) / loop_s
        print(f"sequential /addrating loop: {loop_s:.1f} s, {len(files) / loop_s:.1f} images/s")
        print(f"  tagger backlog drained in {wait_tagged(url, args.drain_timeout):.0f} s")
        results["loop_cpu"] = print_cpu("loop", len(files), upload, meter.since(), loop_cpu)
        for n in args.concurrency:
            folder = work / f"cli{n}"
            files = variant(photos, folder, f"cli{n}")
            meter = CpuMeter(pids)
            cli_s, cli_cpu, summary = cli_import(url, folder, files, f"cli{n}", n)
            upload = meter.since()
            assert summary["images_added"] == len(files) and not summary["failed"], summary
            results[f"cli_j{n}_images_per_s"] = len(files) / cli_s
            ratio = loop_s / cli_s
            results[f"cli_j{n}_ratio"] = ratio
            print(f"tagrate import -j {n}: {cli_s:.1f} s, {len(files) / cli_s:.1f} images/s = {ratio:.2f}x the loop")
            print(f"  tagger backlog drained in {wait_tagged(url, args.drain_timeout):.0f} s")
            results[f"cli_j{n}_cpu"] = print_cpu(f"import -j {n}", len(files), upload, meter.since(), cli_cpu)
        names = [
            i["image"] for i in httpx.get(f"{url}/getuserdata", params={"user": "loop"}, timeout=60).json()["images"]
        ]
        sample = names[: min(200, len(names))]
        update_s = update_loop(url, sample, "loop")
        per_add = loop_s / len(photos) * 1000
        per_update = update_s / len(sample) * 1000
        results.update(addrating_ms=per_add, updaterating_ms=per_update)
        print(
            f"per request, sequential: /addrating {per_add:.1f} ms, /updaterating (no upload) {per_update:.1f} ms: "
            f"the fixed per-request cost is {per_update / per_add:.0%} of an upload's"
        )
        results["load_average_after"] = os.getloadavg()
        print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        out = RESULTS / f"import-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results: {out}")
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0
