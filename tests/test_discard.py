"""text/discard.py: trafilatura's pruning expressions in Python select exactly what its XPath
does, on generated trees that bring out each rule (attribute order, missing and empty
attributes, comments, upper-case and namespaced tags) and on the trees trafilatura itself
makes of a real site."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trafilatura
import trafilatura.xpaths
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from text import discard
from text.extract import TRAFILATURA_OPTIONS, Extract

TRAFILATURA = [discard.TRAFILATURA[t.listed, t.index] for t in discard.TRANSLATIONS]

PYDOC = Path("/usr/share/doc/python3.11/html")
LISTS = sorted({t.listed for t in discard.TRANSLATIONS})

ATTRIBUTES = ["id", "class", "style", "role", "href"]
# Near misses and case variants; each expression's own words come from its text (`pieces_of`)
PIECES = ["", " ", "x", "NAV", "Nav", "Cookie", "display:block", "bad-ad", "commentary",
          "Teaser", "TEASER", "Caption", "Main-Content", "page-Content", "PAGE-content",
          "FullText", "true", "false", "main"]
TAGS = ["div", "item", "list", "p", "section", "span", "a", "ul", "ol", "details", "aside",
        "article", "h1", "head", "main", "DIV", "{urn:x}div"]

def pieces_of(path: str) -> list[str]:
    """The words an expression looks for: its string literals, each alternative of a
    regular expression with the regex syntax taken out."""
    found = []
    for literal in re.findall(r"'([^']*)'", path):
        found += [literal, *(re.sub(r"[\^$()?:\[\]\\]", "", token) for token in literal.split("|"))]
    return found


def trees(path: str):
    """Trees of the tags, attributes and words of the expression at `path`, and others."""
    tags = TAGS + re.findall(r"(?:self::|//)(\w+)", path)
    names = ATTRIBUTES + re.findall(r"@([\w-]+)", path)
    value = st.lists(st.sampled_from(PIECES + pieces_of(path)), max_size=3).map("".join)
    name = st.one_of(st.sampled_from(["id", "class"]), st.sampled_from(names))
    attributes = st.lists(st.tuples(name, value), max_size=4,
                          unique_by=lambda pair: pair[0])  # in the order drawn: the tag's
    node = st.tuples(st.sampled_from(tags + ["<comment>"]), attributes)
    return st.builds(tree_of, st.lists(node, min_size=1, max_size=30),
                     st.lists(st.integers(0, 1000), min_size=30, max_size=30))


def tree_of(nodes: list[tuple[str, list]], shape: list[int]) -> etree._Element:
    """A tree of the nodes, each a child of an earlier one (`shape` picks which)."""
    root = etree.Element("body", {"class": "nav"})  # the root's own attributes: never tested
    elements = [root]
    for (tag, pairs), parent in zip(nodes, shape):
        under = elements[parent % len(elements)]
        if tag == "<comment>":
            under.append(etree.Comment("nav"))
            continue
        element = etree.SubElement(under, tag)
        for name, text in pairs:
            element.set(name, text)
        elements.append(element)
    return root


@pytest.fixture
def lists():
    """trafilatura's lists of the expressions, put back as they were after the test."""
    before = {name: list(getattr(trafilatura.xpaths, name)) for name in LISTS}
    yield {name: getattr(trafilatura.xpaths, name) for name in LISTS}
    for name, expressions in before.items():
        getattr(trafilatura.xpaths, name)[:] = expressions


@pytest.mark.parametrize("translation", discard.TRANSLATIONS,
                         ids=lambda t: f"{t.listed}[{t.index}]")
def test_the_python_expressions_select_what_the_xpath_does(translation):
    xpath = discard.TRAFILATURA[translation.listed, translation.index]
    python = translation.python(xpath)

    @settings(max_examples=300, deadline=None, database=None)
    @given(trees(xpath.path))
    def same(tree):
        assert python(tree) == xpath(tree), etree.tostring(tree)

    same()


@pytest.mark.skipif(not (PYDOC / "index.html").is_file(),
                    reason="needs Debian's python3.11-doc: apt-get install -y python3.11-doc")
def test_on_a_real_site_every_call_trafilatura_makes_gets_the_xpaths_answer(lists):
    """Beside each of trafilatura's own calls, during extraction of every fifth page."""
    found = {}

    def both(translation, xpath):
        python = translation.python(xpath)

        def expression(tree):
            expected = xpath(tree)
            assert python(tree) == expected, (translation.listed, translation.index)
            found.setdefault(translation, []).append(len(expected))
            return expected
        return expression

    for translation, xpath in zip(discard.TRANSLATIONS, TRAFILATURA):
        lists[translation.listed][translation.index] = both(translation, xpath)
    pages = sorted(PYDOC.rglob("*.html"))[::5]
    for page in pages:
        trafilatura.bare_extraction(page.read_text(encoding="utf-8", errors="replace"),
                                    url=page.as_uri(), **TRAFILATURA_OPTIONS)
    assert set(found) == set(discard.TRANSLATIONS)  # each was called, on most pages
    assert all(len(calls) >= len(pages) // 2 for calls in found.values())
    assert sum(map(sum, found.values())) > 20  # and found elements


def test_extraction_installs_them_once_and_keeps_an_expression_it_does_not_know(lists):
    discard.restore()
    Extract()
    Extract()  # idempotent
    for translation, xpath in zip(discard.TRANSLATIONS, TRAFILATURA):
        assert translation.python(xpath), \
            f"trafilatura's {translation.listed}[{translation.index}] changed: " \
            "text/discard.py's template needs it"
        assert not isinstance(lists[translation.listed][translation.index], etree.XPath)

    discard.restore()
    hidden = discard.TRAFILATURA["OVERALL_DISCARD_XPATH", 1]
    changed = etree.XPath(hidden.path.replace("display: none", "display : none"),
                          namespaces={"re": trafilatura.xpaths.REGEXP_NS})
    lists["OVERALL_DISCARD_XPATH"][1] = changed
    discard.install()
    assert lists["OVERALL_DISCARD_XPATH"][1] is changed
    assert not isinstance(lists["OVERALL_DISCARD_XPATH"][0], etree.XPath)
