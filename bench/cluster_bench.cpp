#include "cluster_bench.hpp"

#include <fstream>
#include <memory>
#include <optional>
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
  print_perf_window("items", stored[warm_up - 1], stored.back());
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

PayloadFigures payload_transfer(std::uint64_t payload_bytes, int runs, Content content) {
  ScratchDir root("conductor-bench-payload");
  write_server_config(root / "server", {{"big", 1000, kTouchModel}});
  write_content_file(root / "server" / "assets" / "big" / "data.bin", payload_bytes, content);
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
      print_perf_window(std::string("download, ") + to_string(content), started, Clock::now());
      require(wait_for([&] { return fresh.completed_items() >= 1; }, limit, 200us),
              "payload: the item of a fresh client did not finish");
      figures.item_seconds.push_back(seconds_since(started));
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

namespace {

// The outbox record (outbox/<item>-<attempt>.json) of a result not in `seen`, which the client
// writes just before it offers the result; waits up to 10 minutes.
fs::path next_outbox_record(const fs::path& client_dir, const std::set<std::string>& seen) {
  fs::path record;
  require(wait_for(
              [&] {
                std::error_code ec;
                for (const auto& entry : fs::directory_iterator(client_dir / "outbox", ec)) {
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
  return record;
}

// The archive size an outbox record announces (waits while the record is being written).
std::uint64_t announced_size(const fs::path& record) {
  std::uint64_t size = 0;
  require(wait_for(
              [&] {
                try {
                  size = nlohmann::json::parse(std::ifstream(record))
                             .at("size")
                             .get<std::uint64_t>();
                  return true;
                } catch (const std::exception&) {
                  return false;
                }
              },
              10s, 100us),
          "results: unreadable " + record.string());
  return size;
}

}  // namespace

ResultFigures result_upload(std::uint64_t model_bytes, int runs, Content content) {
  ScratchDir root("conductor-bench-results");
  const fs::path seed = root / "seed.bin";
  write_content_file(seed, model_bytes, content);
  write_server_config(root / "server", {{"upload", 1000, {{"/bin/cp", seed.string() + " model.h5"}}}});
  Server server(server_options(root / "server"));
  server.start();
  const fs::path folder = root / "worker";
  Client worker(client_options(server, folder, "worker"));
  worker.start();
  ResultFigures figures;
  std::set<std::string> seen;
  std::optional<Clock::time_point> last_stored;
  // Bytes sent before this item's upload: taken when the previous model was stored, long before
  // the next result is packed, so a first chunk that goes out before the record is seen counts.
  std::uint64_t sent_before = 0;
  for (int run = 0; run <= runs; ++run) {  // run 0 is the warm-up
    const fs::path record = next_outbox_record(folder, seen);
    const auto offered = Clock::now();
    seen.insert(record.filename().string());
    const std::uint64_t size = announced_size(record);
    figures.result_bytes = size;
    require(wait_for([&] { return worker.result_bytes_sent() - sent_before >= size; },
                     std::chrono::minutes(10), 200us),
            "results: the upload did not finish");
    const double upload = seconds_since(offered);
    if (run > 0) {
      figures.upload_seconds.push_back(upload);
      print_perf_window(std::string("upload, ") + to_string(content), offered, Clock::now());
    }
    const auto model = server.next_stored_model(std::chrono::minutes(10));
    require(model.has_value(), "results: the model was not stored");
    if (run > 0) figures.stored_seconds.push_back(seconds_since(offered));
    const auto stored = Clock::now();
    if (last_stored) {
      figures.item_seconds.push_back(std::chrono::duration<double>(stored - *last_stored).count());
    }
    last_stored = stored;
    // Gone before the next run, as each fresh client's folder is in the payload benchmark: on a
    // tmpfs every model kept takes memory the system has not touched yet, and where that is
    // expensive (the benchmark VM hands freed memory back to its host) later uploads slowed to
    // 2.4 times the first; a disk would have written the model back and reused the memory.
    fs::remove_all(model->folder);
    sent_before = worker.result_bytes_sent();
  }
  return figures;
}

}  // namespace conductor::bench
