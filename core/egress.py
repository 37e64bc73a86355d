"""Which hosts Plugboard may send requests to: optional allow- and deny-lists.

On a shared server (access control on, or PLUGBOARD_SHARED=1) link-local and cloud-metadata
addresses are denied by default, so nobody can point a model card at 169.254.169.254 and read
the machine's credentials through error details. Rules are host names (`*.example.com`),
IP addresses or networks (`10.0.0.0/8`). Checked when a model is saved and when a request is
sent (host names are resolved and every address is checked).

Known limit: the check resolves the name, then httpx resolves it again to connect; a DNS
server that answers differently the second time (rebinding) is not caught.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Link-local (incl. 169.254.169.254, the AWS/GCP/Azure/OpenStack metadata address) and the
# other clouds' metadata endpoints.
SHARED_DENY = (
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254/128",
    "100.100.100.200/32",
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
)


@dataclass(frozen=True)
class Rules:
    names: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, items: Iterable[str]) -> Rules:
        names: list[str] = []
        networks: list[IPNetwork] = []
        for raw in items:
            item = raw.strip().lower()
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                names.append(item)
        return cls(tuple(names), tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.names or self.networks)

    def match_name(self, host: str) -> str | None:
        return next((n for n in self.names if fnmatch.fnmatch(host, n)), None)

    def match_address(self, address: str) -> IPNetwork | None:
        ip = ipaddress.ip_address(address.split("%")[0])
        return next((net for net in self.networks if ip.version == net.version and ip in net), None)


def parse_list(text: str) -> list[str]:
    return [part for part in text.replace(";", ",").split(",") if part.strip()]


@dataclass(frozen=True)
class EgressPolicy:
    allow: Rules = Rules()
    deny: Rules = Rules()

    @classmethod
    def build(
        cls, *, allow: Iterable[str] = (), deny: Iterable[str] = (), shared: bool = False
    ) -> EgressPolicy:
        extra = SHARED_DENY if shared else ()
        return cls(Rules.parse(allow), Rules.parse([*deny, *extra]))

    @property
    def active(self) -> bool:
        return bool(self.allow or self.deny)

    def check_url(self, url: str, *, resolve: bool = True) -> str | None:
        """None if requests to `url` are allowed, else a sentence saying why not."""
        if not self.active:
            return None
        try:
            host = (httpx.URL(url).host or "").lower()
        except (httpx.InvalidURL, ValueError):
            return None  # not a URL: URL validation reports it
        return self.check_host(host, resolve=resolve)

    def check_host(self, host: str, *, resolve: bool = True) -> str | None:
        host = host.strip("[]").lower()
        if name := self.deny.match_name(host):
            return self._refused(host, f"it matches the blocked name {name}")
        addresses = _literal(host) or (_resolve(host) if resolve else [])
        for address in addresses:
            if network := self.deny.match_address(address):
                return self._refused(host, f"{address} is in the blocked network {network}")
        if not self.allow:
            return None
        if self.allow.match_name(host):
            return None
        if addresses and all(self.allow.match_address(a) for a in addresses):
            return None
        return self._refused(host, "it is not on this server's allow-list")

    @staticmethod
    def _refused(host: str, why: str) -> str:
        return (
            f"Requests to {host} are not allowed on this Plugboard ({why}). "
            "Ask its administrator, or use another endpoint."
        )


def _literal(host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return []


def _resolve(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return []  # unresolvable: the request itself will say so
    return sorted({str(info[4][0]) for info in infos})
