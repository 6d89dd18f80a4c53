#include "prediction_bench.hpp"

#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "bench_support.hpp"
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

}  // namespace

FanOutFigures prediction_fan_out(int clients, int runs) {
  ScratchDir root("conductor-bench-fanout");
  const fs::path server_dir = root / "server";
  VersionFixture version{kVersion, 0, {{"/usr/bin/touch", "model.h5"}}};
  version.prediction_commands = {{"/bin/cat", "model-latest.h5"}};
  write_server_config(server_dir, {version}, 1.0);
  const auto ids = seed_models(server_dir, kVersion, clients, model_file);
  std::map<std::string, double> expected;
  for (int i = 0; i < clients; ++i) expected[ids[i]] = i;

  ServerOptions server_options;
  server_options.workdir = server_dir;
  server_options.bind = "tcp://127.0.0.1:*";
  server_options.log_to_stdout = false;
  Server server(server_options);
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

}  // namespace conductor::bench
