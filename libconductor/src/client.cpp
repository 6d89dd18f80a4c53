#include "conductor/client.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <unistd.h>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "conductor/error.hpp"
#include "conductor/keys.hpp"
#include "conductor/sha256.hpp"
#include "blob_cache.hpp"
#include "curve.hpp"
#include "file_io.hpp"
#include "job_runner.hpp"
#include "outbox.hpp"
#include "protocol.hpp"
#include "random_id.hpp"
#include "transport.hpp"

namespace conductor {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using protocol::MessageType;
using Clock = std::chrono::steady_clock;

namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value && *value ? value : fallback;
}

std::string machine_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "unknown";
  return name;
}

// The id that makes this client the same client across reconnects and restarts.
std::string load_or_create_client_id(const fs::path& workdir) {
  fs::path file = workdir / "client-id";
  std::ifstream in(file);
  std::string id;
  if (in >> id && !id.empty() && id.size() <= 128) return id;
  id = random_uuid();
  fs::path tmp = workdir / "client-id.tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << id << '\n';
    if (!out) throw IoError("cannot write '" + tmp.string() + "'");
  }
  fs::rename(tmp, file);
  return id;
}

}  // namespace

ClientOptions client_options_from_environment() {
  ClientOptions options;
  options.server = env_or("CONDUCTOR_HOST", "");
  options.os = env_or("CONDUCTOR_OS", options.os);
  options.processing_unit = env_or("CONDUCTOR_TYPE", options.processing_unit);
  options.container_version = env_or("CONDUCTOR_VERSION", options.container_version);
  options.server_key = env_or("CONDUCTOR_SERVER_KEY", "");
  options.host_name = machine_name();
  if (const char* dir = std::getenv("CONDUCTOR_CLIENT_WORKDIR"); dir && *dir) {
    options.workdir = dir;
  } else if (env_or("RUNTIMEENV", "") == "docker") {
    options.workdir = fs::current_path() / "client-workdir";
  } else {
    options.workdir = fs::path(env_or("HOME", ".")) / "ConductorClient";
  }
  return options;
}

namespace {

// Checks the slot and GPU options and fills in their defaults: one slot on a CPU client, one
// per GPU (detected when none are given) on a GPU client. Returns a warning for the log, or "".
std::string settle_slots(ClientOptions& options) {
  auto refuse = [](const std::string& why) { throw Error(ErrorCode::kArgument, why); };
  if (options.processing_unit == "cpu") {
    if (!options.gpus.empty()) {
      refuse("GPUs given to a cpu client: a client with GPUs has CONDUCTOR_TYPE (or --type) gpu");
    }
    if (options.slots == 0) options.slots = 1;
    if (options.slots < 1 || options.slots > protocol::kMaxSlots) {
      refuse("slots " + std::to_string(options.slots) + " refused: a client runs 1 to " +
             std::to_string(protocol::kMaxSlots) + " items at once");
    }
    return {};
  }
  if (options.gpus.empty()) options.gpus = detect_gpus();
  if (options.gpus.empty()) {
    // As the original: "gpu" is then only the type the server sees, and the commands find
    // whatever GPUs the machine shows them.
    if (options.slots > 1) {
      refuse("slots " + std::to_string(options.slots) + " refused: a gpu client runs one item " +
             "per GPU, and none was given (--gpus, CUDA_VISIBLE_DEVICES) or found (nvidia-smi -L)");
    }
    options.slots = 1;
    return "No GPU list given (--gpus, CUDA_VISIBLE_DEVICES) or found (nvidia-smi -L): one slot, "
           "its commands see the machine's GPUs as they are";
  }
  std::set<std::string> seen;
  for (const auto& gpu : options.gpus) {
    if (gpu.empty() || gpu.size() > 64 || gpu.find_first_of(", \t\n") != std::string::npos) {
      refuse("GPU '" + gpu + "' refused: a CUDA_VISIBLE_DEVICES entry is an index or a UUID");
    }
    if (!seen.insert(gpu).second) refuse("GPU '" + gpu + "' refused: it is given twice");
  }
  if (options.gpus.size() > static_cast<std::size_t>(protocol::kMaxSlots)) {
    refuse(std::to_string(options.gpus.size()) + " GPUs refused: a client runs at most " +
           std::to_string(protocol::kMaxSlots) + " items at once");
  }
  const int count = static_cast<int>(options.gpus.size());
  if (options.slots != 0 && options.slots != count) {
    refuse("slots " + std::to_string(options.slots) + " refused: a gpu client runs one item per "
           "GPU (" + std::to_string(count) + " GPU(s))");
  }
  options.slots = count;
  return {};
}

}  // namespace

class Client::Impl {
 public:
  explicit Impl(ClientOptions options)
      : options_(std::move(options)), endpoint_(transport::normalize_endpoint(options_.server)) {
    if (options_.host_name.empty()) options_.host_name = machine_name();
    if (options_.processing_unit != "cpu" && options_.processing_unit != "gpu") {
      throw Error(ErrorCode::kArgument, "processing unit '" + options_.processing_unit +
                                            "' refused: CONDUCTOR_TYPE must be cpu or gpu");
    }
    const std::string slot_warning = settle_slots(options_);
    std::vector<spdlog::sink_ptr> sinks;
    if (options_.log_to_stdout) sinks.push_back(std::make_shared<spdlog::sinks::stdout_sink_mt>());
    log_ = std::make_shared<spdlog::logger>("conductor-client", sinks.begin(), sinks.end());
    log_->set_pattern("[%Y-%m-%dT%H:%M:%S.%eZ] %v", spdlog::pattern_time_type::utc);
    log_->flush_on(spdlog::level::info);
    if (!slot_warning.empty()) log_->warn(slot_warning);
    std::error_code ec;
    fs::create_directories(options_.workdir, ec);
    if (ec) {
      throw IoError("cannot use client folder '" + options_.workdir.string() + "': " + ec.message());
    }
    lock_.emplace(options_.workdir / "lock", "client folder '" + options_.workdir.string() + "'");
    // Only once the folder is ours: the cache, the outbox, and working folders that no job of
    // an earlier run uses any more.
    cache_.emplace(options_.workdir / "cache", options_.cache_bytes);
    outbox_.emplace(options_.workdir / "outbox", [this](const std::string& text) { log_->warn(text); });
    fs::remove_all(options_.workdir / "work", ec);
    client_id_ = load_or_create_client_id(options_.workdir);
    if (!options_.server_key.empty() && !is_z85_key(options_.server_key)) {
      throw Error(ErrorCode::kArgument, "server key '" + options_.server_key +
                                            "' refused: a CURVE public key is 40 Z85 characters");
    }
    KeyPair keys = load_or_create_keypair(
        options_.key_file.empty() ? default_client_key_file(options_.workdir) : options_.key_file);
    curve_ = transport::CurveClientKeys{options_.server_key, keys.public_key, keys.secret_key};
    heartbeat_ = std::clamp(options_.heartbeat_interval, std::chrono::milliseconds(50),
                            std::chrono::milliseconds(30000));
    liveness_ = std::clamp(options_.liveness, 2, 100);
    reconnect_delay_ = heartbeat_ * liveness_;
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) throw IoError(std::string("cannot create eventfd: ") + std::strerror(errno));
    slots_.resize(static_cast<std::size_t>(options_.slots));
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      slots_[i].index = static_cast<int>(i);
      if (i < options_.gpus.size()) slots_[i].gpu = options_.gpus[i];
    }
  }

  ~Impl() {
    stop_jobs();
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }

  void run() {
    log_->info("Conductor client {} ({}) working in {}, server {}, {} slot(s){}", options_.host_name,
               client_id_, options_.workdir.string(), endpoint_, slots_.size(), gpu_list());
    for (Slot& slot : slots_) take_up_kept_result(slot);
    connect();
    while (!stop_requested_.load()) {
      zmq::pollitem_t items[] = {{socket_->handle(), 0, ZMQ_POLLIN, 0},
                                 {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
      if (!transport::poll(items, 2, heartbeat_ / 2)) continue;  // interrupted by a signal
      if (items[1].revents & ZMQ_POLLIN) {
        std::uint64_t count = 0;
        [[maybe_unused]] auto n = ::read(wake_fd_, &count, sizeof count);
      }
      while (auto received = transport::receive(*socket_, protocol::kMaxFrames)) {
        last_heard_ = Clock::now();
        handle(*received);
      }
      for (Slot& slot : slots_) forward_job_progress(slot);
      keep_alive();
      for (Slot& slot : slots_) ask_again_if_stalled(slot);
    }
    stop_jobs();
    if (welcomed_) send(MessageType::kBye, protocol::Empty{});
    log_->info("Conductor client stopped");
  }

  void stop() noexcept {
    stop_requested_.store(true);
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  }

  std::uint64_t completed() const noexcept { return completed_.load(); }
  std::uint64_t fetched() const noexcept { return fetched_.load(); }
  std::uint64_t uploaded() const noexcept { return uploaded_.load(); }
  const std::string& public_key() const noexcept { return curve_.public_key; }
  int slot_count() const noexcept { return options_.slots; }
  const std::vector<std::string>& gpus() const noexcept { return options_.gpus; }

 private:
  // One archive being fetched chunk by chunk into the cache; slots that need the same archive
  // wait for the one download.
  struct Download {
    std::string blob;
    std::uint64_t size = 0;
    ChunkFile file;
    Sha256 hash;
    std::uint64_t received = 0;
    std::uint64_t requested = 0;
  };
  // What a slot holds: the item, the archive it waits for, its result.
  struct Current {
    protocol::Assign assign;
    std::vector<std::pair<std::string, std::uint64_t>> blobs;  // what the job unpacks, in order
    std::string fetching;               // the blob being downloaded for it; empty when none
    std::optional<JobOutcome> outcome;  // set when the job ended; sent until acknowledged
    fs::path result;
  };
  // One item at a time, in its own working folder, on its own GPU (a GPU client).
  struct Slot {
    int index = 0;
    std::string gpu;  // CUDA_VISIBLE_DEVICES for its commands; empty on a CPU client
    std::optional<Current> current;
    std::unique_ptr<JobRunner> job;
    Clock::time_point waiting_since{};  // last sign that what it waits for is coming
  };

  // " (slot 1)" in log lines of a client with several slots; nothing with one.
  std::string tag(const Slot& slot) const {
    return slots_.size() > 1 ? " (slot " + std::to_string(slot.index) + ")" : "";
  }

  std::string gpu_list() const {
    std::string text;
    for (const auto& gpu : options_.gpus) text += (text.empty() ? ", GPUs " : ",") + gpu;
    return text;
  }

  void stop_jobs() {
    for (Slot& slot : slots_) {
      if (slot.job) slot.job->cancel();  // all of them first, so they stop side by side
    }
    for (Slot& slot : slots_) slot.job.reset();
  }

  Slot* slot_holding(const std::string& item) {
    for (Slot& slot : slots_) {
      if (slot.current && slot.current->assign.item == item) return &slot;
    }
    return nullptr;
  }

  // Slots past what the server fills stay idle (a server that predates slots fills one).
  bool is_usable(const Slot& slot) const { return slot.index < usable_slots_; }

  // ---- connection ----------------------------------------------------------------------

  void connect() {
    socket_.emplace(context_, zmq::socket_type::dealer);
    transport::connect_dealer(*socket_, endpoint_, curve_);
    welcomed_ = false;
    last_heard_ = Clock::now();
    say_hello();
  }

  void say_hello() {
    protocol::Hello hello;
    hello.client_id = client_id_;
    hello.host = options_.host_name;
    hello.os = options_.os;
    hello.type = options_.processing_unit;
    hello.version = options_.container_version;
    hello.slots = options_.slots;
    hello.gpus = options_.gpus;
    for (const Slot& slot : slots_) {
      if (!slot.current) continue;
      const auto& a = slot.current->assign;
      hello.running.push_back({a.item, a.version, a.attempt, a.type, slot.index});
    }
    if (!hello.running.empty()) {
      // A server that predates slots reads the first item from these fields.
      hello.running_item = hello.running.front().item;
      hello.running_version = hello.running.front().version;
      hello.running_attempt = hello.running.front().attempt;
      hello.running_type = hello.running.front().type;
    }
    send(MessageType::kHello, hello);
  }

  void keep_alive() {
    auto now = Clock::now();
    // Declared dead after `liveness` silent intervals; while it stays away, new sockets are
    // tried at growing intervals (the queued HELLO reaches it as soon as it is back anyway).
    auto patience = welcomed_ ? heartbeat_ * liveness_ : reconnect_delay_;
    if (now - last_heard_ > patience) {
      log_->warn("Server {} silent for {} ms; reconnecting{}", endpoint_,
                 std::chrono::duration_cast<std::chrono::milliseconds>(now - last_heard_).count(),
                 welcomed_ ? ""
                 : curve_.server_key.empty()
                     ? " (a server with CURVE on needs --server-key)"
                     : " (with CURVE, the server's authorized_keys must list " + curve_.public_key + ")");
      reconnect_delay_ = welcomed_ ? heartbeat_ * liveness_
                                   : std::min<std::chrono::milliseconds>(reconnect_delay_ * 2, 30s);
      connect();  // a fresh socket drops whatever stale messages the old one queued
      return;
    }
    if (welcomed_ && now - last_sent_ >= heartbeat_) send(MessageType::kHeartbeat, protocol::Empty{});
  }

  // A message lost on a live connection (a peer's full queue drops it; heartbeats still flow)
  // would leave a download, a result or a hand-out waiting forever: after `liveness` intervals
  // without an answer the slot asks again. The requests are idempotent on the server.
  void ask_again_if_stalled(Slot& slot) {
    auto now = Clock::now();
    if (!welcomed_ || slot.job || now - slot.waiting_since < heartbeat_ * liveness_) return;
    auto waited =
        std::chrono::duration_cast<std::chrono::milliseconds>(now - slot.waiting_since).count();
    slot.waiting_since = now;
    if (!slot.current) {
      // The ASSIGN, or our READY, may be lost.
      if (is_usable(slot)) send(MessageType::kReady, protocol::Ready{slot.index});
    } else if (auto download = downloads_.find(slot.current->fetching); download != downloads_.end()) {
      log_->warn("No package data for item {} in {} ms; asking again from byte {}",
                 slot.current->assign.item, waited, download->second.received);
      download->second.requested = download->second.received;
      request_chunks(download->second);
    } else if (slot.current->outcome) {
      log_->warn("No answer about item {} in {} ms; offering it again", slot.current->assign.item,
                 waited);
      report_outcome(slot);
    }
  }

  // ---- messages ------------------------------------------------------------------------

  void handle(transport::Received& received) {
    try {
      if (received.oversized) throw ProtocolError("message with too many frames");
      auto message = protocol::decode(received.frames);
      switch (message.type()) {
        case MessageType::kWelcome: on_welcome(message.as<protocol::Welcome>()); break;
        case MessageType::kHeartbeat: break;
        case MessageType::kResync:
          welcomed_ = false;
          say_hello();
          break;
        case MessageType::kAssign: on_assign(message.as<protocol::Assign>()); break;
        case MessageType::kChunk: on_chunk(message); break;
        case MessageType::kPull: on_pull(message.as<protocol::Pull>()); break;
        case MessageType::kAck: on_ack(message.as<protocol::Ack>()); break;
        case MessageType::kCancel: on_cancel(message.as<protocol::Cancel>()); break;
        case MessageType::kError: on_error(message.as<protocol::ErrorMessage>()); break;
        default: throw ProtocolError(std::string(protocol::to_string(message.type())) +
                                     " is a client-to-server message");
      }
    } catch (const ProtocolError& e) {
      log_->warn("Ignored a message from the server: {}", e.what());
    } catch (const std::exception& e) {
      // Our own failure with one message (a result archive that cannot be read, say); the
      // state machine asks again when nothing moves.
      log_->error("Failed to handle a message from the server: {}", e.what());
    }
  }

  // Runs a step of `slot`'s item; a damaged archive or a full disk fails that item here, and
  // the client goes on.
  template <typename Step>
  void guarded(Slot& slot, Step&& step) {
    try {
      step();
    } catch (const ProtocolError&) {
      throw;
    } catch (const std::exception& e) {
      log_->error("Item failed on this client{}: {}", tag(slot), e.what());
      if (slot.current && !slot.current->outcome && !slot.job) fail(slot, e.what());
    }
  }

  void on_welcome(const protocol::Welcome& welcome) {
    welcomed_ = true;
    heartbeat_ = std::chrono::milliseconds(std::clamp(welcome.heartbeat_ms, 50, 30000));
    liveness_ = std::clamp(welcome.liveness, 2, 100);
    reconnect_delay_ = heartbeat_ * liveness_;
    chunk_size_ = std::clamp<std::uint32_t>(welcome.chunk_size, 4096, protocol::kMaxPayloadBytes);
    window_ = std::clamp(welcome.window, 1, 64);
    usable_slots_ = welcome.slots > 0 ? std::min(welcome.slots, options_.slots) : 1;
    log_->info("Connected to {}", endpoint_);
    if (usable_slots_ < options_.slots) {
      log_->warn("The server fills {} of this client's {} slots", usable_slots_, options_.slots);
    }
    // Chunks in flight on the old connection are lost: ask again from what we have.
    for (auto& [blob, download] : downloads_) {
      download.requested = download.received;
      request_chunks(download);
    }
    for (Slot& slot : slots_) {
      slot.waiting_since = Clock::now();
      if (!slot.current) {
        if (is_usable(slot)) send(MessageType::kReady, protocol::Ready{slot.index});
      } else if (slot.current->outcome) {
        report_outcome(slot);
      }
    }
  }

  void on_assign(const protocol::Assign& assign) {
    auto is_blob_id = [](const std::string& id) {
      return id.size() == 64 && id.find_first_not_of("0123456789abcdef") == std::string::npos;
    };
    if (!is_blob_id(assign.blob) || (!assign.inputs.empty() && !is_blob_id(assign.inputs)) ||
        assign.item.empty() || assign.item.size() > 64 ||
        assign.item.find_first_not_of("0123456789abcdef-") != std::string::npos) {
      throw ProtocolError("ASSIGN refused: malformed item or blob id");
    }
    if (slot_holding(assign.item)) return;  // sent again for a READY that crossed it
    if (assign.slot < 0 || assign.slot >= static_cast<int>(slots_.size())) {
      throw ProtocolError("ASSIGN refused: slot " + std::to_string(assign.slot) +
                          " is not one of this client's " + std::to_string(slots_.size()));
    }
    Slot& slot = slots_[static_cast<std::size_t>(assign.slot)];
    if (slot.current) {
      log_->warn("Server offered item {} while item {} is still held{}; ignored", assign.item,
                 slot.current->assign.item, tag(slot));
      return;
    }
    slot.current.emplace();
    Current& c = *slot.current;
    c.assign = assign;
    slot.waiting_since = Clock::now();
    c.blobs.emplace_back(assign.blob, assign.blob_size);
    if (!assign.inputs.empty()) c.blobs.emplace_back(assign.inputs, assign.inputs_size);
    mark_blobs_in_use();
    log_->info("Item {} of {} ({}, attempt {}){}: {} command(s)", assign.item, assign.version,
               assign.type, assign.attempt, tag(slot), assign.commands.size());
    guarded(slot, [&] { fetch_next_blob(slot); });
  }

  // Every slot's archives stay in the cache while it holds its item.
  void mark_blobs_in_use() {
    std::vector<std::string> in_use;
    for (const Slot& slot : slots_) {
      if (!slot.current) continue;
      for (const auto& [blob, size] : slot.current->blobs) in_use.push_back(blob);
    }
    cache_->set_in_use(in_use);
  }

  // Starts (or joins) the download of the first archive of the slot's item that is not cached;
  // starts the job when every archive is there.
  void fetch_next_blob(Slot& slot) {
    Current& c = *slot.current;
    for (const auto& [blob, size] : c.blobs) {
      if (cache_->find(blob)) continue;
      c.fetching = blob;
      if (!downloads_.contains(blob)) {
        auto& d = downloads_.emplace(blob, Download{blob, size, ChunkFile(cache_->reserve(blob, size)),
                                                    Sha256{}, 0, 0})
                      .first->second;
        request_chunks(d);
      }
      return;
    }
    start_job(slot);
  }

  void request_chunks(Download& d) {
    if (d.size == 0) {
      finish_download(d.blob);
      return;
    }
    const std::uint64_t window_bytes = static_cast<std::uint64_t>(window_) * chunk_size_;
    while (d.requested < d.size && d.requested - d.received < window_bytes) {
      auto length = static_cast<std::uint32_t>(std::min<std::uint64_t>(chunk_size_, d.size - d.requested));
      send(MessageType::kFetch, protocol::Fetch{d.blob, d.requested, length});
      d.requested += length;
    }
  }

  void on_chunk(protocol::Message& message) {
    auto chunk = message.as<protocol::Chunk>();
    auto it = downloads_.find(chunk.blob);
    if (it == downloads_.end()) return;
    Download& d = it->second;
    if (chunk.offset != d.received) return;  // a leftover from before a reconnect
    const auto& payload = *message.payload();
    if (d.received + payload.size() > d.size) {
      throw ProtocolError("CHUNK refused: data beyond the archive's announced size");
    }
    try {
      d.file.write_at(d.received, payload.data(), payload.size());
    } catch (const Error& e) {
      give_up_downloads(d.blob, e.what());  // a full disk: the items that need it fail
      return;
    }
    d.hash.update(payload.data(), payload.size());
    d.received += payload.size();
    fetched_ += payload.size();
    for (Slot& slot : slots_) {
      if (slot.current && slot.current->fetching == d.blob) slot.waiting_since = Clock::now();
    }
    if (d.received == d.size) {
      finish_download(d.blob);
    } else {
      request_chunks(d);
    }
  }

  // The last byte arrived: the archive goes into the cache, and every slot waiting for it
  // moves on (or fails, when it arrived damaged).
  void finish_download(std::string blob) {  // a copy: the download that holds it goes away
    auto it = downloads_.find(blob);
    const std::string actual = it->second.hash.finish_hex();
    downloads_.erase(it);
    std::string problem;
    if (actual != blob) {
      cache_->abandon(blob);
      problem = "arrived damaged (sha256 " + actual + ", expected " + blob + ")";
    } else {
      try {
        cache_->commit(blob);
      } catch (const Error& e) {
        problem = std::string("could not be kept: ") + e.what();
      }
    }
    for (Slot& slot : slots_) {
      if (!slot.current || slot.current->fetching != blob) continue;
      slot.current->fetching.clear();
      if (!problem.empty()) {
        fail(slot, "archive of item " + slot.current->assign.item + " " + problem);
      } else {
        guarded(slot, [&] { fetch_next_blob(slot); });
      }
    }
  }

  // Gives up downloads the server refused (all of them when it did not say which), failing the
  // items that wait for them.
  void give_up_downloads(const std::string& blob, const std::string& why) {
    std::vector<std::string> refused;
    for (const auto& [id, download] : downloads_) {
      if (blob.empty() || id == blob) refused.push_back(id);
    }
    for (const auto& id : refused) {
      downloads_.erase(id);
      cache_->abandon(id);
      for (Slot& slot : slots_) {
        if (!slot.current || slot.current->fetching != id) continue;
        slot.current->fetching.clear();
        fail(slot, "package could not be fetched: " + why);
      }
    }
  }

  void start_job(Slot& slot) {
    Current& c = *slot.current;
    JobSpec spec;
    spec.item = c.assign.item;
    spec.attempt = c.assign.attempt;
    spec.version = c.assign.version;
    for (const auto& command : c.assign.commands) spec.commands.push_back({command.file_name, command.arguments, {}});
    for (const auto& [blob, size] : c.blobs) spec.packages.push_back(cache_->path_of(blob));
    spec.work_dir = options_.workdir / "work" / std::to_string(slot.index);
    spec.console_log = options_.workdir / "logs" / (c.assign.item + ".log");
    spec.result = outbox_->archive_path(c.assign.item, c.assign.attempt);
    spec.processing_unit = options_.processing_unit;
    spec.environment = {{"CONDUCTOR_SLOT", std::to_string(slot.index)}};
    if (!slot.gpu.empty()) spec.environment.emplace_back("CUDA_VISIBLE_DEVICES", slot.gpu);
    spec.timeout = std::chrono::milliseconds(std::max<std::int64_t>(c.assign.timeout_ms, 0));
    spec.echo_output = options_.log_to_stdout;
    if (slots_.size() > 1) spec.echo_prefix = "[slot " + std::to_string(slot.index) + "] ";
    c.result = spec.result;
    slot.job = std::make_unique<JobRunner>(std::move(spec), [this] {
      std::uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
    });
  }

  void forward_job_progress(Slot& slot) {
    if (!slot.job) return;
    const Current& c = *slot.current;
    int epoch = 0, total = 0;
    auto lines = slot.job->take_lines(epoch, total);
    if (!lines.empty() && welcomed_ && !slot.job->is_cancelled()) {
      // Batches stay well inside the header limit: at most 1000 lines and 1 MiB each.
      protocol::Progress progress{c.assign.item, c.assign.attempt, epoch, total, {}};
      std::size_t bytes = 0;
      for (auto& line : lines) {
        if (line.size() > protocol::kMaxLineBytes) line.resize(protocol::kMaxLineBytes);
        if (progress.lines.size() == 1000 || bytes + line.size() > (1u << 20)) {
          send(MessageType::kProgress, progress);
          progress.lines.clear();
          bytes = 0;
        }
        bytes += line.size();
        progress.lines.push_back(std::move(line));
      }
      send(MessageType::kProgress, progress);
    }
    auto outcome = slot.job->outcome();
    if (!outcome) return;
    slot.job.reset();
    if (outcome->cancelled) {
      log_->info("Item {} cancelled", c.assign.item);
      discard(slot);
      return;
    }
    slot.current->outcome = std::move(outcome);
    const JobOutcome& o = *slot.current->outcome;
    if (o.succeeded) {
      outbox_->keep(KeptResult{c.assign.item, c.assign.attempt, c.assign.version, c.assign.type,
                               c.result, o});
      log_->info("Item {} finished in {:.1f} s{}; sending {} bytes", c.assign.item, o.duration,
                 tag(slot), o.size);
    } else {
      log_->warn("Item {} failed{}: {}", c.assign.item, tag(slot), o.reason);
    }
    if (welcomed_) report_outcome(slot);
  }

  void report_outcome(Slot& slot) {
    slot.waiting_since = Clock::now();
    const Current& c = *slot.current;
    const JobOutcome& o = *c.outcome;
    if (o.succeeded) {
      send(MessageType::kResult, protocol::ResultOffer{c.assign.item, c.assign.attempt, o.size,
                                                       o.sha256, o.duration, o.epochs, o.last_epoch});
    } else {
      std::string tail = o.log_tail.size() > protocol::kMaxLogBytes
                             ? o.log_tail.substr(o.log_tail.size() - protocol::kMaxLogBytes)
                             : o.log_tail;
      send(MessageType::kFailed, protocol::Failed{c.assign.item, c.assign.attempt, o.reason, tail, o.duration});
    }
  }

  void fail(Slot& slot, const std::string& reason) {
    slot.current->outcome = JobOutcome{};
    slot.current->outcome->reason = reason;
    if (welcomed_) report_outcome(slot);
  }

  void on_pull(const protocol::Pull& pull) {
    Slot* slot = slot_holding(pull.item);
    if (!slot || !slot->current->outcome || !slot->current->outcome->succeeded) return;
    const Current& c = *slot->current;
    const auto size = c.outcome->size;
    if (pull.offset >= size || pull.length == 0 || pull.length > protocol::kMaxPayloadBytes) {
      throw ProtocolError("PULL refused: range outside the result");
    }
    auto length = std::min<std::uint64_t>(pull.length, size - pull.offset);
    slot->waiting_since = Clock::now();
    zmq::message_t payload(length);
    read_at(c.result, pull.offset, payload.data(), length);
    uploaded_ += length;
    send(MessageType::kUpload, protocol::Upload{pull.item, c.assign.attempt, pull.offset},
         std::move(payload));
  }

  void on_ack(const protocol::Ack& ack) {
    Slot* slot = slot_holding(ack.item);
    if (!slot) return;
    if (ack.status == "stored") {
      ++completed_;
      log_->info("Item {} stored by the server", ack.item);
    } else if (ack.status == "rejected") {
      log_->warn("Item {} rejected by the server: {}", ack.item, ack.reason);
    } else {
      log_->info("Item {}: {}", ack.item, ack.status);
    }
    discard(*slot);
  }

  void on_cancel(const protocol::Cancel& cancel) {
    Slot* slot = slot_holding(cancel.item);
    if (!slot) return;
    log_->info("Server cancelled item {}: {}", cancel.item, cancel.reason);
    if (slot->job) {
      slot->job->cancel();  // the job thread ends soon; forward_job_progress() cleans up
      return;
    }
    discard(*slot);
  }

  void on_error(const protocol::ErrorMessage& error) {
    log_->warn("Server reported an error: {}", error.message);
    // The server refused what we sent about a result (a RESULT, an UPLOAD chunk): it will never
    // acknowledge it. Letting go is safe: READY makes the server queue the item again. A server
    // that does not say which item it means refused the one outcome it knows of.
    bool gave_up = false;
    for (Slot& slot : slots_) {
      if (!slot.current || !slot.current->outcome || slot.job) continue;
      if (!error.item.empty() && slot.current->assign.item != error.item) continue;
      log_->warn("Giving up item {}; the server will hand it out again", slot.current->assign.item);
      discard(slot);
      gave_up = true;
    }
    if (gave_up) return;
    // A package the server no longer has cannot be fetched: give the item back.
    // A server that does not say which archive it means refused the one being fetched.
    if (error.code == static_cast<int>(protocol::ErrorReply::kRefused) &&
        (!error.blob.empty() || error.item.empty())) {
      give_up_downloads(error.blob, error.message);
    }
    if (error.fatal) connect();
  }

  // Takes up a result this client (or an earlier run of it) finished but never got
  // acknowledged, unless another slot holds it.
  void take_up_kept_result(Slot& slot) {
    std::set<std::string> held;
    for (const Slot& other : slots_) {
      if (other.current) held.insert(other.current->assign.item);
    }
    auto kept = outbox_->take_up(held);
    if (!kept) return;
    Current c;
    c.assign.item = kept->item;
    c.assign.attempt = kept->attempt;
    c.assign.version = kept->version;
    c.assign.type = kept->type;
    c.result = kept->archive;
    c.outcome = std::move(kept->outcome);
    slot.current = std::move(c);
    log_->info("Resuming the unacknowledged result of item {}{}", slot.current->assign.item, tag(slot));
  }

  // The slot lets go of its item, then offers the next kept result or asks for work.
  void discard(Slot& slot) {
    if (!slot.current) return;
    std::error_code ec;
    if (!slot.current->result.empty()) outbox_->discard(slot.current->result);
    fs::remove(options_.workdir / "logs" / (slot.current->assign.item + ".log"), ec);
    const std::string fetching = slot.current->fetching;
    slot.current.reset();
    const bool still_wanted = std::any_of(slots_.begin(), slots_.end(), [&](const Slot& other) {
      return other.current && other.current->fetching == fetching;
    });
    if (!fetching.empty() && !still_wanted) {
      downloads_.erase(fetching);
      cache_->abandon(fetching);
    }
    mark_blobs_in_use();
    take_up_kept_result(slot);
    if (!welcomed_) return;
    if (slot.current) {
      report_outcome(slot);
    } else if (is_usable(slot)) {
      slot.waiting_since = Clock::now();
      send(MessageType::kReady, protocol::Ready{slot.index});
    }
  }

  // ---- sending ---------------------------------------------------------------------------

  template <typename T>
  void send(MessageType type, const T& header, std::optional<zmq::message_t> payload = std::nullopt) {
    auto frames = protocol::encode(type, header, std::move(payload));
    // A message that cannot be queued is lost; the state machine sends what matters again
    // after the next WELCOME.
    transport::send(*socket_, frames);
    last_sent_ = Clock::now();
  }

  ClientOptions options_;
  std::string endpoint_;
  std::string client_id_;
  transport::CurveClientKeys curve_;
  std::optional<FileLock> lock_;
  std::optional<BlobCache> cache_;  // <workdir>/cache: package archives by SHA-256
  std::optional<Outbox> outbox_;    // <workdir>/outbox: results until acknowledged
  int wake_fd_ = -1;
  std::shared_ptr<spdlog::logger> log_;
  zmq::context_t context_;
  std::optional<zmq::socket_t> socket_;
  bool welcomed_ = false;
  Clock::time_point last_heard_{};
  Clock::time_point last_sent_{};
  std::chrono::milliseconds heartbeat_{1000};
  int liveness_ = 5;
  std::chrono::milliseconds reconnect_delay_{5000};
  std::uint32_t chunk_size_ = 1u << 20;
  int window_ = 8;
  int usable_slots_ = 1;  // the slots the server fills (WELCOME.slots)
  std::vector<Slot> slots_;
  std::map<std::string, Download> downloads_;  // by blob
  std::atomic<bool> stop_requested_{false};
  std::atomic<std::uint64_t> completed_{0};
  std::atomic<std::uint64_t> fetched_{0};
  std::atomic<std::uint64_t> uploaded_{0};
};

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Client::~Client() {
  stop();
  if (thread_.joinable()) thread_.join();
}

void Client::run() { impl_->run(); }

void Client::start() {
  thread_ = std::thread([this] { impl_->run(); });
}

void Client::stop() noexcept { impl_->stop(); }

std::uint64_t Client::completed_items() const noexcept { return impl_->completed(); }
std::uint64_t Client::payload_bytes_fetched() const noexcept { return impl_->fetched(); }
std::uint64_t Client::result_bytes_sent() const noexcept { return impl_->uploaded(); }
std::string Client::public_key() const { return impl_->public_key(); }
int Client::slots() const noexcept { return impl_->slot_count(); }
std::vector<std::string> Client::gpus() const { return impl_->gpus(); }

}  // namespace conductor
