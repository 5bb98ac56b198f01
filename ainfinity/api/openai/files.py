"""`/v1/files`: training data uploaded the way OpenAI's SDK uploads it."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from ainfinity.api.dependencies import CurrentKey, FilesDep
from ainfinity.jobs.logs import read_chunks
from ainfinity.schema.openai import DeletedFile, OpenAIError, OpenAIFile, OpenAIFileList

router = APIRouter(prefix="/files", tags=["openai"])

FileId = Annotated[str, Path(min_length=1, max_length=64, description="`file-...`")]
# OpenAI's file purposes: any of them is a valid filter (this server only keeps
# fine-tune files, so the others list nothing); anything else is a 400.
FilePurpose = Literal[
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "evals",
    "fine-tune",
    "fine-tune-results",
    "user_data",
    "vision",
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": OpenAIError, "description": "No such file (or not yours)"}
}
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": ["fine-tune"]},
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    openapi_extra=_UPLOAD_BODY,
    responses={
        413: {"model": OpenAIError, "description": "Over AINFINITY_MAX_UPLOAD_BYTES"},
        507: {"model": OpenAIError, "description": "The disk is full"},
    },
)
async def create_file(request: Request, files: FilesDep, key: CurrentKey) -> OpenAIFile:
    """Upload a JSONL training file (`purpose=fine-tune`), streamed to disk as it arrives.
    Its rows are checked at once: `status` is `processed`, or `error` with the first bad
    lines in `status_details`."""
    record = await files.upload(
        request.stream(), content_type=request.headers.get("content-type", ""), caller=key
    )
    return record.public()


@router.get("")
def list_files(
    files: FilesDep,
    key: CurrentKey,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    purpose: Annotated[FilePurpose | None, Query()] = None,
) -> OpenAIFileList:
    records, more = files.list(caller=key, after=after, limit=limit, order=order, purpose=purpose)
    data = [record.public() for record in records]
    return OpenAIFileList(
        data=data,
        has_more=more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/{file_id}", responses=NOT_FOUND)
def retrieve_file(file_id: FileId, files: FilesDep, key: CurrentKey) -> OpenAIFile:
    return files.get(file_id, caller=key).public()


@router.delete(
    "/{file_id}",
    responses={**NOT_FOUND, 409: {"model": OpenAIError, "description": "A job uses it"}},
)
def delete_file(file_id: FileId, files: FilesDep, key: CurrentKey) -> DeletedFile:
    files.delete(file_id, caller=key)
    return DeletedFile(id=file_id, deleted=True)


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses={**NOT_FOUND, 200: {"content": {"application/octet-stream": {}}}},
)
def file_content(file_id: FileId, files: FilesDep, key: CurrentKey) -> StreamingResponse:
    """The file's bytes as uploaded, streamed from disk."""
    record = files.get(file_id, caller=key)
    chunks = read_chunks(FilePath(record.path), start=0, raw=True)
    return StreamingResponse(chunks, media_type="application/octet-stream")
