"""Git smart HTTP: `git push http://localhost:5000/<app>.git main`, served by the real
`git http-backend` (as CGI), one bare repository per app, with waka's pre-receive hook.

The response streams as git produces it, so the pusher sees the build's `remote:` lines
while the build runs. The API key is the password; any user name will do.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from waka.api.endpoint import authenticate
from waka.api.errors import ApiError, error_response
from waka.bootstrap import Platform
from waka.projections.apps import find_app

HOOKS = {
    "pre-receive": "#!/bin/sh\n# Installed by waka: every push builds the app.\n"
    "exec {python} -m waka.git_hook\n",
    "post-receive": "#!/bin/sh\nexec {python} -m waka.git_hook post-receive\n",
}


def repository(platform: Platform, app_id: str) -> Path:
    """The app's bare repository (by id, so a rename keeps it), created on first use."""
    repo = platform.settings.home / "repos" / f"{app_id}.git"
    if not (repo / "HEAD").exists():
        repo.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(repo)], check=True
        )
        subprocess.run(["git", "-C", str(repo), "config", "http.receivepack", "true"], check=True)
    for name, template in HOOKS.items():
        hook = repo / "hooks" / name
        text = template.format(python=sys.executable)
        if not hook.exists() or hook.read_text() != text:  # keep them pointing at this Python
            hook.write_text(text)
            hook.chmod(0o755)
    return repo


def _authorize(platform: Platform, request: Request) -> tuple[dict, dict]:
    user = authenticate(platform, request)
    app = find_app(platform.store, request.path_params["app"])
    if app is None:
        raise ApiError(404, "not_found", "Couldn't find that app.")
    if app["owner_id"] != user["id"]:
        raise ApiError(403, "forbidden", f"You do not have access to the app {app['name']}.")
    repository(platform, app["id"])
    return user, app


def _cgi_env(platform: Platform, request: Request, user: dict, app: dict) -> dict[str, str]:
    settings = platform.settings
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_PROJECT_ROOT": str(settings.home / "repos"),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": f"/{app['id']}.git/{request.path_params['rest']}",
        "REQUEST_METHOD": request.method,
        "QUERY_STRING": request.url.query,
        "CONTENT_TYPE": request.headers.get("content-type", ""),
        "REMOTE_USER": user["email"],
        "REMOTE_ADDR": request.client.host if request.client else "",
        # For the pre-receive hook: where the platform is, which app, who pushes.
        "WAKA_HOME": str(settings.home),
        "WAKA_API_PORT": str(settings.api_port),
        "WAKA_ROUTER_PORT": str(settings.router_port),
        "WAKA_GIT_APP_ID": app["id"],
        "WAKA_GIT_USER_ID": user["id"],
        "WAKA_GIT_USER_EMAIL": user["email"],
    }
    if settings.database_url:
        env["WAKA_DATABASE_URL"] = settings.database_url
        env["WAKA_DATABASE_SCHEMA"] = settings.database_schema
    if settings.cipher_key:
        env["WAKA_CIPHER_KEY"] = settings.cipher_key
    for header, name in (
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
        ("content-length", "CONTENT_LENGTH"),
    ):
        if header in request.headers:
            env[name] = request.headers[header]
    return env


def routes(platform: Platform) -> list[Route]:
    async def git(request: Request) -> Response:
        try:
            user, app = await run_in_threadpool(_authorize, platform, request)
        except ApiError as error:
            response = error_response(error.status, error.error_id, error.message)
            if error.status == 401:
                response.headers["WWW-Authenticate"] = 'Basic realm="waka"'
            return response
        env = _cgi_env(platform, request, user, app)
        process = await asyncio.create_subprocess_exec(
            shutil.which("git") or "git",
            "http-backend",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )

        async def feed() -> None:
            assert process.stdin is not None
            try:
                async for chunk in request.stream():
                    if not chunk:
                        continue  # a GET's empty body: git may have exited already
                    if process.stdin.is_closing():
                        break  # git stopped reading: it answers without the rest
                    process.stdin.write(chunk)
                    await process.stdin.drain()
            # git exited before reading all: an error (asyncio) or a closed handle (uvloop).
            except (BrokenPipeError, ConnectionResetError, RuntimeError):
                pass
            finally:
                process.stdin.close()

        feeding = asyncio.create_task(feed())
        assert process.stdout is not None
        status, headers = await _read_cgi_headers(process.stdout)

        async def body():
            try:
                while chunk := await process.stdout.read(1 << 16):
                    yield chunk
            finally:
                await feeding
                await process.wait()

        return StreamingResponse(body(), status_code=status, headers=headers)

    return [Route("/{app}.git/{rest:path}", git, methods=["GET", "POST"])]


async def _read_cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status, headers = 200, {}
    while line := (await stdout.readline()).decode("latin-1").rstrip("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split()[0])
        else:
            headers[name.strip()] = value.strip()
    return status, headers
