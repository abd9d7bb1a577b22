# The web and worker image (CPU). Embedding runs on the CPU here; for GPU workers see
# "Embedding on GPU workers" in the README (the same image built FROM a CUDA base, TORCH_INDEX=cu128).
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX=cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DOCQA_DATA_DIR=/data

# Debian's tesseract reads scanned PDF pages (without it they are recorded as needing OCR).
RUN apt-get update \
 && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng libmagic1 poppler-utils \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY docqa ./docqa
COPY ingest ./ingest
COPY inference ./inference
COPY templates ./templates
COPY manage.py ./
RUN pip install torch==2.13.0 --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}" \
 && pip install . \
 && pip install --no-deps unstructured-inference==1.6.14 \
 && DOCQA_SECRET_KEY=build-only-not-a-secret python manage.py collectstatic --no-input -v0

RUN useradd --uid 10001 --home-dir /data --create-home docqa && mkdir -p /data && chown docqa /data
USER docqa
VOLUME ["/data"]
EXPOSE 8000
CMD ["gunicorn", "docqa.wsgi", "--bind", "0.0.0.0:8000", "--worker-class", "gthread", "--workers", "2", "--threads", "16"]
