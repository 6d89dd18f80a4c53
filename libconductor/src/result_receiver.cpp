#include "result_receiver.hpp"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "conductor/error.hpp"
#include "conductor/package.hpp"
#include "thread_name.hpp"

namespace conductor {

namespace fs = std::filesystem;

namespace {

// Results bigger than this are refused outright (a model of many GB is fine).
constexpr std::uint64_t kMaxResultBytes = 64ull << 30;
// A console log above this keeps only its end in console.log / the error log.
constexpr std::uintmax_t kMaxConsoleBytes = 64ull << 20;
// A running item's live console (spool/live/<item>.log) stops growing here, with this line.
constexpr std::uintmax_t kMaxLiveLogBytes = 64ull << 20;
constexpr std::string_view kLiveLogCut =
    "[conductor] live log cut at 64 MiB; the end of the console comes with the result";

bool is_hex_sha256(const std::string& text) {
  return text.size() == 64 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

// The chunks of one upload on their way from the network thread to the stream's thread, which
// unpacks them (read_entries() calls next() through libarchive). Memory: the chunks queued,
// which request_more() keeps within the window, and the one being unpacked.
class ResultReceiver::Stream final : public ArchiveStream {
 public:
  // `on_credit` runs on the stream's thread when it took a chunk while the network thread
  // waited for room (want_credit()). Set before the thread starts.
  void set_on_credit(std::function<void()> on_credit) { on_credit_ = std::move(on_credit); }
  ~Stream() override {
    abort();  // a thread still waiting for chunks ends (no-op once it is done)
    if (thread.joinable()) thread.join();
  }

  void push(zmq::message_t chunk) {
    {
      std::lock_guard lock(mutex_);
      chunks_.push_back(std::move(chunk));
    }
    ready_.notify_one();
  }
  // The last chunk was pushed: next() returns the end once the queue is empty.
  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    ready_.notify_one();
  }
  // Gives up: next() throws, the extraction removes what it created, the thread ends.
  void abort() {
    {
      std::lock_guard lock(mutex_);
      aborted_ = true;
      chunks_.clear();
    }
    ready_.notify_one();
  }
  bool is_aborted() {
    std::lock_guard lock(mutex_);
    return aborted_;
  }
  // Bytes the stream's thread has taken.
  std::uint64_t consumed() const { return consumed_.load(); }
  // The network thread asks for no more until the thread takes a chunk: on_credit() then.
  void want_credit() {
    std::lock_guard lock(mutex_);
    wants_credit_ = true;
  }

  std::string_view next() override {
    std::unique_lock lock(mutex_);
    current_ = zmq::message_t();  // unpacked: let it go before waiting
    ready_.wait(lock, [&] { return aborted_ || closed_ || !chunks_.empty(); });
    if (aborted_) throw IoError("upload abandoned before its last byte arrived");
    if (chunks_.empty()) return {};
    current_ = std::move(chunks_.front());
    chunks_.pop_front();
    consumed_ += current_.size();
    const bool credit = std::exchange(wants_credit_, false);
    lock.unlock();
    if (credit) on_credit_();
    return {static_cast<const char*>(current_.data()), current_.size()};
  }

  std::thread thread;
  std::atomic<bool> done{false};  // the thread's work is over: join() returns at once

 private:
  std::function<void()> on_credit_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<zmq::message_t> chunks_;  // guarded by mutex_
  bool closed_ = false;                // guarded by mutex_
  bool aborted_ = false;               // guarded by mutex_
  bool wants_credit_ = false;          // guarded by mutex_
  zmq::message_t current_;             // the stream's thread's only
  std::atomic<std::uint64_t> consumed_{0};
};

ResultReceiver::ResultReceiver(AssetStore& store, std::uint32_t chunk_size, int window,
                               BackgroundWorker& worker, FinishedHandler on_finished,
                               PullSender send_pull, std::uint64_t min_free_bytes)
    : store_(store),
      chunk_size_(chunk_size),
      window_(window),
      limits_{100000, kMaxResultBytes, kMaxResultBytes, min_free_bytes},
      worker_(worker),
      on_finished_(std::move(on_finished)),
      send_pull_(std::move(send_pull)) {
  fs::create_directories(store_.spool_dir() / "incoming");
  fs::create_directories(store_.spool_dir() / "staging");
  fs::create_directories(store_.spool_dir() / "live");
}

ResultReceiver::~ResultReceiver() {
  for (auto& stream : streams_) stream->abort();
  streams_.clear();  // each joins its thread
}

std::vector<protocol::Pull> ResultReceiver::begin(const std::string& client, const WorkItem& item,
                                                  const protocol::ResultOffer& offer,
                                                  std::set<std::string> read_files,
                                                  const zmq::message_t* inline_archive,
                                                  std::optional<DatasetType> evaluate_as) {
  if (offer.size > kMaxResultBytes) {
    throw ProtocolError("RESULT refused: " + std::to_string(offer.size) + " bytes exceed the limit of " +
                        std::to_string(kMaxResultBytes));
  }
  if (offer.size == 0) throw ProtocolError("RESULT refused: an empty archive is not a result");
  if (!is_hex_sha256(offer.sha256)) {
    throw ProtocolError("RESULT refused: sha256 must be 64 lower-case hex digits");
  }
  if (inline_archive != nullptr &&
      (inline_archive->size() != offer.size || offer.size > kInlineResultBytes)) {
    throw ProtocolError("RESULT refused: an inline archive of " +
                        std::to_string(inline_archive->size()) + " bytes for a result of " +
                        std::to_string(offer.size) + " (inline at most " +
                        std::to_string(kInlineResultBytes) + ")");
  }
  if (finishing_.contains(item.id)) return {};
  if (auto it = uploads_.find(item.id); it != uploads_.end()) {
    Upload& earlier = it->second;
    if (inline_archive == nullptr && earlier.client == client &&
        earlier.offer.attempt == offer.attempt && earlier.offer.sha256 == offer.sha256 &&
        earlier.offer.size == offer.size) {
      // The same result again after a reconnect: go on from the last chunk written.
      earlier.offer = offer;
      earlier.requested = earlier.received;
      // last_activity moves only with bytes: a client that offers again and again but never
      // answers a PULL still goes idle, and stops standing in another client's way.
      std::vector<protocol::Pull> pulls;
      request_more(earlier, pulls);
      return pulls;
    }
    // Another client's upload of the item is under way: this offer waits (its client offers
    // again when no answer comes, and then learns whether the other result was stored), so
    // that neither loses the result it holds. abandon() and abandon_idle() end an upload whose
    // client left or stalled.
    if (earlier.client != client) return {};
    discard(it);
  }
  const bool to_memory =
      offer.size <= kMemoryResultBytes && memory_bytes_ + offer.size <= kMaxMemoryBytes;
  // A result that once failed for want of room is checked however it is received: a small
  // compressed archive may unpack to far more than its size.
  if (auto earlier = room_needed_.find(item.id);
      !to_memory || (earlier != room_needed_.end() && earlier->second.sha256 == offer.sha256)) {
    check_room(item, offer);
  }
  Upload upload{client,
                item,
                offer,
                std::nullopt,
                {},
                nullptr,
                0,
                0,
                std::chrono::steady_clock::now(),
                std::move(read_files),
                {},
                item.type == WorkType::kTraining ? evaluate_as : std::nullopt};
  reap_streams();
  const bool is_read = item.type == WorkType::kPrediction;
  if (to_memory) {
    upload.memory.resize(offer.size);
    memory_bytes_ += offer.size;
  } else if (!is_read && inline_archive == nullptr && streams_.size() < kMaxStreams) {
    start_stream(upload);
  } else {
    upload.file.emplace(store_.spool_dir() / "incoming" / (item.id + ".part"));
  }
  auto [it, inserted] = uploads_.try_emplace(item.id, std::move(upload));
  if (inline_archive != nullptr) {
    zmq::message_t archive(inline_archive->data(), inline_archive->size());
    return receive(client, protocol::Upload{item.id, offer.attempt, 0}, std::move(archive));
  }
  std::vector<protocol::Pull> pulls;
  request_more(it->second, pulls);
  return pulls;
}

std::vector<protocol::Pull> ResultReceiver::receive(const std::string& client,
                                                    const protocol::Upload& upload,
                                                    zmq::message_t&& payload) {
  auto it = uploads_.find(upload.item);
  // A repeat of a chunk of an upload that is complete, being unpacked or already answered (its
  // client offered the result again and answered both rounds of PULLs): nothing to refuse. An
  // ERROR would make the client give up an item whose answer is on its way.
  // So is the rest of a window of chunks whose upload was dropped for want of room: their client
  // keeps the result and offers it again.
  if (it == uploads_.end() &&
      (finishing_.contains(upload.item) || recently_complete_.contains(upload.item) ||
       room_needed_.contains(upload.item))) {
    return {};
  }
  if (it == uploads_.end() || it->second.client != client ||
      it->second.offer.attempt != upload.attempt) {
    throw ProtocolError("UPLOAD refused: no result of item '" + upload.item.substr(0, 64) +
                        "' was asked of this client");
  }
  Upload& current = it->second;
  // Only the chunk that continues the file is written. Another offset is a repeat or comes
  // after a lost chunk: it is dropped, and the client's repeated RESULT (it asks again when
  // nothing moves) resumes the upload at the first missing byte.
  if (upload.offset != current.received) return {};
  if (payload.size() == 0 || current.received + payload.size() > current.offer.size) {
    discard(it);
    throw ProtocolError("UPLOAD refused: chunk at offset " + std::to_string(upload.offset) +
                        " of " + std::to_string(payload.size()) + " bytes does not fit a result of " +
                        std::to_string(current.offer.size) + " bytes; upload abandoned");
  }
  // Only the write (or the hand-over to the stream): the hash is checked while the whole
  // archive is extracted.
  const std::size_t size = payload.size();
  if (current.head.size() < kPlainTarHeadBytes) {
    current.head.append(static_cast<const char*>(payload.data()),
                        std::min(size, kPlainTarHeadBytes - current.head.size()));
  }
  if (current.stream) {
    current.stream->push(std::move(payload));
  } else if (current.file) {
    try {
      current.file->write_at(current.received, payload.data(), size);
    } catch (const NoSpaceError&) {
      // The spool is full: the upload goes with its partial file, the client keeps the result
      // and offers it again, which is not taken until its size is free beyond the reserve.
      remember_room(current.offer, current.offer.size);
      discard(it);
      throw;
    }
  } else {
    std::memcpy(current.memory.data() + current.received, payload.data(), size);
  }
  current.received += size;
  current.last_activity = std::chrono::steady_clock::now();
  std::vector<protocol::Pull> pulls;
  if (current.received < current.offer.size) {
    request_more(current, pulls);
    return pulls;
  }
  if (current.item.type == WorkType::kTraining) {
    end_live_log(current.item.id);
  }
  remember_complete(current.item.id);
  if (current.stream) {
    // Its thread unpacks what is left, syncs, and posts on_stream_finished.
    current.stream->close();
    finishing_.insert(current.item.id);
    uploads_.erase(it);
    return pulls;
  }
  auto complete = std::make_shared<Upload>(std::move(current));
  uploads_.erase(it);
  // Only a small plain tar is unpacked here, on the network thread: a compressed one of the
  // same size may unpack to gigabytes (at most limits_.max_total_bytes), which would stall
  // every client meanwhile.
  if (complete->offer.size < kInlineFinishBytes && is_plain_tar(complete->head)) {
    Finished done = finish(store_.spool_dir(), *complete, limits_);
    release_memory(*complete);
    deliver(client, std::move(done));
    return pulls;
  }
  finishing_.insert(complete->item.id);
  worker_.submit([this, spool = store_.spool_dir(), complete, limits = limits_] {
    Finished done = finish(spool, *complete, limits);
    // The archive's spool file holds its size beside what was unpacked.
    if (done.no_space && complete->file) done.room_needed += complete->offer.size;
    return [this, complete, done = std::move(done)]() mutable {
      finishing_.erase(complete->item.id);
      release_memory(*complete);
      deliver(complete->client, std::move(done));
    };
  });
  return pulls;
}

void ResultReceiver::request_more(Upload& upload, std::vector<protocol::Pull>& pulls) {
  const std::uint64_t window_bytes = static_cast<std::uint64_t>(window_) * chunk_size_;
  // A stream counts what still waits for its thread as in flight: memory stays within the
  // window however far the network runs ahead of the disk.
  const std::uint64_t settled = upload.stream ? upload.stream->consumed() : upload.received;
  while (upload.requested < upload.offer.size && upload.requested - settled < window_bytes) {
    auto length = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(chunk_size_, upload.offer.size - upload.requested));
    pulls.push_back({upload.item.id, upload.offer.attempt, upload.requested, length});
    upload.requested += length;
  }
  // Nothing in flight and no room: the stream's next chunk taken asks for more.
  if (upload.stream && upload.requested < upload.offer.size &&
      upload.requested == upload.received) {
    upload.stream->want_credit();
    // It may have taken everything between the check above and the wish: ask again.
    if (upload.stream->consumed() != settled) request_more(upload, pulls);
  }
}

void ResultReceiver::start_stream(Upload& upload) {
  auto stream = std::make_shared<Stream>();
  const std::weak_ptr<Stream> weak = stream;
  stream->set_on_credit([this, weak, item_id = upload.item.id] {
    worker_.post([this, weak, item_id] {
      if (auto alive = weak.lock()) on_stream_credit(item_id, alive);
    });
  });
  // Named per stream: a replaced upload's thread may still be removing its own.
  fs::path staged = store_.spool_dir() / "staging" /
                    (upload.item.id + "-" + std::to_string(upload.offer.attempt) + "-s" +
                     std::to_string(++stream_serial_));
  streams_.push_back(stream);  // first: the thread is joined even if what follows throws
  upload.stream = stream;
  stream->thread =
      std::thread([this, raw = stream.get(), weak, client = upload.client, item = upload.item,
                   offer = upload.offer, staged = std::move(staged), limits = limits_,
                   evaluate_as = upload.evaluate_as]() mutable {
        name_this_thread("cdr-unpack");
        const fs::path name = store_.spool_dir() / "incoming" / (item.id + " (streamed)");
        Finished done = extract_training(ArchiveSource::from_stream(*raw, name), item, offer,
                                         staged, limits, evaluate_as);
        // A failure before the archive was read to its end (the staging folder could not be made,
        // say): the rest is still taken, so the upload ends as any other does, with its last byte,
        // and the answer follows it.
        try {
          while (!done.error.empty() && !raw->next().empty()) {
          }
        } catch (const std::exception&) {
          // Abandoned meanwhile: nothing to answer.
        }
        if (raw->is_aborted()) {
          std::error_code ec;
          if (!done.staged.empty()) fs::remove_all(done.staged, ec);
        } else {
          try {
            worker_.post([this, weak, client, done = std::move(done)]() mutable {
              on_stream_finished(client, weak.lock(), std::move(done));
            });
          } catch (const std::exception&) {
            // Out of memory: the upload stays finishing until the server restarts.
          }
        }
        raw->done = true;
      });
}

void ResultReceiver::on_stream_credit(const std::string& item_id,
                                      const std::shared_ptr<Stream>& stream) {
  auto it = uploads_.find(item_id);
  if (it == uploads_.end() || it->second.stream != stream) return;  // over or replaced
  std::vector<protocol::Pull> pulls;
  request_more(it->second, pulls);
  for (const auto& pull : pulls) send_pull_(it->second.client, pull);
}

void ResultReceiver::on_stream_finished(const std::string& client,
                                        const std::shared_ptr<Stream>& stream, Finished done) {
  // The stream posts only once its upload ended with the last byte (closed): the upload is no
  // longer open. Should it be, it is given up rather than left waiting for a thread that ended.
  if (auto it = uploads_.find(done.item.id); it != uploads_.end() && it->second.stream == stream) {
    discard(it);
  }
  finishing_.erase(done.item.id);
  reap_streams();
  deliver(client, std::move(done));
}

void ResultReceiver::deliver(const std::string& client, Finished done) {
  if (done.no_space) {
    remember_room(done.offer, std::max(done.room_needed, done.offer.size));
  } else {
    room_needed_.erase(done.item.id);  // its id stays in room_order_ until it comes up
  }
  on_finished_(client, std::move(done));
}

void ResultReceiver::remember_room(const protocol::ResultOffer& offer, std::uint64_t bytes) {
  auto [it, inserted] = room_needed_.try_emplace(offer.item, RoomNeeded{offer.sha256, bytes});
  if (!inserted) {
    // Another archive of the item (a later attempt) starts afresh.
    it->second.bytes =
        it->second.sha256 == offer.sha256 ? std::max(it->second.bytes, bytes) : bytes;
    it->second.sha256 = offer.sha256;
    return;
  }
  room_order_.push_back(offer.item);
  // Bounded: an entry dropped only means one more attempt that may fail the same way.
  while (room_order_.size() > kRecentlyComplete) {
    room_needed_.erase(room_order_.front());
    room_order_.pop_front();
  }
}

void ResultReceiver::remember_complete(const std::string& item_id) {
  if (!recently_complete_.insert(item_id).second) return;
  complete_order_.push_back(item_id);
  if (complete_order_.size() > kRecentlyComplete) {
    recently_complete_.erase(complete_order_.front());
    complete_order_.pop_front();
  }
}

void ResultReceiver::reap_streams() {
  std::erase_if(streams_,
                [](const std::shared_ptr<Stream>& stream) { return stream->done.load(); });
}

ResultReceiver::Finished ResultReceiver::finish(const fs::path& spool, const Upload& upload,
                                                const ExtractLimits& limits) {
  Finished done{upload.item, upload.offer, {}, {}, {}, {}, {}, {}, false};
  const fs::path part =
      upload.file ? upload.file->path() : spool / "incoming" / (upload.item.id + " (in memory)");
  const ArchiveSource source =
      upload.file ? ArchiveSource(part) : ArchiveSource::in_memory(upload.memory, part);
  std::error_code ec;
  auto remove_part = [&] {
    if (upload.file) fs::remove(part, ec);
  };
  if (upload.item.type == WorkType::kPrediction) {
    std::set<std::string> wanted = upload.read_files;
    wanted.insert(kConsoleLogEntry);
    try {
      done.files = read_verified(source, upload.offer.sha256, wanted, kMaxReadBytes, limits);
    } catch (const std::exception& e) {
      done.error = e.what();
      done.files.clear();
    }
    remove_part();
    if (auto console = done.files.find(kConsoleLogEntry); console != done.files.end()) {
      done.console_log = std::move(console->second);
      done.files.erase(console);
    }
    return done;
  }
  done = extract_training(
      source, upload.item, upload.offer,
      spool / "staging" / (upload.item.id + "-" + std::to_string(upload.offer.attempt)), limits,
      upload.evaluate_as);
  remove_part();
  return done;
}

ResultReceiver::Finished ResultReceiver::extract_training(
    const ArchiveSource& source, const WorkItem& item, const protocol::ResultOffer& offer,
    fs::path staged, const ExtractLimits& limits, std::optional<DatasetType> evaluate_as) {
  Finished done{item, offer, std::move(staged), {}, {}, {}, {}, {}, false};
  std::error_code ec;
  fs::remove_all(done.staged, ec);
  try {
    fs::create_directories(done.staged);
    // A hash mismatch is refused here too, and takes precedence over what the damaged bytes
    // would otherwise have caused. The console log is read into memory, never written here:
    // commit_model writes it where it belongs. Nothing else under .conductor/ is kept.
    // Synced as written, which commit_model needs: where this runs off the network thread, it
    // costs nothing there later.
    ExtractOptions options{std::string(kConductorFolder), {kConsoleLogEntry}, kMaxConsoleBytes};
    options.sync = true;
    ExtractStats stats = extract_verified(source, done.staged, offer.sha256, limits, options);
    if (auto console = stats.held.find(kConsoleLogEntry); console != stats.held.end()) {
      done.console_log = std::move(console->second);
    }
    done.staged_files = std::move(stats.files);
  } catch (const std::exception& e) {  // Error, or std::filesystem_error from the folder
    done.error = e.what();
    if (const auto* no_space = dynamic_cast<const NoSpaceError*>(&e)) {
      done.no_space = true;
      done.room_needed = no_space->needed();
    }
    fs::remove_all(done.staged, ec);
    done.staged.clear();
    return done;
  }
  if (evaluate_as) {
    try {
      done.evaluation = evaluate_model_folder(done.staged, *evaluate_as, done.staged_files);
    } catch (const std::exception&) {
      // commit_model evaluates again and handles what it throws.
    }
  }
  return done;
}

void ResultReceiver::check_room(const WorkItem& item, const protocol::ResultOffer& offer) const {
  if (limits_.min_free_bytes == 0 && !room_needed_.contains(item.id)) return;  // not checked
  std::uint64_t needed = offer.size;
  std::string why = "receiving it";
  if (auto earlier = room_needed_.find(item.id); earlier != room_needed_.end() &&
                                                 earlier->second.sha256 == offer.sha256 &&
                                                 earlier->second.bytes >= needed) {
    needed = earlier->second.bytes;
    why = "an earlier attempt found that it needs " + std::to_string(needed) + " bytes, which";
  }
  std::uint64_t free = 0;
  try {
    free = file_system_space(store_.spool_dir()).free;
  } catch (const IoError&) {
    return;  // the write and the extraction check again
  }
  if (leaves_room(free, needed, limits_.min_free_bytes)) return;
  throw NoSpaceError("result of item " + item.id + " (" + std::to_string(offer.size) +
                         " bytes) not taken yet: " + why + " would leave less than " +
                         std::to_string(limits_.min_free_bytes) + " bytes free in '" +
                         store_.spool_dir().string() + "' (" + std::to_string(free) +
                         " free; min_free_bytes)",
                     needed);
}

void ResultReceiver::end_live_log(const std::string& item_id) {
  std::error_code ec;
  fs::remove(store_.spool_dir() / "live" / (item_id + ".log"), ec);
  live_logs_cut_.erase(item_id);
}

void ResultReceiver::release_memory(const Upload& upload) {
  if (!upload.file && !upload.stream) memory_bytes_ -= upload.offer.size;
}

void ResultReceiver::discard(std::map<std::string, Upload>::iterator upload) {
  release_memory(upload->second);
  // Its thread removes what it unpacked and ends; reap_streams() joins it.
  if (upload->second.stream) upload->second.stream->abort();
  const std::optional<fs::path> part =
      upload->second.file ? std::optional(upload->second.file->path()) : std::nullopt;
  uploads_.erase(upload);  // closes the file first
  std::error_code ignored;
  if (part) fs::remove(*part, ignored);
}

void ResultReceiver::abandon(const std::string& client) {
  for (auto it = uploads_.begin(); it != uploads_.end();) {
    auto next = std::next(it);
    if (it->second.client == client) discard(it);
    it = next;
  }
}

std::vector<std::string> ResultReceiver::abandon_idle(std::chrono::steady_clock::time_point now,
                                                      std::chrono::milliseconds max_idle) {
  reap_streams();
  std::vector<std::string> abandoned;
  for (auto it = uploads_.begin(); it != uploads_.end();) {
    auto next = std::next(it);
    if (now - it->second.last_activity > max_idle) {
      abandoned.push_back(it->first + " from " + it->second.client);
      discard(it);
    }
    it = next;
  }
  return abandoned;
}

void ResultReceiver::append_live_log(const std::string& item_id,
                                     const std::vector<std::string>& lines) {
  if (lines.empty()) return;
  if (live_logs_cut_.contains(item_id)) return;  // the result brings the console's end
  const fs::path file = store_.spool_dir() / "live" / (item_id + ".log");
  std::error_code ec;
  const std::uintmax_t size = fs::file_size(file, ec);
  std::ofstream out(file, std::ios::app);
  std::uintmax_t written = ec ? 0 : size;
  for (const auto& line : lines) {
    if (written + line.size() + 1 > kMaxLiveLogBytes) {
      out << kLiveLogCut << '\n';
      live_logs_cut_.insert(item_id);
      return;
    }
    out << line << '\n';
    written += line.size() + 1;
  }
}

}  // namespace conductor
