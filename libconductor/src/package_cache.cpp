#include "package_cache.hpp"

#include <system_error>

#include "conductor/error.hpp"
#include "conductor/package.hpp"
#include "conductor/sha256.hpp"
#include "random_id.hpp"

namespace conductor {

namespace fs = std::filesystem;

namespace {

// Packs `entries` into `dir` under the pack's SHA-256. Touches nothing but the file system, so
// it may run on any thread.
PackageBlob make_pack(const fs::path& dir, const std::string& version,
                      const std::vector<PackEntry>& entries) {
  fs::path staging = dir / ("pack-" + random_uuid() + ".tar");
  // Not synced: the spool is cleared at start-up, so a crash never reads a pack again.
  pack(entries, staging, {.compression = Compression::kAuto, .sync = false});
  PackageBlob blob;
  blob.sha256 = sha256_file(staging);
  blob.file = dir / (blob.sha256 + ".tar");
  std::error_code ec;
  fs::rename(staging, blob.file, ec);
  if (ec) {
    fs::remove(staging, ec);
    throw IoError("cannot store package of version '" + version + "' at '" + blob.file.string() +
                  "': " + ec.message());
  }
  blob.size = fs::file_size(blob.file);
  return blob;
}

}  // namespace

PackageCache::PackageCache(fs::path dir, BackgroundWorker& worker,
                           std::chrono::milliseconds recheck_after)
    : dir_(std::move(dir)), worker_(worker), recheck_after_(recheck_after) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw IoError("cannot create package folder '" + dir_.string() + "': " + ec.message());
}

bool try_reserve(MemoryBudget& budget, std::uint64_t bytes) {
  std::uint64_t used = budget.used.load();
  while (used + bytes <= budget.limit) {
    if (budget.used.compare_exchange_weak(used, used + bytes)) return true;  // else reloaded
  }
  return false;
}

std::shared_ptr<const std::string> hold_reserved(std::unique_ptr<std::string> content,
                                                 const std::shared_ptr<MemoryBudget>& budget,
                                                 std::uint64_t reserved) {
  return std::shared_ptr<const std::string>(content.release(),
                                            [budget, reserved](const std::string* p) {
                                              budget->used -= reserved;
                                              delete p;
                                            });
}

PackageBlob pack_blob(const std::vector<PackEntry>& entries, const fs::path& archive,
                      const PackOptions& options, std::uint64_t max_bytes,
                      const std::shared_ptr<MemoryBudget>& budget) {
  // What the tar holds at most (compression only shrinks it): a 512-byte header per entry,
  // content padded to 512 bytes, the two closing blocks.
  std::uint64_t bytes = 1024;
  for (const PackEntry& entry : entries) {
    const std::uint64_t size = entry.content ? entry.content->size() : fs::file_size(entry.source);
    bytes += 512 + (size + 511) / 512 * 512;
  }
  if (bytes <= max_bytes && try_reserve(*budget, bytes)) {
    std::unique_ptr<std::string> packed;
    try {
      packed = std::make_unique<std::string>(pack_to_memory(entries, options));
    } catch (...) {
      budget->used -= bytes;
      throw;
    }
    auto held = hold_reserved(std::move(packed), budget, bytes);
    return PackageBlob{sha256_hex(*held), archive, held->size(), held, nullptr};
  }
  pack(entries, archive, options);
  return PackageBlob{sha256_file(archive), archive, fs::file_size(archive), nullptr, nullptr};
}

namespace {

// A version folder's payload files and what stands for their content: the listing (names,
// sizes, modification times), hashed; any edit a user makes changes it.
struct Listing {
  std::vector<PackEntry> entries;
  std::string fingerprint;
  std::uint64_t bytes = 0;
};

Listing list_version(const fs::path& folder) {
  Listing result;
  result.entries = list_files(folder, kNonPayloadFolders);
  Sha256 listing;
  for (const auto& entry : result.entries) {
    std::error_code ec;
    auto size = fs::file_size(entry.source, ec);
    auto mtime = fs::last_write_time(entry.source, ec);
    if (!ec) result.bytes += size;
    listing.update(entry.name);
    listing.update("\0", 1);
    listing.update(std::to_string(size) + ":" +
                   std::to_string(mtime.time_since_epoch().count()) + "\n");
  }
  result.fingerprint = listing.finish_hex();
  return result;
}

}  // namespace

const PackageBlob* PackageCache::get(const std::string& version, const fs::path& folder) {
  if (auto it = by_version_.find(version);
      it != by_version_.end() && it->second.folder == folder && !it->second.changed) {
    Entry& entry = it->second;
    if (entry.rechecking || std::chrono::steady_clock::now() - entry.checked < recheck_after_) {
      return &entry.blob;
    }
    // Listed again on the worker; the pack found current goes out until it answers.
    worker_.submit([this, version, folder, print = entry.fingerprint]() {
      bool is_same = false;
      try {
        is_same = list_version(folder).fingerprint == print;
      } catch (...) {
        // Listed again on the next call, which names the reason.
      }
      return BackgroundWorker::Completion([this, version, folder, print, is_same] {
        auto it = by_version_.find(version);
        if (it == by_version_.end() || it->second.folder != folder ||
            it->second.fingerprint != print) {
          return;  // replaced meanwhile
        }
        it->second.rechecking = false;
        if (is_same) {
          it->second.checked = std::chrono::steady_clock::now();
        } else {
          it->second.changed = true;
        }
      });
    });
    entry.rechecking = true;
    return &entry.blob;
  }
  if (packing_.contains(version)) return nullptr;  // its completion comes first
  Listing listed = list_version(folder);
  if (auto it = by_version_.find(version); it != by_version_.end() && it->second.folder == folder &&
                                           it->second.fingerprint == listed.fingerprint) {
    it->second.checked = std::chrono::steady_clock::now();
    it->second.changed = false;
    return &it->second.blob;
  }
  if (auto it = failed_.find(version); it != failed_.end()) {
    if (it->second.fingerprint == listed.fingerprint) throw PackageError(it->second.message);
    failed_.erase(it);
  }
  if (listed.bytes < kInlinePackBytes) {
    return &keep(version, folder, std::move(listed.fingerprint),
                 make_pack(dir_, version, listed.entries), std::chrono::steady_clock::now());
  }
  packing_[version] = listed.fingerprint;
  worker_.submit([this, dir = dir_, version, folder, fingerprint = std::move(listed.fingerprint),
                  entries = std::move(listed.entries)]() -> BackgroundWorker::Completion {
    try {
      PackageBlob blob = make_pack(dir, version, entries);
      return [this, version, folder, fingerprint, blob = std::move(blob)] {
        packing_.erase(version);
        // Current as of the listing it was packed from, taken a while ago: due at once.
        keep(version, folder, fingerprint, blob, {});
      };
    } catch (const Error& e) {
      return [this, version, fingerprint, message = std::string(e.what())] {
        packing_.erase(version);
        failed_[version] = Failure{fingerprint, message};
      };
    }
  });
  return nullptr;
}

const PackageBlob& PackageCache::keep(const std::string& version, const fs::path& folder,
                                      std::string fingerprint, PackageBlob blob,
                                      std::chrono::steady_clock::time_point checked) {
  by_sha_[blob.sha256] = blob;
  auto& entry = by_version_[version];
  entry = Entry{std::move(fingerprint), std::move(blob), folder, checked};
  return entry.blob;
}

const PackageBlob* PackageCache::find(const std::string& sha256) const {
  auto it = by_sha_.find(sha256);
  return it == by_sha_.end() ? nullptr : &it->second;
}

}  // namespace conductor
