#include "cluster_bench.hpp"

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>

#include "bench_support.hpp"
#include "conductor/client.hpp"
#include "conductor/server.hpp"

namespace conductor::bench {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

ServerOptions server_options(const fs::path& workdir) {
  ServerOptions options;
  options.workdir = workdir;
  options.bind = "tcp://127.0.0.1:*";
  options.log_to_stdout = false;
  return options;
}

ClientOptions client_options(const Server& server, const fs::path& workdir,
                             const std::string& name) {
  ClientOptions options;
  options.server = server.endpoint();
  options.workdir = workdir;
  options.host_name = name;
  options.log_to_stdout = false;
  return options;
}

void require(bool condition, const std::string& what) {
  if (!condition) throw std::runtime_error(what);
}

const std::vector<std::pair<std::string, std::string>> kTouchModel = {
    {"/usr/bin/touch", "model.h5"}};

}  // namespace

std::vector<double> items_per_second(int clients, int windows, int window_items) {
  ScratchDir root("conductor-bench-dispatch");
  const int warm_up = 2 * clients;
  const int measured = windows * window_items;
  // Enough items that none of the clients ever waits for work while the windows run.
  write_server_config(root / "server", {{"noop", warm_up + measured + 4 * clients, kTouchModel}});
  Server server(server_options(root / "server"));
  server.start();
  std::vector<std::unique_ptr<Client>> workers;
  for (int i = 0; i < clients; ++i) {
    const std::string name = "worker-" + std::to_string(i);
    workers.push_back(std::make_unique<Client>(client_options(server, root / name, name)));
    workers.back()->start();
  }
  std::vector<Clock::time_point> stored;
  while (static_cast<int>(stored.size()) < warm_up + measured) {
    require(server.next_stored_model(60s).has_value(), "dispatch: no model stored for 60 s");
    stored.push_back(Clock::now());
  }
  workers.clear();
  server.stop();
  std::vector<double> rates;
  for (int w = 0; w < windows; ++w) {
    const auto begin = stored[warm_up + w * window_items - 1];
    const auto end = stored[warm_up + (w + 1) * window_items - 1];
    rates.push_back(window_items / std::chrono::duration<double>(end - begin).count());
  }
  return rates;
}

PayloadFigures payload_transfer(std::uint64_t payload_bytes, int runs) {
  ScratchDir root("conductor-bench-payload");
  write_server_config(root / "server", {{"big", 1000, kTouchModel}});
  write_random_file(root / "server" / "assets" / "big" / "data.bin", payload_bytes);
  Server server(server_options(root / "server"));
  server.start();
  PayloadFigures figures;
  const auto limit = std::chrono::minutes(10);
  {
    // The first hand-out packs the version; later clients fetch the same pack.
    const auto started = Clock::now();
    Client first(client_options(server, root / "first", "first"));
    first.start();
    require(wait_for([&] { return first.completed_items() >= 1; }, limit, 1ms),
            "payload: the first item did not finish");
    figures.first_item_seconds = seconds_since(started);
    figures.archive_bytes = first.payload_bytes_fetched();
  }
  fs::remove_all(root / "first");
  for (int run = 0; run < runs; ++run) {
    const fs::path folder = root / ("fresh-" + std::to_string(run));
    {
      Client fresh(client_options(server, folder, "fresh-" + std::to_string(run)));
      const auto started = Clock::now();
      fresh.start();
      require(
          wait_for([&] { return fresh.payload_bytes_fetched() >= figures.archive_bytes; }, limit),
          "payload: a download did not finish");
      figures.download_seconds.push_back(seconds_since(started));
    }
    fs::remove_all(folder);
  }
  {
    Client twice(client_options(server, root / "twice", "twice"));
    twice.start();
    require(wait_for([&] { return twice.completed_items() >= 2; }, limit, 1ms),
            "payload: two items did not finish");
    figures.second_item_bytes = twice.payload_bytes_fetched() - figures.archive_bytes;
  }
  server.stop();
  return figures;
}

ResultFigures result_upload(std::uint64_t model_bytes, int runs) {
  ScratchDir root("conductor-bench-results");
  write_server_config(root / "server", {{"upload", 1000, {{"/bin/cp", "seed.bin model.h5"}}}});
  write_random_file(root / "server" / "assets" / "upload" / "seed.bin", model_bytes);
  Server server(server_options(root / "server"));
  server.start();
  const fs::path folder = root / "worker";
  Client worker(client_options(server, folder, "worker"));
  worker.start();
  ResultFigures figures;
  std::set<std::string> seen;
  for (int run = 0; run < runs; ++run) {
    // The client writes outbox/<item>-<attempt>.json just before it offers the result.
    fs::path record;
    require(wait_for(
                [&] {
                  std::error_code ec;
                  for (const auto& entry : fs::directory_iterator(folder / "outbox", ec)) {
                    if (entry.path().extension() == ".json" &&
                        !seen.contains(entry.path().filename().string())) {
                      record = entry.path();
                      return true;
                    }
                  }
                  return false;
                },
                std::chrono::minutes(10), 200us),
            "results: no result was offered");
    const auto offered = Clock::now();
    const std::uint64_t sent_before = worker.result_bytes_sent();
    seen.insert(record.filename().string());
    std::uint64_t size = 0;
    require(
        wait_for(
            [&] {
              try {
                size = nlohmann::json::parse(std::ifstream(record)).at("size").get<std::uint64_t>();
                return true;
              } catch (const std::exception&) {
                return false;
              }
            },
            10s, 100us),
        "results: unreadable " + record.string());
    figures.result_bytes = size;
    require(wait_for([&] { return worker.result_bytes_sent() - sent_before >= size; },
                     std::chrono::minutes(10), 200us),
            "results: the upload did not finish");
    figures.upload_seconds.push_back(seconds_since(offered));
    require(server.next_stored_model(std::chrono::minutes(10)).has_value(),
            "results: the model was not stored");
    figures.stored_seconds.push_back(seconds_since(offered));
  }
  return figures;
}

}  // namespace conductor::bench
