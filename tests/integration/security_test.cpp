// Security end to end: a CURVE server with a ZAP allow-list against an authorized client, an
// unlisted key, a plain client and a key revoked while its client works. Real processes on
// 127.0.0.1, every wait bounded by a deadline.
#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "cluster.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using conductor::test::ChildOptions;
using conductor::test::ChildProcess;
using conductor::test::Cluster;
using conductor::test::deadline_in;
using conductor::test::kClientBin;
using conductor::test::kServerBin;
using conductor::test::read_file;
using conductor::test::VersionSpec;
using conductor::test::wait_until;
using conductor::test::write_file;

namespace {

// A quick training, or one that waits for `release` to exist (so the item is still running
// when the test revokes the key).
VersionSpec version(const std::string& name, int target, const std::string& wait_for = {}) {
  std::string script = "echo 'Epoch 1/1'\n";
  if (!wait_for.empty()) {
    script += "touch started.flag-not-returned\n"
              "i=0; while [ ! -f '" + wait_for + "' ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n";
  }
  script += "head -c 256 /dev/urandom > model.h5\n";
  return VersionSpec{name, target, script, {}};
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// The public key a client folder will use, made by the app itself.
std::string client_key(const fs::path& workdir) {
  ChildProcess print(ChildOptions{{kClientBin.string(), "--workdir", workdir.string(), "--print-key"},
                                  workdir.parent_path() / (workdir.filename().string() + ".key.out"),
                                  {},
                                  {}});
  auto status = print.wait_for_exit(10s);
  REQUIRE(status);
  REQUIRE(status->exited_with(0));
  auto key = trimmed(read_file(workdir.parent_path() / (workdir.filename().string() + ".key.out")));
  REQUIRE(key.size() == 40);
  return key;
}

std::string server_key(const fs::path& server_dir) {
  ChildProcess print(ChildOptions{{kServerBin.string(), "--workdir", server_dir.string(), "--print-key"},
                                  server_dir.parent_path() / "server.key.out",
                                  {},
                                  {}});
  auto status = print.wait_for_exit(10s);
  REQUIRE(status);
  REQUIRE(status->exited_with(0));
  auto key = trimmed(read_file(server_dir.parent_path() / "server.key.out"));
  REQUIRE(key.size() == 40);
  return key;
}

std::unique_ptr<ChildProcess> start_client(Cluster& cluster, const std::string& name,
                                           const std::string& server_public_key) {
  std::vector<std::string> argv = {kClientBin.string(), cluster.endpoint(), "--workdir",
                                   (cluster.root() / "clients" / name).string(), "--name", name,
                                   "--heartbeat-ms", "200"};
  if (!server_public_key.empty()) {
    argv.push_back("--server-key");
    argv.push_back(server_public_key);
  }
  return std::make_unique<ChildProcess>(ChildOptions{argv, cluster.root() / (name + ".out"), {}, {}});
}

bool log_mentions(const Cluster& cluster, const std::string& text) {
  return cluster.server_log().find(text) != std::string::npos;
}

}  // namespace

TEST_CASE("only an authorized key gets work from a CURVE server; unlisted and plain clients get nothing") {
  Cluster cluster("conductor-security");
  conductor::test::write_configuration(cluster.server_dir(), 0.0, {version("secured", 3)});
  fs::create_directories(cluster.root() / "clients");
  const std::string good = client_key(cluster.root() / "clients" / "good");
  client_key(cluster.root() / "clients" / "unlisted");  // has a key, but nobody listed it
  const std::string key = server_key(cluster.server_dir());
  write_file(cluster.server_dir() / "config" / "authorized_keys", good + " the good client\n");
  cluster.start_server({"--secure"});

  // The intruders come first, so they would get the work if they were let in.
  auto unlisted = start_client(cluster, "unlisted", key);
  auto plain = start_client(cluster, "plain", "");
  auto forged = start_client(cluster, "wrong-server-key", std::string(40, 'a'));
  // They get three seconds to get in; the wait ends early if one does.
  CHECK_FALSE(wait_until(deadline_in(3s), [&] { return log_mentions(cluster, "Client connected"); }));
  CHECK(cluster.model_ids("secured").empty());

  auto client = start_client(cluster, "good", key);
  bool done = wait_until(deadline_in(30s), [&] { return cluster.model_ids("secured").size() == 3; });
  INFO(cluster.diagnostics());
  REQUIRE(done);
  for (const auto& handout : cluster.handouts()) CHECK(handout.host == "good");
  CHECK_FALSE(log_mentions(cluster, "Client connected: unlisted"));
  CHECK_FALSE(log_mentions(cluster, "Client connected: plain"));
  CHECK_FALSE(log_mentions(cluster, "Client connected: wrong-server-key"));
  CHECK(unlisted->is_running());  // refused, yet still trying: nothing crashed
  CHECK(plain->is_running());
  // The key file the server made is private.
  auto perms = fs::status(cluster.server_dir() / "config" / "server.key").permissions();
  CHECK((perms & (fs::perms::group_all | fs::perms::others_all)) == fs::perms::none);
}

TEST_CASE("revoking a key takes effect without a restart: the client is dropped and uploads nothing") {
  Cluster cluster("conductor-revoke");
  const fs::path release = cluster.root() / "release.flag";
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {version("guarded", 1, release.string())});
  fs::create_directories(cluster.root() / "clients");
  const std::string worker = client_key(cluster.root() / "clients" / "worker");
  const std::string key = server_key(cluster.server_dir());
  const fs::path allowed = cluster.server_dir() / "config" / "authorized_keys";
  write_file(allowed, worker + "\n");
  cluster.start_server({"--secure"});
  auto client = start_client(cluster, "worker", key);
  bool running = wait_until(deadline_in(15s), [&] { return !cluster.handouts().empty(); });
  INFO(cluster.diagnostics());
  REQUIRE(running);

  write_file(allowed, "# worker revoked\n");
  bool dropped = wait_until(deadline_in(10s), [&] { return log_mentions(cluster, "key revoked"); });
  REQUIRE(dropped);
  write_file(release, "go");  // the training ends now; its result must not get in
  CHECK_FALSE(wait_until(deadline_in(3s), [&] { return !cluster.model_ids("guarded").empty(); }));
  CHECK(cluster.server().is_running());
  CHECK(cluster.handouts().size() == 1);  // nobody else is allowed, so nobody got it again
}

namespace {

// `files` laid out as kubelet mounts a Secret or ConfigMap under `folder`: each NAME a link to
// ..data/NAME, ..data a link to a timestamped folder, the files `mode`.
void mount_like_kubelet(const fs::path& folder,
                        const std::vector<std::pair<std::string, std::string>>& files,
                        fs::perms mode) {
  const fs::path data = folder / "..2024_05_01_10_00_00.123";
  fs::create_directories(data);
  for (const auto& [name, content] : files) {
    write_file(data / name, content);
    fs::permissions(data / name, mode, fs::perm_options::replace);
    fs::create_symlink(fs::path("..data") / name, folder / name);
  }
  fs::create_directory_symlink(data.filename(), folder / "..data");
}

}  // namespace

TEST_CASE(
    "a client with only CONDUCTOR_HOST, _SERVER_KEY_FILE and _KEY_PAIR_FILE gets work from a CURVE "
    "server") {
  Cluster cluster("conductor-env-keys");
  conductor::test::write_configuration(cluster.server_dir(), 0.0, {version("mounted", 2)});
  fs::create_directories(cluster.root() / "made");
  const std::string worker = client_key(cluster.root() / "made");  // made/client.key
  const std::string key = server_key(cluster.server_dir());
  write_file(cluster.server_dir() / "config" / "authorized_keys", worker + " workers\n");
  cluster.start_server({"--secure"});

  // As a pod gets them: the key pair from a Secret (0440 through fsGroup), the server's
  // public key from a ConfigMap, both links into ..data/.
  const fs::path secret = cluster.root() / "mounts" / "client-key";
  const fs::path config_map = cluster.root() / "mounts" / "server-public-key";
  mount_like_kubelet(secret, {{"client.key", read_file(cluster.root() / "made" / "client.key")}},
                     fs::perms(0440));
  mount_like_kubelet(config_map, {{"server.pub", key + "\n"}}, fs::perms(0644));
  const fs::path workdir = cluster.root() / "clients" / "mounted";
  ChildProcess client(
      ChildOptions{{kClientBin.string(), "--workdir", workdir.string(), "--name", "env-only",
                    "--heartbeat-ms", "200"},
                   cluster.root() / "env-only.out",
                   {{"CONDUCTOR_HOST", cluster.endpoint()},
                    {"CONDUCTOR_SERVER_KEY", ""},
                    {"CONDUCTOR_SERVER_KEY_FILE", (config_map / "server.pub").string()},
                    {"CONDUCTOR_KEY_PAIR_FILE", (secret / "client.key").string()}},
                   {}});
  bool done =
      wait_until(deadline_in(30s), [&] { return cluster.model_ids("mounted").size() == 2; });
  INFO(cluster.diagnostics() << "\nclient: " << client.output());
  REQUIRE(done);
  for (const auto& handout : cluster.handouts()) CHECK(handout.host == "env-only");
  CHECK(log_mentions(cluster, "Client connected: env-only"));
  // It used the mounted pair and made no key of its own.
  CHECK_FALSE(fs::exists(workdir / "client.key"));
}
