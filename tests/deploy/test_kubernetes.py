"""deploy/k8s: the objects kustomize builds from it, checked without a cluster, and its pods
run as local processes (containers.py) that train models over CurveZMQ."""

import json
import subprocess
from pathlib import Path

import doc_checks
import http_checks
import kubernetes as k8s
from containers import loopback_http, wait_for
from scenario import MODELS, check_http, train_quickstart
from project import IMAGES, ROOT, image_name, project_version

CHECKS = [k8s.check_required_fields, k8s.check_selectors, k8s.check_references,
          k8s.check_service_ports, k8s.check_variable_expansion, k8s.check_mounted_files,
          k8s.check_generated_sources, k8s.check_gpu_rollout, k8s.check_writable_tmp, http_checks.check_kubernetes_http]


def pod_containers(kustomization):
    for workload in kustomization.workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            yield workload, container


def test_the_manifests_hold_what_the_issue_asks_for(kustomization):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in kustomization.objects}
    assert ("StatefulSet", "conductor-server") in kinds and ("Service", "conductor-server") in kinds
    assert ("Deployment", "conductor-client") in kinds and ("Deployment", "conductor-client-gpu") in kinds
    server = kustomization.named("StatefulSet", "conductor-server")
    assert server["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    generated = {(g.kind, g.name) for g in kustomization.generated}
    assert {("Secret", "conductor-server-key"), ("Secret", "conductor-client-key"),
            ("ConfigMap", "conductor-authorized-keys"), ("ConfigMap", "conductor-server-config"),
            ("ConfigMap", "conductor-client-config")} <= generated


def test_the_key_commands_make_the_keys_folder_before_docker_run():
    for path in (ROOT / "docs" / "deployment.md", ROOT / "deploy" / "k8s" / "kustomization.yaml"):
        text = path.read_text()
        assert "docker run" in text and doc_checks.check_bind_mounts_made_first(text) == [], path


def test_every_check_passes(kustomization):
    assert {check.__name__: check(kustomization) for check in CHECKS} == {c.__name__: [] for c in CHECKS}


def test_containers_run_images_built_here_at_the_project_version(kustomization):
    tags = {entry["name"]: entry.get("newTag") for entry in kustomization.spec["images"]}
    assert tags == {name: project_version() for name in IMAGES}
    for workload, container in pod_containers(kustomization):
        assert image_name(container["image"]) in IMAGES, (workload["metadata"]["name"], container["image"])


def test_pods_run_as_the_images_user(kustomization, dockerfiles):
    for workload, container in pod_containers(kustomization):
        uid, _, gid = dockerfiles[image_name(container["image"])].final.user().partition(":")
        context = workload["spec"]["template"]["spec"]["securityContext"]
        assert context["runAsNonRoot"] is True
        assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))
        # Secrets are mounted root-owned: the user reads them through fsGroup.
        assert context["fsGroup"] == int(gid)


def test_programs_are_in_the_images(kustomization, dockerfiles, installed):
    for workload, container in pod_containers(kustomization):
        dockerfile = dockerfiles[image_name(container["image"])]
        assert dockerfile.command_line()[-2].endswith("/conductor-entrypoint")  # then args
        assert "command" not in container  # keeps the image's ENTRYPOINT
        assert container["args"][0] in dockerfile.local_bin(installed), workload["metadata"]["name"]


def test_gpu_clients_request_a_gpu_and_cpu_clients_do_not(kustomization):
    for workload, container in pod_containers(kustomization):
        limits = container.get("resources", {}).get("limits", {})
        env = {v["name"]: v.get("value") for v in container.get("env", [])}
        if image_name(container["image"]) == "conductor-client-gpu":
            assert limits.get("nvidia.com/gpu") == 1 and env.get("CONDUCTOR_TYPE") == "gpu"
        else:
            assert "nvidia.com/gpu" not in limits
    gpu = kustomization.named("Deployment", "conductor-client-gpu")
    assert gpu["spec"]["strategy"] == {"type": "RollingUpdate",
                                       "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def test_working_folders_are_mounted_where_the_images_keep_them(kustomization, dockerfiles):
    # RUNTIMEENV=docker: the server's folder is WORKDIR/workdir, a client's WORKDIR/client-workdir.
    for workload, container in pod_containers(kustomization):
        image = image_name(container["image"])
        folder = dockerfiles[image].final.workdir() + ("/workdir" if image == "conductor-server"
                                                       else "/client-workdir")
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert folder in mounts, (workload["metadata"]["name"], folder)
    server = kustomization.named("StatefulSet", "conductor-server")
    claims = [c["metadata"]["name"] for c in server["spec"]["volumeClaimTemplates"]]
    mounts = {m["mountPath"]: m["name"] for m in server["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/conductor/workdir"] in claims  # the models outlive the pod


def pod_volume(host, kustomization, pod, source):
    """The host folder that stands for one of a pod's volumes: a Secret or ConfigMap holds its
    keys, with the modes kubelet gives them under fsGroup (defaultMode plus group read), and is
    shared by the pods that mount it; an emptyDir or a claim is an empty folder of the pod."""
    if "secret" in source or "configMap" in source:
        kind, name, settings = ("Secret", source["secret"]["secretName"], source["secret"]) \
            if "secret" in source else ("ConfigMap", source["configMap"]["name"], source["configMap"])
        folder = host.folder / "objects" / name
        if not folder.exists():  # kubelet's layout: KEY -> ..data/KEY, ..data -> ..<timestamp>/
            data = folder / "..2024_05_01_10_00_00.123"
            data.mkdir(parents=True)
            for key, file in kustomization.named(kind, name).keys.items():
                (data / key).write_bytes(file.read_bytes())
                (data / key).chmod(settings.get("defaultMode", 0o644) | 0o040)
                (folder / key).symlink_to(Path("..data") / key)
            (folder / "..data").symlink_to(data.name, target_is_directory=True)
            for read_only in (data, folder):  # mounted read-only
                read_only.chmod(0o555)
        return folder
    folder = host.folder / "pods" / pod / source["name"]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_pod(host, kustomization, dockerfiles, kind, name, extra_args=(), env=None, rewrite=None, config=None):
    """The first pod of a workload as a local process; $(VAR) in its args expanded from its
    env and envFrom, as the kubelet does; `rewrite` changes the expanded args; `config`
    changes values of its ConfigMaps' env files, as an operator editing client.env would."""
    workload = kustomization.named(kind, name)
    spec = workload["spec"]["template"]["spec"]
    container = spec["containers"][0]
    pod = f"{name}-0"
    sources = {v["name"]: v for v in spec.get("volumes", [])}
    sources.update({c["metadata"]["name"]: {"name": c["metadata"]["name"]}
                    for c in workload["spec"].get("volumeClaimTemplates", [])})
    mounts = {m["mountPath"]: pod_volume(host, kustomization, pod, sources[m["name"]])
              for m in container["volumeMounts"]}
    defined = k8s.container_env(kustomization, container)
    defined.update({k: v for k, v in (config or {}).items() if k in defined})
    args = [k8s.expand(word, defined) for word in container["args"]]
    args = (rewrite(args) if rewrite else args) + list(extra_args)
    environment = {**{k: v for k, v in defined.items() if v is not None}, **(env or {})}
    return host.container(pod, dockerfiles[image_name(container["image"])], mounts, environment, args)


def test_the_pods_train_models_over_curve_as_local_processes(host, kustomization, dockerfiles, apps):
    endpoint_file, http_file = host.folder / "endpoint", host.folder / "http-endpoint"
    # The only departures from the manifests: loopback instead of the Service and the pod's
    # address (--bind, --http on free ports), and CURVE asked for explicitly because a
    # loopback endpoint would otherwise go without it.
    server = run_pod(host, kustomization, dockerfiles, "StatefulSet", "conductor-server",
                     ["--bind", "tcp://127.0.0.1:*", "--secure", "--endpoint-file", str(endpoint_file)],
                     rewrite=lambda args: loopback_http(args, http_file))
    server.start()
    endpoint = wait_for(lambda: endpoint_file.exists() and endpoint_file.read_text().strip(), 30,
                        f"the server's endpoint ({server.output()})")
    http = http_file.read_text().strip()  # written before the endpoint file
    workload = kustomization.named("StatefulSet", "conductor-server")
    spec = workload["spec"]["template"]
    probes = [spec["spec"]["containers"][0][p]["httpGet"]["path"] for p in http_checks.PROBES]
    scrape = spec["metadata"]["annotations"]["prometheus.io/path"]
    check_http(http, probes, scrape, completed=0)  # the kubelet's probes, a scrape
    keys = kustomization.folder / "keys" / "operator"

    def conductorctl(*words):
        result = subprocess.run(
            [str(apps / "conductorctl"), endpoint, "--json", "--key-file", str(keys / "operator.key"),
             "--server-key", (keys / "server.pub").read_text().strip(), *words],
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (words, result.stderr, server.output())
        return json.loads(result.stdout)

    # SLOTS=2 in client.env: a CPU pod runs two items at once; a GPU pod one per GPU (here none).
    clients = [run_pod(host, kustomization, dockerfiles, "Deployment", name, env={"CONDUCTOR_HOST": endpoint},
                       config={"SLOTS": "2"})
               for name in ("conductor-client", "conductor-client-gpu")]
    train_quickstart(endpoint, server, clients, conductorctl,
                     server.path("/conductor/workdir") / "assets" / "quickstart" / "models",
                     str(ROOT / "examples" / "quickstart"), slots={"cpu": 2, "gpu": 1})
    # The server read its key pair from the Secret as mounted (group-readable, through ..data).
    public = next(line.split()[1] for line in
                  (kustomization.folder / "keys" / "server" / "server.key").read_text().splitlines()
                  if line.startswith("public "))
    assert f"CURVE on: server public key {public}" in server.output()
    check_http(http, probes, scrape, completed=MODELS)
    for container in clients + [server]:
        assert container.stop() == 0, container.output()
