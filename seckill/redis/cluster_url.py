"""Redis Cluster URLs: ``redis+cluster://[user:password@]host:port[,host:port…][?options]``
(``rediss+cluster://`` for TLS, with the same ``ssl_*`` options as ``rediss://``).

Every ``host:port`` is a seed: the client asks the first that answers for the
slot map and finds the other primaries there. The user, password and options
apply to every node; a cluster has one database, so no ``/db`` other than 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


@dataclass(frozen=True, slots=True)
class ClusterURL:
    #: (host, port) of every node the URL names
    seeds: list[tuple[str, int]]
    #: ``redis`` or ``rediss``
    scheme: str
    #: ``user:password@`` as written, or ""
    auth: str
    #: ``?options`` as written, or ""
    query: str

    def url_of(self, host: str, port: int) -> str:
        """The URL of one node alone (``redis://`` or ``rediss://``, the same
        credentials and options): redis-py's parser reads the options from it."""
        shown = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{self.auth}{shown}:{port}/0{self.query}"

    @property
    def node_url(self) -> str:
        """The first seed's URL."""
        return self.url_of(*self.seeds[0])


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterURL | None:
    """The seeds and options of a cluster URL; None for any other URL;
    ValueError (one sentence) when it is malformed."""
    parts = urlsplit(url)
    plain = CLUSTER_SCHEMES.get(parts.scheme)
    if plain is None:
        return None
    userinfo, _, hosts = parts.netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if item.strip().startswith("[") and "]:" in item:  # [::1]:7000
            host = item.strip()[1 : item.index("]")]
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"{parts.scheme}:// needs host:port[,host:port…] (each with its port), "
                f"got {item.strip() or '(nothing)'!r}"
            )
        seeds.append((host, int(port)))
    if parts.path not in ("", "/", "/0"):
        raise ValueError(f"a Redis Cluster has one database (0), got the path {parts.path!r}")
    return ClusterURL(
        seeds,
        plain,
        f"{userinfo}@" if userinfo else "",
        f"?{parts.query}" if parts.query else "",
    )
