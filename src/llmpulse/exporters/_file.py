"""`FileExporter`: JSON lines appended to a file, with optional size-based rotation.

Rotation works as `logging.handlers.RotatingFileHandler`'s: when the next line would take the file
past `max_bytes`, ``path.N-1`` becomes ``path.N`` (the oldest, ``path.<backup_count>``, is replaced),
…, ``path`` becomes ``path.1``, and a new ``path`` starts. A line is never split between files; a
line longer than `max_bytes` gets a file of its own.

Writes go straight to the file descriptor (no user-space buffer, opened in append mode), so a batch
is on the operating system's side when `export` returns and a forked child never re-writes data its
parent had buffered; after a fork the child opens its own descriptor. Rotation assumes one writing
process per file: several processes appending to one path rotate independently (as with logging's
handler); give each its own path to rotate safely.

Errors: an `OSError` while writing (disk full, permissions) is retryable; what a failed write had
appended of its chunk is truncated away, so the file never ends in a partial line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from llmpulse.sdk._exporter import EncodedBatch, RetryableError

__all__ = ["FileExporter"]

_encoder = msgspec.json.Encoder()


class FileExporter:
    """Appends each item as one JSON line to `path`; rotates by size when `max_bytes` is set.

    `backup_count` (≥ 1) rotated files are kept beside it. The file is opened on the first export.
    `export` blocks on the disk. Calls are serialised by the pipeline (no lock here, so a child forked
    mid-export cannot inherit a held one). Raises `ValueError` naming the argument for bad settings.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int | None = None,
        backup_count: int = 5,
        *,
        name: str | None = None,
    ) -> None:
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 1):
            raise ValueError(f"max_bytes must be a positive integer or None, got {max_bytes!r}")
        if not isinstance(backup_count, int) or backup_count < 1:
            raise ValueError(f"backup_count must be an integer >= 1, got {backup_count!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.name = name or f"file:{self.path.name}"
        self._file: BinaryIO | None = None
        self._size = 0
        self._pid = os.getpid()

    def _open(self) -> BinaryIO:
        if self._file is not None and self._pid == os.getpid():
            return self._file
        if self._file is not None:  # forked: this descriptor is shared with the parent
            self._file.close()
        self._pid = os.getpid()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file: BinaryIO = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open across batches
        self._file = file
        self._size = os.fstat(file.fileno()).st_size
        return file

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for index in range(self.backup_count - 1, 0, -1):
            source = self.path.with_name(f"{self.path.name}.{index}")
            if source.exists():
                os.replace(source, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.path.exists():
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._open()

    def _write(self, chunk: bytes) -> None:
        file = self._open()
        start = self._size
        view = memoryview(chunk)
        try:
            while view:
                written = file.write(view)
                if not written:
                    raise OSError("the file accepted no bytes")
                view = view[written:]
        except OSError:
            with contextlib.suppress(OSError):
                file.truncate(start)
            raise
        self._size = start + len(chunk)

    def export(self, items: Sequence[dict[str, Any]]) -> None:
        """Append the batch, rotating between lines as needed; blocks on the disk.

        Raises `RetryableError` when the file system fails.
        """
        self._append(_encoder.encode_lines(items))

    def export_encoded(self, batch: EncodedBatch) -> None:
        """`export` for a batch the pipeline encoded once (its JSON lines are written as they are)."""
        self._append(batch.lines)

    def _append(self, data: bytes) -> None:
        """Append JSON lines, rotating between lines as needed; `RetryableError` on an `OSError`."""
        try:
            self._open()
            limit = self.max_bytes
            if limit is None or self._size + len(data) <= limit:
                self._write(data)
                return
            lines = data.splitlines(keepends=True)
            chunk: list[bytes] = []
            size = self._size
            for line in lines:
                if size > 0 and size + len(line) > limit:
                    if chunk:
                        self._write(b"".join(chunk))
                        chunk = []
                    self._rotate()
                    size = self._size
                chunk.append(line)
                size += len(line)
            if chunk:
                self._write(b"".join(chunk))
        except OSError as exc:
            raise RetryableError(f"cannot write {self.path}: {exc}") from exc

    def force_flush(self, timeout: float) -> bool:
        """Nothing is buffered in the process (writes are unbuffered); True."""
        return True

    def shutdown(self, timeout: float) -> None:
        """Close the file; does not block beyond the close."""
        if self._file is not None:
            self._file.close()
            self._file = None
