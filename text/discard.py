"""trafilatura's two boilerplate expressions (`trafilatura.xpaths.OVERALL_DISCARD_XPATH`)
evaluated in Python, with the same results: `install()` puts them in trafilatura's list.

The two are a third of trafilatura's extraction time on real pages. Each element they look
at costs lxml one call back into Python for every EXSLT `re:test` (4.4 µs an element on the
Python docs), where the same tests written in Python cost a fraction of that.

Each expression is replaced only when its text, whitespace aside, is the one this module
was written against, the regular expressions in it aside (read from trafilatura's own text,
so new tokens are taken as they come): any other change to the expression keeps
trafilatura's own, with a warning. The XPath rules kept: an element is tested, never the
tree it is called on (`.//*`); a missing attribute is the empty string; `@id|@class` is
whichever of the two comes first in the tag, and `@a = 'x'` holds when the attribute is
present with that value. tests/test_discard.py sets both beside trafilatura's XPath.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import structlog
import trafilatura.xpaths
from lxml.etree import Element

log = structlog.get_logger()

_REGEX = "'([^']*)'"  # an XPath string literal in a template: it has no escapes

# OVERALL_DISCARD_XPATH[0] and [1], whitespace collapsed, with _REGEX for each `re:test`'s
_TEMPLATES = [
    ".//*[self::div or self::item or self::list or self::p or self::section or self::span][ "
    "@data-lp-replacement-content or contains(translate(@role, 'N', 'n'), 'nav') or "
    "contains(@data-component, 'MostPopularStories') or re:test(@id|@class, {re}) or "
    "re:test(@id, {re}) or re:test(@class, {re})]",
    ".//*[@class='comments-title' or starts-with(@id|@class, 'reply-') or "
    "re:test(@id|@style, {re}) or contains(@style, 'display:none') or "
    "contains(@style, 'display: none') or re:test(@id, {re}) or re:test(@class, {re}) or "
    "@aria-hidden='true']",
]
_SECTIONS = ("div", "item", "list", "p", "section", "span")
# trafilatura's own, before `install` (tests and benchmarks set them beside ours)
TRAFILATURA = tuple(trafilatura.xpaths.OVERALL_DISCARD_XPATH)


def _first(element, a: str, b: str, value_a: str | None, value_b: str | None) -> str:
    """`string(@a|@b)`: the value of whichever attribute comes first in the tag, or ""."""
    if value_a is None or value_b is None:
        return value_a or value_b or ""
    keys = element.keys()
    return value_a if keys.index(a) < keys.index(b) else value_b


def sections_discarded(first_of_id_class: re.Pattern, of_id: re.Pattern,
                       of_class: re.Pattern) -> Callable:
    """OVERALL_DISCARD_XPATH[0]: sections named as boilerplate (navigation, sharing, ...)."""

    def expression(tree) -> list:
        found = []
        for element in tree.iterdescendants(*_SECTIONS):
            get = element.get
            id_, class_, role = get("id"), get("class"), get("role")
            if (get("data-lp-replacement-content") is not None
                    or (role is not None and "nav" in role.replace("N", "n"))
                    or "MostPopularStories" in (get("data-component") or "")
                    or first_of_id_class.search(_first(element, "id", "class", id_, class_))
                    or of_id.search(id_ or "") or of_class.search(class_ or "")):
                found.append(element)
        return found

    return expression


def hidden_discarded(first_of_id_style: re.Pattern, of_id: re.Pattern,
                     of_class: re.Pattern) -> Callable:
    """OVERALL_DISCARD_XPATH[1]: elements hidden, or comments' furniture."""

    def expression(tree) -> list:
        found = []
        for element in tree.iterdescendants(Element):
            get = element.get
            id_, class_, style = get("id"), get("class"), get("style")
            if (class_ == "comments-title"
                    or _first(element, "id", "class", id_, class_).startswith("reply-")
                    or first_of_id_style.search(_first(element, "id", "style", id_, style))
                    or (style is not None
                        and ("display:none" in style or "display: none" in style))
                    or of_id.search(id_ or "") or of_class.search(class_ or "")
                    or get("aria-hidden") == "true"):
                found.append(element)
        return found

    return expression


_BUILDERS = [sections_discarded, hidden_discarded]


def _parsed(template: str, path: str) -> list[str] | None:
    """The regular expressions of `path` if it is `template` but for them, else None."""
    pattern = re.escape(template).replace(re.escape("{re}"), _REGEX)
    found = re.fullmatch(pattern, " ".join(path.split()))
    return list(found.groups()) if found else None


def python_expressions(expressions: list) -> list[Callable | None]:
    """For each of trafilatura's two expressions, its Python equivalent, or None where the
    expression is not the one this module knows."""
    found = []
    for template, build, expression in zip(_TEMPLATES, _BUILDERS, expressions):
        regexes = _parsed(template, getattr(expression, "path", ""))
        # lxml's EXSLT compiles re:test's patterns with re.UNICODE, the default for str
        found.append(build(*map(re.compile, regexes)) if regexes is not None else None)
    return found


def install() -> None:
    """Evaluate trafilatura's boilerplate expressions in Python from now on in this process
    (its list is changed in place: every module of trafilatura holds the same list).
    Idempotent."""
    expressions = trafilatura.xpaths.OVERALL_DISCARD_XPATH
    if len(expressions) != len(_TEMPLATES):
        log.warning("trafilatura_discard_kept", message="trafilatura's OVERALL_DISCARD_XPATH "
                    "is not the one text/discard.py knows; kept as it is")
        return
    for i, python in enumerate(python_expressions(expressions)):
        if python is not None:
            expressions[i] = python
        elif hasattr(expressions[i], "path"):  # (no path: installed already)
            log.warning("trafilatura_discard_kept", expression=i,
                        message="trafilatura's expression changed; kept as it is")
