#include "blob_cache.hpp"

#include <algorithm>
#include <system_error>
#include <utility>

#include "conductor/error.hpp"

namespace conductor {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kArchiveExtension = ".tar";
constexpr std::string_view kPartExtension = ".part";

void check_blob_id(const std::string& blob) {
  if (!BlobCache::is_blob_id(blob)) {
    throw PackageError("blob id '" + blob.substr(0, 80) +
                       "' refused: a package is named by its SHA-256 in 64 lowercase hex digits");
  }
}

// The file's modification time is the archive's last use: it survives a restart of the client.
void mark_used(const fs::path& file) {
  std::error_code ec;
  fs::last_write_time(file, fs::file_time_type::clock::now(), ec);
}

}  // namespace

BlobCache::BlobCache(fs::path dir, std::uint64_t capacity_bytes)
    : dir_(std::move(dir)), capacity_bytes_(capacity_bytes) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw IoError("cannot create cache folder '" + dir_.string() + "': " + ec.message());
  struct Found {
    fs::file_time_type used;
    std::string blob;
    std::uint64_t size;
  };
  std::vector<Found> found;
  fs::directory_iterator it(dir_, ec), end;
  if (ec) throw IoError("cannot list cache folder '" + dir_.string() + "': " + ec.message());
  for (; it != end; it.increment(ec)) {
    const fs::path& path = it->path();
    const std::string stem = path.stem().string();
    if (!is_blob_id(stem) || !it->is_regular_file(ec)) continue;
    if (path.extension() == kPartExtension) {
      // Only one client uses the folder (its lock), so no download of this run is under way.
      fs::remove(path, ec);
    } else if (path.extension() == kArchiveExtension) {
      std::error_code size_ec, time_ec;
      auto size = it->file_size(size_ec);
      auto used = it->last_write_time(time_ec);
      if (!size_ec && !time_ec) found.push_back({used, stem, size});
    }
  }
  if (ec) throw IoError("cannot list cache folder '" + dir_.string() + "': " + ec.message());
  std::sort(found.begin(), found.end(),
            [](const Found& a, const Found& b) { return a.used < b.used; });
  for (const auto& archive : found) {
    entries_[archive.blob] = Entry{archive.size, ++use_clock_};
    size_bytes_ += archive.size;
  }
  evict_to_fit(0);
}

bool BlobCache::is_blob_id(std::string_view blob) noexcept {
  return blob.size() == 64 && std::all_of(blob.begin(), blob.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::optional<fs::path> BlobCache::find(const std::string& blob) {
  check_blob_id(blob);
  auto it = entries_.find(blob);
  if (it == entries_.end()) return std::nullopt;
  fs::path file = path_of(blob);
  std::error_code ec;
  if (fs::file_size(file, ec) != it->second.size || ec) {
    // Removed or changed by someone else: no longer the archive the hash names.
    fs::remove(file, ec);
    forget(blob);
    return std::nullopt;
  }
  it->second.last_use = ++use_clock_;
  mark_used(file);
  return file;
}

fs::path BlobCache::reserve(const std::string& blob, std::uint64_t size) {
  check_blob_id(blob);
  evict_to_fit(size);
  return part_path(blob);
}

fs::path BlobCache::commit(const std::string& blob) {
  check_blob_id(blob);
  const fs::path part = part_path(blob);
  const fs::path file = path_of(blob);
  std::error_code ec;
  const auto size = fs::file_size(part, ec);
  if (ec) throw IoError("cannot take '" + part.string() + "' into the cache: " + ec.message());
  fs::rename(part, file, ec);
  if (ec) {
    throw IoError("cannot move '" + part.string() + "' to '" + file.string() +
                  "': " + ec.message());
  }
  forget(blob);  // a re-download of an archive the cache lost track of replaces it
  entries_[blob] = Entry{size, ++use_clock_};
  size_bytes_ += size;
  mark_used(file);
  evict_to_fit(0);
  return file;
}

void BlobCache::abandon(const std::string& blob) noexcept {
  if (!is_blob_id(blob)) return;
  std::error_code ec;
  fs::remove(part_path(blob), ec);
}

fs::path BlobCache::path_of(const std::string& blob) const {
  check_blob_id(blob);
  return dir_ / (blob + std::string(kArchiveExtension));
}

void BlobCache::set_in_use(const std::vector<std::string>& blobs) {
  in_use_ = std::set<std::string>(blobs.begin(), blobs.end());
  evict_to_fit(0);
}

void BlobCache::evict_to_fit(std::uint64_t extra) {
  while (size_bytes_ + extra > capacity_bytes_) {
    auto victim = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (in_use_.contains(it->first)) continue;
      if (victim == entries_.end() || it->second.last_use < victim->second.last_use) victim = it;
    }
    if (victim == entries_.end()) return;  // only archives in use are left: they stay
    std::error_code ec;
    fs::remove(path_of(victim->first), ec);
    forget(victim->first);
  }
}

void BlobCache::forget(const std::string& blob) {
  auto it = entries_.find(blob);
  if (it == entries_.end()) return;
  size_bytes_ -= it->second.size;
  entries_.erase(it);
}

fs::path BlobCache::part_path(const std::string& blob) const {
  return dir_ / (blob + std::string(kPartExtension));
}

}  // namespace conductor
