"""The network guard and the crawl's bounds on their own: which addresses are refused, the
resolver handing on only allowed ones, seeds checked before a crawl, the URL shapes traps
make, the per-host and per-path budgets, session ids, and the settings that hold them.
No traffic: nothing here connects anywhere."""

from __future__ import annotations

import pytest

from core.config import load
from core.errors import UserError
from crawler.config import CrawlConfig, CrawlerConfig
from crawler.guard import GuardedResolver, NetworkPolicy, check_seeds
from crawler.parsing import decoded
from crawler.urls import Bounds, UrlPolicy, canonical_url

REFUSED = ["127.0.0.1", "127.0.0.2", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
           "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1",
           "::1", "::", "fc00::1", "fd12::1", "fe80::1", "fe80::1%eth0", "ff02::1", "2001:db8::1",
           "::ffff:127.0.0.2", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1",
           "2002:a00:1::1", "[::1]", "not-an-address"]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "151.101.0.223"]


@pytest.mark.parametrize("address", REFUSED)
def test_private_loopback_link_local_and_the_like_are_refused(address):
    assert NetworkPolicy([]).refuses(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_fine(address):
    assert not NetworkPolicy([]).refuses(address)


def test_an_allowed_network_lets_in_its_addresses_only():
    policy = NetworkPolicy.of(CrawlConfig(allowed_networks="127.0.0.1/32, 10.0.0.0/8"))
    assert not policy.refuses("127.0.0.1") and not policy.refuses("10.9.9.9")
    assert not policy.refuses("::ffff:127.0.0.1")  # the IPv4 inside is what counts
    assert policy.refuses("127.0.0.2") and policy.refuses("::1")
    assert policy.refuses("169.254.169.254")


class Address:
    def __init__(self, host: str):
        self.host = host


class Names:
    """A resolver that answers every name with the addresses given."""

    def __init__(self, addresses: list[str]):
        self.addresses = addresses

    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None,
                        transportSemantics="TCP"):
        receiver.resolutionBegan(None)
        for address in self.addresses:
            receiver.addressResolved(Address(address))
        receiver.resolutionComplete()
        return receiver


class Receiver:
    def __init__(self):
        self.addresses, self.complete = [], False

    def resolutionBegan(self, resolution):
        pass

    def addressResolved(self, address):
        self.addresses.append(address.host)

    def resolutionComplete(self):
        self.complete = True


@pytest.mark.parametrize("answer, handed_on, refused", [
    (["127.0.0.2"], [], True),  # a name that points at loopback: nothing to connect to
    (["169.254.169.254", "127.0.0.1"], ["127.0.0.1"], False),  # only what is allowed
    (["127.0.0.1"], ["127.0.0.1"], False),
])
def test_the_resolver_hands_on_only_allowed_addresses(answer, handed_on, refused):
    allowed = NetworkPolicy.of(CrawlConfig(allowed_networks="127.0.0.1/32"))
    resolver = GuardedResolver(None, allowed, inner=Names(answer))
    receiver = Receiver()
    resolver.resolveHostName(receiver, "rebinding.example", 80)
    # The endpoint connects to exactly these: no second lookup could change them.
    assert receiver.addresses == handed_on and receiver.complete
    assert ("rebinding.example" in resolver.refused) == refused


def test_seeds_are_checked_before_a_crawl():
    allowed = NetworkPolicy.of(CrawlConfig(allowed_networks="127.0.0.1/32"))
    check_seeds(["http://127.0.0.1:8000/", "http://localhost:8000/"], allowed)  # ::1 too: fine
    with pytest.raises(UserError, match=r"seed http://127\.0\.0\.2:9/ is on a refused address "
                       r"\(127\.0\.0\.2\).*allowed_networks.*--allow-network"):
        check_seeds(["http://127.0.0.1:8000/", "http://127.0.0.2:9/"], allowed)
    with pytest.raises(UserError, match="refused address"):
        check_seeds(["http://[::ffff:7f00:2]:9/"], allowed)
    check_seeds(["http://no-such-host.invalid/"], allowed)  # left to the crawl: unreachable


def test_urls_of_the_shapes_traps_make_are_skipped():
    policy = UrlPolicy.of(CrawlConfig(), ["example.org"])
    assert policy.reason_to_skip("http://example.org/a/b/c/a/b/") is None  # twice is fine
    assert policy.reason_to_skip("http://example.org/a/b/a/b/a/b/") == "repeated_path"
    assert policy.reason_to_skip("http://example.org/" + "x" * 2000) == "url_length"
    many = "&".join(f"p{i}=1" for i in range(11))
    assert policy.reason_to_skip(f"http://example.org/s?{many}") == "query_params"
    assert policy.reason_to_skip("http://example.org/s?a=1&b=2") is None


def test_bounds_per_host_and_per_path():
    bounds = Bounds(max_pages=3, max_queries=2)
    assert [bounds.take(f"http://a.org/list?page={i}") for i in range(3)] == \
        [None, None, "query_explosion"]
    assert bounds.take("http://a.org/other?page=1") is None  # another path
    assert bounds.take("http://a.org/x") == "host_budget"  # 3 taken already
    assert bounds.take("http://b.org/x") is None  # another host
    assert Bounds(0, 2).take("http://a.org/") is None  # 0: no page limit


def test_session_ids_are_not_part_of_a_url():
    assert canonical_url("http://a.org/cart;jsessionid=A1B2C3?item=2") == "http://a.org/cart?item=2"
    assert canonical_url("http://a.org/x;JSESSIONID=1/y;sid=9") == "http://a.org/x/y"
    assert canonical_url("http://a.org/x;v=1") == "http://a.org/x;v=1"  # other parameters stay


@pytest.mark.parametrize("body, content_type", [
    ("Café, naïve “quotes”".encode("utf-16"), "text/html"),  # BOM
    ("Café, naïve “quotes”".encode("utf-32"), "text/html"),
    ("Café, naïve “quotes”".encode("utf-16-be"), "text/plain; charset=utf-16be"),
])
def test_utf16_and_utf32_pages_are_decoded_for_the_text_steps(body, content_type):
    header = {"url": "http://a.org/", "media_type": content_type.split(";")[0],
              "content_type": content_type}
    response, steps_body = decoded(header, body)
    assert response.text.lstrip("\ufeff") == "Café, naïve “quotes”"
    assert b"\x00" not in steps_body  # not taken for binary


@pytest.mark.parametrize("environ, message", [
    ({"CLLM_CRAWL_ALLOWED_NETWORKS": "127.0.0.1/33"}, "allowed_networks: '127.0.0.1/33' is not"),
    ({"CLLM_CRAWL_ALLOWED_NETWORKS": "localhost"}, "allowed_networks: 'localhost' is not"),
    ({"CLLM_CRAWL_EXTRACT_TIMEOUT": "0"}, "extract_timeout must be positive"),
    ({"CLLM_CRAWL_SHARD_MAX_MINUTES": "nan"}, "shard_max_minutes in environment"),
    ({"CLLM_CRAWL_MAX_LINKS_PER_PAGE": "0"}, "max_links_per_page must be positive"),
    ({"CLLM_CRAWL_MAX_PAGES_PER_HOST": "-1"}, "max_pages_per_host must be 0 or more"),
])
def test_bad_bounds_are_one_clear_error(environ, message):
    with pytest.raises(UserError, match=message):
        load(CrawlerConfig, None, environ=environ)


def test_the_defaults_end_every_trap():
    c = CrawlConfig()
    assert c.max_depth == 20 and c.max_pages_per_host == 10_000 and c.extract_timeout == 30
    assert c.shard_max_minutes == 10 and c.allowed_networks == ""
