"""The mutants: deliberate, semantic bugs in the Lua scripts, the pipeline, the
limits, the local shield, the embedded server's AOF and the invariant checker.

Each one is a text substitution: ``old`` must occur exactly once among the
files that ``where`` (globs relative to the repo root) selects — the file is
found by its content, so a script or module that moves keeps its mutants; a
pattern that no longer matches (or matches twice) stops ``make mutants`` with
the mutant's name. ``tests`` are the pytest arguments that must catch it (a
few files, run with ``-x``).

Add a mutant when you add a rule the gateway must keep; add a test when one
survives. The hot-sale buckets, the cluster pipeline and the roles: ``BUCKETS``;
the pay window (issue 15): ``PAY_WINDOW``.
"""

from __future__ import annotations

from dataclasses import dataclass

LUA = ("lua/*.lua",)
PY = ("seckill/**/*.py",)

LUA_TESTS = (
    "tests/lua/test_repeat_buyers.py",
    "tests/lua/test_admit.py",
    "tests/lua/test_buckets.py",
    "tests/lua/test_admit_batch.py",
)
#: batched admission (issue 14): the batch's own bookkeeping
BATCH_TESTS = ("tests/lua/test_admit_batch.py",)
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
        "    if held + qty > per_user_limit then\n      results[i] = {2, held}\n      break\n"
        "    end\n",
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
        "if qty > per_user_limit then\n      results[i] = {7,",
        "if qty > per_user_limit + 1 then\n      results[i] = {7,",
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
    # -- batched admission: a buy sees the buys before it in its batch ------------------
    Mutant(
        "admit-batch-backlog-not-carried",
        "backlog",
        "  n_queued = n_queued + 1\n",
        "",
        BATCH_TESTS,
    ),
    Mutant(
        "admit-batch-sale-hash-not-written",
        "stock",
        "if admitted then\n  redis.call('HSET', sale_key,",
        "if false then\n  redis.call('HSET', sale_key,",
        BATCH_TESTS,
    ),
    Mutant(
        "admit-batch-answers-shifted",
        "stock",
        "                fut.set_result(replies[i])",
        "                fut.set_result(replies[-1 - i])",
        BATCH_TESTS,
        where=PY,
    ),
    Mutant(
        "admit-batch-never-gathers",
        "stock",
        "        if len(batch.waiters) >= self._batch_cap:",
        "        if len(batch.waiters) >= 1:",
        BATCH_TESTS,
        where=PY,
    ),
    # -- idempotency ------------------------------------------------------------------
    Mutant(
        "admit-idempotency-key-not-stored",
        "idempotency",
        "    redis.call('SET', idem_key, order_id, 'EX', idem_ttl)\n",
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
        "        if delivery in (Delivery.DELIVERED, Delivery.PAID):\n"
        "            await self._confirm(entry)",
        "        if delivery in (Delivery.DELIVERED, Delivery.PAID):\n"
        "            await self._ack(entry)",
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

SALE_BUCKETS_TESTS = ("tests/lua/test_sale_buckets.py",)
SALE_BUCKETS_API_TESTS = ("tests/api/test_sale_buckets.py",)

#: steps 2 and 3 of a transfer, as ``Scripts.finish`` runs them
_CREDIT_STEP = (
    "        await self._eval(\n"
    "            self._credit, [keys.sale(dest), keys.xfer_in(dest)],"
    ' [xid, _field(dest), amount, ""]\n'
    "        )\n"
)
_ACK_STEP = (
    "        await self._eval("
    'self._xack, [keys.xfer_out(source), keys.xfer_done(source)], [xid, ""])\n'
)

#: one hot sale on several buckets (issue 13; docs/architecture.md, "One hot
#: sale on several shards"): the transfers, the refill and its sold-out proof,
#: the reconciler, the routing, where a returned unit goes, the checker's
#: bucket checks — and the cluster-mode pipeline and ``serve --role``
BUCKETS: list[Mutant] = [
    # -- the transfers (xfer_take, xfer_credit, xfer_ack) ----------------------------------
    Mutant(
        "xfer-credit-not-idempotent",
        "buckets",
        "if redis.call('ZSCORE', KEYS[2], ARGV[1]) then\n  return 0\nend\n",
        "",
        SALE_BUCKETS_TESTS,
    ),
    Mutant(
        "xfer-take-does-not-subtract",
        "buckets",
        "redis.call('HSET', src, field, available - amount)",
        "redis.call('HSET', src, field, available)",
        SALE_BUCKETS_TESTS,
    ),
    Mutant(
        "xfer-take-not-idempotent",
        "buckets",
        "local rec = redis.call('HGET', out, x)",
        "local rec = false",
        SALE_BUCKETS_TESTS,
    ),
    Mutant(
        "xfer-take-not-capped-at-the-source",
        "buckets",
        "if amount > available then\n  amount = available\nend\n",
        "",
        SALE_BUCKETS_TESTS,
    ),
    Mutant(
        "xfer-acknowledged-before-the-credit",
        "buckets",
        _CREDIT_STEP + _ACK_STEP,
        _ACK_STEP + _CREDIT_STEP,
        SALE_BUCKETS_TESTS,
        where=PY,
    ),
    Mutant(
        "sale-creation-credits-buckets-and-pool",
        "buckets",
        "await self.transfer(sale_id, tag, share)",
        "await self.finish(sale_id, tag, secrets.token_urlsafe(12), share)",
        SALE_BUCKETS_TESTS,
        where=PY,
    ),
    Mutant(
        "bucket-put-older-settings-win",
        "buckets",
        "if have and have >= v then",
        "if false then",
        SALE_BUCKETS_TESTS,
    ),
    Mutant(
        "stock-cut-refused-without-draining-the-buckets",
        "buckets",
        "if result.outcome is SalePut.STOCK_CONFLICT and await self.route(sale_id):",
        "if False:",
        SALE_BUCKETS_TESTS,
        where=PY,
    ),
    # -- the refill and its sold-out proof ---------------------------------------------------
    Mutant(
        "refill-skips-draining-the-other-buckets",
        "buckets",
        "await self.transfer(tag, home, 0 if j == k else -1)",
        "await self.transfer(tag, home, 0)",
        (*SALE_BUCKETS_TESTS, *SALE_BUCKETS_API_TESTS),
        where=PY,
    ),
    Mutant(
        "sold-out-proof-ignores-the-pool-sequence",
        "buckets",
        "if quiet_seq is not None and seq == quiet_seq and outstanding == 0:",
        "if quiet_seq is not None and outstanding == 0:",
        (*SALE_BUCKETS_TESTS, *SALE_BUCKETS_API_TESTS),
        where=PY,
    ),
    Mutant(
        "sold-out-proof-without-a-quiet-round",
        "buckets",
        "if quiet_seq is not None and seq == quiet_seq and outstanding == 0:",
        "if outstanding == 0:",
        (*SALE_BUCKETS_TESTS, *SALE_BUCKETS_API_TESTS),
        where=PY,
    ),
    Mutant(
        "bucket-admission-reports-the-last-unit",
        "buckets",
        'Admit.OK, result.order_id, quantity, "queued", result.created_at_ms, -1',
        'Admit.OK, result.order_id, quantity, "queued", result.created_at_ms, result.stock_left',
        SALE_BUCKETS_API_TESTS,
        where=PY,
    ),
    # -- the reconciler ------------------------------------------------------------------------
    Mutant(
        "reconciler-never-finishes-a-transfer",
        "buckets",
        "            try:  # a destination on a dead primary: the others still\n"
        "                await self.finish(owner, dest, _str(xid), int(amount))\n",
        "            try:  # a destination on a dead primary: the others still\n"
        "                pass\n",
        SALE_BUCKETS_TESTS,
        where=PY,
    ),
    # -- routing and where returned units go ---------------------------------------------------
    Mutant(
        "routing-depends-on-the-quantity",
        "buckets",
        "k = bucket_of_user(user_id, n)",
        'k = bucket_of_user(f"{user_id}{quantity}", n)',
        (*SALE_BUCKETS_TESTS, *SALE_BUCKETS_API_TESTS),
        where=PY,
    ),
    Mutant(
        "bucket-rate-not-split",
        "buckets",
        "max(1, -(-limits.burst // n)),",
        "limits.burst,",
        SALE_BUCKETS_API_TESTS,
        where=PY,
    ),
    Mutant(
        "cancel-returns-units-to-the-home-hash",
        "buckets",
        "self._cancel,\n"
        "            [\n"
        "                keys.order(sale_id, order_id),\n"
        "                keys.sale(sale_id),\n"
        "                keys.units(sale_id),\n"
        "                keys.pay_deadlines(sale_id),",
        "self._cancel,\n"
        "            [\n"
        "                keys.order(sale_id, order_id),\n"
        "                keys.sale(keys.sale_of_tag(sale_id)),\n"
        "                keys.units(sale_id),\n"
        "                keys.pay_deadlines(sale_id),",
        (*SALE_BUCKETS_TESTS, *SALE_BUCKETS_API_TESTS),
        where=PY,
    ),
    Mutant(
        "release-returns-units-to-the-home-hash",
        "buckets",
        "                keys.order(sale_id, order_id),\n"
        "                keys.sale(sale_id),\n"
        "                keys.units(sale_id),\n"
        "                keys.stream(sale_id),\n",
        "                keys.order(sale_id, order_id),\n"
        "                keys.sale(keys.sale_of_tag(sale_id)),\n"
        "                keys.units(sale_id),\n"
        "                keys.stream(sale_id),\n",
        (*SALE_BUCKETS_TESTS, *SALE_BUCKETS_API_TESTS),
        where=PY,
    ),
    Mutant(
        "order-looked-up-in-the-home-hash",
        "buckets",
        "        return tags[k]\n",
        "        return sale_id\n",
        SALE_BUCKETS_API_TESTS,
        where=PY,
    ),
    Mutant(
        "replay-looked-up-in-the-home-hash",
        "buckets",
        "return sale_id if tags is None else tags[bucket_of_user(user_id, len(tags))]",
        "return sale_id",
        SALE_BUCKETS_API_TESTS,
        where=PY,
    ),
    # -- the periodic reconciler of every admitting process ------------------------------------
    Mutant(
        "periodic-reconciler-not-started",
        "buckets",
        "        contexts += [background(listen), background(heartbeat), background(reconcile)]",
        "        contexts += [background(listen), background(heartbeat)]",
        ("tests/pipeline/test_roles.py",),
        where=PY,
    ),
    Mutant(
        "periodic-reconciler-takes-a-tag-for-its-sale",
        "buckets",
        "sorted({keys.sale_of_tag(m) for m in members if keys.is_bucket_tag(m)})",
        "sorted({m for m in members if keys.is_bucket_tag(m)})",
        ("tests/pipeline/test_roles.py",),
        where=PY,
    ),
    # -- the checker's bucket checks -------------------------------------------------------------
    Mutant(
        "checker-buckets-forget-units-in-flight",
        "invariants",
        "available = pool + sum(stock) + in_flight",
        "available = pool + sum(stock)",
        INVARIANT_TESTS,
        where=PY,
    ),
    Mutant(
        "checker-misses-a-user-in-the-wrong-bucket",
        "invariants",
        "if zlib.crc32(user.encode()) % len(tags) != k:",
        "if False:",
        INVARIANT_TESTS,
        where=PY,
    ),
    Mutant(
        "checker-buckets-allow-a-negative-place",
        "invariants",
        "negative = pool < 0 or min(stock, default=0) < 0",
        "negative = False",
        INVARIANT_TESTS,
        where=PY,
    ),
    # -- the cluster-mode pipeline and the roles -------------------------------------------------
    Mutant(
        "per-stream-reader-skips-its-own-pending",
        "restart",
        "                    async with self._turn():  # a burst of new sales: a few at a time\n"
        "                        await self._read_own_pending(sale_id)\n",
        "",
        ("tests/pipeline/test_streams.py",),
        where=PY,
    ),
    Mutant(
        "worker-serves-the-api",
        "roles",
        "        if settings.admits\n        # a worker: the probes",
        "        if True\n        # a worker: the probes",
        ("tests/pipeline/test_roles.py",),
        where=PY,
    ),
    Mutant(
        "gateway-delivers",
        "roles",
        "    if settings.delivers:\n        contexts.append(pipeline_ctx)",
        "    if True:\n        contexts.append(pipeline_ctx)",
        ("tests/pipeline/test_roles.py",),
        where=PY,
    ),
    Mutant(
        "worker-counts-in-the-shield",
        "roles",
        "        contexts += [background(listen), background(heartbeat), background(reconcile)]\n",
        "        contexts += [background(listen), background(heartbeat), background(reconcile)]\n"
        "    else:\n"
        "        contexts.append(background(heartbeat))\n",
        ("tests/pipeline/test_roles.py",),
        where=PY,
    ),
]

MUTANTS += BUCKETS

#: the pay window (issue 15): paid / expired as compare-and-sets, the sweeper
PAY_WINDOW_TESTS = ("tests/lua/test_pay_window.py",)
PAY_WINDOW_API_TESTS = ("tests/api/test_pay_window.py",)

PAY_WINDOW: list[Mutant] = [
    Mutant(
        "paid-past-the-deadline-accepted",
        "pay-window",
        "if deadline and now >= deadline then",
        "if false then",
        PAY_WINDOW_TESTS,
    ),
    Mutant(
        "expire-without-compare-and-set",
        "pay-window",
        "if o[1] ~= 'confirmed' or not o[2] then",
        "if not o[2] then",
        PAY_WINDOW_TESTS,
    ),
    Mutant(
        "expire-keeps-the-stock",
        "pay-window",
        "redis.call('HINCRBY', KEYS[2], 'stock_left', qty)\n"
        "redis.call('HINCRBY', KEYS[2], 'n_confirmed', -1)",
        "redis.call('HINCRBY', KEYS[2], 'n_confirmed', -1)",
        PAY_WINDOW_TESTS,
    ),
    Mutant(
        "confirm-gives-no-deadline",
        "pay-window",
        "    redis.call('ZADD', KEYS[4], deadline, redis.call('HGET', KEYS[1], 'order_id'))",
        "",
        PAY_WINDOW_TESTS,
    ),
    Mutant(
        "sweeper-never-sweeps",
        "pay-window",
        "        if not await self.scripts.due(owner, now, 1):\n            return 0",
        "        if True:\n            return 0",
        PAY_WINDOW_API_TESTS,
        where=PY,
    ),
    Mutant(
        "sink-never-hears-a-status",
        "pay-window",
        "                        await sink.set_status(order, entry.status, entry.at_ms)",
        "                        pass",
        PAY_WINDOW_API_TESTS,
        where=PY,
    ),
]

MUTANTS += PAY_WINDOW
