#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>

#include "client_impl.hpp"
#include "conductor/keys.hpp"
#include "conductor/process_executor.hpp"
#include "curve.hpp"
#include "file_io.hpp"
#include "random_id.hpp"
#include "thread_name.hpp"

namespace conductor {

using namespace std::chrono_literals;

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
  // Never half-written: a client-id that reads as empty after a crash would make this client
  // another one, and the server would take back what it held.
  replace_durably(file, id + "\n");
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

Client::Impl::Impl(ClientOptions options)
    : options_(std::move(options)), endpoint_(transport::normalize_endpoint(options_.server)) {
  if (options_.host_name.empty()) options_.host_name = machine_name();
  if (options_.processing_unit != "cpu" && options_.processing_unit != "gpu") {
    throw Error(ErrorCode::kArgument, "processing unit '" + options_.processing_unit +
                                          "' refused: CONDUCTOR_TYPE must be cpu or gpu");
  }
  const std::string slot_warning = settle_slots(options_);
  std::vector<spdlog::sink_ptr> sinks;
  if (options_.log_to_stdout) {
    const bool may_draw = options_.display == ClientOptions::Display::kAuto;
    console_ = std::make_shared<ClientConsole>(
        may_draw ? ClientConsole::detect(STDOUT_FILENO) : ClientConsole::Mode::kPlain, stdout);
    sinks.push_back(std::make_shared<ConsoleSink>(console_));
  }
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
  // An earlier client killed without cleaning up (SIGKILL, the OOM killer) may have left its
  // commands running: they go before new work starts beside them, and before their folders go.
  running_.emplace(options_.workdir / "running");
  for (const std::string& line : running_->stop_leftovers(ProcessOptions{}.kill_grace)) {
    log_->warn("Start-up: {}", line);
  }
  fs::remove_all(options_.workdir / "work", ec);
  // Console logs of jobs an earlier run left behind: every result already holds its console,
  // and no job is running now to follow.
  fs::remove_all(options_.workdir / "logs", ec);
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
  slots_.resize(static_cast<std::size_t>(options_.slots));
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    slots_[i].index = static_cast<int>(i);
    if (i < options_.gpus.size()) slots_[i].gpu = options_.gpus[i];
  }
}

Client::Impl::~Impl() { stop_jobs(); }

void Client::Impl::run() {
  log_->info("Conductor client {} ({}) working in {}, server {}, {} slot(s){}", options_.host_name,
             client_id_, options_.workdir.string(), endpoint_, slots_.size(), gpu_list());
  if (curve_.server_key.empty() && !transport::is_local_endpoint(endpoint_)) {
    // The server's ASSIGNs name the commands this client runs: on plain TCP, anyone on the
    // path may send them.
    log_->warn(
        "Plain TCP to {}: whoever can reach this link can send commands that this client "
        "runs. Pass --server-key (the server's CURVE key) to encrypt and authenticate it",
        endpoint_);
  }
  for (Slot& slot : slots_) take_up_kept_result(slot);
  connect();
  while (!stop_requested_.load()) {
    zmq::pollitem_t items[] = {{socket_->handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, wake_.fd(), ZMQ_POLLIN, 0}};
    if (!transport::poll(items, 2, heartbeat_ / 2)) continue;  // interrupted by a signal
    wake_.drain();
    // At most a few hundred a turn: a server that streams messages must not starve the
    // outcomes, heartbeats and kept results below (the poll finds the rest at once).
    for (int budget = 0; budget < 256; ++budget) {
      auto received = transport::receive(*socket_, protocol::kMaxFrames);
      if (!received) break;
      last_heard_ = Clock::now();
      handle(*received);
    }
    for (Slot& slot : slots_) forward_job_progress(slot);
    keep_alive();
    for (Slot& slot : slots_) {
      ask_again_if_stalled(slot);
      if (slot.current && slot.current->keep_due && Clock::now() >= *slot.current->keep_due) {
        keep_for_restart(slot);
      }
    }
    if (console_) console_->refresh();
  }
  stop_jobs();
  // What the server has not acknowledged yet is found by the next run.
  for (Slot& slot : slots_) {
    if (slot.current) keep_for_restart(slot);
  }
  if (welcomed_) send(MessageType::kBye, protocol::Empty{});
  log_->info("Conductor client stopped");
}

void Client::Impl::stop() noexcept {
  stop_requested_.store(true);
  wake_.signal();
}

std::string Client::Impl::gpu_list() const {
  std::string text;
  for (const auto& gpu : options_.gpus) text += (text.empty() ? ", GPUs " : ",") + gpu;
  return text;
}

void Client::Impl::stop_jobs() {
  // Cancelled before the stop (a server's CANCEL): not kept, whatever it finished.
  std::vector<bool> was_cancelled;
  for (Slot& slot : slots_) {
    was_cancelled.push_back(slot.job && slot.job->is_cancelled());
    if (slot.job) slot.job->cancel();  // all of them first, so they stop side by side
  }
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    Slot& slot = slots_[i];
    if (!slot.job) continue;
    slot.job->wait();
    // A job that had run every command when the stop came still packed its result: kept for
    // the next run like any other, since the stop, not the server, cancelled it.
    std::optional<JobOutcome> outcome = slot.job->outcome();
    slot.job.reset();
    if (!was_cancelled[i] && outcome && outcome->succeeded && slot.current &&
        !slot.current->outcome) {
      outcome->cancelled = false;
      slot.current->outcome = std::move(outcome);
    }
  }
}

void Client::Impl::connect() {
  socket_.emplace(context_, zmq::socket_type::dealer);
  transport::connect_dealer(*socket_, endpoint_, curve_);
  welcomed_ = false;
  last_heard_ = Clock::now();
  say_hello();
}

void Client::Impl::say_hello() {
  protocol::Hello hello;
  hello.client_id = client_id_;
  hello.host = options_.host_name;
  hello.os = options_.os;
  hello.type = options_.processing_unit;
  hello.version = options_.container_version;
  hello.slots = options_.slots;
  hello.gpus = options_.gpus;
  hello.inline_inputs_bytes = kInlineInputsBytes;
  hello.model_archives = true;
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

void Client::Impl::keep_alive() {
  auto now = Clock::now();
  // Declared dead after `liveness` silent intervals; while it stays away, new sockets are
  // tried at growing intervals (the queued HELLO reaches it as soon as it is back anyway).
  auto patience = welcomed_ ? heartbeat_ * liveness_ : reconnect_delay_;
  if (now - last_heard_ > patience) {
    log_->warn(
        "Server {} {} {} ms; reconnecting{}", endpoint_,
        std::exchange(refused_, false) ? "refused this client, waited" : "silent for",
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

void Client::Impl::ask_again_if_stalled(Slot& slot) {
  auto now = Clock::now();
  if (!welcomed_ || slot.job || now - slot.waiting_since < heartbeat_ * liveness_) return;
  auto waited =
      std::chrono::duration_cast<std::chrono::milliseconds>(now - slot.waiting_since).count();
  slot.waiting_since = now;
  if (!slot.current) {
    // The ASSIGN, or our READY, may be lost.
    if (is_usable(slot)) send(MessageType::kReady, protocol::Ready{slot.index});
  } else if (auto download = downloads_.find(slot.current->fetching); download != downloads_.end()) {
    if (download->second.is_complete()) return;  // all here: another slot's job checks it
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

void Client::Impl::handle(transport::Received& received) {
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
      case MessageType::kAssign:
        on_assign(message.as<protocol::Assign>(),
                  message.payload() ? &*message.payload() : nullptr);
        break;
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

void Client::Impl::on_welcome(const protocol::Welcome& welcome) {
  welcomed_ = true;
  heartbeat_ = std::chrono::milliseconds(std::clamp(welcome.heartbeat_ms, 50, 30000));
  liveness_ = std::clamp(welcome.liveness, 2, 100);
  reconnect_delay_ = heartbeat_ * liveness_;
  chunk_size_ = std::clamp<std::uint32_t>(welcome.chunk_size, 4096, protocol::kMaxPayloadBytes);
  window_ = std::clamp(welcome.window, 1, 64);
  usable_slots_ = welcome.slots > 0 ? std::min(welcome.slots, options_.slots) : 1;
  server_names_subjects_ = welcome.slots > 0;
  inline_result_bytes_ =
      std::min<std::uint64_t>(welcome.inline_result_bytes, protocol::kMaxPayloadBytes);
  ready_with_ack_ = welcome.ready_with_ack;
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

void Client::Impl::on_error(const protocol::ErrorMessage& error) {
  log_->warn("Server reported an error: {}", error.message);
  // The server refused what we sent about a result (a RESULT, an UPLOAD chunk): it will never
  // acknowledge it. Letting go is safe: READY makes the server queue the item again. A server
  // that predates slots does not say which item it means: it refused the one outcome it knows.
  // Before a WELCOME (a refused HELLO, say) nothing was offered on this connection.
  const bool unnamed =
      error.item.empty() && error.blob.empty() && welcomed_ && !server_names_subjects_;
  bool gave_up = false;
  for (Slot& slot : slots_) {
    if (!slot.current || !slot.current->outcome || slot.job) continue;
    if (!unnamed && slot.current->assign.item != error.item) continue;
    log_->warn("Giving up item {}; the server will hand it out again", slot.current->assign.item);
    discard(slot);
    gave_up = true;
  }
  if (gave_up) return;
  // A package the server no longer has cannot be fetched: give the item back (without a name
  // from the server, the download in progress).
  if (error.code == static_cast<int>(protocol::ErrorReply::kRefused) && (!error.blob.empty() || unnamed)) {
    give_up_downloads(error.blob, error.message);
  }
  if (error.fatal) {
    // A new socket after keep_alive's growing interval, not at once: a server that keeps
    // refusing is not asked again and again.
    welcomed_ = false;
    refused_ = true;
    last_heard_ = Clock::now();
  }
}

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Client::~Client() {
  stop();
  if (thread_.joinable()) thread_.join();
}

void Client::run() { impl_->run(); }

void Client::start() {
  thread_ = std::thread([this] {
    name_this_thread("cdr-client");  // only a thread the library made, as for the server's
    impl_->run();
  });
}

void Client::stop() noexcept { impl_->stop(); }

std::uint64_t Client::completed_items() const noexcept { return impl_->completed(); }
std::uint64_t Client::payload_bytes_fetched() const noexcept { return impl_->fetched(); }
std::uint64_t Client::result_bytes_sent() const noexcept { return impl_->uploaded(); }
std::string Client::public_key() const { return impl_->public_key(); }
int Client::slots() const noexcept { return impl_->slot_count(); }
std::vector<std::string> Client::gpus() const { return impl_->gpus(); }

}  // namespace conductor
