// Fault tests: the real conductor-server and conductor-clients talking through a FaultRelay
// that loses, repeats, holds back and reorders messages and cuts links, also in the middle of
// package downloads and result uploads. Every wait is bounded; the seed is printed on failure
// and can be forced with CONDUCTOR_TEST_SEED.
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
#include "support/fault_relay.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using conductor::test::ChaosCluster;
using conductor::test::deadline_in;
using conductor::test::Direction;
using conductor::test::FaultOptions;
using conductor::test::FaultRelay;
using conductor::test::test_seed;
using conductor::test::VersionSpec;
using conductor::test::wait_until;

namespace {

std::string random_bytes(std::mt19937_64& random, std::size_t size) {
  std::string bytes(size, '\0');
  for (auto& byte : bytes) byte = static_cast<char>(random() & 0xff);
  return bytes;
}

// The versions of `targets`, each with a package of about 3 MiB (several CHUNKs) and training
// models of 3 MiB (several UPLOADs) in 100-400 ms.
void write_versions(const ChaosCluster& cluster, const std::map<std::string, int>& targets,
                    std::mt19937_64& random) {
  constexpr std::size_t kMiB = 1 << 20;
  std::vector<VersionSpec> versions;
  for (const auto& [name, target] : targets) {
    versions.push_back(VersionSpec{name,
                                   target,
                                   conductor::test::hashing_train_script(3 * kMiB, 100, 400),
                                   {{"data.bin", random_bytes(random, 3 * kMiB + 12345)}}});
  }
  conductor::test::write_configuration(cluster.server_dir(), 0.0, versions);
}

std::string describe(const conductor::test::RelayCounters& c) {
  return "forwarded " + std::to_string(c.forwarded) + ", dropped " + std::to_string(c.dropped) +
         ", duplicated " + std::to_string(c.duplicated) + ", delayed " + std::to_string(c.delayed) +
         ", reordered " + std::to_string(c.reordered) + ", lost to cuts " +
         std::to_string(c.lost_to_cuts) + ", cuts " + std::to_string(c.cuts) + " (" +
         std::to_string(c.bulk_cuts) + " mid-transfer), links " + std::to_string(c.links);
}

}  // namespace

TEST_CASE(
    "through a relay that loses, repeats, delays and reorders messages and cuts links "
    "mid-transfer, every version reaches exactly its target with every model intact") {
  const std::uint64_t seed = test_seed();
  CAPTURE(seed);
  std::mt19937_64 random(seed);
  const auto started = std::chrono::steady_clock::now();

  ChaosCluster cluster("conductor-fault");
  const std::map<std::string, int> targets = {{"alpha", 6}, {"beta", 5}};
  write_versions(cluster, targets, random);
  cluster.start_server();

  FaultOptions faults;
  faults.drop = 0.02;
  faults.duplicate = 0.02;
  faults.delay = 0.03;
  faults.delay_for = 40ms;
  faults.reorder = 0.03;
  faults.seed = seed;
  FaultRelay relay(cluster.endpoint(), faults);
  // Cuts inside bulk transfers: after the first chunk of a package download and of a result
  // upload, and later ones deeper into a transfer.
  constexpr std::size_t kBulk = 256 * 1024;
  relay.cut_on_bulk(Direction::kToClient, kBulk, 1, 500ms);
  relay.cut_on_bulk(Direction::kToClient, kBulk, 2, 1500ms);
  relay.cut_on_bulk(Direction::kToServer, kBulk, 1, 500ms);
  relay.cut_on_bulk(Direction::kToServer, kBulk, 4, 1500ms);
  relay.cut_on_bulk(Direction::kToServer, kBulk, 6, 300ms);
  relay.start();

  const std::vector<std::string> clients = {"north", "south", "west"};
  for (const auto& name : clients) cluster.start_client(name, relay.endpoint());

  bool overshot = false;
  auto all_at_target = [&] { return conductor::test::all_at_target(cluster, targets, overshot); };
  // Cuts at random while the versions fill up: one client or all of them, shorter and longer
  // than a client's patience (heartbeat 200 ms x liveness 5).
  const auto deadline = deadline_in(75s);
  while (!all_at_target() && !overshot && std::chrono::steady_clock::now() < deadline) {
    auto pause = std::chrono::milliseconds(700 + random() % 1300);
    if (wait_until(
            std::chrono::steady_clock::now() + pause, [&] { return all_at_target() || overshot; },
            50ms)) {
      break;
    }
    auto length = std::chrono::milliseconds(200 + random() % 1300);
    if (random() % 4 == 0) {
      relay.cut_all(length);
    } else {
      relay.cut(clients[random() % clients.size()], length);
    }
  }
  INFO("relay: " << describe(relay.counters()));
  INFO("relay failure: " << relay.failure());
  REQUIRE_MESSAGE(all_at_target(), cluster.diagnostics());
  CHECK_FALSE_MESSAGE(overshot, cluster.diagnostics());
  const auto reached_after = std::chrono::steady_clock::now() - started;
  // Results still in flight, repeated or resumed, would show up now.
  CHECK_FALSE_MESSAGE(wait_until(deadline_in(3s), [&] { return !all_at_target(); }),
                      cluster.diagnostics());
  CHECK_FALSE(overshot);
  const auto counters = relay.counters();
  CHECK(counters.dropped > 0);
  CHECK(counters.duplicated > 0);
  CHECK(counters.reordered > 0);
  CHECK(relay.armed_bulk_cuts() == 0);  // downloads and uploads were cut mid-way
  CHECK(counters.cuts > counters.bulk_cuts);
  CHECK(relay.failure().empty());

  // Clients leave (BYE abandons any upload still running) before the leftovers are looked at.
  relay.set_faults(FaultOptions{});
  CHECK(cluster.stop_clients());
  CHECK_MESSAGE(cluster.server_running(), cluster.server_output());
  std::set<std::string> hashes;
  for (const auto& [version, target] : targets) {
    INFO("version " << version);
    CHECK(static_cast<int>(cluster.model_ids(version).size()) == target);
    conductor::test::check_stored_models(cluster, version, hashes);
  }
  CHECK(hashes.size() == 11);
  conductor::test::check_no_partial_results(cluster, {"alpha", "beta"});
  relay.stop();
  CHECK(cluster.stop_server().exited_with(0));
  MESSAGE("fault test (seed "
          << seed << "): targets reached after "
          << std::chrono::duration_cast<std::chrono::milliseconds>(reached_after).count()
          << " ms; relay " << describe(counters));
}

TEST_CASE(
    "messages lost, repeated or reordered on a live connection stall no download, upload or "
    "hand-out: without any cut the versions still reach their targets") {
  const std::uint64_t seed = test_seed();
  CAPTURE(seed);
  std::mt19937_64 random(seed);
  const auto started = std::chrono::steady_clock::now();

  ChaosCluster cluster("conductor-fault-nocut");
  const std::map<std::string, int> targets = {{"gamma", 3}, {"delta", 3}};
  write_versions(cluster, targets, random);
  cluster.start_server();
  FaultOptions faults;
  faults.drop = 0.05;
  faults.duplicate = 0.03;
  faults.delay = 0.03;
  faults.delay_for = 40ms;
  faults.reorder = 0.03;
  faults.seed = seed;
  FaultRelay relay(cluster.endpoint(), faults);
  relay.start();
  for (const std::string name : {"east", "up", "down"})
    cluster.start_client(name, relay.endpoint());

  auto stored = [&] {
    int total = 0;
    for (const auto& [version, target] : targets) {
      total += static_cast<int>(cluster.model_ids(version).size());
    }
    return total;
  };
  // Clients heartbeat every 200 ms and are never cut: only the protocol itself can notice that
  // a message of a transfer or a hand-out went missing.
  const bool reached = wait_until(
      deadline_in(60s), [&] { return stored() >= 6; }, 50ms);
  const auto counters = relay.counters();
  INFO("relay: " << describe(counters));
  REQUIRE_MESSAGE(reached, cluster.diagnostics());
  CHECK(counters.cuts == 0);
  CHECK_FALSE(wait_until(deadline_in(2s), [&] { return stored() > 6; }));
  relay.set_faults(FaultOptions{});
  CHECK(cluster.stop_clients());
  std::set<std::string> hashes;
  for (const auto& [version, target] : targets) {
    INFO("version " << version);
    CHECK(static_cast<int>(cluster.model_ids(version).size()) == target);
    conductor::test::check_stored_models(cluster, version, hashes);
  }
  conductor::test::check_no_partial_results(cluster, {"gamma", "delta"});
  relay.stop();
  CHECK(cluster.stop_server().exited_with(0));
  MESSAGE("no-cut fault test (seed " << seed << "): targets reached after "
                                     << std::chrono::duration_cast<std::chrono::milliseconds>(
                                            std::chrono::steady_clock::now() - started)
                                            .count()
                                     << " ms; relay " << describe(counters));
}
