// conductorctl against the real server and clients on 127.0.0.1: its changes take effect and
// persist, its --json output is an API, its readable output carries the numbers, and its exit
// codes tell scripts what happened.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "cluster.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using conductor::test::Cluster;
using conductor::test::contains;
using conductor::test::deadline_in;
using conductor::test::FlagOnExit;
using conductor::test::parse_json;
using conductor::test::read_file;
using conductor::test::VersionSpec;
using conductor::test::wait_until;
using json = nlohmann::json;

namespace {

constexpr const char* kTrainScript = R"(echo "Epoch 1/1"
test -f data.csv || { echo "data.csv is missing" >&2; exit 9; }
head -c 256 /dev/urandom > model.h5
)";

const std::vector<std::pair<std::string, std::string>> kPayload = {{"data.csv", "x,y\n1,2\n"}};

const json* find_version(const json& status, const std::string& name) {
  for (const auto& version : status.at("versions")) {
    if (version.at("name") == name) return &version;
  }
  return nullptr;
}

// A port on 127.0.0.1 that nothing listens on (bound, then released).
int unused_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
               ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  ::close(fd);
  REQUIRE(bound);
  return ntohs(address.sin_port);
}


}  // namespace

TEST_CASE(
    "conductorctl set-target and set-reserve take effect at once and survive a server restart") {
  Cluster cluster("conductor-ctl-persist");
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"g", 1, kTrainScript, kPayload}});
  cluster.start_server();
  cluster.start_client("solo");
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return cluster.model_ids("g").size() == 1; }),
                  cluster.diagnostics());

  auto target = cluster.ctl({"set-target", "g", "3"});
  CHECK(target.status.exited_with(0));
  CHECK(contains(target.out, "Target of g set to 3"));
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return cluster.model_ids("g").size() == 3; }),
                  cluster.diagnostics());

  // With every client reserved for predictions, new training waits.
  CHECK(parse_json(cluster.ctl({"set-reserve", "1", "--json"}))["reserve_nodes"] == 1.0);
  CHECK(parse_json(cluster.ctl({"set-target", "g", "5", "--json"})) ==
        json{{"version", "g"}, {"target", 5}});
  json status = parse_json(cluster.ctl({"status", "--json"}));
  CHECK(status["reserve_nodes"] == 1.0);
  REQUIRE(status["clients"].size() == 1);
  CHECK(status["clients"][0]["reserved"] == true);
  CHECK_FALSE(wait_until(deadline_in(1500ms), [&] { return cluster.model_ids("g").size() > 3; }));
  const std::string config = read_file(cluster.server_dir() / "config" / "config.xml");
  CHECK(contains(config, "<ReserveNodes>1</ReserveNodes>"));
  CHECK(contains(config, "<TargetModels>5</TargetModels>"));

  cluster.restart_server();
  REQUIRE_MESSAGE(wait_until(deadline_in(30s),
                             [&] {
                               status = parse_json(cluster.ctl({"status", "--json"}));
                               return status["clients"].size() == 1;
                             }),
                  cluster.diagnostics());
  CHECK(status["reserve_nodes"] == 1.0);
  CHECK(status["clients"][0]["reserved"] == true);
  const json* g = find_version(status, "g");
  REQUIRE(g != nullptr);
  CHECK((*g)["target"] == 5);
  CHECK((*g)["stored"] == 3);
  CHECK((*g)["queued"] == 2);
  CHECK(cluster.model_ids("g").size() == 3);

  CHECK(cluster.ctl({"set-reserve", "0"}).status.exited_with(0));
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return cluster.model_ids("g").size() == 5; }),
                  cluster.diagnostics());
}

TEST_CASE("conductorctl add-version uploads a folder that then trains; remove-version and select") {
  Cluster cluster("conductor-ctl-versions");
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"old", 0, kTrainScript, kPayload}});
  const fs::path upload = cluster.root() / "upload" / "fresh";
  conductor::test::write_version_folder(upload, VersionSpec{"fresh", 2, kTrainScript, kPayload});
  cluster.start_server();
  cluster.start_client("solo");

  auto added = cluster.ctl({"add-version", upload.string()});
  CHECK(added.status.exited_with(0));
  CHECK(contains(added.out, "Version fresh added"));
  REQUIRE_MESSAGE(
      wait_until(deadline_in(30s), [&] { return cluster.model_ids("fresh").size() == 2; }),
      cluster.diagnostics());
  for (const std::string file : {"version.xml", "train.sh", "data.csv"}) {
    CHECK(read_file(cluster.version_dir("fresh") / file) == read_file(upload / file));
  }
  CHECK(parse_json(cluster.ctl({"add-version", "--json", "--name", "copy", upload.string()})) ==
        json{{"added", "copy"}});

  auto taken = cluster.ctl({"add-version", upload.string()});
  CHECK(taken.status.exited_with(3));
  CHECK(contains(taken.err, "version 'fresh' refused"));
  const fs::path bare = cluster.root() / "upload" / "bare";
  conductor::test::write_file(bare / "train.sh", kTrainScript);
  auto no_xml = cluster.ctl({"add-version", bare.string()});
  CHECK(no_xml.status.exited_with(3));
  CHECK(contains(no_xml.err, "holds no version.xml"));

  auto selected = cluster.ctl({"select", "fresh"});
  CHECK(selected.status.exited_with(0));
  CHECK(contains(selected.out, "Current version: fresh"));
  auto removed = cluster.ctl({"remove-version", "copy"});
  CHECK(removed.status.exited_with(0));
  CHECK(contains(removed.out, "Version copy removed; its stored models stay on disk"));
  CHECK(cluster.ctl({"set-target", "fresh", "0"}).status.exited_with(0));
  CHECK(cluster.ctl({"remove-version", "fresh"}).status.exited_with(0));
  json status = parse_json(cluster.ctl({"status", "--json"}));
  CHECK(find_version(status, "fresh") == nullptr);
  CHECK(find_version(status, "copy") == nullptr);
  CHECK(status["current_version"] == "old");
  CHECK(cluster.model_ids("fresh").size() == 2);

  cluster.restart_server();
  status = parse_json(cluster.ctl({"status", "--json"}));
  CHECK(find_version(status, "fresh") == nullptr);
  CHECK(find_version(status, "old") != nullptr);
}

TEST_CASE(
    "add-version to a server short of disk is refused in the operator's terms, nothing kept") {
  Cluster cluster("conductor-ctl-no-room");
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"old", 0, kTrainScript, kPayload}});
  // A reserve of 4 EiB: no file system has that much free.
  cluster.start_server({"--min-free-mb", std::to_string(std::uint64_t{1} << 42)});
  const std::string reserve = std::to_string(std::uint64_t{1} << 62);
  // Beyond what is received into memory: refused before anything is pulled.
  const fs::path large = cluster.root() / "upload" / "large";
  conductor::test::write_version_folder(large, VersionSpec{"large", 1, kTrainScript, kPayload});
  conductor::test::write_file(large / "weights.bin", conductor::test::pseudo_random(2u << 20));
  auto refused = cluster.ctl({"add-version", large.string()});
  CHECK_FALSE(refused.status.exited_with(0));
  const bool names_reserve =
      contains(refused.err, "version folder 'large' (") &&
      contains(refused.err, " bytes packed) refused: receiving it would leave less than " +
                                reserve + " bytes free in the server's working folder");
  CHECK_MESSAGE(names_reserve, refused.err);
  // Small enough for memory: pulled, and refused where it would be written.
  const fs::path small = cluster.root() / "upload" / "small";
  conductor::test::write_version_folder(small, VersionSpec{"small", 1, kTrainScript, kPayload});
  auto unpacked = cluster.ctl({"add-version", small.string()});
  CHECK_FALSE(unpacked.status.exited_with(0));
  const bool names_entry = contains(unpacked.err, "version folder refused: archive entry") &&
                           contains(unpacked.err, "writing it would leave less than " + reserve);
  CHECK_MESSAGE(names_entry, unpacked.err);
  CHECK_FALSE(fs::exists(cluster.version_dir("large")));
  CHECK_FALSE(fs::exists(cluster.version_dir("small")));
  CHECK(conductor::test::list_names(cluster.server_dir() / "spool" / "staging").empty());
}

TEST_CASE("conductorctl status and models print the documented JSON fields and readable tables") {
  Cluster cluster("conductor-ctl-output");
  const fs::path flag = cluster.root() / "release";
  FlagOnExit release(flag);
  const std::string blocking =
      "echo \"Epoch 1/4\"\ni=0\nwhile [ ! -e '" + flag.string() +
      "' ]; do\n  i=$((i+1)); [ $i -gt 900 ] && exit 4\n  sleep 0.1\ndone\n"
      "head -c 64 /dev/urandom > model.h5\n";
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"v", 3, blocking, {}}});
  std::vector<std::string> models;
  for (double accuracy : {0.75, 0.5}) {
    models.push_back(conductor::test::store_model(
        cluster.server_dir(), "v",
        {{"model.h5", "1"},
         {"metrics.json", json{{"accuracy", accuracy}, {"loss", 0.25}}.dump()}}));
  }
  cluster.start_server();
  cluster.start_client("worker", {{"CONDUCTOR_TYPE", "gpu"}, {"CONDUCTOR_OS", "ubuntu"}});

  json status;
  REQUIRE_MESSAGE(wait_until(deadline_in(30s),
                             [&] {
                               status = parse_json(cluster.ctl({"status", "--json"}));
                               return status["clients"].size() == 1 &&
                                      status["clients"][0]["epoch"] == 1;
                             }),
                  cluster.diagnostics() << status.dump(2));
  const json& client = status["clients"][0];
  CHECK(client["host"] == "worker");
  CHECK(client["type"] == "gpu");
  CHECK(client["os"] == "ubuntu");
  CHECK(client["id"].is_string());
  CHECK(client["version"].is_string());
  CHECK(client["reserved"] == false);
  CHECK(client["state"] == "working");
  CHECK(client["total_epochs"] == 4);
  CHECK(client["item_type"] == "training");
  CHECK(client["item_version"] == "v");
  const std::string item = client["item"];
  // One slot (no GPU list was given or found) holding that item.
  CHECK(client["slots"] == 1);
  CHECK(client["gpus"] == json::array());
  CHECK(client["busy_slots"] == 1);
  CHECK(client["waiting_slots"] == 0);
  REQUIRE(client["items"].size() == 1);
  CHECK(client["items"][0] == json{{"item", item}, {"item_type", "training"}, {"item_version", "v"},
                                   {"slot", 0}, {"epoch", 1}, {"total_epochs", 4}});
  REQUIRE(status["active"].size() == 1);
  const json& active = status["active"][0];
  CHECK(active["id"] == item);
  CHECK(active["type"] == "training");
  CHECK(active["version"] == "v");
  CHECK(active["client"] == "worker");
  CHECK(active["slot"] == 0);
  CHECK(active["attempt"].is_number_integer());
  CHECK(active["running_seconds"].is_number());
  CHECK(status["queued"].empty());
  CHECK(status["reserve_nodes"] == 0.0);
  CHECK(status["current_version"] == "v");
  CHECK(status["pending_predictions"] == 0);
  REQUIRE(status["versions"].size() == 1);
  CHECK(status["versions"][0] == json{{"name", "v"},
                                      {"local", false},
                                      {"current", true},
                                      {"target", 3},
                                      {"stored", 2},
                                      {"queued", 0},
                                      {"active", 1},
                                      {"requires", "any"}});

  // The readable form of the same state carries the same numbers.
  auto readable = cluster.ctl({"status"});
  CHECK(readable.status.exited_with(0));
  CHECK(contains(readable.out, "Clients: 1 (reserve nodes 0)"));
  CHECK(contains(readable.out, "worker"));
  CHECK(contains(readable.out, item.substr(0, 8) + " training"));
  CHECK(contains(readable.out, "1/4"));
  CHECK(contains(readable.out, "Versions (current: v)"));
  CHECK(contains(readable.out, "2/3"));
  CHECK(contains(readable.out, "Queue: 0 queued; 1 active"));

  json listed = parse_json(cluster.ctl({"models", "v", "--json"}));
  CHECK(listed["version"] == "v");
  REQUIRE(listed["models"].size() == 2);
  std::set<std::string> ids;
  for (const auto& model : listed["models"]) {
    ids.insert(model["id"].get<std::string>());
    CHECK(model["metrics"]["loss"] == 0.25);
    CHECK(model["epochs"] == 2);
    CHECK(model["node"] == "seeded");
    CHECK(model["duration"] == 1.5);
  }
  CHECK(ids == std::set<std::string>(models.begin(), models.end()));
  auto table = cluster.ctl({"models", "v"});
  CHECK(table.status.exited_with(0));
  CHECK(contains(table.out, "Models of v: 2"));
  CHECK(contains(table.out, "accuracy"));
  for (const auto& id : models) CHECK(contains(table.out, id));
  CHECK(contains(table.out, "0.75"));
  CHECK(contains(table.out, "0.25"));
  CHECK(contains(table.out, "1.5s"));

  // The address may also come from --server or $CONDUCTOR_HOST.
  auto by_option = conductor::test::run_ctl(cluster.root(),
                                            {"--server", cluster.endpoint(), "status", "--json"});
  CHECK(parse_json(by_option)["clients"].size() == 1);
  auto by_environment = conductor::test::run_ctl(cluster.root(), {"models", "v", "--json"},
                                                 {{"CONDUCTOR_HOST", cluster.endpoint()}});
  CHECK(parse_json(by_environment)["models"].size() == 2);
}

TEST_CASE("conductorctl exits 3 with the server's reason when the server refuses") {
  Cluster cluster("conductor-ctl-refused");
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"v", 0, kTrainScript, kPayload}});
  cluster.start_server();
  const fs::path rows = cluster.root() / "rows.csv";
  conductor::test::write_file(rows, "a,b\n1,2\n");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"set-target", "nope", "3"}, "version 'nope' is not known"},
      {{"models", "nope"}, "version 'nope' is not known"},
      {{"select", "nope"}, "'nope'"},
      {{"remove-version", "nope"}, "'nope'"},
      {{"predict", rows.string()}, "prediction refused: version 'v' has no PredictionCommands"},
      {{"predict", "--version", "nope", rows.string()}, "version 'nope' is not known"},
  };
  for (const auto& [arguments, reason] : cases) {
    auto run = cluster.ctl(arguments);
    INFO("conductorctl " << arguments[0] << ": " << run.err);
    CHECK(run.status.exited_with(3));
    CHECK(contains(run.err, reason));
    CHECK(run.out.empty());
  }
}

TEST_CASE("conductorctl exits 2 with a message for bad arguments, before any network") {
  conductor::test::TempDir root("conductor-ctl-arguments");
  const std::string host = "127.0.0.1:" + std::to_string(unused_port());
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{host}, "subcommand"},
      {{host, "frobnicate"}, "frobnicate"},
      {{host, "--server-key", "short", "status"}, "server key 'short' refused"},
      {{host, "set-reserve", "abc"}, "abc"},
      {{host, "set-reserve", "1.5"}, "1.5"},
      {{host, "set-target", "v"}, "N is required"},
      {{host, "set-target", "v", "-1"}, "-1"},
      {{host, "models"}, "VERSION is required"},
      {{host, "predict", "-"}, "prediction rows '-' refused: empty"},
      {{host, "predict", "--top", "2", "rows.csv"}, "--by"},
      {{host, "predict", (root / "missing.csv").string()}, "missing.csv"},
      {{host, "add-version", (root / "missing").string()}, "missing"},
      {{host, "status", "--timeout", "-1"}, "'-1' is not a number of seconds"},
      {{host, "predict", "--wait", "soon", "-"}, "'soon' is not a number of seconds"},
      {{"no such host::", "status"}, "no such host::"},
      {{"status"}, "no server given"},
  };
  for (const auto& [arguments, message] : cases) {
    auto run = conductor::test::run_ctl(root.path(), arguments, {{"CONDUCTOR_HOST", ""}});
    std::string line;
    for (const auto& argument : arguments) line += " " + argument;
    INFO("conductorctl" << line << "\nstderr: " << run.err);
    CHECK(run.status.exited_with(2));
    CHECK(contains(run.err, message));
    CHECK(run.took < 5s);
  }
  CHECK(conductor::test::run_ctl(root.path(), {"--help"}).status.exited_with(0));
}

TEST_CASE("conductorctl exits 6 with a clear error when no server answers within the timeout") {
  conductor::test::TempDir root("conductor-ctl-unreachable");
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(unused_port());
  auto run = conductor::test::run_ctl(root.path(), {"status", "--timeout", "1"},
                                      {{"CONDUCTOR_HOST", endpoint}});
  INFO("stderr: " << run.err);
  CHECK(run.status.exited_with(6));
  CHECK(contains(run.err, "no reply from " + endpoint + " within 1000 ms"));
  CHECK(run.took >= 900ms);
  CHECK(run.took < 5s);
  CHECK(run.out.empty());
}

TEST_CASE("conductorctl reaches a CURVE server only with its key and an authorized operator key") {
  Cluster cluster("conductor-ctl-curve");
  conductor::test::write_configuration(cluster.server_dir(), 0.3, {});
  const fs::path operator_key = cluster.root() / "operator.key";
  auto printed = conductor::test::run_ctl(cluster.root(),
                                          {"--print-key", "--key-file", operator_key.string()});
  REQUIRE(printed.status.exited_with(0));
  const std::string public_key = printed.out.substr(0, printed.out.find('\n'));
  REQUIRE(public_key.size() == 40);
  conductor::test::write_file(cluster.server_dir() / "config" / "authorized_keys",
                              public_key + " operator\n");
  cluster.start_server({"--secure"});
  std::string server_key = read_file(cluster.server_dir() / "config" / "server.pub");
  server_key = server_key.substr(0, server_key.find('\n'));
  REQUIRE(server_key.size() == 40);

  auto status = cluster.ctl(
      {"--server-key", server_key, "--key-file", operator_key.string(), "status", "--json"});
  CHECK(parse_json(status)["reserve_nodes"] == 0.3);
  auto by_environment = conductor::test::run_ctl(
      cluster.root(), {"set-reserve", "0.5", "--key-file", operator_key.string()},
      {{"CONDUCTOR_HOST", cluster.endpoint()}, {"CONDUCTOR_SERVER_KEY", server_key}});
  CHECK(by_environment.status.exited_with(0));

  // A plain connection, or a key the server does not list, never gets past the handshake.
  auto plain = cluster.ctl({"status", "--timeout", "1"});
  CHECK(plain.status.exited_with(6));
  CHECK(contains(plain.err, "no reply from"));
  const fs::path stranger = cluster.root() / "stranger.key";
  auto unlisted = cluster.ctl(
      {"--server-key", server_key, "--key-file", stranger.string(), "status", "--timeout", "1"});
  CHECK(unlisted.status.exited_with(6));
  CHECK(fs::exists(stranger));  // made on first use
  CHECK(contains(read_file(cluster.server_dir() / "config" / "config.xml"),
                 "<ReserveNodes>0.5</ReserveNodes>"));
}

TEST_CASE("a target lowered while its items run is never exceeded: surplus results are not kept") {
  Cluster cluster("conductor-lowered-target");
  const fs::path release = cluster.root() / "release.flag";
  const std::string script = "echo 'Epoch 1/1'\n"
                             "i=0; while [ ! -f '" + release.string() +
                             "' ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n"
                             "head -c 256 /dev/urandom > model.h5\n";
  conductor::test::write_configuration(cluster.server_dir(), 0.0, {VersionSpec{"shrinking", 3, script, {}}});
  cluster.start_server();
  for (const char* name : {"a", "b", "c"}) cluster.start_client(name);
  bool all_running = wait_until(deadline_in(20s), [&] { return cluster.handouts().size() == 3; });
  INFO(cluster.diagnostics());
  REQUIRE(all_running);

  auto lowered = cluster.ctl({"set-target", "shrinking", "1"});
  REQUIRE(lowered.status.exited_with(0));
  conductor::test::write_file(release, "go");
  // All three finish; the two results after the first model are refused, not stored.
  auto refusals = [&] {
    const std::string log = cluster.server_log();
    std::size_t count = 0;
    for (auto at = log.find("is at its target"); at != std::string::npos;
         at = log.find("is at its target", at + 1)) {
      ++count;
    }
    return count;
  };
  bool settled = wait_until(deadline_in(20s), [&] { return refusals() == 2; });
  INFO(cluster.diagnostics());
  REQUIRE(settled);
  CHECK(cluster.model_ids("shrinking").size() == 1);
  CHECK_FALSE(wait_until(deadline_in(2s), [&] { return cluster.model_ids("shrinking").size() > 1; }));
}
