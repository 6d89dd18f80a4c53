// conductor-server: serves the versions of a working folder to conductor-clients.
// Exit codes: 0 stopped by a signal, 1 unexpected error, 2 bad arguments (also a malformed
// --http address, a --key-pair or $CONDUCTOR_KEY_PAIR_FILE that does not exist), 3 broken
// configuration (also a key file others may read), 4 endpoint (or HTTP address) cannot be bound,
// 5 working folder unusable.
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "conductor/error.hpp"
#include "conductor/keys.hpp"
#include "conductor/server.hpp"

namespace {

conductor::Server* g_server = nullptr;

void on_signal(int) {
  if (g_server) g_server->stop();
}

int exit_code_for(const conductor::Error& e) {
  switch (e.code()) {
    case conductor::ErrorCode::kArgument: return 2;
    case conductor::ErrorCode::kConfig: return 3;
    case conductor::ErrorCode::kTransport: return 4;
    case conductor::ErrorCode::kIo: return 5;
    default: return 1;
  }
}

void write_endpoint_file(const std::filesystem::path& file, const std::string& endpoint) {
  if (file.empty()) return;
  auto tmp = file;
  tmp += ".tmp";
  std::ofstream(tmp) << endpoint << '\n';
  std::filesystem::rename(tmp, file);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Conductor server: keeps every version trained to its target."};
  conductor::ServerOptions options;
  std::filesystem::path endpoint_file, http_endpoint_file;
  double training_timeout = 0, prediction_timeout = 0, check_interval = 0;
  int heartbeat_ms = static_cast<int>(options.heartbeat_interval.count());
  bool quiet = false, secure = false, insecure = false, print_key = false;
  app.add_option("--workdir", options.workdir,
                 "Working folder (else $CONDUCTOR_WORKDIR, ./workdir under RUNTIMEENV=docker, "
                 "$HOME/Conductor)");
  app.add_option("--bind", options.bind, "ZeroMQ endpoint to listen on")->capture_default_str();
  app.add_option("--endpoint-file", endpoint_file, "Write the bound endpoint here once listening");
  app.add_option("--heartbeat-ms", heartbeat_ms, "Heartbeat interval")->check(CLI::Range(50, 30000))
      ->capture_default_str();
  app.add_option("--liveness", options.liveness, "Missed heartbeats before a client is dead")
      ->check(CLI::Range(2, 100))->capture_default_str();
  app.add_option("--training-timeout", training_timeout, "Seconds a training item may run (default 3.5 days)")
      ->check(CLI::PositiveNumber);
  app.add_option("--prediction-timeout", prediction_timeout, "Seconds a prediction item may run (default 20 min)")
      ->check(CLI::PositiveNumber);
  int lease_ms = 0;
  app.add_option("--lease-ms", lease_ms, "How long a silent client's item waits for it (default 2 x heartbeat x liveness)")
      ->check(CLI::Range(0, 86400000));
  app.add_option("--check-interval", check_interval, "Seconds between version checks (default 3600)")
      ->check(CLI::PositiveNumber);
  auto* http = app.add_option("--http", options.http,
                 "Serve /metrics, /api/status and a dashboard on [HOST:]PORT (127.0.0.1 unless a "
                 "host is given; port 0 picks one; no authentication)");
  app.add_option("--http-endpoint-file", http_endpoint_file,
                 "Write the HTTP endpoint (http://host:port) here once listening")
      ->needs(http);
  std::uint64_t min_free_mb = options.min_free_bytes >> 20;
  app.add_option("--min-free-mb", min_free_mb,
                                  "Keep this many MiB free in the working folder: a result that would leave less "
                 "waits on its client (0: no check)")
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 42))
      ->capture_default_str();
  app.add_flag("--quiet", quiet, "Log to config/log.txt only");
  auto* secure_flag = app.add_flag("--secure", secure, "CurveZMQ even on a loopback endpoint");
  app.add_flag("--insecure", insecure, "No CurveZMQ even on a public endpoint (warns)")->excludes(secure_flag);
  conductor::KeyFlags keys;
  auto* key_file = app.add_option("--key-file", keys.key_file,
                                  "Server key pair, created when missing (else --key-pair, "
                                  "$CONDUCTOR_KEY_PAIR_FILE, <workdir>/config/server.key)");
  app.add_option("--key-pair", keys.key_pair,
                 "An existing server key pair, never created (a mounted Secret: owner and group "
                 "may read it, others not)")
      ->excludes(key_file);
  app.add_option("--authorized-keys", options.authorized_keys,
                 "Client public keys allowed in (default <workdir>/config/authorized_keys)");
  app.add_flag("--print-key", print_key, "Print the server's public key (creating it) and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help is not an error; everything else is exit 2
  }

  using std::chrono::milliseconds;
  auto ms = [](double seconds) { return milliseconds(static_cast<long long>(seconds * 1000)); };
  options.heartbeat_interval = milliseconds(heartbeat_ms);
  if (training_timeout > 0) options.training_timeout = ms(training_timeout);
  if (prediction_timeout > 0) options.prediction_timeout = ms(prediction_timeout);
  if (check_interval > 0) options.reconcile_interval = ms(check_interval);
  options.log_to_stdout = !quiet;
  options.lease_grace = milliseconds(lease_ms);
  options.min_free_bytes = min_free_mb << 20;
  using Security = conductor::ServerOptions::Security;
  options.security = secure ? Security::kCurve : insecure ? Security::kInsecure : Security::kAuto;
  try {
    options.key_file = conductor::resolve_key_pair(keys);
  } catch (const conductor::Error& e) {
    std::fprintf(stderr, "conductor-server: %s\n", e.what());
    return 2;
  }
  try {
    if (print_key) {
      auto workdir = conductor::default_server_workdir(options.workdir);
      std::printf("%s\n", conductor::public_key_of(options.key_file.empty()
                                                       ? conductor::default_server_key_file(workdir)
                                                       : options.key_file).c_str());
      return 0;
    }
    conductor::Server server(options);
    g_server = &server;
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    // The HTTP file first: whoever waits for --endpoint-file then finds both.
    write_endpoint_file(http_endpoint_file, server.http_endpoint());
    write_endpoint_file(endpoint_file, server.endpoint());
    server.run();
    g_server = nullptr;
    return 0;
  } catch (const conductor::Error& e) {
    std::fprintf(stderr, "conductor-server: %s\n", e.what());
    return exit_code_for(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "conductor-server: unexpected error: %s\n", e.what());
    return 1;
  }
}
