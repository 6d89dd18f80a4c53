// Server::Impl: the server's state and its network thread. Private to libconductor; split over
// server.cpp (worker protocol, scheduling, peers), server_control.cpp (operator commands,
// predictions) and server_http.cpp (snapshots for the HTTP endpoint). Everything here runs on
// the one thread that calls run(), except what the public Server says is thread-safe (stop,
// status, submit) and the HTTP endpoint's own threads, which see only published snapshots.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "background_worker.hpp"
#include "conductor/asset_store.hpp"
#include "conductor/config.hpp"
#include "conductor/ensemble.hpp"
#include "conductor/placement.hpp"
#include "conductor/scheduler.hpp"
#include "conductor/server.hpp"
#include "curve.hpp"
#include "file_io.hpp"
#include "http_endpoint.hpp"
#include "package_cache.hpp"
#include "prediction_inputs.hpp"
#include "protocol.hpp"
#include "result_receiver.hpp"
#include "server_log.hpp"
#include "server_metrics.hpp"
#include "transport.hpp"
#include "wakeup.hpp"

namespace conductor {

namespace fs = std::filesystem;
using protocol::MessageType;

// Uploads from operators (conductorctl add-version) are told apart from workers' results by
// this prefix before their routing id, where a worker has its client id.
inline constexpr std::string_view kOperatorPrefix = "ctl:";

// An upload that moved nothing for this long (or the lease, when longer) is abandoned.
inline constexpr std::chrono::minutes kUploadIdleLimit{10};

// An ensemble result as the "prediction" command answers it (server_control.cpp).
nlohmann::json ensemble_json(const EnsembleResult& result);

class Server::Impl {
 public:
  explicit Impl(ServerOptions options);
  // The receiver's stream threads post to result_worker_: they are joined while it still exists.
  ~Impl() { receiver_.reset(); }
  void run();
  // Async-signal-safe: conductor-server calls it from its SIGINT/SIGTERM handler.
  void stop() {
    stop_requested_.store(true);
    wake_.signal();
  }
  const std::string& endpoint() const { return endpoint_; }
  const std::string& public_key() const { return public_key_; }
  const fs::path& workdir() const { return store_.root(); }
  const std::string& http_url() const;

  ServerStatus status() const {
    std::lock_guard lock(status_mutex_);
    return status_;
  }

  // Runs `task` on the network thread and waits for its result or exception. When the server
  // is not serving, the caller's thread runs it (no other thread touches the state then).
  template <typename F>
  std::invoke_result_t<F> call(F&& task) {
    using R = std::invoke_result_t<F>;
    auto promise = std::make_shared<std::promise<R>>();
    auto future = promise->get_future();
    {
      std::unique_lock lock(tasks_mutex_);
      if (!serving_) {
        lock.unlock();
        return task();
      }
      tasks_.push_back([promise, &task] {
        try {
          if constexpr (std::is_void_v<R>) {
            task();
            promise->set_value();
          } else {
            promise->set_value(task());
          }
        } catch (...) {
          promise->set_exception(std::current_exception());
        }
      });
    }
    wake_.signal();
    return future.get();
  }
  void mark_serving();
  // Thread-safe: true once `request_id` completed (among the latest kept) or the loop ended,
  // false at `deadline`.
  bool wait_until_finished(const std::string& request_id, TimePoint deadline);
  std::optional<StoredModel> next_stored_model(std::chrono::milliseconds timeout);  // start(): calls made from now on wait for the network thread

  // ---- operator commands (server_control.cpp) ------------------------------------------
  std::string execute(const std::string& command, const std::map<std::string, std::string>& args);
  void set_reserve(double fraction);
  void set_target(const std::string& version, int target);
  void set_requirement(const std::string& version, Requirement requirement);
  Explanation explain(const std::string& item_prefix, WorkItem* item = nullptr) const;
  void add_version(const fs::path& folder, std::string name, bool move_folder);
  void remove_version(const std::string& version);
  void select_version(const std::string& version);
  std::string predict(const std::string& csv_rows, const PredictOptions& options);
  std::optional<EnsembleResult> prediction(const std::string& request_id) const;

 private:
  struct Epoch {
    int epoch = 0;
    int total = 0;
  };
  struct Peer {
    std::string id;
    std::string routing;
    std::string host, os, type, version;
    int slots = 1;                  // items it runs at once
    std::vector<std::string> gpus;  // slot i runs on gpus[i]
    std::uint64_t order = 0;        // connection order, for the reserve-node rule
    TimePoint last_seen;
    std::set<int> waiting;          // free slots that sent READY and have no item yet
    std::map<std::string, Epoch> epochs;  // of its running items, by item id
    std::string key;                // CURVE public key it connected with; empty without CURVE
    std::uint64_t inline_inputs_bytes = 0;  // inputs it takes with ASSIGN (HELLO)
    bool model_archives = false;            // it unpacks ASSIGN's `model` (HELLO)
  };

  // A prediction request in flight.
  struct PendingPrediction {
    Ensemble ensemble;
    TimePoint deadline;
    fs::path folder;  // spool/predictions/<request>: data and per-model input archives
  };
  struct PredictionItem {
    std::string request;
    std::string model;
    PackageBlob inputs;
    std::optional<PackageBlob> model_pack;  // a large model's own archive, unpacked first
  };

  // ---- messages ------------------------------------------------------------------------

  void handle(transport::Received& received);
  void on_hello(const std::string& routing, const std::string& key, const protocol::Hello& hello);

  // A client that comes back keeps the items it is still working on, if nobody else got them.
  void reattach(Peer& peer, const protocol::Hello& hello);
  void reattach_one(Peer& peer, const protocol::RunningItem& running, TimePoint now);

  // After a server restart the queue holds new ids. An item a client still runs for a version
  // that needs models takes the place of one queued item, so no work is lost or doubled.
  bool adopt(Peer& peer, const protocol::RunningItem& running, TimePoint now);
  void on_ready(Peer& peer, const protocol::Ready& ready);
  // Sends `ack`, then takes `ready_slot` (when not -1) as a READY from that slot.
  void acknowledge(Peer& peer, protocol::Ack ack, int ready_slot);
  void on_fetch(Peer& peer, const protocol::Fetch& fetch);
  void on_progress(Peer& peer, const protocol::Progress& progress);
  // `inline_archive`: the whole result, sent with the RESULT (WELCOME.inline_result_bytes).
  void on_result(Peer& peer, const protocol::ResultOffer& offer,
                 const zmq::message_t* inline_archive);
  void on_upload(Peer& peer, protocol::Message& message);
  // Every complete upload, a worker's result or an operator's folder, once unpacked.
  void on_finished(const std::string& client, ResultReceiver::Finished done);
  // A PULL the receiver asks for on its own (a stream took chunks): to a client or an operator.
  void send_pull(const std::string& client, const protocol::Pull& pull);
  void finish_result(Peer& peer, const ResultReceiver::Finished& done);
  void on_failed(Peer& peer, const protocol::Failed& failed);
  void record_failure(Peer& peer, const WorkItem& item, int attempt, const std::string& reason,
                      std::string_view console);

  // ---- scheduling ----------------------------------------------------------------------

  void dispatch(TimePoint now);
  enum class Handout { kFirst, kRepeat };
  // `blob`: the version's current pack (package_of); nullptr while it is still packed.
  bool hand_out(Peer& peer, const WorkItem& item, int slot, const PackageBlob* blob,
                Handout handout = Handout::kFirst);
  // The current pack of a version: nullptr while it is packed in the background, or when it
  // cannot be packed (then its queued items are withdrawn until the next check).
  const PackageBlob* package_of(const std::string& version);
  // The ready pack of each version with queued items (starts packing the others): taken once
  // per dispatch, so each hand-out need not list the version folder again.
  std::map<std::string, const PackageBlob*> packaged_queued_versions();
  // The connected clients in connection order, as placement sees them.
  std::vector<ClientSlots> placement_clients() const;
  // A prediction item whose model goes as an archive of its own (ASSIGN `model`).
  bool has_model_archive(const WorkItem& item) const;
  Requirement requirement_of(const WorkItem& item) const;
  enum class Count { kFromDisk, kInMemory };
  void reconcile(const std::string& why, Count count = Count::kFromDisk);
  void load_versions();
  void reload_versions();

  // ---- peers -----------------------------------------------------------------------------

  void drop_silent_clients(TimePoint now);
  void setup_security();
  // Re-reads the allow-list; peers whose key left it are dropped.
  void refresh_authorized_keys();
  enum class Departure { kSilent, kGone };  // silent: its item waits out a lease
  void drop_peer(std::string id, const std::string& why, Departure departure);
  std::chrono::milliseconds lease_grace() const {
    return options_.lease_grace.count() > 0 ? options_.lease_grace
                                            : 2 * options_.heartbeat_interval * options_.liveness;
  }
  void cancel_on(const std::string& client_id, const std::string& item_id, const std::string& reason);
  // Takes an item out of the scheduler for good; a prediction item's model fails with `reason`,
  // so its request still completes.
  void withdraw(const WorkItem& item, const std::string& reason);
  void withdraw_queued(const std::string& version, const std::string& reason);
  Peer* find_by_routing(const std::string& routing);
  static std::string describe(const Peer& peer);

  // ---- sending ---------------------------------------------------------------------------

  template <typename T>
  void send(const Peer& peer, MessageType type, const T& header,
            std::optional<zmq::message_t> payload = std::nullopt) {
    reply(peer.routing, type, header, std::move(payload));
  }

  template <typename T>
  void reply(const std::string& routing, MessageType type, const T& header,
             std::optional<zmq::message_t> payload = std::nullopt) {
    auto frames = protocol::encode(type, header, std::move(payload));
    frames.insert(frames.begin(), zmq::message_t(routing.data(), routing.size()));
    // A peer that is gone or whose queue is full misses this message; heartbeats and
    // retries on its side recover, and a dead peer is dropped by liveness.
    transport::send(router_, frames);
  }

  void publish_status();
  void announce_stored(const std::string& version, const std::string& id);
  void run_tasks();
  // Liveness, timeouts, periodic version checks, dispatch: everything not driven by a message.
  void serve_timers(TimePoint& next_reconcile);

  // ---- operator commands and predictions (server_control.cpp) -------------------------
  void on_control(const std::string& routing, const protocol::Control& control);
  void serve_control(const std::string& routing, const protocol::Control& control);
  void on_control_upload(const std::string& routing, protocol::Message& message);
  void finish_control_upload(const std::string& routing, const ResultReceiver::Finished& done);
  void control_reply(const std::string& routing, const std::string& request, bool ok,
                     const std::string& error, const std::string& body);
  std::string status_json() const;
  std::string explain_json(const std::string& item_prefix) const;
  nlohmann::json status_view() const;  // the body of status_json()
  std::string models_json(const std::string& version) const;
  std::string current_version() const;
  void save_config();
  // Changes a version where it is written down (its version.xml, or config.xml for a global
  // one) and in memory.
  void update_version(const std::string& name, const std::function<void(Version&)>& change);
  std::vector<std::string> ranked_models(const std::string& version,
                                         const PredictOptions& options) const;
  // A model's prediction inputs go into memory when they take up to kMemoryInputsBytes and
  // inputs_in_memory_ has room (PredictionInputs, on the background worker).
  static constexpr std::uint64_t kMemoryInputsBytes = std::uint64_t{1} << 20;
  static constexpr std::uint64_t kMaxMemoryInputsBytes = std::uint64_t{256} << 20;
  // On the network thread, once a model's inputs are packed (or failed): queues its item.
  void queue_prediction_item(const std::string& request, const std::string& version,
                             const std::string& model,
                             const std::optional<PredictionInputs::Made>& inputs,
                             const std::string& failure);
  // A prediction item ended: with a value, or with a failure reason.
  void record_prediction(const WorkItem& item, std::optional<double> value,
                         const std::string& failure);
  // The entry of a prediction's result that holds its answer: the version's output file, as a
  // clean name inside the result; nullopt when the version reads the console instead.
  static std::optional<std::string> prediction_output_entry(const Version& version);
  std::optional<double> read_prediction(const Version& version,
                                        const ResultReceiver::Finished& done) const;
  void finish_prediction_request(const std::string& request);
  void expire_predictions(TimePoint now);
  bool is_prediction(const WorkItem& item) const { return prediction_items_.contains(item.id); }

  // ---- HTTP endpoint and metrics (server_http.cpp) ----------------------------------------
  void start_http();
  // Publishes a snapshot when a request waits for one (or `force`): once per loop turn at most.
  enum class Publish { kWhenWanted, kNow };
  void publish_http(Publish when = Publish::kWhenWanted);
  MetricsSnapshot metrics_snapshot() const;
  nlohmann::json http_status_view() const;
  // "idle" (sent READY, waits for work), "working" (holds an item), "busy" (neither).
  const char* client_state(const Peer& peer) const;

  // ---- log -------------------------------------------------------------------------------

  LogCounts counts() const {
    return {peers_.size(), scheduler_.queued_count(), scheduler_.active_count()};
  }
  void log(const std::string& message) { log_.info(counts(), message); }
  void warn(const std::string& message) { log_.warn(counts(), message); }
  void error(const std::string& message) { log_.error(counts(), message); }

  ServerOptions options_;
  AssetStore store_;
  FileLock lock_;  // before anything touches the spool: one server per working folder
  ServerLog log_;
  Scheduler scheduler_;
  zmq::context_t context_;
  zmq::socket_t router_;
  std::string endpoint_;
  std::unique_ptr<ZapHandler> zap_;  // with CURVE only
  std::string public_key_;
  std::string curve_secret_;  // only until bound
  TimePoint next_key_check_{};
  TimePoint next_liveness_check_{};
  TimePoint next_upload_check_{};
  std::unique_ptr<PackageCache> cache_;
  std::unique_ptr<ResultReceiver> receiver_;
  Configuration config_;
  std::map<std::string, VersionEntry> versions_;
  std::map<std::string, int> stored_;
  std::set<std::string> unpackable_;
  std::map<std::string, Peer> peers_;
  std::map<std::string, std::string> by_routing_;
  std::uint64_t next_order_ = 0;
  std::atomic<bool> stop_requested_{false};
  mutable std::mutex status_mutex_;
  ServerStatus status_;
  std::mutex tasks_mutex_;
  bool serving_ = false;  // guarded by tasks_mutex_
  std::deque<std::function<void()>> tasks_;
  // Readable while a task or a stop request waits: the network thread's poll ends at once.
  Wakeup wake_{"the server's network thread"};
  std::map<std::string, PendingPrediction> predictions_;     // by request id
  std::map<std::string, PredictionItem> prediction_items_;   // by item id
  std::size_t inputs_packing_ = 0;  // prediction items whose inputs the worker still packs
  // Prediction inputs held in memory, shared with the worker (PredictionInputs' kept model
  // entries, at most 64 MiB more, are not counted here).
  std::shared_ptr<MemoryBudget> inputs_in_memory_ =
      std::make_shared<MemoryBudget>(kMaxMemoryInputsBytes);
  // Makes prediction inputs; used on the background worker only (its jobs hold it).
  // Created in the constructor: its packs go to spool/model-packs.
  std::shared_ptr<PredictionInputs> prediction_inputs_;
  std::deque<EnsembleResult> finished_predictions_;          // the latest, newest last
  std::mutex finished_mutex_;
  std::condition_variable finished_ready_;
  std::deque<std::string> finished_ids_;  // guarded by finished_mutex_: their request ids
  bool stopped_ = false;                  // guarded by finished_mutex_: the loop has ended
  std::mutex stored_mutex_;
  std::condition_variable stored_ready_;
  std::deque<StoredModel> stored_models_;                    // not yet taken by next_stored_model
  ServerMetrics metrics_;
  const std::chrono::system_clock::time_point started_at_ = std::chrono::system_clock::now();
  // Its threads read only published snapshots, never the members above.
  std::unique_ptr<HttpEndpoint> http_;
  // Last: destroyed first, so no job or completion outlives what it uses (cache_, receiver_).
  // Packing versions and prediction inputs, which may take seconds.
  BackgroundWorker worker_;
  // Unpacking results (the receiver's): a result's ACK never waits behind a version's pack.
  BackgroundWorker result_worker_{"cdr-results"};
};

}  // namespace conductor
