// PackageCache: the server's packed versions. A version folder (minus models/, evaluation/ and
// errorlogs/) is packed once and the pack reused until the folder's listing changes. Packs are
// named by their SHA-256, which is also the blob id clients FETCH. A large folder is packed on
// the background worker, so that the network thread never stops for it (1 GiB takes ~10 s).
// Not thread-safe: owned by the server's network thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "background_worker.hpp"
#include "conductor/package.hpp"

namespace conductor {

struct PackageBlob {
  std::string sha256;
  std::filesystem::path file;
  std::uint64_t size = 0;
  // The archive's bytes when it is held in memory instead of `file` (a prediction's small
  // inputs, thrown away with the request).
  std::shared_ptr<const std::string> bytes;
  // Keeps `file` while a blob names it, where its owner may drop it meanwhile (a large model's
  // prediction pack): its deleter removes the file.
  std::shared_ptr<const void> keep;
};

// A limit on the bytes blobs hold in memory, shared by threads.
struct MemoryBudget {
  explicit MemoryBudget(std::uint64_t limit) : limit(limit) {}
  const std::uint64_t limit;
  std::atomic<std::uint64_t> used{0};
};

// Takes `bytes` from `budget` when it has room for them; false (nothing taken) when not.
bool try_reserve(MemoryBudget& budget, std::uint64_t bytes);
// `content` held against `budget`, which gives `reserved` (taken by try_reserve) back once the
// last copy of the returned pointer goes.
std::shared_ptr<const std::string> hold_reserved(std::unique_ptr<std::string> content,
                                                 const std::shared_ptr<MemoryBudget>& budget,
                                                 std::uint64_t reserved);

// Packs `entries` into memory when the archive takes at most `max_bytes` and `budget` has room
// for it (counted as the uncompressed tar: headers and padding included; it counts against the
// budget until the last copy of the bytes goes), else into `archive`. For throw-away archives (a
// prediction's inputs): a file to create and remove costs more than packing a small archive on file
// systems slow to create files. Throws what pack() throws.
PackageBlob pack_blob(const std::vector<PackEntry>& entries, const std::filesystem::path& archive,
                      const PackOptions& options, std::uint64_t max_bytes,
                      const std::shared_ptr<MemoryBudget>& budget);

class PackageCache {
 public:
  // Folders holding fewer bytes than this are packed at once, on the calling thread.
  static constexpr std::uint64_t kInlinePackBytes = std::uint64_t{8} << 20;
  // A version's folder is listed again only when its pack was found current longer ago than
  // this, and then on the worker: the server asks for every hand-out, and listing a folder of
  // many thousand files (three stats each) on its network thread would stall it.
  static constexpr std::chrono::milliseconds kRecheckAfter{1000};

  // `dir` holds the packs; it is created when missing. Large folders are packed on `worker`,
  // which must outlive this object.
  PackageCache(std::filesystem::path dir, BackgroundWorker& worker,
               std::chrono::milliseconds recheck_after = kRecheckAfter);

  // The current pack of `folder` for `version`, packing it again only when a file was added,
  // removed, resized or touched. A pack found current is returned without a look at the folder
  // for `recheck_after`; after that the folder is listed again on the worker, and the pack is
  // returned until the listing, once the worker's completion ran, shows a change: the next call
  // lists and packs again. nullptr while the pack is being made in the background
  // (started here when needed); a later call, after the worker's completion ran, returns it.
  // Throws PackageError (e.g. a symlink in the folder) or IoError, for a background pack on
  // every call after it failed until the folder changes.
  const PackageBlob* get(const std::string& version, const std::filesystem::path& folder);

  // A pack by id, or nullptr: what FETCH may read.
  const PackageBlob* find(const std::string& sha256) const;

  // Whether `version` is being packed in the background right now.
  bool is_packing(const std::string& version) const { return packing_.contains(version); }

 private:
  struct Entry {
    std::string fingerprint;
    PackageBlob blob;
    std::filesystem::path folder;
    std::chrono::steady_clock::time_point checked;  // when the folder last matched `fingerprint`
    bool rechecking = false;                        // listed again on the worker right now
    bool changed = false;  // the worker's listing differed: packed again on the next call
  };
  struct Failure {
    std::string fingerprint;
    std::string message;
  };
  // `checked`: when the listing it was packed from was taken.
  const PackageBlob& keep(const std::string& version, const std::filesystem::path& folder,
                          std::string fingerprint, PackageBlob blob,
                          std::chrono::steady_clock::time_point checked);

  std::filesystem::path dir_;
  BackgroundWorker& worker_;
  const std::chrono::milliseconds recheck_after_;
  std::map<std::string, Entry> by_version_;
  std::map<std::string, PackageBlob> by_sha_;
  std::map<std::string, std::string> packing_;  // version -> fingerprint being packed
  std::map<std::string, Failure> failed_;       // version -> its last background pack's error
};

// Top-level folders of a version that are never part of its payload.
inline const std::vector<std::string> kNonPayloadFolders = {"models", "evaluation", "errorlogs"};

}  // namespace conductor
