#include "http_endpoint.hpp"

#include <httplib.h>

#include "conductor/error.hpp"
#include "dashboard_assets.hpp"
#include "prometheus_text.hpp"
#include "thread_name.hpp"
#include "transport.hpp"

namespace conductor {

namespace {

// Requests are small and rare (a scraper, a few dashboards): a few threads, and idle
// keep-alive connections let go of theirs soon.
constexpr std::size_t kThreads = 4;
constexpr time_t kKeepAliveSeconds = 2;

Error address_error(const std::string& address, const std::string& why) {
  return Error(ErrorCode::kArgument, "HTTP address '" + address + "' refused: " + why +
                                         " (expected PORT, HOST:PORT or [IPv6]:PORT)");
}

}  // namespace

HttpAddress parse_http_address(const std::string& address) {
  std::string host = "127.0.0.1";
  std::string port = address;
  if (auto colon = address.rfind(':'); colon != std::string::npos) {
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    } else if (host.find(':') != std::string::npos) {
      throw address_error(address, "an IPv6 address needs brackets");
    }
    if (host == "*") host = "0.0.0.0";
    if (host.empty()) throw address_error(address, "no host before ':'");
  }
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(port) > 65535) {
    throw address_error(address, "the port must be a number from 0 to 65535");
  }
  return {host, std::stoi(port)};
}

HttpEndpoint::HttpEndpoint(const std::string& address, std::chrono::milliseconds stalled_after)
    : server_(std::make_unique<httplib::Server>()), stalled_after_(stalled_after) {
  const HttpAddress where = parse_http_address(address);
  const bool v6 = where.host.find(':') != std::string::npos;
  const std::string host = v6 ? "[" + where.host + "]" : where.host;
  is_public_ = !transport::is_local_endpoint("tcp://" + host + ":0");
  server_->new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
  server_->set_keep_alive_timeout(kKeepAliveSeconds);
  // httplib's default adds SO_REUSEPORT, which would let a second server share the port and
  // take half the requests; a port in use must be refused instead.
  server_->set_socket_options([](socket_t socket) {
    int yes = 1;
    ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  route();
  const int port = where.port == 0 ? server_->bind_to_any_port(where.host)
                                   : (server_->bind_to_port(where.host, where.port) ? where.port : -1);
  if (port <= 0) {
    throw TransportError("HTTP address '" + address +
                         "' cannot be bound: the port is in use or the host is not an address "
                         "of this machine");
  }
  url_ = "http://" + host + ":" + std::to_string(port);
  thread_ = std::thread([this] {
    name_this_thread("cdr-http");
    server_->listen_after_bind();
    listen_ended_.store(true);
  });
  // stop() reaches only a server whose loop has begun: wait for that, so that a destructor
  // right after construction cannot miss it and wait forever in join().
  while (!server_->is_running() && !listen_ended_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

HttpEndpoint::~HttpEndpoint() {
  {
    std::lock_guard lock(mutex_);
    ++generation_;  // no request waits for a snapshot any more
  }
  published_.notify_all();
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

void HttpEndpoint::publish(std::shared_ptr<const HttpSnapshot> snapshot) {
  {
    std::lock_guard lock(mutex_);
    snapshot_ = std::move(snapshot);
    published_at_ = std::chrono::steady_clock::now();
    ++generation_;
    wanted_.store(false);
  }
  published_.notify_all();
}

std::shared_ptr<const HttpSnapshot> HttpEndpoint::fresh_snapshot() {
  std::unique_lock lock(mutex_);
  const std::uint64_t asked_at = generation_;
  wanted_.store(true);
  published_.wait_for(lock, kSnapshotWait, [&] { return generation_ != asked_at; });
  return snapshot_;
}

std::optional<std::chrono::steady_clock::duration> HttpEndpoint::snapshot_age() {
  std::lock_guard lock(mutex_);
  if (generation_ == 0 || !snapshot_) return std::nullopt;
  return std::chrono::steady_clock::now() - published_at_;
}

void HttpEndpoint::route() {
  // Read-only data for people and scrapers: nothing may embed it, sniff it, or cache it.
  server_->set_default_headers({{"Cache-Control", "no-store"},
                                {"X-Content-Type-Options", "nosniff"},
                                {"Content-Security-Policy",
                                 "default-src 'self'; frame-ancestors 'none'; form-action 'none'"}});
  for (auto asset = dashboard_assets_begin(); asset != dashboard_assets_end(); ++asset) {
    server_->Get(std::string(asset->path), [asset](const httplib::Request&, httplib::Response& res) {
      res.set_content(asset->body.data(), asset->body.size(), std::string(asset->content_type).c_str());
    });
  }
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    auto snapshot = fresh_snapshot();
    res.set_content(snapshot ? format_metrics(snapshot->metrics) : std::string{},
                    kPrometheusContentType);
  });
  server_->Get("/api/status", [this](const httplib::Request&, httplib::Response& res) {
    auto snapshot = fresh_snapshot();
    // Host names and log lines come from clients: never let a stray byte fail the answer.
    const std::string body = snapshot ? snapshot->status.dump(-1, ' ', false,
                                                              nlohmann::json::error_handler_t::replace)
                                      : "{}";
    res.set_content(body, "application/json");
  });
  // For probes: cheap, and 200 only while the network thread still turns. The request asks
  // for a snapshot as the others do, so a turning thread answers it within one loop turn.
  server_->Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
    fresh_snapshot();
    const auto age = snapshot_age();
    if (!age) {
      res.status = 503;
      res.set_content("starting: the server has not served yet\n", "text/plain; charset=utf-8");
    } else if (*age > stalled_after_) {
      res.status = 503;
      const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(*age).count();
      res.set_content("stalled: the server's network thread answered nothing for " +
                          std::to_string(seconds) + " s\n",
                      "text/plain; charset=utf-8");
    } else {
      res.set_content("ok\n", "text/plain; charset=utf-8");
    }
  });
  server_->set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (res.status == 404) {
      res.set_content("not found: " + req.path + " (try /, /metrics, /api/status or /healthz)\n",
                      "text/plain; charset=utf-8");
    }
  });
  server_->set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
        std::string what = "unknown error";
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        res.status = 500;
        res.set_content("internal error: " + what + "\n", "text/plain; charset=utf-8");
      });
}

}  // namespace conductor
