"""Facts about this repository and this machine that the deploy checks compare against: the
project version, which image each Dockerfile makes, what `cmake --install` installs, and what
Debian 12's apt knows."""

import os
import re
import subprocess
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"

# Image name (as compose.yaml and the manifests spell it, without tag) -> its Dockerfile.
IMAGES = {
    "conductor-server": DOCKER / "server.Dockerfile",
    "conductor-client-cpu": DOCKER / "client-cpu.Dockerfile",
    "conductor-client-gpu": DOCKER / "client-gpu.Dockerfile",
}


# The images whose stages are Debian 12, whose apt this machine has.
DEBIAN_IMAGES = ["conductor-server", "conductor-client-cpu"]


def build_dir():
    return Path(os.environ.get("CONDUCTOR_BUILD_DIR", ROOT / "build"))


def bin_dir():
    """Where the apps under test are: --bin-dir of scripts/check-deploy, else build/apps."""
    return Path(os.environ.get("CONDUCTOR_DEPLOY_BIN_DIR", build_dir() / "apps"))


def project_version():
    text = (ROOT / "CMakeLists.txt").read_text()
    return re.search(r"project\(\s*conductor\s+VERSION\s+([0-9.]+)", text).group(1)


def image_name(reference):
    """conductor-server:0.1.0 -> conductor-server; registry/x/conductor-server -> conductor-server."""
    return reference.rsplit("/", 1)[-1].split(":", 1)[0]


def image_tag(reference):
    last = reference.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


@cache
def apt_known(packages):
    """The subset of `packages` (a tuple) that apt's cache knows, as Debian 12 here. One call:
    apt-cache prints the records it finds and only complains about the others."""
    result = subprocess.run(["apt-cache", "show", "--no-all-versions", *packages],
                            capture_output=True, text=True)
    return {line.split(":", 1)[1].strip() for line in result.stdout.splitlines()
            if line.startswith("Package:")}


@cache
def apt_closure(packages):
    """`packages` (a tuple) and everything they depend on, recursively (Depends, Pre-Depends)."""
    result = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
         "--no-breaks", "--no-replaces", "--no-enhances", *packages],
        capture_output=True, text=True, check=True)
    names = set()
    for line in result.stdout.splitlines():
        line = line.strip()
        if line.startswith(("Depends:", "PreDepends:")):
            line = line.split(":", 1)[1].strip()
        names.add(line.strip("<>").split(":")[0])
    return names


def package_of(path):
    """The Debian package that holds `path`, via dpkg (resolving usrmerge's two spellings)."""
    real = os.path.realpath(path)
    for candidate in (str(path), real, "/usr" + real, real.removeprefix("/usr")):
        result = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.split(":", 1)[0]
    return None


def runtime_packages(binaries):
    """deploy/docker/runtime-packages on real binaries: the packages of their shared libraries."""
    result = subprocess.run([str(DOCKER / "runtime-packages"), *map(str, binaries)],
                            capture_output=True, text=True, check=True)
    return result.stdout.split()
