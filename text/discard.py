"""trafilatura's pruning expressions (`trafilatura.xpaths`) evaluated in Python, with the same
results: `install()` puts them in trafilatura's lists.

These eleven (`TRANSLATIONS`) took half of trafilatura's extraction time on the Python docs.
Each element they look at costs libxml2 a round of XPath predicates, and lxml one call back
into Python for every EXSLT `re:test` (4.4 µs an element for OVERALL_DISCARD_XPATH[0]),
where the same tests written in Python cost a quarter of that or less: extraction runs 1.8x
as fast (benchmarks/crawl_stages.py).

An expression is replaced only when its text, whitespace aside, is the one written here,
its regular expressions aside (read from trafilatura's own text, so new tokens are taken as
they come): any other change keeps trafilatura's own, with a warning. The XPath rules kept:
`.//*` tests the elements below the tree, never the tree itself, in document order;
`.//*[...][1]` is the first that passes among each element's children, `(.//*[...])[1]` the
first of all; a missing attribute is the empty string; `string(@a|@b)` is whichever of the two comes first
in the tag; `@a = 'x'` holds when the attribute is present with that value. lxml's EXSLT
compiles `re:test` patterns as `re.compile(pattern)` does. tests/test_discard.py sets each
beside trafilatura's XPath.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import structlog
import trafilatura.xpaths
from lxml.etree import Element

log = structlog.get_logger()

_REGEX = "'([^']*)'"  # an XPath string literal, in a template's place of {re}: no escapes
_SECTIONS = ("div", "item", "list", "p", "section", "span")  # trafilatura's own tag names


def _first_of(element, a: str, b: str, value_a: str | None, value_b: str | None) -> str:
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


def _first_children(tags: tuple[str, ...], test: Callable) -> Callable[[object], list]:
    """`.//*[self::tag or ...][test][1]`: of each element's children, the first that passes."""
    def expression(tree) -> list:
        found, parents = [], set()
        for element in tree.iterdescendants(*tags):
            if test(element) and (parent := element.getparent()) not in parents:
                parents.add(parent)
                found.append(element)
        return found
    return expression


def _first_one(tags: tuple[str, ...], test: Callable) -> Callable[[object], list]:
    """`(.//*[self::tag or ...][test])[1]`: the first that passes, in a list, or []."""
    def expression(tree) -> list:
        return next(([element] for element in tree.iterdescendants(*tags) if test(element)),
                    [])
    return expression


def sections_named(first_of_id_class: re.Pattern, of_id: re.Pattern, of_class: re.Pattern):
    """OVERALL_DISCARD_XPATH[0]: sections named as boilerplate (navigation, sharing, ...)."""
    def test(element) -> bool:
        get = element.get
        id_, class_, role = get("id"), get("class"), get("role")
        return bool(get("data-lp-replacement-content") is not None
                    or (role is not None and "nav" in role.replace("N", "n"))
                    or "MostPopularStories" in (get("data-component") or "")
                    or first_of_id_class.search(_first_of(element, "id", "class", id_, class_))
                    or of_id.search(id_ or "") or of_class.search(class_ or ""))
    return _select(_SECTIONS, test)


def hidden(first_of_id_style: re.Pattern, of_id: re.Pattern, of_class: re.Pattern):
    """OVERALL_DISCARD_XPATH[1]: elements hidden, or comments' furniture."""
    def test(element) -> bool:
        get = element.get
        id_, class_, style = get("id"), get("class"), get("style")
        return bool(class_ == "comments-title"
                    or _first_of(element, "id", "class", id_, class_).startswith("reply-")
                    or first_of_id_style.search(_first_of(element, "id", "style", id_, style))
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


_BODIES = ("article", "div", "main", "section")


def article_bodies(of_id: re.Pattern, of_class: re.Pattern):
    """BODY_XPATH[0]: containers named as an article's body."""
    def test(element) -> bool:
        get = element.get
        id_, class_ = get("id"), get("class")
        return bool(class_ in ("post", "entry") or get("itemprop") == "articleBody"
                    or id_ == "articleContent" or of_id.search(id_ or "")
                    or of_class.search(class_ or ""))
    return _first_children(_BODIES, test)


def story_body(of_id: re.Pattern, of_class_any_case: re.Pattern, of_class: re.Pattern):
    """BODY_XPATH[2]: the first container named as a story."""
    def test(element) -> bool:
        get = element.get
        id_, class_ = get("id"), get("class")
        return bool(get("role") == "article" or id_ in ("article", "story")
                    or class_ in ("postarea", "art-postcontent", "text", "cell", "story")
                    or of_id.search(id_ or "") or of_class_any_case.search(class_ or "")
                    or of_class.search(class_ or ""))
    return _first_one(_BODIES, test)


def main_content(of_id: re.Pattern, of_class: re.Pattern):
    """BODY_XPATH[3]: the first container named as the main content."""
    def test(element) -> bool:
        get = element.get
        id_, class_ = get("id") or "", get("class") or ""
        return bool(id_ == "content" or class_ == "content" or of_id.search(id_)
                    or of_class.search(class_)
                    or "main-content" in id_.replace("C", "c").replace("M", "m")
                    or "main-content" in class_.replace("C", "c").replace("M", "m")
                    or "page-content" in class_.replace("C", "c").replace("P", "p"))
    return _first_one(_BODIES, test)


def main_element():
    """BODY_XPATH[4]: the first container named main, and the first <main>."""
    def expression(tree) -> list:
        found, named, main = [], None, None
        for element in tree.iterdescendants("article", "div", "section", "main"):
            if element.tag == "main":
                if main is None:
                    main = element
                    found.append(element)
            elif named is None and any((element.get(name) or "").startswith("main")
                                       for name in ("class", "id", "role")):
                named = element
                found.append(element)
            if main is not None and named is not None:
                break
        return found
    return expression


@dataclass(frozen=True)
class Translation:
    """One of trafilatura's expressions: its list in trafilatura.xpaths and place there, its
    text (whitespace collapsed, {re} for each re:test pattern, {re_i} for one tested with
    flag 'i'), and the Python equivalent, built from those patterns compiled."""
    listed: str
    index: int
    template: str
    build: Callable[..., Callable]

    @functools.cache  # built once: restore() and install() again only swap list entries
    def python(self, expression) -> Callable | None:
        """The Python equivalent of `expression`, or None if it is not the one known."""
        pattern = re.escape(self.template)
        flags = [re.IGNORECASE if name == "re_i" else 0
                 for name in re.findall(r"\{(re|re_i)\}", self.template)]
        for name in ("re_i", "re"):
            pattern = pattern.replace(re.escape("{" + name + "}"), _REGEX)
        found = re.fullmatch(pattern, " ".join(getattr(expression, "path", "").split()))
        if found is None:
            return None
        return self.build(*map(re.compile, found.groups(), flags))


_IN_SECTIONS = ("self::div or self::item or self::list or self::p or self::section or "
                "self::span")
_IN_BODIES = "self::article or self::div or self::main or self::section"
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
    Translation("BODY_XPATH", 0, f".//*[{_IN_BODIES}][ @class='post' or @class='entry' or "
                "@itemprop='articleBody' or @id='articleContent' or re:test(@id, {re}) or "
                "re:test(@class, {re}) ][1]", article_bodies),
    Translation("BODY_XPATH", 2, f"(.//*[{_IN_BODIES}][ @role='article' or @id='article' or "
                "@id='story' or @class='postarea' or @class='art-postcontent' or "
                "@class='text' or @class='cell' or @class='story' or re:test(@id, {re}) or "
                "re:test(@class, {re_i}, 'i') or re:test(@class, {re}) ])[1]", story_body),
    Translation("BODY_XPATH", 3, f"(.//*[{_IN_BODIES}][ @id='content' or @class='content' or "
                "re:test(@id, {re}) or re:test(@class, {re}) or "
                "contains(translate(@id, 'CM','cm'), 'main-content') or "
                "contains(translate(@class, 'CM','cm'), 'main-content') or "
                "contains(translate(@class, 'CP','cp'), 'page-content') ])[1]", main_content),
    Translation("BODY_XPATH", 4, "(.//*[self::article or self::div or self::section][ "
                "starts-with(@class, 'main') or starts-with(@id, 'main') or "
                "starts-with(@role, 'main')])[1]|(.//main)[1]", main_element),
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
