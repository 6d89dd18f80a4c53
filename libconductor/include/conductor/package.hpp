// Packages: a version folder (or a result folder) as one tar archive, optionally zstd
// compressed, and the guarded extraction of such archives received from a peer.
// Free functions over values; each call owns its own archive handle, so concurrent calls on
// different paths are safe.
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

// One file to pack: where its bytes come from and the name it gets inside the archive
// ('/'-separated, relative, no "." or ".." components).
struct PackEntry {
  PackEntry() = default;
  PackEntry(std::filesystem::path source, std::string name)
      : source(std::move(source)), name(std::move(name)) {}
  // An entry whose bytes are in memory (a console log kept there): mode 0644, the time of
  // packing.
  static PackEntry in_memory(std::string name, std::string content) {
    PackEntry entry({}, std::move(name));
    entry.content = std::move(content);
    return entry;
  }

  std::filesystem::path source;
  std::string name;
  std::optional<std::string> content;  // when set, the bytes packed; `source` is not read

  friend bool operator==(const PackEntry&, const PackEntry&) = default;
};

// The regular files under `root`, recursively, named relative to it and sorted by name.
// Top-level entries whose name is in `exclude_top_level` (e.g. "models", "errorlogs") are
// skipped with everything below them. Folders become implicit: an empty folder is not listed.
// Throws PackageError naming the path of a symlink, socket, fifo or device (packages hold
// regular files and folders only), IoError when `root` is not a readable folder.
std::vector<PackEntry> list_files(const std::filesystem::path& root,
                                  const std::vector<std::string>& exclude_top_level = {});

// kAuto: zstd only where it pays: when a sample of the content (up to 128 KiB from each of the
// 8 largest files) compresses to at most kWorthwhileRatio of its size at zstd's fastest level.
// Training data (CSV, text) typically shrinks 3-10 times; models (float weights) and
// already-compressed files do not, and compressing them would only cost time.
enum class Compression { kNone, kZstd, kAuto };
inline constexpr double kWorthwhileRatio = 0.8;

struct PackOptions {
  Compression compression = Compression::kNone;
  int level = 3;  // zstd level; ignored for kNone
  // fsync the archive before it takes its name, so a crash cannot leave a complete name over
  // incomplete data. Off for throw-away archives (a spool that is cleared at start-up, inputs
  // that are packed again when lost): on ext4 the fsync costs more than packing a small archive.
  bool sync = true;
};

struct PackStats {
  std::uint64_t entries = 0;
  std::uint64_t bytes_in = 0;   // file content read
  std::uint64_t bytes_out = 0;  // size of the archive written
  Compression compression = Compression::kNone;  // what was used: kNone or kZstd
};

// Writes a tar (pax restricted: ustar unless a name or size needs pax headers) holding
// `entries` in the given order to `archive`. Writes `archive`.part and renames it, so
// `archive` is either complete or untouched; file content is streamed, never whole in memory.
// Entry modes are 0644, or 0755 when the source has any execute bit.
// Throws PackageError when an entry name is not a clean relative name or repeats, a source is
// not a regular file (symlinks are not followed) or changes size while being read, or the
// compression level is refused; IoError when a file cannot be read or the archive written.
// Leaves no partial file behind.
PackStats pack(const std::vector<PackEntry>& entries, const std::filesystem::path& archive,
               const PackOptions& options = {});

// pack() into memory: the archive's bytes, nothing written to disk. For archives small enough
// to hold (a short job's result, which the client keeps in memory until the server has it).
// Throws what pack() throws.
std::string pack_to_memory(const std::vector<PackEntry>& entries, const PackOptions& options = {});

// list_files(root, exclude_top_level) then pack(). Throws what those throw.
PackStats pack_directory(const std::filesystem::path& root, const std::filesystem::path& archive,
                         const std::vector<std::string>& exclude_top_level = {},
                         const PackOptions& options = {});

// Archive bytes that arrive over time (a result still being uploaded), read in order once.
class ArchiveStream {
 public:
  virtual ~ArchiveStream() = default;
  // The next bytes, waiting until there are some; they stay valid until the next call. An
  // empty view: the archive ended. May throw to abandon the read (the reader then fails with
  // that exception, and an extraction removes what it created).
  virtual std::string_view next() = 0;
};

// Where an archive to read comes from: a file (a path converts implicitly), bytes in memory
// that must outlive the call, or a stream read while it arrives; with a name for messages.
class ArchiveSource {
 public:
  ArchiveSource(std::filesystem::path path) : name_(std::move(path)) {}  // NOLINT: implicit
  static ArchiveSource in_memory(std::string_view bytes, std::filesystem::path name) {
    ArchiveSource source(std::move(name));
    source.bytes_ = bytes;
    source.is_in_memory_ = true;
    return source;
  }
  // `stream` must outlive the call.
  static ArchiveSource from_stream(ArchiveStream& stream, std::filesystem::path name) {
    ArchiveSource source(std::move(name));
    source.stream_ = &stream;
    return source;
  }
  const std::filesystem::path& name() const { return name_; }
  bool is_in_memory() const { return is_in_memory_; }
  std::string_view bytes() const { return bytes_; }
  ArchiveStream* stream() const { return stream_; }

 private:
  std::filesystem::path name_;
  std::string_view bytes_;
  bool is_in_memory_ = false;
  ArchiveStream* stream_ = nullptr;
};

struct ExtractLimits {
  std::uint64_t max_entries = 100000;
  std::uint64_t max_total_bytes = 16ull << 30;
  std::uint64_t max_file_bytes = 16ull << 30;
  // Refuses (NoSpaceError) to write what would leave less than this many bytes free on the
  // destination's file system (what an unprivileged user may still use, statvfs' f_bavail):
  // judged before each file's data and each block written, from the free space measured at
  // the start and again after every 64 MiB written. An archive that unpacks to more than the
  // whole file system holds is refused with a plain IoError: no wait makes room for it. A
  // write that fails with ENOSPC or EDQUOT throws NoSpaceError too. 0: not checked.
  std::uint64_t min_free_bytes = 0;
};

// Whether `head`, the first bytes of an archive (at least kPlainTarHeadBytes of them), starts an
// uncompressed tar: one whose extraction cannot write more bytes than the archive holds. A zstd
// or gzip archive may unpack to thousands of times its size.
inline constexpr std::size_t kPlainTarHeadBytes = 512;
bool is_plain_tar(std::string_view head);

struct ExtractStats {
  std::uint64_t entries = 0;       // every entry, folders included
  std::uint64_t bytes = 0;         // file content written
  // Of `bytes`, those copied inside the kernel straight from the archive file
  // (copy_file_range): a plain tar read from a file without a hash to check, files of 64 KiB
  // and more.
  std::uint64_t copied_bytes = 0;
  std::vector<std::string> files;  // regular files, in archive order, named as list_files()
                                   // names them: relative, "/"-separated, no "." parts
  // The files below ExtractOptions::held_folder, read into memory instead of written.
  std::map<std::string, std::string> held;
};

struct ExtractOptions {
  // Entries below the top-level folder `held_folder` (".conductor", say) are not written, and
  // the folder is not created: of the files named in `held_files`, the last `held_max_bytes` of
  // each go to ExtractStats::held (cut to start at a whole line, as read_verified() does); the
  // others' bytes are read (and hashed) and dropped. Empty: everything is written.
  std::string held_folder;
  std::set<std::string> held_files;
  std::uint64_t held_max_bytes = std::uint64_t{64} << 20;
  // Names of regular files directly in `destination` (an item's left-overs) that may be
  // rewritten in place instead of created: a name the archive holds at the top level is
  // rewritten (when it is still a regular file with one link) and taken out of the
  // set. Reusing the inode (and the blocks the new content still fills: the file is overwritten,
  // then cut to its new size) spares the file system allocations, which on some cost more than
  // writing a small file. A rewritten file counts as created: a refusal removes it.
  std::set<std::string>* reusable = nullptr;
  // Each file is fsynced before it is closed, and once every entry is in place (the hash
  // checked), each folder below `destination` that received an entry: what was written
  // survives a crash without a second pass that opens it all again. `destination`'s own
  // list of entries is left for the caller to sync, who usually adds to it (commit_model).
  bool sync = false;
};

// Extracts a tar, uncompressed or zstd or gzip compressed, into the existing folder
// `destination`. Only regular files and folders are accepted; names are resolved below
// `destination` without following any symlink, and files are created, never overwritten.
// Files get mode 0644, or 0755 when the archive gave any execute bit.
// Throws PackageError naming the entry and the reason ("archive entry '../x' refused: climbs
// out of the destination") for an absolute name, a ".." component, a symlink, hardlink,
// device, fifo or sparse entry, a name that already exists as a file, more entries or bytes
// (counted from data actually read) than `limits` allow, or an archive that is not a tar or
// is corrupt or truncated; IoError when the archive cannot be opened, `destination` is not a
// folder, or writing fails. On any throw, every file and folder this call created is removed
// again, so `destination` is left as it was found.
ExtractStats extract(const ArchiveSource& archive, const std::filesystem::path& destination,
                     const ExtractLimits& limits = {}, const ExtractOptions& options = {});

// extract(), checking on the way that the archive file's SHA-256 is `expected_sha256` (64
// lower-case hex digits): the hash covers every byte of the file, any after the tar's end
// included, and is taken from the bytes extraction reads, so the file is read once. Throws
// PackageError "archive 'a' refused: hash mismatch: expected <hex>, read <hex>" when the bytes
// differ, also in place of any other refusal the damaged bytes led to (a corrupt entry, a
// limit); then, as on any throw, every file and folder this call created is removed again.
// Otherwise throws what extract() throws.
ExtractStats extract_verified(const ArchiveSource& archive,
                              const std::filesystem::path& destination,
                              const std::string& expected_sha256, const ExtractLimits& limits = {},
                              const ExtractOptions& options = {});

// Reads the regular files named in `wanted` (names as list_files() gives them) out of the
// archive into memory, the last `max_bytes` of each (where a log's verdict is; a file cut there
// starts at its first whole line), writing nothing:
// for a result whose few small files are all that is needed (a prediction's console log and
// output). Checks the archive's SHA-256 and judges every entry as extract_verified() does (the same
// refusals and precedence of a hash mismatch; limits.max_entries, max_file_bytes and
// max_total_bytes apply to every entry's data, read or skipped). Returns name -> content for the
// wanted files the archive holds.
std::map<std::string, std::string> read_verified(const ArchiveSource& archive,
                                                 const std::string& expected_sha256,
                                                 const std::set<std::string>& wanted,
                                                 std::uint64_t max_bytes,
                                                 const ExtractLimits& limits = {});

}  // namespace conductor
