"""``GET /openapi.json``: a valid OpenAPI 3.1 document that names exactly the
app's routes, and that a live gateway keeps to under schemathesis.

The schemathesis runs start ``seckill serve`` on 127.0.0.1 (the session's
Redis, flushed), bounded to ``MAX_EXAMPLES`` test cases per operation (a few
hundred requests, a few seconds) with a fixed seed (``SECKILL_SCHEMATHESIS_SEED``
to change it).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient

from seckill.http import errors, responses
from seckill.http.app import create_app
from seckill.http.openapi import document, error_codes
from seckill.settings import Settings
from tests.helpers.api import ADMIN, ADMIN_TOKEN, create_sale
from tests.helpers.gateway import Gateway

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
MAX_EXAMPLES = 20
SEED = os.environ.get("SECKILL_SCHEMATHESIS_SEED", "20261125")
USER = "st-user"
#: every check that holds for this contract. Left out: ``positive_data_acceptance``
#: (a schema-valid buy of more than the sale's per_user_limit is rightly a 400;
#: JSON Schema also counts ``2.0`` as an integer, the gateway does not) and
#: ``ignored_auth`` (with ``--auth header`` any well-formed X-User-Id is a user).
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "missing_required_header",
        "unsupported_method",
        "allow_header_conformance",
    ]
)


def spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def app_operations(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route, less HEAD, the 404/405 fallbacks and
    the dashboard's assets."""
    found = set()
    for route in app.router.routes():
        resource = route.resource
        if route.method in ("HEAD", "*") or resource is None:  # "*": the JSON 404/405
            continue
        if isinstance(resource, web.StaticResource):
            continue
        path = resource.canonical
        if path.startswith("/dashboard/"):  # the page's files and the trailing-slash redirect
            continue
        found.add((route.method, path))
    return found


# --- the document ------------------------------------------------------------------


def test_document_is_valid_openapi_31() -> None:
    spec = json.loads(json.dumps(document()))  # exactly what is served
    assert spec["openapi"].startswith("3.1.")
    loaded = schemathesis.openapi.from_dict(spec)
    loaded.validate()  # the OpenAPI 3.1 meta-schema; raises on any violation
    assert {op.ok().label for op in loaded.get_all_operations()} == {
        f"{method} {path}" for method, path in spec_operations(spec)
    }


def test_validation_catches_a_broken_document() -> None:
    """The validity check above is not vacuous."""
    broken = copy.deepcopy(json.loads(json.dumps(document())))
    broken["paths"]["/healthz"]["get"]["responses"]["200"] = {"content": "nope"}
    import jsonschema_rs  # schemathesis's validator

    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()


def test_spec_and_app_name_the_same_routes() -> None:
    app = create_app(Settings(), "redis://127.0.0.1:1/0", ADMIN_TOKEN)
    spec = document()
    in_app, in_spec = app_operations(app), spec_operations(spec)
    assert in_app - in_spec == set(), "routes the spec does not describe"
    assert in_spec - in_app == set(), "operations the app does not serve"
    # every template variable is a declared path parameter, and nothing else is
    for path, item in spec["paths"].items():
        variables = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == variables, f"{method.upper()} {path}"


def test_every_error_code_is_documented() -> None:
    codes = set(error_codes())
    raised = {
        cls.code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.SeckillError)
    } - {errors.SeckillError.code}
    mapped = {code for code, _ in responses._HTTP_CODES.values()}
    assert codes == raised | mapped
    assert errors.SeckillError.code not in codes  # "internal" is a bug, never the contract
    # every response's own list of codes is a subset, and every code has a response
    used: set[str] = set()
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if "$ref" in response or not status.startswith(("4", "5")):
                    continue
                narrowed = response["content"]["application/json"]["schema"]["allOf"][1]
                enum = set(narrowed["properties"]["error"]["enum"])
                assert enum <= codes, f"{method.upper()} {path} {status}"
                used |= enum
    assert used | {"not_found", "method_not_allowed"} == codes


async def test_served_without_auth(client: TestClient) -> None:  # type: ignore[type-arg]
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == json.loads(json.dumps(document()))


@pytest.mark.parametrize("body", [{"per_user_rate": 1e-300}, {"rate": 5e-324}, {"rate": 0.0009}])
async def test_rates_below_the_minimum_are_refused(client: TestClient, body: Any) -> None:  # type: ignore[type-arg]
    """Found by schemathesis: a tiny positive rate used to break admit.lua (503) and
    the shield's Retry-After (500). Rates now start at 0.001/s."""
    resp = await client.put("/admin/v1/limits", json=body, headers=ADMIN)
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_request"


async def test_slowest_rate_and_biggest_burst_still_answer(client: TestClient) -> None:  # type: ignore[type-arg]
    await create_sale(client, "slow", stock=10)
    body = {"rate": 0.001, "burst": 1, "per_user_rate": 0.001, "per_user_burst": 10**9}
    resp = await client.put("/admin/v1/limits", json=body, headers=ADMIN)
    assert resp.status == 200
    first = await client.post("/api/v1/sales/slow/orders", headers={"X-User-Id": "u1"})
    assert first.status == 202, await first.text()
    for user in ("u2", "u3"):  # the local shield, then the cluster bucket
        refused = await client.post("/api/v1/sales/slow/orders", headers={"X-User-Id": user})
        assert refused.status == 429, await refused.text()
        assert 1 <= int(refused.headers["Retry-After"]) <= 3600


# --- schemathesis against a live gateway ------------------------------------------


def _request(url: str, method: str = "GET", body: Any = None, **headers: str) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def gateway(redis_url: str) -> Iterator[Gateway]:
    flush = redis_sync.Redis.from_url(redis_url)
    flush.flushall()
    flush.close()
    with Gateway("--redis-url", redis_url) as gw:
        gw.wait_ready()
        yield gw
        assert gw.stop() == 0


@pytest.fixture(scope="module")
def spec_file(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served document, its examples pointing at a real sale and a real order."""
    auth = {"Authorization": ADMIN["Authorization"], "Content-Type": "application/json"}
    _request(
        f"{gateway.url}/admin/v1/sales/demo", "PUT", {"stock": 1000, "per_user_limit": 5}, **auth
    )
    order = _request(f"{gateway.url}/api/v1/sales/demo/orders", "POST", **{"X-User-Id": USER})
    spec = _request(f"{gateway.url}/openapi.json")
    assert spec == json.loads(json.dumps(document()))
    for item in spec["paths"].values():
        for operation in item.values():
            for param in operation.get("parameters", []):
                if param["name"] == "order_id":
                    param["example"] = order["order_id"]
    path = tmp_path_factory.mktemp("openapi") / "openapi.json"
    path.write_text(json.dumps(spec))
    return path


def schemathesis_run(spec_file: Path, url: str, *args: str) -> str:
    """``st run`` on *spec_file* against *url*; its output, asserting it passed."""
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "run",
        str(spec_file),
        "--url",
        url,
        "-H",
        f"Authorization: Bearer {ADMIN_TOKEN}",
        "-H",
        f"X-User-Id: {USER}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        SEED,
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
        *args,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=90, cwd=spec_file.parent
    )
    output = result.stdout + result.stderr
    print(output)  # shown by pytest on failure, and with -s
    assert result.returncode == 0, output
    summary = re.search(r"(\d+) generated, (\d+) passed", output)
    assert summary is not None and summary.group(1) == summary.group(2), output
    assert int(summary.group(1)) > 0, output
    return output


@pytest.mark.multiprocess
def test_schemathesis_customer_and_admin_routes(gateway: Gateway, spec_file: Path) -> None:
    """Every operation but PUT /admin/v1/limits (below), all four phases: no 5xx,
    every status, header, content type and body as documented."""
    output = schemathesis_run(spec_file, gateway.url, "--exclude-operation-id", "putLimits")
    tested = len(spec_operations(document())) - 1
    assert re.search(rf"Tested: +{tested}\b", output), output


@pytest.mark.multiprocess
def test_schemathesis_limits(gateway: Gateway, spec_file: Path) -> None:
    """The limits on their own: mixed with buys, schemathesis's tiny rates hit the
    gateway bugs that the two xfail tests above pin down."""
    try:
        output = schemathesis_run(
            spec_file,
            gateway.url,
            "--include-path",
            "/admin/v1/limits",
            "--phases",
            "examples,coverage,fuzzing",
        )
        assert re.search(r"Tested: +2\b", output), output
    finally:
        off = {"rate": None, "per_user_rate": None, "burst": 1, "per_user_burst": 1}
        headers = {"Authorization": ADMIN["Authorization"], "Content-Type": "application/json"}
        _request(f"{gateway.url}/admin/v1/limits", "PUT", off, **headers)
