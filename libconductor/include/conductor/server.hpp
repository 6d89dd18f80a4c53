// Server: the coordinator. Owns the working folder (AssetStore), the scheduler and the
// ROUTER socket; one network thread does all of it (see docs/architecture.md).
// Non-copyable; the destructor stops and joins. stop(), endpoint(), http_endpoint() and
// status() are thread-safe; run() and start() are called once. With ServerOptions::http the
// server also answers HTTP on threads of its own, from snapshots the network thread publishes.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "conductor/asset_store.hpp"
#include "conductor/ensemble.hpp"
#include "conductor/placement.hpp"
#include "conductor/version.hpp"

namespace conductor {

struct ServerOptions {
  std::filesystem::path workdir;           // see default_server_workdir()
  std::string bind = "tcp://*:8080";       // the original's port
  std::chrono::milliseconds heartbeat_interval{1000};
  int liveness = 5;                        // missed intervals before a client is declared dead
  std::chrono::milliseconds training_timeout = std::chrono::hours(84);     // 3.5 days
  std::chrono::milliseconds prediction_timeout = std::chrono::minutes(20);
  std::chrono::milliseconds reconcile_interval = std::chrono::hours(1);
  // How long the item of a client that went silent waits for it to come back before it is
  // queued again. 0: twice heartbeat_interval x liveness (10 s by default).
  std::chrono::milliseconds lease_grace{0};
  bool log_to_stdout = true;
  // CurveZMQ encryption and a ZAP allow-list of client keys. kAuto: on unless `bind` is a
  // loopback, ipc or inproc endpoint. kInsecure on a public endpoint logs a warning.
  enum class Security { kAuto, kCurve, kInsecure };
  Security security = Security::kAuto;
  std::filesystem::path key_file;         // default <workdir>/config/server.key (made if missing)
  std::filesystem::path authorized_keys;  // default <workdir>/config/authorized_keys
  // Read-only HTTP endpoint: Prometheus /metrics, /api/status (JSON) and a live dashboard at
  // /. "PORT" (on 127.0.0.1), "HOST:PORT" or "[IPv6]:PORT"; port 0 picks a free one. Empty:
  // off. It has no authentication: an address beyond loopback is served with a warning.
  std::string http;
  // A result that would leave less than this many bytes free on the working folder's file
  // system is not taken (nor unpacked) yet: its client keeps it and offers it again. 0: not
  // checked.
  std::uint64_t min_free_bytes = std::uint64_t{256} << 20;
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

// Which models answer a prediction request.
struct PredictOptions {
  std::string version;  // empty: the current version
  std::size_t top = 0;  // 0: every stored model; else the best `top` by `by`
  std::string by;       // metric name in meta.xml, required with top
  enum class Order { kAuto, kHigherIsBetter, kLowerIsBetter };
  // kAuto: lower is better for error-like names (loss, mae, mse, rmse, rae, rse, rrse, fpr,
  // error), higher for everything else.
  Order order = Order::kAuto;
};

// A model the server accepted, as next_stored_model() reports it.
struct StoredModel {
  std::string version;
  std::string id;
  std::filesystem::path folder;  // assets/<version>/models/<id>
  // As written to meta.xml, metrics included, read when next_stored_model() takes the model
  // (on the caller's thread); default values when it cannot be read (removed or edited since).
  ModelMeta meta;
  // Why `meta` could not be read, naming the file (and the line, for bad XML); empty when it was.
  std::string meta_error;
};

// At most this many items may be queued when a prediction request arrives (the original's limit).
inline constexpr std::size_t kPredictionQueueLimit = 400;

class Server {
 public:
  // Loads (or creates) config/config.xml and every version, cleans the spool and binds (the
  // HTTP address too, when set). Throws ConfigError for a broken config or version file (the
  // file is left untouched), TransportError when an endpoint cannot be bound, IoError when the
  // folder is unusable, Error(kArgument) for a malformed HTTP address.
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
  // The HTTP endpoint as "http://HOST:PORT", port resolved; empty without ServerOptions::http.
  std::string http_endpoint() const;
  // The server's CURVE public key (Z85), empty when it runs without CURVE.
  std::string public_key() const;
  const std::filesystem::path& workdir() const;
  // A snapshot taken by the network thread at most one loop turn ago.
  ServerStatus status() const;

  // Operator commands. While the server serves (run() or start()) each is thread-safe and
  // runs on the network thread; before and after that it runs on the caller's thread, and
  // calls must not overlap. Each persists to config.xml / version.xml before returning,
  // and throws Error (kArgument for an unknown version or a bad value, kConfig when a file
  // cannot be written).
  void set_reserve(double fraction);
  void set_target(const std::string& version, int target_models);
  // Which clients may run the version's items: any, CPU clients only or GPU clients only
  // (<Requires> in its version.xml, or in config.xml for a global version).
  void set_requirement(const std::string& version, Requirement requirement);
  // Copies `folder` (which must hold a valid version.xml) to assets/<name> as a local version;
  // `name` defaults to the folder's name. Refuses an existing name.
  void add_version(const std::filesystem::path& folder, const std::string& name = {});
  // Stops training a version; its stored models stay on disk.
  void remove_version(const std::string& version);
  void select_version(const std::string& version);
  // Starts an ensemble prediction over `csv_rows` (written as predictiondata.csv for every
  // model). Returns the request id. Throws Error(kArgument) when the version is unknown, has
  // no prediction commands or no (ranked) models, or kPredictionQueueLimit items are queued.
  std::string predict(const std::string& csv_rows, const PredictOptions& options = {});
  // The ensemble once every model answered, failed or timed out; nullopt while it runs.
  // Throws Error(kArgument) for an unknown request id.
  std::optional<EnsembleResult> prediction(const std::string& request_id) const;
  // prediction(), waiting up to `timeout` for the request to complete: returns as soon as it
  // does (no polling), nullopt when the time runs out first. Throws Error(kArgument) for an
  // unknown request id. Thread-safe.
  std::optional<EnsembleResult> wait_for_prediction(const std::string& request_id,
                                                    std::chrono::milliseconds timeout) const;
  // Where the queued or active item `item_id` stands and why, in plain words: running on which
  // client and slot, waiting for a silent client's lease, or what keeps it queued (no client
  // can run it, every slot that could is busy, only reserve clients could). `item_id` may be an
  // unambiguous prefix of the id, as `conductorctl status` shortens them. Throws
  // Error(kArgument) when no queued or active item matches, or several do.
  Explanation explain(const std::string& item_id) const;
  // The operator protocol's commands by name (as conductorctl sends them; docs/protocol.md):
  // returns the reply body (JSON), throws Error with the refusal.
  std::string control(const std::string& command, const std::map<std::string, std::string>& args);

  // The next model accepted since the server was constructed, in arrival order; waits up to
  // `timeout` and returns nullopt when none came. Thread-safe; each model is reported once
  // (the latest 10,000 are kept until taken).
  std::optional<StoredModel> next_stored_model(std::chrono::milliseconds timeout);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  std::thread thread_;  // only after start()
};

}  // namespace conductor
