// Server::Impl, part three: what the HTTP endpoint shows. The network thread copies its state
// into an HttpSnapshot when a request asks for one; the endpoint's threads never see more.
#include <nlohmann/json.hpp>

#include <algorithm>

#include "conductor/config.hpp"
#include "server_impl.hpp"

namespace conductor {

using json = nlohmann::json;

namespace {

constexpr std::size_t kQueueShown = 200;      // /api/status lists the queue's head only
constexpr std::size_t kEnsemblesShown = 10;   // the latest finished prediction requests

double unix_seconds(std::chrono::system_clock::time_point when) {
  return std::chrono::duration<double>(when.time_since_epoch()).count();
}

template <typename Map>
json counts_json(const Map& counts) {
  json out = json::object();
  for (const auto& [key, count] : counts) out[key] = count;
  return out;
}

}  // namespace

void Server::Impl::start_http() {
  if (options_.http.empty()) return;
  http_ = std::make_unique<HttpEndpoint>(options_.http);
  log("HTTP endpoint on " + http_->url() + " (dashboard /, /metrics, /api/status, /healthz)");
  if (http_->is_public()) {
    warn("HTTP endpoint " + http_->url() + " is reachable beyond this machine WITHOUT "
         "authentication: anyone who reaches it reads client names, versions, item ids and the "
         "log (read-only); bind it to 127.0.0.1 unless a firewall or proxy guards it");
  }
  publish_http(Publish::kNow);
}

const std::string& Server::Impl::http_url() const {
  static const std::string kNone;
  return http_ ? http_->url() : kNone;
}

void Server::Impl::publish_http(Publish when) {
  if (!http_ || (when == Publish::kWhenWanted && !http_->is_snapshot_wanted())) return;
  auto snapshot = std::make_shared<HttpSnapshot>();
  snapshot->metrics = metrics_snapshot();
  snapshot->status = http_status_view();
  http_->publish(std::move(snapshot));
}

const char* Server::Impl::client_state(const Peer& peer) const {
  if (!scheduler_.held_by(peer.id).empty()) return "working";
  return peer.waiting.empty() ? "busy" : "idle";
}

MetricsSnapshot Server::Impl::metrics_snapshot() const {
  MetricsSnapshot s;
  s.start_time = unix_seconds(started_at_);
  for (const auto& [id, peer] : peers_) {
    ++s.clients[{peer.type, client_state(peer)}];
    // Each slot once: holding an item, else waiting for one, else neither.
    const auto slots = static_cast<std::size_t>(std::max(peer.slots, 1));
    const std::size_t working = std::min(scheduler_.held_by(peer.id).size(), slots);
    const std::size_t idle = std::min(peer.waiting.size(), slots - working);
    s.slots[{peer.type, "working"}] += working;
    s.slots[{peer.type, "idle"}] += idle;
    s.slots[{peer.type, "busy"}] += slots - working - idle;
  }
  for (const ClientSlots& slots : placement_clients()) s.reserved_clients += slots.reserved ? 1 : 0;
  for (const auto& item : scheduler_.queue()) ++s.queued[to_string(item.type)];
  for (const auto& [id, active] : scheduler_.active()) {
    ++s.active[to_string(active.item.type)];
    if (active.lease_end) ++s.leased[to_string(active.item.type)];
  }
  for (const auto& [name, entry] : versions_) {
    auto stored = stored_.find(name);
    s.versions.push_back({name, stored == stored_.end() ? 0 : stored->second,
                          entry.version.target_models});
  }
  s.pending_predictions = predictions_.size();
  s.counters = metrics_;
  return s;
}

json Server::Impl::http_status_view() const {
  json status = status_view();
  json& queued = status["queued"];
  status["queued_count"] = queued.size();
  if (queued.size() > kQueueShown) {
    queued.erase(queued.begin() + static_cast<std::ptrdiff_t>(kQueueShown), queued.end());
  }
  const auto uptime = std::chrono::system_clock::now() - started_at_;
  status["server"] = {{"endpoint", endpoint_},
                      {"http", http_url()},
                      {"workdir", store_.root().string()},
                      {"started", format_timestamp(started_at_)},
                      {"uptime_seconds", std::chrono::duration<double>(uptime).count()}};
  json failures = json::object();
  for (const auto& [key, count] : metrics_.failures) failures[key.first][key.second] = count;
  status["counters"] = {{"bytes_sent", metrics_.bytes_sent},
                        {"bytes_received", metrics_.bytes_received},
                        {"completed", counts_json(metrics_.completed)},
                        {"failures", failures},
                        {"lease_expiries", counts_json(metrics_.lease_expiries)}};
  json ensembles = json::array();
  const std::size_t shown = std::min(kEnsemblesShown, finished_predictions_.size());
  for (auto it = finished_predictions_.rbegin(); it != finished_predictions_.rbegin() + static_cast<std::ptrdiff_t>(shown); ++it) {
    ensembles.push_back(ensemble_json(*it));
  }
  status["ensembles"] = ensembles;
  status["log"] = log_.recent_lines();
  return status;
}

}  // namespace conductor
