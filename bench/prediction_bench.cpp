#include "prediction_bench.hpp"

#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "bench_support.hpp"
#include "conductor/client.hpp"
#include "conductor/server.hpp"
#include "raw_limits.hpp"

namespace conductor::bench {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr const char* kVersion = "fanout";
constexpr const char* kRows = "feature,value\n1,2\n";

// What model i's prediction command prints: the line the default pattern reads.
std::string model_file(int index) { return "PredictedBuffer=" + std::to_string(index) + "\n"; }

EnsembleResult wait_for_ensemble(const Server& server, const std::string& request) {
  auto result = server.wait_for_prediction(request, std::chrono::minutes(2));
  if (!result) throw std::runtime_error("fan-out: request " + request + " incomplete after 2 min");
  return *result;
}

void check_values(const EnsembleResult& result, const std::map<std::string, double>& expected) {
  if (!result.failures.empty()) {
    throw std::runtime_error("fan-out: " + std::to_string(result.failures.size()) +
                             " model(s) failed, e.g. " + result.failures.front().model_id + ": " +
                             result.failures.front().reason);
  }
  if (result.values.size() != expected.size()) {
    throw std::runtime_error("fan-out: " + std::to_string(result.values.size()) + " values for " +
                             std::to_string(expected.size()) + " models");
  }
  for (const auto& value : result.values) {
    auto it = expected.find(value.model_id);
    if (it == expected.end() || it->second != value.value) {
      throw std::runtime_error("fan-out: model " + value.model_id + " answered " +
                               std::to_string(value.value));
    }
  }
}

// A server folder with one version whose prediction command is `/bin/cat model-latest.h5`,
// every client reserve, and `models` stored models (model_file(i) each). Returns the value
// each model's prediction must give, by id.
std::map<std::string, double> seed_fan_out(const fs::path& server_dir, const std::string& name,
                                           int models) {
  VersionFixture version{name, 0, {{"/usr/bin/touch", "model.h5"}}};
  version.prediction_commands = {{"/bin/cat", "model-latest.h5"}};
  write_server_config(server_dir, {version}, 1.0);
  const auto ids = seed_models(server_dir, name, models, model_file);
  std::map<std::string, double> expected;
  for (int i = 0; i < models; ++i) expected[ids[i]] = i;
  return expected;
}

}  // namespace

FanOutFigures prediction_fan_out(int clients, int runs) {
  ScratchDir root("conductor-bench-fanout");
  const fs::path server_dir = root / "server";
  const auto expected = seed_fan_out(server_dir, kVersion, clients);

  Server server(server_options(server_dir));
  server.start();
  std::vector<std::unique_ptr<Child>> fleet;
  for (int i = 0; i < clients; ++i) {
    const std::string name = "reserve-" + std::to_string(i);
    fleet.push_back(std::make_unique<Child>(client_command(server.endpoint(), root / name, name),
                                            root / (name + ".log")));
  }
  if (!wait_for([&] { return server.status().clients == static_cast<std::size_t>(clients); },
                std::chrono::minutes(2), 10ms)) {
    throw std::runtime_error("fan-out: only " + std::to_string(server.status().clients) + " of " +
                             std::to_string(clients) + " clients connected");
  }
  PredictOptions options;
  options.version = kVersion;
  for (int warm_up = 0; warm_up < 2; ++warm_up) {
    check_values(wait_for_ensemble(server, server.predict(kRows, options)), expected);
  }

  write_text(root / "model-latest.h5", model_file(1));
  const std::vector<std::string> command = {"/bin/cat", (root / "model-latest.h5").string()};
  FanOutFigures figures;
  for (int run = 0; run < runs; ++run) {
    std::this_thread::sleep_for(300ms);  // every client back to idle (READY sent)
    figures.raw_seconds.push_back(raw_parallel_spawn_seconds(command, clients));
    std::this_thread::sleep_for(100ms);
    const auto asked = Clock::now();
    (void)server.control("status", {});
    figures.call_seconds.push_back(seconds_since(asked));
    const auto started = Clock::now();
    const std::string request = server.predict(kRows, options);
    figures.predict_seconds.push_back(seconds_since(started));
    const EnsembleResult result = wait_for_ensemble(server, request);
    figures.ensemble_seconds.push_back(seconds_since(started));
    print_perf_window("fan-out request", started, Clock::now());
    check_values(result, expected);
  }
  Child::stop_all(fleet);
  server.stop();
  return figures;
}

LargeFanOutFigures prediction_fan_out_large(int models, int clients, std::uint64_t model_bytes,
                                            int runs) {
  constexpr const char* kLarge = "fanout-large";
  LargeFanOutFigures figures;
  for (int run = 0; run < runs; ++run) {
    ScratchDir root("conductor-bench-fanout-large");
    const fs::path server_dir = root / "server";
    const auto expected = seed_fan_out(server_dir, kLarge, models);
    std::uint64_t index = 0;
    for (const auto& [id, value] : expected) {
      // Sizes a page apart: write_random_file seeds its bytes with the size.
      write_random_file(server_dir / "assets" / kLarge / "models" / id / "weights.bin",
                        model_bytes + index++ * 4096);
    }
    write_text(root / "model-latest.h5", model_file(1));
    figures.raw_command_seconds.push_back(
        raw_parallel_spawn_seconds({"/bin/cat", (root / "model-latest.h5").string()}, models));
    const std::uint64_t all_bytes = model_bytes * static_cast<std::uint64_t>(models);
    figures.raw_tcp_seconds.push_back(static_cast<double>(all_bytes) /
                                      raw_tcp_bytes_per_second(all_bytes));

    Server server(server_options(server_dir));
    server.start();
    std::vector<std::unique_ptr<Client>> fleet;
    for (int i = 0; i < clients; ++i) {
      const std::string name = "reserve-" + std::to_string(i);
      fleet.push_back(std::make_unique<Client>(client_options(server, root / name, name)));
      fleet.back()->start();
    }
    if (!wait_for([&] { return server.status().clients == static_cast<std::size_t>(clients); },
                  std::chrono::minutes(1), 10ms)) {
      throw std::runtime_error("large fan-out: only " + std::to_string(server.status().clients) +
                               " of " + std::to_string(clients) + " clients connected");
    }
    auto fetched = [&] {
      std::uint64_t bytes = 0;
      for (const auto& client : fleet) bytes += client->payload_bytes_fetched();
      return static_cast<double>(bytes);
    };
    PredictOptions options;
    options.version = kLarge;
    // One request, timed; the package bytes the clients fetched for it.
    auto request = [&](std::vector<double>& seconds, std::vector<double>& bytes) {
      std::this_thread::sleep_for(200ms);  // every client back to idle (READY sent)
      const double before = fetched();
      const auto started = Clock::now();
      const EnsembleResult result = wait_for_ensemble(server, server.predict(kRows, options));
      seconds.push_back(seconds_since(started));
      print_perf_window("large fan-out request", started, Clock::now());
      bytes.push_back(fetched() - before);
      check_values(result, expected);
    };
    request(figures.cold_seconds, figures.cold_bytes);
    // Items go to whichever client is ready first: a client may still be given a model it
    // has not fetched yet, long after the first request. Warmed up once three requests in a
    // row moved no model (only the rows, inline with each ASSIGN); the timed one may still
    // move one, which its row then shows.
    std::vector<double> seconds, bytes;
    int warm_ups = 0;
    for (int quiet = 0; quiet < 3 && warm_ups < 8 * models; ++warm_ups) {
      request(seconds, bytes);
      quiet = bytes.back() < static_cast<double>(model_bytes) ? quiet + 1 : 0;
    }
    figures.warm_ups.push_back(warm_ups);
    request(figures.warm_seconds, figures.warm_bytes);
    fleet.clear();
    server.stop();
  }
  return figures;
}

}  // namespace conductor::bench
