"""The throughput/latency benchmark behind ``make bench`` (docs/API.md §8).

    python -m loadtest.bench [--scenarios bare,admit,...] [--processes 1,2]
        [--connections 64,256] [--duration S] [--warmup S] [--out-dir DIR]
        [--shards 1,3]

It starts what it measures, on 127.0.0.1 only, through the project's one
launcher (``seckill.tools.launcher``): for each process count P, the
yardstick (``python -m loadtest.bare --processes P``), then ``seckill serve
--processes P`` with an embedded Valkey on a fresh data dir and
``--max-backlog 0``. Each scenario is driven by ``wrk`` (``-t2``, the Lua
script ``loadtest/wrk/buy.lua`` gives every request its own ``X-User-Id``)
for a warm-up that is not recorded, then for a fixed duration:

- ``bare``         the yardstick's 202; always measured, the ratios need it
- ``admit``        a sale whose stock never runs out, every buy a new user: 202
- ``sold_out``     a sold-out sale, after the warm-up set every process's
                   local sold-out flag: 409 without Redis
- ``rate_limited`` its own sale with the limits at rate 1/s, burst 1: 429,
                   mostly from the local shield (limits are reset afterwards)
- ``mixed_spike``  a real sale: a fresh sale with 10,000 units, a crowd of
                   200,000 users, no warm-up; records when it sold out and
                   when the order backlog was drained

and, opt-in (``--scenarios shards`` or ``--shards 1,3``):

- ``shards<N>``    a sale with ``buckets: N`` on a local Redis Cluster of N
                   primaries, admitted by ``seckill serve --role gateway``;
                   each primary's CPU per admission
                   (:mod:`~loadtest.bench.shards`)

at every connection count C. sold_out, rate_limited and mixed_spike share
one gateway; every admit run gets a fresh one, since the orders it admits
faster than the sink writes them would load whatever ran next. Per run it
records, besides wrk's figures, RSS and CPU time of every process it started
(CPU µs per request by role: gateway worker, Valkey, wrk) and the CPU other
processes on the machine took meanwhile (``other_cores``: the noise). It
ends with one line per measurement:

    bench <scenario>-<P>p-c<C> rps=<n> p50_ms=<x> p99_ms=<y> ratio_to_bare=<r>

(``ratio_to_bare`` divides by ``bare`` at the same P and C, measured in the
same run), then a table, and writes every figure (errors, statuses, RSS and
CPU per process, the machine) to ``<out-dir>/bench-<UTC time>.json`` and
``<out-dir>/latest.json`` (default ``var/bench``), and a Markdown table for
docs/performance.md to ``<out-dir>/latest.md``.

``BENCH_DURATION`` (whole seconds, default 10) sets the measured time;
``BENCH_QUICK=1`` is a smoke run (1 s runs, 1 s warm-ups). Errors: socket
errors and timeouts always; for ``admit`` every non-2xx answer too (nothing
but 202 is expected); for the others wrk's non-2xx counter mixes the
expected 409/429 with any 5xx, so the harness also counts 5xx from the
gateway's ``/metrics`` when it has one, probes a few buys after each run and
compares the 202s wrk saw with the units the sale sold. wrk has no
``response()`` callback here on purpose: it makes wrk parse every answer in
Lua (about 10% fewer requests/s on the yardstick here, with wrk and the
server sharing the CPU).

Exit 0 when every measurement ran (problems found in the answers are listed
as warnings and in the JSON), 2 when ``wrk`` is missing or something it
started failed (one line on stderr). Everything it started is stopped, also
on Ctrl-C or SIGTERM.

The modules, in the order a run uses them:

- :mod:`~loadtest.bench.cli`: the flags and ``main()`` (``__main__`` runs it);
- :mod:`~loadtest.bench.servers`: the yardstick and the gateway, started
  through the launcher;
- :mod:`~loadtest.bench.scenarios`: the runner and the five scenarios;
- :mod:`~loadtest.bench.shards`: the opt-in shard scenario on local clusters;
- :mod:`~loadtest.bench.wrk`: one wrk run and its figures;
- :mod:`~loadtest.bench.sampling`: RSS and CPU time from /proc, by role;
- :mod:`~loadtest.bench.client`: buys, ``/metrics`` and the admin API;
- :mod:`~loadtest.bench.measurement`: one measurement and its §8 line;
- :mod:`~loadtest.bench.machine` and :mod:`~loadtest.bench.report`: what is
  printed and written at the end;
- :mod:`~loadtest.bench.console`: what it says on stderr, and ``BenchError``.
"""

from __future__ import annotations

from pathlib import Path

#: the checkout: the servers run there, and ``var/bench`` is below it.
ROOT = Path(__file__).resolve().parents[2]
