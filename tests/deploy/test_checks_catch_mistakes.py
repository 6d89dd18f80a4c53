"""Each check, handed deploy/'s files with one mistake put in, reports that mistake: the
checks that pass on the real files are not checks that cannot fail."""

import copy
import textwrap

import pytest

import compose as compose_checks
import doc_checks
import http_checks
import kubernetes as k8s
from dockerfile_checks import copy_problems, program_problems, runtime_problems
from dockerfiles import DockerIgnore, parse_dockerfile
from project import ROOT, apt_known


def workload(k, kind, name):
    return next(o for o in k.objects if o["kind"] == kind and o["metadata"]["name"] == name)


def container(obj):
    return obj["spec"]["template"]["spec"]["containers"][0]


def broken(kustomization, change):
    mutated = copy.deepcopy(kustomization)
    change(mutated)
    return mutated


def volume(obj, name):
    return next(v for v in obj["spec"]["template"]["spec"]["volumes"] if v["name"] == name)


KUBERNETES_MISTAKES = [
    ("a container without image", k8s.check_required_fields,
     lambda k: container(workload(k, "Deployment", "conductor-client")).pop("image"),
     "a container has no image"),
    ("a claim template without size", k8s.check_required_fields,
     lambda k: workload(k, "StatefulSet", "conductor-server")["spec"]["volumeClaimTemplates"][0]["spec"].pop("resources"),
     "spec.resources.requests.storage"),
    ("a selector that misses the pods", k8s.check_selectors,
     lambda k: workload(k, "Deployment", "conductor-client")["spec"]["selector"]["matchLabels"].update(
         {"app.kubernetes.io/component": "worker"}),
     "does not match its pod labels"),
    ("a Service that selects nothing", k8s.check_selectors,
     lambda k: workload(k, "Service", "conductor-server")["spec"]["selector"].update(
         {"app.kubernetes.io/component": "srv"}),
     "matches no pod"),
    ("two Deployments selecting the same pods", k8s.check_selectors,
     lambda k: workload(k, "Deployment", "conductor-client-gpu")["spec"]["selector"]["matchLabels"].pop(
         "app.kubernetes.io/component"),
     "also selected by"),
    ("a Secret that does not exist", k8s.check_references,
     lambda k: volume(workload(k, "StatefulSet", "conductor-server"), "server-key")["secret"].update(
         {"secretName": "conductor-server-keys"}),
     "Secret conductor-server-keys does not exist"),
    ("a ConfigMap that does not exist", k8s.check_references,
     lambda k: container(workload(k, "Deployment", "conductor-client"))["envFrom"][0]["configMapRef"].update(
         {"name": "conductor-config"}),
     "ConfigMap conductor-config does not exist"),
    ("a mount of no volume", k8s.check_references,
     lambda k: container(workload(k, "Deployment", "conductor-client"))["volumeMounts"][0].update(
         {"name": "workdir"}),
     "mounts workdir, which is no volume"),
    ("a service account that does not exist", k8s.check_references,
     lambda k: workload(k, "Deployment", "conductor-client")["spec"]["template"]["spec"].update(
         {"serviceAccountName": "default-sa"}),
     "serviceAccountName default-sa does not exist"),
    ("a StatefulSet governed by a normal Service", k8s.check_references,
     lambda k: workload(k, "StatefulSet", "conductor-server")["spec"].update({"serviceName": "conductor-server"}),
     "headless"),
    ("a Service port reaching no container port", k8s.check_service_ports,
     lambda k: workload(k, "Service", "conductor-server")["spec"]["ports"][0].update({"targetPort": 8081}),
     "targetPort 8081 is no container port"),
    ("a probe on a port the container lacks", k8s.check_service_ports,
     lambda k: container(workload(k, "StatefulSet", "conductor-server"))["livenessProbe"]["httpGet"].update(
         {"port": "metrics"}),
     "livenessProbe port metrics"),
    ("an argument with an undefined variable", k8s.check_variable_expansion,
     lambda k: container(workload(k, "Deployment", "conductor-client"))["args"].append("$(CACHE_SIZE)"),
     "$(CACHE_SIZE)"),
    ("a key file name the Secret lacks", k8s.check_mounted_files,
     lambda k: next(v for v in container(workload(k, "Deployment", "conductor-client"))["env"]
                    if v["name"] == "CONDUCTOR_KEY_PAIR_FILE").update({"value": "/etc/conductor/client-key/key"}),
     "/etc/conductor/client-key/key is no key of Secret conductor-client-key"),
    ("a server without --http", http_checks.check_kubernetes_http,
     lambda k: set_http(k, None),
     "conductor-server runs without --http"),
    ("--http on loopback only", http_checks.check_kubernetes_http,
     lambda k: set_http(k, "127.0.0.1:9090"),
     "--http 127.0.0.1:9090 listens on loopback only"),
    ("--http on a port the container does not declare", http_checks.check_kubernetes_http,
     lambda k: set_http(k, "0.0.0.0:9091"),
     "--http port 9091 is no containerPort"),
    ("a probe on the ZeroMQ port instead of --http's", http_checks.check_kubernetes_http,
     lambda k: container(workload(k, "StatefulSet", "conductor-server"))["readinessProbe"]["httpGet"].update(
         {"port": "cwp"}),
     "readinessProbe httpGet port cwp is container port 8080, not the --http port 9090"),
    ("a probe still on tcpSocket", http_checks.check_kubernetes_http,
     lambda k: container(workload(k, "StatefulSet", "conductor-server")).update(
         {"livenessProbe": {"tcpSocket": {"port": "cwp"}}}),
     "livenessProbe is no httpGet"),
    ("a probe path the server does not serve", http_checks.check_kubernetes_http,
     lambda k: container(workload(k, "StatefulSet", "conductor-server"))["startupProbe"]["httpGet"].update(
         {"path": "/health"}),
     "startupProbe path /health is not served"),
    ("a scrape annotation on the wrong port", http_checks.check_kubernetes_http,
     lambda k: workload(k, "StatefulSet", "conductor-server")["spec"]["template"]["metadata"]["annotations"].update(
         {"prometheus.io/port": "8080"}),
     "prometheus.io/port is '8080', expected '9090'"),
    ("no scrape annotation", http_checks.check_kubernetes_http,
     lambda k: workload(k, "StatefulSet", "conductor-server")["spec"]["template"]["metadata"].pop("annotations"),
     "prometheus.io/scrape is None"),
    ("a Service without the metrics port", http_checks.check_kubernetes_http,
     lambda k: workload(k, "Service", "conductor-server")["spec"].update(
         {"ports": [p for p in workload(k, "Service", "conductor-server")["spec"]["ports"] if p["name"] != "http"]}),
     "no Service port reaches the --http port 9090"),
    ("a GPU Deployment without a strategy", k8s.check_gpu_rollout,
     lambda k: workload(k, "Deployment", "conductor-client-gpu")["spec"].pop("strategy"),
     "Deployment conductor-client-gpu: no strategy"),
    ("a GPU Deployment that surges", k8s.check_gpu_rollout,
     lambda k: workload(k, "Deployment", "conductor-client-gpu")["spec"]["strategy"]["rollingUpdate"].update(
         {"maxSurge": "25%"}),
     "maxSurge 25%: a surge pod waits for a free GPU"),
    ("a GPU Deployment that can never roll", k8s.check_gpu_rollout,
     lambda k: workload(k, "Deployment", "conductor-client-gpu")["spec"]["strategy"]["rollingUpdate"].update(
         {"maxUnavailable": 0}),
     "maxUnavailable 0 with maxSurge 0"),
    ("a read-only root file system without /tmp", k8s.check_writable_tmp,
     lambda k: container(workload(k, "StatefulSet", "conductor-server")).update(
         {"volumeMounts": [m for m in container(workload(k, "StatefulSet", "conductor-server"))["volumeMounts"]
                           if m["mountPath"] != "/tmp"]}),
     "container server has a read-only root file system and no volume at /tmp"),
    ("/tmp from a read-only volume", k8s.check_writable_tmp,
     lambda k: next(m for m in container(workload(k, "StatefulSet", "conductor-server"))["volumeMounts"]
                    if m["mountPath"] == "/tmp").update({"name": "server-key"}),
     "/tmp is no writable emptyDir"),
    ("a generator file that nothing makes", k8s.check_generated_sources,
     lambda k: next(g for g in k.generated if g.name == "conductor-client-key").keys.update(
         {"client.pem": k.folder / "keys" / "client" / "client.pem"}),
     "client.pem does not exist"),
]


def set_http(k, value):
    """The server's --http argument set to `value`, or removed with None."""
    args = container(workload(k, "StatefulSet", "conductor-server"))["args"]
    i = args.index("--http")
    if value is None:
        del args[i:i + 2]
    else:
        args[i + 1] = value


def set_compose_http(c, value):
    command = c.spec["services"]["server"]["command"]
    i = command.index("--http")
    if value is None:
        del command[i:i + 2]
    else:
        command[i + 1] = value


@pytest.mark.parametrize("mistake, check, change, report", KUBERNETES_MISTAKES,
                         ids=[m[0] for m in KUBERNETES_MISTAKES])
def test_kubernetes_checks_report_the_mistake(kustomization, mistake, check, change, report):
    assert check(kustomization) == []
    problems = check(broken(kustomization, change))
    assert any(report in p for p in problems), problems


COMPOSE_MISTAKES = [
    ("a Dockerfile that does not exist", compose_checks.check_builds,
     lambda c: c.spec["services"]["client"]["build"].update({"dockerfile": "deploy/docker/client.Dockerfile"}),
     "client.Dockerfile does not exist"),
    ("an undeclared volume", compose_checks.check_volumes,
     lambda c: c.spec["services"]["server"]["volumes"].append("models:/conductor/models"),
     "volume models is not declared"),
    ("a bind mount", compose_checks.check_volumes,
     lambda c: c.spec["services"]["server"]["volumes"].append("./keys:/conductor/keys"),
     "bind mount ./keys"),
    ("a dependency on no service", compose_checks.check_dependencies,
     lambda c: c.spec["services"]["client"]["depends_on"].update({"conductor": {}}),
     "depends on conductor, which is no service"),
    ("a key file the keys service does not make", "file_references",
     lambda c: c.spec["services"]["client"]["environment"].update(
         {"CONDUCTOR_KEY_PAIR_FILE": "/conductor/keys/client/worker.key"}),
     "/conductor/keys/client/worker.key is not among the files of volume client-keys"),
    ("a server without --http", http_checks.check_compose_http,
     lambda c: set_compose_http(c, None),
     "service server: conductor-server runs without --http"),
    ("--http on loopback only", http_checks.check_compose_http,
     lambda c: set_compose_http(c, "9090"),
     "--http 9090 listens on loopback only"),
    ("a published port that is not --http's", http_checks.check_compose_http,
     lambda c: c.spec["services"]["server"].update(
         {"ports": ["8080:8080", "127.0.0.1:9090:9091"]}),
     "publishes no port to the --http port 9090"),
    ("a build that does not pass CONDUCTOR_VERSION", "build_version",
     lambda c: c.spec["services"]["client"]["build"].pop("args"),
     "service client: client-cpu.Dockerfile declares ARG CONDUCTOR_VERSION, which the build does not pass"),
    ("a build arg that is not the image tag", "build_version",
     lambda c: c.spec["services"]["client-gpu"]["build"].update({"args": ["CONDUCTOR_VERSION=0.1.0"]}),
     "service client-gpu: build arg CONDUCTOR_VERSION 0.1.0 is not the image tag ${CONDUCTOR_VERSION:-0.1.0}"),
    ("a command variable without a default", compose_checks.check_command_variables,
     lambda c: c.spec["services"]["client"].update({"command": ["conductor-client", "--slots", "${CONDUCTOR_SLOTS}"]}),
     "service client: ${CONDUCTOR_SLOTS} in its command has no default"),
    ("a GPU client reserving count: 1", compose_checks.check_gpu_devices,
     lambda c: gpu_device(c).update({"count": 1}),
     "GPU count 1: Docker hands count: N the devices 0..N-1"),
    ("a GPU client pinned to device_ids", compose_checks.check_gpu_devices,
     lambda c: gpu_device(c).update({"device_ids": ["0"]}),
     "device_ids ['0'] pin GPUs"),
    ("GPU client replicas", compose_checks.check_gpu_devices,
     lambda c: c.spec["services"]["client-gpu"]["deploy"].update({"replicas": 2}),
     "2 replicas reserving the same GPUs"),
]


def gpu_device(c):
    return c.spec["services"]["client-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]


@pytest.mark.parametrize("mistake, check, change, report", COMPOSE_MISTAKES,
                         ids=[m[0] for m in COMPOSE_MISTAKES])
def test_compose_checks_report_the_mistake(compose, keys, mistake, check, change, report):
    run = {"file_references": lambda c: compose_checks.check_file_references(
               c, compose_checks.keys_service_volumes(c, keys)),
           "build_version": lambda c: compose_checks.check_build_version(c, parse_dockerfile)}.get(check, check)
    assert run(compose) == []
    mutated = copy.deepcopy(compose)
    change(mutated)
    assert any(report in p for p in run(mutated)), run(mutated)


def test_an_instruction_to_scale_the_gpu_client_is_reported(compose):
    text = "docker compose -f deploy/compose.yaml --profile gpu up -d --scale client-gpu=2\n"
    assert compose_checks.check_gpu_scaling_instructions(compose, text) == [
        "--scale client-gpu=: replicas of a GPU service share the same GPUs (scale by hosts)"]
    assert compose_checks.check_gpu_scaling_instructions(compose, "up -d --scale client=6") == []


def test_a_docker_run_into_a_folder_not_made_first_is_reported():
    text = textwrap.dedent("""\
        # or in the image:
        #   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/deploy/k8s/keys:/keys" \\
        #     conductor-server:0.1.0 conductor-keys /keys
        """)
    problems = doc_checks.check_bind_mounts_made_first(text)
    assert len(problems) == 1 and "bind-mount source deploy/k8s/keys is not made first" in problems[0]
    assert doc_checks.check_bind_mounts_made_first("mkdir -p deploy/k8s/keys\n" + text) == []


def test_a_copy_into_a_container_is_reported():
    text = ("   A version folder of your own: copy it into the server (`docker compose cp my-version\n"
            "   server:/conductor/workdir/assets/`, a local version from then on)\n")
    assert len(doc_checks.check_no_copy_into_containers(text)) == 1  # a code span across lines
    fenced = "```sh\ndocker compose up -d\n```\n\n" + text  # after a fenced block
    assert len(doc_checks.check_no_copy_into_containers(fenced)) == 1
    assert doc_checks.check_no_copy_into_containers(
        "docker compose -f deploy/compose.yaml cp my-version server:/conductor/workdir/assets/") != []
    assert doc_checks.check_no_copy_into_containers(
        "docker compose -f deploy/compose.yaml cp server:/conductor/workdir/assets/x/models ./models") == []


def dockerfile_with(tmp_path, text):
    path = tmp_path / "test.Dockerfile"
    path.write_text(textwrap.dedent(text))
    return parse_dockerfile(path)


def test_a_copy_of_a_missing_or_ignored_source_is_reported(tmp_path):
    dockerfile = dockerfile_with(tmp_path, """\
        FROM debian:12 AS build
        COPY apps/ /src/apps/
        COPY tests/unit/ /src/tests/
        COPY deploy/docker/conductor-entrypointt /usr/local/bin/
        FROM debian:12-slim
        COPY --from=builder /opt/conductor/bin/ /usr/local/bin/
        """)
    problems = copy_problems(dockerfile, DockerIgnore.of_context(ROOT), ROOT)
    assert len(problems) == 3, problems
    assert "tests/unit/ is excluded by .dockerignore" in problems[0]
    assert "conductor-entrypointt does not exist" in problems[1]
    assert "--from=builder is no earlier stage" in problems[2]


def test_dockerignore_follows_dockers_rules():
    ignore = DockerIgnore("build*\n**/*.key\n!keep/me.key\n/deploy/k8s/keys/\n# comment\n*/tmp?\n")
    assert ignore.excludes("build") and ignore.excludes("build-asan/lib/x.o")
    assert not ignore.excludes("apps/build/x")  # a pattern is anchored at the context root
    assert ignore.excludes("a/b/c/server.key") and ignore.excludes("server.key")
    assert not ignore.excludes("keep/me.key")  # the last matching pattern wins
    assert ignore.excludes("deploy/k8s/keys/server/server.pub")  # inside an excluded folder
    assert ignore.excludes("docs/tmp1") and not ignore.excludes("docs/tmp12")
    assert not ignore.excludes("docs/deployment.md")


def test_a_server_image_that_does_not_expose_the_http_port_is_reported(tmp_path):
    dockerfile = dockerfile_with(tmp_path, """\
        FROM debian:12-slim
        EXPOSE 8080
        """)
    assert http_checks.check_exposed(dockerfile, [8080, 9090]) == ["test.Dockerfile: EXPOSE lacks port 9090"]
    assert http_checks.exposed_ports(dockerfile_with(tmp_path, "FROM x\nEXPOSE 8080/tcp 9090\n")) == {8080, 9090}


def test_compose_interpolation_follows_composes_rules():
    variables = {"SET": "4", "EMPTY": ""}
    assert compose_checks.interpolate("${SET:-1}", variables) == "4"
    assert compose_checks.interpolate("${UNSET:-1}", variables) == "1"
    assert compose_checks.interpolate("${EMPTY:-1}", variables) == "1"
    assert compose_checks.interpolate("${EMPTY-1}", variables) == ""
    assert compose_checks.interpolate("a-$SET-${UNSET}-$$HOME", variables) == "a-4--$HOME"


def test_loopback_http_moves_the_http_address_and_fails_without_one(tmp_path):
    from containers import loopback_http
    assert loopback_http(["conductor-server", "--http", "0.0.0.0:9090", "--quiet"], tmp_path / "f") == [
        "conductor-server", "--http", "127.0.0.1:0", "--quiet", "--http-endpoint-file", str(tmp_path / "f")]
    assert loopback_http(["conductor-server", "--http=0.0.0.0:9090"], "f")[1] == "--http=127.0.0.1:0"
    with pytest.raises(AssertionError, match="without --http"):
        loopback_http(["conductor-server"], "f")


def test_an_unknown_apt_package_is_reported():
    assert apt_known(("libzmq5", "libzmq5-made-up")) == {"libzmq5"}


def test_a_runtime_stage_missing_a_library_package_is_reported(tmp_path):
    dockerfile = dockerfile_with(tmp_path, """\
        FROM debian:12-slim
        RUN apt-get update && apt-get install -y --no-install-recommends libsodium23 tini
        """)
    assert runtime_problems(dockerfile, ["libzmq5", "libsodium23", "libc6"]) == ["libzmq5"]


def test_a_program_the_image_lacks_is_reported(tmp_path, installed):
    dockerfile = dockerfile_with(tmp_path, """\
        FROM debian:12 AS build
        RUN cmake --install /tmp/build --prefix /opt/conductor --strip
        FROM debian:12-slim
        RUN apt-get install -y python3
        COPY --from=build /opt/conductor/bin/ /usr/local/bin/
        COPY deploy/docker/conductor-entrypoint /usr/local/bin/
        ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/conductor-entrypoint"]
        CMD ["conductor-worker"]
        """)
    problems = program_problems(dockerfile, installed)
    assert problems == ["/usr/bin/tini: its package (tini) is not installed by the final stage",
                        "conductor-worker: not in the image's /usr/local/bin"]

