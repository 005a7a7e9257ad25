"""multipart/related, streamed: parse a WADO-RS answer part by part and write each DICOM part content-addressed.

Why apart from the HTTP client: the parser is pure bytes-in, events-out (testable without a PACS, in bounded memory
against a malformed or endless answer), and the content-addressed writer is shared with the DIMSE C-GET handler.
Files are renamed to `<sha256>.dcm` only when complete, so a retried retrieval rewrites the same names and a failed
one leaves no truncated `.dcm`.
"""

from __future__ import annotations

import email.message
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from tasks.ingest.pacs.errors import PacsError

_MAX_HEADER_BYTES = 64 * 1024  # a part's headers or the preamble; bounds memory against a malformed answer


def multipart_boundary(content_type: str, *, path: str = "") -> str:
    """The boundary of a `multipart/related` Content-Type, whatever other parameters (type, transfer-syntax) it has
    and whether quoted or not."""
    header = email.message.Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/related" or not isinstance(boundary, str) or not boundary:
        raise PacsError("answer is not multipart/related with a boundary", path=path)
    return boundary


def iter_multipart(chunks: Iterable[bytes], boundary: str) -> Iterator[dict[str, str] | bytes | None]:
    """Parse a multipart body as it streams in (RFC 2046), in bounded memory: for each part, yield its headers (a
    dict, lower-case names), then its body as one or more `bytes`, then `None` at its end. Raises PacsError if the
    stream ends before the closing delimiter."""
    stream = _Stream(chunks)
    delim = b"\r\n--" + boundary.encode("ascii")
    stream.consume(stream.find(delim, _MAX_HEADER_BYTES) + len(delim))  # the preamble
    while True:
        stream.need(2)
        if stream.buf[:2] == b"--":  # the close delimiter; an epilogue after it is ignored
            return
        end = stream.find(b"\r\n\r\n", _MAX_HEADER_BYTES)  # starts at the delimiter line's own CRLF
        yield _parse_headers(bytes(stream.buf[:end]))
        stream.consume(end + 4)
        yield from _part_body(stream, delim)
        yield None


def _part_body(stream: _Stream, delim: bytes) -> Iterator[bytes]:
    """Yield data up to the next delimiter, holding back only a tail that could be the start of it."""
    while (idx := stream.buf.find(delim)) < 0:
        safe = len(stream.buf) - len(delim) + 1
        if safe > 0:
            yield bytes(stream.buf[:safe])
            stream.consume(safe)
        if not stream.more():
            raise PacsError("multipart answer ended inside a part (truncated transfer)")
    if idx:
        yield bytes(stream.buf[:idx])
    stream.consume(idx + len(delim))


def _parse_headers(block: bytes) -> dict[str, str]:
    lines = block.decode("latin-1").split("\r\n")
    pairs = (line.partition(":") for line in lines[1:])  # lines[0]: padding after the delimiter
    return {name.strip().lower(): value.strip() for name, sep, value in pairs if sep}


class _Stream:
    """A byte buffer refilled on demand from an iterator of chunks. It starts with CRLF so that a delimiter at the
    very start of the body looks like every other one."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self.buf = bytearray(b"\r\n")

    def more(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self.buf += chunk
                return True
        return False

    def need(self, n: int) -> None:
        while len(self.buf) < n:
            if not self.more():
                raise PacsError("multipart answer ended early (truncated transfer)")

    def find(self, needle: bytes, limit: int) -> int:
        start = 0
        while (idx := self.buf.find(needle, start)) < 0:
            if len(self.buf) > limit:
                raise PacsError("malformed multipart answer (delimiter or header end not found)")
            start = max(0, len(self.buf) - len(needle) + 1)
            self.need(len(self.buf) + 1)
        return idx

    def consume(self, n: int) -> None:
        del self.buf[:n]


def _write_parts(events: Iterable[dict[str, str] | bytes | None], dest_dir: Path, *, path: str) -> list[Path]:
    """Write each application/dicom part to a content-addressed file; a part of any other type is an error."""
    written: dict[Path, None] = {}  # ordered, and a part sent twice is one file
    current: _HashedFile | None = None
    try:
        for event in events:
            if isinstance(event, dict):
                part_type = event.get("content-type", "application/dicom").split(";")[0].strip().lower()
                if part_type != "application/dicom":
                    raise PacsError(f"WADO-RS part of type {part_type!r}, expected application/dicom", path=path)
                current = _HashedFile(dest_dir)
            elif event is None:
                written[current.commit()] = None
                current = None
            else:
                current.write(event)
    finally:
        if current is not None:
            current.discard()
    return list(written)


class _HashedFile:
    """A temp file in the destination folder, hashed while written, renamed to `<sha256>.dcm` once complete.
    Same folder, so the rename is atomic: a crash leaves a hidden `.part` file, never a truncated `.dcm`.
    mkstemp's 0600 mode suits files that hold PHI."""

    def __init__(self, folder: Path) -> None:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")
        self._tmp, self._file, self._sha = Path(name), os.fdopen(fd, "wb"), hashlib.sha256()
        self._head = b""

    def write(self, data: bytes) -> None:
        self._sha.update(data)
        self._file.write(data)
        if len(self._head) < 132:
            self._head += data[: 132 - len(self._head)]

    def commit(self) -> Path:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self._head[128:132] != b"DICM":  # PS3.10: 128-byte preamble, then the magic
            self.discard()
            raise PacsError("received data that is not a DICOM Part 10 file")
        final = self._tmp.with_name(f"{self._sha.hexdigest()}.dcm")
        os.replace(self._tmp, final)
        return final

    def discard(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


def write_content_addressed(data: bytes, dest_dir: Path) -> Path:
    """One DICOM Part 10 file, atomically, as `<sha256>.dcm` (used by the C-GET storage handler)."""
    part = _HashedFile(dest_dir)
    try:
        part.write(data)
    except BaseException:
        part.discard()
        raise
    return part.commit()
