"""The stack image: the Debian system that builds and runs apps, made with no container registry.

`waka stack build` bootstraps Debian bookworm from the apt mirror this machine is configured with
(debootstrap), installs the stack's packages into it in a chroot (close to Heroku's build image:
Python, Node.js, git, a C toolchain, common -dev headers, jq, make, xz, unzip, file, curl...) and
imports the root file system into the local Docker engine as STACK_IMAGE. The mirror is read from
the machine's apt sources at run time; set WAKA_STACK_MIRROR (a Debian mirror URL) where they name
none for bookworm.

One image builds and runs apps (Heroku splits a build image from a smaller run image): on a
machine that builds, a run image would add its disk rather than save it; the image is stored once,
not per dyno; and its size does not slow a dyno's start (bench/stack_build.py measures both;
docs/performance.md has the figures). One image also means a C extension compiled at build time
finds its shared libraries at run time.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from waka.adapters.runtime import DEFAULT_PATH, DockerRuntime, docker_client
from waka.buildpacks.sources import display_url

STACK_IMAGE = "waka/stack:bookworm"
STACK_NAME = "waka-bookworm"
SUITE = "bookworm"
MIRROR_ENV = "WAKA_STACK_MIRROR"
# Installed with apt-get in the chroot: npm in debootstrap's --include came out broken.
# What apps and buildpacks call at run time; Heroku's run image has all of these too.
RUN_PACKAGES = (
    "python3",
    "python3-venv",
    "python3-pip",
    "python-is-python3",  # `python manage.py`, `#!/usr/bin/env python`, `heroku run python`
    "nodejs",
    "npm",
    "git",
    "curl",
    "wget",
    "ca-certificates",
    "tar",
    "gzip",
    "bzip2",
    "xz-utils",
    "zstd",
    "unzip",
    "zip",
    "file",
    "jq",  # the official buildpacks parse JSON with it
    "make",
    "patch",
    "rsync",
    "less",
    "procps",
    "openssh-client",
    "netcat-openbsd",
    "postgresql-client",
    "tzdata",
    "shared-mime-info",
    # shared libraries of common compiled dependencies (the -dev packages below bring them too)
    "libpq5",
    "libxml2",
    "libxslt1.1",
    "libyaml-0-2",
    "libjpeg62-turbo",
    "libmariadb3",
    "libmemcached11",
    "libsodium23",
)
# What compiles dependencies from source: a C/C++ toolchain, autotools, and the headers of the
# libraries apps most often bind (psycopg2 needs pg_config from libpq-dev, lxml libxml2/libxslt,
# mysqlclient libmariadb, Pillow libjpeg/zlib, ...). Heroku's build image adds the same kind.
BUILD_PACKAGES = (
    "build-essential",  # gcc, g++, make, libc6-dev, dpkg-dev
    "autoconf",
    "automake",
    "libtool",
    "pkg-config",
    "cmake",
    "bison",
    "gettext",
    "python3-dev",
    "libpq-dev",
    "libssl-dev",
    "libffi-dev",
    "zlib1g-dev",
    "libbz2-dev",
    "liblzma-dev",
    "libzstd-dev",
    "liblz4-dev",
    "libreadline-dev",
    "libsqlite3-dev",
    "libncurses-dev",
    "libgdbm-dev",
    "libdb-dev",
    "uuid-dev",
    "libxml2-dev",
    "libxslt1-dev",
    "libyaml-dev",
    "libjpeg-dev",
    "libpng-dev",
    "libwebp-dev",
    "libfreetype-dev",
    "libcurl4-openssl-dev",
    "default-libmysqlclient-dev",
    "libmemcached-dev",
    "libsodium-dev",
    "libevent-dev",
    "libicu-dev",
    "libgmp-dev",
    "libkrb5-dev",
    "libsasl2-dev",
    "libldap2-dev",
    "libmagic-dev",
    "libonig-dev",
    "libzip-dev",
    "libargon2-dev",
)
PACKAGES = RUN_PACKAGES + BUILD_PACKAGES
# Commands the image must have; `waka stack build` checks each after the import.
TOOLS = (
    "python",
    "python3",
    "pip3",
    "node",
    "npm",
    "git",
    "gcc",
    "g++",
    "make",
    "pkg-config",
    "pg_config",
    "psql",
    "jq",
    "curl",
    "xz",
    "bzip2",
    "zstd",
    "unzip",
    "zip",
    "file",
    "patch",
    "tar",
    "gzip",
)
PACKAGES_LABEL = "waka.packages"  # what the image was built with: another list rebuilds it
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
_SCHEMES = ("http://", "https://", "file:/")  # what debootstrap can fetch from
_VERSIONS = "python3 --version && node --version && npm --version && git --version"

Say = Callable[[str], None]


class StackError(Exception):
    """The stack image could not be built; the message says why and what to do."""


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]


def parse_deb822(text: str) -> list[AptSource]:
    """The binary (`Types: deb`) entries of a deb822 `.sources` file, enabled ones only."""
    sources = []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in paragraph.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:  # a continuation line
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() in ("no", "false", "0"):
            continue
        suites = tuple(fields.get("suites", "").split())
        sources += [AptSource(uri, suites) for uri in fields.get("uris", "").split()]
    return sources


def parse_one_line(text: str) -> list[AptSource]:
    """The `deb` lines of a one-line-style `sources.list`."""
    sources = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb") or line.startswith("deb-src"):
            continue
        rest = line[3:].strip()
        if rest.startswith("["):  # options such as [arch=amd64 signed-by=...]
            rest = rest.partition("]")[2]
        words = rest.split()
        if len(words) >= 2:
            sources.append(AptSource(words[0], (words[1],)))
    return sources


def apt_sources(apt_dir: Path = Path("/etc/apt")) -> list[AptSource]:
    """The machine's apt sources in apt's own order: sources.list, then sources.list.d/."""
    sources = []
    main_list = apt_dir / "sources.list"
    if main_list.is_file():
        sources += parse_one_line(main_list.read_text(errors="replace"))
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                sources += parse_one_line(path.read_text(errors="replace"))
            elif path.suffix == ".sources":
                sources += parse_deb822(path.read_text(errors="replace"))
    return sources


def find_mirror(
    suite: str = SUITE,
    *,
    apt_dir: Path = Path("/etc/apt"),
    environ: Mapping[str, str] = os.environ,
) -> str:
    """The Debian mirror to bootstrap from: WAKA_STACK_MIRROR, else the first apt source that
    has `suite` itself (its -updates and -security suites live elsewhere or lack packages)."""
    override = environ.get(MIRROR_ENV, "").strip()
    if override:
        if not override.startswith(_SCHEMES):
            raise StackError(f"{MIRROR_ENV}={override!r} is not an http(s):// or file: URL")
        return override.rstrip("/")
    for source in apt_sources(apt_dir):
        if suite in source.suites and source.uri.startswith(_SCHEMES):
            return source.uri.rstrip("/")
    raise StackError(
        f"no apt source under {apt_dir} offers Debian {suite}: "
        f"set {MIRROR_ENV} to a Debian mirror URL"
    )


def chroot_sources(
    mirror: str,
    suite: str = SUITE,
    *,
    apt_dir: Path = Path("/etc/apt"),
    environ: Mapping[str, str] = os.environ,
) -> str:
    """The stack's own sources.list: the mirror, plus the machine's -updates and -security
    sources for `suite` (security fixes in the stack), unless WAKA_STACK_MIRROR overrides."""
    lines = [f"deb {mirror} {suite} main"]
    if not environ.get(MIRROR_ENV, "").strip():
        for source in apt_sources(apt_dir):
            for extra in (f"{suite}-updates", f"{suite}-security"):
                line = f"deb {source.uri.rstrip('/')} {extra} main"
                if extra in source.suites and source.uri.startswith(_SCHEMES):
                    lines.append(line)
    return "\n".join(dict.fromkeys(lines)) + "\n"


def image_exists(client: Any, image: str = STACK_IMAGE) -> bool:
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


def built_with(client: Any, image: str = STACK_IMAGE) -> tuple[str, ...] | None:
    """The package list `image` was built with (its label), or None for an image without one."""
    label = client.images.get(image).labels.get(PACKAGES_LABEL)
    return tuple(label.split()) if label else None


def build_stack(
    *,
    force: bool = False,
    say: Say = print,
    image: str = STACK_IMAGE,
    packages: tuple[str, ...] = PACKAGES,
    tools: tuple[str, ...] = TOOLS,
) -> float:
    """Build `image` with `packages` unless it exists with that list (or `force`), and check it
    has `tools`; raises StackError with the reason. The seconds the build took (0: kept)."""
    client = _preflight()
    exists = image_exists(client, image)
    if exists and not force:
        if set(built_with(client, image) or ()) == set(packages):
            say(f"Stack image {image} exists; `waka stack build --force` rebuilds it.")
            return 0.0
        say(f"Stack image {image} was built with another package list; rebuilding it.")
    old = client.images.get(image).id if exists else None
    mirror = find_mirror()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="waka-stack-"))
    try:
        rootfs = work / "rootfs"
        log = work / "build.log"
        say(f"-----> Bootstrapping Debian {SUITE} from {display_url(mirror)}")  # no password
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=ca-certificates",
                SUITE,
                str(rootfs),
                mirror,
            ],
            log,
        )
        (rootfs / "etc/apt/sources.list").write_text(chroot_sources(mirror))
        say(f"-----> Installing {len(packages)} packages: {' '.join(packages)}")
        versions = _provision(rootfs, packages, log)
        say("-----> " + ", ".join(versions.values()))
        say(f"-----> Importing into Docker as {image}")
        _import(rootfs, image, packages, versions, log)
    finally:
        _remove(work, say)
    if old and old != client.images.get(image).id:
        with suppress(Exception):  # still used by a container: it stays, untagged
            client.images.remove(old)
    say("-----> Checking the image")
    lines = check_image(client, image, tools)
    size = client.images.get(image).attrs.get("Size", 0)
    took = time.monotonic() - started
    say(f"       {'; '.join(lines)}")
    say(f"-----> Built {image} ({size / 2**20:.0f} MiB) in {took:.0f} s")
    return took


def check_image(client: Any, image: str = STACK_IMAGE, tools: tuple[str, ...] = TOOLS) -> list[str]:
    """The versions the image reports for its main tools; StackError if any of `tools` (or of
    those versions) is missing."""
    missing = " ".join(f'command -v {t} >/dev/null || echo "missing: {t}";' for t in tools)
    script = f"{missing} {_VERSIONS}"
    out = bytearray()
    status = DockerRuntime(client, image).run(
        ["sh", "-c", script],
        mounts=(),
        env={},
        workdir="/",
        memory_mb=512,
        output=out.extend,
        timeout=120,
        network=False,
        labels={"waka.role": "stack-check"},
    )
    lines = out.decode(errors="replace").strip().splitlines()
    absent = [line.removeprefix("missing: ") for line in lines if line.startswith("missing: ")]
    if absent:
        raise StackError(f"{image} lacks {', '.join(absent)}: its packages do not provide them")
    if status != 0:
        raise StackError(f"{image} does not run `{_VERSIONS}` (exit {status}): {lines}")
    return lines


def _preflight() -> Any:
    if os.geteuid() != 0:
        raise StackError("building the stack needs root (debootstrap, chroot, mount)")
    for tool, package in (
        ("debootstrap", "debootstrap"),
        ("docker", "docker.io"),
        ("chroot", "coreutils"),
        ("mount", "mount"),
    ):
        if shutil.which(tool) is None:
            raise StackError(f"{tool} is not installed (apt-get install {package})")
    client = docker_client()
    if client is None:
        raise StackError("no Docker engine answers (is dockerd running? `docker info` tells)")
    return client


def _provision(rootfs: Path, packages: tuple[str, ...], log: Path) -> dict[str, str]:
    """apt-get install the stack's packages in the chroot; the tool versions it ended with."""
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")  # no daemons start inside the chroot
    policy.chmod(0o755)
    with _proc_mounted(rootfs):
        _chroot(rootfs, "apt-get update", log)
        names = " ".join(packages)
        _chroot(rootfs, f"apt-get install -y --no-install-recommends {names}", log)
        _chroot(rootfs, "apt-get clean", log)
        versions = {
            tool: _chroot(rootfs, f"{tool} --version", log).splitlines()[0].strip()
            for tool in ("python3", "node", "npm", "git")
        }
    policy.unlink()
    for leftover in ("var/lib/apt/lists", "var/cache/apt", "tmp", "var/tmp"):
        directory = rootfs / leftover
        for entry in directory.iterdir() if directory.is_dir() else ():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    # Docker provides these per container; leave nothing of this machine in the image.
    for name in ("etc/resolv.conf", "etc/hostname"):
        (rootfs / name).write_text("")
    host_bundle = Path("/") / CA_BUNDLE
    if host_bundle.is_file():  # this machine's CA bundle, which may trust a local proxy
        shutil.copyfile(host_bundle, rootfs / CA_BUNDLE)
    return versions


def _import(
    rootfs: Path, image: str, packages: tuple[str, ...], versions: dict[str, str], log: Path
) -> None:
    built = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {
        "waka.stack": STACK_NAME,
        "waka.built": built,
        PACKAGES_LABEL: " ".join(packages),
        **{f"waka.{tool}": version for tool, version in versions.items()},
    }
    label = " ".join(f"{key}={shlex.quote(value)}" for key, value in labels.items())
    changes = [
        f"ENV PATH={DEFAULT_PATH}",
        "ENV LANG=C.UTF-8",
        f"LABEL {label}",
        'CMD ["/bin/bash"]',
    ]
    command = ["docker", "import", *(f"--change={c}" for c in changes), "-", image]
    with log.open("ab") as sink:
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
            stdout=subprocess.PIPE,
            stderr=sink,
        )
        imported = subprocess.run(command, stdin=tar.stdout, stdout=sink, stderr=sink)
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise StackError(f"`docker import` failed:\n{_tail(log)}")


def _run(command: list[str], log: Path, *, env: Mapping[str, str] | None = None) -> str:
    """Run a build step, its output appended to `log`; StackError with the log's tail if it
    fails. Returns the step's own output."""
    result = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    with log.open("ab") as sink:
        sink.write(b"$ " + shlex.join(command).encode() + b"\n" + result.stdout)
    if result.returncode != 0:
        raise StackError(
            f"`{shlex.join(command)}` failed (exit {result.returncode}):\n{_tail(log)}"
        )
    return result.stdout.decode(errors="replace")


def _chroot(rootfs: Path, script: str, log: Path) -> str:
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
    }
    return _run(["chroot", str(rootfs), "/bin/sh", "-c", script], log, env=env)


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def _proc_mounted(rootfs: Path) -> Iterator[None]:
    target = rootfs / "proc"
    mounted = subprocess.run(
        ["mount", "-t", "proc", "proc", str(target)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        raise StackError(f"cannot mount /proc in the chroot: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[1])
        if point.startswith(prefix):
            points.append(point)
    return points


def _remove(work: Path, say: Say) -> None:
    """Delete the build directory, once nothing (debootstrap's /proc, /sys) is mounted in it:
    deleting through a mount would reach the host's own files."""
    for point in sorted(_mounts_under(work), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)
    if _mounts_under(work):
        say(f"warning: {work} still has file systems mounted in it; it was left in place")
        return
    shutil.rmtree(work, ignore_errors=True)
