"""The raw archive: each fetched page's response as a WARC `response` record, gzipped one
record at a time as Common Crawl's files are, so that a reader seeks to a record's byte
offset and reads that record alone (`read_record`).

A shard's archive is `$CLLM_HOME/warc/<crawl_id>/<shard stem>.warc.gz`, written beside the
shard by core/shards.py `ShardWriter` under a hidden temp name and renamed into place just
before it: a shard in place always has its archive, and a killed crawl leaves no half of one.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.timeutils import datetime_to_iso_date, iso_date_to_datetime
from warcio.warcwriter import WARCWriter
from zlib_ng import gzip_ng

# Scrapy hands over the body decoded: these headers described the bytes on the wire.
_WIRE_HEADERS = {"content-encoding", "content-length", "transfer-encoding"}
# The crawl process compresses every page it archives: zlib-ng at level 5 makes files within
# 1% of zlib's level 6 in 40% of its time (python3.11-doc's pages: 0.51 against 1.22 ms a
# page); any gzip reader reads them. (warcio's own is zlib at 9: twice 6's time, 1-2% smaller.)
GZIP_LEVEL = 5


@dataclass(frozen=True)
class Fetched:
    """A response as it is archived: its request's URL and date, status, headers, body."""
    url: str
    fetched_at: datetime
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    protocol: str = "HTTP/1.1"


class WarcFile:
    """A WARC file being written: `add` returns the byte offset of each record."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "wb")
        self.record = io.BytesIO()  # one record, gzipped on its own into the file
        self.writer = WARCWriter(self.record, gzip=False)

    def add(self, fetched: Fetched) -> int:
        offset = self.file.tell()
        headers = [(k, v) for k, v in fetched.headers if k.lower() not in _WIRE_HEADERS]
        headers.append(("Content-Length", str(len(fetched.body))))
        status = HTTPStatus(fetched.status)
        http = StatusAndHeaders(f"{status.value} {status.phrase}", headers,
                                protocol=fetched.protocol)
        record = self.writer.create_warc_record(
            fetched.url, "response", payload=io.BytesIO(fetched.body), http_headers=http,
            warc_headers_dict={"WARC-Date": datetime_to_iso_date(fetched.fetched_at)})
        self.record.seek(0)
        self.record.truncate()
        self.writer.write_record(record)
        self.file.write(gzip_ng.compress(self.record.getvalue(), GZIP_LEVEL, mtime=0))
        return offset

    def close(self) -> None:
        self.file.close()


def read_record(path: Path, offset: int) -> tuple[str, str, bytes]:
    """The record at `offset` of a WARC file: its URL, its HTTP Content-Type, its body."""
    with open(path, "rb") as f:
        f.seek(offset)
        record = next(iter(ArchiveIterator(f)))
        return (record.rec_headers.get_header("WARC-Target-URI"),
                record.http_headers.get_header("Content-Type") or "",
                record.content_stream().read())


def read_archive(path: Path) -> Iterator[tuple[int, Fetched]]:
    """Every response of a WARC file, in order, with its record's offset."""
    with open(path, "rb") as f:
        records = ArchiveIterator(f)
        for record in records:
            if record.rec_type != "response":
                continue
            body = record.content_stream().read()
            http = record.http_headers
            yield records.get_record_offset(), Fetched(
                record.rec_headers.get_header("WARC-Target-URI"),
                iso_date_to_datetime(record.rec_headers.get_header("WARC-Date"), tz_aware=True),
                int(http.get_statuscode()), list(http.headers), body, http.protocol)
