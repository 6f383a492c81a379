"""Which client sent a request: X-Forwarded-* honoured only from trusted proxies.

The client address keys the feedback rate limit, so a client that could name
its own address in a header could send unlimited feedback. A request's
X-Forwarded-* headers are therefore used only when the socket peer is in
`TAGLOOP_TRUSTED_PROXY_NETWORKS`, and then only the entries the trusted proxies
appended (from the right): `TAGLOOP_PROXY_HOPS` proxies set X-Forwarded-Proto and
-Host, and they append `TAGLOOP_PROXY_FORWARDED_FOR_ENTRIES` addresses to
X-Forwarded-For. Google's external Application Load Balancer is one hop that
appends two ("<client>, <load balancer>"), so behind it the entries are 2 and
the client is the second entry from the right, whatever the client sent before.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from werkzeug.middleware.proxy_fix import ProxyFix

from tagloop.settings import ConfigError, env_int, env_str

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

PRIVATE_NETWORKS = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
"""Default trusted peers: loopback and private ranges (local stack, Compose, GKE pods)."""


def parse_networks(name: str, raw: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (or single addresses); a bad one is a ConfigError naming `name`."""
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an IP network") from None
    return tuple(networks)


@dataclass(frozen=True)
class ProxyChain:
    """The trusted proxies in front of a service (module docstring)."""

    hops: int
    forwarded_for_entries: int
    trusted_networks: tuple[Network, ...]

    @classmethod
    def from_env(cls, env: Mapping[str, str], default_hops: int) -> ProxyChain:
        hops = env_int(env, "TAGLOOP_PROXY_HOPS", default_hops, minimum=0, maximum=10)
        return cls(
            hops=hops,
            forwarded_for_entries=env_int(
                env, "TAGLOOP_PROXY_FORWARDED_FOR_ENTRIES", hops, minimum=0, maximum=20
            ),
            trusted_networks=parse_networks(
                "TAGLOOP_TRUSTED_PROXY_NETWORKS",
                env_str(env, "TAGLOOP_TRUSTED_PROXY_NETWORKS", PRIVATE_NETWORKS),
            ),
        )

    @property
    def enabled(self) -> bool:
        return self.hops > 0 or self.forwarded_for_entries > 0


def _is_trusted(networks: Iterable[Network]) -> Any:
    frozen = tuple(networks)

    @functools.lru_cache(maxsize=4096)
    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False  # a Unix socket or nothing: no proxy we know of
        return any(ip in network for network in frozen)

    return trusted


ORIGINAL = "werkzeug.proxy_fix.orig"
"""Environ key where ProxyFix keeps the values it may rewrite; its presence says the peer is
a trusted proxy (the replica believes the UI's annotator header exactly then)."""


class TrustedProxyFix:
    """WSGI middleware: ProxyFix for requests from a trusted peer, headers ignored otherwise.

    A trusted peer's request without any of the X-Forwarded-* headers it reads (For, Proto,
    Host; Port and Prefix are never trusted) (the UI's health checks, a
    client on the pod network) only gets `ORIGINAL` recorded, as ProxyFix would do,
    without its header parsing (issue 19: every request passes here).
    """

    def __init__(self, app: WSGIApplication, chain: ProxyChain) -> None:
        self.app = app
        self.fixed = ProxyFix(
            app, x_for=chain.forwarded_for_entries, x_proto=chain.hops, x_host=chain.hops
        )
        self.trusted = _is_trusted(chain.trusted_networks)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        if not self.trusted(environ.get("REMOTE_ADDR", "")):
            return self.app(environ, start_response)
        if (
            "HTTP_X_FORWARDED_FOR" in environ
            or "HTTP_X_FORWARDED_PROTO" in environ
            or "HTTP_X_FORWARDED_HOST" in environ
        ):
            return self.fixed(environ, start_response)
        get = environ.get
        environ[ORIGINAL] = {
            "REMOTE_ADDR": get("REMOTE_ADDR"),
            "wsgi.url_scheme": get("wsgi.url_scheme"),
            "HTTP_HOST": get("HTTP_HOST"),
            "SERVER_NAME": get("SERVER_NAME"),
            "SERVER_PORT": get("SERVER_PORT"),
            "SCRIPT_NAME": get("SCRIPT_NAME"),
        }
        return self.app(environ, start_response)
