"""Serves a static site on $PORT: the web process of waka's static buildpack.

    server.py               serve the site root of the current directory (the app)
    server.py --root-of DIR print that root (static.json "root", else "." or "public")

Unlike `python3 -m http.server`, it hides dotfiles (.profile.d, .heroku) and lists no directories.
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit


def fail(message: str) -> None:
    print(f" !     {message}", flush=True)
    sys.exit(1)


def root_of(app: Path) -> str:
    config = app / "static.json"
    if config.is_file():
        try:
            settings = json.loads(config.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            fail(f"static.json is not valid JSON: {exc}")
        root = settings.get("root") if isinstance(settings, dict) else None
        if root is not None:
            path = PurePosixPath(str(root))
            if path.is_absolute() or ".." in path.parts:
                fail(f'static.json "root" must be a directory in the app, not {root!r}')
            if not (app / path).is_dir():
                fail(f'static.json "root" {root!r} is not a directory in the app')
            return path.as_posix()
    if not (app / "index.html").is_file() and (app / "public" / "index.html").is_file():
        return "public"
    return "."


class Handler(SimpleHTTPRequestHandler):
    def send_head(self):  # type: ignore[override]
        parts = unquote(urlsplit(self.path).path).split("/")
        if any(part.startswith(".") for part in parts if part):
            self.send_error(404)
            return None
        return super().send_head()

    def list_directory(self, path):  # type: ignore[override]
        self.send_error(404)
        return None


def serve() -> None:
    port = int(os.environ.get("PORT", "5000"))
    handler = partial(Handler, directory=root_of(Path.cwd()))
    with ThreadingHTTPServer(("0.0.0.0", port), handler) as server:
        print(f"Serving on port {port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--root-of"] and len(sys.argv) == 3:
        print(root_of(Path(sys.argv[2])))
    else:
        serve()
