"""A flash-sale crowd for any running seckill gateway (docs/API.md §4, §7).

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080

Each locust user is one customer at a time, with its own user id (a random
per-process prefix and a counter, so ids stay unique across ``--processes N``
and across runs). A customer opens the sale page and waits while the sale is
``upcoming``, buys with an ``Idempotency-Key`` (the same key on every retry of
one attempt), backs off on 429/503 exactly as ``Retry-After`` says (a bounded
number of times), follows a 202 order until it is final, then tries again.
``limit_reached`` ends that customer and the next one takes the slot;
``sold_out`` or an ended sale ends the locust user.

Every answer is recorded under the name of its outcome ("buy: admitted",
"buy: sold_out", "buy: rate_limited", "order: confirmed", "sale: upcoming", …)
so locust's report counts expected refusals by name; only answers the
contract does not allow are failures: a 5xx other than 503 ``overloaded``, a
timeout or dropped connection, an error body that is not the JSON error
object, a 202 without ``order_id``/``Location``, a 429/503 without
``Retry-After``.

Environment (all optional; ``LOADTEST_*``, so that nothing here is mistaken
for a setting of ``seckill serve``):

===========================  ================================================
``LOADTEST_SALE``            sale id (default ``demo``)
``LOADTEST_RETRIES``         retries of one buy after 429/503 (default 5)
``LOADTEST_ATTEMPTS``        buy attempts per locust user, then it stops
                             (default 0 = until the sale is over)
``LOADTEST_MALFORMED``       share of attempts sent malformed instead (bad
                             JSON, bad quantity, no identity); each must get
                             a 4xx JSON error, recorded as
                             "malformed: 400 (bad_json)"…
``LOADTEST_TIMEOUT``         seconds before a request counts as failed (10)
``LOADTEST_FOLLOW``          seconds to follow an order to a final status (30)
``LOADTEST_JWT_SECRET``      when set, identify with an HS256 JWT (``--auth
                             jwt`` gateways: their SECKILL_JWT_SECRET)
                             instead of ``X-User-Id``
``LOADTEST_PAY_SHARE``       share of confirmed orders the crowd pays (issue
                             15: ``POST /admin/v1/orders/{id}/paid``, needs
                             ``LOADTEST_ADMIN_TOKEN``); recorded as "pay:
                             paid", "pay: order_expired"… (default 0)
``LOADTEST_ADMIN_TOKEN``     the gateway's admin token, for the payments
``LOADTEST_SHAPE=spike``     enable the spike shape below:
``LOADTEST_USERS``           … ramp to this many users (default ``--users``
                             or 100)
``LOADTEST_RAMP``            … in this many seconds (default 5)
``LOADTEST_HOLD``            … hold them this long, then stop (default 20);
                             the run ends early once every customer has left
===========================  ================================================

With the spike shape, ``--run-time`` is a hard cap on the whole run.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import gevent
from locust import FastHttpUser, LoadTestShape, between, events, task
from locust.exception import StopUser
from locust.runners import STATE_RUNNING, WorkerRunner

#: resting statuses: undetermined waits for an operator, not for the pipeline
FINAL_ORDER = frozenset({"confirmed", "failed", "cancelled", "undetermined", "paid", "expired"})
#: what a paid answers (issue 15): 200, or 409 when the window is over
PAY_OUTCOMES = frozenset({(200, None), (409, "order_expired"), (409, "order_not_payable")})
SALE_OVER = frozenset({"sold_out", "ended"})


def _env(name: str, default: str) -> str:
    return os.environ.get(f"LOADTEST_{name}", "").strip() or default


def _number(name: str, default: float, low: float, high: float = float("inf")) -> float:
    raw = _env(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise ValueError(f"LOADTEST_{name} must be a number from {low} to {high}, got {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class Config:
    """The crowd's knobs, read once from ``LOADTEST_*`` variables."""

    sale: str
    retries: int
    attempts: int
    malformed: float
    timeout: float
    follow: float
    jwt_secret: str | None
    pay_share: float = 0.0
    admin_token: str | None = None

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            sale=_env("SALE", "demo"),
            retries=int(_number("RETRIES", 5, 0)),
            attempts=int(_number("ATTEMPTS", 0, 0)),
            malformed=_number("MALFORMED", 0.0, 0.0, 1.0),
            timeout=_number("TIMEOUT", 10.0, 0.1),
            follow=_number("FOLLOW", 30.0, 0.0),
            jwt_secret=_env("JWT_SECRET", "") or None,
            pay_share=_number("PAY_SHARE", 0.0, 0.0, 1.0),
            admin_token=_env("ADMIN_TOKEN", "") or None,
        )


CONFIG = Config.from_env()


class _Ids:
    """User ids unique across processes: a random prefix per pid, then a counter.

    The prefix is drawn lazily, after locust's ``--processes`` fork, so forked
    workers never share one.
    """

    def __init__(self) -> None:
        self.pid = -1
        self.prefix = ""
        self.counter: Iterator[int] = iter(())

    def next(self) -> str:
        if self.pid != os.getpid():
            self.pid, self.prefix = os.getpid(), secrets.token_hex(4)
            self.counter = itertools.count()
        return f"lt-{self.prefix}-{next(self.counter)}"


IDS = _Ids()


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one answer is recorded: the stats name, and why it failed (None = fine)."""

    name: str
    failure: str | None = None
    retry_after: float | None = None  # back off this long, then retry
    body: Any = None


def _json(resp: Any) -> Any:
    try:
        return json.loads(resp.content or b"")
    except (ValueError, UnicodeDecodeError):
        return None


def _retry_after(resp: Any) -> float | None:
    """Retry-After in seconds: an integer ≥ 1 by the contract (docs/API.md §3), else None."""
    raw = str((resp.headers or {}).get("Retry-After") or "").strip()
    return float(raw) if raw.isascii() and raw.isdigit() and int(raw) >= 1 else None


def _error_code(resp: Any, body: Any) -> tuple[str | None, str | None]:
    """The contract's error code, or (None, why the body breaks the contract)."""
    if (
        isinstance(body, dict)
        and isinstance(body.get("error"), str)
        and isinstance(body.get("message"), str)
    ):
        return body["error"], None
    return None, f"{resp.status_code} without the JSON error body: {(resp.content or b'')[:80]!r}"


def judge_buy(resp: Any) -> Verdict:
    status = resp.status_code
    if not status:
        return Verdict("buy: no answer", f"no answer: {resp.error!r}")
    body = _json(resp)
    if status == 202:
        order_id = body.get("order_id") if isinstance(body, dict) else None
        location = (resp.headers or {}).get("Location")
        if not isinstance(order_id, str) or location != f"/api/v1/orders/{order_id}":
            return Verdict("buy: admitted", f"202 without order_id/Location: {body!r} {location!r}")
        return Verdict("buy: admitted", body=order_id)
    code, broken = _error_code(resp, body)
    if code is None:
        return Verdict(f"buy: {status}", broken)
    name = f"buy: {code}"
    if (status, code) in {(409, "sold_out"), (409, "limit_reached"), (403, "sale_not_started")}:
        return Verdict(name)
    if (status, code) == (403, "sale_ended"):
        return Verdict(name)
    if (status, code) in {
        (429, "rate_limited"),
        (503, "overloaded"),
        (503, "unavailable"),
        (503, "outcome_unknown"),
    }:
        retry_after = _retry_after(resp)
        if retry_after is None:
            return Verdict(name, f"{status} {code} without a valid Retry-After")
        # `unavailable` / `outcome_unknown` mean Redis is unreachable or stalled:
        # back off as told, but a load test of a healthy gateway should never see them.
        failure = f"503 {code}: the gateway lost Redis" if code != "overloaded" else None
        return Verdict(name, failure, retry_after=retry_after)
    return Verdict(name, f"unexpected {status} {code}")


def judge_order(resp: Any, order_id: str) -> Verdict:
    status = resp.status_code
    if not status:
        return Verdict("order: no answer", f"no answer: {resp.error!r}")
    body = _json(resp)
    if status == 200:
        if not isinstance(body, dict) or body.get("order_id") != order_id:
            return Verdict("order: 200", f"not this order: {body!r}")
        state = body.get("status")
        if state not in FINAL_ORDER | {"queued"}:
            return Verdict("order: 200", f"unknown order status {state!r}")
        return Verdict(f"order: {state}", body=state)
    code, broken = _error_code(resp, body)
    if code is None:
        return Verdict(f"order: {status}", broken)
    if (status, code) == (503, "unavailable") and (retry_after := _retry_after(resp)):
        return Verdict("order: unavailable", "503 unavailable", retry_after=retry_after)
    # 404 order_not_found for one's own admitted order breaks "nothing lost".
    return Verdict(f"order: {code}", f"unexpected {status} {code}")


def judge_sale(resp: Any) -> Verdict:
    status = resp.status_code
    if not status:
        return Verdict("sale: no answer", f"no answer: {resp.error!r}")
    body = _json(resp)
    if (
        status == 200
        and isinstance(body, dict)
        and body.get("status")
        in SALE_OVER
        | {
            "upcoming",
            "active",
        }
    ):
        return Verdict(f"sale: {body['status']}", body=body)
    code, broken = _error_code(resp, body)
    if status == 200 or code is None:
        return Verdict(f"sale: {status}", broken or f"not a sale view: {body!r}")
    return Verdict(f"sale: {code}", f"unexpected {status} {code}")


#: Malformed buys and the one refusal each must get (docs/API.md §2, §3).
MALFORMED: dict[str, tuple[int, str]] = {
    "bad_json": (400, "invalid_request"),
    "bad_quantity": (400, "invalid_request"),
    "no_identity": (401, "unauthenticated"),
}
BAD_JSON = ["{", "not json", '{"quantity": }', "[1]", '"quantity"', "{'quantity': 1}"]
BAD_QUANTITY: list[Any] = [0, -1, "1", 1.5, True, None, 10**12, [1]]


def judge_malformed(resp: Any, kind: str) -> Verdict:
    status = resp.status_code
    if not status:
        return Verdict(f"malformed: no answer ({kind})", f"no answer: {resp.error!r}")
    name = f"malformed: {status} ({kind})"
    code, broken = _error_code(resp, _json(resp))
    if code is None:
        return Verdict(name, broken)
    if not 400 <= status < 500:
        return Verdict(name, f"a malformed buy got {status} {code}")
    want_status, want_code = MALFORMED[kind]
    if (status, code) != (want_status, want_code):
        return Verdict(name, f"expected {want_status} {want_code}, got {status} {code}")
    return Verdict(name)


class Customer(FastHttpUser):
    """One customer at a time; see the module docstring for the journey."""

    wait_time = between(0.05, 0.5)
    network_timeout = CONFIG.timeout
    connection_timeout = CONFIG.timeout

    def on_start(self) -> None:
        self.environment.runner.send_message(Crowd.MESSAGE, 1)
        self.user_id: str | None = None
        self.token = ("", "")  # (user id, its JWT) with LOADTEST_JWT_SECRET
        self.attempts_left = CONFIG.attempts or -1
        self.base = f"/api/v1/sales/{CONFIG.sale}"

    def on_stop(self) -> None:
        self.environment.runner.send_message(Crowd.MESSAGE, -1)

    # -- the journey ---------------------------------------------------------

    @task
    def shop(self) -> None:
        if self.attempts_left == 0:
            raise StopUser()
        if self.user_id is None:
            self.user_id = IDS.next()
            self.wait_for_opening()
        self.attempts_left -= 1
        if CONFIG.malformed and random.random() < CONFIG.malformed:
            self.send_malformed()
            return
        verdict = self.buy()
        if verdict.name == "buy: admitted" and verdict.failure is None:
            self.follow(verdict.body)  # then buy again: the limit decides
        elif verdict.name == "buy: sale_not_started":
            self.wait_for_opening()
        elif verdict.name in {"buy: sold_out", "buy: sale_ended", "buy: sale_not_found"}:
            raise StopUser()
        elif verdict.name == "buy: limit_reached" or verdict.retry_after is not None:
            self.user_id = None  # done, or gave up after the retries: the next customer

    def wait_for_opening(self) -> None:
        """Watch the sale page while it is ``upcoming``; leave if it is over or missing."""
        while True:
            verdict = self.call("GET", self.base, judge_sale)
            if verdict.retry_after is not None:
                gevent.sleep(verdict.retry_after)
                continue
            if verdict.failure is not None or verdict.name in {"sale: sold_out", "sale: ended"}:
                raise StopUser()
            if verdict.name != "sale: upcoming":
                return
            # Refresh like a countdown page: at the opening time, or once a
            # second; the view may lag 1 s, so past the opening just buy.
            opens_in = _seconds_until(verdict.body.get("starts_at"))
            if opens_in <= 0:
                return
            gevent.sleep(min(opens_in, 1.0) + random.uniform(0, 0.1))

    def buy(self) -> Verdict:
        """One buy attempt: a fresh Idempotency-Key, the same on every retry."""
        key = uuid.uuid4().hex
        for retry in itertools.count():
            verdict = self.call(
                "POST",
                f"{self.base}/orders",
                judge_buy,
                headers={"Idempotency-Key": key},
                body={"quantity": 1},
            )
            if verdict.retry_after is None or retry >= CONFIG.retries:
                return verdict
            gevent.sleep(verdict.retry_after * random.uniform(1.0, 1.2))
        raise AssertionError("unreachable")

    def follow(self, order_id: str) -> None:
        """Poll the order until it is final, backing off to once a second; bounded."""
        deadline = time.monotonic() + CONFIG.follow
        delay = 0.1
        while True:
            gevent.sleep(delay)
            verdict = self.call("GET", f"/api/v1/orders/{order_id}", judge_order, order_id)
            if verdict.body in FINAL_ORDER or (
                verdict.failure is not None and verdict.retry_after is None
            ):
                if verdict.body == "confirmed" and random.random() < CONFIG.pay_share:
                    self.pay(order_id)
                return
            if time.monotonic() > deadline:
                self.environment.events.request.fire(
                    request_type="GET",
                    name="order: not final in time",
                    response_time=CONFIG.follow * 1000,
                    response_length=0,
                    exception=AssertionError(f"order {order_id} not final after {CONFIG.follow}s"),
                    context={},
                )
                return
            delay = verdict.retry_after or min(delay * 2, 1.0)

    def pay(self, order_id: str) -> None:
        """The shop's backend settles the order as paid (admin API)."""
        if CONFIG.admin_token is None:
            raise ValueError("LOADTEST_PAY_SHARE needs LOADTEST_ADMIN_TOKEN")
        with self.client.request(
            "POST",
            f"/admin/v1/orders/{order_id}/paid",
            headers={"Authorization": f"Bearer {CONFIG.admin_token}"},
            catch_response=True,
        ) as resp:
            body = _json(resp)
            code = body.get("error") if isinstance(body, dict) else None
            name = "pay: paid" if resp.status_code == 200 else f"pay: {code or resp.status_code}"
            verdict = Verdict(
                name,
                None
                if (resp.status_code, code) in PAY_OUTCOMES
                else f"unexpected {resp.status_code} {code}",
            )
            self._record(resp, verdict)

    def send_malformed(self) -> None:
        kind = random.choice(list(MALFORMED))
        headers = {} if kind == "no_identity" else self.identity()
        headers["Content-Type"] = "application/json"
        if kind == "bad_json":
            data = random.choice(BAD_JSON)
        elif kind == "bad_quantity":
            data = json.dumps({"quantity": random.choice(BAD_QUANTITY)})
        else:
            data = json.dumps({"quantity": 1})
        with self.client.request(
            "POST", f"{self.base}/orders", headers=headers, data=data, catch_response=True
        ) as resp:
            self._record(resp, judge_malformed(resp, kind))

    # -- plumbing ------------------------------------------------------------

    def identity(self) -> dict[str, str]:
        assert self.user_id is not None
        if CONFIG.jwt_secret is None:
            return {"X-User-Id": self.user_id}
        if self.token[0] != self.user_id:  # one token per customer, not per request
            import jwt  # PyJWT: only for --auth jwt gateways

            claims = {"sub": self.user_id, "exp": int(time.time()) + 3600}
            self.token = (self.user_id, jwt.encode(claims, CONFIG.jwt_secret, "HS256"))
        return {"Authorization": f"Bearer {self.token[1]}"}

    def call(
        self,
        method: str,
        path: str,
        judge: Any,
        *judge_args: Any,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> Verdict:
        """One request as this customer, recorded under the verdict's name."""
        with self.client.request(
            method,
            path,
            headers={**self.identity(), **(headers or {})},
            json=body,
            catch_response=True,
        ) as resp:
            verdict: Verdict = judge(resp, *judge_args)
            self._record(resp, verdict)
        return verdict

    @staticmethod
    def _record(resp: Any, verdict: Verdict) -> None:
        resp.request_meta["name"] = verdict.name
        if verdict.failure is None:
            resp.success()
        else:
            resp.failure(verdict.failure)


def _seconds_until(rfc3339: Any) -> float:
    try:
        return datetime.fromisoformat(rfc3339).timestamp() - time.time()
    except (TypeError, ValueError):
        return 0.0


class Crowd:
    """Customers in the shop, as the master (or the only process) counts them.

    Users report arriving and leaving with a custom message, so the count is
    exact with ``--processes N`` too (a master's ``user_count`` never drops
    when users stop themselves).
    """

    MESSAGE = "seckill_crowd"

    def __init__(self) -> None:
        self.arrived = 0
        self.present = 0

    def on_message(self, msg: Any, **_: Any) -> None:
        self.present += msg.data
        self.arrived += max(msg.data, 0)

    @property
    def gone(self) -> bool:
        return self.arrived > 0 and self.present <= 0


CROWD = Crowd()


@events.init.add_listener  # type: ignore[untyped-decorator]  # locust's hooks are untyped
def _count_the_crowd(environment: Any, **_: Any) -> None:
    if environment.runner is not None and not isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(Crowd.MESSAGE, CROWD.on_message)


class SpikeShape(LoadTestShape):
    """Ramp to LOADTEST_USERS in LOADTEST_RAMP s, hold LOADTEST_HOLD s, stop.

    Only active with ``LOADTEST_SHAPE=spike`` (locust runs any concrete shape it
    finds). Ends early once every customer has left: the sale is over for all
    of them (or their LOADTEST_ATTEMPTS are spent); locust no longer replaces
    users who stop once the ramp is done.
    """

    abstract = _env("SHAPE", "") != "spike"
    use_common_options = True  # it reads --users and --run-time itself

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.ramp = _number("RAMP", 5.0, 0.0)
        self.hold = _number("HOLD", 20.0, 0.0)

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        options = self.runner.environment.parsed_options
        users = int(_number("USERS", getattr(options, "num_users", None) or 100, 1))
        cap = getattr(options, "run_time", None)
        now = self.get_run_time()  # type: ignore[no-untyped-call]
        if (cap and now >= cap) or now >= self.ramp + self.hold:
            return None
        if self.runner.state == STATE_RUNNING and CROWD.gone:
            return None
        return users, users / self.ramp if self.ramp > 0 else float(users)
