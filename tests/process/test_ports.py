"""A free port is only free when it is picked: another process may bind it
before the server does. The embedded server and the tests' gateways then
start again on another port instead of failing."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis

from seckill.process import embedded
from seckill.process.embedded import EmbeddedRedis
from seckill.process.procs import free_port
from seckill.tools import launcher
from tests.helpers.gateway import Gateway


@pytest.fixture
def taken() -> Iterator[int]:
    """A port something listens on (what a raced free port looks like)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield int(held.getsockname()[1])


def first_then_free(port: int) -> Callable[..., int]:
    """A free_port() whose first answer is *port*, then the real thing."""
    answers = iter([port])

    def pick(host: str = "127.0.0.1") -> int:
        return next(answers, None) or free_port(host)

    return pick


def test_embedded_server_takes_another_port_when_its_own_was_taken(
    tmp_path: Path, taken: int, redis_binary: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "free_port", first_then_free(taken))
    server = EmbeddedRedis(tmp_path, redis_binary)
    try:
        url = server.start(timeout=15)
        assert server.port != taken
        with Redis.from_url(url, socket_timeout=5) as client:
            assert client.ping()
    finally:
        server.stop()


def test_a_fixed_port_that_is_taken_fails(
    tmp_path: Path, taken: int, redis_binary: str | None
) -> None:
    server = EmbeddedRedis(tmp_path, redis_binary, port=taken)
    try:
        with pytest.raises(embedded.EmbeddedError, match="exited"):
            server.start(timeout=15)
    finally:
        server.stop()


@pytest.mark.multiprocess
def test_gateway_starts_again_on_another_port_when_its_own_was_taken(
    redis_url: str, taken: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launcher, "free_port", first_then_free(taken))
    with Gateway("--redis-url", redis_url) as gw:
        assert gw.port == taken
        gw.wait_ready(timeout=30)
        assert gw.port != taken and gw.ready()
        assert gw.stop() == 0
