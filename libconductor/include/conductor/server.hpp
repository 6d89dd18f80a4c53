// Server: the coordinator. Owns the working folder (AssetStore), the scheduler and the
// ROUTER socket; one network thread does all of it (see docs/architecture.md).
// Non-copyable; the destructor stops and joins. stop(), endpoint() and status() are
// thread-safe; run() and start() are called once.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace conductor {

struct ServerOptions {
  std::filesystem::path workdir;           // see default_server_workdir()
  std::string bind = "tcp://*:8080";       // the original's port
  std::chrono::milliseconds heartbeat_interval{1000};
  int liveness = 5;                        // missed intervals before a client is declared dead
  std::chrono::milliseconds training_timeout = std::chrono::hours(84);     // 3.5 days
  std::chrono::milliseconds prediction_timeout = std::chrono::minutes(20);
  std::chrono::milliseconds reconcile_interval = std::chrono::hours(1);
  bool log_to_stdout = true;
};

// --workdir, else $CONDUCTOR_WORKDIR, else ./workdir when RUNTIMEENV=docker, else
// $HOME/Conductor (the original's locations). `explicit_dir` empty means "not given".
std::filesystem::path default_server_workdir(const std::filesystem::path& explicit_dir = {});

struct VersionStatus {
  std::string name;
  bool is_local = false;
  int target_models = 0;
  int stored_models = 0;
  std::size_t queued = 0;
  std::size_t active = 0;
};

struct ServerStatus {
  std::size_t clients = 0;
  std::size_t queued = 0;
  std::size_t active = 0;
  std::vector<VersionStatus> versions;
};

class Server {
 public:
  // Loads (or creates) config/config.xml and every version, cleans the spool and binds.
  // Throws ConfigError for a broken config or version file (the file is left untouched),
  // TransportError when the endpoint cannot be bound, IoError when the folder is unusable.
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Serves on the calling thread until stop(). Call run() or start(), once.
  void run();
  // Serves on a background thread owned by this object.
  void start();
  // Asks the loop to end; returns at once. Thread-safe and idempotent.
  void stop();

  // The bound endpoint with the port resolved, e.g. "tcp://0.0.0.0:8080".
  std::string endpoint() const;
  const std::filesystem::path& workdir() const;
  // A snapshot taken by the network thread at most one loop turn ago.
  ServerStatus status() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  std::thread thread_;  // only after start()
};

}  // namespace conductor
