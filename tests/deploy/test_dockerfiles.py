"""deploy/docker/*.Dockerfile and .dockerignore, checked against this repository and Debian 12's
apt without a Docker engine. Their cmake lines run in test_build_recipe.py."""

import pytest

from dockerfile_checks import copy_problems, program_problems, runtime_problems
from dockerfiles import DockerIgnore, context_files
from project import DEBIAN_IMAGES, IMAGES, ROOT, apt_known, project_version, runtime_packages

@pytest.mark.parametrize("image", IMAGES)
def test_copy_sources_are_in_the_build_context(dockerfiles, image):
    assert copy_problems(dockerfiles[image], DockerIgnore.of_context(ROOT), ROOT) == []


def test_the_context_leaves_out_build_folders_keys_and_git():
    ignore = DockerIgnore.of_context(ROOT)
    for path in ["build/apps/conductor-server", "build-asan/x.o", ".git/HEAD", ".venv/bin/python",
                 "deploy/k8s/keys/server/server.key", "some/where/client.key",
                 "examples/digits-ensemble/__pycache__/train.cpython-311.pyc"]:
        assert ignore.excludes(path), path
    for path in ["CMakeLists.txt", "libconductor/src/server.cpp", "apps/conductor-server/main.cpp",
                 "cmake/ConductorWarnings.cmake", "deploy/docker/conductor-entrypoint",
                 "examples/quickstart/train.py"]:
        assert not ignore.excludes(path), path
    sent = {str(p) for p in context_files(ROOT, ignore)}
    assert "CMakeLists.txt" in sent and not any(p.startswith(("build/", ".git/")) for p in sent)


@pytest.mark.parametrize("image", IMAGES)
def test_every_apt_package_exists_in_debian_12(dockerfiles, image):
    # The GPU image's stages are Ubuntu 24.04, whose universe has the same names for these
    # (its library packages, renamed there, are not listed but found by runtime-packages).
    packages = sorted({p for stage in dockerfiles[image].stages for p in stage.apt_packages()})
    assert packages, "no apt-get install found"
    assert sorted(set(packages) - apt_known(tuple(packages))) == []


def test_the_build_stages_are_the_same_in_every_dockerfile(dockerfiles):
    def recipe(dockerfile):
        stage = dockerfile.stage("build")
        assert stage is not None, f"{dockerfile.path}: no stage named build"
        return stage.apt_packages(), stage.workdir(), stage.cmake_commands()

    recipes = {image: recipe(d) for image, d in dockerfiles.items()}
    assert len({repr(r) for r in recipes.values()}) == 1, recipes
    assert len(recipes["conductor-server"][2]) == 3  # configure, build, install


@pytest.mark.parametrize("image", DEBIAN_IMAGES)
def test_the_runtime_stage_installs_the_shared_libraries_of_the_apps(dockerfiles, apps, image):
    linked = runtime_packages([apps / "conductor-server", apps / "conductor-client", apps / "conductorctl"])
    assert "libzmq5" in linked  # the helper reads the binaries' NEEDED entries
    assert runtime_problems(dockerfiles[image], linked) == []


def test_the_gpu_image_derives_its_runtime_packages_from_its_own_build(dockerfiles):
    gpu = dockerfiles["conductor-client-gpu"]
    derived = [i.text for i in gpu.stage("build").all("RUN") if "runtime-packages" in i.text]
    assert derived == ["deploy/docker/runtime-packages /opt/conductor/bin/* >/opt/conductor/runtime-packages"]
    assert any("/tmp/runtime-packages" in i.text and "apt-get install" in i.text
               for i in gpu.final.all("RUN"))
    assert gpu.final.base.startswith("nvidia/cuda:") and gpu.final.base.endswith("-ubuntu24.04")
    assert gpu.stage("build").base == "ubuntu:24.04"  # the very release of the CUDA image


@pytest.mark.parametrize("image", IMAGES)
def test_every_program_the_image_runs_is_in_it(dockerfiles, installed, image):
    assert program_problems(dockerfiles[image], installed) == []


@pytest.mark.parametrize("image", IMAGES)
def test_scripts_copied_into_the_image_are_executable(dockerfiles, image):
    copied = [ROOT / source for copy in dockerfiles[image].final.copies()
              if copy.from_stage is None and copy.destination == "/usr/local/bin/" for source in copy.sources]
    assert copied and all(path.stat().st_mode & 0o111 for path in copied)  # COPY keeps the mode


@pytest.mark.parametrize("image", IMAGES)
def test_images_run_as_a_numeric_non_root_user(dockerfiles, image):
    user = dockerfiles[image].final.user()
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0, user  # runAsNonRoot needs numbers
    assert f"--uid {uid}" in " ".join(i.text for i in dockerfiles[image].final.all("RUN"))


@pytest.mark.parametrize("image, processing_unit", [
    ("conductor-server", None), ("conductor-client-cpu", "cpu"), ("conductor-client-gpu", "gpu")])
def test_images_keep_the_originals_environment(dockerfiles, image, processing_unit):
    final = dockerfiles[image].final
    env = final.env()
    assert env["RUNTIMEENV"] == "docker"  # ./workdir and ./client-workdir, as the original's images
    assert env.get("CONDUCTOR_TYPE") == processing_unit
    assert env["CONDUCTOR_VERSION"] == project_version() == final.arg_default("CONDUCTOR_VERSION")
    assert final.workdir() == "/conductor"
