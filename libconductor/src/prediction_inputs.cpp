#include "prediction_inputs.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "conductor/error.hpp"
#include "conductor/sha256.hpp"
#include "file_io.hpp"

namespace fs = std::filesystem;

namespace conductor {
namespace {

constexpr std::size_t kTarEnd = 1024;  // the two zero blocks that end a tar

// The model's files, less meta.xml, console.log and a predictiondata.csv of its own (the
// request's rows win), then its first top-level *.h5 again as model-latest.h5 unless it holds
// one.
std::vector<PackEntry> model_entries(const fs::path& model_dir) {
  std::vector<PackEntry> entries;
  std::optional<PackEntry> latest;
  const auto files = list_files(model_dir);
  auto has = [&](const std::string& name) {
    return std::any_of(files.begin(), files.end(),
                       [&](const PackEntry& f) { return f.name == name; });
  };
  for (auto file : files) {
    if (file.name == "meta.xml" || file.name == "console.log" || file.name == "predictiondata.csv")
      continue;
    if (!latest && file.name.find('/') == std::string::npos && file.name.ends_with(".h5") &&
        !has("model-latest" + fs::path(file.name).extension().string())) {
      latest = PackEntry{file.source, "model-latest" + fs::path(file.name).extension().string()};
    }
    entries.push_back(std::move(file));
  }
  if (latest) entries.push_back(*latest);
  return entries;
}

// What stat() says of each entry's file: inode, mode, size, modification and change times (a
// rewrite, a chmod, even one that keeps size and mtime, moves the change time). Sizes are
// summed into `bytes`. nullopt when a file cannot be stat()ed.
std::optional<std::string> fingerprint(const std::vector<PackEntry>& entries,
                                       std::uint64_t& bytes) {
  Sha256 listing;
  bytes = 0;
  for (const PackEntry& entry : entries) {
    struct stat info {};
    if (::stat(entry.source.c_str(), &info) != 0) return std::nullopt;
    bytes += static_cast<std::uint64_t>(info.st_size);
    listing.update(entry.name);
    listing.update("\0", 1);
    listing.update(entry.source.native());
    listing.update("\0", 1);
    const long long fields[] = {static_cast<long long>(info.st_ino),
                                static_cast<long long>(info.st_mode),
                                static_cast<long long>(info.st_size),
                                static_cast<long long>(info.st_mtim.tv_sec),
                                info.st_mtim.tv_nsec,
                                static_cast<long long>(info.st_ctim.tv_sec),
                                info.st_ctim.tv_nsec};
    listing.update(fields, sizeof fields);
  }
  return listing.finish_hex();
}

// An upper bound of the tar entries of files holding `bytes` in all: a header and padding each,
// and a pax extended header each for names or values a plain header cannot hold.
std::uint64_t entries_bound(const std::vector<PackEntry>& entries, std::uint64_t bytes) {
  return bytes + entries.size() * (512 + 511 + 1536);
}

}  // namespace

template <typename Value>
const Value* PredictionInputs::Kept<Value>::find(const std::string& key, const std::string& print) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return nullptr;
  if (it->second.fingerprint != print) {
    drop(it);
    return nullptr;
  }
  uses_.splice(uses_.begin(), uses_, it->second.use);
  return &it->second.value;
}

template <typename Value>
void PredictionInputs::Kept<Value>::keep(const std::string& key, std::string print, Value value,
                                         std::uint64_t bytes) {
  if (auto it = entries_.find(key); it != entries_.end()) drop(it);
  if (bytes > max_bytes_) return;
  while (bytes_ + bytes > max_bytes_ && !uses_.empty()) drop(entries_.find(uses_.back()));
  auto [it, inserted] =
      entries_.emplace(key, Entry{std::move(print), std::move(value), bytes, uses_.end()});
  try {
    uses_.push_front(key);
  } catch (...) {
    entries_.erase(it);
    throw;
  }
  it->second.use = uses_.begin();
  bytes_ += bytes;
}

template <typename Value>
void PredictionInputs::Kept<Value>::drop(
    typename std::unordered_map<std::string, Entry>::iterator it) {
  bytes_ -= it->second.bytes;
  uses_.erase(it->second.use);
  entries_.erase(it);
}

std::shared_ptr<const std::string> PredictionInputs::model_part(
    const fs::path& model_dir, const std::vector<PackEntry>& entries, std::string print) {
  if (auto kept = parts_.find(model_dir.native(), print)) return *kept;
  std::string packed;
  try {
    packed = pack_to_memory(entries, PackOptions{});
  } catch (const Error&) {
    return nullptr;  // packed whole, which names the reason
  }
  ++models_packed_;
  // Whole entries, then exactly the two zero blocks (no padding to a larger block).
  if (packed.size() < kTarEnd || packed.size() % 512 != 0 ||
      packed.find_first_not_of('\0', packed.size() - kTarEnd) != std::string::npos) {
    return nullptr;
  }
  packed.resize(packed.size() - kTarEnd);
  auto part = std::make_shared<const std::string>(std::move(packed));
  parts_.keep(model_dir.native(), std::move(print), part, part->size());
  return part;
}

PredictionInputs::PredictionInputs(fs::path packs_dir, std::uint64_t max_cached_bytes,
                                   std::uint64_t max_pack_bytes)
    : packs_dir_(std::move(packs_dir)), parts_(max_cached_bytes), packs_(max_pack_bytes) {
  std::error_code ec;
  fs::remove_all(packs_dir_, ec);
  fs::create_directories(packs_dir_ / "trash", ec);
  if (ec) throw IoError("cannot create '" + packs_dir_.string() + "': " + ec.message());
}

PackageBlob PredictionInputs::model_pack(const fs::path& model_dir,
                                         const std::vector<PackEntry>& entries, std::string print) {
  // A stale pack is dropped here; its file goes once no item names it.
  if (auto kept = packs_.find(model_dir.native(), print)) return *kept;
  const fs::path file = packs_dir_ / ("model-" + std::to_string(++packs_made_) + ".tar");
  // Goes with the last blob that names it, also when packing fails half-way. That may be on
  // the network thread, where removing gigabytes could stall it: moved aside (a rename), and
  // removed here, on the worker, by the next make().
  std::shared_ptr<const void> keep(nullptr, [file, trash = packs_dir_ / "trash"](const void*) {
    std::error_code ignored;
    fs::rename(file, trash / file.filename(), ignored);
    if (ignored) fs::remove(file, ignored);
  });
  pack(entries, file, {.compression = Compression::kAuto, .sync = false});
  ++models_packed_;
  PackageBlob blob{sha256_file(file), file, fs::file_size(file), nullptr, std::move(keep)};
  packs_.keep(model_dir.native(), std::move(print), blob, blob.size);
  return blob;
}

const PackageBlob& PredictionInputs::rows_blob(Rows& rows, std::uint64_t max_memory_bytes,
                                               const std::shared_ptr<MemoryBudget>& budget) {
  if (!rows.blob) {
    if (rows.archive) {
      rows.blob =
          PackageBlob{sha256_hex(*rows.archive), {}, rows.archive->size(), rows.archive, nullptr};
    } else {
      rows.blob =
          pack_blob({{rows.file, "predictiondata.csv"}}, rows.file.parent_path() / ".rows.tar",
                    {.compression = Compression::kAuto, .sync = false}, max_memory_bytes, budget);
    }
  }
  return *rows.blob;
}

void PredictionInputs::prepare(Rows& rows, const std::string& csv) {
  write_durably(rows.file, csv, false);
  if (csv.size() <= kMaxRowsForParts) {
    rows.archive = std::make_shared<const std::string>(
        pack_to_memory({PackEntry::in_memory("predictiondata.csv", csv)}));
  }
}

PredictionInputs::Made PredictionInputs::make(const fs::path& model_dir, Rows& rows,
                                              const fs::path& archive,
                                              std::uint64_t max_memory_bytes,
                                              const std::shared_ptr<MemoryBudget>& budget) {
  std::error_code ignored;
  for (fs::directory_iterator it(packs_dir_ / "trash", ignored), end; !ignored && it != end;
       it.increment(ignored)) {
    std::error_code each;
    fs::remove(it->path(), each);
  }
  std::vector<PackEntry> entries = model_entries(model_dir);
  std::uint64_t model_bytes = 0;
  std::optional<std::string> print = fingerprint(entries, model_bytes);
  const std::uint64_t model_bound = entries_bound(entries, model_bytes);
  if (print && model_bound > max_memory_bytes) {
    // A large model: its own archive, kept, beside the request's rows.
    Made made;
    made.model = model_pack(model_dir, entries, std::move(*print));
    made.inputs = rows_blob(rows, max_memory_bytes, budget);
    return made;
  }
  const std::uint64_t rows_bytes = rows.archive ? rows.archive->size() : 0;
  // Not packed apart when the whole would not be held in memory anyway.
  if (print && rows.archive && model_bound + rows_bytes <= max_memory_bytes &&
      budget->used.load() + model_bound + rows_bytes <= budget->limit) {
    const std::shared_ptr<const std::string> part =
        model_part(model_dir, entries, std::move(*print));
    const std::uint64_t size = part ? part->size() + rows_bytes : 0;
    if (part && size <= max_memory_bytes && try_reserve(*budget, size)) {
      std::unique_ptr<std::string> bytes;
      try {
        bytes = std::make_unique<std::string>();
        bytes->reserve(size);
        bytes->append(*part).append(*rows.archive);
      } catch (...) {
        budget->used -= size;
        throw;
      }
      auto held = hold_reserved(std::move(bytes), budget, size);
      return Made{std::nullopt, PackageBlob{sha256_hex(*held), archive, size, held, nullptr}};
    }
  }
  entries.push_back({rows.file, "predictiondata.csv"});
  // Not synced: a prediction's inputs are thrown away with its request, and the spool is
  // cleared at start-up.
  return Made{std::nullopt,
              pack_blob(entries, archive, {.compression = Compression::kAuto, .sync = false},
                        max_memory_bytes, budget)};
}

}  // namespace conductor
