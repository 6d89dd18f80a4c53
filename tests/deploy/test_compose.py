"""deploy/compose.yaml: checked without a Docker engine, and its services run as local
processes (containers.py): the one-shot keys service, the server, a CPU and a GPU client and
conductorctl through the ctl service, all with the commands and environment the file gives."""

import json
import re

import compose as checks
import doc_checks
import http_checks
from containers import loopback_http, wait_for
from dockerfiles import parse_dockerfile
from project import DEPLOY, IMAGES, ROOT, image_name, image_tag, project_version
from scenario import MODELS, check_http, train_quickstart


def test_every_check_passes(compose, keys):
    assert checks.check_builds(compose) == []
    assert checks.check_volumes(compose) == []
    assert checks.check_dependencies(compose) == []
    assert checks.check_file_references(compose, checks.keys_service_volumes(compose, keys)) == []
    assert http_checks.check_compose_http(compose) == []
    assert checks.check_gpu_devices(compose) == []
    assert checks.check_build_version(compose, parse_dockerfile) == []
    assert checks.check_command_variables(compose) == []


def test_no_text_tells_to_scale_the_gpu_client():
    for path in (ROOT / "docs" / "deployment.md", ROOT / "README.md", DEPLOY / "compose.yaml"):
        assert checks.check_gpu_scaling_instructions(checks.load_compose(DEPLOY / "compose.yaml"),
                                                     path.read_text()) == [], path


def test_no_text_copies_files_into_a_container():
    for path in (ROOT / "docs" / "deployment.md", ROOT / "README.md", DEPLOY / "compose.yaml"):
        assert doc_checks.check_no_copy_into_containers(path.read_text()) == [], path


def test_the_documented_allow_list_command_appends_to_the_servers_allow_list(compose, keys):
    text = (ROOT / "docs" / "deployment.md").read_text()
    match = re.search(r"docker compose -f deploy/compose.yaml run --rm --entrypoint sh (\S+) -c "
                      r"'echo \"[^\"]+\" >> (\S+)'", text)
    assert match, "deployment.md §3 has no command adding a key to the allow-list"
    service, target = match.groups()
    folder, name = target.rsplit("/", 1)
    mounted = {t: (volume, read_only) for volume, t, read_only in compose.mounts(service)}
    assert mounted.get(folder) == ("server-keys", False), (service, compose.mounts(service))
    assert name in checks.keys_service_volumes(compose, keys)["server-keys"]
    server = compose.services["server"]["command"]
    assert server[server.index("--authorized-keys") + 1] == target  # the file the server reads


def test_the_server_image_exposes_the_ports_compose_and_the_manifests_use(compose, dockerfiles):
    _, http_port = http_checks.split_address(http_checks.http_flag(compose.services["server"]["command"]))
    assert http_checks.check_exposed(dockerfiles["conductor-server"], [8080, http_port]) == []


def test_services_use_the_images_built_from_their_dockerfiles(compose):
    for name, service in compose.services.items():
        image = image_name(service["image"])
        assert image in IMAGES, name
        assert image_tag(service["image"]) == "${CONDUCTOR_VERSION:-%s}" % project_version()
        assert compose.build_dockerfile(name) == IMAGES[image].resolve(), name
        assert compose.build_args(name) == {"CONDUCTOR_VERSION": "${CONDUCTOR_VERSION:-%s}" % project_version()}


def test_the_server_keeps_its_working_folder_on_a_volume_and_clients_scale(compose, dockerfiles):
    workdir = dockerfiles["conductor-server"].final.workdir() + "/workdir"  # RUNTIMEENV=docker
    assert ("workdir", workdir, False) in compose.mounts("server")
    assert compose.services["client"]["deploy"]["replicas"] >= 1
    assert "container_name" not in compose.services["client"]  # --scale needs generated names
    gpu = compose.services["client-gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]  # one client, every GPU
    assert gpu["deploy"]["replicas"] == 1
    assert gpu["profiles"] == ["gpu"]


def test_programs_are_in_the_images(compose, dockerfiles, installed):
    for name, service in compose.services.items():
        dockerfile = dockerfiles[image_name(service["image"])]
        argv = (service.get("entrypoint") or dockerfile.final.last("ENTRYPOINT").exec_form()) \
            + service["command"]
        program = argv[argv.index("/usr/local/bin/conductor-entrypoint") + 1]
        assert program in dockerfile.local_bin(installed), name


def run_service(host, compose, dockerfiles, name, instance="1", args=None, env=None, shell=None):
    """A container of a compose service: its named volumes are shared folders; ${VAR} in its
    command and environment interpolated from `shell` (the variables `docker compose` sees)."""
    service = compose.services[name]
    mounts = {target: host.volume(volume) for volume, target, _ in compose.mounts(name)}
    command = service.get("command") if args is None else args
    command = None if command is None else [checks.interpolate(w, shell or {}) for w in command]
    entrypoint = service.get("entrypoint")
    environment = {**{k: checks.interpolate(v, shell or {}) for k, v in compose.environment(name).items()},
                   **(env or {})}
    return host.container(f"{name}-{instance}", dockerfiles[image_name(service["image"])],
                          mounts, environment, command, entrypoint)


def test_the_services_train_models_over_curve_as_local_processes(host, compose, dockerfiles, apps):
    code, output = run_service(host, compose, dockerfiles, "keys").run(timeout=60)
    assert code == 0, output
    # `up` again runs the keys service again: it keeps every key.
    before = {p: p.read_bytes() for p in (host.folder / "volumes").rglob("*") if p.is_file()}
    assert run_service(host, compose, dockerfiles, "keys", "2").run(timeout=60)[0] == 0
    assert {p: p.read_bytes() for p in (host.folder / "volumes").rglob("*") if p.is_file()} == before

    endpoint_file, http_file = host.folder / "endpoint", host.folder / "http-endpoint"
    # The only departures from compose.yaml: loopback instead of the service name `server` and
    # the published ports (--bind, --http on free ports), and CURVE asked for explicitly
    # because a loopback endpoint would otherwise go without it.
    server_args = loopback_http(compose.services["server"]["command"], http_file) + [
        "--bind", "tcp://127.0.0.1:*", "--secure", "--endpoint-file", str(endpoint_file)]
    server = run_service(host, compose, dockerfiles, "server", args=server_args).start()
    endpoint = wait_for(lambda: endpoint_file.exists() and endpoint_file.read_text().strip(), 30,
                        f"the server's endpoint ({server.output()})")
    http = http_file.read_text().strip()  # written before the endpoint file
    check_http(http, ["/healthz", "/api/status", "/"], completed=0)  # the dashboard and metrics
    runs = iter(range(1, 1000))

    def conductorctl(*words):
        ctl = run_service(host, compose, dockerfiles, "ctl", f"run-{next(runs)}",
                          args=["--json", *words], env={"CONDUCTOR_HOST": endpoint})
        code, output = ctl.run(timeout=60)
        assert code == 0, (words, output, server.output())
        return json.loads(output[output.index("{"):])

    # CONDUCTOR_SLOTS=2 in the shell: each CPU client runs two items at once.
    clients = [run_service(host, compose, dockerfiles, name, env={"CONDUCTOR_HOST": endpoint},
                           shell={"CONDUCTOR_SLOTS": "2"})
               for name in ("client", "client-gpu")]
    train_quickstart(endpoint, server, clients, conductorctl,
                     host.folder / "volumes" / "workdir" / "assets" / "quickstart" / "models",
                     "/usr/local/share/conductor/examples/quickstart",  # in the server image
                     slots={"cpu": 2, "gpu": 1})
    check_http(http, ["/healthz"], completed=MODELS)
    for container in clients + [server]:
        assert container.stop() == 0, container.output()
