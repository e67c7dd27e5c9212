"""Generate the embedded demo website `data/site/` (and its later update `data/site-update/`)
from the public-domain Milton texts in `data/text/milton/`.

    .venv/bin/python data/make_site.py

The output is committed; rerun this only to change the site. It is a small real website:
prose split into linked pages with a header, a sidebar, a cookie notice and a footer around
it, a robots.txt that disallows /private/, a sitemap.xml, and on purpose a few pages a good
crawler must not keep: an exact duplicate (a print view), a near duplicate (an edition with
a few words changed) and junk (a tag cloud, a placeholder, a number table).

`data/site-update/` holds what "appears" on the site later: a new work (Paradise Regained)
plus the home page and sitemap that link it. Serving it over `data/site/` (see
`crawler/site.py`) publishes it; a second crawl then finds only the new pages.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEXTS = HERE / "text" / "milton"
SITE = HERE / "site"
UPDATE = HERE / "site-update"
PAGE_CHARS = 9000  # about one screenful of verse per page

# slug, title, source file, linked from the navigation (False: reachable only via sitemap)
WORKS = [
    ("paradise-lost", "Paradise Lost", "paradise_lost.txt", True),
    ("areopagitica", "Areopagitica", "areopagitica.txt", True),
    ("shorter-poems", "L'Allegro, Il Penseroso, Comus and Lycidas",
     "lallegro_il_penseroso_comus_and_lycidas.txt", False),
]
NEW_WORKS = [("paradise-regained", "Paradise Regained", "paradise_regained.txt", True)]
PROSE = {"areopagitica"}  # Gutenberg wraps prose at 70 columns; a web page would not


def split_pages(text: str) -> list[str]:
    """Cut a work into pages of about PAGE_CHARS, at a blank line where one is near."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    pages, page, size = [], [], 0
    for line in lines:
        page.append(line)
        size += len(line) + 1
        if size >= PAGE_CHARS and (not line or size >= PAGE_CHARS * 1.3):
            pages.append("\n".join(page).strip())
            page, size = [], 0
    if page:
        pages.append("\n".join(page).strip())
    return [p for p in pages if p]


def paragraphs_html(text: str, prose: bool = False) -> str:
    """Blank-line separated blocks become <p>: verse keeps its lines (<br>), prose is reflowed."""
    blocks = [b for b in text.split("\n\n") if b.strip()]
    joiner = " " if prose else "<br>\n"
    return "\n".join(
        "<p>" + joiner.join(html.escape(line.strip()) for line in b.splitlines()) + "</p>"
        for b in blocks
    )


def layout(title: str, body: str, works: list[tuple], extra_nav: str = "") -> str:
    nav = "\n".join(
        f'<li><a href="/works/{slug}/">{html.escape(name)}</a></li>'
        for slug, name, _, linked in works if linked
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)} | The Milton Reading Room</title>
<link rel="stylesheet" href="/style.css">
</head>
<body>
<header class="site-header">
<a class="brand" href="/">The Milton Reading Room</a>
<nav class="top-nav"><ul>
<li><a href="/">Home</a></li>
{nav}
<li><a href="/about.html">About this site</a></li>
<li><a href="/tags.html">Browse by tag</a></li>
</ul></nav>
</header>
<div id="cookie-notice" class="cookie-banner">
<p>We use cookies to remember your reading position and to count visitors.
By continuing to browse you accept our use of cookies. <a href="/privacy.html">Privacy policy</a>
<button>Accept all cookies</button></p>
</div>
<div class="layout">
<aside class="sidebar">
<h3>Other works by Milton</h3>
<ul>
{nav}
</ul>
<h3>Newsletter</h3>
<p>Subscribe to our monthly newsletter for new editions and reading guides.</p>
</aside>
<main>
<article>
<h1>{html.escape(title)}</h1>
{body}
</article>
{extra_nav}
</main>
</div>
<footer class="site-footer">
<p>Texts: Project Gutenberg, public domain. Site design: Crystalline demo.
<a href="/privacy.html">Privacy</a> | <a href="/terms.html">Terms of use</a> |
<a href="/sitemap.xml">Sitemap</a></p>
<p>Copyright 2026 The Milton Reading Room. All rights reserved.</p>
</footer>
</body>
</html>
"""


def write(root: Path, rel: str, content: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


def write_work(root: Path, slug: str, name: str, source: str, works: list[tuple]) -> list[str]:
    """A work's contents page and its text pages; returns their site paths."""
    pages = split_pages((TEXTS / source).read_text(encoding="utf-8"))
    paths = [f"/works/{slug}/"]
    toc = "\n".join(f'<li><a href="/works/{slug}/{i}.html">Part {i}</a></li>'
                    for i in range(1, len(pages) + 1))
    write(root, f"works/{slug}/index.html",
          layout(name, f"<p>{name}, by John Milton, in {len(pages)} parts.</p>\n<ol>{toc}</ol>", works))
    for i, page in enumerate(pages, start=1):
        links = [f'<a href="/works/{slug}/">Contents</a>']
        if i > 1:
            links.insert(0, f'<a href="/works/{slug}/{i - 1}.html">Previous</a>')
        if i < len(pages):
            links.append(f'<a href="/works/{slug}/{i + 1}.html">Next</a>')
        if i == 1:
            links.append(f'<a href="/print/{slug}/1.html">Print this page</a>')
        pager = '<nav class="pager">' + " | ".join(links) + "</nav>"
        write(root, f"works/{slug}/{i}.html",
              layout(f"{name}, part {i}", paragraphs_html(page, slug in PROSE), works, pager))
        paths.append(f"/works/{slug}/{i}.html")
    return paths


def home(works: list[tuple]) -> str:
    items = "\n".join(f'<li><a href="/works/{slug}/">{html.escape(name)}</a></li>'
                      for slug, name, _, linked in works if linked)
    body = f"""<p>The Milton Reading Room presents the poetry and prose of John Milton
(1608-1674) as plain, readable pages.</p>
<ul>{items}</ul>
<p><a href="/editions/paradise-lost-1-modernised.html">Paradise Lost, part 1, modernised spelling</a>
| <a href="/coming-soon.html">Samson Agonistes</a> | <a href="/concordance.html">Concordance</a>
| <a href="/private/drafts.html">Editors' drafts</a></p>"""
    return layout("Welcome", body, works)


def sitemap(paths: list[str]) -> str:
    # Locations are site-relative because the demo serves the site on any local port;
    # the spider resolves them against the sitemap's own URL.
    urls = "\n".join(f"  <url><loc>{p}</loc></url>" for p in paths)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
            f"{urls}\n</urlset>\n")


def main() -> None:
    for root in (SITE, UPDATE):
        shutil.rmtree(root, ignore_errors=True)
    paths = ["/", "/about.html"]
    for slug, name, source, _ in WORKS:
        paths += write_work(SITE, slug, name, source, WORKS)

    first = split_pages((TEXTS / "paradise_lost.txt").read_text(encoding="utf-8"))[0]
    # Exact duplicate: the same text in a print view with other chrome (same cleaned text).
    # (Only this work has a print view: the other works' "Print this page" links are broken
    # links that answer 404, as on many real sites.)
    write(SITE, "print/paradise-lost/1.html",
          f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Paradise Lost, "
          f"part 1 | The Milton Reading Room</title></head><body><article>"
          f"<h1>Paradise Lost, part 1</h1>{paragraphs_html(first)}</article></body></html>")
    # Near duplicate: a "modernised" edition that changes a few spellings.
    modern = first
    for old, new in [("Mans", "Man's"), ("Heav'nly", "Heavenly"), ("adventrous", "adventurous"),
                     ("thir", "their"), ("Thir", "Their"), ("som", "some")]:
        modern = modern.replace(old, new, 1)
    write(SITE, "editions/paradise-lost-1-modernised.html",
          layout("Paradise Lost, part 1 (modernised spelling)", paragraphs_html(modern), WORKS))
    # Junk a quality filter must catch.
    tags = " ".join(f'<a href="/tags.html#{t}">{t}</a>' for t in
                    ["epic", "poem", "prose", "liberty", "eden", "satan", "angels", "verse",
                     "blank-verse", "1667", "1674", "pastoral", "masque", "elegy"] * 6)
    write(SITE, "tags.html", layout("Browse by tag", f"<div class='tagcloud'>{tags}</div>", WORKS))
    write(SITE, "coming-soon.html",
          layout("Samson Agonistes", "<p>Coming soon. Lorem ipsum dolor sit amet.</p>", WORKS))
    rows = "\n".join(f"<tr><td>{i}</td><td>{i * 7 % 101}</td><td>{i * 13 % 97}</td>"
                     f"<td>#{i:03d}</td><td>&sect;{i % 12}</td></tr>" for i in range(1, 301))
    write(SITE, "concordance.html",
          layout("Concordance", f"<table><tr><th>#</th><th>Book</th><th>Line</th>"
                                f"<th>Ref</th><th>Sect</th></tr>{rows}</table>", WORKS))
    write(SITE, "about.html", layout("About this site", """<p>The Milton Reading Room is a small
demonstration website. Its texts come from Project Gutenberg and are in the public domain.
Each work is split into parts of a few thousand words, with a contents page per work.</p>
<p>The site exists so that a crawler can be tested against real pages: it has navigation,
a footer, a cookie notice, a robots.txt file and a sitemap, like most sites on the web.</p>""",
                                     WORKS))
    for name, title in [("privacy.html", "Privacy policy"), ("terms.html", "Terms of use")]:
        write(SITE, name, layout(title, "<p>We store no personal data. Cookies are optional.</p>",
                                 WORKS))
    # Disallowed by robots.txt: real prose, so a crawler that ignored robots.txt would keep it.
    areo = split_pages((TEXTS / "areopagitica.txt").read_text(encoding="utf-8"))[-1]
    write(SITE, "private/drafts.html",
          layout("Editors' drafts", paragraphs_html(areo, prose=True), WORKS))
    write(SITE, "robots.txt", "User-agent: *\nDisallow: /private/\n")
    write(SITE, "style.css", "body { font-family: serif; max-width: 50em; margin: auto; }\n"
                             ".cookie-banner { position: fixed; bottom: 0; }\n")
    write(SITE, "index.html", home(WORKS))
    write(SITE, "sitemap.xml", sitemap(paths))

    # The update: a new work, and the home page and sitemap that now list it.
    all_works = WORKS + NEW_WORKS
    new_paths = []
    for slug, name, source, _ in NEW_WORKS:
        new_paths += write_work(UPDATE, slug, name, source, all_works)
    write(UPDATE, "index.html", home(all_works))
    write(UPDATE, "sitemap.xml", sitemap(paths + new_paths))


if __name__ == "__main__":
    main()
