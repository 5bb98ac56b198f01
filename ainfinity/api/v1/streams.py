"""Server-Sent Event streams of job activity: `status`, `progress` and `metric` messages,
each with an id a client resumes after with `Last-Event-ID` (ainfinity.jobs.event_feed).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header
from sse_starlette import EventSourceResponse, ServerSentEvent

from ainfinity.api.dependencies import CurrentKey, ServiceDep
from ainfinity.api.shutdown import server_stopping
from ainfinity.api.v1.jobs import NOT_FOUND, JobName
from ainfinity.core.config import Settings
from ainfinity.jobs.event_feed import FeedMessage

router = APIRouter(tags=["streams"])

LastEventId = Annotated[
    int | None,
    Header(
        alias="Last-Event-ID",
        ge=0,
        le=2**62,
        description="The id of the last message received: the stream resumes just after it.",
    ),
]

_FORMAT = (
    "`text/event-stream`. Messages: `status` (`{job, event}`, every job event), `progress` "
    "(`{job, status, progress}`, when progress changes) and `metric` (`{job, metric}`, each "
    "training record); each has an `id`. Comment lines are keep-alive pings."
)
# OpenAPI 3.1: the `schema` of an event stream describes one message (its SSE fields).
SSE_MESSAGE: dict[str, Any] = {
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string", "enum": ["status", "progress", "metric"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"type": "object", "required": ["job"]},
        },
    },
}
EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": _FORMAT,
        "content": {"text/event-stream": {"schema": SSE_MESSAGE}},
    }
}


class EventStream(EventSourceResponse):
    """Declares the media type for the OpenAPI schema (the response sets it anyway)."""

    media_type = "text/event-stream"


@router.get(
    "/jobs/{name}/events/stream",
    response_class=EventStream,
    responses={**NOT_FOUND, **EVENT_STREAM},
)
def stream_job_events(
    name: JobName, service: ServiceDep, key: CurrentKey, last_event_id: LastEventId = None
) -> EventSourceResponse:
    """The job's messages since it was created (or after `Last-Event-ID`), then live; the
    stream ends once the job has ended and its webhook delivery, if any, is settled."""
    messages = service.job_event_stream(
        name, caller=key, last_event_id=last_event_id, stopping=server_stopping
    )
    return _respond(messages, service.settings)


@router.get("/events/stream", response_class=EventStream, responses=EVENT_STREAM)
def stream_events(
    service: ServiceDep, key: CurrentKey, last_event_id: LastEventId = None
) -> EventSourceResponse:
    """Messages of every job the key may see (a `user` key: its own), from now (or after
    `Last-Event-ID`), until the client leaves. Without `Last-Event-ID` the first message is
    a bare `id:`, so that a client resumes from the moment it connected."""
    messages = service.event_stream(
        caller=key, last_event_id=last_event_id, stopping=server_stopping
    )
    return _respond(messages, service.settings)


def _respond(messages: AsyncIterator[FeedMessage], settings: Settings) -> EventSourceResponse:
    # At shutdown the feed notices within a poll and ends the stream itself, so that the
    # response ends whole; sse-starlette cancels it only if that takes longer.
    grace = max(1.0, 4 * settings.stream_poll_seconds)
    return EventStream(
        _encode(messages),
        ping=settings.stream_ping_seconds,
        sep="\n",
        shutdown_grace_period=grace,
    )


async def _encode(messages: AsyncIterator[FeedMessage]) -> AsyncIterator[ServerSentEvent]:
    async for message in messages:
        data = None if message.data is None else json.dumps(message.data, separators=(",", ":"))
        yield ServerSentEvent(data=data, event=message.kind, id=str(message.id), sep="\n")
