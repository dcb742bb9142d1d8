# One image for the API, the worker and the migrate step; docker-compose.yml picks the script to run.
# The scripts under bin/ are the same ones `make run` and the test suite start outside Docker.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /app
COPY pyproject.toml README.md alembic.ini openapi.yaml ./
COPY trainyard ./trainyard
COPY service ./service
COPY workers ./workers
COPY bin ./bin
COPY migrations ./migrations
# Editable, so the code finds alembic.ini, migrations/ and openapi.yaml beside it as it does in a checkout.
# TENSORFLOW_GPU=1 (docker-compose.worker.yml) swaps the CPU-only TensorFlow for the CUDA build.
ARG TENSORFLOW_GPU=""
RUN pip install --no-cache-dir -e . \
    && if [ -n "$TENSORFLOW_GPU" ]; then \
         pip uninstall -y tensorflow-cpu && pip install --no-cache-dir "tensorflow[and-cuda]>=2.18"; \
       fi \
    && useradd --create-home trainyard && mkdir -p var && chown trainyard var
USER trainyard
EXPOSE 8000
CMD ["bin/api"]
