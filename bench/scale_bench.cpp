#include "scale_bench.hpp"

#include <atomic>
#include <csignal>
#include <fstream>
#include <stdexcept>
#include <thread>
#include <zmq.hpp>

#include "bench_support.hpp"
#include "protocol.hpp"
#include "transport.hpp"

namespace conductor::bench {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using protocol::MessageType;

namespace {

constexpr auto kHeartbeat = 1000ms;

void send(zmq::socket_t& socket, MessageType type, const auto& header) {
  auto frames = protocol::encode(type, header);
  transport::send(socket, frames);
}

protocol::Hello hello_for(int index) {
  protocol::Hello hello;
  hello.client_id = "bench-idle-" + std::to_string(index);
  hello.host = "idle-" + std::to_string(index);
  hello.os = "ubuntu";
  hello.type = "cpu";
  hello.version = "bench";
  return hello;
}

// `count` DEALERs on one thread: HELLO, READY once answered, a heartbeat per second each
// (spread over the second), HELLO again on RESYNC.
class IdleFleet {
 public:
  IdleFleet(std::string endpoint, int count)
      : endpoint_(std::move(endpoint)), count_(count), thread_([this] { run(); }) {}
  ~IdleFleet() {
    stop_ = true;
    thread_.join();
  }
  int connected() const { return connected_.load(); }

 private:
  void run() {
    zmq::context_t context;
    context.set(zmq::ctxopt::max_sockets, count_ + 64);
    std::vector<zmq::socket_t> sockets;
    std::vector<zmq::pollitem_t> items;
    std::vector<bool> answered(count_, false);
    std::vector<Clock::time_point> next_beat;
    const auto start = Clock::now();
    for (int i = 0; i < count_; ++i) {
      sockets.emplace_back(context, zmq::socket_type::dealer);
      transport::connect_dealer(sockets.back(), endpoint_);
      send(sockets.back(), MessageType::kHello, hello_for(i));
      next_beat.push_back(start + kHeartbeat + kHeartbeat * i / count_);
    }
    for (auto& socket : sockets) items.push_back({socket.handle(), 0, ZMQ_POLLIN, 0});
    while (!stop_) {
      zmq::poll(items.data(), items.size(), 10ms);
      for (int i = 0; i < count_; ++i) {
        if (!(items[i].revents & ZMQ_POLLIN)) continue;
        while (auto received = transport::receive(sockets[i], protocol::kMaxFrames)) {
          if (!answered[i]) {
            answered[i] = true;
            ++connected_;
            send(sockets[i], MessageType::kReady, protocol::Empty{});
            continue;
          }
          try {
            if (protocol::decode(received->frames).type() == MessageType::kResync) {
              send(sockets[i], MessageType::kHello, hello_for(i));
            }
          } catch (const std::exception&) {
            // Whatever the echo server sends back is fine.
          }
        }
      }
      const auto now = Clock::now();
      for (int i = 0; i < count_; ++i) {
        if (now < next_beat[i]) continue;
        send(sockets[i], MessageType::kHeartbeat, protocol::Empty{});
        next_beat[i] += kHeartbeat;
      }
    }
  }

  std::string endpoint_;
  int count_;
  std::atomic<bool> stop_{false};
  std::atomic<int> connected_{0};
  std::thread thread_;
};

IdleFigures measure_idle(pid_t server, const std::string& endpoint, int clients, int windows,
                         double window_seconds) {
  IdleFigures figures;
  IdleFleet fleet(endpoint, clients);
  const bool all = wait_for([&] { return fleet.connected() == clients; }, 120s, 10ms);
  figures.connected = fleet.connected();
  if (!all) {
    throw std::runtime_error("only " + std::to_string(figures.connected) + " of " +
                             std::to_string(clients) + " idle clients were answered");
  }
  std::this_thread::sleep_for(2s);  // let the connection storm settle
  for (int w = 0; w < windows; ++w) {
    const double before = cpu_seconds(server);
    const auto started = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(window_seconds));
    figures.cpu_percent.push_back(100 * (cpu_seconds(server) - before) / seconds_since(started));
    print_perf_window("idle clients", started, Clock::now());
  }
  figures.resident_bytes = resident_bytes(server);
  return figures;
}

// Starts the server on a fixed port and connects at once; the DEALER retries every
// millisecond, so the answer comes as soon as the server serves.
double seconds_until_answered(const fs::path& workdir, const fs::path& log) {
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  zmq::context_t context;
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.set(zmq::sockopt::reconnect_ivl, 1);
  dealer.set(zmq::sockopt::reconnect_ivl_max, 1);
  const auto started = Clock::now();
  Child server(server_command(workdir, endpoint, workdir / "endpoint"), log);
  dealer.connect(endpoint);
  send(dealer, MessageType::kHello, hello_for(0));
  zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, 60s) <= 0)
    throw std::runtime_error("the restarted server never answered");
  const double seconds = seconds_since(started);
  send(dealer, MessageType::kBye, protocol::Empty{});
  server.stop();
  fs::remove(workdir / "endpoint");
  return seconds;
}

}  // namespace

IdleFigures idle_clients_on_server(int clients, int windows, double window_seconds) {
  ScratchDir root("conductor-bench-scale");
  const fs::path workdir = root / "server";
  write_server_config(workdir, {});
  Child server(server_command(workdir, "tcp://127.0.0.1:*", root / "endpoint"),
               root / "server.log");
  const std::string endpoint = wait_for_endpoint_file(root / "endpoint");
  auto figures = measure_idle(server.pid(), endpoint, clients, windows, window_seconds);
  server.stop();
  return figures;
}

IdleFigures idle_clients_on_raw_router(int clients, int windows, double window_seconds) {
  ScratchDir root("conductor-bench-raw-router");
  const int port = free_port();
  Child router({self_path().string(), "--raw-router", std::to_string(port)}, root / "router.log");
  auto figures = measure_idle(router.pid(), "tcp://127.0.0.1:" + std::to_string(port), clients,
                              windows, window_seconds);
  router.stop();
  return figures;
}

int raw_router_main(int port) {
  static std::atomic<bool> stop{false};
  std::signal(SIGTERM, [](int) { stop = true; });
  zmq::context_t context;
  context.set(zmq::ctxopt::max_sockets, 65536);
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:" + std::to_string(port));
  zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
  while (!stop) {
    try {
      zmq::poll(&item, 1, 50ms);
    } catch (const zmq::error_t&) {
      continue;  // EINTR from SIGTERM
    }
    while (auto received = transport::receive(router, protocol::kMaxFrames + 1)) {
      transport::send(router, received->frames);  // routing id first: straight back
    }
  }
  return 0;
}

RestartFigures restart_with_models(int models, int runs) {
  ScratchDir root("conductor-bench-restart");
  RestartFigures figures;
  const fs::path full = root / "full";
  const fs::path empty = root / "empty";
  write_server_config(full, {{"many", models, {{"/usr/bin/touch", "model.h5"}}}});
  write_server_config(empty, {{"many", 0, {{"/usr/bin/touch", "model.h5"}}}});
  auto started = Clock::now();
  seed_models(full, "many", models, [](int) { return std::string("0123456789abcdef"); });
  figures.seed_seconds = seconds_since(started);
  started = Clock::now();
  std::size_t read = 0;
  for (const auto& entry : fs::directory_iterator(full / "assets" / "many" / "models")) {
    std::ifstream in(entry.path() / "meta.xml");
    read +=
        std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()).size();
  }
  figures.meta_scan_seconds = read > 0 ? seconds_since(started) : 0;
  for (int run = 0; run < runs; ++run) {
    figures.seconds.push_back(seconds_until_answered(full, root / "full.log"));
    figures.empty_seconds.push_back(seconds_until_answered(empty, root / "empty.log"));
  }
  return figures;
}

}  // namespace conductor::bench
