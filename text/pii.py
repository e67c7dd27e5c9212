"""Personal data out of a document before it is written: e-mail addresses, IP addresses and
phone numbers replaced by placeholders (`<EMAIL>`, `<IP>`, `<PHONE>`), each kind counted.

What counts as each (after datatrove's PIIFormatter where it has a rule; it has no phones):

- e-mail: a local part of letters, digits and . _ % + - (at most 64, starting with a letter
  or digit), @, a domain of
  dot-separated labels (letters, digits, inner hyphens; at most 63 each, 10 at most) ending
  in a top-level domain of 2 to 63 letters. `user@host` without a dot is a code idiom, kept.
- IPv4: four decimal octets of at most 255, without leading zeros, not part of a longer
  dotted or hyphenated sequence (`1.2.3.4.5`, `v1.2.3.4`, `host-10.1.1.1` are not
  addresses), and public (`ipaddress`'s is_global, as datatrove: loopback, private and
  documentation addresses are nobody's). Four single-digit octets (`1.2.3.4`, `3.1.4.1`)
  are a version number far more often than someone's address: kept.
- IPv6: hexadecimal groups with colons that `ipaddress` reads as an address in 2000::/3,
  the global unicast range every public address is in (so `a::b`, `dead::beef` of code,
  times like 12:30:45 and `::` stay).
- phone: written as one, not any run of digits (versions, dates, ISBNs, prices, order
  numbers stay): `+` and a country code, 8 to 15 digits in all, run together or in groups
  of 1 to 4 split by a space, hyphen or dot, one group possibly in parentheses
  (`+44 20 7946 0958`, `+1 (555) 123-4567`); a parenthesised area code (`(555) 123-4567`);
  3-3-4 digits with hyphens (`555-123-4567`); or a national number with a trunk 0 and a
  digit 1-9, 9 to 11 digits in 2 to 5 groups (`020 7946 0958`, `01 23 45 67 89`). Never
  right after or before another number and a space (hex dumps, tables: `00 01 02 03 04`).
  `2026-12-01`, `01-12-2026` are dates; `0755 0644` file modes (8 digits).

Linear time: every repetition is bounded and each pattern starts only where its lookbehind
allows (not inside a run of the characters it is made of), so no input makes a pattern try
more than a bounded number of steps at each position.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

from text.document import Document

KINDS = ("email", "ip", "phone")
PLACEHOLDERS = {"email": "<EMAIL>", "ip": "<IP>", "phone": "<PHONE>"}

# Each pattern starts only after a character that cannot be inside what it matches, and
# ends before one; `>` counts as such before and `<` after, so that a text scrubbed once
# has nothing left to scrub (a placeholder where a match stood does not let a neighbour in).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL = re.compile(
    rf"(?<![\w.%+>-])\w[\w.%+-]{{0,63}}@(?:{_LABEL}\.){{1,10}}[A-Za-z]{{2,63}}(?![\w<-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = re.compile(rf"(?<![\w.>-]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w<-]|\.\d)")
IPV6 = re.compile(r"(?<![\w:.>])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:)?(?![\w:<])")
PHONE = re.compile(
    r"(?<![\w.+>-])(?<![\d>] )(?:"  # not inside a number, nor after one (a hex dump, a table)
    r"\+\d{1,3}(?:[ .-]?\(\d{1,4}\)|[ .-]\d{1,4}){2,6}|\+\d{8,15}"  # international
    r"|\(\d{2,5}\) ?\d{3,4}[ .-]\d{3,4}"  # (area code)
    r"|\d{3}-\d{3}-\d{4}"  # 555-123-4567
    r"|0[1-9]\d{0,3}(?:[ /-]\d{2,8}){1,4}"  # trunk 0, national
    r")(?![\w<-]|[.,]\d| \d)")
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


def _ipv4(match: re.Match) -> bool:
    text = match.group()
    return max(map(len, text.split("."))) > 1 and ipaddress.IPv4Address(text).is_global


def _ipv6(match: re.Match) -> bool:
    try:
        address = ipaddress.IPv6Address(match.group())
    except ValueError:
        return False
    return address in _GLOBAL_UNICAST and address.is_global


def _phone(match: re.Match) -> bool:
    text = match.group()
    digits = sum(c.isdigit() for c in text)
    if text.startswith("+"):
        return 8 <= digits <= 15
    return 9 <= digits <= 11 if text.startswith("0") else True


# kind: the patterns and the check of a match (None: every match is one)
RULES = {"email": [(EMAIL, None)], "ip": [(IPV4, _ipv4), (IPV6, _ipv6)],
         "phone": [(PHONE, _phone)]}


def scrub(text: str, kinds: tuple[str, ...] = KINDS) -> tuple[str, dict[str, int]]:
    """The text with the personal data of `kinds` replaced, and how many of each kind."""
    counts: dict[str, int] = {}
    for kind in kinds:
        placeholder, found = PLACEHOLDERS[kind], 0
        for pattern, check in RULES[kind]:
            def replace(match: re.Match) -> str:
                nonlocal found
                if check is not None and not check(match):
                    return match.group()
                found += 1
                return placeholder
            text = pattern.sub(replace, text)
        if found:
            counts[kind] = found
    return text, counts


class ScrubPII:
    """The step: personal data of `kinds` out of the text and title, counted in `doc.pii`;
    `doc_id` follows the text (the sha256 of what is written)."""

    def __init__(self, kinds: tuple[str, ...] = KINDS):
        self.kinds = kinds

    def __call__(self, doc: Document) -> Document:
        text, counts = scrub(doc.text, self.kinds)
        doc.title, title_counts = scrub(doc.title, self.kinds)
        for kind, n in title_counts.items():
            counts[kind] = counts.get(kind, 0) + n
        if text != doc.text:
            doc.text = text
            doc.doc_id = hashlib.sha256(text.encode("utf-8")).hexdigest()
        doc.pii = counts
        return doc
