#include "result_receiver.hpp"

#include <cstring>
#include <fstream>
#include <sstream>

#include "conductor/error.hpp"
#include "conductor/package.hpp"

namespace conductor {

namespace fs = std::filesystem;

namespace {

// Results bigger than this are refused outright (a model of many GB is fine).
constexpr std::uint64_t kMaxResultBytes = 64ull << 30;
// A console log above this keeps only its end in console.log / the error log.
constexpr std::uintmax_t kMaxConsoleBytes = 64ull << 20;

bool is_hex_sha256(const std::string& text) {
  return text.size() == 64 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

ResultReceiver::ResultReceiver(AssetStore& store, std::uint32_t chunk_size, int window,
                               BackgroundWorker& worker, FinishedHandler on_finished)
    : store_(store),
      chunk_size_(chunk_size),
      window_(window),
      worker_(worker),
      on_finished_(std::move(on_finished)) {
  fs::create_directories(store_.spool_dir() / "incoming");
  fs::create_directories(store_.spool_dir() / "staging");
  fs::create_directories(store_.spool_dir() / "live");
}

std::vector<protocol::Pull> ResultReceiver::begin(const std::string& client, const WorkItem& item,
                                                  const protocol::ResultOffer& offer,
                                                  std::set<std::string> read_files,
                                                  const zmq::message_t* inline_archive) {
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
      earlier.last_activity = std::chrono::steady_clock::now();
      std::vector<protocol::Pull> pulls;
      request_more(earlier, pulls);
      return pulls;
    }
    discard(it);
  }
  Upload upload{client,
                item,
                offer,
                std::nullopt,
                {},
                0,
                0,
                std::chrono::steady_clock::now(),
                std::move(read_files)};
  if (offer.size <= kMemoryResultBytes && memory_bytes_ + offer.size <= kMaxMemoryBytes) {
    upload.memory.resize(offer.size);
    memory_bytes_ += offer.size;
  } else {
    upload.file.emplace(store_.spool_dir() / "incoming" / (item.id + ".part"));
  }
  auto [it, inserted] = uploads_.try_emplace(item.id, std::move(upload));
  if (inline_archive != nullptr) {
    return receive(client, protocol::Upload{item.id, offer.attempt, 0}, *inline_archive);
  }
  std::vector<protocol::Pull> pulls;
  request_more(it->second, pulls);
  return pulls;
}

std::vector<protocol::Pull> ResultReceiver::receive(const std::string& client,
                                                    const protocol::Upload& upload,
                                                    const zmq::message_t& payload) {
  auto it = uploads_.find(upload.item);
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
  // Only the write: the hash is checked when the whole file is extracted (finish()).
  if (current.file) {
    current.file->write_at(current.received, payload.data(), payload.size());
  } else {
    std::memcpy(current.memory.data() + current.received, payload.data(), payload.size());
  }
  current.received += payload.size();
  current.last_activity = std::chrono::steady_clock::now();
  std::vector<protocol::Pull> pulls;
  if (current.received < current.offer.size) {
    request_more(current, pulls);
    return pulls;
  }
  if (current.item.type == WorkType::kTraining) {
    std::error_code ec;
    fs::remove(store_.spool_dir() / "live" / (current.item.id + ".log"), ec);
  }
  auto complete = std::make_shared<Upload>(std::move(current));
  uploads_.erase(it);
  if (complete->offer.size < kInlineFinishBytes) {
    Finished done = finish(store_.spool_dir(), *complete, false);
    release_memory(*complete);
    on_finished_(client, std::move(done));
    return pulls;
  }
  finishing_.insert(complete->item.id);
  worker_.submit([this, spool = store_.spool_dir(), complete] {
    Finished done = finish(spool, *complete, true);
    return [this, complete, done = std::move(done)]() mutable {
      finishing_.erase(complete->item.id);
      release_memory(*complete);
      on_finished_(complete->client, std::move(done));
    };
  });
  return pulls;
}

void ResultReceiver::request_more(Upload& upload, std::vector<protocol::Pull>& pulls) {
  const std::uint64_t window_bytes = static_cast<std::uint64_t>(window_) * chunk_size_;
  while (upload.requested < upload.offer.size && upload.requested - upload.received < window_bytes) {
    auto length = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(chunk_size_, upload.offer.size - upload.requested));
    pulls.push_back({upload.item.id, upload.offer.attempt, upload.requested, length});
    upload.requested += length;
  }
}

ResultReceiver::Finished ResultReceiver::finish(const fs::path& spool, const Upload& upload,
                                                bool sync) {
  Finished done{upload.item, upload.offer, {}, {}, {}, {}};
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
      done.files = read_verified(source, upload.offer.sha256, wanted, kMaxReadBytes,
                                 ExtractLimits{100000, kMaxResultBytes, kMaxResultBytes});
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
  done.staged = spool / "staging" /
                (upload.item.id + "-" + std::to_string(upload.offer.attempt));
  fs::remove_all(done.staged, ec);
  try {
    fs::create_directories(done.staged);
    // A hash mismatch is refused here too, and takes precedence over what the damaged bytes
    // would otherwise have caused. The console log is read into memory, never written here:
    // commit_model writes it where it belongs. Nothing else under .conductor/ is kept.
    ExtractStats stats = extract_verified(
        source, done.staged, upload.offer.sha256,
        ExtractLimits{100000, kMaxResultBytes, kMaxResultBytes},
        ExtractOptions{std::string(kConductorFolder), {kConsoleLogEntry}, kMaxConsoleBytes});
    if (auto console = stats.held.find(kConsoleLogEntry); console != stats.held.end()) {
      done.console_log = std::move(console->second);
    }
    // Off the network thread, the fsync that commit_model needs costs nothing there later.
    if (sync) sync_tree(done.staged);
  } catch (const std::exception& e) {  // Error, or std::filesystem_error from the folder
    done.error = e.what();
    fs::remove_all(done.staged, ec);
    done.staged.clear();
    remove_part();
    return done;
  }
  remove_part();
  return done;
}

void ResultReceiver::release_memory(const Upload& upload) {
  if (!upload.file) memory_bytes_ -= upload.offer.size;
}

void ResultReceiver::discard(std::map<std::string, Upload>::iterator upload) {
  release_memory(upload->second);
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
  std::ofstream out(store_.spool_dir() / "live" / (item_id + ".log"), std::ios::app);
  for (const auto& line : lines) out << line << '\n';
}

}  // namespace conductor
