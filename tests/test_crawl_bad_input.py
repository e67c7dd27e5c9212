"""Bad input: a real HTTP server on 127.0.0.1 answering badly in every way we know, bad
seeds, and bad command lines. The crawl carries on and counts each; a bad command line is
one clear error line and exit code 2, with nothing written."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from crawlkit import CLLM, cllm_env, crawl, shard_rows
from hostile_site import PageHandler

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
VERSE = (ROOT / "data/text/milton/paradise_regained.txt").read_text(encoding="utf-8")
# Distinct passages, so that no page is a near duplicate of another.
PASSAGES = [VERSE[i * 6000:(i + 1) * 6000] for i in range(8)]
ACCENTS = "Café readers, naïve or learnèd, “quote” the poem."
HUGE = 50 * 2**20
PDF_LINES = [line.strip() for line in PASSAGES[5].splitlines() if line.strip()][:60]


def html_page(title: str, passage: str, extra: str = "") -> str:
    paragraphs = "".join("<p>" + block.replace("\n", "<br>") + "</p>"
                         for block in passage.split("\n\n"))
    return (f"<!DOCTYPE html><html lang='en'><head><title>{title}</title></head><body>"
            f"<nav><a href='/'>Home</a></nav><article><h1>{title}</h1><p>{extra}</p>"
            f"{paragraphs}</article></body></html>")


def make_pdf(lines: list[str]) -> bytes:
    """A minimal, valid one-page PDF with the lines as text."""
    text = "BT /F1 11 Tf 50 780 Td 14 TL " + " ".join(
        "(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") '"
        for line in lines) + " ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(text) + text.encode("latin-1") + b"\nendstream",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


PAGES = {
    "/ok.html": ("text/html; charset=utf-8", html_page("A good page", PASSAGES[0]).encode()),
    # Unclosed and mismatched tags, unquoted attributes, stray end tags, no </html>.
    "/malformed.html": ("text/html", (
        "<html><head><title>Malformed</title><body><div class=main><article><h1>Malformed page"
        "</h2><p>" + PASSAGES[1].replace("\n\n", "<p><b><i>").replace("\n", "<br>")
        + "</div></span></table>").encode()),
    "/cp1252.html": ("text/html", ("<html><head><meta charset='windows-1252'>"
                     + html_page("Windows page", PASSAGES[2], ACCENTS)[15:]).encode("cp1252")),
    "/latin1.html": ("text/html; charset=iso-8859-1",
                     html_page("Latin page", PASSAGES[3], ACCENTS.replace("“", '"').replace("”", '"'))
                     .encode("latin-1")),
    "/notes.txt": ("text/plain", PASSAGES[4].encode()),
    "/paper.pdf": ("application/pdf", make_pdf(PDF_LINES)),
    "/binary.html": ("text/html", bytes(range(256)) * 80),
    "/picture.png": ("image/png", b"\x89PNG\r\n\x1a\n" + bytes(100)),  # skipped by extension
    "/download": ("application/octet-stream", bytes(100)),  # skipped by content type
}
LINKS = list(PAGES) + ["/busy.html", "/missing.html", "/error.html", "/loop/0", "/cycle-a", "/huge.html",
                       "/huge-stream.html"]


class BadHandler(PageHandler):
    hits: dict[str, list[float]] = {}  # path: when each request came

    def redirect(self, location: str):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        path = self.path
        self.hits.setdefault(path, []).append(time.monotonic())
        if path == "/":
            links = "".join(f"<li><a href='{link}'>{link}</a></li>" for link in LINKS)
            self.send(200, "text/html", f"<html><body><ul>{links}</ul></body></html>".encode())
        elif path in PAGES:
            self.send(200, *PAGES[path])
        elif path == "/robots.txt":
            self.send(200, "text/plain", b"User-agent: *\nAllow: /\n")
        elif path == "/sitemap.xml":  # answers, but not with a sitemap
            self.send(200, "application/xml", b"\x00\x01 not a sitemap")
        elif path == "/busy.html":  # rate limited at first: come back in a second
            if len(self.hits[path]) == 1:
                self.send(429, "text/html", b"<h1>Too Many Requests</h1>", {"Retry-After": "1"})
            else:
                self.send(200, "text/html", html_page("Worth the wait", PASSAGES[6]).encode())
        elif path == "/error.html":
            self.send(500, "text/html", b"<h1>Internal Server Error</h1>")
        elif path.startswith("/loop/"):  # an endless chain of redirects
            self.redirect(f"/loop/{int(path.rsplit('/', 1)[1]) + 1}")
        elif path in ("/cycle-a", "/cycle-b"):  # a -> b -> a
            self.redirect("/cycle-b" if path == "/cycle-a" else "/cycle-a")
        elif path == "/huge.html":  # 50 MB, announced by Content-Length
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(HUGE))
            self.end_headers()
            self.stream(HUGE)
        elif path == "/huge-stream.html":  # 50 MB, no length: only the bytes tell
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self.stream(HUGE)
        else:
            self.send(404, "text/html", b"<h1>Not Found</h1>")

    def stream(self, size: int):
        chunk = b"<p>" + b"words " * 10000 + b"</p>\n"
        try:
            for _ in range(size // len(chunk) + 1):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the crawler hung up at its size limit, as it should


@pytest.fixture(scope="module")
def bad_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), BadHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bad_crawl(bad_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    seeds = tmp / "seeds.txt"
    seeds.write_text(f"# seeds\n{bad_server}/\nhtp:/not-a-seed\nhttp://\n"
                     f"http://127.0.0.1:{closed_port()}/\n")
    home = tmp / "home"
    report, result = crawl(home, "--seeds", seeds,
                           env={"CLLM_CRAWL_TIMEOUT": "10", "CLLM_CRAWL_RETRY_BACKOFF": "0.2"})
    return report, shard_rows(home), result


def test_the_crawl_carries_on_and_counts_every_bad_answer(bad_crawl):
    report, docs, _ = bad_crawl
    assert report["finish_reason"] == "finished"
    assert report["errors"] == {"http_404": 1, "http_500": 1, "redirect_loop": 2,
                                "too_large": 2, "unreachable": 1}
    assert report["dropped"]["binary"] == 1
    assert sum(report["dropped"].values()) == 2  # and the index, a list of links
    assert report["skipped"]["file_type"] == 1 and report["skipped"]["content_type"] == 1
    assert report["invalid_seeds"] == ["htp:/not-a-seed", "http://"]
    first, second, third = BadHandler.hits["/error.html"]  # retried twice, backing off
    assert second - first >= 0.2 and third - second >= 0.4
    first, second = BadHandler.hits["/busy.html"]  # 429: retried after its Retry-After
    assert second - first >= 1.0
    assert sorted(d["url"].rsplit("/", 1)[1] for d in docs) == [
        "busy.html", "cp1252.html", "latin1.html", "malformed.html", "notes.txt", "ok.html",
        "paper.pdf"]


def test_pages_in_other_encodings_and_formats_are_read_right(bad_crawl):
    _, docs, _ = bad_crawl
    by_name = {d["url"].rsplit("/", 1)[1]: d for d in docs}
    assert ACCENTS in by_name["cp1252.html"]["text"]
    assert "Café readers, naïve or learnèd" in by_name["latin1.html"]["text"]
    assert by_name["paper.pdf"]["content_type"] == "application/pdf"
    assert "As the magnetic hardest iron draws." in by_name["paper.pdf"]["text"]
    assert by_name["notes.txt"]["content_type"] == "text/plain"
    assert "Malformed page" in by_name["malformed.html"]["text"]
    for doc in docs:
        assert "\ufffd" not in doc["text"], doc["url"]


def cllm_crawl(home: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLLM), "crawl", *args], cwd=home.parent, env=cllm_env(home, env),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, env, message", [
    ([], None, "no seeds: give --seeds URL"),
    (["--seeds", "example.org"], None, "seed 'example.org' is neither an http(s) URL nor an existing file"),
    (["--seeds", "htp://bad"], None, "no valid seed URL in htp://bad"),
    (["--seeds", "http://127.0.0.1:9/", "--max-pages", "many"], None,
     "setting max_pages in --max-pages must be int, not 'many'"),
    (["--seeds", "http://127.0.0.1:9/", "--max-depth", "-1"], None,
     "crawl setting max_depth must be 0 or more, not -1"),
    (["--seeds", "http://127.0.0.1:9/", "--crawl-id", "../etc"], None, "crawl id '../etc' is not valid"),
    (["--seeds", "http://127.0.0.1:9/"], {"CLLM_CRAWL_DELAY": "slow"},
     "setting delay in environment CLLM_CRAWL_DELAY must be float, not 'slow'"),
    (["--seeds", "http://127.0.0.1:9/"], {"CLLM_CRAWL_BLOCKLIST": "/no/such/file"},
     "crawl blocklist file /no/such/file does not exist"),
    (["--seeds", "http://127.0.0.1:9/"], {"CLLM_CRAWL_LANGUAGES": "en,english"},
     "crawl setting languages: unknown code(s) english: give ISO 639-1 codes"),
    (["--seeds", "http://127.0.0.1:9/"], {"CLLM_CRAWL_SCRUB_PII": "email,names"},
     "crawl setting scrub_pii: unknown kind(s) names: give any of email, ip, phone"),
    (["--seeds", "http://127.0.0.1:9/"], {"CLLM_CRAWL_KEEP_DROPPED": "0.5"},
     "setting keep_dropped in environment CLLM_CRAWL_KEEP_DROPPED must be int, not '0.5'"),
])
def test_a_bad_command_line_is_one_clear_error(tmp_path, args, env, message):
    home = tmp_path / "home"
    result = cllm_crawl(home, *args, env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("cllm crawl: error: ") and message in result.stderr
    assert result.stdout == ""
    assert not (home / "shards").exists()


def test_a_second_crawl_on_the_same_home_is_refused_while_one_runs(tmp_path):
    home = tmp_path / "home"
    (home / "crawl").mkdir(parents=True)
    with open(home / "crawl" / "lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write(str(os.getpid()))
        lock.flush()
        result = cllm_crawl(home, "--seeds", "http://127.0.0.1:9/")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"another crawl (pid {os.getpid()}) is running in {home}" in result.stderr
