// PackageCache: the server's packed versions. A version folder (minus models/, evaluation/ and
// errorlogs/) is packed once and the pack reused until the folder's listing changes. Packs are
// named by their SHA-256, which is also the blob id clients FETCH. Not thread-safe: owned by
// the server's network thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace conductor {

struct PackageBlob {
  std::string sha256;
  std::filesystem::path file;
  std::uint64_t size = 0;
};

class PackageCache {
 public:
  // `dir` holds the packs; it is created when missing.
  explicit PackageCache(std::filesystem::path dir);

  // The pack of `folder` for `version`, packing it again only when a file was added, removed,
  // resized or touched. Throws PackageError (e.g. a symlink in the folder) or IoError.
  const PackageBlob& get(const std::string& version, const std::filesystem::path& folder);

  // A pack by id, or nullptr: what FETCH may read.
  const PackageBlob* find(const std::string& sha256) const;

 private:
  struct Entry {
    std::string fingerprint;
    PackageBlob blob;
  };
  std::filesystem::path dir_;
  std::map<std::string, Entry> by_version_;
  std::map<std::string, PackageBlob> by_sha_;
};

// Top-level folders of a version that are never part of its payload.
inline const std::vector<std::string> kNonPayloadFolders = {"models", "evaluation", "errorlogs"};

}  // namespace conductor
