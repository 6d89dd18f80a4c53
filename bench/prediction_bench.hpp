// The prediction fan-out of issue 6: one ensemble request to a conductor::Server in this
// process, answered by conductor-client processes that are all reserve clients (reserve
// fraction 1.0), one stored model each. Throws std::runtime_error when the clients do not
// connect, a request does not complete in time, or the ensemble holds a wrong value.
#pragma once

#include <cstdint>
#include <vector>

namespace conductor::bench {

struct FanOutFigures {
  std::vector<double> ensemble_seconds;  // Server::predict() called until prediction() is complete
  std::vector<double> predict_seconds;   // Server::predict() called until it returned
  std::vector<double> raw_seconds;       // the same command run `clients` at a time, no Conductor
  std::vector<double> call_seconds;      // an operator call ("status") to the idle server
};

// `clients` idle conductor-client processes and as many stored models whose prediction command
// is `/bin/cat model-latest.h5` (the model file holds "PredictedBuffer=<n>"). Two untimed
// requests first, so every client has the version's package cached; then `runs` timed ones,
// each right after the raw limit of the same run.
FanOutFigures prediction_fan_out(int clients, int runs);

// Large models: each of `models` stored models holds `model_bytes` of weights (random) beside
// its model.h5, so each goes to a client as an archive of its own, which the client caches.
// `clients` conductor::Client objects in this process, all reserve; a fresh server and fresh
// clients per run.
struct LargeFanOutFigures {
  std::vector<double> cold_seconds;     // the first request: the server packs, the clients fetch
  std::vector<double> cold_bytes;       // package bytes the clients fetched for it
  std::vector<double> warm_seconds;     // a request that moved no model (only the rows)
  std::vector<double> warm_bytes;       // bytes the clients fetched for it, inline rows included
  std::vector<double> warm_ups;  // requests between the two (until 3 in a row moved no model)
  std::vector<double> raw_tcp_seconds;  // the models' bytes once over loopback TCP
  std::vector<double> raw_command_seconds;  // the command run `models` at a time
};
LargeFanOutFigures prediction_fan_out_large(int models, int clients, std::uint64_t model_bytes,
                                            int runs);

}  // namespace conductor::bench
