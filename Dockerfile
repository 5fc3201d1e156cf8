# quantum-db service image. The build steps are the README's (and .ci/run's) install steps:
# torch==2.13.0 first, so nothing that depends on torch can pull another build in.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY backends ./backends
COPY quantum_db ./quantum_db
COPY quantum_ml ./quantum_ml
COPY migrations ./migrations
COPY examples ./examples

RUN python3 -m pip install torch==2.13.0 && python3 -m pip install -e ".[all]"

# Databases and checkpoints live on a volume, not in the image.
VOLUME ["/data"]
WORKDIR /data
CMD ["qdb", "demo"]
