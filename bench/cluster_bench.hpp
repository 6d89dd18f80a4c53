// Benchmarks of a whole Conductor run inside this process: a conductor::Server and
// conductor::Clients on their own threads, talking over loopback TCP, with real commands,
// uploads and stored models. Each function builds its folders under the temp folder and
// removes them. Throws std::runtime_error when a run does not finish in time.
#pragma once

#include <cstdint>
#include <vector>

#include "bench_support.hpp"

namespace conductor::bench {

// Items per second, one figure per window of `window_items` stored models, after a warm-up of
// two items per client. Every item runs `/usr/bin/touch model.h5`: the cheapest command that
// leaves a model the server accepts.
std::vector<double> items_per_second(int clients, int windows, int window_items);

struct PayloadFigures {
  std::uint64_t archive_bytes = 0;       // the packed version as the server serves it
  std::vector<double> download_seconds;  // a fresh client: start until the archive is cached
  std::vector<double> item_seconds;      // the same client: start until its item is stored
  double first_item_seconds = 0;         // the very first item: packing + download + item
  std::uint64_t second_item_bytes = 0;   // payload bytes the second item of a client moved
};
// A version holding one `payload_bytes` file of `content`, fetched by `runs` fresh clients one
// after another; then one client takes two items.
PayloadFigures payload_transfer(std::uint64_t payload_bytes, int runs, Content content);

struct ResultFigures {
  std::uint64_t result_bytes = 0;      // the result archive
  std::vector<double> upload_seconds;  // RESULT offered until the last byte sent
  std::vector<double> stored_seconds;  // RESULT offered until the server stored the model
  std::vector<double> item_seconds;    // one stored model to the next: copy, pack, upload, store
};
// Items whose command copies a `model_bytes` file of `content` (outside the version, so items
// fetch no payload) to model.h5, so each result is that big before packing. One warm-up item,
// then `runs` measured ones (each also gives the period since the one before).
ResultFigures result_upload(std::uint64_t model_bytes, int runs, Content content);

}  // namespace conductor::bench
