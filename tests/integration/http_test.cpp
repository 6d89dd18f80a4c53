// The server's HTTP endpoint against a real run on 127.0.0.1: /metrics and /api/status tell
// what the clients are doing and what they did, the bound address is reported, and bad
// --http addresses are refused with the documented exit codes.
#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "cluster.hpp"
#include "http_support.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using conductor::test::all_working_at;
using conductor::test::api_status;
using conductor::test::Cluster;
using conductor::test::contains;
using conductor::test::deadline_in;
using conductor::test::http_get;
using conductor::test::metric_samples;
using conductor::test::ReleaseOnExit;
using conductor::test::VersionSpec;
using conductor::test::wait_until;
using json = nlohmann::json;

namespace {

// Bytes of every package the server packed (one per version here).
double packed_bytes(const Cluster& cluster) {
  double total = 0;
  for (const auto& entry : fs::directory_iterator(cluster.server_dir() / "spool" / "packages")) {
    if (entry.path().extension() == ".tar") total += static_cast<double>(entry.file_size());
  }
  return total;
}

// The result bytes a client says it sent: "Item <id> finished in <s> s; sending <n> bytes".
double bytes_offered(const std::string& client_output) {
  static const std::regex kLine(R"(finished in \S+ s; sending (\d+) bytes)");
  double total = 0;
  for (std::sregex_iterator it(client_output.begin(), client_output.end(), kLine), end; it != end; ++it) {
    total += std::stod((*it)[1]);
  }
  return total;
}

bool log_has(const json& status, const std::string& part) {
  for (const auto& line : status["log"]) {
    if (line.get<std::string>().find(part) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

TEST_SUITE("http") {

TEST_CASE("/metrics and /api/status show a training run as it goes and when it is done") {
  Cluster cluster("conductor-http-run");
  const fs::path go = cluster.root() / "go";
  ReleaseOnExit release(go);
  conductor::test::write_configuration(
      cluster.server_dir(), 0.0, {conductor::test::held_version("g", 3, go)});
  const std::string url = conductor::test::start_server_with_http(cluster);
  cluster.start_client("a");
  cluster.start_client("b");

  // Both clients hold an item at epoch 2 of 4; the third item waits.
  json status;
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] {
                    status = api_status(url);
                    return all_working_at(status, 2, 2, 4);
                  }),
                  status.dump(2) << cluster.diagnostics());
  CHECK(status["server"]["http"] == url);
  CHECK(status["server"]["endpoint"] == cluster.endpoint());
  REQUIRE(status["versions"].size() == 1);
  CHECK(status["versions"][0] == json{{"name", "g"}, {"local", false}, {"current", true},
                                      {"target", 3}, {"stored", 0}, {"queued", 1}, {"active", 2},
                                      {"requires", "any"}});
  CHECK(status["queued_count"] == 1);
  CHECK(status["queued"].size() == 1);
  CHECK(status["active"].size() == 2);
  for (const auto& client : status["clients"]) CHECK(client["item_version"] == "g");
  CHECK(log_has(status, "handed to a"));
  CHECK(log_has(status, "handed to b"));

  auto metrics = metric_samples(url);
  CHECK(metrics["conductor_clients{type=\"cpu\",state=\"working\"}"] == 2);
  CHECK(metrics["conductor_clients{type=\"cpu\",state=\"idle\"}"] == 0);
  CHECK(metrics["conductor_items_active{type=\"training\"}"] == 2);
  CHECK(metrics["conductor_items_queued{type=\"training\"}"] == 1);
  CHECK(metrics["conductor_items_leased{type=\"training\"}"] == 0);
  // Probes ask /healthz while clients work: the network thread turns, so it is healthy.
  auto health = conductor::test::http_get(url, "/healthz");
  CHECK(health.status == 200);
  CHECK(health.body == "ok\n");
  CHECK(metrics["conductor_version_models_stored{version=\"g\"}"] == 0);
  CHECK(metrics["conductor_version_models_target{version=\"g\"}"] == 3);
  CHECK(metrics["conductor_items_completed_total{type=\"training\"}"] == 0);
  // Each client fetched the package once.
  CHECK(metrics["conductor_transfer_bytes_total{direction=\"sent\"}"] == 2 * packed_bytes(cluster));
  CHECK(metrics["conductor_transfer_bytes_total{direction=\"received\"}"] == 0);

  conductor::test::write_file(go, "go\n");
  REQUIRE_MESSAGE(wait_until(deadline_in(60s), [&] {
                    metrics = metric_samples(url);
                    return metrics["conductor_items_completed_total{type=\"training\"}"] == 3 &&
                           metrics["conductor_clients{type=\"cpu\",state=\"idle\"}"] == 2;
                  }),
                  cluster.diagnostics());
  CHECK(cluster.model_ids("g").size() == 3);
  CHECK(metrics["conductor_version_models_stored{version=\"g\"}"] == 3);
  CHECK(metrics["conductor_items_active{type=\"training\"}"] == 0);
  CHECK(metrics["conductor_items_queued{type=\"training\"}"] == 0);
  CHECK(metrics["conductor_item_duration_seconds_count{type=\"training\"}"] == 3);
  CHECK(metrics["conductor_item_duration_seconds_bucket{type=\"training\",le=\"+Inf\"}"] == 3);
  CHECK(metrics["conductor_item_duration_seconds_sum{type=\"training\"}"] > 0);
  CHECK(metrics["conductor_item_failures_total{type=\"training\",reason=\"failed\"}"] == 0);
  CHECK(metrics["conductor_lease_expiries_total{type=\"training\"}"] == 0);
  // Three results; the slots asked for work with them (ready_slot), so beside the first READY
  // of each client only a READY repeated after heartbeat x liveness without an item is counted.
  CHECK(metrics["conductor_messages_received_total{type=\"RESULT\"}"] == 3);
  CHECK(metrics["conductor_messages_received_total{type=\"READY\"}"] < 2 + 3);
  CHECK(metrics["conductor_messages_received_total{type=\"HELLO\"}"] == 2);
  // The third item went to a client that had the package already; the results came back.
  CHECK(metrics["conductor_transfer_bytes_total{direction=\"sent\"}"] == 2 * packed_bytes(cluster));
  const double offered = bytes_offered(cluster.client("a").output()) +
                         bytes_offered(cluster.client("b").output());
  CHECK(offered > 0);
  CHECK(metrics["conductor_transfer_bytes_total{direction=\"received\"}"] == offered);

  status = api_status(url);
  CHECK(status["versions"][0]["stored"] == 3);
  CHECK(status["versions"][0]["active"] == 0);
  CHECK(status["counters"]["completed"]["training"] == 3);
  CHECK(status["counters"]["bytes_received"] == offered);
  CHECK(log_has(status, "(3/3)"));
  CHECK(cluster.stop_all()->exited_with(0));
}

TEST_CASE("a client asks for its next item with each result, also one it keeps for a restart") {
  Cluster cluster("conductor-http-ready");
  // Each item runs past the 2 s after which the client keeps its result in outbox/.
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"r", 3, "sleep 2.2\ntouch model.h5\n", {}}});
  const std::string url = conductor::test::start_server_with_http(cluster);
  cluster.start_client("a");
  std::map<std::string, double> metrics;
  REQUIRE_MESSAGE(
      wait_until(deadline_in(60s),
                 [&] {
                   metrics = metric_samples(url);
                   return metrics["conductor_items_completed_total{type=\"training\"}"] == 3;
                 }),
      cluster.diagnostics());
  CHECK(metrics["conductor_messages_received_total{type=\"RESULT\"}"] == 3);
  // One READY at the start; then each item came with the ACK of the one before. (A READY after
  // the last ACK only once the slot has waited a second: heartbeat 200 ms x liveness 5.)
  CHECK(metrics["conductor_messages_received_total{type=\"READY\"}"] <= 2);
  CHECK(contains(cluster.client("a").output(), "stored by the server"));
}

TEST_CASE("/metrics counts a failed attempt, a silent client's lease running out, and the retry") {
  Cluster cluster("conductor-http-faults");
  const fs::path go = cluster.root() / "go";
  const fs::path failed_once = cluster.root() / "failed-once";
  ReleaseOnExit release(go);
  // The first attempt fails; the second is held until the test lets it go.
  const std::string script = "if [ ! -f '" + failed_once.string() + "' ]; then touch '" +
                             failed_once.string() + "'; echo 'no luck' >&2; exit 3; fi\n" +
                             conductor::test::held_training_script(go);
  conductor::test::write_configuration(cluster.server_dir(), 0.0, {VersionSpec{"f", 1, script, {}}});
  const std::string url = conductor::test::start_server_with_http(cluster, {"--lease-ms", "1500"});
  auto& client = cluster.start_client("a");

  std::map<std::string, double> metrics;
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return all_working_at(api_status(url), 1, 2, 4); }),
                  cluster.diagnostics());
  metrics = metric_samples(url);
  CHECK(metrics["conductor_item_failures_total{type=\"training\",reason=\"failed\"}"] == 1);
  CHECK(metrics["conductor_item_failures_total{type=\"training\",reason=\"rejected\"}"] == 0);

  // A frozen client is dropped; its item waits out the lease, then goes back to the queue.
  client.kill(SIGSTOP);
  bool leased = false;
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] {
                    metrics = metric_samples(url);
                    leased = leased || metrics["conductor_items_leased{type=\"training\"}"] == 1;
                    return metrics["conductor_lease_expiries_total{type=\"training\"}"] == 1;
                  }),
                  cluster.diagnostics());
  CHECK(leased);
  CHECK(metrics["conductor_items_queued{type=\"training\"}"] == 1);
  CHECK(metrics["conductor_items_leased{type=\"training\"}"] == 0);
  CHECK(metrics["conductor_clients{type=\"cpu\",state=\"working\"}"] == 0);

  // Thawed, the client says HELLO with its item and takes it back; then it finishes.
  client.kill(SIGCONT);
  conductor::test::write_file(go, "go\n");
  REQUIRE_MESSAGE(wait_until(deadline_in(60s), [&] {
                    metrics = metric_samples(url);
                    return metrics["conductor_items_completed_total{type=\"training\"}"] == 1;
                  }),
                  cluster.diagnostics());
  CHECK(metrics["conductor_version_models_stored{version=\"f\"}"] == 1);
  CHECK(metrics["conductor_lease_expiries_total{type=\"training\"}"] == 1);
  CHECK(metrics["conductor_item_failures_total{type=\"training\",reason=\"failed\"}"] == 1);
  CHECK(api_status(url)["counters"]["failures"]["training"]["failed"] == 1);
}

TEST_CASE("a client name that is not UTF-8 does not break /api/status or conductorctl status") {
  Cluster cluster("conductor-http-names");
  conductor::test::write_configuration(cluster.server_dir(), 0.0, {});
  const std::string url = conductor::test::start_server_with_http(cluster);
  cluster.start_client("plain");
  // A second client whose name holds a byte that is not UTF-8.
  std::vector<std::string> argv = {conductor::test::kClientBin.string(), cluster.endpoint(),
                                   "--workdir", (cluster.root() / "odd").string(),
                                   "--name", "odd\xff" "name", "--heartbeat-ms", "200"};
  conductor::test::ChildProcess odd({argv, cluster.root() / "odd.out", {}, {}});
  json status;
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] {
                    status = api_status(url);
                    return status["clients"].size() == 2;
                  }),
                  cluster.diagnostics());
  std::set<std::string> hosts;
  for (const auto& client : status["clients"]) hosts.insert(client["host"]);
  CHECK(hosts == std::set<std::string>{"plain", "odd\xEF\xBF\xBDname"});
  auto ctl = cluster.ctl({"status", "--json"});
  CHECK(ctl.status.exited_with(0));
  CHECK(ctl.out.find("odd\xEF\xBF\xBDname") != std::string::npos);
}

TEST_CASE("conductor-server refuses a malformed --http address (exit 2) and one in use (exit 4)") {
  Cluster cluster("conductor-http-refused");
  conductor::test::write_configuration(cluster.server_dir(), 0.0, {});
  const std::string url = conductor::test::start_server_with_http(cluster);
  const std::string taken = url.substr(std::string("http://").size());

  auto run_server = [&](const std::string& http, const std::string& name) {
    std::vector<std::string> argv = {conductor::test::kServerBin.string(), "--workdir",
                                     (cluster.root() / name).string(), "--bind",
                                     "tcp://127.0.0.1:*", "--quiet", "--http", http};
    conductor::test::ChildProcess server({argv, cluster.root() / (name + ".out"), {}, {}});
    auto status = server.wait_for_exit(15s);
    INFO("output: " << server.output());
    REQUIRE(status.has_value());
    return std::make_pair(*status, server.output());
  };
  auto [malformed, malformed_output] = run_server("localhost:http", "second");
  CHECK(malformed.exited_with(2));
  CHECK(malformed_output.find("HTTP address 'localhost:http' refused") != std::string::npos);
  auto [in_use, in_use_output] = run_server(taken, "third");
  CHECK(in_use.exited_with(4));
  CHECK(in_use_output.find("cannot be bound") != std::string::npos);
  // The first server still answers.
  CHECK(http_get(url, "/metrics").status == 200);
}

}  // TEST_SUITE("http")
