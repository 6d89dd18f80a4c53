#include "server_metrics.hpp"

#include <set>

namespace conductor {

namespace {

using Type = PrometheusText::Type;

const std::vector<std::string> kItemTypes = {"training", "prediction"};
// What clients and operators send (protocol.md, section 3).
const std::vector<std::string> kReceivedTypes = {"HELLO",    "HEARTBEAT", "READY",  "FETCH",
                                                 "PROGRESS", "RESULT",    "UPLOAD", "FAILED",
                                                 "BYE",      "CONTROL"};
const std::vector<std::string> kClientTypes = {"cpu", "gpu"};
const std::vector<std::string> kClientStates = {"idle", "working", "busy"};
const std::vector<FailureReason> kFailureReasons = {FailureReason::kFailed,
                                                    FailureReason::kRejected,
                                                    FailureReason::kTimedOut};

// The known names first, then any other name that occurs as a key.
template <typename Map>
std::vector<std::string> names_with(const std::vector<std::string>& known, const Map& map) {
  std::vector<std::string> names = known;
  std::set<std::string> seen(known.begin(), known.end());
  for (const auto& [key, value] : map) {
    if (seen.insert(key).second) names.push_back(key);
  }
  return names;
}

template <typename Map>
double value_or_zero(const Map& map, const typename Map::key_type& key) {
  auto it = map.find(key);
  return it == map.end() ? 0.0 : static_cast<double>(it->second);
}

void by_item_type(PrometheusText& out, const char* name, Type type, const char* help,
                  const std::map<std::string, std::size_t>& values) {
  out.family(name, type, help);
  for (const auto& item_type : names_with(kItemTypes, values)) {
    out.sample(name, {{"type", item_type}}, value_or_zero(values, item_type));
  }
}

void clients(PrometheusText& out, const MetricsSnapshot& s) {
  std::map<std::string, int> types;
  for (const auto& [key, count] : s.clients) types[key.first] += static_cast<int>(count);
  out.family("conductor_clients", Type::kGauge,
             "Connected clients by processing unit (type) and state: idle (waiting for work), "
             "working (holds an item), busy (neither, e.g. between two items)");
  for (const auto& type : names_with(kClientTypes, types)) {
    for (const auto& state : kClientStates) {
      out.sample("conductor_clients", {{"type", type}, {"state", state}},
                 value_or_zero(s.clients, {type, state}));
    }
  }
  std::map<std::string, int> slot_types;
  for (const auto& [key, count] : s.slots) slot_types[key.first] += static_cast<int>(count);
  out.family("conductor_client_slots", Type::kGauge,
             "Slots (items a client runs at once: one per GPU, or --slots) of connected clients "
             "by processing unit and state: idle (asked for work), working (holds an item), busy "
             "(neither)");
  for (const auto& type : names_with(kClientTypes, slot_types)) {
    for (const auto& state : kClientStates) {
      out.sample("conductor_client_slots", {{"type", type}, {"state", state}},
                 value_or_zero(s.slots, {type, state}));
    }
  }
  out.family("conductor_clients_reserved", Type::kGauge,
             "Connected clients kept for prediction items (ReserveNodes)");
  out.sample("conductor_clients_reserved", {}, static_cast<double>(s.reserved_clients));
}

void versions(PrometheusText& out, const MetricsSnapshot& s) {
  out.family("conductor_version_models_stored", Type::kGauge,
             "Trained models stored for a version");
  for (const auto& v : s.versions) {
    out.sample("conductor_version_models_stored", {{"version", v.name}}, v.stored);
  }
  out.family("conductor_version_models_target", Type::kGauge,
             "Models a version is to have (TargetModels)");
  for (const auto& v : s.versions) {
    out.sample("conductor_version_models_target", {{"version", v.name}}, v.target);
  }
}

void counters(PrometheusText& out, const ServerMetrics& c) {
  out.family("conductor_items_completed_total", Type::kCounter,
             "Items that ended with a result: training models stored, prediction values read");
  for (const auto& type : names_with(kItemTypes, c.completed)) {
    out.sample("conductor_items_completed_total", {{"type", type}}, value_or_zero(c.completed, type));
  }
  out.family("conductor_item_failures_total", Type::kCounter,
             "Failed attempts of items by reason: failed (the client reported FAILED), rejected "
             "(the server refused the result), timeout (the item's deadline passed)");
  std::map<std::string, int> failure_types;
  for (const auto& [key, count] : c.failures) failure_types[key.first] += 1;
  for (const auto& type : names_with(kItemTypes, failure_types)) {
    for (auto reason : kFailureReasons) {
      out.sample("conductor_item_failures_total", {{"type", type}, {"reason", to_string(reason)}},
                 value_or_zero(c.failures, {type, to_string(reason)}));
    }
  }
  out.family("conductor_lease_expiries_total", Type::kCounter,
             "Items whose silent client did not come back within the lease");
  for (const auto& type : names_with(kItemTypes, c.lease_expiries)) {
    out.sample("conductor_lease_expiries_total", {{"type", type}},
               value_or_zero(c.lease_expiries, type));
  }
  out.family("conductor_item_duration_seconds", Type::kHistogram,
             "Run time reported by the client (unpacking, commands, packing) of items that ended "
             "with a result");
  for (const auto& type : names_with(kItemTypes, c.durations)) {
    auto it = c.durations.find(type);
    out.histogram("conductor_item_duration_seconds", {{"type", type}},
                  it != c.durations.end() ? it->second : Histogram(item_duration_buckets()));
  }
  out.family("conductor_transfer_bytes_total", Type::kCounter,
             "Payload bytes moved: sent = archives to clients (CHUNK), received = results and "
             "version folders from clients and operators (UPLOAD)");
  out.sample("conductor_transfer_bytes_total", {{"direction", "sent"}},
             static_cast<double>(c.bytes_sent));
  out.sample("conductor_transfer_bytes_total", {{"direction", "received"}},
             static_cast<double>(c.bytes_received));
  out.family("conductor_messages_received_total", Type::kCounter,
             "CWP messages from clients and operators that the server decoded, by type (refused "
             "ones included)");
  for (const auto& type : names_with(kReceivedTypes, c.messages_received)) {
    out.sample("conductor_messages_received_total", {{"type", type}},
               value_or_zero(c.messages_received, type));
  }
}

}  // namespace

std::vector<double> item_duration_buckets() {
  return {0.1,  0.5,  1,    5,     10,    30,    60,    300,   600,
          1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800, 302400};
}

const char* to_string(FailureReason reason) noexcept {
  switch (reason) {
    case FailureReason::kFailed: return "failed";
    case FailureReason::kRejected: return "rejected";
    case FailureReason::kTimedOut: return "timeout";
  }
  return "unknown";
}

void ServerMetrics::count_completed(const std::string& type, double duration_seconds) {
  ++completed[type];
  durations.try_emplace(type, item_duration_buckets()).first->second.observe(duration_seconds);
}

void ServerMetrics::count_failure(const std::string& type, FailureReason reason) {
  ++failures[{type, to_string(reason)}];
}

std::string format_metrics(const MetricsSnapshot& s) {
  PrometheusText out;
  out.family("conductor_start_time_seconds", Type::kGauge,
             "When the server started, in seconds since the Unix epoch");
  out.sample("conductor_start_time_seconds", {}, s.start_time);
  clients(out, s);
  by_item_type(out, "conductor_items_queued", Type::kGauge, "Items waiting in the queue",
               s.queued);
  by_item_type(out, "conductor_items_active", Type::kGauge,
               "Items handed to a client and not ended (leased ones included)", s.active);
  by_item_type(out, "conductor_items_leased", Type::kGauge,
               "Active items whose client went silent and that wait out its lease", s.leased);
  versions(out, s);
  out.family("conductor_prediction_requests_pending", Type::kGauge,
             "Prediction requests whose ensemble is not complete yet");
  out.sample("conductor_prediction_requests_pending", {},
             static_cast<double>(s.pending_predictions));
  counters(out, s.counters);
  return out.text();
}

}  // namespace conductor
