# syntax=docker/dockerfile:1
#
# seckill gateway image.
#
#   docker build -t seckill .
#   docker run --rm -p 8080:8080 -e SECKILL_REDIS_URL=redis://redis-host:6379/0 seckill
#
# Configured only through SECKILL_* variables (README, "Configuration"); any
# `seckill serve` flag can also be appended: `docker run … seckill serve --processes 4`.
# Without SECKILL_REDIS_URL the gateway starts its embedded Valkey with its AOF
# under /data. Shutdown drains for up to ~20 s: stop with `docker stop -t 30`
# (docker-compose.yml sets stop_grace_period).

# ---- builder: wheels of the runtime dependencies, then of the project ----
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so this layer stays cached
# while only the code changes. Binary wheels only: there is no compiler here,
# and every runtime dependency ships manylinux wheels for CPython 3.11.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > requirements.txt \
    && pip wheel --no-cache-dir --only-binary=:all: --wheel-dir /wheels -r requirements.txt

# The project itself. pyproject's package-dir mapping puts the top-level lua/
# into the wheel as seckill/lua/*.lua, so lua/ must be in the context.
COPY README.md ./
COPY lua/ lua/
COPY seckill/ seckill/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- runtime: the wheels above and nothing else ----
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="seckill" \
      org.opencontainers.image.description="A flash-sale gateway: sells exactly the stock, answers everyone fast, loses no order." \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --system --gid 10001 seckill \
    && useradd --system --uid 10001 --gid seckill --create-home --home-dir /home/seckill \
       --shell /usr/sbin/nologin seckill \
    && mkdir /data \
    && chown seckill:seckill /data

# The wheels are bind-mounted from the builder, not copied: they never become
# a layer of this image. --no-index: nothing is fetched here.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl

ENV SECKILL_HOST=0.0.0.0 \
    SECKILL_PORT=8080 \
    SECKILL_DATA_DIR=/data

WORKDIR /home/seckill
USER 10001:10001
# The SQLite sink (default /data/orders.db) and, without SECKILL_REDIS_URL,
# the embedded Valkey's AOF (/data/redis/).
VOLUME /data
EXPOSE 8080

# /healthz is 200 while the process runs. slim has no curl: python's urllib
# (an error or a non-2xx answer raises, and python exits 1 = unhealthy). It
# follows SECKILL_PORT when that is changed at run time.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SECKILL_PORT', '8080') + '/healthz', timeout=2)"]

# SIGTERM: stop accepting, answer what is in flight, hand queued orders back
# to the stream, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["seckill"]
CMD ["serve"]
