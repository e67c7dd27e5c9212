"""The network guard: a crawl connects only to public addresses, and to the networks of
`[crawl] allowed_networks`.

A page may link to anything, and a name may resolve to anything: 10.x, 127.x, the cloud's
metadata service at 169.254.169.254. What would come back goes into shards, into training
and out through generation, so every address is checked before a connection is made:

- `GuardedResolver` is the reactor's name resolver (Scrapy's TWISTED_DNS_RESOLVER). Twisted's
  HostnameEndpoint, which every HTTP(S) connection goes through, passes it every host, IP
  literals included, and connects to exactly the addresses it hands back: a refused address
  is never handed back, and there is no second lookup for DNS rebinding to change.
- `GuardMiddleware` (a downloader middleware) refuses IP-literal hosts and other schemes
  before a request is sent, so a refused link or redirect is counted as `blocked_address`
  instead of failing as a lookup; redirects also go through the URL policy here.
- `check_seeds` does the same for the seeds before the crawl starts: a refused seed is a
  UserError naming it and the setting.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from scrapy.exceptions import IgnoreRequest
from twisted.internet._resolver import GAIResolver
from twisted.internet.interfaces import IHostnameResolver, IResolutionReceiver
from zope.interface import implementer, provider

from core.config import load
from core.errors import UserError
from crawler.config import CrawlConfig, CrawlerConfig, crawl_config, parse_networks
from crawler.urls import UrlPolicy

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# Never the public internet, whatever `is_global` of this Python's version says.
REFUSED = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8",  # "this network", unspecified
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # private (RFC 1918)
    "100.64.0.0/10",  # shared address space (carrier-grade NAT)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, the cloud metadata service 169.254.169.254 included
    "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, broadcast included
    "::/128", "::1/128",  # unspecified, loopback
    "100::/64", "2001:db8::/32",  # discard, documentation
    "fc00::/7",  # unique local
    "fe80::/10", "fec0::/10",  # link-local, site-local
    "ff00::/8",  # multicast
)]


def ip_of(host: str) -> Address | None:
    """The address an IP-literal host is (brackets and an IPv6 zone allowed), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def embedded_ipv4(address: Address) -> Address:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 one, which is where a
    connection really goes; else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in ipaddress.ip_network("64:ff9b::/96"):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


class NetworkPolicy:
    """Which addresses a crawl may connect to: public ones, and those in `allowed`."""

    def __init__(self, allowed: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]):
        self.allowed = list(allowed)

    @classmethod
    def of(cls, crawl: CrawlConfig) -> NetworkPolicy:
        return cls(parse_networks(crawl.allowed_networks))

    def refuses(self, host: str) -> bool:
        """Whether an address (as text) is out of bounds; what is no address is too."""
        if (address := ip_of(host)) is None:
            return True
        inner = embedded_ipv4(address)
        if any(a in net for net in self.allowed for a in {address, inner}
               if a.version == net.version):
            return False
        return (any(inner in net for net in REFUSED if net.version == inner.version)
                or not inner.is_global)


def check_seeds(seeds: list[str], policy: NetworkPolicy) -> None:
    """A UserError for the first seed whose host resolves only to refused addresses. A name
    that does not resolve is left to the crawl, which counts it `unreachable`."""
    for seed in seeds:
        parts = urlsplit(seed)
        host = parts.hostname or ""
        if ip_of(host) is not None:
            addresses = [host]
        else:
            try:
                addresses = [info[4][0] for info in socket.getaddrinfo(
                    host, parts.port or 80, type=socket.SOCK_STREAM)]
            except (OSError, UnicodeError):
                continue
        if addresses and all(policy.refuses(a) for a in addresses):
            raise UserError(
                f"seed {seed} is on a refused address ({', '.join(sorted(set(addresses)))}): "
                "private, loopback and link-local networks are crawled only when allowed; "
                "add the network to [crawl] allowed_networks or pass --allow-network CIDR "
                "(e.g. 127.0.0.1/32)")


class Skipped(IgnoreRequest):
    """A request the downloader refused before sending it, with the reason the report
    counts under `skipped`."""

    def __init__(self, reason: str, url: str):
        super().__init__(f"{reason}: {url}")
        self.reason = reason


class GuardMiddleware:
    """Before anything is sent (robots.txt included: this runs first): only http(s), no
    IP-literal host on a refused address, and a redirect's target through the URL policy
    the links went through."""

    def __init__(self, policy: NetworkPolicy, urls: UrlPolicy):
        self.policy, self.urls = policy, urls

    @classmethod
    def from_crawler(cls, crawler):
        config = crawl_config(crawler.settings)
        return cls(NetworkPolicy.of(config), UrlPolicy.of(config, crawler.spider.allowed_domains))

    def process_request(self, request, spider=None):
        parts = urlsplit(request.url)
        if parts.scheme not in ("http", "https"):
            raise Skipped("scheme", request.url)
        host = parts.hostname or ""
        if ip_of(host) is not None and self.policy.refuses(host):
            raise Skipped("blocked_address", request.url)
        if request.meta.get("redirect_urls") and (reason := self.urls.reason_to_skip(request.url)):
            raise Skipped(reason, request.url)
        return None


@provider(IResolutionReceiver)
class _Filter:
    """Hands on the addresses the policy allows; remembers a host that had only refused ones."""

    def __init__(self, receiver, host: str, resolver: GuardedResolver):
        self.receiver, self.host, self.resolver = receiver, host, resolver
        self.passed = self.refused = 0

    def resolutionBegan(self, resolution) -> None:
        self.receiver.resolutionBegan(resolution)

    def addressResolved(self, address) -> None:
        if self.resolver.policy.refuses(getattr(address, "host", "")):
            self.refused += 1
        else:
            self.passed += 1
            self.receiver.addressResolved(address)

    def resolutionComplete(self) -> None:
        if self.refused and not self.passed:
            self.resolver.note_refused(self.host)
        self.receiver.resolutionComplete()


@implementer(IHostnameResolver)
class GuardedResolver:
    """The reactor's name resolver (getaddrinfo in its thread pool, IPv4 and IPv6), handing
    on only the addresses the network policy allows."""

    def __init__(self, reactor, policy: NetworkPolicy, inner: IHostnameResolver | None = None):
        self.reactor, self.policy = reactor, policy
        self.inner = inner or GAIResolver(reactor)
        self.refused: set[str] = set()  # hosts with only refused addresses, for the report

    @classmethod
    def from_crawler(cls, crawler, reactor):
        if crawler.settings.get("CLLM_CRAWL") is None:  # `scrapy crawl site`: cllm.toml, CLLM_*
            return cls(reactor, NetworkPolicy.of(load(CrawlerConfig).crawl))
        return cls(reactor, NetworkPolicy.of(crawl_config(crawler.settings)))

    def install_on_reactor(self) -> None:
        self.reactor.installNameResolver(self)

    def note_refused(self, host: str) -> None:
        if len(self.refused) > 10_000:  # a record for the report, bounded
            self.refused.clear()
        self.refused.add(host.lower())

    def resolveHostName(self, resolutionReceiver, hostName: str, portNumber: int = 0,
                        addressTypes=None, transportSemantics: str = "TCP"):
        return self.inner.resolveHostName(_Filter(resolutionReceiver, hostName, self), hostName,
                                          portNumber, addressTypes, transportSemantics)


def refused_by_resolver(host: str) -> bool:
    """Whether the installed resolver refused every address of `host`."""
    from twisted.internet import reactor

    return host.lower() in getattr(reactor.nameResolver, "refused", ())
