# CosmoDM-Ops on the official Airflow image. No Docker engine runs on the development machines,
# so this file is reviewed by eye, not built in CI; keep it plain.
FROM apache/airflow:3.3.2-python3.11

USER root
# The Astromatic tools and CFITSIO's fpack/funpack from Debian, plus the SSH client and rsync
# used to reach compute sites.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      source-extractor scamp psfex swarp libcfitsio-bin openssh-client rsync \
 && rm -rf /var/lib/apt/lists/*

USER airflow
WORKDIR /opt/cosmodm
# Install from the committed lock (the same versions as `make test`): export it to a requirements
# file with hashes, then install the project itself without dependencies.
COPY --chown=airflow:root pyproject.toml uv.lock README.md ./
COPY --chown=airflow:root cosmodm_ops ./cosmodm_ops
RUN pip install --no-cache-dir uv \
 && uv export --frozen --all-extras --no-dev --no-emit-project -o /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && pip install --no-cache-dir --no-deps .
COPY --chown=airflow:root include ./include
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
ENV COSMODM_CONFIG_DIR=/opt/cosmodm/include/configs \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__LINEAGE__MAX_ASSETS_PER_COLLECTOR=20000
