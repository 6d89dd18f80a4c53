"""Runs the containers that deploy/ describes as plain local processes, so that their real
commands, environment, entry point and key files are exercised without Docker or a cluster.

Each container gets a folder standing for its file system root. The image's WORKDIR, the
folders its Dockerfile copies from the repository, and every mount (a named volume, a Secret,
a ConfigMap, an emptyDir, a claim) appear in it, mounts as symlinks to shared host folders;
absolute container paths in argv and environment are mapped into it. Binaries come from the
build (the apps) and deploy/docker (the scripts); /usr/bin/tini and python3 from the host.
"""

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from project import DOCKER, ROOT, bin_dir

# Everything a container path may start with that lives in the container's own folder.
INSTALLED_BIN = "/usr/local/bin/"


class Container:
    def __init__(self, name, root, dockerfile, argv, env, log):
        self.name, self.root, self.dockerfile = name, root, dockerfile
        self.argv, self.env, self.log = argv, env, log
        self.process = None

    def path(self, container_path):
        """The host path that stands for `container_path` inside this container."""
        return self.root / container_path.lstrip("/")

    def start(self):
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=self.path(self.dockerfile.final.workdir()),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        return self

    def run(self, timeout=60):
        """Runs to the end: (exit code, output)."""
        self.start()
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name}: still running after {timeout} s: {self.output()}")
        return code, self.output()

    def stop(self, timeout=30):
        """SIGTERM, as `docker stop` and the kubelet send it; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name}: did not stop within {timeout} s of SIGTERM")

    def kill(self):
        """SIGKILL to tini and everything below it (tini puts the app in a process group of its
        own, so the group of the process started here is not enough)."""
        if self.process and self.process.poll() is None:
            for pid in [self.process.pid, *_descendants(self.process.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.wait()

    def output(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _descendants(pid):
    """Every process below `pid`, from /proc."""
    children = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


class LocalHost:
    """Makes Containers under `folder`; shared volumes live in folder/volumes."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.containers = []

    def volume(self, name):
        path = self.folder / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def container(self, name, dockerfile, mounts, env, args=None, entrypoint=None):
        """A container of the image `dockerfile` with `mounts` (container path -> host folder),
        `env` on top of the image's ENV, and `args` replacing its CMD (as compose's command and
        a pod's args do), or `entrypoint` replacing its ENTRYPOINT."""
        root = self.folder / "containers" / name
        shutil.rmtree(root, ignore_errors=True)
        final = dockerfile.final
        (root / final.workdir().lstrip("/")).mkdir(parents=True)
        for copy in final.copies():
            if copy.from_stage is None and not copy.destination.startswith(INSTALLED_BIN):
                for source in copy.sources:
                    self._link(root, copy.destination, ROOT / source)
        for target, host_folder in mounts.items():
            self._link(root, target, Path(host_folder))
        known = [final.workdir(), *mounts, *(c.destination for c in final.copies()
                                              if not c.destination.startswith(INSTALLED_BIN))]

        def localize(word):
            word = str(word)
            if word.startswith(str(self.folder) + "/"):
                return word  # a host path of the test's own (an endpoint file), even under /tmp
            if word.startswith(INSTALLED_BIN):
                return word[len(INSTALLED_BIN):]  # found on PATH below
            for prefix in sorted(known, key=len, reverse=True):
                prefix = prefix.rstrip("/")
                if word == prefix or word.startswith(prefix + "/"):
                    return str(root / word.lstrip("/"))
            return word

        image_entrypoint = final.last("ENTRYPOINT").exec_form()
        cmd = final.last("CMD").exec_form()
        argv = [localize(w) for w in (entrypoint or image_entrypoint) + (cmd if args is None else args)]
        home = str(root / final.workdir().lstrip("/"))  # the conductor user's home is WORKDIR
        # Here tini is not PID 1, as in a container; as a subreaper it still reaps and forwards.
        environment = {"PATH": f"{bin_dir()}:{DOCKER}:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
                       "TINI_SUBREAPER": "1"}
        environment.update({k: localize(v) for k, v in {**final.env(), **env}.items()})
        container = Container(name, root, dockerfile, argv, environment,
                              self.folder / "logs" / f"{name}.log")
        self.containers.append(container)
        return container

    @staticmethod
    def _link(root, container_path, host_path):
        link = root / container_path.rstrip("/").lstrip("/")
        if container_path.endswith("/") and host_path.is_file():
            link = link / host_path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(host_path.resolve(), target_is_directory=host_path.is_dir())

    def kill_all(self):
        for container in self.containers:
            container.kill()


def wait_for(condition, timeout, what):
    """Polls `condition` until it returns something true; fails naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def loopback_http(args, endpoint_file):
    """`args` of a conductor-server with its --http address (0.0.0.0:PORT in deploy/) moved to
    a free port of 127.0.0.1, which it writes to `endpoint_file`: the one departure a local run
    needs, as --bind's. Fails when the args have no --http to move."""
    args = [str(a) for a in args]
    for i, word in enumerate(args):
        if word == "--http" and i + 1 < len(args):
            return args[:i + 1] + ["127.0.0.1:0"] + args[i + 2:] + ["--http-endpoint-file", str(endpoint_file)]
        if word.startswith("--http="):
            return args[:i] + ["--http=127.0.0.1:0"] + args[i + 1:] + ["--http-endpoint-file", str(endpoint_file)]
    raise AssertionError(f"conductor-server without --http: {args}")


def http_get(url, timeout=10):
    """(status, body) of a GET, as a kubelet probe or Prometheus scrape makes it."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
