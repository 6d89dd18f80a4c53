// conductor-client: takes work items from a conductor-server, one per slot (--slots, or one per
// GPU), runs them and sends the results back; reconnects by itself. Exit codes: 0 stopped by a signal, 1 unexpected
// error, 2 bad arguments (also a key file named by a flag or variable that is missing or
// unusable), 5 working folder unusable or in use.
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>

#include "conductor/client.hpp"
#include "conductor/error.hpp"
#include "conductor/keys.hpp"

namespace {

conductor::Client* g_client = nullptr;

void on_signal(int) {
  if (g_client) g_client->stop();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Conductor client: runs training and prediction items for a conductor-server."};
  conductor::ClientOptions options = conductor::client_options_from_environment();
  std::string workdir;
  int heartbeat_ms = static_cast<int>(options.heartbeat_interval.count());
  bool quiet = false, print_key = false, plain = false;
  app.add_option("host", options.server, "Server as host:port or tcp://host:port (else $CONDUCTOR_HOST)");
  app.add_option("--workdir", workdir, "Working folder (else $CONDUCTOR_CLIENT_WORKDIR or $HOME/ConductorClient)");
  app.add_option("--name", options.host_name, "Name shown by the server (default: host name)");
  app.add_option("--heartbeat-ms", heartbeat_ms, "Heartbeat interval until the server states its own")
      ->check(CLI::Range(50, 30000));
  app.add_option("--type", options.processing_unit, "Processing unit: cpu or gpu (else $CONDUCTOR_TYPE)")
      ->check(CLI::IsMember({"cpu", "gpu"}));
  std::string gpus;
  auto* gpus_option = app.add_option("--gpus", gpus,
                                     "A GPU client's GPUs, e.g. 0,1: one slot each (else "
                                     "$CUDA_VISIBLE_DEVICES, else nvidia-smi -L); implies --type gpu");
  app.add_option("--slots", options.slots, "Items a CPU client runs at once (default 1)")
      ->check(CLI::Range(1, 64));
  app.add_flag("--quiet", quiet, "Print nothing but errors");
  app.add_flag("--plain", plain, "Plain log lines even on a terminal (no progress bars)");
  conductor::KeyFlags keys;
  auto* server_key = app.add_option("--server-key", keys.server_key,
                                    "The server's CurveZMQ public key (else --server-key-file, "
                                    "$CONDUCTOR_SERVER_KEY, $CONDUCTOR_SERVER_KEY_FILE; none: plain TCP)");
  app.add_option("--server-key-file", keys.server_key_file,
                 "File whose first word is the server's public key (a mounted ConfigMap)")
      ->excludes(server_key);
  auto* key_file = app.add_option("--key-file", keys.key_file,
                                  "This client's key pair, created when missing (else --key-pair, "
                                  "$CONDUCTOR_KEY_PAIR_FILE, <workdir>/client.key)");
  app.add_option("--key-pair", keys.key_pair,
                 "An existing key pair, never created (a mounted Secret: owner and group may "
                 "read it, others not)")
      ->excludes(key_file);
  app.add_flag("--print-key", print_key, "Print this client's public key (creating it) and exit");
  std::uint64_t cache_mb = options.cache_bytes >> 20;
  app.add_option("--cache-mb", cache_mb, "MiB of package archives kept for later items (LRU)")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 40));
  std::uint64_t min_free_mb = options.min_free_bytes >> 20;
  app.add_option("--min-free-mb", min_free_mb,
                 "Keep this many MiB free in the working folder: an item whose packages would "
                 "leave less fails, and the server hands it out again (0: no check)")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 42));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help is not an error; everything else is exit 2
  }
  // The commands' lines are echoed as they come, also into pipes and log collectors.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (!workdir.empty()) options.workdir = workdir;
  try {
    options.server_key = conductor::resolve_server_key(keys);
    options.key_file = conductor::resolve_key_pair(keys);
  } catch (const conductor::Error& e) {
    std::fprintf(stderr, "conductor-client: %s\n", e.what());
    return 2;
  }
  if (print_key) {
    try {
      std::printf("%s\n", conductor::public_key_of(options.key_file.empty()
                                                       ? conductor::default_client_key_file(options.workdir)
                                                       : options.key_file).c_str());
      return 0;
    } catch (const conductor::Error& e) {
      std::fprintf(stderr, "conductor-client: %s\n", e.what());
      return 5;
    }
  }
  if (options.server.empty()) {
    std::fprintf(stderr, "conductor-client: no server given: pass HOST or set CONDUCTOR_HOST\n");
    return 2;
  }
  if (gpus_option->count() > 0) {
    options.gpus = conductor::split_gpu_list(gpus);
    if (options.gpus.empty()) {
      std::fprintf(stderr, "conductor-client: --gpus '%s' refused: it names no GPU\n", gpus.c_str());
      return 2;
    }
    if (app.get_option("--type")->count() == 0) options.processing_unit = "gpu";
  }
  options.heartbeat_interval = std::chrono::milliseconds(heartbeat_ms);
  options.cache_bytes = cache_mb << 20;
  options.min_free_bytes = min_free_mb << 20;
  options.log_to_stdout = !quiet;
  // On a terminal a bar per item; in a pipe or file the same lines without it.
  options.display = plain ? conductor::ClientOptions::Display::kPlain
                          : conductor::ClientOptions::Display::kAuto;
  try {
    conductor::Client client(options);
    g_client = &client;
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    client.run();
    g_client = nullptr;
    return 0;
  } catch (const conductor::Error& e) {
    std::fprintf(stderr, "conductor-client: %s\n", e.what());
    return e.code() == conductor::ErrorCode::kArgument ? 2 : e.code() == conductor::ErrorCode::kIo ? 5 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "conductor-client: unexpected error: %s\n", e.what());
    return 1;
  }
}
