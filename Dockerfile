# quantum-db service image. The install step is CI's (.ci/run) without the dev tools:
# torch==2.13.0 first, on its own, so nothing that depends on torch can pull another build
# in; then the project (tests/test_project.py keeps the steps in step with .ci/run).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY backends ./backends
COPY quantum_db ./quantum_db
COPY quantum_ml ./quantum_ml
COPY examples ./examples

RUN python3 -m pip install torch==2.13.0 && python3 -m pip install -e ".[all]"

# The service never runs as root. /app stays root-owned (read-only to the service); the
# registry, its WAL files and checkpoints go to /data, which the user owns. The directory
# is created and chowned before VOLUME so that a new named volume starts with that owner.
RUN groupadd --gid 10001 qdb \
    && useradd --uid 10001 --gid qdb --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin qdb \
    && mkdir -p /data \
    && chown qdb:qdb /data

# The simulator's numba kernels are compiled once here, into a cache the service user
# owns (numba only uses a cache directory it can write to), so a container's first run
# loads them in under a second instead of compiling them.
ENV NUMBA_CACHE_DIR=/opt/numba-cache
RUN python3 -c "from backends.simulator.kernels import warm; print(f'kernels: {warm():.1f} s')" \
    && chown -R qdb:qdb /opt/numba-cache
VOLUME ["/data"]

# Commands that write (qdb init, qdb demo) create the database here; read-only ones
# (qdb health, qdb datasets) refuse a missing one instead of creating it.
ENV QDB_DATABASE_URL=sqlite+aiosqlite:////data/quantum_db.sqlite

USER qdb:qdb
WORKDIR /data

# Healthy once the registry at QDB_DATABASE_URL is usable (qdb health exits 0); the start
# period covers the first command creating the schema.
# `qdb ui --host 0.0.0.0` serves the read-only dashboard of every run on this port (it
# binds 127.0.0.1 unless told otherwise, which a container's port mapping cannot reach).
EXPOSE 5000

HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["qdb", "health"]

CMD ["qdb", "demo"]
