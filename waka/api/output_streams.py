"""Build and release-phase output at their `output_stream_url`: streamed while the work runs
and replayed afterwards. The random id in the URL is the permission, as on Heroku (the CLI
sends no credentials there)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import iterate_in_threadpool
from starlette.responses import Response, StreamingResponse

from waka.adapters.build_logs import BuildLogs
from waka.api.errors import error_response
from waka.bootstrap import Platform
from waka.projections.store import ReadStore, Row


def follow_output(
    platform: Platform,
    logs: BuildLogs,
    output_id: str,
    find: Callable[[ReadStore, str], Row | None],
    missing: str,
) -> Response:
    """Stream `logs`' file `output_id` until the row `find` gives is no longer pending."""
    try:
        logs.path(output_id)
    except ValueError:
        return error_response(404, "not_found", missing)
    if find(platform.store, output_id) is None:
        return error_response(404, "not_found", missing)

    def done() -> bool:
        platform.projector.catch_up()
        row = find(platform.store, output_id)
        return row is None or row["status"] != "pending"

    chunks = logs.follow(output_id, done)
    return StreamingResponse(iterate_in_threadpool(chunks), media_type="text/plain")
