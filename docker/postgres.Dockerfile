# PostgreSQL 15 from Debian bookworm, on the same base as the personalize image, so the deployment needs no
# image registry. Same contract as the official postgres image: POSTGRES_USER, POSTGRES_PASSWORD and
# POSTGRES_DB make the role and database on first start, then /docker-entrypoint-initdb.d/*.sql runs.
ARG BASE_IMAGE=personalize-base:bookworm
FROM ${BASE_IMAGE}
# A fixed uid/gid (999, as the official image has) for the data volume's owner, made before the package
# would pick one; Debian's postinst would make a cluster of its own: the entrypoint makes the one on the
# data volume.
RUN groupadd --system --gid 999 postgres \
 && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql --shell /bin/bash postgres \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-common tini \
 && sed -ri 's/^#?\s*create_main_cluster.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /docker-entrypoint-initdb.d /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
 && chmod 700 /var/lib/postgresql/data
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
COPY docker/postgres-entrypoint /usr/local/bin/postgres-entrypoint
COPY docker/initdb/ /docker-entrypoint-initdb.d/
USER 999:999
EXPOSE 5432
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["tini", "--", "postgres-entrypoint"]
CMD ["postgres"]
