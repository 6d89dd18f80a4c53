# Conductor GPU client: the CPU client's apps on NVIDIA's CUDA runtime image (Ubuntu 24.04),
# with CONDUCTOR_TYPE=gpu. Needs the NVIDIA container toolkit on the host (docker run --gpus,
# or nvidia.com/gpu in Kubernetes). Built with the repository root as the context:
#   docker build -f deploy/docker/client-gpu.Dockerfile -t conductor-client-gpu:0.1.0 .
#
# The build stage is plain Ubuntu of the same release as the CUDA image, so the apps link the
# very libraries the runtime stage installs. Ubuntu 24.04 (universe) has every build package
# under Debian's name; its msgpack-cxx is 6.1 (handled in CMakeLists.txt) and its library
# packages carry other names (libarchive13t64, libtinyxml2-10, libspdlog1.12), so the runtime
# stage installs what deploy/docker/runtime-packages finds the binaries linked against.
# Another CUDA release: --build-arg CUDA_IMAGE=nvidia/cuda:<version>-runtime-ubuntu24.04
# (or a -cudnn-runtime- image for Keras/TensorFlow jobs).
ARG UBUNTU_IMAGE=ubuntu:24.04
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04

# ---- build: compile and install the apps from source ------------------------------------
FROM ${UBUNTU_IMAGE} AS build
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
RUN deploy/docker/runtime-packages /opt/conductor/bin/* >/opt/conductor/runtime-packages

# ---- runtime: CUDA, the apps, their shared libraries, Python for the jobs -----------------
FROM ${CUDA_IMAGE}
ARG CONDUCTOR_VERSION=0.1.0
LABEL org.opencontainers.image.title="conductor-client-gpu" \
      org.opencontainers.image.version="${CONDUCTOR_VERSION}" \
      org.opencontainers.image.description="Conductor GPU client: runs training and prediction items for a conductor-server on NVIDIA GPUs"
COPY --from=build /opt/conductor/runtime-packages /tmp/runtime-packages
# tini is PID 1: it forwards SIGTERM to the client and reaps what the jobs leave behind.
RUN apt-get update \
 && xargs -a /tmp/runtime-packages env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends tini python3 python3-numpy python3-sklearn \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages
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
    CONDUCTOR_TYPE=gpu \
    CONDUCTOR_OS=ubuntu \
    CONDUCTOR_VERSION=${CONDUCTOR_VERSION}
WORKDIR /conductor
USER 10001:10001
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/conductor-entrypoint"]
CMD ["conductor-client"]
