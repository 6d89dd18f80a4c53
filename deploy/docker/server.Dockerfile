# Conductor server: serves the versions in its working folder to conductor-clients.
# Built from this repository's sources, with the repository root as the context:
#   docker build -f deploy/docker/server.Dockerfile -t conductor-server:0.1.0 .
# docs/deployment.md has the whole deployment; scripts/check-deploy runs this file's cmake
# lines, its package names and its commands against this repository without Docker.

# ---- build: compile and install the apps from source ------------------------------------
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libzmq3-dev cppzmq-dev libmsgpack-cxx-dev libtinyxml2-dev libarchive-dev libsodium-dev \
      libssl-dev libzstd-dev libcli11-dev libspdlog-dev nlohmann-json3-dev libcpp-httplib-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG JOBS=4
RUN cmake -S . -B /tmp/build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DCONDUCTOR_BUILD_PYTHON=OFF
RUN cmake --build /tmp/build --parallel "${JOBS}"
RUN cmake --install /tmp/build --prefix /opt/conductor --strip

# ---- runtime: the apps, their shared libraries, a non-root user ----------------------------
FROM debian:12-slim
ARG CONDUCTOR_VERSION=0.1.0
LABEL org.opencontainers.image.title="conductor-server" \
      org.opencontainers.image.version="${CONDUCTOR_VERSION}" \
      org.opencontainers.image.description="Conductor server: trains every version to its target number of models on conductor-clients"
# tini is PID 1: it forwards SIGTERM (the server stops cleanly) and reaps zombies.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libzmq5 libsodium23 libarchive13 libtinyxml2-9 libspdlog1.10 libfmt9 libssl3 libzstd1 \
      libcpp-httplib0.11 tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/conductor/bin/ /usr/local/bin/
COPY deploy/docker/conductor-entrypoint deploy/docker/conductor-keys /usr/local/bin/
# The bundled example versions, for `conductorctl add-version` from this image.
COPY examples/quickstart/ /usr/local/share/conductor/examples/quickstart/
COPY examples/digits-ensemble/ /usr/local/share/conductor/examples/digits-ensemble/
# Fails the image build when a shared library is missing.
RUN conductor-server --help >/dev/null && conductor-client --help >/dev/null \
 && conductorctl --help >/dev/null
# RUNTIMEENV=docker: the working folder is ./workdir, as in the original's images. The key
# folders exist so that fresh named volumes mounted there belong to the conductor user.
RUN groupadd --system --gid 10001 conductor \
 && useradd --system --uid 10001 --gid conductor --home-dir /conductor --shell /usr/sbin/nologin conductor \
 && mkdir -p /conductor/workdir /conductor/keys/server /conductor/keys/client /conductor/keys/operator \
 && chown -R conductor:conductor /conductor
ENV RUNTIMEENV=docker \
    CONDUCTOR_VERSION=${CONDUCTOR_VERSION}
WORKDIR /conductor
USER 10001:10001
VOLUME ["/conductor/workdir"]
# 8080: the ZeroMQ endpoint; 9090: the HTTP endpoint when started with --http 0.0.0.0:9090.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/conductor-entrypoint"]
CMD ["conductor-server"]
