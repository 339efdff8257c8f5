# The authz ext_authz service, and the image deploy/kubernetes names (authz:0.1.0).
# Build: docker build -t authz:0.1.0 .    (push it to your registry for a cluster)
# Run:   docker run -v "$PWD/policies:/policies:ro" -p 9191:9191 authz:0.1.0
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# .dockerignore keeps the venv, tests and caches out of the build context.
COPY . /src
# [otel]: `--otlp-endpoint` (OpenTelemetry traces); without the flag it is never imported.
RUN pip install ".[otel]" && rm -rf /src

# Never run the service as root; it only reads the policies and listens on 9191.
RUN useradd --system --uid 10001 --no-create-home authz
USER 10001
WORKDIR /
EXPOSE 9191

ENTRYPOINT ["authz"]
CMD ["serve", "--policies", "/policies", "--listen", "0.0.0.0:9191"]
