// Benchmarks against a conductor-server process: many connected idle clients, simulated by raw
// DEALER sockets of this process that speak HELLO, READY and heartbeats (CWP/1), and the time a
// restarted server with many stored models takes to accept a client. Throws
// std::runtime_error when a server does not come up or the clients do not get connected.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace conductor::bench {

struct IdleFigures {
  int connected = 0;                 // clients the server answered
  std::vector<double> cpu_percent;   // the server's CPU, % of one core, one per window
  std::uint64_t resident_bytes = 0;  // the server's RSS after the windows
};

// `clients` idle clients on a conductor-server with no work (heartbeat 1 s).
IdleFigures idle_clients_on_server(int clients, int windows, double window_seconds);
// The same clients on a bare ZeroMQ ROUTER that echoes every message: the floor.
IdleFigures idle_clients_on_raw_router(int clients, int windows, double window_seconds);
// The bare ROUTER, run as `conductor_bench --raw-router PORT` in a process of its own.
int raw_router_main(int port);

struct RestartFigures {
  std::vector<double> seconds;        // start of the process until a client's HELLO is answered
  std::vector<double> empty_seconds;  // the same for a server without models
  double meta_scan_seconds = 0;       // reading every meta.xml once, without a server
  double seed_seconds = 0;            // making the models
};
// A server folder with `models` stored models of one version, started `runs` times.
RestartFigures restart_with_models(int models, int runs);

}  // namespace conductor::bench
