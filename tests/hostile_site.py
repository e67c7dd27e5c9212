"""A hostile website on 127.0.0.1, for the crawler tests: every way we know a page can try to
freeze, fool or misdirect a crawl, beside a few ordinary pages that must still come through.
And a listener on 127.0.0.2, an address the crawl is not allowed, recording any connection.

    site = HostileSite(forbidden)       # forbidden: a Listener on 127.0.0.2
    site.url, site.hits                 # http://127.0.0.1:PORT/, {path: requests}
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSE = (ROOT / "data/text/milton/paradise_lost.txt").read_text(encoding="utf-8")
PROSE = (ROOT / "data/text/milton/areopagitica.txt").read_text(encoding="utf-8")
# Distinct passages, so that no ordinary page is a near duplicate of another.
PASSAGES = [VERSE[20_000 + i * 6000:26_000 + i * 6000] for i in range(10)]
GOOD = [f"/good/{i}.html" for i in range(1, 5)]  # linked from the front page
HIDDEN = "/good/hidden.html"  # linked only from the page too slow to extract
CALENDAR_START = (2026, 12)
TRAP_LINKS = 20_000
LIST_QUERIES = 1200  # /trap/list?page=N, over two pages (each under the link cap)
SITEMAP_SETS = 60  # urlsets named by the sitemap index: more than the per-host budget


def html_page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><title>{title}</title></head><body>"
            f"<article><h1>{title}</h1>{body}</article></body></html>")


def paragraphs(text: str) -> str:
    return "".join("<p>" + block.replace("\n", "<br>") + "</p>" for block in text.split("\n\n"))


def links(paths) -> str:
    return "<nav>" + "\n".join(f"<a href='{p}'>{i}</a>" for i, p in enumerate(paths)) + "</nav>"


def calendar(year: int, month: int) -> str:
    following = (year + month // 12, month % 12 + 1)
    return html_page(f"{year}-{month:02d}", f"<p>Nothing on in {year}-{month:02d}.</p>"
                     f"<a href='/cal/{following[0]}/{following[1]}'>next month</a>")


def sitemap_index(locations) -> bytes:
    entries = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locations)
    return (f"<?xml version='1.0' encoding='UTF-8'?><sitemapindex "
            f"xmlns='http://www.sitemaps.org/schemas/sitemap/0.9'>{entries}</sitemapindex>").encode()


def urlset(locations) -> bytes:
    entries = "".join(f"<url><loc>{loc}</loc></url>" for loc in locations)
    return (f"<?xml version='1.0' encoding='UTF-8'?><urlset "
            f"xmlns='http://www.sitemaps.org/schemas/sitemap/0.9'>{entries}</urlset>").encode()


def pages(forbidden: str) -> dict[str, tuple[str, bytes]]:
    """Path: (Content-Type, body) of every page with a fixed answer."""
    prose = paragraphs(PROSE[:12_000])
    front = [*GOOD, "/bait/equals.html", "/bait/punctuation.txt", "/bait/one-line.txt",
             "/bait/same-lines.txt", "/deep.html", "/links.html", "/list-a.html",
             "/list-b.html", "/cal/%d/%d" % CALENDAR_START, "/drip.html", "/bomb.html",
             "/utf16.html", "/utf32.txt", "/broken.pdf", "/slow.html", "/redirect",
             f"{forbidden}/linked", "http://127.2:%d/decimal" % int(forbidden.rsplit(":", 1)[1]),
             "http://[::ffff:127.0.0.2]:%s/mapped" % forbidden.rsplit(":", 1)[1],
             "/good/1.html;jsessionid=0123456789ABCDEF", "/a/b/a/b/a/b/",
             "/search?" + "&".join(f"f{i}=x" for i in range(30)), "/long/" + "x" * 3000]
    one_line = " ".join(PROSE.split())  # 1 MB, not one newline
    nested = ("<div>" * 250 + "<p>a word or two</p>" + "</div>" * 250) * 3000
    return {
        "/": ("text/html", html_page("A hostile site", prose[:2000] + links(front)).encode()),
        **{path: ("text/html; charset=utf-8", html_page(f"Good page {i}", paragraphs(PASSAGES[i]))
                  .encode()) for i, path in enumerate([*GOOD, HIDDEN])},
        # Bait for the text steps: long runs without a space, one huge line, repetition.
        "/bait/equals.html": ("text/html", html_page("Equals", prose + "<p>" + "=" * 300_000
                                                     + "</p>").encode()),
        "/bait/punctuation.txt": ("text/plain", (PROSE[:5000] + "\n" + "!?.,;:-()[]" * 30_000
                                                 + "\n" + "-" * 200_000).encode()),
        "/bait/one-line.txt": ("text/plain", (one_line * (2**20 // len(one_line) + 1)).encode()),
        "/bait/same-lines.txt": ("text/plain", (PROSE[:3000] + "\n"
                                                + "The same line again.\n" * 20_000).encode()),
        "/deep.html": ("text/html", ("<html><body>" + "<div>" * 30_000 + prose
                                     + "</div>" * 30_000 + "</body></html>").encode()),
        "/links.html": ("text/html", html_page("Links", links(
            f"/trap/{i}.html" for i in range(TRAP_LINKS))).encode()),
        "/list-a.html": ("text/html", html_page("List", links(
            f"/trap/list?page={i}" for i in range(LIST_QUERIES // 2))).encode()),
        "/list-b.html": ("text/html", html_page("List", links(
            f"/trap/list?page={i}" for i in range(LIST_QUERIES // 2, LIST_QUERIES))).encode()),
        "/utf16.html": ("text/html", html_page("UTF-16", paragraphs(PASSAGES[5])).encode("utf-16")),
        "/utf32.txt": ("text/plain; charset=utf-32", PASSAGES[6].encode("utf-32")),
        "/broken.pdf": ("application/pdf", b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R"
                        + bytes(range(256)) * 4),
        # Minutes of extraction in 8 MB: the worker is replaced at extract_timeout, and the
        # page's links are still followed.
        "/slow.html": ("text/html", ("<html><body>" + nested + f"<a href='{HIDDEN}'>more</a>"
                                     + "</body></html>").encode()),
        "/robots.txt": ("text/plain", b"User-agent: *\nDisallow: /trap/\n"),
        # An index naming more sitemaps than a host may have, one of them an index itself.
        "/sitemap.xml": ("application/xml", sitemap_index(
            ["/sitemaps/index.xml", f"{forbidden}/sitemap.xml"]
            + [f"/sitemaps/set-{i}.xml" for i in range(SITEMAP_SETS)])),
        "/sitemaps/index.xml": ("application/xml", sitemap_index(["/sitemaps/deeper.xml"])),
        **{f"/sitemaps/set-{i}.xml": ("application/xml", urlset(GOOD)) for i in range(SITEMAP_SETS)},
    }


class PageHandler(BaseHTTPRequestHandler):
    """A quiet handler with `send`, for the test servers of the crawler."""

    def log_message(self, *args):
        pass

    def send(self, status: int, content_type: str, body: bytes, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class Handler(PageHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        site: HostileSite = self.server.site
        path = self.path
        site.hits[path] += 1
        if path in site.pages:
            self.send(200, *site.pages[path])
        elif path.startswith("/cal/"):
            year, month = map(int, path.split("/")[2:4])
            self.send(200, "text/html", calendar(year, month).encode())
        elif path == "/redirect":
            self.send(302, "text/html", b"", {"Location": f"{site.forbidden}/redirected"})
        elif path == "/bomb.html":  # 20 MB of zeros in 20 KB
            self.send(200, "text/html", site.bomb, {"Content-Encoding": "gzip"})
        elif path == "/drip.html":
            self.drip()
        else:
            self.send(404, "text/html", b"<h1>Not Found</h1>")

    def drip(self):
        """A page that never ends: one byte every 2 seconds."""
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(100):
                self.wfile.write(b"<")
                self.wfile.flush()
                time.sleep(2)
        except OSError:
            pass  # the crawler gave up, as it should
        self.close_connection = True


class HostileSite:
    def __init__(self, forbidden: Listener):
        self.forbidden = forbidden.url
        self.pages = pages(self.forbidden)
        self.bomb = gzip.compress(bytes(20 * 2**20), compresslevel=9)
        self.hits: Counter[str] = Counter()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.site = self
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Listener:
    """A TCP listener on 127.0.0.2 that only records who connected."""

    def __init__(self, host: str = "127.0.0.2"):
        self.socket = socket.create_server((host, 0))
        self.socket.settimeout(0.2)
        self.connections: list[tuple[str, int]] = []
        self.open = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def _accept(self) -> None:
        while self.open:
            try:
                connection, peer = self.socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(peer)
            connection.close()

    def close(self) -> None:
        self.open = False
        self.thread.join()
        self.socket.close()
