# One image for every service: the command picks which (lineguard-<service>).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY libs libs
COPY services services
COPY proto proto
RUN pip install --no-cache-dir . && useradd --system --uid 10001 lineguard
USER lineguard
ENV LINEGUARD_CONFIG=/etc/lineguard/line.yaml
CMD ["lineguard", "--help"]
