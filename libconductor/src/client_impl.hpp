// Client::Impl: the client's state and its network thread. Private to libconductor; split over
// client.cpp (options, connection, messages, the public Client) and client_slot.cpp (what each
// slot does with its item: downloads, the job, the outcome). Everything here runs on the one
// thread that calls run(), except stop() and the counters, which are atomic.
#pragma once

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "blob_cache.hpp"
#include "client_console.hpp"
#include "conductor/client.hpp"
#include "conductor/error.hpp"
#include "file_io.hpp"
#include "job_runner.hpp"
#include "outbox.hpp"
#include "protocol.hpp"
#include "running_commands.hpp"
#include "transport.hpp"
#include "wakeup.hpp"

namespace conductor {

namespace fs = std::filesystem;
using protocol::MessageType;
using Clock = std::chrono::steady_clock;

class Client::Impl {
 public:
  explicit Impl(ClientOptions options);
  ~Impl();
  void run();
  void stop() noexcept;

  std::uint64_t completed() const noexcept { return completed_.load(); }
  std::uint64_t fetched() const noexcept { return fetched_.load(); }
  std::uint64_t uploaded() const noexcept { return uploaded_.load(); }
  const std::string& public_key() const noexcept { return curve_.public_key; }
  int slot_count() const noexcept { return options_.slots; }
  const std::vector<std::string>& gpus() const noexcept { return options_.gpus; }

 private:
  // One archive being fetched chunk by chunk into the cache; slots that need the same archive
  // wait for the one download. The network thread only writes the chunks: once the last byte
  // is in, the job of one waiting slot (`verifier`) checks the SHA-256 while it unpacks the
  // file, and only then does it enter the cache; the other slots wait for that.
  struct Download {
    std::string blob;
    std::uint64_t size = 0;
    // Into the cache's .part file, or into memory: an item's own small inputs (a prediction's
    // model and rows) are used once, so they never enter the cache and cost no file.
    std::optional<ChunkFile> file;
    std::shared_ptr<std::string> memory;
    std::uint64_t received = 0;
    std::uint64_t requested = 0;
    int verifier = -1;  // the slot whose job checks it; -1 while none does

    bool is_complete() const { return received == size; }
  };
  // What a slot holds: the item, the archive it waits for, its result.
  struct Current {
    protocol::Assign assign;
    std::vector<std::pair<std::string, std::uint64_t>> blobs;  // what the job unpacks, in order
    std::string fetching;                // the blob being downloaded (or checked by another
                                         // slot) for it; empty when none
    std::vector<std::string> verifying;  // complete downloads its job checks while unpacking
    std::optional<JobOutcome> outcome;  // set when the job ended; sent until acknowledged
    fs::path result;  // its archive in the outbox (unless held in memory: outcome->archive)
    // A training result held in memory only is written to the outbox at this time (kHoldFor).
    std::optional<Clock::time_point> keep_due;
    bool is_kept = false;  // in the outbox with its description, for a restart
    // What the terminal's progress bar shows (show_progress).
    Clock::time_point received_at = Clock::now();
    int epoch = 0, total_epochs = 0;
    std::uint64_t uploaded = 0;
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

  std::string gpu_list() const;
  void stop_jobs();

  // A small result (JobSpec::memory_result_bytes) of a training job that ran less than this is
  // held in memory and written to the outbox only when the server has not acknowledged it this
  // long after the job ended, or when the client stops: the fsync'ed files it would cost cap
  // the client's pace, and a crash meanwhile loses at most this much work, which the server
  // then hands out again. A longer job's result is written to the outbox at once.
  static constexpr std::chrono::milliseconds kHoldFor{2000};
  static constexpr std::uint64_t kMemoryResultBytes = std::uint64_t{1} << 20;
  static constexpr std::uint64_t kMemoryInputsBytes = std::uint64_t{1} << 20;
  // The largest inputs archive taken inline with its ASSIGN (HELLO.inline_inputs_bytes).
  static constexpr std::uint32_t kInlineInputsBytes = 256u << 10;

  // Writes the slot's succeeded training result (and its description) to the outbox, where a
  // restarted client finds it; once.
  void keep_for_restart(Slot& slot);

  Slot* slot_holding(const std::string& item) {
    for (Slot& slot : slots_) {
      if (slot.current && slot.current->assign.item == item) return &slot;
    }
    return nullptr;
  }

  // Slots past what the server fills stay idle (a server that predates slots fills one).
  bool is_usable(const Slot& slot) const { return slot.index < usable_slots_; }

  // ---- connection ----------------------------------------------------------------------

  void connect();
  void say_hello();
  void keep_alive();

  // A message lost on a live connection (a peer's full queue drops it; heartbeats still flow)
  // would leave a download, a result or a hand-out waiting forever: after `liveness` intervals
  // without an answer the slot asks again. The requests are idempotent on the server.
  void ask_again_if_stalled(Slot& slot);

  // ---- messages ------------------------------------------------------------------------

  void handle(transport::Received& received);

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

  void on_welcome(const protocol::Welcome& welcome);
  // `inputs`: the item's inputs archive, sent with the ASSIGN (HELLO.inline_inputs_bytes).
  void on_assign(const protocol::Assign& assign, const zmq::message_t* inputs);

  // Every slot's archives stay in the cache while it holds its item.
  void mark_blobs_in_use();

  // Starts (or joins) the download of the first archive of the slot's item that is not cached;
  // starts the job when every archive is there.
  void fetch_next_blob(Slot& slot);
  void request_chunks(Download& d);
  void on_chunk(protocol::Message& message);

  // The last byte arrived: every slot waiting for it moves on, the first to take it checks it.
  // `blob` is a copy: the caller's string may go away.
  void finish_download(std::string blob);

  // The slot's job unpacked the downloads it checks (`is_intact`), or ended or went away
  // without doing so: each goes into the cache, or is dropped; either way the slots waiting for
  // it move on (fetching it afresh when it was dropped).
  void settle_verification(Slot& slot, bool is_intact);

  // Throws NoSpaceError when downloading `size` bytes of `blob` into the cache would leave less
  // than ClientOptions::min_free_bytes free, even once `slot`'s work folder is emptied of the
  // last item's files and `freeable` more bytes are freed.
  void check_room(const Slot& slot, const std::string& blob, std::uint64_t size,
                  std::uint64_t freeable = 0) const;
  // Gives up downloads the server refused (all of them when it did not say which), failing the
  // items that wait for them.
  void give_up_downloads(const std::string& blob, const std::string& why);
  void start_job(Slot& slot);
  void forward_job_progress(Slot& slot);
  void report_outcome(Slot& slot);
  void fail(Slot& slot, const std::string& reason);
  void on_pull(const protocol::Pull& pull);
  void on_ack(const protocol::Ack& ack);
  void on_cancel(const protocol::Cancel& cancel);
  void on_error(const protocol::ErrorMessage& error);

  // Takes up a result this client (or an earlier run of it) finished but never got
  // acknowledged, unless another slot holds it.
  void take_up_kept_result(Slot& slot);

  // The slot lets go of its item, then offers the next kept result or asks for work: with a
  // READY unless `acknowledged` is an ACK that says the server took the slot as READY.
  void discard(Slot& slot, const protocol::Ack* acknowledged = nullptr);

  // The slot's bar on a terminal: bytes while downloading and uploading, epochs (or the
  // elapsed time) while running.
  void show_progress(const Slot& slot);
  // Bars are drawn in the order of their keys: slot 0 first ("00", "01", ... up to kMaxSlots).
  static std::string bar_key(const Slot& slot) {
    return (slot.index < 10 ? "0" : "") + std::to_string(slot.index);
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
  std::optional<RunningCommands> running_;      // <workdir>/running: each slot's command's group
  Wakeup wake_{"the client's network thread"};  // job progress and stop() end the poll
  std::shared_ptr<ClientConsole> console_;  // with log_to_stdout: stdout, plain or with bars
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
  bool refused_ = false;  // a fatal ERROR came: the next reconnect says so
  int window_ = 8;
  int usable_slots_ = 1;  // the slots the server fills (WELCOME.slots)
  std::uint64_t inline_result_bytes_ = 0;  // results this small go with RESULT (WELCOME)
  bool ready_with_ack_ = false;  // the server takes ready_slot in RESULT and FAILED (WELCOME)
  // The outbox may hold a result that no slot offers: an earlier run's, found at start. False
  // once take_up() found none; it stays false, since what this run keeps there is held by its
  // slot until discard() deletes it. A slot asks for work with its RESULT only while it is
  // false, so that no kept result can take up a slot the server is about to fill.
  bool may_hold_kept_ = true;
  bool server_names_subjects_ = false;  // it knows slots, so its ERRORs name item or blob
  std::vector<Slot> slots_;
  std::map<std::string, Download> downloads_;  // by blob
  std::atomic<bool> stop_requested_{false};
  std::atomic<std::uint64_t> completed_{0};
  std::atomic<std::uint64_t> fetched_{0};
  std::atomic<std::uint64_t> uploaded_{0};
};

}  // namespace conductor
