"""The stack image: how long `waka stack build` takes, how big the image is, and whether a
smaller run image (Heroku splits build and run images) would start dynos faster or save disk.

Builds two images from this machine's apt mirror, under bench tags (waka/stack:bookworm, which
builds and runs apps, is left alone):

- `full`: the stack's whole package list (stack.PACKAGES): what `waka stack build` makes;
- `run`: only stack.RUN_PACKAGES, without compilers and -dev headers: a Heroku-style run image.

For each: the build's wall time, the image's size, and web dyno starts through waka's own
DockerDynos (create, copy the slug in, start) until the dyno answers HTTP, the images taking
turns: the first start after the build, the median and p90 of the others, and the disk each
dyno container adds (its writable layer: here a one-file slug).

    python bench/stack_build.py            # both builds: ~10 min on 2 cores
    python bench/stack_build.py --quick    # no build: dyno starts on waka/stack:bookworm
    python bench/stack_build.py --keep     # keep the bench images afterwards
    python bench/stack_build.py --no-build # only the starts, on the images --keep left

Needs root (debootstrap, chroot), Docker, and the machine's apt mirror (or WAKA_STACK_MIRROR).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import CpuWatch, describe
from report import print_table

from waka.adapters import stack
from waka.adapters.dynos import PORT, DockerDynos, DynoSpec
from waka.adapters.runtime import docker_client
from waka.adapters.slugs import LocalSlugStore

VARIANTS = {
    "full": ("waka/stack:bench-full", stack.PACKAGES, stack.TOOLS),
    "run": (
        "waka/stack:bench-run",
        stack.RUN_PACKAGES,
        tuple(t for t in stack.TOOLS if t not in ("gcc", "g++", "pkg-config", "pg_config")),
    ),
}
PLATFORM = "stack-bench"  # the label that keeps these dynos apart from any waka's


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def make_slug(root: Path) -> Path:
    app = root / "app"
    app.mkdir()
    (app / "Procfile").write_text("web: exec python -m http.server $PORT\n")
    slug = LocalSlugStore(root / "slugs").create(app)
    return root / "slugs" / f"{slug.checksum.split(':', 1)[1]}.tgz"


def answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{PORT}/", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start_dyno(client: Any, image: str, slug: Path, number: int) -> tuple[float, int]:
    """Seconds from DockerDynos.start until the dyno answers HTTP, and the bytes its container
    adds to the disk (its writable layer: the slug and what the process wrote)."""
    dynos = DockerDynos(client, image, PLATFORM)
    spec = DynoSpec(
        app_id="bench",
        app_name="bench",
        name=f"web.{number}",
        process_type="web",
        command="exec python -m http.server $PORT",
        release=1,
        generation=1,
        env={},
        memory_mb=512,
        size="basic",
        slug_path=slug,
    )
    started = time.monotonic()
    container_id = dynos.start(spec)
    try:
        address = ""
        deadline = started + 60
        while time.monotonic() < deadline:
            if not address:
                attrs = client.api.inspect_container(container_id)
                address = attrs["NetworkSettings"].get("IPAddress") or ""
            if address and answers(address):
                took = time.monotonic() - started
                listed = client.api.containers(all=True, size=True, filters={"id": container_id})
                return took, int(listed[0].get("SizeRw", 0))
            time.sleep(0.02)
        raise RuntimeError(f"the dyno of {image} did not answer within 60 s")
    finally:
        dynos.remove(container_id)


def measure(client: Any, images: dict[str, str], slug: Path, starts: int) -> dict[str, list]:
    """Dyno starts on each image, taking turns (a busy moment of the machine hits all alike):
    per image, [(seconds, disk bytes)] in order."""
    runs: dict[str, list] = {name: [] for name in images}
    for number in range(1, starts + 1):
        for name, image in images.items():
            runs[name].append(start_dyno(client, image, slug, number))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="no build: the existing stack image")
    parser.add_argument("--keep", action="store_true", help="keep the bench images")
    parser.add_argument(
        "--no-build", action="store_true", help="measure the bench images a --keep run left"
    )
    parser.add_argument("--starts", type=int, default=21, help="dyno starts per image (21)")
    args = parser.parse_args()
    client = docker_client()
    if client is None:
        sys.exit("no Docker engine answers")
    print("\n".join(describe()))
    print()
    built: dict[str, float] = {}
    if args.quick:
        images = {"stack": stack.STACK_IMAGE}
        args.starts = 3
    else:
        images = {name: image for name, (image, _, _) in VARIANTS.items()}
    watch = CpuWatch()
    watch.start()
    try:
        for name, (image, packages, tools) in VARIANTS.items():
            if args.quick or args.no_build:
                break
            progress(f"{name}: building {image} ({len(packages)} packages)")
            built[name] = stack.build_stack(
                force=True, say=progress, image=image, packages=packages, tools=tools
            )
        build_noise = watch.others_share() if built else float("nan")
        watch.start()
        with tempfile.TemporaryDirectory(prefix="waka-stack-bench-") as tmp:
            progress(f"{args.starts} dyno starts on each of {', '.join(images.values())}")
            runs = measure(client, images, make_slug(Path(tmp)), args.starts)
        start_noise = watch.others_share()
        rows = []
        for name, image in images.items():
            times = [t for t, _ in runs[name]]
            rows.append(
                [
                    name,
                    image,
                    f"{built[name]:.0f}" if name in built else "-",
                    f"{client.images.get(image).attrs.get('Size', 0) / 2**20:.0f}",
                    f"{times[0]:.2f}",
                    f"{statistics.median(times[1:] or times):.2f}",
                    f"{statistics.quantiles(times, n=10)[-1]:.2f}" if len(times) > 2 else "-",
                    f"{max(d for _, d in runs[name])}",
                ]
            )
    finally:
        if not (args.keep or args.quick):
            for image, _, _ in VARIANTS.values():
                with contextlib.suppress(Exception):
                    client.images.remove(image, force=True)
    print_table(
        [
            "image",
            "tag",
            "build s",
            "size MiB",
            "first start s",
            "median start s",
            "p90 start s",
            "dyno disk bytes",
        ],
        rows,
        numeric={2, 3, 4, 5, 6, 7},
    )
    print()
    during_builds = f"{build_noise:.0%} during the builds, " if built else ""
    print(f"Others' CPU: {during_builds}{start_noise:.0%} during the starts.")


if __name__ == "__main__":
    main()
