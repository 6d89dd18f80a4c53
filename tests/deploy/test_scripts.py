"""deploy/docker's scripts as real processes: conductor-keys with the built apps, the images'
entry point, runtime-packages; and shellcheck over all of them."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import make_keys
from project import DOCKER, ROOT

ENTRYPOINT = str(DOCKER / "conductor-entrypoint")
KEYS = str(DOCKER / "conductor-keys")


def run(argv, apps, env=None, timeout=60):
    environment = {"PATH": f"{apps}:{DOCKER}:/usr/bin:/bin", **(env or {})}
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          env=environment, timeout=timeout)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def public_key(apps, program, key_file):
    result = run([program, "--print-key", "--key-file", key_file], apps)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_scripts_pass_shellcheck():
    scripts = [DOCKER / "conductor-entrypoint", DOCKER / "conductor-keys",
               DOCKER / "runtime-packages", ROOT / "scripts" / "check-deploy",
               ROOT / "tests" / "install" / "check-install"]
    result = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_conductor_keys_hands_each_role_its_keys(apps, tmp_path):
    keys = make_keys(apps, tmp_path / "keys")
    server = public_key(apps, "conductor-server", keys / "server" / "server.key")
    client = public_key(apps, "conductor-client", keys / "client" / "client.key")
    operator = public_key(apps, "conductorctl", keys / "operator" / "operator.key")
    assert len({server, client, operator}) == 3
    for role in ("client", "operator"):
        assert (keys / role / "server.pub").read_text() == server + "\n"
    allowed = [line.split()[0] for line in (keys / "server" / "authorized_keys").read_text().splitlines()
               if line and not line.startswith("#")]
    assert allowed == [client, operator]
    for pair in ("server/server.key", "client/client.key", "operator/operator.key"):
        assert mode(keys / pair) == 0o600, pair
    for public in ("server/authorized_keys", "client/server.pub", "operator/server.pub"):
        assert mode(keys / public) == 0o644, public  # the server refuses a list others may write
    assert sorted(p.name for p in keys.iterdir()) == ["client", "operator", "server"]


def test_conductor_keys_again_keeps_keys_and_lines_added_by_hand(apps, tmp_path):
    keys = make_keys(apps, tmp_path / "keys")
    allowed = keys / "server" / "authorized_keys"
    extra = public_key(apps, "conductor-client", tmp_path / "laptop.key") + " a laptop client"
    with open(allowed, "a") as stream:
        stream.write(extra + "\n")
    before = {p: p.read_bytes() for p in keys.rglob("*") if p.is_file()}
    make_keys(apps, keys)
    assert {p: p.read_bytes() for p in keys.rglob("*") if p.is_file()} == before
    assert extra in allowed.read_text()


def test_conductor_keys_refuses_a_malformed_key_file_and_names_it(apps, tmp_path):
    broken = tmp_path / "keys" / "client" / "client.key"
    broken.parent.mkdir(parents=True)
    broken.write_text("public not-a-key\n")
    broken.chmod(0o600)
    result = run([KEYS, tmp_path / "keys"], apps)
    assert result.returncode != 0
    assert str(broken) in result.stderr
    assert not (tmp_path / "keys" / "server" / "authorized_keys").exists()


def test_conductor_keys_without_a_folder_is_a_usage_error(apps):
    result = run([KEYS], apps)
    assert result.returncode == 2 and "usage: conductor-keys DIR" in result.stderr


def test_the_entrypoint_hands_the_server_key_file_over_as_conductor_server_key(apps, tmp_path):
    key_file = tmp_path / "server.pub"
    key_file.write_text("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7 the server\n")
    result = run([ENTRYPOINT, "sh", "-c", 'printf %s "$CONDUCTOR_SERVER_KEY"'], apps,
                 {"CONDUCTOR_SERVER_KEY_FILE": key_file})
    assert (result.returncode, result.stdout) == (0, "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7")
    key_file.write_text("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7")  # no final newline
    result = run([ENTRYPOINT, "sh", "-c", 'printf %s "$CONDUCTOR_SERVER_KEY"'], apps,
                 {"CONDUCTOR_SERVER_KEY_FILE": key_file})
    assert result.stdout == "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    result = run([ENTRYPOINT, "sh", "-c", 'printf %s "$CONDUCTOR_SERVER_KEY"'], apps,
                 {"CONDUCTOR_SERVER_KEY_FILE": key_file, "CONDUCTOR_SERVER_KEY": "given"})
    assert result.stdout == "given"  # a key given outright wins


@pytest.mark.parametrize("content, complaint", [(None, "cannot read"), ("\n", "holds no key")])
def test_the_entrypoint_refuses_an_unusable_server_key_file_and_runs_nothing(apps, tmp_path, content, complaint):
    key_file = tmp_path / "server.pub"
    if content is not None:
        key_file.write_text(content)
    marker = tmp_path / "ran"
    result = run([ENTRYPOINT, "touch", marker], apps, {"CONDUCTOR_SERVER_KEY_FILE": key_file})
    assert result.returncode == 2
    assert complaint in result.stderr and str(key_file) in result.stderr
    assert not marker.exists()


def secret_volume(folder, files, mode=0o440):
    """A Secret as kubelet mounts it: FOLDER/NAME -> ..data/NAME, ..data -> ..<timestamp>/,
    each file `mode` (defaultMode 0440, read through the pod's fsGroup)."""
    data = folder / "..2024_05_01_10_00_00.123"
    data.mkdir(parents=True)
    for name, content in files.items():
        (data / name).write_bytes(content)
        (data / name).chmod(mode)
        (folder / name).symlink_to(Path("..data") / name)
    (folder / "..data").symlink_to(data.name, target_is_directory=True)
    return folder


@pytest.mark.parametrize("program, key_file", [("conductor-client", "client/client.key"),
                                               ("conductor-server", "server/server.key"),
                                               ("conductorctl", "operator/operator.key")])
def test_the_apps_read_a_secret_key_pair_named_by_conductor_key_pair_file(apps, tmp_path, program, key_file):
    keys = make_keys(apps, tmp_path / "keys")
    secret = secret_volume(tmp_path / "secret", {"node.key": (keys / key_file).read_bytes()})
    expected = public_key(apps, program, keys / key_file)
    env = {"CONDUCTOR_KEY_PAIR_FILE": secret / "node.key", "HOME": tmp_path}
    for argv in ([program, "--print-key"], [ENTRYPOINT, program, "--print-key"]):
        result = run(argv, apps, env)
        assert (result.returncode, result.stdout.strip()) == (0, expected), result.stderr
    # A flag wins over the variable.
    result = run([program, "--print-key", "--key-pair", keys / key_file], apps,
                 {"CONDUCTOR_KEY_PAIR_FILE": tmp_path / "none.key"})
    assert (result.returncode, result.stdout.strip()) == (0, expected), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "secret"]  # no copies made


def test_the_apps_refuse_a_key_pair_every_user_may_read_naming_file_and_mode(apps, tmp_path):
    keys = make_keys(apps, tmp_path / "keys")
    secret = secret_volume(tmp_path / "secret", {"client.key": (keys / "client" / "client.key").read_bytes()},
                           mode=0o444)
    result = run(["conductor-client", "--print-key"], apps, {"CONDUCTOR_KEY_PAIR_FILE": secret / "client.key"})
    assert result.returncode != 0
    assert f"{secret / 'client.key'}:1: key file refused: mode 0444" in result.stderr, result.stderr


@pytest.mark.parametrize("program", ["conductor-server", "conductor-client", "conductorctl"])
def test_the_apps_refuse_a_missing_key_pair_file_with_exit_2_and_create_none(apps, tmp_path, program):
    missing = tmp_path / "secret" / "node.key"
    result = run([ENTRYPOINT, program, "--print-key"], apps, {"CONDUCTOR_KEY_PAIR_FILE": missing})
    assert result.returncode == 2, result.stderr
    assert f"CONDUCTOR_KEY_PAIR_FILE: key pair file '{missing}' does not exist" in result.stderr
    assert not missing.exists()


@pytest.mark.parametrize("program", ["conductor-client", "conductorctl"])
@pytest.mark.parametrize("content, complaint", [(None, "cannot read the server key file"),
                                                ("\n# none\n", "holds no key")])
def test_the_apps_refuse_an_unusable_server_key_file_with_exit_2(apps, tmp_path, program, content, complaint):
    key_file = tmp_path / "server.pub"
    if content is not None:
        key_file.write_text(content)
    result = run([ENTRYPOINT, program, "--print-key", "--key-file", tmp_path / "node.key"], apps,
                 {"CONDUCTOR_SERVER_KEY_FILE": key_file, "HOME": tmp_path})
    assert result.returncode == 2, result.stderr
    assert "CONDUCTOR_SERVER_KEY_FILE: " in result.stderr and complaint in result.stderr
    assert str(key_file) in result.stderr


def test_the_entrypoint_hands_a_key_pair_to_other_programs_as_conductor_key_file(apps, tmp_path):
    keys = make_keys(apps, tmp_path / "keys")
    secret = secret_volume(tmp_path / "secret", {"operator.key": (keys / "operator" / "operator.key").read_bytes()})
    result = run([ENTRYPOINT, "sh", "-c", 'printf %s "$CONDUCTOR_KEY_FILE"'], apps,
                 {"CONDUCTOR_KEY_PAIR_FILE": secret / "operator.key"})
    assert (result.returncode, result.stdout) == (0, str(secret / "operator.key"))


def test_the_entrypoint_refuses_an_unreadable_key_pair_file(apps, tmp_path):
    marker = tmp_path / "ran"
    result = run([ENTRYPOINT, "touch", marker], apps, {"CONDUCTOR_KEY_PAIR_FILE": tmp_path / "none.key"})
    assert result.returncode == 2 and "none.key" in result.stderr and not marker.exists()


def test_the_entrypoint_without_a_program_is_a_usage_error(apps):
    result = run([ENTRYPOINT], apps)
    assert result.returncode == 2 and "no program given" in result.stderr


def test_runtime_packages_names_the_packages_of_the_needed_libraries(apps):
    result = run([DOCKER / "runtime-packages", apps / "conductor-server"], apps)
    assert result.returncode == 0, result.stderr
    packages = result.stdout.split()
    assert packages == sorted(set(packages))
    assert {"libzmq5", "libsodium23", "libarchive13", "libc6"} <= set(packages)
    assert "libbsd0" not in packages  # libzmq5's own dependency: apt brings it


def test_runtime_packages_fails_on_something_that_is_no_binary(apps, tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    result = run([DOCKER / "runtime-packages", script], apps)
    assert result.returncode != 0
