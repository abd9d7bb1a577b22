# docqa web and worker image (CPU). Build: docker build -t docqa .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DOCQA_DATA_DIR=/data
RUN apt-get update && apt-get install -y --no-install-recommends libmagic1 poppler-utils tesseract-ocr tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml ./
COPY docqa ./docqa
COPY ingest ./ingest
COPY inference ./inference
# CPU torch first, so no CUDA build is pulled in by sentence-transformers.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir . \
    && pip install --no-cache-dir --no-deps unstructured-inference==1.6.14
COPY manage.py ./
COPY templates ./templates
RUN useradd --create-home docqa && mkdir -p /data && chown docqa /data
USER docqa
EXPOSE 8000
CMD ["gunicorn", "docqa.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4", "--timeout", "600"]
