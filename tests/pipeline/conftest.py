"""What the pipeline tests share: a test webhook, and apps made with changed settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from seckill.settings import Settings
from tests.helpers.api import make_app
from tests.helpers.webhook import Webhook

Client = TestClient  # type: ignore[type-arg]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = await Webhook().start()
    yield hook
    await hook.stop()


@pytest.fixture
def make_client(aiohttp_client: Any, settings: Settings, redis: Redis) -> MakeClient:
    """An app client with *changes* to the session's settings (``redis``: a
    clean database)."""

    async def make(**changes: Any) -> Client:
        return await aiohttp_client(make_app(settings.replace(**changes)))  # type: ignore[no-any-return]

    return make
