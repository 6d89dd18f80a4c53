"""deploy/docker/*.Dockerfile and .dockerignore, checked against this repository and Debian 12's
apt without a Docker engine. Their cmake lines run in test_build_recipe.py."""

import re

import pytest

from dockerfiles import DockerIgnore, context_files
from project import IMAGES, ROOT, apt_closure, apt_known, package_of, project_version, runtime_packages

DEBIAN_IMAGES = ["conductor-server", "conductor-client-cpu"]


def runtime_problems(dockerfile, linked_packages):
    """Packages of the apps' shared libraries that the final stage does not install (itself,
    as a dependency, or with the base image, approximated by apt's own closure)."""
    listed = tuple(sorted(set(dockerfile.final.apt_packages()) | {"apt"}))
    covered = apt_closure(listed)
    return sorted(set(linked_packages) - covered)


def copy_problems(dockerfile, ignore, context):
    problems = []
    names = [s.name for s in dockerfile.stages[:-1]]
    for stage in dockerfile.stages:
        for copy in stage.copies():
            if copy.from_stage is not None:
                if copy.from_stage not in names[:stage.index]:
                    problems.append(f"line {copy.line}: --from={copy.from_stage} is no earlier stage")
                continue
            for source in copy.sources:
                if source == ".":
                    continue
                path = context / source
                if not path.exists():
                    problems.append(f"line {copy.line}: {source} does not exist in the context")
                elif ignore.excludes(source.rstrip("/")):
                    problems.append(f"line {copy.line}: {source} is excluded by .dockerignore")
                elif path.is_dir() and not any(not ignore.excludes(f.relative_to(context))
                                               for f in path.rglob("*") if f.is_file()):
                    problems.append(f"line {copy.line}: {source} is empty once .dockerignore applies")
    return problems


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


def program_problems(dockerfile, installed):
    """Programs in ENTRYPOINT and CMD, and the apps the final stage runs, that the image lacks:
    /usr/bin ones must come from a package the final stage installs, the others be in
    /usr/local/bin."""
    final = dockerfile.final
    packages = set(final.apt_packages())
    local_bin = dockerfile.local_bin(installed)
    programs = [w for w in dockerfile.command_line() if w != "--"]
    programs += [line.split()[0] for i in final.all("RUN") for line in i.text.split("&&")
                 if line.split() and line.split()[0].startswith("conductor")]
    problems = []
    for program in programs:
        if program.startswith("/usr/bin/"):
            owner = package_of(program)
            if owner not in packages:
                problems.append(f"{program}: its package ({owner}) is not installed by the final stage")
        elif program.removeprefix("/usr/local/bin/") not in local_bin:
            problems.append(f"{program}: not in the image's /usr/local/bin")
    return problems


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
