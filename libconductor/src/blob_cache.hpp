// BlobCache: the client's package archives, named by their SHA-256 (<blob>.tar in one folder),
// bounded in bytes and evicted least recently used; a download in progress is <blob>.part
// beside them. Archives marked in use are never evicted. Not thread-safe: owned by the
// client's network thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace conductor {

class BlobCache {
 public:
  // Opens `dir` (created when missing): removes the *.part files of downloads an earlier run
  // abandoned, takes the archives in as used in the order of their modification times, and
  // evicts down to `capacity_bytes`. Files with other names are left alone and not counted.
  // Throws IoError when the folder cannot be created or listed.
  BlobCache(std::filesystem::path dir, std::uint64_t capacity_bytes);
  BlobCache(const BlobCache&) = delete;
  BlobCache& operator=(const BlobCache&) = delete;

  // 64 lowercase hex digits: the only names the cache turns into paths, since blob ids arrive
  // from the network.
  static bool is_blob_id(std::string_view blob) noexcept;

  // The cached archive, now the most recently used; nullopt when it is not cached (also when
  // its file was removed behind the cache's back, which the cache then forgets).
  // Throws PackageError for a malformed blob id.
  std::optional<std::filesystem::path> find(const std::string& blob);

  // Makes room for a download of `size` bytes by evicting the least recently used archives not
  // in use (as many as needed, or all of them), and returns where to write it: <blob>.part.
  // Throws PackageError for a malformed blob id.
  std::filesystem::path reserve(const std::string& blob, std::uint64_t size);

  // Takes the finished <blob>.part in as <blob>.tar, the most recently used, evicting others
  // that no longer fit; returns its path. Throws PackageError for a malformed blob id, IoError
  // when the file is missing or cannot be renamed.
  std::filesystem::path commit(const std::string& blob);

  // Removes <blob>.part: a download given up. Ignores a malformed id and a missing file.
  void abandon(const std::string& blob) noexcept;

  // Where the archive of `blob` lives when cached (no check, no change of its use).
  std::filesystem::path path_of(const std::string& blob) const;

  // The archives the running item needs, which are never evicted, replacing the previous set;
  // then evicts what no longer fits among the others. An empty list releases them all.
  void set_in_use(const std::vector<std::string>& blobs);

  std::uint64_t size_bytes() const noexcept { return size_bytes_; }  // cached archives only
  std::uint64_t capacity_bytes() const noexcept { return capacity_bytes_; }
  std::size_t count() const noexcept { return entries_.size(); }
  bool contains(const std::string& blob) const { return entries_.contains(blob); }

 private:
  struct Entry {
    std::uint64_t size = 0;
    std::uint64_t last_use = 0;  // a tick of use_clock_, larger is more recent
  };

  // Evicts least recently used archives not in use until `extra` more bytes fit.
  void evict_to_fit(std::uint64_t extra);
  void forget(const std::string& blob);
  std::filesystem::path part_path(const std::string& blob) const;

  std::filesystem::path dir_;
  std::uint64_t capacity_bytes_;
  std::uint64_t size_bytes_ = 0;
  std::uint64_t use_clock_ = 0;
  std::map<std::string, Entry> entries_;
  std::set<std::string> in_use_;
};

}  // namespace conductor
