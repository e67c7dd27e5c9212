"""A real documentation site: Debian's python3.11-doc (Sphinx HTML, installed by .ci/run)
served on 127.0.0.1 and crawled whole by `cllm crawl`."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawlkit import SiteServer, crawl, shard_rows

PYDOC = Path("/usr/share/doc/python3.11/html")
# What Sphinx puts around every page: sidebar headings (lines of their own), navigation
# bars, the search box and the footer.
SIDEBAR_LINES = {"Table of Contents", "Previous topic", "Next topic", "This Page", "Navigation",
                 "Quick search"}
CHROME = ["Report a Bug", "Show Source", "Documentation »", "Last updated on October", "Found a bug?",
          "Created using Sphinx", "© Copyright 2001"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (PYDOC / "index.html").is_file(),
                       reason="needs Debian's python3.11-doc: apt-get install -y python3.11-doc"),
]


def test_the_python_docs_give_400_clean_documents(tmp_path):
    server = SiteServer([PYDOC])
    try:
        report, _ = crawl(tmp_path / "home", "--seeds", server.url + "index.html")
    finally:
        server.close()
    docs = shard_rows(tmp_path / "home")
    assert report["finish_reason"] == "finished" and report["errors"].keys() <= {"http_404"}
    assert len(docs) == report["docs_written"] >= 400
    for doc in docs:
        lines = {line.strip() for line in doc["text"].splitlines()}
        assert not lines & SIDEBAR_LINES, doc["url"]
        for phrase in CHROME:
            assert phrase not in doc["text"], (phrase, doc["url"])
    functions = next(d for d in docs if d["url"].endswith("/library/functions.html"))
    assert functions["title"].startswith("Built-in Functions")
    assert "Return the absolute value of a number." in functions["text"]
