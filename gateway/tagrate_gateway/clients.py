"""Who is on the other end of a request, and how often it failed to
authenticate (issue 23).

- :class:`ProxyTrust` / :func:`client_address`: ``X-Forwarded-For``,
  ``-Host`` and ``-Proto`` are believed only when the TCP peer is inside
  ``GATEWAY_TRUSTED_PROXIES``; otherwise the client is the peer itself and
  those headers are ignored (any client can write them).
- :class:`FailureLimiter`: failed logins and token uses per client address
  in a sliding minute, bounded in memory; it only ever turns a *failed*
  attempt into a 429, so a valid token is never refused.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import grpc
from starlette.requests import Request

from tagrate_common.errors import TagrateError

FAILURE_WINDOW_SECONDS = 60.0
# Client addresses the failure limiter remembers at most (bounded memory).
MAX_TRACKED_ADDRESSES = 10_000


class TooManyFailures(TagrateError):
    kind = "resource_exhausted"
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429
    default_code = "too_many_requests"


class FailureLimiter:
    """Failed credential uses per client address in a sliding minute.

    Memory is bounded: at most ``MAX_TRACKED_ADDRESSES`` addresses (the one
    that failed least recently is forgotten first, so a flood of new
    addresses cannot wipe a busy attacker's record in one go) with at most
    ``per_minute`` timestamps each. IPv6 addresses count per /64 (one host
    usually holds a whole /64). The limiter only ever turns a *failed*
    attempt into a 429: a valid token is never refused (see
    :meth:`tagrate_gateway.auth.Authenticator.verify`), so nobody can lock another caller out.
    """

    def __init__(self, per_minute: int, max_addresses: int = MAX_TRACKED_ADDRESSES) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    @staticmethod
    def key(address: str) -> str:
        try:
            ip = ip_address(address)
        except ValueError:
            return address[:64]
        if isinstance(ip, IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ip_network(f"{ip}/64", strict=False))
        return str(ip)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - FAILURE_WINDOW_SECONDS:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def exceeded(self, address: str) -> float | None:
        """Seconds until ``address`` may fail again when it used up its
        failures for this minute, else None."""
        now = time.monotonic()
        failures = self._recent(self.key(address), now)
        if failures is not None and len(failures) >= self.per_minute:
            return failures[0] + FAILURE_WINDOW_SECONDS - now
        return None

    def check(self, address: str) -> None:
        """429 when ``address`` used up its failures for this minute."""
        wait = self.exceeded(address)
        if wait is not None:
            retry = max(1, int(wait) + 1)
            raise TooManyFailures(f"too many failed logins or token uses from this address; retry in {retry} seconds")

    def fail(self, address: str) -> None:
        key = self.key(address)
        failures = self._failures.get(key)
        if failures is None:
            while len(self._failures) >= self.max_addresses:
                self._failures.popitem(last=False)
            failures = self._failures[key] = deque(maxlen=self.per_minute)
        else:
            self._failures.move_to_end(key)
        failures.append(time.monotonic())

    def __len__(self) -> int:
        return len(self._failures)


class ProxyTrust:
    """Which peers may speak for the client (``GATEWAY_TRUSTED_PROXIES``):
    only a request whose TCP peer is inside one of the networks has its
    ``X-Forwarded-For`` / ``-Host`` / ``-Proto`` believed."""

    def __init__(self, networks: tuple[IPv4Network | IPv6Network, ...] = ()) -> None:
        self.networks = networks

    def trusts(self, host: str | None) -> bool:
        if not self.networks or not host:
            return False
        try:
            ip = ip_address(host)
        except ValueError:
            return False
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)


def _proxy_trust(request: Request) -> ProxyTrust:
    trust = getattr(request.app.state, "proxies", None)
    return trust if isinstance(trust, ProxyTrust) else ProxyTrust()


def forwarded(request: Request, header: str) -> str | None:
    """The first value of an ``X-Forwarded-*`` header when the peer is a
    trusted proxy, else None (the header is ignored)."""
    peer = request.client.host if request.client else None
    if not _proxy_trust(request).trusts(peer):
        return None
    value = request.headers.get(header)
    return value.split(",")[0].strip() if value else None


def client_address(request: Request) -> str:
    """The client's address: the TCP peer, or, when the peer is a trusted
    proxy, the nearest ``X-Forwarded-For`` entry that is not itself a
    trusted proxy (entries further left were written by the client and
    prove nothing)."""
    peer = request.client.host if request.client else "unknown"
    trust = _proxy_trust(request)
    if not trust.trusts(peer):
        return peer
    hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    for hop in reversed([h for h in hops if h]):
        if not trust.trusts(hop):
            return hop[:64]
    return peer


def request_is_https(request: Request) -> bool:
    proto = (forwarded(request, "x-forwarded-proto") or "").lower()
    return request.url.scheme == "https" or proto == "https"
