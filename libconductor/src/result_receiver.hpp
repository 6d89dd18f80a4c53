// ResultReceiver: the server's side of result uploads. It pulls a result archive from its client
// chunk by chunk (at most kWindow chunks in flight). A large training result is extracted while
// it arrives: a thread of its own (a Stream, at most kMaxStreams at once) hashes and unpacks
// each chunk into a staging folder as it comes, so the model is written once, never to a spool
// file first, and is ready for AssetStore::commit_model moments after its last byte; the
// network thread only hands chunks over, and asks for more only as the stream takes them, so
// what waits in memory stays within the window. Any other result is received into memory (up to
// kMemoryResultBytes) or into a spool file, and extracted once complete, checking the archive's
// SHA-256 while extraction reads it (extract_verified: read once, and a resumed upload is
// verified whole): a small result at once, a large one on the background worker. A prediction's
// result is not extracted: the few files
// the server reads of it (the console log, the version's output file) are read out of the
// archive into memory (read_verified), so an answer costs no staging folder. Also keeps the live
// console of running items in spool/live/<item>.log. Not thread-safe: owned by the network thread.
#pragma once

#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "background_worker.hpp"
#include "conductor/asset_store.hpp"
#include "conductor/evaluation.hpp"
#include "conductor/package.hpp"
#include "conductor/scheduler.hpp"
#include "file_io.hpp"
#include "protocol.hpp"

namespace conductor {

// Inside a result archive, the client's console log of the item, in a folder that is never a
// training output.
inline constexpr const char* kConductorFolder = ".conductor";
inline constexpr const char* kConsoleLogEntry = ".conductor/console.log";

class ResultReceiver {
 public:
  struct Finished;
  // Runs on the network thread for every complete upload, refused ones included.
  using FinishedHandler = std::function<void(const std::string& client, Finished finished)>;
  // Results of at least this many bytes are hashed and extracted on the background worker.
  static constexpr std::uint64_t kInlineFinishBytes = std::uint64_t{4} << 20;
  // Results up to this size are received into memory, as long as all of those together stay
  // within kMaxMemoryBytes; a bigger one, or one beyond that, goes to a file in the spool.
  static constexpr std::uint64_t kMemoryResultBytes = std::uint64_t{1} << 20;
  static constexpr std::uint64_t kMaxMemoryBytes = std::uint64_t{64} << 20;

  // Sends PULLs asked for outside begin() and receive(): a stream that took chunks lets more in.
  using PullSender = std::function<void(const std::string& client, const protocol::Pull& pull)>;
  // Training results above kMemoryResultBytes are extracted while they arrive, this many at
  // once; beyond that they go to a spool file as before.
  static constexpr std::size_t kMaxStreams = 4;

  // `worker` must outlive this object: its threads post their completions there. Those
  // completions call into this object, so none may run after it is gone (the server destroys
  // it first and never runs completions again).
  // `min_free_bytes`: a result is not taken (begin() throws NoSpaceError) or not unpacked
  // (Finished::no_space) when it would leave less than this free in the spool's file system
  // (ExtractLimits::min_free_bytes; 0: not checked).
  ResultReceiver(AssetStore& store, std::uint32_t chunk_size, int window, BackgroundWorker& worker,
                 FinishedHandler on_finished, PullSender send_pull,
                 std::uint64_t min_free_bytes = 0);
  // Abandons the streams still running and waits for their threads.
  ~ResultReceiver();
  ResultReceiver(const ResultReceiver&) = delete;
  ResultReceiver& operator=(const ResultReceiver&) = delete;

  struct Finished {
    WorkItem item;
    protocol::ResultOffer offer;
    std::filesystem::path
        staged;  // extracted files, ready for commit_model; empty for a prediction
    // The files in `staged` (relative, "/"-separated), each fsynced with the folders below
    // `staged` that hold them: commit_model's `synced_files`.
    std::vector<std::string> staged_files;
    std::string console_log;
    // A prediction's result: the files named at begin(), as far as the archive holds them (the
    // last kMaxReadBytes of each).
    std::map<std::string, std::string> files;
    std::string error;             // set when the archive was refused (hash, limits, entries)
    // A training result's metrics (evaluate_model_folder of `staged`), taken where it was
    // unpacked, when begin() was given `evaluate_as`; empty when not asked for or when
    // evaluating threw (commit_model then evaluates).
    std::optional<Evaluation> evaluation;
    // The error is the server's want of disk room (NoSpaceError), not the result's fault.
    bool no_space = false;
    // With no_space: the bytes the result was found to need on disk (NoSpaceError::needed);
    // its next offer is not taken until that much is free beyond the reserve.
    std::uint64_t room_needed = 0;
  };
  // Starts receiving `offer` for `item` from `client`, or resumes after the last chunk written
  // when the same client offers the same result (attempt, size, sha256) again; any other
  // earlier upload of the item by the same client is replaced. Returns the PULLs to send: none
  // while the item's complete upload is being extracted (its answer follows), and none while
  // another client's upload of the item is open (the offer is ignored: its client offers again). A
  // prediction item's result is read instead of extracted: Finished::files gets `read_files` (names
  // as list_files() gives them), the console log goes to Finished::console_log as for any result.
  // Throws ProtocolError for an offer it will not take, NoSpaceError (taking nothing) when an
  // upload that is not received into memory would leave less than min_free_bytes free in the
  // spool. `inline_archive`, when set, is the whole
  // result, sent with the offer: it is taken at once (any earlier upload of the item is replaced),
  // no PULL follows; its size must be the offer's and at most kInlineResultBytes.
  // `evaluate_as`, for a training result: its metrics are evaluated as this dataset type right
  // after it is unpacked, on the thread that unpacked it (Finished::evaluation), so a large
  // results.csv is not parsed on the network thread.
  std::vector<protocol::Pull> begin(const std::string& client, const WorkItem& item,
                                    const protocol::ResultOffer& offer,
                                    std::set<std::string> read_files = {},
                                    const zmq::message_t* inline_archive = nullptr,
                                    std::optional<DatasetType> evaluate_as = std::nullopt);
  // The largest result taken inline with its RESULT (WELCOME.inline_result_bytes).
  static constexpr std::uint64_t kInlineResultBytes = std::uint64_t{256} << 10;
  // What is kept of each file of a prediction's result, its console log included: the end.
  static constexpr std::uint64_t kMaxReadBytes = std::uint64_t{8} << 20;

  // Takes one UPLOAD chunk and returns the PULLs to send (a stream's further PULLs may instead
  // follow through the PullSender, as it takes chunks). The chunk that completes the result
  // leads to the FinishedHandler: before this returns for a small result, from a later
  // BackgroundWorker completion for a large one. A streamed result takes `payload` over (moved
  // from). Throws ProtocolError for data nobody asked for, NoSpaceError when the spool's file
  // system is full (the upload is dropped; its client offers the result again).
  std::vector<protocol::Pull> receive(const std::string& client, const protocol::Upload& upload,
                                      zmq::message_t&& payload);

  bool is_receiving(const std::string& client, const std::string& item) const {
    auto it = uploads_.find(item);
    return it != uploads_.end() && it->second.client == client;
  }

  // Forgets the uploads of a client that went away, and their partial files.
  void abandon(const std::string& client);

  // Uploads that moved no byte since `now - max_idle` (a client or operator that never came
  // back): forgotten, their partial files removed. Returns "<item> from <client>" for each.
  // A client that returns later offers its result again and it is received from the start.
  std::vector<std::string> abandon_idle(std::chrono::steady_clock::time_point now,
                                        std::chrono::milliseconds max_idle);

  // Appends to spool/live/<item>.log, which stops growing at 64 MiB with a line saying so.
  void append_live_log(const std::string& item_id, const std::vector<std::string>& lines);
  // The item's run ended (its result came, or it failed): its live log goes.
  void end_live_log(const std::string& item_id);

 private:
  class Stream;
  struct Upload {
    std::string client;
    WorkItem item;
    protocol::ResultOffer offer;
    // A small result is received into `memory` (no file to create, write and remove), a large
    // training result into a `stream` that extracts it as it comes, any other into `file` in
    // spool/incoming.
    std::optional<ChunkFile> file;
    std::string memory;
    std::shared_ptr<Stream> stream;
    std::uint64_t received = 0;
    std::uint64_t requested = 0;
    std::chrono::steady_clock::time_point last_activity = std::chrono::steady_clock::now();
    std::set<std::string> read_files;  // a prediction's: read, not extracted
    std::string head;  // the first kPlainTarHeadBytes received: is_plain_tar() judges them
    std::optional<DatasetType> evaluate_as;
  };
  void discard(std::map<std::string, Upload>::iterator upload);
  // Gives back what an upload in memory reserved of kMaxMemoryBytes.
  void release_memory(const Upload& upload);

  void request_more(Upload& upload, std::vector<protocol::Pull>& pulls);
  // Throws NoSpaceError when receiving `offer` would leave less than min_free_bytes free: its
  // size, or the room an earlier attempt of the same result was found to need (room_needed_).
  void check_room(const WorkItem& item, const protocol::ResultOffer& offer) const;
  // Hands `done` to the FinishedHandler; a result refused for want of room is remembered with
  // the room it needs, so that its next offers are not pulled in full only to fail again.
  void deliver(const std::string& client, Finished done);
  void remember_room(const protocol::ResultOffer& offer, std::uint64_t bytes);
  // Extracts (reads, for a prediction), checking the hash; file system work only, so it may run
  // on the worker.
  static Finished finish(const std::filesystem::path& spool, const Upload& upload,
                         const ExtractLimits& limits);
  // Unpacks `source` into `staged` (created here), checking `offer`'s hash, each file fsynced
  // as it is written (ExtractOptions::sync): a training result's Finished, or its error with
  // nothing left in `staged`.
  static Finished extract_training(const ArchiveSource& source, const WorkItem& item,
                                   const protocol::ResultOffer& offer, std::filesystem::path staged,
                                   const ExtractLimits& limits,
                                   std::optional<DatasetType> evaluate_as);
  // Starts the thread that extracts `upload` while it arrives.
  void start_stream(Upload& upload);
  // On the network thread: a stream took chunks (more may be asked for), or has finished.
  void on_stream_credit(const std::string& item_id, const std::shared_ptr<Stream>& stream);
  void on_stream_finished(const std::string& client, const std::shared_ptr<Stream>& stream,
                          Finished done);
  // Joins the threads of streams that ended.
  void reap_streams();
  // Late repeats of this upload's chunks are dropped from now on (the last kRecentlyComplete).
  void remember_complete(const std::string& item_id);
  static constexpr std::size_t kRecentlyComplete = 1024;

  AssetStore& store_;
  std::uint32_t chunk_size_;
  int window_;
  ExtractLimits limits_;  // of every result: entries, bytes, the free space left
  BackgroundWorker& worker_;
  FinishedHandler on_finished_;
  PullSender send_pull_;
  std::map<std::string, Upload> uploads_;  // by item id
  // Every stream whose thread has not been joined: receiving, finishing or abandoned.
  std::vector<std::shared_ptr<Stream>> streams_;
  std::uint64_t stream_serial_ = 0;        // names each stream's staging folder
  std::uint64_t memory_bytes_ = 0;         // what uploads in memory reserved
  std::set<std::string> finishing_;        // item ids being extracted on the worker
  std::set<std::string> recently_complete_;  // item ids whose last byte came, the latest
  std::deque<std::string> complete_order_;   // the same, oldest first
  std::set<std::string> live_logs_cut_;      // item ids whose live log reached its limit
  // Results that did not fit (a full spool, or unpacking would cross the reserve), by item id:
  // the archive (its SHA-256; a later attempt's other result is not held to it) and the bytes
  // that attempt needed. At most kRecentlyComplete entries, the oldest dropped first.
  struct RoomNeeded {
    std::string sha256;
    std::uint64_t bytes = 0;
  };
  std::map<std::string, RoomNeeded> room_needed_;
  std::deque<std::string> room_order_;  // room_needed_'s keys, oldest first
};

}  // namespace conductor
