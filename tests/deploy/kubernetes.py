"""Reads deploy/k8s/ as kustomize would build it and checks the objects for the mistakes that
`kubectl apply` would only reveal on a cluster: missing required fields, selectors that miss
their pods, references to Secrets, ConfigMaps, volumes, claims or service accounts that do not
exist, Service ports that reach no container port, $(VAR) arguments nothing defines.

Each check returns a list of problems (empty: fine), each naming the object and the field.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


@dataclass
class Generated:
    """A Secret or ConfigMap that kustomization.yaml's generators make."""

    kind: str
    name: str
    keys: dict = field(default_factory=dict)  # key -> source file (None for envs/literals)


@dataclass
class Kustomization:
    folder: Path
    spec: dict
    objects: list  # the resources' documents
    generated: list  # Generated

    def named(self, kind, name):
        for obj in self.objects:
            if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
                return obj
        for gen in self.generated:
            if gen.kind == kind and gen.name == name:
                return gen
        return None

    def workloads(self):
        return [o for o in self.objects if o.get("kind") in WORKLOAD_KINDS]


def read_env_file(path):
    """KEY=VALUE lines of a kustomize `envs` file (comments and blank lines skipped)."""
    values = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def load_kustomization(folder):
    folder = Path(folder)
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    objects = []
    for resource in spec.get("resources", []):
        objects += [d for d in yaml.safe_load_all((folder / resource).read_text()) if d]
    generated = []
    for kind, key in (("Secret", "secretGenerator"), ("ConfigMap", "configMapGenerator")):
        for entry in spec.get(key, []):
            gen = Generated(kind, entry["name"])
            for item in entry.get("files", []):
                name, _, source = item.partition("=") if "=" in item else (Path(item).name, "", item)
                gen.keys[name] = folder / source
            for env_file in entry.get("envs", []):
                gen.keys.update({k: None for k in read_env_file(folder / env_file)})
            for literal in entry.get("literals", []):
                gen.keys[literal.partition("=")[0]] = None
            generated.append(gen)
    return Kustomization(folder, spec, objects, generated)


def generator_env(kustomization, name):
    """The variables an `envs` ConfigMap generator defines, with their values."""
    for entry in kustomization.spec.get("configMapGenerator", []):
        if entry["name"] == name:
            values = {}
            for env_file in entry.get("envs", []):
                values.update(read_env_file(kustomization.folder / env_file))
            return values
    return {}


def _name(obj):
    return f"{obj.get('kind', '?')} {obj.get('metadata', {}).get('name', '?')}"


def _pod_spec(workload):
    return workload.get("spec", {}).get("template", {}).get("spec", {})


def _pod_labels(workload):
    return workload.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})


def _selector(workload):
    return workload.get("spec", {}).get("selector", {}).get("matchLabels", {})


def _containers(pod_spec):
    return pod_spec.get("initContainers", []) + pod_spec.get("containers", [])


def _missing(obj, paths):
    problems = []
    for path in paths:
        node = obj
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node in (None, "", [], {}):
            problems.append(f"{_name(obj)}: required field {path} is missing")
    return problems


REQUIRED = {
    "Namespace": [],
    "ServiceAccount": [],
    "Service": ["spec.ports", "spec.selector"],
    "Deployment": ["spec.selector.matchLabels", "spec.template.metadata.labels",
                   "spec.template.spec.containers"],
    "StatefulSet": ["spec.serviceName", "spec.selector.matchLabels",
                    "spec.template.metadata.labels", "spec.template.spec.containers"],
}


def check_required_fields(k):
    problems = []
    for obj in k.objects:
        problems += _missing(obj, ["apiVersion", "kind", "metadata.name"])
        kind = obj.get("kind")
        if kind not in REQUIRED:
            problems.append(f"{_name(obj)}: kind not known to these checks")
            continue
        problems += _missing(obj, REQUIRED[kind])
        for container in _containers(_pod_spec(obj)):
            for key in ("name", "image"):
                if not container.get(key):
                    problems.append(f"{_name(obj)}: a container has no {key}")
        for port in obj.get("spec", {}).get("ports", []) if kind == "Service" else []:
            if "port" not in port:
                problems.append(f"{_name(obj)}: a port has no port number")
        for claim in obj.get("spec", {}).get("volumeClaimTemplates", []):
            problems += [f"{_name(obj)}: volumeClaimTemplate {p}"
                         for p in _missing(claim, ["metadata.name", "spec.accessModes",
                                                   "spec.resources.requests.storage"])]
    return problems


def _matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_selectors(k):
    problems = []
    for workload in k.workloads():
        selector, labels = _selector(workload), _pod_labels(workload)
        if not _matches(selector, labels):
            problems.append(f"{_name(workload)}: selector {selector} does not match its pod labels {labels}")
    for service in (o for o in k.objects if o.get("kind") == "Service"):
        selector = service.get("spec", {}).get("selector", {})
        if not any(_matches(selector, _pod_labels(w)) for w in k.workloads()):
            problems.append(f"{_name(service)}: selector {selector} matches no pod of any workload")
    for workload in k.workloads():
        others = [w for w in k.workloads()
                  if w is not workload and _matches(_selector(w), _pod_labels(workload))]
        if others:
            problems.append(f"{_name(workload)}: its pods are also selected by {_name(others[0])}")
    return problems


def check_references(k):
    problems = []
    for workload in k.workloads():
        spec = _pod_spec(workload)
        where = _name(workload)
        account = spec.get("serviceAccountName")
        if account and not k.named("ServiceAccount", account):
            problems.append(f"{where}: serviceAccountName {account} does not exist")
        claims = {c.get("metadata", {}).get("name")
                  for c in workload.get("spec", {}).get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for volume in volumes.values():
            problems += _check_volume_source(k, where, volume)
        if workload.get("kind") == "StatefulSet":
            service = k.named("Service", workload["spec"].get("serviceName", ""))
            if not service:
                problems.append(f"{where}: serviceName {workload['spec'].get('serviceName')} is no Service")
            elif service.get("spec", {}).get("clusterIP") != "None":
                problems.append(f"{where}: its serviceName must be a headless Service (clusterIP: None)")
        for container in _containers(spec):
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes and mount["name"] not in claims:
                    problems.append(f"{where}: container {container['name']} mounts "
                                    f"{mount['name']}, which is no volume or claim template")
            for source in container.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in source and not k.named(kind, source[key]["name"]):
                        problems.append(f"{where}: envFrom {kind} {source[key]['name']} does not exist")
            for variable in container.get("env", []):
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    ref = variable.get("valueFrom", {}).get(key)
                    if ref:
                        target = k.named(kind, ref["name"])
                        if not target:
                            problems.append(f"{where}: env {variable['name']}: {kind} {ref['name']} does not exist")
                        elif isinstance(target, Generated) and ref["key"] not in target.keys:
                            problems.append(f"{where}: env {variable['name']}: {kind} {ref['name']} has no key {ref['key']}")
    return problems


def _check_volume_source(k, where, volume):
    problems = []
    if "secret" in volume:
        kind, name, items = "Secret", volume["secret"].get("secretName"), volume["secret"].get("items", [])
    elif "configMap" in volume:
        kind, name, items = "ConfigMap", volume["configMap"].get("name"), volume["configMap"].get("items", [])
    elif "persistentVolumeClaim" in volume:
        claim = volume["persistentVolumeClaim"].get("claimName")
        if not k.named("PersistentVolumeClaim", claim):
            problems.append(f"{where}: volume {volume['name']}: claim {claim} does not exist")
        return problems
    else:
        return problems
    target = k.named(kind, name)
    if not target:
        problems.append(f"{where}: volume {volume['name']}: {kind} {name} does not exist")
    elif isinstance(target, Generated):
        for item in items:
            if item["key"] not in target.keys:
                problems.append(f"{where}: volume {volume['name']}: {kind} {name} has no key {item['key']}")
    return problems


def check_service_ports(k):
    problems = []
    for service in (o for o in k.objects if o.get("kind") == "Service"):
        selector = service.get("spec", {}).get("selector", {})
        pods = [w for w in k.workloads() if _matches(selector, _pod_labels(w))]
        ports = [p for w in pods for c in _pod_spec(w).get("containers", []) for p in c.get("ports", [])]
        for port in service.get("spec", {}).get("ports", []):
            target = port.get("targetPort", port.get("port"))
            if not any(target in (p.get("name"), p.get("containerPort")) for p in ports):
                problems.append(f"{_name(service)}: targetPort {target} is no container port of its pods")
    for workload in k.workloads():
        for container in _pod_spec(workload).get("containers", []):
            names = {p.get("name") for p in container.get("ports", [])}
            numbers = {p.get("containerPort") for p in container.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                handler = container.get(probe, {})
                port = (handler.get("tcpSocket") or handler.get("httpGet") or {}).get("port")
                if port is not None and port not in names | numbers:
                    problems.append(f"{_name(workload)}: {probe} port {port} is no port of container {container['name']}")
    return problems


def container_env(k, container):
    """Every variable the container's envFrom and env define (values where known)."""
    values = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            values.update(generator_env(k, source["configMapRef"]["name"]))
    for variable in container.get("env", []):
        values[variable["name"]] = variable.get("value")
    return values


def check_variable_expansion(k):
    """$(VAR) in command or args that the container does not define stays literal text."""
    problems = []
    for workload in k.workloads():
        for container in _containers(_pod_spec(workload)):
            defined = container_env(k, container)
            for word in container.get("command", []) + container.get("args", []):
                for name in re.findall(r"\$\((\w+)\)", str(word)):
                    if name not in defined:
                        problems.append(f"{_name(workload)}: container {container['name']} uses "
                                        f"$({name}), which neither env nor envFrom defines")
    return problems


def check_mounted_files(k):
    """A path in env or args under a Secret's or ConfigMap's mountPath names one of its keys."""
    problems = []
    for workload in k.workloads():
        spec = _pod_spec(workload)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in _containers(spec):
            words = [str(w) for w in container.get("args", []) + container.get("command", [])]
            words += [str(v.get("value")) for v in container.get("env", []) if "value" in v]
            for mount in container.get("volumeMounts", []):
                volume = volumes.get(mount["name"], {})
                source = volume.get("secret", {}).get("secretName") or volume.get("configMap", {}).get("name")
                kind = "Secret" if "secret" in volume else "ConfigMap"
                target = k.named(kind, source) if source else None
                if not isinstance(target, Generated):
                    continue
                prefix = mount["mountPath"].rstrip("/") + "/"
                for word in words:
                    if word.startswith(prefix) and word[len(prefix):] not in target.keys:
                        problems.append(f"{_name(workload)}: {word} is no key of {kind} {source} "
                                        f"(mounted at {mount['mountPath']}; keys {sorted(target.keys)})")
    return problems


def check_generated_sources(k):
    """Every file a generator reads exists (the keys: after deploy/docker/conductor-keys)."""
    return [f"{gen.kind} {gen.name}: {path} does not exist"
            for gen in k.generated for path in gen.keys.values() if path and not path.exists()]


def expand(word, defined):
    """$(VAR) replaced as the kubelet does for command and args; unknown ones stay as they are."""
    return re.sub(r"\$\((\w+)\)",
                  lambda m: defined[m.group(1)] if defined.get(m.group(1)) is not None else m.group(0),
                  str(word))


def _requests_gpus(workload):
    return any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
               for c in _containers(_pod_spec(workload)))


def check_gpu_rollout(k):
    """A Deployment of GPU pods replaces them without a surge pod (maxSurge 0, or Recreate):
    the default surge of 25% waits for a GPU that is free, and stalls when every GPU is busy."""
    problems = []
    for workload in k.workloads():
        if workload.get("kind") != "Deployment" or not _requests_gpus(workload):
            continue
        strategy = workload.get("spec", {}).get("strategy")
        if not strategy:
            problems.append(f"{_name(workload)}: no strategy: the default rolling update surges "
                            f"a pod that waits for a free GPU (maxSurge: 0, maxUnavailable: 1)")
            continue
        if strategy.get("type", "RollingUpdate") == "Recreate":
            continue
        rolling = strategy.get("rollingUpdate", {})
        if str(rolling.get("maxSurge", "25%")) not in ("0", "0%"):
            problems.append(f"{_name(workload)}: maxSurge {rolling.get('maxSurge', '25%')}: a surge pod "
                            f"waits for a free GPU and the rollout stalls (maxSurge: 0)")
        if str(rolling.get("maxUnavailable", "25%")) in ("0", "0%"):
            problems.append(f"{_name(workload)}: maxUnavailable 0 with maxSurge 0 cannot roll")
    return problems


def check_writable_tmp(k):
    """A container with a read-only root file system mounts an emptyDir at /tmp: programs
    exec'd there (conductorctl packs a version under /tmp) and the apps' temporary files need it."""
    problems = []
    for workload in k.workloads():
        spec = _pod_spec(workload)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in _containers(spec):
            if not container.get("securityContext", {}).get("readOnlyRootFilesystem"):
                continue
            mount = next((m for m in container.get("volumeMounts", [])
                          if m.get("mountPath", "").rstrip("/") == "/tmp"), None)
            if mount is None:
                problems.append(f"{_name(workload)}: container {container['name']} has a read-only "
                                f"root file system and no volume at /tmp")
            elif "emptyDir" not in volumes.get(mount["name"], {}) or mount.get("readOnly"):
                problems.append(f"{_name(workload)}: container {container['name']}: /tmp is no "
                                f"writable emptyDir")
    return problems
