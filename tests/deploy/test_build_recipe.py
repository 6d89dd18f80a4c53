"""The Dockerfiles' build stage, run on this machine: its cmake configure, build and install
lines (the same in every Dockerfile, test_dockerfiles.py checks) on a copy of the build context
as .dockerignore lets it through, with the stage's paths mapped into build/docker-recipe/.
Then: the apps it installs run, the runtime stages' lists hold their libraries, and every
package the configure step found is one the build stage installs.

Minutes on a cold ccache, so not part of ctest's `deploy` test: scripts/test runs it through
`scripts/check-deploy --build-recipe`."""

import os
import re
import shutil
import subprocess
from pathlib import Path

from dockerfiles import DockerIgnore, context_files
from dockerfile_checks import runtime_problems
from project import DEBIAN_IMAGES, ROOT, apt_closure, build_dir, package_of, runtime_packages

APPS = ("conductor-server", "conductor-client", "conductorctl")


def copy_context(target):
    """The files Docker would send as the build context, modification times kept so that a
    second run rebuilds nothing."""
    shutil.rmtree(target, ignore_errors=True)
    for relative in context_files(ROOT, DockerIgnore.of_context(ROOT)):
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, destination, follow_symlinks=False)


def run_in_stage(command, stage, mapping, env):
    """A RUN line of `stage` with its container paths mapped, in its WORKDIR."""
    paths = re.findall(r"(?:^|\s)(/[^\s\"]*)", command)
    unmapped = [p for p in paths if not any(p == c or p.startswith(c + "/") for c in mapping)]
    assert unmapped == [], f"container paths this check does not map: {unmapped}"
    for container_path, host_path in mapping.items():
        command = command.replace(container_path, str(host_path))
    result = subprocess.run(["bash", "-c", command], cwd=mapping[stage.workdir()], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def configured_packages(cache_file, work):
    """Packages holding what the configure step found: the files named in CMakeCache.txt and
    the config files of the packages it loaded (*_DIR)."""
    packages = {}
    for line in cache_file.read_text().splitlines():
        match = re.match(r"([\w.+-]+):(FILEPATH|PATH)=(/.+)$", line)
        if not match or match.group(3).startswith(str(work)):
            continue
        name, kind, value = match.groups()
        path = Path(value)
        if kind == "FILEPATH" and path.is_file():
            found = [path]
        elif name.endswith("_DIR") and path.is_dir():
            found = [f for f in path.iterdir() if re.search(r"(Config|-config)\.cmake$", f.name)][:1]
        else:
            continue
        for file in found:
            packages[package_of(file)] = f"{name}={value}"
    return packages


def test_the_build_stage_builds_and_installs_the_apps(dockerfiles):
    stage = dockerfiles["conductor-server"].stage("build")
    work = build_dir() / "docker-recipe"
    context, prefix = work / "context", work / "prefix"
    copy_context(context)
    shutil.rmtree(prefix, ignore_errors=True)
    mapping = {stage.workdir(): context, "/tmp/build": work / "build", "/opt/conductor": prefix}
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
           "JOBS": os.environ.get("CONDUCTOR_JOBS", "2")}  # the stage's ARG, as Docker passes it
    if shutil.which("ccache"):  # the machine's cache, as configured for it
        env.update({k: v for k, v in os.environ.items() if k.startswith("CCACHE_")})
        # Paths relative to the work folder: a clone elsewhere (CI's) hits the same entries.
        env.update({"CMAKE_CXX_COMPILER_LAUNCHER": "ccache", "CCACHE_BASEDIR": str(work)})
    for command in stage.cmake_commands():
        run_in_stage(command, stage, mapping, env)

    for app in APPS:
        result = subprocess.run([str(prefix / "bin" / app), "--help"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    for image, dockerfile in dockerfiles.items():
        for copy in dockerfile.final.copies():
            if copy.from_stage == "build" and "runtime-packages" not in copy.sources[0]:
                assert (prefix / copy.sources[0].removeprefix("/opt/conductor/")).exists(), image

    # The GPU image's build stage lists the runtime packages the same way.
    gpu_build = dockerfiles["conductor-client-gpu"].stage("build")
    [derive] = [i.text for i in gpu_build.all("RUN") if "runtime-packages" in i.text]
    run_in_stage(derive, gpu_build, mapping, env)
    derived = (prefix / "runtime-packages").read_text().split()
    assert derived == runtime_packages([prefix / "bin" / app for app in APPS])
    for image in DEBIAN_IMAGES:
        assert runtime_problems(dockerfiles[image], derived) == [], image

    # Every package the configure step used is installed by the build stage (or comes with it).
    used = configured_packages(work / "build" / "CMakeCache.txt", work)
    assert "libzmq3-dev" in used or "cppzmq-dev" in used  # it did read the dependencies
    covered = apt_closure(tuple(sorted(stage.apt_packages())))
    assert {p: why for p, why in used.items() if p not in covered} == {}
