"""Where a buildpack comes from: a built-in name, a local directory or a git URL."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from waka.buildpacks.errors import BuildError

BUILTIN_DIR = Path(__file__).parent / "builtin"
# Auto-detection order: the first whose bin/detect accepts the app is used.
BUILTINS = ("python", "nodejs", "static", "procfile")
# Heroku's names for the same jobs, so apps moving over keep their buildpack settings.
ALIASES = {
    "heroku/python": "python",
    "heroku/nodejs": "nodejs",
    "heroku/static": "static",
    "heroku-community/static": "static",
    "heroku/procfile": "procfile",
    "heroku-community/procfile": "procfile",
}
_REGISTRY = re.compile(
    r"^(?:urn:buildpack:|https://buildpack-registry\.s3\.amazonaws\.com/buildpacks/)"
    r"(heroku(?:-community)?/[a-z]+)(?:\.tgz)?$"
)
GIT_SCHEMES = ("https", "http", "file")
CLONE_TIMEOUT = 300.0


@dataclass(frozen=True)
class Buildpack:
    label: str  # as the app names it; what a build reports it used
    path: Path  # a directory holding bin/detect, bin/compile, bin/release


def builtin(name: str) -> Buildpack:
    return Buildpack(label=f"heroku/{name}", path=BUILTIN_DIR / name)


def builtin_name(entry: str) -> str | None:
    entry = entry.strip()
    if entry in BUILTINS:
        return entry
    registry = _REGISTRY.match(entry)
    return ALIASES.get(registry.group(1) if registry else entry)


def resolve(entry: str, *, clone_dir: Path, log: list[str]) -> Buildpack:
    """The buildpack `entry` names; git URLs are cloned (on this host) into `clone_dir`."""
    entry = entry.strip()
    name = builtin_name(entry)
    if name:
        return Buildpack(label=entry, path=BUILTIN_DIR / name)
    scheme = urlsplit(entry).scheme
    if scheme in GIT_SCHEMES:
        return Buildpack(label=entry, path=_clone(entry, clone_dir, log))
    path = Path(entry)
    if path.is_absolute():
        if not (path / "bin" / "compile").is_file():
            raise BuildError(f"Buildpack {entry} is not a buildpack directory (no bin/compile)")
        return Buildpack(label=entry, path=path)
    raise BuildError(
        f"Unknown buildpack {entry!r}: use a built-in ({', '.join(BUILTINS)}), "
        "a git URL (https://...#ref) or an absolute directory path"
    )


def display_url(url: str) -> str:
    """The URL without any credentials in it, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=host)) if parts.username else url


def _clone(entry: str, clone_dir: Path, log: list[str]) -> Path:
    url, _, ref = entry.partition("#")
    shown = display_url(url)
    if url.endswith((".tgz", ".tar.gz")):
        raise BuildError(f"Buildpack {shown}: tarball buildpacks are not supported; use a git URL")
    if clone_dir.exists():
        shutil.rmtree(clone_dir)
    clone_dir.parent.mkdir(parents=True, exist_ok=True)
    dest = str(clone_dir)
    try:
        if not ref:
            _git(url, "clone", "--depth", "1", "--", url, dest)
        else:
            # Branches and tags clone shallowly; a commit id needs the history to check out.
            try:
                _git(url, "clone", "--depth", "1", "--branch", ref, "--", url, dest)
            except BuildError:
                shutil.rmtree(clone_dir, ignore_errors=True)
                _git(url, "clone", "--", url, dest)
                _git(url, "-C", dest, "checkout", ref, "--")
        commit = _git(url, "-C", dest, "rev-parse", "--short", "HEAD")
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"Could not fetch buildpack {shown}: git timed out") from exc
    log.append(f"Fetched {shown}{'#' + ref if ref else ''} at {commit}")
    if not (clone_dir / "bin" / "compile").is_file():
        raise BuildError(f"Buildpack {shown} is not a buildpack (no bin/compile)")
    return clone_dir


# Never wait for a password, never read the host user's git configuration for credentials.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}


def _git(url: str, *args: str) -> str:
    """git's stdout; a BuildError with git's last error line (credentials removed) on failure."""
    done = subprocess.run(
        ["git", "-c", "advice.detachedHead=false", *args],
        capture_output=True,
        text=True,
        timeout=CLONE_TIMEOUT,
        check=False,
        env={**os.environ, **_GIT_ENV},
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        shown = display_url(url)
        lines = done.stderr.replace(url, shown).strip().splitlines()
        reason = lines[-1] if lines else f"git exited with {done.returncode}"
        raise BuildError(f"Could not fetch buildpack {shown}: {reason}")
    return done.stdout.strip()
