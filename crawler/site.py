"""Serve a static website on 127.0.0.1 (or `host`) from one or more directories, the first
that has a file winning; used for the embedded demo site (data/site/) in the demo, tests and
benchmark.

    server = SiteServer([Path("data/site")])          # started, on a free port
    server.url                                          # http://127.0.0.1:PORT/
    server.publish(Path("data/site-update"))            # new pages "appear" on the site
    server.bytes_sent                                   # all it wrote, headers included
    server.clients                                      # GETs answered, by client address
    server.close()

    python -m crawler.site [--update] [--host 127.0.0.1] [--port 8000]   # serve it by hand
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import socket
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
SITE, SITE_UPDATE = DATA / "site", DATA / "site-update"


class _Counted:
    """The response stream, counting what goes through it."""

    def __init__(self, stream, server):
        self.stream, self.server = stream, server

    def write(self, data) -> int:
        with self.server.lock:
            self.server.bytes_sent += len(data)
        return self.stream.write(data)

    def __getattr__(self, name):
        return getattr(self.stream, name)


class _OverlayHandler(SimpleHTTPRequestHandler):
    """Files with a Last-Modified and an ETag (size and modification time, as nginx), and
    304 Not Modified to a request that names the current ones (If-None-Match first; the
    standard library answers If-Modified-Since); every GET's start and end on record.
    Connections are kept alive, as real servers keep them (the standard library's HTTP/1.0
    would cost a client a TCP connection a page)."""

    protocol_version = "HTTP/1.1"

    def __init__(self, *args, roots: list[Path], requested: list[str],
                 timings: list[tuple[str, float, float]], clients: collections.Counter,
                 **kwargs):
        self.roots, self.requested, self.timings = roots, requested, timings
        self.clients = clients
        self.etag: str | None = None
        super().__init__(*args, directory=str(roots[-1]), **kwargs)

    def setup(self) -> None:
        super().setup()
        self.wfile = _Counted(self.wfile, self.server)
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self):
        start = time.monotonic()
        super().do_GET()
        self.timings.append((self.path, start, time.monotonic()))
        with self.server.lock:
            self.clients[self.client_address[0]] += 1

    def send_head(self):
        self.requested.append(self.path)
        path = self.translate_path(self.path)
        self.etag = None
        if os.path.isfile(path):
            stat = os.stat(path)
            self.etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
            if self.etag in self.headers.get("If-None-Match", "").split(", "):
                self.send_response(304)
                self.end_headers()
                return None
        return super().send_head()

    def end_headers(self) -> None:
        if self.etag:
            self.send_header("ETag", self.etag)
        super().end_headers()

    def translate_path(self, path: str) -> str:
        for root in self.roots:
            self.directory = str(root)
            candidate = Path(super().translate_path(path))
            if candidate.exists():
                return str(candidate)
        return str(candidate)

    def log_message(self, format, *args) -> None:  # quiet: the crawler reports what it got
        pass


class SiteServer:
    def __init__(self, roots: list[Path], port: int = 0, host: str = "127.0.0.1"):
        self.roots = [Path(r).resolve() for r in roots]
        self.requested: list[str] = []  # every path asked for, in order
        # (path, start, end) of every GET answered, on the monotonic clock: what the site saw
        self.timings: list[tuple[str, float, float]] = []
        self.clients: collections.Counter[str] = collections.Counter()  # GETs by address
        handler = functools.partial(_OverlayHandler, roots=self.roots, requested=self.requested,
                                    timings=self.timings, clients=self.clients)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.bytes_sent, self.httpd.lock = 0, threading.Lock()
        self.httpd.connections = set()  # open ones: closed with the server
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def bytes_sent(self) -> int:
        return self.httpd.bytes_sent

    def publish(self, root: Path) -> None:
        """Serve `root`'s files over the current ones (the handler reads the list per request)."""
        self.roots.insert(0, Path(root).resolve())

    def close(self) -> None:
        """Stop answering, on the connections kept alive too."""
        self.httpd.shutdown()
        with self.httpd.lock:
            for connection in self.httpd.connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:  # closed by the client meanwhile
                    pass
        self.httpd.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description="serve the embedded demo site")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--update", action="store_true", help="with data/site-update/ published")
    args = parser.parse_args()
    server = SiteServer([SITE_UPDATE, SITE] if args.update else [SITE], args.port, args.host)
    print(f"serving {', '.join(map(str, server.roots))} at {server.url} (Ctrl-C stops)")
    try:
        server.thread.join()
    except KeyboardInterrupt:
        server.close()


if __name__ == "__main__":
    main()
