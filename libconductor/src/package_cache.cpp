#include "package_cache.hpp"

#include <system_error>

#include "conductor/error.hpp"
#include "conductor/package.hpp"
#include "conductor/sha256.hpp"
#include "random_id.hpp"

namespace conductor {

namespace fs = std::filesystem;

PackageCache::PackageCache(fs::path dir) : dir_(std::move(dir)) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw IoError("cannot create package folder '" + dir_.string() + "': " + ec.message());
}

const PackageBlob& PackageCache::get(const std::string& version, const fs::path& folder) {
  // The listing (names, sizes, modification times) stands for the content: cheap to take on
  // every hand-out, and any edit a user makes changes it.
  auto entries = list_files(folder, kNonPayloadFolders);
  Sha256 listing;
  for (const auto& entry : entries) {
    std::error_code ec;
    auto size = fs::file_size(entry.source, ec);
    auto mtime = fs::last_write_time(entry.source, ec);
    listing.update(entry.name);
    listing.update("\0", 1);
    listing.update(std::to_string(size) + ":" +
                   std::to_string(mtime.time_since_epoch().count()) + "\n");
  }
  std::string fingerprint = listing.finish_hex();
  if (auto it = by_version_.find(version); it != by_version_.end() &&
                                           it->second.fingerprint == fingerprint) {
    return it->second.blob;
  }
  fs::path staging = dir_ / ("pack-" + random_uuid() + ".tar");
  pack(entries, staging);
  PackageBlob blob;
  blob.sha256 = sha256_file(staging);
  blob.file = dir_ / (blob.sha256 + ".tar");
  std::error_code ec;
  fs::rename(staging, blob.file, ec);
  if (ec) {
    fs::remove(staging, ec);
    throw IoError("cannot store package of version '" + version + "' at '" + blob.file.string() +
                  "': " + ec.message());
  }
  blob.size = fs::file_size(blob.file);
  by_sha_[blob.sha256] = blob;
  auto& entry = by_version_[version];
  entry = Entry{fingerprint, blob};
  return entry.blob;
}

const PackageBlob* PackageCache::find(const std::string& sha256) const {
  auto it = by_sha_.find(sha256);
  return it == by_sha_.end() ? nullptr : &it->second;
}

}  // namespace conductor
