# One image for every role; the engines extra is installed for processors (ENGINES=1).
FROM python:3.11-slim
ARG ENGINES=1
RUN apt-get update && apt-get install -y --no-install-recommends espeak-ng && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY events events
COPY commands commands
COPY projections projections
COPY processors processors
COPY api api
COPY infra infra
RUN if [ "$ENGINES" = "1" ]; then pip install --no-cache-dir '.[engines]'; else pip install --no-cache-dir .; fi
ENV AIORCH_DATA_DIR=/var/lib/aiorch
ENTRYPOINT ["aiorch"]
