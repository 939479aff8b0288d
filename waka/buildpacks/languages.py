"""Languages Heroku detects that waka has no built-in buildpack for.

Auto-detection refuses such an app by name instead of letting a fallback (static, Procfile)
release it to crash-loop. Heroku tries its buildpacks in this order: Ruby, Node.js, Clojure,
Python, Java, Gradle, Scala, PHP, Go. waka's Python and Node.js come before everything here
except Ruby, which Heroku detects first: a Rails app with a package.json is a Ruby app.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from waka.buildpacks.sources import BUILTIN_DIR

# The built-ins that come before the languages here (Ruby aside), in detection order.
DETECTED_FIRST = ("python", "nodejs")


@dataclass(frozen=True)
class Language:
    name: str
    markers: tuple[str, ...]  # files (globs) whose presence makes the app this language's
    before_builtins: bool = False  # detected ahead of waka's Python and Node.js (Ruby)

    def marker_in(self, build_dir: Path) -> str | None:
        for pattern in self.markers:
            for path in sorted(build_dir.glob(pattern)):
                if path.is_file():
                    return path.relative_to(build_dir).as_posix()
        return None


# Each language's markers as its Heroku buildpack's bin/detect looks for them.
UNSUPPORTED = (
    Language("Ruby", ("Gemfile",), before_builtins=True),
    Language("Clojure", ("project.clj",)),
    Language(
        "Java",
        tuple(
            f"pom.{ext}" for ext in ("xml", "atom", "clj", "groovy", "rb", "scala", "yaml", "yml")
        ),
    ),
    Language(
        "Gradle",
        ("gradlew", "build.gradle", "build.gradle.kts", "settings.gradle", "settings.gradle.kts"),
    ),
    Language("Scala", ("*.sbt", "project/*.scala", "project/build.properties")),
    Language("PHP", ("composer.json", "index.php")),
    Language(
        "Go",
        ("go.mod", "Gopkg.lock", "Godeps/Godeps.json", "vendor/vendor.json", "glide.yaml"),
    ),
)


@dataclass(frozen=True)
class Unsupported:
    language: Language
    marker: str  # the file that gave it away, e.g. "go.mod"

    def message(self) -> str:
        name = self.language.name
        return (
            f"waka has no buildpack for {name} apps (this one has a {self.marker}). "
            "Its built-in buildpacks build Python, Node.js, static sites and Procfile-only "
            f"apps: set a {name} buildpack with `heroku buildpacks:set <git URL>`, then push again."
        )


def unsupported_language(build_dir: Path) -> Unsupported | None:
    """The language auto-detection would pick for the app if waka had a buildpack for it."""
    for language in UNSUPPORTED:
        marker = language.marker_in(build_dir)
        if marker is None:
            continue
        if not language.before_builtins and _builtin_detects(build_dir):
            return None
        return Unsupported(language, marker)
    return None


def _builtin_detects(build_dir: Path) -> bool:
    """Does waka's Python or Node.js buildpack take the app? Their own bin/detect says: it only
    tests for files, so it runs here, on this host, as it would in the build."""
    for name in DETECTED_FIRST:
        detect = BUILTIN_DIR / name / "bin" / "detect"
        done = subprocess.run(
            ["sh", str(detect), str(build_dir)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
        if done.returncode == 0:
            return True
    return False
