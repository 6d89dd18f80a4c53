#include "conductor/client.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <unistd.h>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>

#include "conductor/error.hpp"
#include "conductor/keys.hpp"
#include "conductor/sha256.hpp"
#include "blob_cache.hpp"
#include "curve.hpp"
#include "file_io.hpp"
#include "job_runner.hpp"
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

class Client::Impl {
 public:
  explicit Impl(ClientOptions options)
      : options_(std::move(options)), endpoint_(transport::normalize_endpoint(options_.server)) {
    if (options_.host_name.empty()) options_.host_name = machine_name();
    if (options_.processing_unit != "cpu" && options_.processing_unit != "gpu") {
      throw Error(ErrorCode::kArgument, "processing unit '" + options_.processing_unit +
                                            "' refused: CONDUCTOR_TYPE must be cpu or gpu");
    }
    std::error_code ec;
    fs::create_directories(options_.workdir / "outbox", ec);
    if (ec) {
      throw IoError("cannot use client folder '" + options_.workdir.string() + "': " + ec.message());
    }
    lock_.emplace(options_.workdir / "lock", "client folder '" + options_.workdir.string() + "'");
    cache_.emplace(options_.workdir / "cache", options_.cache_bytes);  // only once the folder is ours
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
    std::vector<spdlog::sink_ptr> sinks;
    if (options_.log_to_stdout) sinks.push_back(std::make_shared<spdlog::sinks::stdout_sink_mt>());
    log_ = std::make_shared<spdlog::logger>("conductor-client", sinks.begin(), sinks.end());
    log_->set_pattern("[%Y-%m-%dT%H:%M:%S.%eZ] %v", spdlog::pattern_time_type::utc);
    log_->flush_on(spdlog::level::info);
  }

  ~Impl() {
    job_.reset();
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }

  void run() {
    log_->info("Conductor client {} ({}) working in {}, server {}", options_.host_name, client_id_,
               options_.workdir.string(), endpoint_);
    resume_remembered_result();
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
      forward_job_progress();
      keep_alive();
      ask_again_if_stalled();
    }
    if (job_) {
      job_->cancel();
      job_.reset();
    }
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

 private:
  // What the client holds: the item, its package download, its job and its result.
  // One archive being fetched chunk by chunk into the cache.
  struct Download {
    std::string blob;
    std::uint64_t size = 0;
    ChunkFile file;
    Sha256 hash;
    std::uint64_t received = 0;
    std::uint64_t requested = 0;
  };
  struct Current {
    protocol::Assign assign;
    std::vector<std::pair<std::string, std::uint64_t>> blobs;  // what the job unpacks, in order
    std::optional<Download> download;
    std::optional<JobOutcome> outcome;  // set when the job ended; sent until acknowledged
    fs::path result;
  };

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
    if (current_) {
      hello.running_item = current_->assign.item;
      hello.running_version = current_->assign.version;
      hello.running_attempt = current_->assign.attempt;
      hello.running_type = current_->assign.type;
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
  // without an answer the client asks again. The requests are idempotent on the server.
  void ask_again_if_stalled() {
    auto now = Clock::now();
    if (!welcomed_ || job_ || now - waiting_since_ < heartbeat_ * liveness_) return;
    auto waited =
        std::chrono::duration_cast<std::chrono::milliseconds>(now - waiting_since_).count();
    waiting_since_ = now;
    if (!current_) {
      send(MessageType::kReady, protocol::Empty{});  // the ASSIGN, or our READY, may be lost
    } else if (current_->download) {
      log_->warn("No package data for item {} in {} ms; asking again from byte {}",
                 current_->assign.item, waited, current_->download->received);
      current_->download->requested = current_->download->received;
      request_chunks();
    } else if (current_->outcome) {
      log_->warn("No answer about item {} in {} ms; offering it again", current_->assign.item,
                 waited);
      report_outcome();
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
      // A damaged archive, a full disk: this item fails here, the client goes on.
      log_->error("Item failed on this client: {}", e.what());
      if (current_ && !current_->outcome && !job_) fail_current(e.what());
    }
  }

  void on_welcome(const protocol::Welcome& welcome) {
    welcomed_ = true;
    heartbeat_ = std::chrono::milliseconds(std::clamp(welcome.heartbeat_ms, 50, 30000));
    liveness_ = std::clamp(welcome.liveness, 2, 100);
    reconnect_delay_ = heartbeat_ * liveness_;
    chunk_size_ = std::clamp<std::uint32_t>(welcome.chunk_size, 4096, protocol::kMaxPayloadBytes);
    window_ = std::clamp(welcome.window, 1, 64);
    waiting_since_ = Clock::now();
    log_->info("Connected to {}", endpoint_);
    if (!current_) {
      send(MessageType::kReady, protocol::Empty{});
    } else if (current_->outcome) {
      report_outcome();
    } else if (current_->download) {
      // Chunks in flight on the old connection are lost: ask again from what we have.
      current_->download->requested = current_->download->received;
      request_chunks();
    }
  }

  void on_assign(const protocol::Assign& assign) {
    if (current_) {
      if (current_->assign.item != assign.item) {
        log_->warn("Server offered item {} while item {} is still held; ignored", assign.item,
                   current_->assign.item);
      }
      return;
    }
    auto is_blob_id = [](const std::string& id) {
      return id.size() == 64 && id.find_first_not_of("0123456789abcdef") == std::string::npos;
    };
    if (!is_blob_id(assign.blob) || (!assign.inputs.empty() && !is_blob_id(assign.inputs)) ||
        assign.item.empty() || assign.item.size() > 64 ||
        assign.item.find_first_not_of("0123456789abcdef-") != std::string::npos) {
      throw ProtocolError("ASSIGN refused: malformed item or blob id");
    }
    current_.emplace();
    current_->assign = assign;
    waiting_since_ = Clock::now();
    current_->blobs.emplace_back(assign.blob, assign.blob_size);
    if (!assign.inputs.empty()) current_->blobs.emplace_back(assign.inputs, assign.inputs_size);
    std::vector<std::string> in_use;
    for (const auto& [blob, size] : current_->blobs) in_use.push_back(blob);
    cache_->set_in_use(in_use);
    log_->info("Item {} of {} ({}, attempt {}): {} command(s)", assign.item, assign.version,
               assign.type, assign.attempt, assign.commands.size());
    fetch_next_blob();
  }

  // Starts fetching the first archive of the item that is not cached; starts the job when
  // every archive is there.
  void fetch_next_blob() {
    Current& c = *current_;
    for (const auto& [blob, size] : c.blobs) {
      if (cache_->find(blob)) continue;
      c.download.emplace(Download{blob, size, ChunkFile(cache_->reserve(blob, size)), Sha256{}, 0, 0});
      request_chunks();
      return;
    }
    start_job();
  }

  void request_chunks() {
    Download& d = *current_->download;
    if (d.size == 0) {
      finish_download();
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
    if (!current_ || !current_->download || chunk.blob != current_->download->blob) return;
    Download& d = *current_->download;
    if (chunk.offset != d.received) return;  // a leftover from before a reconnect
    const auto& payload = *message.payload();
    if (d.received + payload.size() > d.size) {
      throw ProtocolError("CHUNK refused: data beyond the archive's announced size");
    }
    d.file.write_at(d.received, payload.data(), payload.size());
    d.hash.update(payload.data(), payload.size());
    d.received += payload.size();
    fetched_ += payload.size();
    waiting_since_ = Clock::now();
    if (d.received == d.size) {
      finish_download();
    } else {
      request_chunks();
    }
  }

  void finish_download() {
    Download& d = *current_->download;
    std::string actual = d.hash.finish_hex();
    std::string blob = d.blob;
    current_->download.reset();
    if (actual != blob) {
      cache_->abandon(blob);
      throw PackageError("archive of item " + current_->assign.item + " arrived damaged (sha256 " +
                         actual + ", expected " + blob + ")");
    }
    cache_->commit(blob);
    fetch_next_blob();
  }

  void start_job() {
    Current& c = *current_;
    JobSpec spec;
    spec.item = c.assign.item;
    spec.attempt = c.assign.attempt;
    spec.version = c.assign.version;
    for (const auto& command : c.assign.commands) spec.commands.push_back({command.file_name, command.arguments, {}});
    for (const auto& [blob, size] : c.blobs) spec.packages.push_back(cache_->path_of(blob));
    spec.work_dir = options_.workdir / "work";
    spec.console_log = options_.workdir / "logs" / (c.assign.item + ".log");
    spec.result = options_.workdir / "outbox" / (c.assign.item + "-" + std::to_string(c.assign.attempt) + ".tar");
    spec.processing_unit = options_.processing_unit;
    spec.timeout = std::chrono::milliseconds(std::max<std::int64_t>(c.assign.timeout_ms, 0));
    spec.echo_output = options_.log_to_stdout;
    c.result = spec.result;
    job_ = std::make_unique<JobRunner>(std::move(spec), [this] {
      std::uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
    });
  }

  void forward_job_progress() {
    if (!job_) return;
    int epoch = 0, total = 0;
    auto lines = job_->take_lines(epoch, total);
    if (!lines.empty() && welcomed_ && !job_->is_cancelled()) {
      // Batches stay well inside the header limit: at most 1000 lines and 1 MiB each.
      protocol::Progress progress{current_->assign.item, current_->assign.attempt, epoch, total, {}};
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
    auto outcome = job_->outcome();
    if (!outcome) return;
    job_.reset();
    if (outcome->cancelled) {
      log_->info("Item {} cancelled", current_->assign.item);
      discard_current();
      return;
    }
    current_->outcome = std::move(outcome);
    if (current_->outcome->succeeded) {
      remember_result();
      log_->info("Item {} finished in {:.1f} s; sending {} bytes", current_->assign.item,
                 current_->outcome->duration, current_->outcome->size);
    } else {
      log_->warn("Item {} failed: {}", current_->assign.item, current_->outcome->reason);
    }
    if (welcomed_) report_outcome();
  }

  void report_outcome() {
    waiting_since_ = Clock::now();
    const Current& c = *current_;
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

  void fail_current(const std::string& reason) {
    current_->outcome = JobOutcome{};
    current_->outcome->reason = reason;
    if (welcomed_) report_outcome();
  }

  void on_pull(const protocol::Pull& pull) {
    if (!current_ || !current_->outcome || !current_->outcome->succeeded ||
        pull.item != current_->assign.item) {
      return;
    }
    const auto size = current_->outcome->size;
    if (pull.offset >= size || pull.length == 0 || pull.length > protocol::kMaxPayloadBytes) {
      throw ProtocolError("PULL refused: range outside the result");
    }
    auto length = std::min<std::uint64_t>(pull.length, size - pull.offset);
    waiting_since_ = Clock::now();
    zmq::message_t payload(length);
    read_at(current_->result, pull.offset, payload.data(), length);
    uploaded_ += length;
    send(MessageType::kUpload, protocol::Upload{pull.item, current_->assign.attempt, pull.offset},
         std::move(payload));
  }

  void on_ack(const protocol::Ack& ack) {
    if (!current_ || ack.item != current_->assign.item) return;
    if (ack.status == "stored") {
      ++completed_;
      log_->info("Item {} stored by the server", ack.item);
    } else if (ack.status == "rejected") {
      log_->warn("Item {} rejected by the server: {}", ack.item, ack.reason);
    } else {
      log_->info("Item {}: {}", ack.item, ack.status);
    }
    discard_current();
  }

  void on_cancel(const protocol::Cancel& cancel) {
    if (!current_ || cancel.item != current_->assign.item) return;
    log_->info("Server cancelled item {}: {}", cancel.item, cancel.reason);
    if (job_) {
      job_->cancel();  // the job thread ends soon; forward_job_progress() cleans up
      return;
    }
    discard_current();
  }

  void on_error(const protocol::ErrorMessage& error) {
    log_->warn("Server reported an error: {}", error.message);
    // The server refused what we sent about our result (a RESULT, an UPLOAD chunk): it will
    // never acknowledge it. Letting go is safe: READY makes the server queue the item again.
    if (current_ && current_->outcome && !job_) {
      log_->warn("Giving up item {}; the server will hand it out again", current_->assign.item);
      discard_current();
      return;
    }
    // A package the server no longer has cannot be fetched: give the item back.
    if (current_ && current_->download && error.code == static_cast<int>(protocol::ErrorReply::kRefused)) {
      std::string blob = current_->download->blob;
      current_->download.reset();
      cache_->abandon(blob);
      fail_current("package could not be fetched: " + error.message);
    }
    if (error.fatal) connect();
  }

  // A finished result outlives a restart of this client: its description sits next to the
  // archive in outbox/ until the server acknowledges it.
  void remember_result() {
    const Current& c = *current_;
    const JobOutcome& o = *c.outcome;
    nlohmann::json record = {{"item", c.assign.item},         {"attempt", c.assign.attempt},
                             {"version", c.assign.version},   {"type", c.assign.type},
                             {"size", o.size},                {"sha256", o.sha256},
                             {"duration", o.duration},        {"epochs", o.epochs},
                             {"last_epoch", o.last_epoch}};
    fs::path file = c.result;
    file.replace_extension(".json");
    fs::path tmp = file;
    tmp += ".tmp";
    std::ofstream(tmp) << record.dump();
    std::error_code ec;
    fs::rename(tmp, file, ec);
    if (ec) log_->warn("Cannot keep {} for a restart: {}", file.string(), ec.message());
  }

  // Takes up a result a previous run of this client finished but never got acknowledged.
  void resume_remembered_result() {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(options_.workdir / "outbox", ec)) {
      if (entry.path().extension() != ".json") continue;
      try {
        auto record = nlohmann::json::parse(std::ifstream(entry.path()));
        Current c;
        c.assign.item = record.at("item").get<std::string>();
        c.assign.attempt = record.at("attempt").get<int>();
        c.assign.version = record.at("version").get<std::string>();
        c.assign.type = record.at("type").get<std::string>();
        c.result = entry.path();
        c.result.replace_extension(".tar");
        JobOutcome o;
        o.succeeded = true;
        o.size = record.at("size").get<std::uint64_t>();
        o.sha256 = record.at("sha256").get<std::string>();
        o.duration = record.at("duration").get<double>();
        o.epochs = record.at("epochs").get<int>();
        o.last_epoch = record.at("last_epoch").get<double>();
        if (fs::file_size(c.result, ec) != o.size || ec) throw std::runtime_error("archive is missing or changed");
        c.outcome = std::move(o);
        current_ = std::move(c);
        log_->info("Resuming the unacknowledged result of item {} from an earlier run", current_->assign.item);
        return;
      } catch (const std::exception& e) {
        log_->warn("Dropping unusable outbox entry {}: {}", entry.path().string(), e.what());
        fs::path archive = entry.path();
        fs::remove(archive.replace_extension(".tar"), ec);
        fs::remove(entry.path(), ec);
      }
    }
  }

  void discard_current() {
    if (!current_) return;
    std::error_code ec;
    if (!current_->result.empty()) {
      fs::remove(current_->result, ec);
      fs::path record = current_->result;
      fs::remove(record.replace_extension(".json"), ec);
    }
    fs::remove(options_.workdir / "logs" / (current_->assign.item + ".log"), ec);
    if (current_->download) {
      std::string blob = current_->download->blob;
      current_->download.reset();
      cache_->abandon(blob);
    }
    current_.reset();
    cache_->set_in_use({});
    resume_remembered_result();
    if (!welcomed_) return;
    if (current_) {
      report_outcome();
    } else {
      waiting_since_ = Clock::now();
      send(MessageType::kReady, protocol::Empty{});
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
  int wake_fd_ = -1;
  std::shared_ptr<spdlog::logger> log_;
  zmq::context_t context_;
  std::optional<zmq::socket_t> socket_;
  bool welcomed_ = false;
  Clock::time_point last_heard_{};
  Clock::time_point last_sent_{};
  Clock::time_point waiting_since_{};  // last sign that what we wait for is coming
  std::chrono::milliseconds heartbeat_{1000};
  int liveness_ = 5;
  std::chrono::milliseconds reconnect_delay_{5000};
  std::uint32_t chunk_size_ = 1u << 20;
  int window_ = 8;
  std::optional<Current> current_;
  std::unique_ptr<JobRunner> job_;
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

}  // namespace conductor
