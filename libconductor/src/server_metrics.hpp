// ServerMetrics: the counters behind the server's Prometheus /metrics (docs/operations.md lists
// every metric). The network thread owns a ServerMetrics and counts events into it; each HTTP
// snapshot copies it into a MetricsSnapshot together with the gauges of that moment, and the
// HTTP thread renders the copy with format_metrics. Plain values, not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "prometheus_text.hpp"

namespace conductor {

// Run time, in seconds, of items that ended with a result: up to the original's 3.5 days.
std::vector<double> item_duration_buckets();

// Why an item's attempt failed, as the label `reason` of conductor_item_failures_total.
enum class FailureReason { kFailed, kRejected, kTimedOut };
const char* to_string(FailureReason reason) noexcept;

struct ServerMetrics {
  std::uint64_t bytes_sent = 0;      // archive bytes in CHUNK payloads
  std::uint64_t bytes_received = 0;  // result and version-folder bytes in UPLOAD payloads
  std::map<std::string, std::uint64_t> completed;                         // by item type
  std::map<std::pair<std::string, std::string>, std::uint64_t> failures;  // (type, reason)
  std::map<std::string, std::uint64_t> lease_expiries;                    // by item type
  std::map<std::string, Histogram> durations;                             // by item type
  std::map<std::string, std::uint64_t> messages_received;  // by message type, once decoded

  void count_completed(const std::string& type, double duration_seconds);
  void count_failure(const std::string& type, FailureReason reason);
  void count_lease_expiry(const std::string& type) { ++lease_expiries[type]; }
};

// Gauges of one moment plus a copy of the counters: what one /metrics answer shows.
struct MetricsSnapshot {
  double start_time = 0;  // Unix time the server started
  std::map<std::pair<std::string, std::string>, std::size_t> clients;  // (type, state) -> count
  std::map<std::pair<std::string, std::string>, std::size_t> slots;    // (type, state) -> count
  std::size_t reserved_clients = 0;
  std::map<std::string, std::size_t> queued;  // by item type
  std::map<std::string, std::size_t> active;  // by item type, leased ones included
  std::map<std::string, std::size_t> leased;  // by item type
  struct VersionModels {
    std::string name;
    int stored = 0;
    int target = 0;
  };
  std::vector<VersionModels> versions;
  std::size_t pending_predictions = 0;
  ServerMetrics counters;
};

// The snapshot in the text exposition format. Item types, client types and states, and
// failure reasons that saw nothing yet are written as 0, so that every series exists from the
// start.
std::string format_metrics(const MetricsSnapshot& snapshot);

}  // namespace conductor
