"""trafilatura's pruning expressions (`trafilatura.xpaths`) evaluated in Python, with the same
results: `install()` puts them in trafilatura's lists.

These seven are half of trafilatura's extraction time on real pages. Each element they look
at costs libxml2 a round of XPath predicates, and lxml one call back into Python for every
EXSLT `re:test` (4.4 µs an element for OVERALL_DISCARD_XPATH[0] on the Python docs), where
the same tests written in Python cost a fraction of that.

An expression is replaced only when its text, whitespace aside, is the one written here,
its regular expressions aside (read from trafilatura's own text, so new tokens are taken as
they come): any other change keeps trafilatura's own, with a warning. The XPath rules kept:
`.//*` tests the elements below the tree, never the tree itself, in document order; a
missing attribute is the empty string; `string(@a|@b)` is whichever of the two comes first
in the tag; `@a = 'x'` holds when the attribute is present with that value. lxml's EXSLT
compiles `re:test` patterns as `re.compile(pattern)` does. tests/test_discard.py sets each
beside trafilatura's XPath.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import structlog
import trafilatura.xpaths
from lxml.etree import Element

log = structlog.get_logger()

_REGEX = "'([^']*)'"  # an XPath string literal, in a template's place of {re}: no escapes
_SECTIONS = ("div", "item", "list", "p", "section", "span")  # trafilatura's own tag names


def _first(element, a: str, b: str, value_a: str | None, value_b: str | None) -> str:
    """`string(@a|@b)`: the value of whichever attribute comes first in the tag, or ""."""
    if value_a is None or value_b is None:
        return value_a or value_b or ""
    keys = element.keys()
    return value_a if keys.index(a) < keys.index(b) else value_b


def _select(tags: tuple[str, ...], test: Callable) -> Callable[[object], list]:
    """`.//*[self::tag or ...][test]`; every element when `tags` is empty."""
    def expression(tree) -> list:
        return [element for element in tree.iterdescendants(*(tags or (Element,)))
                if test(element)]
    return expression


def sections_named(first_of_id_class: re.Pattern, of_id: re.Pattern, of_class: re.Pattern):
    """OVERALL_DISCARD_XPATH[0]: sections named as boilerplate (navigation, sharing, ...)."""
    def test(element) -> bool:
        get = element.get
        id_, class_, role = get("id"), get("class"), get("role")
        return bool(get("data-lp-replacement-content") is not None
                    or (role is not None and "nav" in role.replace("N", "n"))
                    or "MostPopularStories" in (get("data-component") or "")
                    or first_of_id_class.search(_first(element, "id", "class", id_, class_))
                    or of_id.search(id_ or "") or of_class.search(class_ or ""))
    return _select(_SECTIONS, test)


def hidden(first_of_id_style: re.Pattern, of_id: re.Pattern, of_class: re.Pattern):
    """OVERALL_DISCARD_XPATH[1]: elements hidden, or comments' furniture."""
    def test(element) -> bool:
        get = element.get
        id_, class_, style = get("id"), get("class"), get("style")
        return bool(class_ == "comments-title"
                    or _first(element, "id", "class", id_, class_).startswith("reply-")
                    or first_of_id_style.search(_first(element, "id", "style", id_, style))
                    or (style is not None
                        and ("display:none" in style or "display: none" in style))
                    or of_id.search(id_ or "") or of_class.search(class_ or "")
                    or get("aria-hidden") == "true")
    return _select((), test)


def teasers():
    """TEASER_DISCARD_XPATH[0]."""
    def test(element) -> bool:
        get = element.get
        return ("teaser" in (get("id") or "").replace("T", "t")
                or "teaser" in (get("class") or "").replace("T", "t"))
    return _select(_SECTIONS, test)


def captions():
    """DISCARD_IMAGE_ELEMENTS[0]."""
    def test(element) -> bool:
        get = element.get
        return "caption" in (get("id") or "") or "caption" in (get("class") or "")
    return _select(_SECTIONS, test)


def comment_sections(of_id: re.Pattern, of_class: re.Pattern, list_id: re.Pattern,
                     list_class: re.Pattern):
    """REMOVE_COMMENTS_AND_LISTS_XPATH[0]: comment sections; a list only if named so."""
    def test(element) -> bool:
        id_, class_ = element.get("id") or "", element.get("class") or ""
        return bool((of_id.search(id_) or of_class.search(class_))
                    and (element.tag not in ("ol", "ul") or list_id.search(id_)
                         or list_class.search(class_)))
    return _select(("div", "list", "section", "details", "ol", "ul"), test)


def appended_articles(of_id: re.Pattern, of_class: re.Pattern, own_id: re.Pattern,
                      own_class: re.Pattern):
    """RAW_TREE_PRUNE_XPATH[0]: infinite-scroll containers of follow-up articles."""
    def test(element) -> bool:
        id_, class_ = element.get("id") or "", element.get("class") or ""
        return bool((of_id.search(id_) or of_class.search(class_))
                    and (next(element.iterdescendants("h1"), None) is None
                         or own_id.search(id_) or own_class.search(class_)))
    return _select(("div", "section", "aside"), test)


def share_buttons():
    """RAW_TREE_PRUNE_XPATH[1]."""
    return _select(("div", "section", "aside"),
                   lambda element: "elementor-share-buttons" in (element.get("class") or ""))


@dataclass(frozen=True)
class Translation:
    """One of trafilatura's expressions: its list in trafilatura.xpaths and place there, its
    text (whitespace collapsed, {re} for each re:test pattern), and the Python equivalent,
    built from those patterns."""
    listed: str
    index: int
    template: str
    build: Callable[..., Callable]

    def python(self, expression) -> Callable | None:
        """The Python equivalent of `expression`, or None if it is not the one known."""
        pattern = re.escape(self.template).replace(re.escape("{re}"), _REGEX)
        found = re.fullmatch(pattern, " ".join(getattr(expression, "path", "").split()))
        return self.build(*map(re.compile, found.groups())) if found else None


_IN_SECTIONS = ("self::div or self::item or self::list or self::p or self::section or "
                "self::span")
TRANSLATIONS = [
    Translation("OVERALL_DISCARD_XPATH", 0, f".//*[{_IN_SECTIONS}][ "
                "@data-lp-replacement-content or contains(translate(@role, 'N', 'n'), 'nav') "
                "or contains(@data-component, 'MostPopularStories') or "
                "re:test(@id|@class, {re}) or re:test(@id, {re}) or re:test(@class, {re})]",
                sections_named),
    Translation("OVERALL_DISCARD_XPATH", 1, ".//*[@class='comments-title' or "
                "starts-with(@id|@class, 'reply-') or re:test(@id|@style, {re}) or "
                "contains(@style, 'display:none') or contains(@style, 'display: none') or "
                "re:test(@id, {re}) or re:test(@class, {re}) or @aria-hidden='true']", hidden),
    Translation("TEASER_DISCARD_XPATH", 0, f".//*[{_IN_SECTIONS}][ "
                "contains(translate(@id, 'T', 't'), 'teaser') or "
                "contains(translate(@class, 'T', 't'), 'teaser')]", teasers),
    Translation("DISCARD_IMAGE_ELEMENTS", 0, f".//*[{_IN_SECTIONS}][ "
                "contains(@id, 'caption') or contains(@class, 'caption')]", captions),
    Translation("REMOVE_COMMENTS_AND_LISTS_XPATH", 0, ".//*[self::div or self::list or "
                "self::section or self::details or self::ol or self::ul][ re:test(@id, {re}) "
                "or re:test(@class, {re})][ not(self::ol or self::ul) or re:test(@id, {re}) "
                "or re:test(@class, {re})]", comment_sections),
    Translation("RAW_TREE_PRUNE_XPATH", 0, ".//*[self::div or self::section or self::aside][ "
                "re:test(@id, {re}) or re:test(@class, {re})][ not(.//h1) or "
                "re:test(@id, {re}) or re:test(@class, {re})]", appended_articles),
    Translation("RAW_TREE_PRUNE_XPATH", 1, ".//*[self::div or self::section or self::aside]"
                "[contains(@class, 'elementor-share-buttons')]", share_buttons),
]
# trafilatura's own expressions, before `install` (tests and benchmarks set them beside ours)
TRAFILATURA = {(t.listed, t.index): getattr(trafilatura.xpaths, t.listed)[t.index]
               for t in TRANSLATIONS}


def install() -> None:
    """Evaluate the expressions in Python from now on in this process. trafilatura's lists
    are changed in place: its modules hold those same lists. Idempotent."""
    for translation in TRANSLATIONS:
        listed = getattr(trafilatura.xpaths, translation.listed)
        expression = listed[translation.index]
        if not hasattr(expression, "path"):
            continue  # installed already
        python = translation.python(expression)
        if python is None:
            log.warning("trafilatura_expression_kept", expression=translation.listed,
                        index=translation.index, message="trafilatura's expression changed; "
                        "text/discard.py keeps it as it is")
        else:
            listed[translation.index] = python


def restore() -> None:
    """trafilatura's own expressions again (benchmarks measure trafilatura as it ships)."""
    for (listed, index), expression in TRAFILATURA.items():
        getattr(trafilatura.xpaths, listed)[index] = expression
