FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PORT=3010

WORKDIR /app
COPY . .
RUN pip install . && useradd --system --home-dir /app mq
USER mq

EXPOSE 3010
CMD ["mq", "api"]
