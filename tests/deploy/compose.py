"""Reads deploy/compose.yaml (YAML merge keys resolved, as Compose does) and checks it without
a Docker engine: services build from Dockerfiles that exist, mount volumes that are declared,
depend on services that exist, and name files inside the volumes they mount.
Each check returns a list of problems (empty: fine)."""

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from project import image_tag


@dataclass
class Compose:
    path: Path
    spec: dict

    @property
    def services(self):
        return self.spec.get("services", {})

    def build_dockerfile(self, service):
        """The Dockerfile a service builds from, or None when it only names an image."""
        build = self.services[service].get("build")
        if not build:
            return None
        context = self.path.parent / (build if isinstance(build, str) else build.get("context", "."))
        name = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        return (context / name).resolve()

    def build_args(self, service):
        """The build arguments of a service (`args` as a mapping or a KEY=VALUE list)."""
        build = self.services[service].get("build")
        args = build.get("args", {}) if isinstance(build, dict) else {}
        if isinstance(args, list):
            args = dict(item.split("=", 1) if "=" in item else (item, None) for item in args)
        return {k: None if v is None else str(v) for k, v in args.items()}

    def mounts(self, service):
        """(volume, target, read_only) per named-volume mount of a service."""
        result = []
        for entry in self.services[service].get("volumes", []):
            if isinstance(entry, dict):
                result.append((entry.get("source"), entry["target"], entry.get("read_only", False)))
            else:
                parts = entry.split(":")
                result.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
        return result

    def environment(self, service):
        env = self.services[service].get("environment", {})
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        return {k: str(v) for k, v in env.items()}


_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?-)([^}]*))?\}|\$(\w+)")


def interpolate(value, variables):
    """`value` with ${VAR}, ${VAR:-default}, ${VAR-default} and $VAR replaced from `variables`
    (the shell environment `docker compose` runs in) as Compose does; $$ is a literal $."""
    def replace(match):
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        given = variables.get(name)
        if match.group(2) == ":-" and not given:
            return match.group(3)
        if match.group(2) == "-" and given is None:
            return match.group(3)
        return given or ""
    return _VARIABLE.sub(replace, str(value))


def check_command_variables(compose):
    """A ${VAR} in a service's command has a default: unset, Compose would pass an empty word."""
    problems = []
    for name, service in compose.services.items():
        for word in service.get("command", []) or []:
            for match in _VARIABLE.finditer(str(word)):
                if match.group(0) != "$$" and match.group(2) is None:
                    problems.append(f"service {name}: {match.group(0)} in its command has no default")
    return problems


def load_compose(path):
    return Compose(Path(path), yaml.safe_load(Path(path).read_text()))


def check_builds(compose):
    problems = []
    for name, service in compose.services.items():
        if "image" not in service and "build" not in service:
            problems.append(f"service {name}: neither image nor build")
        dockerfile = compose.build_dockerfile(name)
        if dockerfile and not dockerfile.is_file():
            problems.append(f"service {name}: Dockerfile {dockerfile} does not exist")
    return problems


def check_volumes(compose):
    declared = set((compose.spec.get("volumes") or {}).keys())
    problems = []
    for name in compose.services:
        for volume, target, _ in compose.mounts(name):
            if volume.startswith((".", "/", "~")):
                problems.append(f"service {name}: bind mount {volume} (only named volumes here)")
            elif volume not in declared:
                problems.append(f"service {name}: volume {volume} is not declared under volumes:")
    return problems


def check_dependencies(compose):
    problems = []
    for name, service in compose.services.items():
        depends = service.get("depends_on", {})
        for other in depends if isinstance(depends, (list, dict)) else []:
            if other not in compose.services:
                problems.append(f"service {name}: depends on {other}, which is no service")
            elif other == name:
                problems.append(f"service {name}: depends on itself")
    return problems


def check_file_references(compose, produced):
    """Paths in a service's environment or command that lie in a mounted volume must be files
    something produces there: `produced` maps a volume to the file names it holds."""
    problems = []
    for name, service in compose.services.items():
        words = list(compose.environment(name).values()) + [str(w) for w in service.get("command", []) or []]
        for volume, target, _ in compose.mounts(name):
            prefix = target.rstrip("/") + "/"
            for word in words:
                if word.startswith(prefix) and volume in produced and word[len(prefix):] not in produced[volume]:
                    problems.append(f"service {name}: {word} is not among the files of volume "
                                    f"{volume} ({sorted(produced[volume])})")
    return problems


def keys_service_volumes(compose, keys):
    """The volumes the keys service writes, with the names of the files conductor-keys puts in
    each (`keys`: role -> file names, from a real run)."""
    service = compose.services["keys"]
    assert service["command"][0] == "conductor-keys"
    folder = service["command"][1].rstrip("/")
    return {volume: keys[target[len(folder) + 1:]] for volume, target, _ in compose.mounts("keys")}


def gpu_devices(compose, service):
    """The nvidia device reservations of a service (deploy.resources.reservations.devices)."""
    devices = (compose.services[service].get("deploy", {}).get("resources", {})
               .get("reservations", {}).get("devices", []))
    return [d for d in devices if d.get("driver") == "nvidia" or "gpu" in d.get("capabilities", [])]


def check_gpu_devices(compose):
    """A GPU service reserves `count: all` and runs once per host: Docker gives `count: N` the
    devices 0..N-1 and every replica the same ones, so replicas of a GPU service share GPUs
    (the client runs one slot per GPU it sees)."""
    problems = []
    for name, service in compose.services.items():
        for device in gpu_devices(compose, name):
            if "device_ids" in device:
                problems.append(f"service {name}: device_ids {device['device_ids']} pin GPUs: "
                                f"use count: all, one client per host")
            elif device.get("count") != "all":
                problems.append(f"service {name}: GPU count {device.get('count')!r}: Docker hands "
                                f"count: N the devices 0..N-1, the same to every replica; use count: all")
            replicas = service.get("deploy", {}).get("replicas", 1)
            if replicas != 1:
                problems.append(f"service {name}: {replicas} replicas reserving the same GPUs: "
                                f"one GPU client per host")
    return problems


def check_gpu_scaling_instructions(compose, text):
    """`--scale SERVICE=N` in `text` (docs, comments) for a service that reserves GPUs: its
    replicas would share the host's GPUs."""
    return [f"--scale {name}=: replicas of a GPU service share the same GPUs (scale by hosts)"
            for name in compose.services if gpu_devices(compose, name)
            if re.search(rf"--scale[ =]{re.escape(name)}=", text)]


def check_build_version(compose, parse):
    """A build whose Dockerfile declares ARG CONDUCTOR_VERSION passes it, with the very value of
    the image's tag: otherwise a conductor-client:0.2.0 image reports (and writes into every
    meta.xml) the Dockerfile's default. `parse` reads a Dockerfile (dockerfiles.parse_dockerfile)."""
    problems = []
    for name, service in compose.services.items():
        dockerfile = compose.build_dockerfile(name)
        if not dockerfile or not dockerfile.is_file():
            continue
        parsed = parse(dockerfile)
        declared = "CONDUCTOR_VERSION" in parsed.global_args or any(
            stage.arg_default("CONDUCTOR_VERSION") is not None for stage in parsed.stages)
        if not declared:
            continue
        passed = compose.build_args(name).get("CONDUCTOR_VERSION")
        tag = image_tag(service["image"]) if service.get("image") else None
        if passed is None:
            problems.append(f"service {name}: {dockerfile.name} declares ARG CONDUCTOR_VERSION, "
                            f"which the build does not pass (args: CONDUCTOR_VERSION)")
        elif tag is not None and passed != tag:
            problems.append(f"service {name}: build arg CONDUCTOR_VERSION {passed} is not the "
                            f"image tag {tag}")
    return problems
