"""Where uploaded files live: the content in `<first data dir>/uploads/<id>.jsonl` (inside
AINFINITY_DATA_DIRS, so a job reads it like any dataset), the record in
`$AINFINITY_HOME/files/<id>.json`. Both are written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from ainfinity.exceptions import FileNotFound
from ainfinity.schema.base import PublicModel
from ainfinity.schema.openai import OpenAIFile
from ainfinity.store.job_files import write_atomic

FILE_ID_PREFIX = "file-"


class FileRecord(PublicModel):
    """An uploaded file: what OpenAI's file object shows, who uploaded it, and where it is."""

    id: str
    bytes: int
    created_at: int
    # Orders files uploaded within the same second (`created_at` is whole seconds).
    created_ns: int = 0
    filename: str
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None
    owner: str | None = None
    path: str
    rows: int | None = None
    format: str | None = None

    def public(self) -> OpenAIFile:
        return OpenAIFile(
            id=self.id,
            bytes=self.bytes,
            created_at=self.created_at,
            filename=self.filename,
            status=self.status,
            status_details=self.status_details,
        )


def new_file_id() -> str:
    return FILE_ID_PREFIX + secrets.token_hex(12)


def valid_file_id(file_id: str) -> bool:
    rest = file_id.removeprefix(FILE_ID_PREFIX)
    return file_id.startswith(FILE_ID_PREFIX) and len(rest) == 24 and rest.isalnum()


class FileStore:
    def __init__(self, home: Path, uploads: Path) -> None:
        self.records = home / "files"
        self.uploads = uploads

    def content_path(self, file_id: str) -> Path:
        return self.uploads / f"{file_id}.jsonl"

    def prepare(self) -> None:
        self.records.mkdir(parents=True, exist_ok=True)
        self.uploads.mkdir(parents=True, exist_ok=True)

    def save(self, record: FileRecord) -> None:
        write_atomic(self.records / f"{record.id}.json", record.model_dump_json().encode())

    def get(self, file_id: str) -> FileRecord:
        if not valid_file_id(file_id):
            raise FileNotFound(f"No file with id {file_id!r}.", param="file_id")
        try:
            return FileRecord.model_validate_json((self.records / f"{file_id}.json").read_bytes())
        except (FileNotFoundError, ValidationError):
            raise FileNotFound(f"No file with id {file_id!r}.", param="file_id") from None

    def all(self) -> list[FileRecord]:
        found = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.records):
                name = entry.name.removesuffix(".json")
                if entry.name.endswith(".json") and valid_file_id(name):
                    with contextlib.suppress(FileNotFound):
                        found.append(self.get(name))
        return found

    def delete(self, record: FileRecord) -> None:
        (self.records / f"{record.id}.json").unlink(missing_ok=True)
        Path(record.path).unlink(missing_ok=True)
