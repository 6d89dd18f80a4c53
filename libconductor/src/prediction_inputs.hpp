// PredictionInputs: what a model's prediction item unpacks — the model's files, its first model
// file again as model-latest<ext> (the name the original's prediction scripts open), and the
// request's rows as predictiondata.csv — made on the server's background worker.
//
// A request fans out to every model, so this runs once per model per request; the models
// rarely change between requests, the rows always do. So:
// - A small model's inputs (rows up to kMaxRowsForParts, and all within the memory limit) are one
//   plain tar in memory: the model's entries, packed once and kept while its files' stat holds
//   (a tar is a run of entries followed by two zero blocks), followed by the rows' own archive,
//   packed once per request. Each item costs a concatenation and a hash.
// - A large model (its entries beyond the memory limit) goes as an archive of its own, packed
//   once into `packs_dir` and kept while its files' stat holds: content-addressed, so the
//   clients keep it in their caches like a version package, and a second request moves only its
//   rows, which go as the item's inputs (the request's rows archive, packed once).
// - Anything else (large rows of a small model, no room in memory) is packed whole per request
//   as before (pack_blob, zstd where it pays).
// "Large" counts up to 2.5 KiB of tar headers per file beside the files' bytes. The kept
// entries (at most kMaxCachedBytes) are not counted in the MemoryBudget of the inputs handed
// out. Packs are kept up to kMaxPackBytes; a dropped one stays while an item still names it,
// then goes to packs_dir/trash, emptied by the next make(). A request over more large models
// than the packs' limit holds packs them again each time.
//
// Not thread-safe: one object serves the one background worker thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "package_cache.hpp"

namespace conductor {

class PredictionInputs {
 public:
  // Rows up to this size are packed once per request as a part of their own (uncompressed);
  // larger ones go into each small model's archive, where zstd may pay.
  static constexpr std::uint64_t kMaxRowsForParts = std::uint64_t{64} << 10;
  // The small models' packed entries kept for the next request, least recently used dropped.
  static constexpr std::uint64_t kMaxCachedBytes = std::uint64_t{64} << 20;
  // The large models' packs kept in packs_dir, least recently used dropped.
  static constexpr std::uint64_t kMaxPackBytes = std::uint64_t{16} << 30;

  // `packs_dir` is emptied (a crash's leftovers) and created. Throws IoError naming it.
  explicit PredictionInputs(std::filesystem::path packs_dir,
                            std::uint64_t max_cached_bytes = kMaxCachedBytes,
                            std::uint64_t max_pack_bytes = kMaxPackBytes);

  // One request's rows, shared by its models' jobs: prepare() first, then make() per model.
  struct Rows {
    std::filesystem::path file;  // predictiondata.csv in the request's spool folder
    // The rows' own tar when they take at most kMaxRowsForParts.
    std::shared_ptr<const std::string> archive;
    // The rows' archive as the inputs of large models' items, made on first use.
    std::optional<PackageBlob> blob;
  };

  // Writes `csv` to `rows.file` and, for rows of at most kMaxRowsForParts, packs their archive.
  // Throws IoError naming the file.
  static void prepare(Rows& rows, const std::string& csv);

  // What one model's item unpacks, in this order: `model` (a large model's own archive), then
  // `inputs`.
  struct Made {
    std::optional<PackageBlob> model;
    PackageBlob inputs;
  };

  // The inputs of the model in `model_dir` for `rows`. Archives of at most `max_memory_bytes`
  // are held in memory while `budget` has room (held against it until the last copy goes),
  // else written next to `archive` (the whole inputs' file; a large model's rows go to
  // .rows.tar beside it). Throws what list_files() and pack() throw.
  Made make(const std::filesystem::path& model_dir, Rows& rows,
            const std::filesystem::path& archive, std::uint64_t max_memory_bytes,
            const std::shared_ptr<MemoryBudget>& budget);

  // Small models whose packed entries are kept, and their bytes; large models' packs kept.
  std::size_t cached_models() const { return parts_.size(); }
  std::uint64_t cached_bytes() const { return parts_.bytes(); }
  std::size_t kept_packs() const { return packs_.size(); }
  bool is_cached(const std::filesystem::path& model_dir) const {
    return parts_.contains(model_dir.native());
  }
  // How many times a model's entries or pack were made (not taken from what is kept).
  std::uint64_t models_packed() const { return models_packed_; }

 private:
  // Values by model folder, each kept while its files' fingerprint holds, within a byte limit,
  // the least recently used dropped first.
  template <typename Value>
  class Kept {
   public:
    explicit Kept(std::uint64_t max_bytes) : max_bytes_(max_bytes) {}
    // The value kept for `key` while its fingerprint is `print`, else nullptr (a stale one is
    // dropped). Valid until the next keep().
    const Value* find(const std::string& key, const std::string& print);
    // Keeps `value`, which takes `bytes`, dropping the least recently used to make room. A value
    // beyond the limit is not kept.
    void keep(const std::string& key, std::string print, Value value, std::uint64_t bytes);
    std::size_t size() const { return entries_.size(); }
    std::uint64_t bytes() const { return bytes_; }
    bool contains(const std::string& key) const { return entries_.contains(key); }

   private:
    struct Entry {
      std::string fingerprint;
      Value value;
      std::uint64_t bytes;
      std::list<std::string>::iterator use;  // in uses_
    };
    void drop(typename std::unordered_map<std::string, Entry>::iterator it);

    std::unordered_map<std::string, Entry> entries_;
    std::list<std::string> uses_;  // keys, most recently used first
    std::uint64_t bytes_ = 0;
    const std::uint64_t max_bytes_;
  };

  // The model's packed entries, from the cache while its files' fingerprint is `print`;
  // nullptr when they cannot be packed apart (the caller then packs the inputs whole).
  std::shared_ptr<const std::string> model_part(const std::filesystem::path& model_dir,
                                                const std::vector<PackEntry>& entries,
                                                std::string print);
  // A large model's own archive, kept while its files' fingerprint is `print`.
  PackageBlob model_pack(const std::filesystem::path& model_dir,
                         const std::vector<PackEntry>& entries, std::string print);
  // The request's rows as an archive of their own, made once.
  const PackageBlob& rows_blob(Rows& rows, std::uint64_t max_memory_bytes,
                               const std::shared_ptr<MemoryBudget>& budget);

  std::filesystem::path packs_dir_;
  Kept<std::shared_ptr<const std::string>> parts_;  // small models' entries
  Kept<PackageBlob> packs_;                         // large models' archives
  std::uint64_t packs_made_ = 0;
  std::uint64_t models_packed_ = 0;
};

}  // namespace conductor
