"""Buildpacks run per the Heroku v2 contract, on this host (ProcessRuntime) and in the stack image.

The host runs need python3, node, npm and git, and PyPI and the npm registry (the fixture apps
have one small dependency each). The Docker tests need the stack image `waka/stack:bookworm`:
without it they skip, except under CI, where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from waka.adapters.runtime import DockerRuntime, Mount, ProcessRuntime, Runtime
from waka.buildpacks import (
    BUILTINS,
    STACK,
    BuildError,
    CompileResult,
    ReleaseError,
    builtin_name,
    clear_cache,
    compile_app,
    parse_release,
)
from waka.buildpacks.languages import unsupported_language
from waka.buildpacks.output import BuildLog
from waka.buildpacks.sources import BUILTIN_DIR

APPS = Path(__file__).parent / "fixtures" / "apps"
STACK_IMAGE = os.environ.get("WAKA_TEST_STACK_IMAGE", "waka/stack:bookworm")
HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def in_ci() -> bool:  # as tests/conftest.py decides it
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


@dataclass
class Build:
    """One app's build: its source dir, its cache, and what each compile printed."""

    root: Path
    runtime: Runtime = field(default_factory=ProcessRuntime)
    lines: list[str] = field(default_factory=list)
    builds: int = 0

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def dir(self) -> Path:
        return self.root / f"build-{self.builds}"

    def source(self, app: str | Path) -> Path:
        """A fresh build dir holding a copy of the app (a fixture name or a directory)."""
        self.builds += 1
        shutil.copytree(app if isinstance(app, Path) else APPS / app, self.dir, symlinks=True)
        return self.dir

    def compile(
        self,
        buildpacks: Sequence[str] = (),
        config: Mapping[str, str] | None = None,
        source_version: str = "",
    ) -> CompileResult:
        self.lines = []
        return compile_app(
            build_dir=self.dir,
            cache_dir=self.cache,
            config=config or {},
            buildpacks=buildpacks,
            runtime=self.runtime,
            output=self.lines.append,
            source_version=source_version,
            work_dir=self.root / "work",
            timeout=300,
        )

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def build(tmp_path: Path) -> Build:
    return Build(tmp_path)


def in_slug(build_dir: Path, command: str) -> subprocess.CompletedProcess[str]:
    """Run a command the way a dyno does: HOME is the app, .profile.d/*.sh sourced first."""
    script = 'for f in .profile.d/*.sh; do [ -f "$f" ] && . "$f"; done; ' + command
    return subprocess.run(
        ["bash", "-c", script],
        cwd=build_dir,
        env={"PATH": os.environ["PATH"], "HOME": str(build_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_buildpack(
    path: Path, compile_sh: str, release: str = "---\n", name: str = "Test"
) -> Path:
    """A v2 buildpack in sh: detect prints `name`, compile runs `compile_sh`, release `release`."""
    (path / "bin").mkdir(parents=True)
    scripts = {
        "detect": f"#!/bin/sh\necho {name}\n",
        "compile": f"#!/bin/sh\nset -e\n{compile_sh}\n",
        "release": f"#!/bin/sh\ncat <<'YAML'\n{release}YAML\n",
    }
    for script, text in scripts.items():
        (path / "bin" / script).write_text(text)
        (path / "bin" / script).chmod(0o755)
    return path


def write_files(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


# --- detection ---------------------------------------------------------------------------


def detected_builtin(app: Path) -> str | None:
    """What auto-detection picks: the first built-in whose bin/detect accepts the app."""
    for name in BUILTINS:
        done = subprocess.run(
            [BUILTIN_DIR / name / "bin" / "detect", app], capture_output=True, check=False
        )
        if done.returncode == 0:
            return name
    return None


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ("python-web", "python"),
        ("failing-build", "python"),
        ("node-web", "nodejs"),
        ("static-site", "static"),
        ("shell-app", "procfile"),
        ("release-phase", "procfile"),
        ("failing-release-phase", "procfile"),
    ],
)
def test_detection_picks_the_builtin_for_each_fixture_app(app: str, expected: str) -> None:
    assert detected_builtin(APPS / app) == expected


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"pyproject.toml": "[project]\nname='x'\n"}, "python"),
        ({"setup.py": ""}, "python"),
        ({".python-version": "3.11\n"}, "python"),
        ({"runtime.txt": "python-3.11.9\n"}, "python"),
        ({"requirements.txt": "", "package.json": "{}", "index.html": ""}, "python"),
        ({"package.json": "{}", "index.html": "", "Procfile": "web: x"}, "nodejs"),
        ({"public/index.html": ""}, "static"),
        ({"static.json": "{}"}, "static"),
        ({"README.md": ""}, None),
    ],
)
def test_detection_rules(tmp_path: Path, files: dict[str, str], expected: str | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert detected_builtin(tmp_path) == expected


def test_an_app_no_buildpack_accepts_fails_like_heroku(build: Build, tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "README.md").write_text("just words\n")
    build.source(tmp_path / "nothing")
    with pytest.raises(BuildError) as error:
        build.compile()
    message = str(error.value)
    assert message.startswith("No default language could be detected for this app. ")
    for what in ("requirements.txt", "package.json", "index.html", "Procfile"):
        assert what in message
    assert "`heroku buildpacks:set <name or git URL>`" in message


@pytest.mark.parametrize(
    ("files", "language", "marker"),
    [
        ({"go.mod": "module example.com/hello\n", "main.go": "package main\n"}, "Go", "go.mod"),
        # A Procfile does not make a Go app runnable: without Go it would crash-loop.
        ({"go.mod": "module x\n", "Procfile": "web: ./bin/hello\n"}, "Go", "go.mod"),
        ({"Godeps/Godeps.json": "{}"}, "Go", "Godeps/Godeps.json"),
        ({"Gemfile": "source 'https://rubygems.org'\n"}, "Ruby", "Gemfile"),
        # Heroku detects Ruby before Node.js and Python: a Rails app with a package.json.
        ({"Gemfile": "", "package.json": "{}", "requirements.txt": ""}, "Ruby", "Gemfile"),
        ({"composer.json": "{}"}, "PHP", "composer.json"),
        ({"index.php": "<?php\n", "index.html": ""}, "PHP", "index.php"),
        ({"pom.xml": "<project/>"}, "Java", "pom.xml"),
        ({"build.gradle": ""}, "Gradle", "build.gradle"),
        ({"build.sbt": ""}, "Scala", "build.sbt"),
        ({"project.clj": ""}, "Clojure", "project.clj"),
    ],
)
def test_a_language_without_a_buildpack_is_refused_by_name(
    build: Build, tmp_path: Path, files: dict[str, str], language: str, marker: str
) -> None:
    app = write_files(tmp_path / "app", files)
    build.source(app)
    with pytest.raises(BuildError) as error:
        build.compile()
    assert str(error.value) == (
        f"waka has no buildpack for {language} apps (this one has a {marker}). Its built-in "
        "buildpacks build Python, Node.js, static sites and Procfile-only apps: set a "
        f"{language} buildpack with `heroku buildpacks:set <git URL>`, then push again."
    )
    assert error.value.output.splitlines() == [f"-----> {language} app detected"]
    assert not (build.dir / ".profile.d").exists()


@pytest.mark.parametrize(
    ("files", "detected"),
    [
        # Heroku detects Node.js and Python before PHP, Java and Go, so does waka.
        ({"go.mod": "", "package.json": "{}"}, "nodejs"),
        ({"composer.json": "{}", "package.json": "{}"}, "nodejs"),
        ({"pom.xml": "", "requirements.txt": ""}, "python"),
        ({"README.md": "", "Makefile": ""}, None),
    ],
)
def test_python_and_nodejs_come_before_other_languages(
    tmp_path: Path, files: dict[str, str], detected: str | None
) -> None:
    app = write_files(tmp_path / "app", files)
    assert unsupported_language(app) is None
    assert detected_builtin(app) == detected


def test_a_buildpack_the_app_set_builds_any_language(build: Build) -> None:
    slug = build.source("shell-app")
    (slug / "go.mod").write_text("module example.com/hello\n")
    assert build.compile(buildpacks=["heroku/procfile"]).description == "Procfile"


def test_builtin_names_and_herokus_names() -> None:
    assert builtin_name("python") == "python"
    assert builtin_name("heroku/nodejs") == "nodejs"
    assert builtin_name("heroku-community/static") == "static"
    assert builtin_name("urn:buildpack:heroku/python") == "python"
    assert (
        builtin_name("https://buildpack-registry.s3.amazonaws.com/buildpacks/heroku/nodejs.tgz")
        == "nodejs"
    )
    assert builtin_name("heroku/ruby") is None
    assert builtin_name("https://github.com/heroku/heroku-buildpack-python") is None


# --- python --------------------------------------------------------------------------------


def test_python_installs_into_the_slug_importable_via_profile_d(build: Build) -> None:
    slug = build.source("python-web")
    result = build.compile()
    assert result == CompileResult(
        process_types={"web": "python3 app.py"}, buildpacks=["heroku/python"], description="Python"
    )
    assert "-----> Python app detected" in build.lines
    assert "-----> Installing requirements with pip" in build.lines
    assert any(line.startswith("       ") and "six" in line for line in build.lines)
    assert (slug / ".heroku" / "python-packages" / "six.py").is_file()

    # The slug is relocatable: unpacked anywhere, .profile.d finds the packages from $HOME.
    moved = shutil.copytree(slug, build.root / "elsewhere", symlinks=True)
    shutil.rmtree(slug)
    done = in_slug(moved, "python3 -c 'import six; print(six.__file__)'")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(moved / ".heroku" / "python-packages" / "six.py")
    # Without .profile.d the dependency is not on the path: it is in the slug, not the host.
    bare = subprocess.run(
        [sys.executable, "-S", "-c", "import six"], cwd=moved, capture_output=True, check=False
    )
    assert bare.returncode != 0


def test_python_warm_cache_copies_instead_of_downloading(build: Build) -> None:
    build.source("python-web")
    started = time.monotonic()
    build.compile()
    cold = time.monotonic() - started
    assert "-----> Installing requirements with pip" in build.lines

    build.source("python-web")
    # An index that can't be reached: a warm build must not need it.
    offline = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_INDEX": "1"}
    started = time.monotonic()
    build.compile(config=offline)
    warm = time.monotonic() - started
    print(f"\npython-web compile on the host: cold {cold:.2f}s, warm {warm:.2f}s")
    assert "-----> Using cached dependencies" in build.lines
    assert not any(word in build.text for word in ("Collecting", "Downloading", "pip install"))
    assert (build.dir / ".heroku" / "python-packages" / "six.py").is_file()
    assert warm < cold / 2, (cold, warm)
    assert in_slug(build.dir, "python3 -c 'import six'").returncode == 0


def test_python_changed_requirements_miss_the_cache(build: Build) -> None:
    build.source("python-web")
    build.compile()
    slug = build.source("python-web")
    (slug / "requirements.txt").write_text("six==1.16.0\n")
    build.compile()
    assert "-----> Using cached dependencies" not in build.lines
    assert "-----> Installing requirements with pip" in build.lines
    done = in_slug(slug, "python3 -c 'import six; print(six.__version__)'")
    assert done.stdout.strip() == "1.16.0"


def test_python_includes_nested_requirement_files_in_the_cache_key(build: Build) -> None:
    slug = build.source("python-web")
    (slug / "requirements.txt").write_text("-r requirements/base.txt\n")
    (slug / "requirements").mkdir()
    (slug / "requirements" / "base.txt").write_text("six==1.17.0\n")
    build.compile()
    slug = build.source(slug)
    (slug / "requirements" / "base.txt").write_text("six==1.16.0\n")
    build.compile()
    assert "-----> Using cached dependencies" not in build.lines
    assert in_slug(slug, "python3 -c 'import six; print(six.__version__)'").stdout == "1.16.0\n"


def test_python_pyproject_dependencies(build: Build, tmp_path: Path) -> None:
    app = tmp_path / "pyapp"
    app.mkdir()
    (app / "pyproject.toml").write_text(
        '[project]\nname = "pyapp"\nversion = "1"\ndependencies = ["six>=1.16"]\n'
    )
    (app / "Procfile").write_text("web: python3 -m pyapp\n")
    build.source(app)
    result = build.compile()
    assert "-----> Installing dependencies from pyproject.toml with pip" in build.lines
    assert result.process_types == {"web": "python3 -m pyapp"}
    assert in_slug(build.dir, "python3 -c 'import six'").returncode == 0
    build.source(app)
    build.compile()
    assert "-----> Using cached dependencies" in build.lines


def test_python_version_the_stack_lacks_is_a_clear_error(build: Build) -> None:
    other = f"{sys.version_info.major}.{sys.version_info.minor + 1}"
    slug = build.source("python-web")
    (slug / ".python-version").write_text(f"{other}\n")
    with pytest.raises(BuildError) as error:
        build.compile()
    message = str(error.value)
    assert message.startswith("Failed to compile Python app: ")
    assert f"Requested Python {other} (in .python-version)" in message
    assert f"but this stack has Python {sys.version.split()[0]}" in message
    assert f" !     Requested Python {other}" in error.value.output


def test_python_version_files_the_stack_satisfies(build: Build) -> None:
    slug = build.source("python-web")
    (slug / "requirements.txt").unlink()
    (slug / "runtime.txt").write_text(f"python-{HOST_PYTHON}.99\n")
    build.compile()
    assert f"-----> Using Python {sys.version.split()[0]}" in build.lines
    assert "-----> No dependencies to install" in build.lines
    assert f"       runtime.txt asks for {HOST_PYTHON}.99; the stack's" in build.text

    slug = build.source("python-web")
    (slug / "requirements.txt").unlink()
    (slug / ".python-version").write_text("pypy3.10\n")
    with pytest.raises(BuildError, match=r"\.python-version asks for 'pypy3\.10'"):
        build.compile()


def test_a_failing_pip_install_fails_the_build(build: Build) -> None:
    build.source("failing-build")
    with pytest.raises(BuildError) as error:
        build.compile()
    assert str(error.value) == (
        "Failed to compile Python app: pip could not install the dependencies "
        "(see its output above)."
    )
    assert "waka-this-package-does-not-exist" in error.value.output
    assert "-----> Python app detected" in error.value.output


# --- python: Django's collectstatic and the bin/pre_compile, bin/post_compile hooks ----------


@pytest.fixture(scope="module")
def django_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One build cache for the Django builds here, so Django is downloaded once."""
    return tmp_path_factory.mktemp("django-cache")


@pytest.fixture
def django_build(build: Build, django_cache: Path) -> Build:
    build.cache.symlink_to(django_cache, target_is_directory=True)
    return build


def test_django_collectstatic_runs_between_the_hooks(django_build: Build) -> None:
    build = django_build
    slug = build.source("django-web")
    build.compile(config={"GREETING": "hi"})
    steps = [
        "-----> Running bin/pre_compile hook",
        "       pre_compile: writing static/generated.txt",
        "-----> Using Python " + ".".join(map(str, sys.version_info[:3])),
        "-----> $ python manage.py collectstatic --noinput",
        f"       2 static files copied to '{slug / 'staticfiles'}'.",
        "-----> Running bin/post_compile hook",
        f"       post_compile ran in {slug} with Django 5.2.19",
    ]
    positions = [build.lines.index(step) for step in steps]
    assert positions == sorted(positions), build.text
    assert not any(line.strip().startswith("Copying ") for line in build.lines)
    # What pre_compile made was collected with the app's own static file.
    assert (slug / "staticfiles" / "css" / "site.css").read_text().startswith("body {")
    assert (slug / "staticfiles" / "generated.txt").read_text() == "made by bin/pre_compile\n"
    assert (slug / "post_compile.txt").is_file()


@pytest.mark.parametrize(("value", "runs"), [("1", False), ("true", False), ("0", True)])
def test_disable_collectstatic_skips_it(django_build: Build, value: str, runs: bool) -> None:
    build = django_build
    slug = build.source("django-web")
    build.compile(config={"DISABLE_COLLECTSTATIC": value})
    skipped = "-----> Skipping Django collectstatic since the env var DISABLE_COLLECTSTATIC is set."
    assert (skipped in build.lines) is not runs
    assert ("-----> $ python manage.py collectstatic --noinput" in build.lines) is runs
    assert (slug / "staticfiles").exists() is runs
    assert "-----> Running bin/post_compile hook" in build.lines


def test_a_failing_collectstatic_fails_the_build_saying_how_to_skip_it(
    django_build: Build,
) -> None:
    build = django_build
    slug = build.source("django-web")
    settings = slug / "mysite" / "settings.py"
    settings.write_text(settings.read_text().replace("STATIC_ROOT = ", "# STATIC_ROOT = "))
    with pytest.raises(BuildError) as error:
        build.compile()
    assert str(error.value) == (
        "Failed to compile Python app: could not collect the app's Django static files."
    )
    output = error.value.output.splitlines()
    assert any("ImproperlyConfigured" in line for line in output)  # the traceback is shown
    assert " !        $ heroku config:set DISABLE_COLLECTSTATIC=1" in output
    assert " !     https://devcenter.heroku.com/articles/django-assets" in output
    assert "-----> Running bin/post_compile hook" not in output


def test_collectstatic_needs_a_manage_py(django_build: Build) -> None:
    build = django_build
    slug = build.source("django-web")
    (slug / "manage.py").unlink()
    shutil.rmtree(slug / "bin")
    build.compile()
    assert "-----> Skipping Django collectstatic since no manage.py file found." in build.lines
    assert not (slug / "staticfiles").exists()


def test_collectstatic_is_skipped_for_an_app_without_staticfiles(django_build: Build) -> None:
    build = django_build
    slug = build.source("django-web")
    settings = slug / "mysite" / "settings.py"
    apps = 'INSTALLED_APPS = ["django.contrib.staticfiles"]'
    settings.write_text(settings.read_text().replace(apps, "INSTALLED_APPS = []"))
    build.compile()
    assert (
        "-----> Skipping Django collectstatic since the app has no collectstatic command"
        " (django.contrib.staticfiles is not in INSTALLED_APPS)."
    ) in build.lines
    assert not (slug / "staticfiles").exists()
    assert "-----> Running bin/post_compile hook" in build.lines


PLAIN_PYTHON = {"pyproject.toml": "[project]\nname = 'plain'\nversion = '1'\ndependencies = []\n"}


def test_hooks_run_in_the_app_dir_with_the_config_vars(build: Build, tmp_path: Path) -> None:
    app = write_files(
        tmp_path / "app",
        {
            **PLAIN_PYTHON,
            # No shebang, no x bit (as some checkouts leave it): still run, as on Heroku.
            "bin/pre_compile": 'echo "pre in $(pwd) says $GREETING"\necho pre > pre.txt\n',
            "bin/post_compile": "#!/bin/sh\necho post sees $(cat pre.txt) >&2\n"
            "python -c 'print(\"python works\")'\n",
        },
    )
    slug = build.source(app)
    build.compile(config={"GREETING": "hello"})
    assert build.lines[build.lines.index("-----> Running bin/pre_compile hook") + 1] == (
        f"       pre in {slug} says hello"
    )
    post = build.lines.index("-----> Running bin/post_compile hook")
    assert build.lines[post + 1 : post + 3] == ["       post sees pre", "       python works"]
    assert not any("collectstatic" in line for line in build.lines)  # no Django, no step


@pytest.mark.parametrize("hook", ["pre_compile", "post_compile"])
def test_a_failing_hook_fails_the_build(build: Build, tmp_path: Path, hook: str) -> None:
    app = write_files(
        tmp_path / "app", {**PLAIN_PYTHON, f"bin/{hook}": "#!/bin/sh\necho 'no good'\nexit 3\n"}
    )
    build.source(app)
    with pytest.raises(BuildError) as error:
        build.compile()
    assert str(error.value) == (
        f"Failed to compile Python app: the app's bin/{hook} script failed (exit status 3)."
    )
    output = error.value.output.splitlines()
    assert output[output.index(f"-----> Running bin/{hook} hook") + 1] == "       no good"
    assert ("-----> No dependencies to install" in output) is (hook == "post_compile")


# --- nodejs --------------------------------------------------------------------------------


def test_nodejs_npm_ci_build_script_and_warm_cache(build: Build) -> None:
    slug = build.source("node-web")
    result = build.compile()
    assert result == CompileResult(
        process_types={"web": "npm start"}, buildpacks=["heroku/nodejs"], description="Node.js"
    )
    assert "-----> Installing dependencies with npm ci" in build.lines
    assert "-----> Running build" in build.lines
    assert (slug / "dist" / "built.txt").read_text().startswith("built at ")
    assert (slug / "node_modules" / "is-number" / "package.json").is_file()
    assert (build.cache / "node" / "npm").is_dir()
    done = in_slug(slug, "node -e 'console.log(require(\"is-number\")(5), process.env.NODE_ENV)'")
    assert done.stdout.split() == ["true", "production"], done.stderr

    slug = build.source("node-web")
    build.compile(config={"npm_config_registry": "http://127.0.0.1:9/"})
    assert "-----> Using cached dependencies" in build.lines
    assert "-----> Installing dependencies with npm ci" not in build.lines
    assert (slug / "dist" / "built.txt").is_file()
    assert (slug / "node_modules" / "is-number").is_dir()


def test_nodejs_without_a_lock_file_installs_with_npm_install_and_warns(build: Build) -> None:
    slug = build.source("node-web")
    (slug / "package-lock.json").unlink()
    result = build.compile()
    assert result.description == "Node.js"
    warning = build.lines.index(
        " !     No package-lock.json: installing with `npm install`, which may resolve other"
    )
    assert build.lines[warning + 4] == ""  # a block of its own
    assert build.lines.index("-----> Installing dependencies with npm install") > warning
    assert "-----> Installing dependencies with npm ci" not in build.lines
    assert (slug / "node_modules" / "is-number" / "package.json").is_file()
    assert (slug / "dist" / "built.txt").is_file()


def test_nodejs_failure_summary_is_only_the_cause_not_an_earlier_warning(build: Build) -> None:
    slug = build.source("node-web")
    package = (slug / "package.json").read_text()
    (slug / "package.json").write_text(
        package.replace('"private"', '"engines": {"node": "0.8.x"},\n  "private"')
    )
    (slug / "package-lock.json").rename(slug / "yarn.lock")
    with pytest.raises(BuildError) as error:
        build.compile()
    assert str(error.value) == (
        "Failed to compile Node.js app: Found yarn.lock, but this buildpack installs with npm "
        "only: package-lock.json is missing; run npm install and commit it."
    )
    assert "asks for Node.js 0.8.x (engines.node)" in error.value.output


def test_nodejs_engines_mismatch_only_warns(build: Build) -> None:
    slug = build.source("node-web")
    package = (slug / "package.json").read_text()
    (slug / "package.json").write_text(
        package.replace('"private"', '"engines": {"node": "0.8.x"},\n  "private"')
    )
    build.compile()
    assert "asks for Node.js 0.8.x (engines.node)" in build.text


# --- static, procfile ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


@pytest.fixture
def serve() -> Iterator[Callable[[Path, str], str]]:
    """Start a web process in a slug on a free port; its base URL once it answers."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(slug: Path, command: str) -> str:
        port = free_port()
        env = {"PATH": os.environ["PATH"], "HOME": str(slug), "PORT": str(port)}
        script = f'for f in .profile.d/*.sh; do [ -f "$f" ] && . "$f"; done; exec {command}'
        quiet = subprocess.DEVNULL
        process = subprocess.Popen(
            ["bash", "-c", script], cwd=slug, env=env, stdout=quiet, stderr=quiet
        )
        processes.append(process)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return f"http://127.0.0.1:{port}"
            time.sleep(0.05)
        raise AssertionError(f"{command!r} did not listen on {port}")

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def test_static_site_is_served_without_dotfiles(build: Build, serve) -> None:
    slug = build.source("static-site")
    result = build.compile()
    assert result.description == "Static"
    assert result.buildpacks == ["heroku/static"]
    url = serve(slug, result.process_types["web"])
    assert get(url + "/") == (200, (slug / "index.html").read_text())
    assert get(url + "/.heroku/static/server.py")[0] == 404
    assert get(url + "/%2eheroku/static/server.py")[0] == 404


def test_static_root_from_static_json_or_public(build: Build, tmp_path: Path) -> None:
    app = tmp_path / "site"
    (app / "public").mkdir(parents=True)
    (app / "public" / "index.html").write_text("hi")
    build.source(app)
    build.compile()
    assert "-----> Serving the site from public" in build.lines

    (app / "static.json").write_text('{"root": "../etc"}')
    build.source(app)
    with pytest.raises(BuildError, match=r'static\.json "root" must be a directory in the app'):
        build.compile()


def test_procfile_only_app(build: Build) -> None:
    build.source("shell-app")
    result = build.compile()
    assert result.buildpacks == ["heroku/procfile"]
    assert result.description == "Procfile"
    assert list(result.process_types) == ["web", "worker"]
    assert "-----> Procfile app detected" in build.lines
    assert "       Procfile declares types     -> web, worker" in build.lines


def test_release_phase_is_just_a_process_type(build: Build) -> None:
    build.source("release-phase")
    assert build.compile().process_types["release"] == "./migrate.sh"


def test_a_bad_procfile_fails_the_build_naming_the_line(build: Build) -> None:
    slug = build.source("shell-app")
    (slug / "Procfile").write_text("web: ok\nworker python w.py\n")
    with pytest.raises(BuildError, match='Procfile line 2: expected "name: command"'):
        build.compile()


def test_a_procfile_linking_out_of_the_app_is_refused(build: Build, tmp_path: Path) -> None:
    slug = build.source("shell-app")
    (tmp_path / "secret").write_text("web: cat /etc/shadow\n")
    (slug / "Procfile").unlink()
    (slug / "Procfile").symlink_to(tmp_path / "secret")
    with pytest.raises(BuildError, match="Procfile must be a file in the app"):
        build.compile(buildpacks=["procfile"])


def test_explicit_builtin_by_herokus_name(build: Build) -> None:
    build.source("shell-app")
    result = build.compile(buildpacks=["heroku/procfile"])
    assert result.buildpacks == ["heroku/procfile"]
    assert build.lines[0] == "-----> Using buildpack: heroku/procfile"


def test_unknown_buildpack_is_refused(build: Build) -> None:
    build.source("shell-app")
    with pytest.raises(BuildError, match="Unknown buildpack 'ruby'"):
        build.compile(buildpacks=["ruby"])
    with pytest.raises(BuildError, match="is not a buildpack directory"):
        build.compile(buildpacks=[str(build.root)])


# --- custom buildpacks ---------------------------------------------------------------------

CUSTOM = APPS / "custom-buildpack"


def custom_app(tmp_path: Path) -> Path:
    """An app whose Procfile overrides the custom buildpack's web but not its worker."""
    app = tmp_path / "custom-app"
    app.mkdir(exist_ok=True)
    (app / "Procfile").write_text("web: bin/custom-web --from-procfile\n")
    return app


def check_contract(build: Build, argv: Sequence[str], home: str) -> None:
    record = build.dir / ".custom-buildpack"
    assert record.joinpath("argv").read_text().splitlines() == list(argv)
    assert record.joinpath("env-dir").read_text().splitlines() == ["DATABASE_URL", "MULTI"]
    assert record.joinpath("env-values").read_text() == (
        "DATABASE_URL=postgres://db/x\nMULTI=line one\nline two\n"
    )
    names = record.joinpath("environment-names").read_text().split()
    assert "DATABASE_URL" not in names and "MULTI" not in names
    assert record.joinpath("environment").read_text().splitlines() == [
        f"STACK={STACK}",
        "SOURCE_VERSION=0123abc",
        f"HOME={home}",
        f"PWD={home}",
    ]


CONFIG = {"DATABASE_URL": "postgres://db/x", "MULTI": "line one\nline two"}


def test_custom_buildpack_from_a_local_directory_runs_per_the_contract(
    build: Build, tmp_path: Path
) -> None:
    build.source(custom_app(tmp_path))
    result = build.compile([str(CUSTOM)], config=CONFIG, source_version="0123abc")
    argv = (build.dir / ".custom-buildpack" / "argv").read_text().splitlines()
    # On the host the contract's paths are host paths: the app, its cache, a fresh env dir.
    assert argv[:2] == [str(build.dir.resolve()), str(build.cache.resolve())]
    assert Path(argv[2]).name == "env" and Path(argv[2]).is_relative_to(build.root / "work")
    check_contract(build, argv, home=str(build.dir.resolve()))
    assert result == CompileResult(
        process_types={
            "web": "bin/custom-web --from-procfile",
            "worker": "sh -c 'while true; do echo \"custom worker tick\"; sleep 10; done'",
        },
        buildpacks=[str(CUSTOM)],
        description="Custom",
    )
    assert build.lines[:3] == [
        f"-----> Using buildpack: {CUSTOM}",
        "-----> Custom app detected",
        "-----> Custom buildpack: recording the build contract",
    ]
    assert "       build 1 with this cache" in build.lines
    assert "       Default types for buildpack -> web, worker" in build.lines
    assert not Path(argv[2]).exists()  # the build's scratch space is gone afterwards

    build.source(custom_app(tmp_path))
    build.compile([str(CUSTOM)])
    assert "       build 2 with this cache" in build.lines
    clear_cache(build.cache)
    assert build.cache.is_dir() and not any(build.cache.iterdir())


def git(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def buildpack_repo(tmp_path: Path) -> tuple[str, str]:
    """A bare git repository holding the custom buildpack (tag v1); its file:// URL and v1's id."""
    work = shutil.copytree(CUSTOM, tmp_path / "bp-work")
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "v1", cwd=work)
    git("tag", "v1", cwd=work)
    commit = git("rev-parse", "HEAD", cwd=work)
    (work / "bin" / "detect").write_text("#!/bin/sh\necho 'Custom v2'\n")
    git("commit", "-q", "-am", "v2", cwd=work)
    git("clone", "-q", "--bare", work, tmp_path / "bp.git")
    return (tmp_path / "bp.git").as_uri(), commit


def test_custom_buildpack_from_a_git_url(build: Build, tmp_path: Path, buildpack_repo) -> None:
    url, v1 = buildpack_repo
    build.source(custom_app(tmp_path))
    result = build.compile([url], config=CONFIG, source_version="0123abc")
    assert result.buildpacks == [url]
    assert result.description == "Custom v2"  # the branch's head
    argv = (build.dir / ".custom-buildpack" / "argv").read_text().splitlines()
    check_contract(build, argv, home=str(build.dir.resolve()))
    assert any(line.startswith(f"       Fetched {url} at ") for line in build.lines)

    for ref in ("v1", v1, v1[:10]):
        build.source(custom_app(tmp_path))
        result = build.compile([f"{url}#{ref}"])
        assert result.description == "Custom", ref

    build.source(custom_app(tmp_path))
    with pytest.raises(BuildError, match=f"Could not fetch buildpack {url}"):
        build.compile([f"{url}#no-such-ref"])
    with pytest.raises(BuildError, match="Could not fetch buildpack"):
        build.compile([(tmp_path / "missing.git").as_uri()])


def test_git_url_credentials_stay_out_of_the_output(build: Build) -> None:
    build.source("shell-app")
    with pytest.raises(BuildError) as error:
        build.compile(["http://user:s3cret@127.0.0.1:9/bp.git"])
    assert "s3cret" not in str(error.value) and "s3cret" not in error.value.output
    assert "http://127.0.0.1:9/bp.git" in str(error.value)


def test_a_failing_compile_raises_with_the_buildpacks_output(build: Build, tmp_path: Path) -> None:
    bp = write_buildpack(tmp_path / "bp", "echo 'compiling...'\necho 'it broke' >&2\nexit 3")
    build.source("shell-app")
    with pytest.raises(BuildError) as error:
        build.compile([str(bp)])
    assert str(error.value) == "Failed to compile Test app (exit status 3)"
    assert error.value.output.splitlines()[-3:] == [
        "-----> Test app detected",
        "       compiling...",
        "       it broke",
    ]


def test_the_failure_summary_is_the_first_paragraph_of_the_last_warning_block(
    build: Build, tmp_path: Path
) -> None:
    script = "\n".join(
        [
            "echo ' !     A warning from earlier, in a block of its own.'",
            "echo",
            "echo 'working...'",
            "echo",
            "echo ' !     Error: the real cause,'",
            "echo ' !     over two lines.'",
            "echo ' !'",
            "echo ' !     How to fix it, which the build output shows.'",
            "echo",
            "exit 1",
        ]
    )
    bp = write_buildpack(tmp_path / "bp", script)
    build.source("shell-app")
    with pytest.raises(BuildError) as error:
        build.compile([str(bp)])
    assert str(error.value) == "Failed to compile Test app: the real cause, over two lines."
    assert error.value.output.splitlines()[-5:] == [
        "",
        " !     Error: the real cause,",
        " !     over two lines.",
        " !",
        " !     How to fix it, which the build output shows.",
    ]


def test_several_buildpacks_run_in_order_sharing_export_files(build: Build, tmp_path: Path) -> None:
    first = write_buildpack(
        tmp_path / "first",
        'echo "export FROM_FIRST=\'hello there\'" > "$(dirname "$0")/../export"\n'
        'echo first > "$1/order"',
        release="---\ndefault_process_types:\n  first: never used\n",
        name="First",
    )
    second = write_buildpack(
        tmp_path / "second",
        'echo "second saw: $FROM_FIRST"\necho second >> "$1/order"',
        release="---\ndefault_process_types:\n  web: 'it''s the last one'\n",
        name="Second",
    )
    app = tmp_path / "bare-app"
    app.mkdir()
    build.source(app)
    result = build.compile([str(first), str(second)])
    assert (build.dir / "order").read_text() == "first\nsecond\n"
    assert "       second saw: hello there" in build.lines
    assert build.lines[:3] == [
        "-----> Using buildpacks:",
        f"       1. {first}",
        f"       2. {second}",
    ]
    # Heroku: the last buildpack's bin/release decides the default process types.
    assert result.process_types == {"web": "it's the last one"}
    assert result.description == "First, Second"


def test_a_buildpack_whose_detect_declines_still_compiles_when_chosen(
    build: Build, tmp_path: Path
) -> None:
    bp = write_buildpack(tmp_path / "bp", "echo compiled")
    (bp / "bin" / "detect").write_text("#!/bin/sh\nexit 1\n")
    (bp / "bin" / "release").unlink()
    build.source("shell-app")
    result = build.compile([str(bp)])
    assert result.buildpacks == [str(bp)] and result.description == ""
    assert "       compiled" in build.lines
    assert list(result.process_types) == ["web", "worker"]


def test_bad_release_yaml_fails_the_build(build: Build, tmp_path: Path) -> None:
    bp = write_buildpack(tmp_path / "bp", "true", release="default_process_types: web\n")
    build.source("shell-app")
    with pytest.raises(BuildError, match="write default_process_types as an indented block"):
        build.compile([str(bp)])


def test_runtime_kills_are_reported(build: Build, tmp_path: Path) -> None:
    bp = write_buildpack(tmp_path / "bp", "kill -9 $$")
    build.source("shell-app")
    with pytest.raises(
        BuildError, match=r"Failed to compile Test app \(killed; it may have run out"
    ):
        build.compile([str(bp)])


# --- bin/release YAML and output formatting ----------------------------------------------


def test_release_yaml_subset() -> None:
    info = parse_release(
        "---\n"
        "addons: []\n"
        "config_vars:\n"
        "  PATH: /app/bin:/usr/bin\n"
        '  QUOTED: "a \\"b\\" \\n"\n'
        "default_process_types:\n"
        "  web:    bundle exec puma -p $PORT   # a comment\n"
        "  # a comment line\n"
        "\n"
        "  worker: 'sh -c ''echo hi'''\n"
        '  "quoted-key": x # y\n'
        "  hash: echo a#b\n"
    )
    assert info.default_process_types == {
        "web": "bundle exec puma -p $PORT",
        "worker": "sh -c 'echo hi'",
        "quoted-key": "x",
        "hash": "echo a#b",
    }
    assert info.config_vars == {"PATH": "/app/bin:/usr/bin", "QUOTED": 'a "b" \n'}
    assert info.addons == []


@pytest.mark.parametrize(
    "text", ["", "---\n", "--- \n...\n", "default_process_types:\n", "default_process_types: {}\n"]
)
def test_release_yaml_without_process_types(text: str) -> None:
    assert parse_release(text).default_process_types == {}


def test_release_yaml_addons_list() -> None:
    assert parse_release("addons:\n  - heroku-postgresql\n  - 'redis'\n").addons == [
        "heroku-postgresql",
        "redis",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "default_process_types:\nweb: x\n  worker: y\nbad line\n",
            "line 4: expected 'key: value'",
        ),
        ("  web: x\n", "line 1: indented line outside a section"),
        ("default_process_types:\n  web:\n", "line 2: 'web' has no value"),
        ('default_process_types:\n  web: "x\n', "line 2: unterminated string"),
        ("default_process_types: {web: x}\n", "write default_process_types as an indented block"),
    ],
)
def test_release_yaml_errors(text: str, message: str) -> None:
    with pytest.raises(ReleaseError, match=message):
        parse_release(text)


def test_build_log_lines_from_any_chunks() -> None:
    lines: list[str] = []
    log = BuildLog(lines.append)
    for chunk in (
        b"-----> Step\nout",
        b"put\n",
        b" !     warn\n\npro",
        b"gress 1\rprogress 2\n",
        b"t\xc3",
    ):
        log.write(chunk)
    log.write(b"\xa9l")
    log.flush()
    assert lines == [
        "-----> Step",
        "       output",
        " !     warn",
        "",
        "       progress 2",
        "       tél",
    ]
    assert log.text() == "\n".join(lines)


# --- in the stack image --------------------------------------------------------------------


@pytest.fixture(scope="session")
def stack_runtime() -> DockerRuntime:
    """The real DockerRuntime with the stack image; skipped (failed under CI) without them."""
    import docker

    try:
        client = docker.from_env(timeout=10)
        client.ping()
        client.images.get(STACK_IMAGE)
    except Exception as exc:  # no SDK socket, no engine, no image
        message = f"needs Docker and the image {STACK_IMAGE} (`waka stack build`): {exc}"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return DockerRuntime(client, STACK_IMAGE)


@pytest.fixture
def stack_build(tmp_path: Path, stack_runtime: DockerRuntime) -> Build:
    return Build(tmp_path, runtime=stack_runtime)


def in_stack(build: Build, command: str) -> tuple[int, str]:
    """Run a command in the stack image as a dyno would: slug at /app, .profile.d sourced."""
    chunks: list[bytes] = []
    script = 'for f in .profile.d/*.sh; do [ -f "$f" ] && . "$f"; done; ' + command
    status = build.runtime.run(
        ["bash", "-c", script],
        mounts=[Mount(build.dir, "/app")],
        env={"HOME": "/app"},
        workdir="/app",
        memory_mb=512,
        output=chunks.append,
        timeout=60,
    )
    return status, b"".join(chunks).decode()


def test_stack_python(stack_build: Build) -> None:
    stack_build.source("python-web")
    started = time.monotonic()
    assert stack_build.compile().description == "Python"
    cold = time.monotonic() - started
    assert in_stack(stack_build, "python3 -c 'import six; print(six.__file__)'") == (
        0,
        "/app/.heroku/python-packages/six.py\n",
    )
    stack_build.source("python-web")
    started = time.monotonic()
    stack_build.compile()
    warm = time.monotonic() - started
    print(f"\npython-web compile in {STACK_IMAGE}: cold {cold:.2f}s, warm {warm:.2f}s")
    assert "-----> Using cached dependencies" in stack_build.lines


def test_stack_nodejs(stack_build: Build) -> None:
    stack_build.source("node-web")
    assert stack_build.compile().process_types == {"web": "npm start"}
    assert "-----> Running build" in stack_build.lines
    status, out = in_stack(stack_build, "node -e 'console.log(require(\"is-number\")(1))'")
    assert (status, out) == (0, "true\n")
    assert (stack_build.dir / "dist" / "built.txt").is_file()


def test_stack_static(stack_build: Build) -> None:
    stack_build.source("static-site")
    result = stack_build.compile()
    assert result.process_types == {"web": "python3 .heroku/static/server.py"}
    status, out = in_stack(stack_build, "python3 .heroku/static/server.py --root-of /app")
    assert (status, out) == (0, ".\n")


def test_stack_procfile(stack_build: Build) -> None:
    stack_build.source("shell-app")
    assert list(stack_build.compile().process_types) == ["web", "worker"]


def test_stack_custom_buildpack_contract(stack_build: Build, tmp_path: Path) -> None:
    stack_build.source(custom_app(tmp_path))
    stack_build.compile([str(CUSTOM)], config=CONFIG, source_version="0123abc")
    check_contract(stack_build, ["/app", "/tmp/cache", "/tmp/env"], home="/app")
