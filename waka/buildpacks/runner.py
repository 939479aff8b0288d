"""Compiling an app with buildpacks, per the Heroku v2 contract.

The build directory is mounted at /app (where the slug will run, so absolute paths a buildpack
bakes in stay right), the cache at /tmp/cache, the config vars as one file each at /tmp/env,
and buildpack n at /tmp/buildpacks/n. Buildpacks are copied per build and mounted writable:
Heroku's buildpack directories are writable, and some buildpacks write an `export` file there
for the buildpacks after them. driver.sh runs detect, compile and release in one runtime run.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from waka.adapters.runtime import Mount, Runtime, RunTimedOut
from waka.buildpacks import sources
from waka.buildpacks.errors import BuildError
from waka.buildpacks.languages import unsupported_language
from waka.buildpacks.output import WARNING, BuildLog, is_warning
from waka.buildpacks.procfile import ProcfileError, parse_procfile
from waka.buildpacks.release import ReleaseError, parse_release

STACK = "waka-bookworm"
APP_DIR = "/app"
CACHE_DIR = "/tmp/cache"
ENV_DIR = "/tmp/env"
BUILDPACKS_DIR = "/tmp/buildpacks"
DRIVER_DIR = "/tmp/waka"
DRIVER = Path(__file__).with_name("driver.sh")
BUILD_TIMEOUT = 15 * 60.0  # Heroku's limit for a build
NO_DETECT = (
    "No default language could be detected for this app. The built-in buildpacks detect "
    "Python (requirements.txt, pyproject.toml, setup.py, .python-version or runtime.txt), "
    "Node.js (package.json), a static site (index.html, public/index.html or static.json) and "
    "a Procfile-only app (Procfile): add one of those, or set a buildpack with "
    "`heroku buildpacks:set <name or git URL>`."
)


@dataclass(frozen=True)
class CompileResult:
    process_types: dict[str, str]
    buildpacks: list[str]  # as the app named them; "heroku/<name>" when detected
    description: str  # the detected names, e.g. "Python"


def compile_app(
    *,
    build_dir: Path,
    cache_dir: Path,
    config: Mapping[str, str],
    buildpacks: Sequence[str],
    runtime: Runtime,
    output: Callable[[str], None],
    source_version: str = "",
    work_dir: Path,
    memory_mb: int = 1024,
    timeout: float | None = BUILD_TIMEOUT,
    labels: Mapping[str, str] | None = None,
) -> CompileResult:
    """Compile `build_dir` in place; `output` gets each line of build output as it is made.

    Raises BuildError (with the output so far) when no buildpack fits or one fails; a
    runtime that can't run at all (RuntimeUnavailable) is the platform's problem and propagates.
    """
    if not build_dir.is_dir():
        raise ValueError(f"no build directory at {build_dir}")
    log = BuildLog(output)
    work_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="buildpacks-", dir=work_dir))
    try:
        if not buildpacks:
            _refuse_unsupported(build_dir, log)
        chosen = _choose(buildpacks, run_dir, log)
        _stage(chosen, config, run_dir)
        command = ["bash", f"{DRIVER_DIR}/driver.sh", "all" if buildpacks else "detect"]
        command += [DRIVER_DIR, APP_DIR, CACHE_DIR, ENV_DIR]
        command += [f"{BUILDPACKS_DIR}/{n}" for n in range(len(chosen))]
        try:
            status = runtime.run(
                command,
                mounts=_mounts(build_dir, cache_dir, run_dir),
                env={
                    "STACK": STACK,
                    "SOURCE_VERSION": source_version,
                    "HOME": APP_DIR,
                    "LANG": "C.UTF-8",
                },
                workdir=APP_DIR,
                memory_mb=memory_mb,
                output=log.write,
                timeout=timeout,
                labels=labels,
            )
        except RunTimedOut as exc:
            raise BuildError(f"Build timed out after {exc.timeout:g} seconds") from exc
        finally:
            log.flush()
        used = _used(run_dir / "waka" / "used", chosen)
        _check(status, run_dir / "waka" / "error", used, memory_mb, log)
        process_types = _process_types(build_dir, run_dir / "waka" / "release.yml", log)
        return CompileResult(
            process_types=process_types,
            buildpacks=[label for label, _ in used],
            description=", ".join(name for _, name in used if name),
        )
    except BuildError as exc:
        exc.output = exc.output or log.text()
        raise
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def clear_cache(cache_dir: Path) -> None:
    """Empty an app's build cache (DELETE /apps/:app/build-cache); the directory stays."""
    if not cache_dir.is_dir():
        return
    for entry in cache_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _refuse_unsupported(build_dir: Path, log: BuildLog) -> None:
    """An app in a language Heroku builds but waka can't is refused, naming the language,
    rather than falling through to the static or Procfile buildpack and crash-looping."""
    found = unsupported_language(build_dir)
    if found:
        log.step(f"{found.language.name} app detected")
        raise BuildError(found.message())


def _choose(entries: Sequence[str], run_dir: Path, log: BuildLog) -> list[sources.Buildpack]:
    if not entries:
        return [sources.builtin(name) for name in sources.BUILTINS]
    if len(entries) == 1:
        log.step(f"Using buildpack: {sources.display_url(entries[0])}")
    else:
        log.step("Using buildpacks:")
        for n, entry in enumerate(entries, start=1):
            log.info(f"{n}. {sources.display_url(entry)}")
    chosen = []
    for n, entry in enumerate(entries):
        notes: list[str] = []
        chosen.append(sources.resolve(entry, clone_dir=run_dir / "clones" / str(n), log=notes))
        for note in notes:
            log.info(note)
    return chosen


def _stage(chosen: Sequence[sources.Buildpack], config: Mapping[str, str], run_dir: Path) -> None:
    """Lay out what gets mounted: buildpack copies, the env dir and the driver."""
    for n, buildpack in enumerate(chosen):
        target = run_dir / "buildpacks" / str(n)
        shutil.copytree(
            buildpack.path, target, symlinks=True, ignore=shutil.ignore_patterns(".git")
        )
        for script in ("detect", "compile", "release"):
            path = target / "bin" / script
            if path.is_file() and not path.is_symlink():  # git and wheels may drop the x bit
                path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    env_dir = run_dir / "env"
    env_dir.mkdir()
    for name, value in config.items():
        if name and "/" not in name and "\0" not in name and name not in (".", ".."):
            (env_dir / name).write_text(value)
    (run_dir / "waka").mkdir()
    shutil.copy2(DRIVER, run_dir / "waka" / "driver.sh")


def _mounts(build_dir: Path, cache_dir: Path, run_dir: Path) -> list[Mount]:
    return [
        Mount(build_dir.resolve(), APP_DIR),
        Mount(cache_dir.resolve(), CACHE_DIR),
        Mount(run_dir.resolve() / "env", ENV_DIR, read_only=True),
        Mount(run_dir.resolve() / "buildpacks", BUILDPACKS_DIR),
        Mount(run_dir.resolve() / "waka", DRIVER_DIR),
    ]


def _read_meta(path: Path) -> str:
    """A file the driver wrote. The build could have swapped in a link to a host file: refuse."""
    if path.is_symlink() or not path.is_file():
        return ""
    return path.read_text(encoding="utf-8", errors="replace")


def _used(path: Path, chosen: Sequence[sources.Buildpack]) -> list[tuple[str, str]]:
    """(label, detected name) of each buildpack the driver compiled, in order."""
    used = []
    for line in _read_meta(path).splitlines():
        index, _, name = line.partition("\t")
        if index.isdigit() and int(index) < len(chosen):
            used.append((chosen[int(index)].label, name.strip()))
    return used


def _check(
    status: int, error_file: Path, used: list[tuple[str, str]], memory_mb: int, log: BuildLog
) -> None:
    error = _read_meta(error_file).split()
    if status == 0 and not error:
        return
    if error[:1] == ["nodetect"]:
        raise BuildError(NO_DETECT)
    # The driver stops at the failure, so the last buildpack it used is the one that failed.
    label, name = used[-1] if used else ("", "")
    code = int(error[2]) if len(error) == 3 and error[2].lstrip("-").isdigit() else status
    if error[:1] == ["compile"]:
        reason = _failure_reason(log.lines)
        what = f"Failed to compile {name or label} app"
        raise BuildError(f"{what}: {reason}" if reason else what + _exit_note(code, memory_mb))
    if error[:1] == ["release"]:
        raise BuildError(f"bin/release of buildpack {label} failed{_exit_note(code, memory_mb)}")
    raise BuildError(f"Build failed{_exit_note(status, memory_mb)}")


def _failure_reason(lines: list[str]) -> str:
    """Why a buildpack failed, by convention the last block of ` !     ` lines it printed.

    Only that block's first paragraph (a ` !` line ends one), so a warning printed earlier
    and a long explanation after the cause stay in the build output, out of the summary.
    """
    block: list[str] = []
    for line in reversed(lines):
        if is_warning(line):
            block.insert(0, line.removeprefix(WARNING.rstrip()).strip())
        elif block or line.strip():
            break
    while block and not block[0]:
        block.pop(0)
    paragraph = block[: block.index("")] if "" in block else block
    return " ".join(paragraph).removeprefix("Error: ")


def _exit_note(code: int, memory_mb: int) -> str:
    if code in (137, -9):  # SIGKILL: the memory limit is the usual reason in a build
        return f" (killed; it may have run out of its {memory_mb} MB of memory)"
    return f" (exit status {code})"


def _process_types(build_dir: Path, release_yml: Path, log: BuildLog) -> dict[str, str]:
    """The buildpack's default process types, overridden by the app's Procfile."""
    try:
        defaults = parse_release(_read_meta(release_yml)).default_process_types
        declared = parse_procfile(_read_procfile(build_dir))
    except (ReleaseError, ProcfileError) as exc:
        raise BuildError(str(exc)) from exc
    log.step("Discovering process types")
    log.info(f"Procfile declares types     -> {', '.join(declared) or '(none)'}")
    log.info(f"Default types for buildpack -> {', '.join(defaults) or '(none)'}")
    return {**defaults, **declared}


def _read_procfile(build_dir: Path) -> str:
    procfile = build_dir / "Procfile"
    if not procfile.exists() and not procfile.is_symlink():
        return ""
    root = build_dir.resolve()
    if not procfile.resolve().is_relative_to(root) or not procfile.is_file():
        raise BuildError("Procfile must be a file in the app")
    try:
        return procfile.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BuildError("Procfile is not UTF-8 text") from exc
