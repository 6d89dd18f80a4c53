# Conductor CPU client: takes work items from a conductor-server and runs them, with Debian's
# Python 3, NumPy and scikit-learn for the training scripts (the bundled examples need them).
# Built from this repository's sources, with the repository root as the context:
#   docker build -f deploy/docker/client-cpu.Dockerfile -t conductor-client-cpu:0.1.0 .
# Run with CONDUCTOR_HOST=host:port (docs/deployment.md); scripts/check-deploy checks this file.

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

# ---- runtime: the apps, their shared libraries, Python for the jobs, a non-root user -------
FROM debian:12-slim
ARG CONDUCTOR_VERSION=0.1.0
LABEL org.opencontainers.image.title="conductor-client-cpu" \
      org.opencontainers.image.version="${CONDUCTOR_VERSION}" \
      org.opencontainers.image.description="Conductor CPU client: runs training and prediction items for a conductor-server"
# tini is PID 1: it forwards SIGTERM to the client and reaps what the jobs leave behind.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libzmq5 libsodium23 libarchive13 libtinyxml2-9 libspdlog1.10 libfmt9 libssl3 libzstd1 \
      libcpp-httplib0.11 tini \
      python3 python3-numpy python3-sklearn \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/conductor/bin/ /usr/local/bin/
COPY deploy/docker/conductor-entrypoint /usr/local/bin/
# Fails the image build when a shared library is missing.
RUN conductor-client --help >/dev/null && conductorctl --help >/dev/null
# RUNTIMEENV=docker: the client's folder is ./client-workdir, as in the original's images.
RUN groupadd --system --gid 10001 conductor \
 && useradd --system --uid 10001 --gid conductor --home-dir /conductor --shell /usr/sbin/nologin conductor \
 && mkdir -p /conductor/client-workdir /conductor/keys/client \
 && chown -R conductor:conductor /conductor
ENV RUNTIMEENV=docker \
    CONDUCTOR_TYPE=cpu \
    CONDUCTOR_OS=debian \
    CONDUCTOR_VERSION=${CONDUCTOR_VERSION}
WORKDIR /conductor
USER 10001:10001
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/conductor-entrypoint"]
CMD ["conductor-client"]
