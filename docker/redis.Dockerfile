# Redis 7 from Debian bookworm, on the same base as the personalize image: the Celery broker.
ARG BASE_IMAGE=personalize-base:bookworm
FROM ${BASE_IMAGE}
# A fixed uid/gid (998), made before the package would pick one.
RUN groupadd --system --gid 998 redis \
 && useradd --system --uid 998 --gid redis --home-dir /var/lib/redis --shell /usr/sbin/nologin redis \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server tini \
 && rm -rf /var/lib/apt/lists/*
USER 998:998
WORKDIR /var/lib/redis
EXPOSE 6379
ENTRYPOINT ["tini", "--"]
# Reachable from the other containers on the compose network only (compose.yaml publishes no port).
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
