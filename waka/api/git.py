"""Git smart HTTP: `git push http://localhost:5000/<app>.git main`, served by the real
`git http-backend` (as CGI), one bare repository per app, with waka's pre-receive hook.

This is a plain ASGI app, not a Starlette endpoint: a push's response (the build's `remote:`
lines) starts while its request body (the pack) may still be arriving, so one task must own
`receive()`. Starlette's StreamingResponse listens for a disconnect with `receive()` of its
own, which took pack chunks away from the reader and broke every push over a few hundred KB.
Here the uploader is the only reader: it feeds git the body, then waits for the disconnect.

The API key is the password; any user name will do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from waka.adapters import processes
from waka.api.auth_limit import RateLimited
from waka.api.endpoint import authenticate
from waka.api.errors import ApiError, error_response
from waka.bootstrap import Platform
from waka.projections.apps import find_app

CHUNK = 1 << 16
log = logging.getLogger("waka.git")


def _authorize(platform: Platform, request: Request) -> tuple[dict, dict]:
    from waka.domain import access
    from waka.projections.collaborators import app_access

    user = authenticate(platform, request)
    app = find_app(platform.store, request.path_params["app"])
    if app is None:
        raise ApiError(404, "not_found", "Couldn't find that app.")
    pushing = "git-receive-pack" in f"{request.path_params.get('rest', '')}?{request.url.query}"
    permission = access.DEPLOY if pushing else access.VIEW  # the access policy decides
    if not access.allows(app_access(platform.store, app), user["id"], permission):
        raise ApiError(403, "forbidden", f"You do not have access to the app {app['name']}.")
    try:  # where processes share storage: this copy brought up to date first
        platform.git_repos.ensure(app["id"])
    except Exception:
        log.exception("the repository of app %s could not be brought up to date", app["id"])
        raise ApiError(
            503, "unavailable", "The app's repository is not available right now; try again."
        ) from None
    return user, app


def _safe_path(rest: str) -> bool:
    """Only plain paths inside the repository: no `..`, `.` or empty segments."""
    parts = rest.split("/")
    return bool(rest) and "\0" not in rest and all(p not in ("", ".", "..") for p in parts)


def _cgi_env(platform: Platform, request: Request, user: dict, app: dict) -> dict[str, str]:
    settings = platform.settings
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_PROJECT_ROOT": str(platform.git_repos.root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": f"/{app['id']}.git/{request.path_params['rest']}",
        "REQUEST_METHOD": request.method,
        "QUERY_STRING": request.url.query,
        "CONTENT_TYPE": request.headers.get("content-type", ""),
        "REMOTE_USER": user["email"],
        "REMOTE_ADDR": request.client.host if request.client else "",
        # For the pre-receive hook: where the platform is, which app, who pushes, and which
        # process must stay alive for the build to finish (the hook gives up without it).
        "WAKA_HOME": str(settings.home),
        "WAKA_API_PORT": str(settings.api_port),
        "WAKA_ROUTER_PORT": str(settings.router_port),
        "WAKA_GIT_APP_ID": app["id"],
        "WAKA_GIT_USER_ID": user["id"],
        "WAKA_GIT_USER_EMAIL": user["email"],
        "WAKA_PLATFORM_PROCESS": processes.identity(),
    }
    if settings.database_url:
        env["WAKA_DATABASE_URL"] = settings.database_url
        env["WAKA_DATABASE_SCHEMA"] = settings.database_schema
    if settings.cipher_key and settings.cipher_key_file is None:  # else the hook reads the file
        env["WAKA_CIPHER_KEY"] = settings.cipher_key
    # No CONTENT_LENGTH: git then reads the body to EOF, which every end brings (the upload
    # closes its stdin; a crash of waka closes it too). Given a length, git http-backend 2.39
    # spins forever on a body cut short, waiting for the rest.
    for header, name in (
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ):
        if header in request.headers:
            env[name] = request.headers[header]
    return env


class SmartHttp:
    """`/{app}.git/{rest}` as an ASGI app (see the module's docstring for why)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        if not _safe_path(scope["path_params"]["rest"]):
            response = error_response(404, "not_found", "Couldn't find that file.")
            await response(scope, receive, send)
            return
        try:
            user, app = await run_in_threadpool(_authorize, self.platform, request)
        except ApiError as error:
            response = error_response(error.status, error.error_id, error.message)
            if error.status == 401:
                response.headers["WWW-Authenticate"] = 'Basic realm="waka"'
            if isinstance(error, RateLimited):
                response.headers["Retry-After"] = str(error.retry_after)
            await response(scope, receive, send)
            return
        process = await asyncio.create_subprocess_exec(
            shutil.which("git") or "git",
            "http-backend",
            env=_cgi_env(self.platform, request, user, app),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # Its own process group: a Ctrl-C meant for `waka up` does not cut a push short,
            # and a push cut off by its client can be ended whole.
            start_new_session=True,
        )
        upload = _Upload(process)
        uploading = asyncio.create_task(upload.run(receive))
        try:
            await _respond(process, send, upload)
        finally:
            uploading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await uploading
            await process.wait()


class _Upload:
    """The only reader of `receive()`: the request body into git's stdin, then the wait for
    the client to go away."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.complete = False  # the whole body was received
        self.cut_off = False  # the client went away before sending all of it
        self.gone = asyncio.Event()  # the client went away (at any time)

    async def run(self, receive: Receive) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        writing = True
        try:
            while not self.complete:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.cut_off = True
                    self.gone.set()
                    self.end_git()
                    return
                chunk = message.get("body", b"")
                self.complete = not message.get("more_body", False)
                if chunk and writing:
                    try:
                        stdin.write(chunk)
                        await stdin.drain()
                    # git stopped reading (it answers without the rest): drop the rest.
                    except (BrokenPipeError, ConnectionResetError, RuntimeError):
                        writing = False
        finally:
            stdin.close()  # end of the pack: git sees EOF, even when the client was cut off
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone.set()

    def end_git(self) -> None:
        """End git and all it started, at once: on a body cut short, `git http-backend`
        (2.39) never stops reading the missing rest of its Content-Length, spinning."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


async def _respond(process: asyncio.subprocess.Process, send: Send, upload: _Upload) -> None:
    """git's CGI response to the client; once the client is gone, git still runs to its end
    (a build under way finishes and the branch is updated) and its output is dropped."""
    stdout = process.stdout
    assert stdout is not None
    status, headers = await _read_cgi_headers(stdout)
    sending = True

    async def forward(message: dict) -> None:
        nonlocal sending
        if sending and not upload.gone.is_set():
            try:
                await send(message)
            except OSError:
                sending = False

    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await forward({"type": "http.response.start", "status": status, "headers": raw})
    while chunk := await stdout.read(CHUNK):
        await forward({"type": "http.response.body", "body": chunk, "more_body": True})
    await forward({"type": "http.response.body", "body": b"", "more_body": False})


async def _read_cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status, headers = 200, {}
    while line := (await stdout.readline()).decode("latin-1").rstrip("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split()[0])
        else:
            headers[name.strip()] = value.strip()
    return status, headers


def routes(platform: Platform) -> list[Route]:
    return [Route("/{app}.git/{rest:path}", SmartHttp(platform), methods=["GET", "POST"])]
