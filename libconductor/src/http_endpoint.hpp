// HttpEndpoint: the server's read-only HTTP face (cpp-httplib): Prometheus /metrics,
// /api/status as JSON, /healthz for probes, and the dashboard page (/, /dashboard.js,
// /dashboard.css, embedded in the library). Owns the listening socket, one thread that accepts and
// a small pool that answers. It never touches the server's state: the network thread publishes an
// HttpSnapshot (copied values) when a request asks for one, and requests read the latest snapshot.
// publish() and is_snapshot_wanted() are thread-safe; the destructor stops and joins.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "server_metrics.hpp"

namespace httplib {
class Server;
}

namespace conductor {

// What one answer shows: the counters and gauges for /metrics, the document for /api/status.
struct HttpSnapshot {
  MetricsSnapshot metrics;
  nlohmann::json status;
};

// "PORT", "HOST:PORT" or "[IPv6]:PORT" (HOST "*" = every IPv4 address); port 0 picks a free
// one. Throws Error(kArgument) for anything else.
struct HttpAddress {
  std::string host;
  int port = 0;
};
HttpAddress parse_http_address(const std::string& address);

class HttpEndpoint {
 public:
  // Binds `address` (parse_http_address) and starts serving. /healthz answers 503 once no
  // snapshot was published for `stalled_after` (see kStalledAfter). Throws Error(kArgument)
  // for a malformed address, TransportError when it cannot be bound.
  explicit HttpEndpoint(const std::string& address,
                        std::chrono::milliseconds stalled_after = kStalledAfter);
  ~HttpEndpoint();
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  // "http://HOST:PORT" with the port resolved.
  const std::string& url() const noexcept { return url_; }
  // Whether the address reaches beyond this machine (not a loopback address).
  bool is_public() const noexcept { return is_public_; }

  // True while a request waits for a fresher snapshot than the last one published.
  bool is_snapshot_wanted() const noexcept { return wanted_.load(); }
  void publish(std::shared_ptr<const HttpSnapshot> snapshot);

  // How long a request waits for the network thread's next snapshot before it is answered
  // from the one before (the network thread may be busy, or not serving yet).
  static constexpr std::chrono::milliseconds kSnapshotWait{250};
  // /healthz: the network thread counts as stalled when, even asked by the probe itself, it
  // has published no snapshot for this long (a liveness probe then restarts the server).
  static constexpr std::chrono::milliseconds kStalledAfter{30000};

 private:
  void route();
  std::shared_ptr<const HttpSnapshot> fresh_snapshot();
  // Time since the last publish(); nullopt before the first.
  std::optional<std::chrono::steady_clock::duration> snapshot_age();

  std::unique_ptr<httplib::Server> server_;
  std::string url_;
  bool is_public_ = false;
  std::atomic<bool> wanted_{false};
  std::mutex mutex_;
  std::condition_variable published_;
  std::shared_ptr<const HttpSnapshot> snapshot_;  // guarded by mutex_
  std::uint64_t generation_ = 0;                  // guarded by mutex_: snapshots published
  std::chrono::steady_clock::time_point published_at_;  // guarded by mutex_
  std::chrono::milliseconds stalled_after_;
  std::atomic<bool> listen_ended_{false};
  std::thread thread_;                            // accepts connections
};

}  // namespace conductor
