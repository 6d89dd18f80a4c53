#include "memory_bench.hpp"

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>

#include "bench_support.hpp"
#include "conductor/controller.hpp"

namespace conductor::bench {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

int stored_models(Controller& control, const std::string& version) {
  // Named: a range-for over a member of a temporary would outlive the temporary.
  const auto status = nlohmann::json::parse(control.call("status"));
  for (const auto& entry : status.at("versions")) {
    if (entry.at("name") == version) return entry.at("stored").get<int>();
  }
  return 0;
}

std::size_t connected_clients(Controller& control) {
  return nlohmann::json::parse(control.call("status")).at("clients").size();
}

struct Growth {
  std::uint64_t server = 0;
  std::uint64_t client = 0;
};

// Peak RSS above the RSS just before: `version` gets a target of one model, and the phase ends
// when the server has stored it.
Growth phase(Controller& control, const std::string& version, pid_t server, pid_t client) {
  const std::uint64_t server_before = resident_bytes(server);
  const std::uint64_t client_before = resident_bytes(client);
  reset_peak_resident(server);
  reset_peak_resident(client);
  control.call("set-target", {{"version", version}, {"target", "1"}});
  if (!wait_for([&] { return stored_models(control, version) == 1; }, std::chrono::minutes(10),
                50ms)) {
    throw std::runtime_error("memory: no model of '" + version + "' stored within 10 min");
  }
  auto growth = [](std::uint64_t peak, std::uint64_t before) {
    return peak > before ? peak - before : 0;
  };
  return {growth(peak_resident_bytes(server), server_before),
          growth(peak_resident_bytes(client), client_before)};
}

}  // namespace

MemoryFigures memory_while_moving(std::uint64_t file_bytes) {
  ScratchDir root("conductor-bench-memory");
  const fs::path server_dir = root / "server";
  const fs::path seed = root / "seed.bin";
  // The result's command copies a file from outside the working folder, so the result phase
  // moves nothing to the client.
  write_server_config(server_dir, {{"payload", 0, {{"/usr/bin/touch", "model.h5"}}},
                                   {"result", 0, {{"/bin/cp", seed.string() + " model.h5"}}}});
  write_random_file(server_dir / "assets" / "payload" / "data.bin", file_bytes);
  write_random_file(seed, file_bytes);

  Child server(server_command(server_dir, "tcp://127.0.0.1:*", root / "endpoint"),
               root / "server.log");
  const std::string endpoint = wait_for_endpoint_file(root / "endpoint");
  Child client(client_command(endpoint, root / "client", "memory"), root / "client.log");
  Controller control(endpoint);
  if (!wait_for([&] { return connected_clients(control) == 1; }, 60s, 20ms)) {
    throw std::runtime_error("memory: the client did not connect within 60 s");
  }
  std::this_thread::sleep_for(500ms);  // start-up allocations done, nothing moving
  MemoryFigures figures;
  figures.server_idle = resident_bytes(server.pid());
  figures.client_idle = resident_bytes(client.pid());
  const Growth payload = phase(control, "payload", server.pid(), client.pid());
  figures.server_payload = payload.server;
  figures.client_payload = payload.client;
  std::this_thread::sleep_for(500ms);  // the client reports READY again
  const Growth result = phase(control, "result", server.pid(), client.pid());
  figures.server_result = result.server;
  figures.client_result = result.client;
  client.stop();
  server.stop();
  return figures;
}

}  // namespace conductor::bench
