"""``seckill serve``: check, start the embedded server, run one process or N.

``serve`` checks the port, starts the embedded server (or checks the
external one), then runs the app in this process (N = 1) or in N spawned
children that share the port through SO_REUSEPORT. SIGTERM/SIGINT: each
process stops accepting, answers what is in flight, and exits; the embedded
server is stopped last. Children die with the supervisor (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import signal
import socket
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import redis
import uvloop

from seckill.process.embedded import EmbeddedGaveUp, EmbeddedRedis, ServerState
from seckill.process.procs import raise_fd_limit
from seckill.process.supervisor import Supervisor
from seckill.process.worker import ServeError, run_app
from seckill.redis.cluster_url import parse_cluster_url
from seckill.settings import Settings

__all__ = ["SERVING_RE", "ServeError", "serve", "serving_line"]

log = logging.getLogger("seckill.server")


#: the line ``serve`` prints once every process is ready; the launcher reads it
#: (with ``--log-format json`` it is the message of a JSON line, the last key)
SERVING_RE = re.compile(
    r'^(?:\{.*"message": ")?seckill: serving on (?P<url>\S+) \((?P<processes>\d+) '
    r'process\(es\), Redis at (?P<redis_url>[^\s"]+)\)(?:"\})?$',
    re.MULTILINE,
)


def serving_line(settings: Settings, redis_url: str) -> str:
    """What ``serve`` prints once it serves (matched by ``SERVING_RE``)."""
    return (
        f"seckill: serving on http://{settings.host}:{settings.port} "
        f"({settings.processes} process(es), Redis at {redact(redis_url)})"
    )


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


#: settings whose values are secrets: shown as *** (or "none")
SECRETS = ("admin_token", "jwt_secret", "metrics_token")
_PASSWORD_PARAM = re.compile(r"(?i)((?:^|[?&;])(?:password|passwd|pass)=)[^&;]*")


def masked(url: str) -> str:
    """*url* with its password masked: in the user part and in a
    ``password=`` query parameter (libpq-style DSNs)."""
    shown = redact(url)
    parts = urlsplit(shown)
    if parts.query:
        shown = urlunsplit(parts._replace(query=_PASSWORD_PARAM.sub(r"\1***", parts.query)))
    return shown


def shown_settings(settings: Settings) -> dict[str, str]:
    """Every setting as the operator would write it, secrets and passwords
    masked (``seckill serve --check-config``)."""
    shown: dict[str, str] = {}
    for name, value in vars(settings).items():
        if name == "admin_token" and value is None:
            shown[name] = "generated at start"
        elif name in SECRETS:
            shown[name] = "none" if value is None else "***"
        elif name == "redis_url":
            shown[name] = "embedded" if value is None else masked(value)
        elif name == "order_sink":
            shown[name] = masked(settings.sink_url)
        elif value is None:
            shown[name] = "none"
        else:
            shown[name] = str(value)
    return shown


def check_port_free(host: str, port: int) -> None:
    """Bind once with SO_REUSEADDR only: a port held by anyone (even with
    SO_REUSEPORT) fails here, while leftover TIME_WAIT sockets do not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def check_redis(url: str, timeout: float) -> None:
    """Exit early when Redis does not answer, or is a cluster node reached by a
    plain URL (or the reverse); warn when it would lose orders."""
    cluster = parse_cluster_url(url)
    if cluster is None:
        _check_node(url, url, timeout, cluster=False)
        return
    failures: list[str] = []
    for host, port in cluster.seeds:  # the first seed that answers speaks for the cluster
        try:
            _check_node(cluster.url_of(host, port), url, timeout, cluster=True)
            return
        except _Unreachable as exc:
            failures.append(str(exc))
    raise ServeError(
        f"cannot reach any node of the Redis Cluster at {redact(url)}: {'; '.join(failures)}"
    )


class _Unreachable(ServeError):
    """One node does not answer."""


def _check_node(node_url: str, url: str, timeout: float, *, cluster: bool) -> None:
    client = redis.Redis.from_url(
        node_url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
    )
    try:
        try:
            client.ping()
            enabled = str(client.info("cluster").get("cluster_enabled", 0)) == "1"
        except (redis.RedisError, OSError) as exc:
            if cluster:
                raise _Unreachable(f"{redact(node_url)}: {exc}") from None
            raise ServeError(f"cannot reach Redis at {redact(url)}: {exc}") from None
        if enabled and not cluster:
            raise ServeError(
                f"Redis at {redact(url)} is a Redis Cluster node (cluster_enabled:1): "
                "use --redis-url redis+cluster://host:port[,host:port…] (rediss+cluster:// "
                "for TLS)"
            )
        if cluster and not enabled:
            raise ServeError(
                f"Redis at {redact(node_url)} is not a cluster node (cluster_enabled:0): "
                "use --redis-url redis://host:port (rediss:// for TLS)"
            )
        try:
            aof = str(next(iter(client.config_get("appendonly").values()), ""))
        except redis.ResponseError:  # CONFIG disabled (managed Redis): cannot tell
            aof = ""
        except (redis.RedisError, OSError) as exc:
            raise ServeError(f"cannot reach Redis at {redact(url)}: {exc}") from None
        if aof in ("no", "b'no'"):
            log.warning(
                "Redis at %s runs without AOF (appendonly no): a Redis restart loses the "
                "orders admitted since its last snapshot",
                redact(node_url),
            )
    finally:
        client.close()


def log_settings(settings: Settings, redis_url: str, generated_token: bool) -> None:
    """One line with the effective configuration, secrets masked."""
    shown = {
        **{
            k: v
            for k, v in vars(settings).items()
            if k not in ("admin_token", "jwt_secret", "metrics_token")
        },
        "data_dir": str(settings.data_dir),
        "redis_url": redact(redis_url),
        "order_sink": redact(settings.sink_url),
        "admin_token": "generated" if generated_token else "***",
        "jwt_secret": "***" if settings.jwt_secret else None,
        "metrics_token": "***" if settings.metrics_token else None,
    }
    log.info("config %s", " ".join(f"{k}={v}" for k, v in sorted(shown.items())))


def serve(settings: Settings, out: Callable[[str], None]) -> None:
    """Run the gateway until a stop signal. Raises ServeError/EmbeddedError on
    bad starts, EmbeddedGaveUp when the embedded server kept dying."""
    check_port_free(settings.host, settings.port)
    embedded: EmbeddedRedis | None = None
    state: ServerState | None = None
    if settings.redis_url is None:
        embedded = EmbeddedRedis(
            settings.data_dir, settings.redis_server, fsync=settings.redis_fsync
        )
        redis_url = embedded.start()
        state = embedded.state
    else:
        redis_url = settings.redis_url
    try:
        check_redis(redis_url, settings.redis_timeout)
        # inherited by the children; logged once the start can no longer fail on
        # a bad flag (those are one line on stderr, nothing else)
        log.info("open files limit (RLIMIT_NOFILE soft): %d", raise_fd_limit())
        if embedded is not None:
            # giving up = a stop signal to ourselves: drain as on SIGTERM, then exit 1
            embedded.supervise(lambda reason: os.kill(os.getpid(), signal.SIGTERM))
        admin_token = settings.admin_token
        if admin_token is None:
            admin_token = secrets.token_urlsafe(24)
            if settings.admits:  # a worker has no admin API
                out(f"seckill: generated admin token (shown once): {admin_token}")
                log.warning(
                    "no SECKILL_ADMIN_TOKEN set: a new admin token is generated at every start"
                )
        log_settings(settings, redis_url, settings.admin_token is None)
        if settings.auth == "header":
            log.warning(
                "--auth header: the X-User-Id header is trusted as the customer's identity; "
                "run this only behind an edge that authenticates customers and sets it"
            )

        def announce() -> None:
            out(serving_line(settings, redis_url))

        try:
            if settings.processes == 1:
                uvloop.run(run_app(settings, redis_url, admin_token, announce, server_state=state))
            else:
                Supervisor(settings, redis_url, admin_token, state).run(announce)
        except Exception:
            if embedded is None or not embedded.gave_up:
                raise
            # a drain without Redis may trip over it: the reason to exit stays the server's
            log.exception("error while stopping after giving up on the embedded server")
        log.info("stopped")
    finally:
        if embedded is not None:
            embedded.stop()
    if embedded is not None and embedded.gave_up:
        raise EmbeddedGaveUp(embedded.gave_up)
