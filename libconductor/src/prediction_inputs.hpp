// PredictionInputs: the archive a model's prediction item unpacks — the model's files, its
// first model file again as model-latest<ext> (the name the original's prediction scripts
// open), and the request's rows as predictiondata.csv — made on the server's background worker.
//
// A request fans out to every model, so this runs once per model per request. Small inputs
// (the model's files and the rows together within the memory limit, rows of at most
// kMaxRowsForParts) are not packed per request: a tar is a run of entries followed by two zero
// blocks, so the model's entries, packed once and kept while its folder's listing (names,
// sizes, modification times) stays the same, followed by the rows' own archive, packed once per
// request, are the archive of both. Each item then costs a concatenation and a hash. Larger
// inputs are packed per request as before (pack_blob, zstd where it pays). The kept entries
// (at most kMaxCachedBytes) are not counted in the MemoryBudget of the inputs handed out.
//
// Not thread-safe: one object serves the one background worker thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "package_cache.hpp"

namespace conductor {

class PredictionInputs {
 public:
  // Rows up to this size are packed once per request as a part of their own (uncompressed);
  // larger ones go into each model's archive, where zstd may pay.
  static constexpr std::uint64_t kMaxRowsForParts = std::uint64_t{64} << 10;
  // The models' packed entries kept for the next request, least recently used dropped first.
  static constexpr std::uint64_t kMaxCachedBytes = std::uint64_t{64} << 20;

  explicit PredictionInputs(std::uint64_t max_cached_bytes = kMaxCachedBytes)
      : max_cached_bytes_(max_cached_bytes) {}

  // One request's rows, shared by its models' jobs: prepare() first, then make() per model.
  struct Rows {
    std::filesystem::path file;  // predictiondata.csv in the request's spool folder
    std::string archive;         // the rows' own tar when they take at most kMaxRowsForParts
  };

  // Writes `csv` to `rows.file` and, for rows of at most kMaxRowsForParts, packs their archive.
  // Throws IoError naming the file.
  static void prepare(Rows& rows, const std::string& csv);

  // The inputs of the model in `model_dir` for `rows`: in memory when they take at most
  // `max_memory_bytes` and `budget` has room (held against it until the last copy goes), else
  // packed into `archive`. Throws what list_files() and pack() throw.
  PackageBlob make(const std::filesystem::path& model_dir, const Rows& rows,
                   const std::filesystem::path& archive, std::uint64_t max_memory_bytes,
                   const std::shared_ptr<MemoryBudget>& budget);

  // Models whose packed entries are kept, and their bytes.
  std::size_t cached_models() const { return parts_.size(); }
  std::uint64_t cached_bytes() const { return cached_bytes_; }
  bool is_cached(const std::filesystem::path& model_dir) const {
    return parts_.contains(model_dir.native());
  }
  // How many times a model's entries were packed (not taken from the cache).
  std::uint64_t models_packed() const { return models_packed_; }

 private:
  struct Part {
    std::string fingerprint;
    std::shared_ptr<const std::string> entries;  // the model's tar without its end
    std::list<std::string>::iterator use;        // in uses_
  };

  // The model's packed entries, from the cache while its files' fingerprint is `print`;
  // nullptr when they cannot be packed apart (the caller then packs the inputs whole).
  std::shared_ptr<const std::string> model_part(const std::filesystem::path& model_dir,
                                                const std::vector<PackEntry>& entries,
                                                std::string print);

  std::unordered_map<std::string, Part> parts_;  // by model folder
  std::list<std::string> uses_;                  // model folders, most recently used first
  std::uint64_t cached_bytes_ = 0;
  std::uint64_t models_packed_ = 0;
  const std::uint64_t max_cached_bytes_;
};

}  // namespace conductor
