"""Fixtures of the deploy checks (run by scripts/check-deploy; ctest's `deploy` test)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from compose import load_compose  # noqa: E402
from containers import LocalHost  # noqa: E402
from dockerfiles import parse_dockerfile  # noqa: E402
from kubernetes import load_kustomization  # noqa: E402
from project import DEPLOY, DOCKER, IMAGES, bin_dir, build_dir  # noqa: E402


@pytest.fixture(scope="session")
def apps():
    """The apps under test; fails (no skip) when they are not built."""
    folder = bin_dir()
    for name in ("conductor-server", "conductor-client", "conductorctl"):
        assert (folder / name).is_file(), f"{folder / name} is not built (scripts/check-deploy --bin-dir)"
    return folder


@pytest.fixture(scope="session")
def dockerfiles():
    return {name: parse_dockerfile(path) for name, path in IMAGES.items()}


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """File names `cmake --install` puts into bin/ from this build."""
    prefix = tmp_path_factory.mktemp("install")
    subprocess.run(["cmake", "--install", str(build_dir()), "--prefix", str(prefix)],
                   check=True, capture_output=True)
    return {p.name for p in (prefix / "bin").iterdir()}


def make_keys(apps, folder):
    """deploy/docker/conductor-keys FOLDER with the built apps on PATH."""
    result = subprocess.run([str(DOCKER / "conductor-keys"), str(folder)], capture_output=True,
                            text=True, env={"PATH": f"{apps}:/usr/bin:/bin"}, timeout=60)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture(scope="session")
def keys(apps, tmp_path_factory):
    """What conductor-keys makes: role -> the names of the files in its folder."""
    folder = make_keys(apps, tmp_path_factory.mktemp("keys") / "keys")
    return {role.name: {f.name for f in role.iterdir()} for role in folder.iterdir()}


@pytest.fixture(scope="session")
def kustomization(apps, tmp_path_factory):
    """deploy/k8s as an operator has it before `kubectl apply -k`: a copy with keys/ made by
    conductor-keys, as docs/deployment.md says."""
    folder = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(DEPLOY / "k8s", folder, ignore=shutil.ignore_patterns("keys"))
    make_keys(apps, folder / "keys")
    return load_kustomization(folder)


@pytest.fixture(scope="session")
def compose():
    return load_compose(DEPLOY / "compose.yaml")


@pytest.fixture
def host(tmp_path):
    local = LocalHost(tmp_path)
    yield local
    local.kill_all()
