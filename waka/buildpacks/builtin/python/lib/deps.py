"""Helpers for the Python buildpack's bin/compile, run with the stack's python3.

    deps.py version BUILD_DIR     check .python-version / runtime.txt against this python3
    deps.py plan BUILD_DIR FILE   print "KIND KEY": what to install, and its cache key ("-": none)

KIND is "requirements" (requirements.txt), "pyproject" ([project] dependencies, written to FILE
as requirements), "setup.py" or "pyproject.toml" (install the project itself: not cacheable, its
code may change while its metadata does not), or "none".
"""

from __future__ import annotations

import hashlib
import platform
import re
import sys
from pathlib import Path

VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")
# Requirement lines that pull in other files, whose contents belong in the cache key.
INCLUDE = re.compile(r"^(?:-r|-c|--requirement|--constraint)(?:\s*=\s*|\s+|(?=\S))(\S+)")
# Requirements installed from the app's own files: they can change with the key unchanged.
LOCAL = re.compile(r"^(?:\.|/|~|file:|-e\b|--editable\b)|\s@\s*file:")


def fail(message: str) -> None:
    print(f" !     {message}", flush=True)
    sys.exit(1)


def requested_version(build_dir: Path) -> tuple[str, str] | None:
    """(version, file) the app asks for, if it does."""
    for name, prefix in ((".python-version", ""), ("runtime.txt", "python-")):
        path = build_dir / name
        if not path.is_file():
            continue
        lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
        value = next((line for line in lines if line), "")
        if prefix and value.startswith(prefix):
            value = value[len(prefix) :]
        if not VERSION.match(value):
            example = f"{prefix}3.11" if prefix else "3.11"
            fail(f"{name} asks for {value!r}: write a version like {example}, or remove it.")
        return value, name
    return None


def check_version(build_dir: Path) -> None:
    have = platform.python_version()
    requested = requested_version(build_dir)
    if requested:
        version, source = requested
        major, minor = VERSION.match(version).group(1, 2)
        stack = f"{sys.version_info.major}.{sys.version_info.minor}"
        if f"{major}.{minor}" != stack:
            fail(
                f"Requested Python {major}.{minor} (in {source}), but this stack has Python {have}."
                f" Ask for {stack} in {source}, or remove it to use the stack's Python."
            )
        if version.count(".") == 2 and version != have:
            print(f"       {source} asks for {version}; the stack's {stack} is {have}", flush=True)
    print(f"-----> Using Python {have}", flush=True)


def requirement_files(path: Path, seen: set[Path]) -> bool:
    """Collect path and the files it includes into seen; False if it installs local code."""
    if path in seen or not path.is_file():
        return True
    seen.add(path)
    cacheable = True
    for raw in path.read_text(errors="replace").splitlines():
        line = re.split(r"(?:^|\s)#", raw, maxsplit=1)[0].strip()
        include = INCLUDE.match(line)
        if include:
            cacheable &= requirement_files((path.parent / include.group(1)).resolve(), seen)
        elif LOCAL.search(line):
            cacheable = False
    return cacheable


def project_dependencies(pyproject: Path) -> list[str] | None:
    """[project] dependencies, or None when they aren't static."""
    try:
        import tomllib
    except ImportError:
        return None
    try:
        project = tomllib.loads(pyproject.read_text()).get("project")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        fail(f"pyproject.toml is not valid TOML: {exc}")
    if not isinstance(project, dict) or "dependencies" in project.get("dynamic", []):
        return None
    dependencies = project.get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        fail("pyproject.toml: [project] dependencies must be a list of strings")
    return dependencies


def plan(build_dir: Path, requirements_out: Path) -> str:
    digest = hashlib.sha256(f"waka-python-1 {platform.python_version()}".encode())
    digest.update(f" {sys.platform} {platform.machine()}\0".encode())
    requirements = build_dir / "requirements.txt"
    if requirements.is_file():
        files: set[Path] = set()
        cacheable = requirement_files(requirements.resolve(), files)
        root = build_dir.resolve()
        for path in sorted(files):
            name = path.relative_to(root) if path.is_relative_to(root) else path
            digest.update(name.as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
        return f"requirements {digest.hexdigest() if cacheable else '-'}"
    pyproject = build_dir / "pyproject.toml"
    if pyproject.is_file():
        dependencies = project_dependencies(pyproject)
        if dependencies is None:
            return "pyproject.toml -"
        if not dependencies:
            return "none -"
        text = "".join(f"{line}\n" for line in dependencies)
        requirements_out.write_text(text)
        digest.update(text.encode())
        cacheable = not any(LOCAL.search(line) for line in dependencies)
        return f"pyproject {digest.hexdigest() if cacheable else '-'}"
    if (build_dir / "setup.py").is_file():
        return "setup.py -"
    return "none -"


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "version":
        check_version(Path(argv[1]))
    elif len(argv) == 3 and argv[0] == "plan":
        print(plan(Path(argv[1]), Path(argv[2])))
    else:
        sys.exit(f"usage: {sys.argv[0]} version BUILD_DIR | plan BUILD_DIR FILE")


if __name__ == "__main__":
    main(sys.argv[1:])
