// Soak test: four conductor-clients and the conductor-server are SIGKILLed and started again
// at random while two versions fill up, round after round for about 75 s; after each round
// every version holds exactly its target and every model is intact and stored once, and in
// the end nothing half-done is left. At most about three minutes; the seed is printed on
// failure and can be forced with CONDUCTOR_TEST_SEED.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "chaos_cluster.hpp"
#include "support/child_process.hpp"

using namespace std::chrono_literals;
using conductor::test::ChaosCluster;
using conductor::test::deadline_in;
using conductor::test::VersionSpec;
using conductor::test::wait_until;

namespace {

// Lines that only a crash or a bug in the server's own handling would print.
void check_server_did_not_fail(const ChaosCluster& cluster) {
  for (const char* sign : {"terminate called", "Assertion", "unexpected error", "Segmentation",
                           "AddressSanitizer", "runtime error:"}) {
    INFO("server output:\n" << conductor::test::tail_lines(cluster.server_output(), 60));
    CHECK_MESSAGE(cluster.server_output().find(sign) == std::string::npos,
                  "found '" << sign << "'");
  }
  for (const char* sign : {"Failed to handle a message", "Housekeeping failed"}) {
    const std::string log = cluster.server_log();
    const auto at = log.find(sign);
    CHECK_MESSAGE(at == std::string::npos,
                  "log.txt: " << log.substr(at == std::string::npos ? 0 : at, 400));
  }
}

}  // namespace

TEST_CASE(
    "clients and the server SIGKILLed and restarted at random still bring every version "
    "exactly to its target, each model intact and stored once") {
  const std::uint64_t seed = conductor::test::test_seed();
  CAPTURE(seed);
  std::mt19937_64 random(seed);
  const auto started = std::chrono::steady_clock::now();

  ChaosCluster cluster("conductor-soak");
  const std::map<std::string, int> targets = {{"soak-a", 12}, {"soak-b", 8}};
  std::vector<VersionSpec> versions;
  for (const auto& [name, target] : targets) {
    std::string data(256 * 1024, '\0');
    for (auto& byte : data) byte = static_cast<char>(random() & 0xff);
    // Models of 1.5 MiB: two UPLOADs, so kills also land between them.
    versions.push_back(VersionSpec{name,
                                   target,
                                   conductor::test::hashing_train_script(3 << 19, 300, 1000),
                                   {{"data.bin", data}}});
  }
  conductor::test::write_configuration(cluster.server_dir(), 0.0, versions);
  cluster.start_server();
  const std::vector<std::string> clients = {"one", "two", "three", "four"};
  for (const auto& name : clients) cluster.start_client(name, cluster.endpoint());

  bool overshot = false;
  auto all_at_target = [&] { return conductor::test::all_at_target(cluster, targets, overshot); };
  // Checks the models of one round; fails the test on any stored twice within it.
  auto check_round = [&](int expected_total) {
    std::set<std::string> hashes;
    for (const auto& [version, target] : targets) {
      INFO("version " << version);
      CHECK(static_cast<int>(cluster.model_ids(version).size()) == target);
      conductor::test::check_stored_models(cluster, version, hashes);
    }
    CHECK(static_cast<int>(hashes.size()) == expected_total);
  };

  // One step of chaos: a kill every 0.3-1.2 s, a quarter of them the server's. A killed client
  // comes back at the next step, the server after up to 0.8 s. A process that is found dead
  // before its kill crashed.
  int server_kills = 0;
  int client_kills = 0;
  std::vector<std::string> down;
  auto restart_clients = [&] {
    for (const auto& name : down) cluster.start_client(name, cluster.endpoint());
    down.clear();
  };
  auto kill_server = [&] {
    INFO("server run " << server_kills + 1 << " ended by itself:\n" << cluster.diagnostics());
    REQUIRE(cluster.server_running());
    cluster.kill_server();
    ++server_kills;
  };
  auto chaos_step = [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + random() % 900));
    restart_clients();
    if (random() % 4 == 0) {
      kill_server();
      std::this_thread::sleep_for(std::chrono::milliseconds(random() % 800));
      cluster.start_server();
    } else {
      const std::string& name = clients[random() % clients.size()];
      INFO("client " << name << " ended by itself:\n" << cluster.diagnostics());
      REQUIRE(cluster.client_running(name));
      cluster.kill_client(name);
      ++client_kills;
      down.push_back(name);
    }
  };

  // Rounds: chaos until both versions are full (and each round saw kills of both kinds); then
  // the server dies, an operator empties the models folders, and the next round starts, until
  // 75 s have passed. Clients keep whatever they held across rounds.
  const int total_target = 20;
  int rounds = 0;
  for (;;) {
    ++rounds;
    const int server_kills_before = server_kills;
    const int client_kills_before = client_kills;
    const auto round_end = deadline_in(60s);
    while (!overshot && !(all_at_target() && server_kills > server_kills_before &&
                          client_kills >= client_kills_before + 3)) {
      REQUIRE_MESSAGE(std::chrono::steady_clock::now() < round_end,
                      "round " << rounds << " did not fill up in 60 s\n"
                               << cluster.diagnostics());
      chaos_step();
    }
    REQUIRE_FALSE_MESSAGE(overshot, cluster.diagnostics());
    if (std::chrono::steady_clock::now() - started > 75s) break;
    restart_clients();
    kill_server();
    {
      INFO("end of round " << rounds);
      check_round(total_target);
    }
    for (const auto& [version, target] : targets) {
      std::filesystem::remove_all(cluster.version_dir(version) / "models");
    }
    cluster.start_server();
  }
  restart_clients();
  const auto chaos_took = std::chrono::steady_clock::now() - started;
  INFO("rounds: " << rounds << ", server kills: " << server_kills
                  << ", client kills: " << client_kills);

  // Calm: the last round is full; nothing beyond the target may follow.
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return all_at_target() || overshot; }),
                  cluster.diagnostics());
  CHECK_FALSE_MESSAGE(wait_until(deadline_in(3s), [&] { return !all_at_target(); }),
                      cluster.diagnostics());
  CHECK_FALSE(overshot);

  CHECK_MESSAGE(cluster.server_running(), cluster.diagnostics());
  CHECK_MESSAGE(cluster.stop_clients(), cluster.diagnostics());
  check_round(total_target);
  conductor::test::check_no_partial_results(cluster, {"soak-a", "soak-b"});
  check_server_did_not_fail(cluster);
  CHECK(cluster.stop_server().exited_with(0));
  MESSAGE("soak test (seed " << seed << "): " << rounds << " rounds, " << server_kills
                             << " server and " << client_kills << " client kills in "
                             << std::chrono::duration_cast<std::chrono::seconds>(chaos_took).count()
                             << " s; done after "
                             << std::chrono::duration_cast<std::chrono::seconds>(
                                    std::chrono::steady_clock::now() - started)
                                    .count()
                             << " s");
}
