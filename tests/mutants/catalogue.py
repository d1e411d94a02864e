"""The mutants: deliberate, semantic bugs in the Lua scripts, the pipeline, the
limits, the local shield, the embedded server's AOF and the invariant checker.

Each one is a text substitution: ``old`` must occur exactly once among the
files that ``where`` (globs relative to the repo root) selects — the file is
found by its content, so a script or module that moves keeps its mutants; a
pattern that no longer matches (or matches twice) stops ``make mutants`` with
the mutant's name. ``tests`` are the pytest arguments that must catch it (a
few files, run with ``-x``).

Add a mutant when you add a rule the gateway must keep; add a test when one
survives. A slot is left for the hot-sale buckets (``BUCKETS``).
"""

from __future__ import annotations

from dataclasses import dataclass

LUA = ("lua/*.lua",)
PY = ("seckill/**/*.py",)

LUA_TESTS = (
    "tests/lua/test_repeat_buyers.py",
    "tests/lua/test_admit.py",
    "tests/lua/test_buckets.py",
)
OUTCOME_TESTS = ("tests/lua/test_repeat_buyers.py", "tests/lua/test_outcomes.py")
PIPELINE_TESTS = ("tests/pipeline/test_consumer.py", "tests/pipeline/test_outcomes.py")
INVARIANT_TESTS = ("tests/tools/test_invariants.py",)


@dataclass(frozen=True)
class Mutant:
    name: str
    #: what it breaks: stock, per-user, refill, idempotency, xack, noack, restart,
    #: aof, reclaimer, shield, invariants, buckets…
    area: str
    old: str
    new: str
    tests: tuple[str, ...]
    where: tuple[str, ...] = LUA


MUTANTS: list[Mutant] = [
    # -- stock ------------------------------------------------------------------------
    Mutant(
        "admit-stock-check-off-by-one",
        "stock",
        "if stock_left < qty then",
        "if stock_left < qty - 1 then",
        LUA_TESTS,
    ),
    Mutant(
        "admit-stock-not-taken",
        "stock",
        "stock_left = stock_left - qty",
        "stock_left = stock_left - 0",
        LUA_TESTS,
    ),
    Mutant(
        "release-stock-not-returned",
        "stock",
        "  redis.call('HINCRBY', KEYS[2], 'stock_left', qty)\n"
        "  redis.call('HINCRBY', KEYS[2], 'n_queued', -1)\n"
        "  redis.call('HINCRBY', KEYS[2], 'n_failed', 1)",
        "  redis.call('HINCRBY', KEYS[2], 'n_queued', -1)\n"
        "  redis.call('HINCRBY', KEYS[2], 'n_failed', 1)",
        (*OUTCOME_TESTS, "tests/pipeline/test_consumer.py"),
    ),
    Mutant(
        "confirm-backlog-not-decremented",
        "stock",
        "  redis.call('HINCRBY', KEYS[2], 'n_queued', -1)\n"
        "  redis.call('HINCRBY', KEYS[2], 'n_confirmed', 1)",
        "  redis.call('HINCRBY', KEYS[2], 'n_confirmed', 1)",
        (*OUTCOME_TESTS, "tests/pipeline/test_consumer.py"),
    ),
    # -- per-user ---------------------------------------------------------------------
    Mutant(
        "admit-per-user-check-deleted",
        "per-user",
        "if held + qty > per_user_limit then\n  return {2, held}\nend\n",
        "",
        LUA_TESTS,
    ),
    Mutant(
        "admit-per-user-off-by-one",
        "per-user",
        "if held + qty > per_user_limit then",
        "if held + qty > per_user_limit + 1 then",
        LUA_TESTS,
    ),
    Mutant(
        "admit-units-not-recorded",
        "per-user",
        "redis.call('HINCRBY', units_key, user, qty)",
        "redis.call('HINCRBY', units_key, user, 0)",
        LUA_TESTS,
    ),
    Mutant(
        "admit-quantity-over-limit-accepted",
        "per-user",
        "if qty > per_user_limit then\n  return {7,",
        "if qty > per_user_limit + 1 then\n  return {7,",
        LUA_TESTS,
    ),
    Mutant(
        "release-units-not-returned",
        "per-user",
        "  redis.call('HINCRBY', KEYS[2], 'n_failed', 1)\n"
        "  if redis.call('HINCRBY', KEYS[3], o[2], -qty) <= 0 then",
        "  redis.call('HINCRBY', KEYS[2], 'n_failed', 1)\n"
        "  if redis.call('HINCRBY', KEYS[3], o[2], 0) <= 0 then",
        (*OUTCOME_TESTS, "tests/pipeline/test_consumer.py"),
    ),
    # -- refill and the token buckets ---------------------------------------------------
    Mutant(
        "admit-refill-ten-times-too-fast",
        "refill",
        "tokens = tokens + (now - ts) * rate / 1000",
        "tokens = tokens + (now - ts) * rate / 100",
        LUA_TESTS,
    ),
    Mutant(
        "admit-refill-not-capped-at-burst",
        "refill",
        "  if tokens > burst then\n    tokens = burst\n  end\n",
        "",
        LUA_TESTS,
    ),
    Mutant(
        "admit-sale-bucket-not-charged",
        "refill",
        "redis.call('HSET', bucket_key, 'tokens', tostring(tokens - 1), 'ts', now)",
        "redis.call('HSET', bucket_key, 'tokens', tostring(tokens), 'ts', now)",
        LUA_TESTS,
    ),
    Mutant(
        "admit-user-bucket-not-charged",
        "refill",
        "redis.call('HSET', ubucket_key, 'tokens', tostring(utokens - 1), 'ts', now)",
        "redis.call('HSET', ubucket_key, 'tokens', tostring(utokens), 'ts', now)",
        LUA_TESTS,
    ),
    Mutant(
        "limits-per-user-rate-dropped",
        "refill",
        "self._rate_args = (_num(limits.rate), _num(limits.per_user_rate))",
        "self._rate_args = (_num(limits.rate), _num(None))",
        (*LUA_TESTS, "tests/api/test_limits.py"),
        where=PY,
    ),
    # -- the sale window, the backlog bound and the deadline -----------------------------
    Mutant(
        "admit-sale-open-at-its-end",
        "window",
        "if ends_at and now >= ends_at then",
        "if ends_at and now > ends_at then",
        LUA_TESTS,
    ),
    Mutant(
        "admit-backlog-bound-off-by-one",
        "backlog",
        "if max_backlog > 0 and n_queued >= max_backlog then",
        "if max_backlog > 0 and n_queued > max_backlog then",
        LUA_TESTS,
    ),
    Mutant(
        "admit-late-call-admits",
        "deadline",
        "if deadline and now > deadline then",
        "if false then",
        LUA_TESTS,
    ),
    # -- idempotency ------------------------------------------------------------------
    Mutant(
        "admit-idempotency-key-not-stored",
        "idempotency",
        "  redis.call('SET', idem_key, order_id, 'EX', tonumber(ARGV[5]))\n",
        "",
        LUA_TESTS,
    ),
    Mutant(
        "admit-replay-for-any-user",
        "idempotency",
        "    if o[1] ~= user then",
        "    if false then",
        LUA_TESTS,
    ),
    # -- XACK -------------------------------------------------------------------------
    Mutant(
        "confirm-no-xack",
        "xack",
        "  end\n  changed = 1\nend\nredis.call('XACK', KEYS[3], ARGV[1], ARGV[2])\n",
        "  end\n  changed = 1\nend\n",
        (
            "tests/lua/test_repeat_buyers.py",
            "tests/lua/test_outcomes.py",
            "tests/pipeline/test_consumer.py",
        ),
    ),
    Mutant(
        "release-no-xack",
        "xack",
        "redis.call('XACK', KEYS[4], ARGV[1], ARGV[2])",
        "",
        (*OUTCOME_TESTS, "tests/pipeline/test_consumer.py"),
    ),
    Mutant(
        "ack-no-xack",
        "xack",
        "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\nredis.call('XDEL', KEYS[1], ARGV[2])",
        "redis.call('XDEL', KEYS[1], ARGV[2])",
        (*OUTCOME_TESTS, "tests/pipeline/test_consumer.py"),
    ),
    # -- NOACK, restart re-read, the reclaimer -------------------------------------------
    Mutant(
        "reader-noack",
        "noack",
        "                    block=self.block_ms,\n",
        "                    block=self.block_ms,\n                    noack=True,\n",
        PIPELINE_TESTS,
        where=PY,
    ),
    Mutant(
        "restart-does-not-reread-own-pending",
        "restart",
        '        """Re-deliver what this consumer name read before a restart."""\n',
        '        """Re-deliver what this consumer name read before a restart."""\n        return\n',
        ("tests/process/test_faults.py",),
        where=PY,
    ),
    Mutant(
        "reclaimer-never-takes-over",
        "reclaimer",
        "keys.stream(sale_id), GROUP, self.consumer, idle_ms, start, count=free",
        "keys.stream(sale_id), GROUP, self.consumer, idle_ms + 10**9, start, count=free",
        ("tests/pipeline/test_consumer.py",),
        where=PY,
    ),
    Mutant(
        "reclaimer-ignores-idle-time",
        "reclaimer",
        "keys.stream(sale_id), GROUP, self.consumer, idle_ms, start, count=free",
        "keys.stream(sale_id), GROUP, self.consumer, 0, start, count=free",
        ("tests/pipeline/test_consumer.py",),
        where=PY,
    ),
    # -- the pipeline's decisions -----------------------------------------------------
    Mutant(
        "pipeline-unknown-outcome-releases",
        "pipeline",
        "maybe_written = tried_before or delivery is Delivery.UNKNOWN",
        "maybe_written = tried_before",
        ("tests/pipeline/test_outcomes.py",),
        where=PY,
    ),
    Mutant(
        "pipeline-delivered-not-confirmed",
        "pipeline",
        "        if delivery is Delivery.DELIVERED:\n            await self._confirm(entry)",
        "        if delivery is Delivery.DELIVERED:\n            await self._ack(entry)",
        PIPELINE_TESTS,
        where=PY,
    ),
    Mutant(
        "pipeline-no-retry-budget",
        "pipeline",
        "self.retries + 1 if unknown_since is None else 1",
        "1",
        PIPELINE_TESTS,
        where=PY,
    ),
    # -- AOF ----------------------------------------------------------------------------
    Mutant(
        "embedded-server-without-aof",
        "aof",
        '"--dir", str(self.dir),\n            "--appendonly", "yes",',
        '"--dir", str(self.dir),\n            "--appendonly", "no",',
        ("tests/process/test_serve.py::test_embedded_server_keeps_everything_across_restarts",),
        where=PY,
    ),
    # -- the local shield -----------------------------------------------------------------
    Mutant(
        "shield-never-refuses",
        "shield",
        "return self.rate is not None and not self._limiter(sale_id).has_capacity()",
        "return False",
        ("tests/unit/test_shield.py",),
        where=PY,
    ),
    Mutant(
        "shield-share-not-split",
        "shield",
        "share = HEADROOM / max(1, processes)",
        "share = HEADROOM",
        ("tests/unit/test_shield.py",),
        where=PY,
    ),
    # -- the invariant checker --------------------------------------------------------------
    Mutant(
        "checker-misses-oversold",
        "invariants",
        "    if sold != total - left:\n",
        "    if False:\n",
        INVARIANT_TESTS,
        where=PY,
    ),
    Mutant(
        "checker-per-user-off-by-one",
        "invariants",
        "over = sorted(u for u, n in held.items() if n > limit)",
        "over = sorted(u for u, n in held.items() if n > limit + 1)",
        INVARIANT_TESTS,
        where=PY,
    ),
    Mutant(
        "checker-misses-duplicates-in-the-sink",
        "invariants",
        "twice = sorted(i for i, n in copies.items() if n > 1)",
        "twice = sorted(i for i, n in copies.items() if n > 2)",
        INVARIANT_TESTS,
        where=PY,
    ),
    Mutant(
        "checker-backlog-never-compared",
        "invariants",
        '            backlog == counts["queued"],\n',
        "            True,\n",
        INVARIANT_TESTS,
        where=PY,
    ),
]

#: the hot-sale buckets (another change adds them): their mutants go here —
#: e.g. a bucket that sells past its share, a refill across buckets that loses
#: stock — with the tests of tests/lua/test_buckets.py
BUCKETS: list[Mutant] = []

MUTANTS += BUCKETS
