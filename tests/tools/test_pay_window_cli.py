"""The CLI of the pay window (issue 15): bad input exits 2 with one stderr line."""

from __future__ import annotations

import pytest

from tests.helpers.cli import assert_one_line_error, run_module

TOKEN = {"SECKILL_ADMIN_TOKEN": "t" * 32, "SECKILL_URL": "http://127.0.0.1:9"}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("order", "paid", "not-an-order"), "is not an order id"),
        (("order", "paid"), "Missing argument"),
        (("reconcile", "bad id!"), "is not a valid sale id"),
        (("sale", "create", "s", "--stock", "1", "--pay-window-s", "0"), "pay-window-s"),
        (("sale", "create", "s", "--stock", "1", "--pay-window-s", "x"), "pay-window-s"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...], fragment: str) -> None:
    assert_one_line_error(run_module("seckill", *args, env=TOKEN), fragment)


def test_unreachable_gateway_is_one_line() -> None:
    result = run_module("seckill", "order", "paid", "s.AAAAAAAAAAAAAAAA", env=TOKEN)
    assert_one_line_error(result, "cannot reach the gateway")
