# batchmask: run the batch engine in a container.
#   docker build -t batchmask .
#   docker run --rm -v "$PWD/incoming:/in:ro" -v "$PWD/out:/out" batchmask run /in /out
# As a Dask worker (inputs and OUTPUT mounted at the same paths as on the driver):
#   docker run --rm --network host -v /srv/photos:/srv/photos -v /srv/out:/srv/out \
#       --entrypoint dask batchmask worker tcp://scheduler-host:8786 --nthreads 1
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY batchmask ./batchmask
COPY data/models ./data/models
RUN pip install ".[dask,remote]" && pip check && rm -rf /src

RUN useradd --create-home --uid 10001 batchmask && mkdir -p /in /out && chown batchmask /out
USER batchmask
WORKDIR /home/batchmask
VOLUME ["/in", "/out"]
ENTRYPOINT ["batchmask"]
CMD ["--help"]
