"""Data a model can trust and trace, through the real `cllm crawl` and the real web
application: languages identified and filtered, personal data replaced before a document is
written, every drop recorded and its examples shown by the Crawl tab's API."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from crawlkit import crawl, shard_rows
from test_app import UI

from crawler.site import SiteServer

pytestmark = pytest.mark.slow
DATA = Path(__file__).resolve().parent.parent / "data"
CONTACT = ("Letters for the editor go to jane.doe@example.org or to +44 20 7946 0958; "
           "the archive's server is at 93.184.216.34 since version 3.11.7 of 2026-12-01.")


def prose(paragraphs: list[str]) -> str:
    return "".join(f"<p>{p}</p>\n" for p in paragraphs)


def page(title: str, body: str, lang: str | None) -> str:
    html = f'<html lang="{lang}">' if lang else "<html>"
    return (f"{html}<head><title>{title}</title></head><body><article><h1>{title}</h1>\n"
            f"{body}</article></body></html>")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Five pages: a short index, a French and a German one, an English one without `lang`
    and one with an address, a phone number and an IP address in its text."""
    root = tmp_path_factory.mktemp("trust-site")
    milton = (DATA / "text/milton/areopagitica.txt").read_text(encoding="utf-8")
    english = [" ".join(p.split()) for p in milton.split("\n\n") if len(p) > 400][10:18]
    labelled = [json.loads(line) for line in
                (DATA / "language/paragraphs.jsonl").read_text(encoding="utf-8").splitlines()]
    french = [r["text"] for r in labelled if r["language"] == "fr"][:8]
    german = [r["text"] for r in labelled if r["language"] == "de"][:8]
    pages = {"fr.html": page("Référence", prose(french), "fr"),
             "de.html": page("Referenz", prose(german), None),
             "en.html": page("Areopagitica", prose(english[:4]), None),
             "contact.html": page("Letters", prose(english[4:] + [CONTACT]), "en")}
    links = "".join(f'<li><a href="{name}">{name}</a></li>' for name in pages)
    pages["index.html"] = page("Pages", "<p>The pages of this small site, in three languages "
                               f"and with the letters of its readers.</p><ul>{links}</ul>", "en")
    for name, html in pages.items():
        (root / name).write_text(html, encoding="utf-8")
    server = SiteServer([root])
    yield server
    server.close()


@pytest.fixture(scope="module")
def crawled(site, tmp_path_factory):
    home = tmp_path_factory.mktemp("trust") / "home"
    report, _ = crawl(home, "--seeds", site.url, env={
        "CLLM_CRAWL_LANGUAGES": "en", "CLLM_CRAWL_KEEP_DROPPED": "1",
        "XDG_STATE_HOME": str(home.parent / "state")})
    return home, report


def test_a_crawl_runs_no_remote_control_server(crawled):
    """Scrapy 2.19 starts an HTTP server that runs any Python it is sent, and notes its port
    and token in the user's state folder: not in a process that reads hostile pages."""
    home, _ = crawled
    assert not (home.parent / "state" / "scrapy").exists()


def test_languages_are_identified_and_others_dropped(crawled):
    home, report = crawled
    docs = {d["url"].rsplit("/", 1)[1]: d for d in shard_rows(home)}
    assert set(docs) == {"en.html", "contact.html"}
    assert report["dropped"] == {"language": 2, "too_short": 1}
    assert report["languages"] == {"en": 2}
    assert (docs["en.html"]["language"], docs["en.html"]["declared_language"]) == ("en", "und")
    assert docs["contact.html"]["declared_language"] == "en"
    assert all(d["language_score"] > 0.9 for d in docs.values())


def test_personal_data_is_replaced_before_it_is_written(crawled):
    home, report = crawled
    (contact,) = [d for d in shard_rows(home) if d["url"].endswith("/contact.html")]
    assert ("Letters for the editor go to <EMAIL> or to <PHONE>; the archive's server is at "
            "<IP> since version 3.11.7 of 2026-12-01.") in contact["text"]
    assert "jane.doe" not in contact["text"] and "7946" not in contact["text"]
    assert report["pii"] == {"email": 1, "phone": 1, "ip": 1}


def test_drops_are_recorded_and_shown_with_examples(crawled):
    home, report = crawled
    folder = home / "crawl" / "dropped" / report["crawl_id"]
    drops = pq.read_table(sorted(folder.glob("part-*.parquet"))).to_pylist()
    by_reason = {}
    for drop in drops:
        by_reason.setdefault(drop["reason"], []).append(drop)
    languages = by_reason["language"]
    assert sorted(d["detail"].split()[0] for d in languages) == ["de", "fr"]
    # keep_dropped 1: the text of the first drop of each reason, the URL of every one
    assert [d["text"] is not None for d in languages] == [True, False]
    assert by_reason["too_short"][0]["text"].startswith("Pages")

    ui = UI(home)
    try:
        api = httpx.Client(base_url=ui.url, timeout=30)
        shown = api.get(f"/api/crawl/{report['crawl_id']}/dropped").json()
        reasons = {r["reason"]: r for r in shown["reasons"]}
        assert reasons["language"]["count"] == 2 and reasons["too_short"]["count"] == 1
        first, second = reasons["language"]["examples"]
        assert first["url"] == languages[0]["url"] and first["detail"] == languages[0]["detail"]
        assert first["excerpt"] == languages[0]["text"][:400] and second["excerpt"] is None
        (listed,) = api.get("/api/crawl").json()["crawls"]
        assert (listed["pii"], listed["languages"]) == (report["pii"], {"en": 2})
        for unknown in ("20990101T000000Z", "..", "%2E%2E%2Fshards"):
            assert api.get(f"/api/crawl/{unknown}/dropped").status_code == 404
    finally:
        ui.close()
