"""FileService: uploads, their validation, listing, content and deletion. No HTTP in here."""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from ainfinity.core.config import ApiKey, Settings
from ainfinity.exceptions import (
    FileInUse,
    FileNotFound,
    InvalidRequest,
    StorageFull,
)
from ainfinity.files.file_store import FileRecord, FileStore, new_file_id
from ainfinity.files.multipart_upload import boundary_of, receive_upload
from ainfinity.store.job_store import JobStore
from ainfinity.train.dataset import DatasetReport, validate_dataset

logger = logging.getLogger("ainfinity.files")

PURPOSE = "fine-tune"
_NOT_JSON = ("invalid JSON", "not valid UTF-8")


class FileService:
    def __init__(self, *, settings: Settings, jobs: JobStore) -> None:
        self.settings = settings
        self.jobs = jobs
        self.store = FileStore(settings.home, settings.data_dirs[0] / "uploads")

    async def upload(
        self, chunks: AsyncIterator[bytes], *, content_type: str, caller: ApiKey
    ) -> FileRecord:
        """Stream the upload to its place, check it is JSONL, validate its rows, record it."""
        boundary = boundary_of(content_type)
        await anyio.to_thread.run_sync(self.store.prepare)
        file_id = new_file_id()
        created_ns = time.time_ns()
        target = self.store.content_path(file_id)
        try:
            upload = await receive_upload(
                chunks,
                boundary=boundary,
                target=target,
                max_bytes=self.settings.max_upload_bytes,
            )
            purpose = upload.fields.get("purpose")
            if purpose != PURPOSE:
                raise InvalidRequest(
                    f"purpose must be 'fine-tune' (got {purpose!r}): this server keeps "
                    "training data only.",
                    param="purpose",
                )
            report = await anyio.to_thread.run_sync(validate_dataset, target)
            if report.rows and report.format is None and _all_unparsed(report):
                raise InvalidRequest(
                    "The file is not JSONL: no line of it is a JSON object.", param="file"
                )
            record = FileRecord(
                id=file_id,
                bytes=upload.size,
                created_at=created_ns // 1_000_000_000,
                created_ns=created_ns,
                filename=Path(upload.filename or "upload.jsonl").name[:255] or "upload.jsonl",
                status="processed" if report.ok else "error",
                status_details=_details(report),
                owner=caller.name,
                path=str(target),
                rows=report.rows,
                format=report.format,
            )
            await anyio.to_thread.run_sync(self.store.save, record)
        except OSError as exc:
            target.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull("The server's disk is full; the upload was not kept.") from exc
            raise
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        logger.info("file uploaded", extra={"file": file_id, "actor": caller.name})
        return record

    def get(self, file_id: str, *, caller: ApiKey) -> FileRecord:
        record = self.store.get(file_id)
        if caller.role != "admin" and record.owner != caller.name:
            raise FileNotFound(f"No file with id {file_id!r}.", param="file_id")
        return record

    def list(
        self,
        *,
        caller: ApiKey,
        after: str | None,
        limit: int,
        order: str,
        purpose: str | None,
    ) -> tuple[list[FileRecord], bool]:
        """A page of the caller's files (an admin's: everyone's), by creation time."""
        records = [
            r
            for r in self.store.all()
            if (caller.role == "admin" or r.owner == caller.name)
            and (purpose is None or purpose == PURPOSE)
        ]
        records.sort(key=lambda r: (r.created_at, r.created_ns, r.id), reverse=order == "desc")
        if after is not None:
            ids = [r.id for r in records]
            if after not in ids:
                raise InvalidRequest(f"after: no file {after!r} in this list.", param="after")
            records = records[ids.index(after) + 1 :]
        return records[:limit], len(records) > limit

    def delete(self, file_id: str, *, caller: ApiKey) -> None:
        record = self.get(file_id, caller=caller)
        for name in self.jobs.active_names():
            try:
                spec = self.jobs.get(name).spec
            except Exception:  # noqa: BLE001 - a job vanishing meanwhile uses nothing
                continue
            if record.path in (spec.dataset, spec.validation_dataset):
                raise FileInUse(
                    f"Job {name!r} (not ended) trains on {file_id}; cancel it or wait for it.",
                    param="file_id",
                )
        self.store.delete(record)

    def dataset(self, file_id: str, *, caller: ApiKey, param: str) -> FileRecord:
        """A processed file the caller may train on (400 otherwise, naming `param`)."""
        try:
            record = self.get(file_id, caller=caller)
        except FileNotFound:
            raise InvalidRequest(f"{param}: no file {file_id!r}.", param=param) from None
        if record.status != "processed":
            raise InvalidRequest(
                f"{param}: file {file_id} is not valid training data: {record.status_details}",
                param=param,
            )
        return record


def _all_unparsed(report: DatasetReport) -> bool:
    return bool(report.errors) and all(e.reason.startswith(_NOT_JSON) for e in report.errors)


def _details(report: DatasetReport) -> str | None:
    if report.ok:
        return None
    problems = "; ".join(
        f"line {e.line}: {e.reason}" if e.line else e.reason for e in report.errors
    )
    return f"Invalid training file: {problems}"
