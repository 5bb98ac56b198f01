"""A multipart upload written straight to its file as it arrives: never whole in memory,
never a temporary copy elsewhere, cut off (and removed) the moment it passes its limit.

`receive_upload` reads the request body chunk by chunk with python-multipart's streaming
parser: the `file` part goes to `target` (through `<target>.part`, renamed once whole and
fsynced), the other parts are small form fields kept in memory (a few kB at most).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from ainfinity.exceptions import BodyTooLarge, InvalidRequest, StorageFull

_FIELD_LIMIT = 4096  # bytes of a plain form field (`purpose`)


@dataclass
class Upload:
    """What arrived: the file's name and size, and the form's other fields."""

    filename: str | None = None
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


def boundary_of(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequest("Upload the file as multipart/form-data.", param="file")
    return boundary


async def receive_upload(
    chunks: AsyncIterator[bytes], *, boundary: bytes, target: Path, max_bytes: int
) -> Upload:
    """Write the `file` part to `target`; raises (and leaves nothing behind) when the body is
    not a multipart form with one file, when the file passes `max_bytes`, or when the disk
    fills up (507)."""
    partial = target.with_name(target.name + ".part")
    upload = Upload()
    sink: Any = None
    headers: dict[bytes, bytes] = {}
    header_name = b""
    current: dict[str, Any] = {}
    problem: Exception | None = None
    # A body cut short (no closing boundary) is not an upload, whatever arrived of it.
    finished: list[bool] = []

    def on_part_begin() -> None:
        headers.clear()
        current.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        nonlocal header_name
        header_name += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        headers[header_name.lower()] = headers.get(header_name.lower(), b"") + data[start:end]

    def on_header_end() -> None:
        nonlocal header_name
        header_name = b""

    def on_headers_finished() -> None:
        nonlocal sink
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        current["name"] = name
        if name == "file" and b"filename" in options:
            if sink is not None:
                raise InvalidRequest("Send one file per upload.", param="file")
            upload.filename = options[b"filename"].decode("utf-8", "replace")
            sink = open(partial, "wb")  # noqa: SIM115 - closed below, whatever happens
            current["file"] = True
        else:
            current["value"] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if current.get("file"):
            upload.size += len(piece)
            if upload.size > max_bytes:
                raise BodyTooLarge(
                    f"The file is over the {max_bytes}-byte upload limit "
                    "(AINFINITY_MAX_UPLOAD_BYTES)."
                )
            sink.write(piece)
        else:
            current["value"] += piece
            if len(current["value"]) > _FIELD_LIMIT:
                raise InvalidRequest("A form field is too long.", param=current.get("name"))

    def on_part_end() -> None:
        if not current.get("file") and "name" in current:
            upload.fields[current["name"]] = current["value"].decode("utf-8", "replace")

    def on_end() -> None:
        finished.append(True)

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    try:
        async for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
        if sink is None:
            raise InvalidRequest("The upload has no `file` part.", param="file")
        if not finished:
            raise InvalidRequest(
                "The upload ended before its closing multipart boundary.", param="file"
            )
        sink.flush()
        os.fsync(sink.fileno())
        sink.close()
        os.replace(partial, target)
    except OSError as exc:
        problem = exc
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull("The server's disk is full; the upload was not kept.") from exc
        raise
    except Exception as exc:
        problem = exc
        if isinstance(exc, (InvalidRequest, BodyTooLarge)):
            raise
        raise InvalidRequest(
            f"The upload is not a valid multipart form: {exc}", param="file"
        ) from exc
    finally:
        if sink is not None and not sink.closed:
            with contextlib.suppress(OSError):
                sink.close()
        if problem is not None:
            partial.unlink(missing_ok=True)
    return upload
