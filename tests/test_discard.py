"""text/discard.py: trafilatura's boilerplate expressions in Python select exactly what its
XPath does, on generated trees that bring out each rule (attribute order, missing and empty
attributes, comments) and on the trees trafilatura itself makes of a real site."""

from __future__ import annotations

from pathlib import Path

import pytest
import trafilatura
import trafilatura.xpaths
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from text import discard
from text.extract import TRAFILATURA_OPTIONS, Extract

PYDOC = Path("/usr/share/doc/python3.11/html")
XPATHS = discard.TRAFILATURA

ATTRIBUTES = ["id", "class", "style", "role", "data-component", "data-lp-replacement-content",
              "aria-hidden", "href"]
# Pieces of the tokens of both expressions and near misses, joined into attribute values
PIECES = ["", " ", "nav", "Nav", "NAV", "navigation", "menu", "share", "^shar", "shared",
          "cookie", "Cookie", "hidden", "hide-", "-hide-", " hide", "display:none",
          "display: none", "display:block", "reply-", "comments-title", "ad-", " ad ", "bad-ad",
          "true", "false", "MostPopularStories", "widget", "footer", "author", "x", "main",
          "content", "sidebar", "bar", "meta", "embed"]
TAGS = ["div", "item", "list", "p", "section", "span", "a", "ul", "article", "head", "main"]

value = st.lists(st.sampled_from(PIECES), max_size=3).map("".join)
attributes = st.lists(st.tuples(st.sampled_from(ATTRIBUTES), value), max_size=4,
                      unique_by=lambda pair: pair[0])  # in the order drawn: the tag's order
node = st.tuples(st.sampled_from(TAGS + ["<comment>"]), attributes)


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
def expressions():
    """trafilatura's list of the two, put back as it was after the test."""
    listed = trafilatura.xpaths.OVERALL_DISCARD_XPATH
    before = list(listed)
    yield listed
    listed[:] = before


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(node, min_size=1, max_size=30), st.lists(st.integers(0, 1000), min_size=30,
                                                          max_size=30))
def test_the_python_expressions_select_what_the_xpath_does(nodes, shape):
    tree = tree_of(nodes, shape)
    for xpath, python in zip(XPATHS, discard.python_expressions(XPATHS), strict=True):
        assert python(tree) == xpath(tree), etree.tostring(tree)


@pytest.mark.skipif(not (PYDOC / "index.html").is_file(),
                    reason="needs Debian's python3.11-doc: apt-get install -y python3.11-doc")
def test_on_a_real_site_every_call_trafilatura_makes_gets_the_xpaths_answer(expressions):
    """Beside each of trafilatura's own calls, during extraction of every fifth page."""
    pythons = discard.python_expressions(XPATHS)
    calls = []

    def both(i):
        def expression(tree):
            expected = XPATHS[i](tree)
            assert pythons[i](tree) == expected
            calls.append(len(expected))
            return expected
        return expression

    expressions[:] = [both(i) for i in range(len(XPATHS))]
    for page in sorted(PYDOC.rglob("*.html"))[::5]:
        trafilatura.bare_extraction(page.read_text(encoding="utf-8", errors="replace"),
                                    url=page.as_uri(), **TRAFILATURA_OPTIONS)
    assert len(calls) > 200 and sum(calls) > 20  # elements were found, not only none


def test_extraction_installs_them_once_and_keeps_an_expression_it_does_not_know(expressions):
    expressions[:] = XPATHS
    Extract()
    Extract()  # idempotent
    assert not any(isinstance(e, etree.XPath) for e in expressions)
    assert all(python is not None for python in discard.python_expressions(XPATHS)), \
        "trafilatura's OVERALL_DISCARD_XPATH changed: text/discard.py's templates need it"

    changed = etree.XPath(XPATHS[1].path.replace("display: none", "display : none"))
    expressions[:] = [XPATHS[0], changed]
    discard.install()
    assert expressions[1] is changed and not isinstance(expressions[0], etree.XPath)
