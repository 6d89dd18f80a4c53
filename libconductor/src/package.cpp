#include "conductor/package.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string_view>
#include <system_error>
#include <utility>

#include "conductor/error.hpp"
#include "conductor/sha256.hpp"
#include "file_io.hpp"

namespace conductor {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kCopyBlockSize = std::size_t{1} << 20;
constexpr std::size_t kArchiveReadBlockSize = std::size_t{64} << 10;

using WriteArchive = std::unique_ptr<archive, decltype(&archive_write_free)>;
using ReadArchive = std::unique_ptr<archive, decltype(&archive_read_free)>;
using EntryHandle = std::unique_ptr<archive_entry, decltype(&archive_entry_free)>;

std::string quoted(const fs::path& path) { return "'" + path.string() + "'"; }

std::string errno_text() { return std::strerror(errno); }

std::string archive_text(archive* handle) {
  const char* text = archive_error_string(handle);
  return text != nullptr ? text : "unknown libarchive error";
}

// A pack name is stored verbatim, so it must already be the canonical form extract() accepts.
bool is_clean_name(std::string_view name) {
  if (name.empty() || name.front() == '/' || name.back() == '/') return false;
  std::size_t start = 0;
  while (start <= name.size()) {
    const std::size_t end = std::min(name.find('/', start), name.size());
    const std::string_view part = name.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

// ---- packing ---------------------------------------------------------------------------------

// Removes the half-written archive unless the rename made it final.
class PartFile {
 public:
  explicit PartFile(fs::path path) : path_(std::move(path)) {}
  ~PartFile() {
    if (!is_committed_) {
      std::error_code ignored;
      fs::remove(path_, ignored);
    }
  }
  PartFile(const PartFile&) = delete;
  PartFile& operator=(const PartFile&) = delete;
  void commit() { is_committed_ = true; }

 private:
  fs::path path_;
  bool is_committed_ = false;
};

void write_header(archive* writer, const std::string& name, mode_t mode, std::int64_t size,
                  std::int64_t mtime) {
  EntryHandle header(archive_entry_new(), &archive_entry_free);
  archive_entry_set_pathname(header.get(), name.c_str());
  archive_entry_set_filetype(header.get(), AE_IFREG);
  archive_entry_set_perm(header.get(), mode);
  archive_entry_set_size(header.get(), size);
  archive_entry_set_mtime(header.get(), mtime, 0);
  if (archive_write_header(writer, header.get()) != ARCHIVE_OK) {
    throw PackageError("cannot write the header of pack entry '" + name +
                       "': " + archive_text(writer));
  }
}

void write_content(archive* writer, const PackEntry& entry, PackStats& stats) {
  const std::string& content = *entry.content;
  write_header(writer, entry.name, 0644, static_cast<std::int64_t>(content.size()),
               ::time(nullptr));
  if (!content.empty() && archive_write_data(writer, content.data(), content.size()) !=
                              static_cast<la_ssize_t>(content.size())) {
    throw IoError("cannot write pack entry '" + entry.name + "': " + archive_text(writer));
  }
  stats.bytes_in += content.size();
  ++stats.entries;
}

void write_entry(archive* writer, const PackEntry& entry, std::span<char> block, PackStats& stats) {
  if (entry.content) {
    write_content(writer, entry, stats);
    return;
  }
  // O_NONBLOCK keeps a fifo from blocking the open; it changes nothing for regular files.
  UniqueFd in(::open(entry.source.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!in.is_open()) {
    if (errno == ELOOP) {
      throw PackageError("pack source " + quoted(entry.source) + " refused: is a symlink");
    }
    throw IoError("cannot open pack source " + quoted(entry.source) + ": " + errno_text());
  }
  struct stat info {};
  if (::fstat(in.get(), &info) != 0) {
    throw IoError("cannot stat pack source " + quoted(entry.source) + ": " + errno_text());
  }
  if (!S_ISREG(info.st_mode)) {
    throw PackageError("pack source " + quoted(entry.source) +
                       " refused: packages hold regular files only");
  }

  write_header(writer, entry.name, (info.st_mode & 0111) != 0 ? 0755 : 0644, info.st_size,
               info.st_mtim.tv_sec);

  auto remaining = static_cast<std::uint64_t>(info.st_size);
  while (remaining > 0) {
    const std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(remaining, block.size()));
    const ssize_t got = ::read(in.get(), block.data(), want);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw IoError("cannot read pack source " + quoted(entry.source) + ": " + errno_text());
    }
    if (got == 0) {
      throw PackageError("pack source " + quoted(entry.source) + " refused: shrank while packing");
    }
    if (archive_write_data(writer, block.data(), static_cast<std::size_t>(got)) != got) {
      throw IoError("cannot write pack entry '" + entry.name + "': " + archive_text(writer));
    }
    remaining -= static_cast<std::uint64_t>(got);
    stats.bytes_in += static_cast<std::uint64_t>(got);
  }
  // The header already promised st_size bytes; a file still growing would be cut silently.
  char probe = 0;
  ssize_t extra = 0;
  do {
    extra = ::read(in.get(), &probe, 1);
  } while (extra < 0 && errno == EINTR);
  if (extra > 0) {
    throw PackageError("pack source " + quoted(entry.source) + " refused: grew while packing");
  }
  ++stats.entries;
}

// The archive goes to `fd`, or appended to `*memory` when that is set.
WriteArchive open_writer(int fd, std::string* memory, const fs::path& archive_path,
                         const PackOptions& options) {
  WriteArchive writer(archive_write_new(), &archive_write_free);
  if (!writer) throw std::bad_alloc();
  if (archive_write_set_format_pax_restricted(writer.get()) != ARCHIVE_OK) {
    throw PackageError("cannot select the tar format for " + quoted(archive_path) + ": " +
                       archive_text(writer.get()));
  }
  // Names are Linux byte strings. Left to convert them to UTF-8 through the locale, libarchive
  // 3.6.2 refuses every non-ASCII name under the C locale.
  if (archive_write_set_format_option(writer.get(), "pax", "hdrcharset", "BINARY") != ARCHIVE_OK) {
    throw PackageError("cannot keep names byte for byte in " + quoted(archive_path) + ": " +
                       archive_text(writer.get()));
  }
  if (options.compression == Compression::kZstd) {
    if (archive_write_add_filter_zstd(writer.get()) != ARCHIVE_OK) {
      throw PackageError("cannot enable zstd for " + quoted(archive_path) + ": " +
                         archive_text(writer.get()));
    }
    const std::string level = std::to_string(options.level);
    if (archive_write_set_filter_option(writer.get(), "zstd", "compression-level", level.c_str()) !=
        ARCHIVE_OK) {
      throw PackageError("zstd compression level " + level + " refused for " +
                         quoted(archive_path) + ": " + archive_text(writer.get()));
    }
  }
  // Without this, tar pads its last block to 10 KiB, which is only useful for tape drives.
  archive_write_set_bytes_in_last_block(writer.get(), 1);
  const auto append = [](archive*, void* target, const void* data, std::size_t size) -> la_ssize_t {
    static_cast<std::string*>(target)->append(static_cast<const char*>(data), size);
    return static_cast<la_ssize_t>(size);
  };
  const int opened = memory != nullptr ? archive_write_open2(writer.get(), memory, nullptr, append,
                                                             nullptr, nullptr)
                                       : archive_write_open_fd(writer.get(), fd);
  if (opened != ARCHIVE_OK) {
    throw IoError("cannot start writing " + quoted(archive_path) + ": " +
                  archive_text(writer.get()));
  }
  return writer;
}

// ---- extraction ------------------------------------------------------------------------------

std::string refusal(const std::string& name, const std::string& why) {
  return "archive entry '" + name + "' refused: " + why;
}

// The components of an archive name below the destination. Tolerates "." and empty
// components ("./a//b"), which tar tools write, but never an absolute name or "..".
std::vector<std::string> destination_parts(const std::string& name) {
  if (name.empty()) throw PackageError(refusal(name, "has an empty name"));
  if (name.front() == '/') throw PackageError(refusal(name, "is an absolute path"));
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= name.size()) {
    const std::size_t end = std::min(name.find('/', start), name.size());
    std::string part = name.substr(start, end - start);
    if (part == "..") throw PackageError(refusal(name, "climbs out of the destination"));
    if (!part.empty() && part != ".") parts.push_back(std::move(part));
    start = end + 1;
  }
  return parts;
}

std::string join(std::span<const std::string> parts) {
  std::string joined;
  for (const auto& part : parts) {
    if (!joined.empty()) joined += '/';
    joined += part;
  }
  return joined;
}

// What one extract() call created, so that a refused archive leaves the destination as found.
class CreatedPaths {
 public:
  CreatedPaths() = default;
  ~CreatedPaths() {
    if (is_committed_) return;
    // Reverse creation order removes each file before the folder that holds it.
    for (auto it = paths_.rbegin(); it != paths_.rend(); ++it) {
      std::error_code ignored;
      fs::remove(*it, ignored);
    }
  }
  CreatedPaths(const CreatedPaths&) = delete;
  CreatedPaths& operator=(const CreatedPaths&) = delete;
  void add(fs::path path) { paths_.push_back(std::move(path)); }
  void commit() { is_committed_ = true; }

 private:
  std::vector<fs::path> paths_;
  bool is_committed_ = false;
};

// Opens the folder `parts` names below `root`, creating what is missing. Each step is an
// openat() with O_NOFOLLOW, so a symlink already in the destination can never redirect us.
// A left-over top-level file (ExtractOptions::reusable) where the archive wants a folder goes.
UniqueFd open_folder(int root, const fs::path& destination, const std::string& name,
                     std::span<const std::string> parts, CreatedPaths& created,
                     std::set<std::string>* reusable) {
  UniqueFd current(::fcntl(root, F_DUPFD_CLOEXEC, 0));
  if (!current.is_open()) {
    throw IoError("cannot duplicate the descriptor of " + quoted(destination) + ": " +
                  errno_text());
  }
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const std::string relative = join(parts.first(i + 1));
    if (i == 0 && reusable != nullptr && reusable->erase(parts[0]) > 0 &&
        ::unlinkat(current.get(), parts[0].c_str(), 0) != 0 && errno != ENOENT) {
      throw IoError("cannot replace " + quoted(destination / relative) +
                    " by a folder: " + errno_text());
    }
    if (::mkdirat(current.get(), parts[i].c_str(), 0755) == 0) {
      created.add(destination / relative);
    } else if (errno != EEXIST) {
      throw IoError("cannot create folder " + quoted(destination / relative) + ": " + errno_text());
    }
    UniqueFd next(
        ::openat(current.get(), parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.is_open()) {
      if (errno == ENOTDIR || errno == ELOOP) {
        throw PackageError(
            refusal(name, "passes through '" + relative + "', which is not a folder"));
      }
      throw IoError("cannot open folder " + quoted(destination / relative) + ": " + errno_text());
    }
    current = std::move(next);
  }
  return current;
}

// `needed`: the bytes the extraction will have written with this block (NoSpaceError::needed).
void write_all(int fd, const char* data, std::size_t size, const fs::path& path,
               std::uint64_t needed) {
  while (size > 0) {
    const ssize_t done = ::write(fd, data, size);
    if (done < 0) {
      if (errno == EINTR) continue;
      throw_write_failure(path, errno, needed);
    }
    data += done;
    size -= static_cast<std::size_t>(done);
  }
}

void check_type(archive_entry* entry, const std::string& name) {
  if (archive_entry_hardlink(entry) != nullptr) {
    throw PackageError(
        refusal(name, "is a hardlink; packages hold regular files and folders only"));
  }
  const auto type = archive_entry_filetype(entry);
  if (type == AE_IFLNK || archive_entry_symlink(entry) != nullptr) {
    throw PackageError(refusal(name, "is a symlink; packages hold regular files and folders only"));
  }
  if (type != AE_IFREG && type != AE_IFDIR) {
    throw PackageError(
        refusal(name, "is a device, fifo or socket; packages hold regular files and folders only"));
  }
  if (type == AE_IFREG && archive_entry_sparse_count(entry) > 0) {
    throw PackageError(refusal(name, "is a sparse file, which packages do not use"));
  }
}

// ExtractLimits::min_free_bytes: the destination's free space, measured now and then, against
// what the extraction is about to write.
class FreeSpaceGuard {
 public:
  FreeSpaceGuard(int folder, const fs::path& destination, std::uint64_t min_free)
      : folder_(folder), destination_(destination), min_free_(min_free) {}

  // Refuses entry `name` when taking the archive's written bytes from `written` to `total`
  // would leave less than min_free_bytes free.
  void check(const std::string& name, std::uint64_t written, std::uint64_t total) {
    if (min_free_ == 0 || total <= written) return;
    // Others write to the same file system: measured again after every 64 MiB.
    if (!measured_ || total - measured_at_ > kRemeasureBytes) {
      const FileSystemSpace space = file_system_space(destination_, folder_);
      free_ = space.free;
      capacity_ = space.capacity;
      measured_at_ = written;
      measured_ = true;
    }
    const std::uint64_t needed = total - measured_at_;
    // More than the whole file system holds: no wait makes room for it.
    if (total > capacity_) {
      throw IoError(refusal(name, "the archive unpacks to more than the " +
                                      std::to_string(capacity_) + " bytes that " +
                                      quoted(destination_) + "'s file system holds"));
    }
    if (!leaves_room(free_, needed, min_free_)) {
      throw NoSpaceError(
          refusal(name, "writing it would leave less than " + std::to_string(min_free_) +
                            " bytes free in " + quoted(destination_) + " (" +
                            std::to_string(free_ > needed ? free_ - needed : 0) +
                            " left; min_free_bytes)"),
          total);
    }
  }

 private:
  static constexpr std::uint64_t kRemeasureBytes = std::uint64_t{64} << 20;
  int folder_;
  const fs::path& destination_;
  std::uint64_t min_free_;
  bool measured_ = false;
  std::uint64_t measured_at_ = 0;  // the bytes written when free_ was measured
  std::uint64_t free_ = 0;
  std::uint64_t capacity_ = 0;  // the file system's size, f_blocks
};

struct ExtractContext {
  archive* reader;
  // The archive's descriptor when it is read from a file as it is (no hash to check), else -1.
  int archive_file;
  const fs::path& archive_path;
  const fs::path& destination;
  int root;
  const ExtractLimits& limits;
  CreatedPaths& created;
  ExtractStats& stats;
  std::set<std::string>* reusable;  // ExtractOptions::reusable
  bool sync;                        // ExtractOptions::sync
  FreeSpaceGuard& space;
};

// Opens a left-over top-level file for rewriting (ExtractOptions::reusable), or returns a closed
// descriptor when it cannot be reused (gone, replaced by something else, or linked elsewhere).
UniqueFd open_reusable(const ExtractContext& context, int parent,
                       std::span<const std::string> parts) {
  if (context.reusable == nullptr || parts.size() != 1 ||
      context.reusable->erase(parts.front()) == 0) {
    return UniqueFd();
  }
  // O_NONBLOCK: a fifo put in its place must not block the open.
  UniqueFd out(
      ::openat(parent, parts.front().c_str(), O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  struct stat info {};
  if (!out.is_open() || ::fstat(out.get(), &info) != 0 || !S_ISREG(info.st_mode) ||
      info.st_nlink != 1) {
    out.reset();
    // Whatever is there now is not ours to write through: it goes, and the file is created.
    if (::unlinkat(parent, parts.front().c_str(), 0) != 0 && errno != ENOENT) {
      throw IoError("cannot replace " + quoted(context.destination / parts.front()) + ": " +
                    errno_text());
    }
  }
  return out;
}

// Refuses an entry whose data read so far (`file_bytes`) or the archive's (`total_bytes`) pass
// the limits.
void check_unpacked(const std::string& name, std::uint64_t file_bytes, std::uint64_t total_bytes,
                    const ExtractLimits& limits) {
  if (file_bytes > limits.max_file_bytes) {
    throw PackageError(refusal(name, "holds more than " + std::to_string(limits.max_file_bytes) +
                                         " bytes (max_file_bytes)"));
  }
  if (total_bytes > limits.max_total_bytes) {
    throw PackageError(refusal(name, "takes the archive past " +
                                         std::to_string(limits.max_total_bytes) +
                                         " unpacked bytes (max_total_bytes)"));
  }
}

// Copies a file entry's data from the archive file to `out` inside the kernel
// (copy_file_range): one copy instead of a read into libarchive's buffer and a write out of
// it, which is most of what unpacking a large cached package or model costs. Only for a plain
// tar read from a file, where an entry's data lies in the file as it is, right after its
// headers. Returns false, having read nothing, when that does not hold or the file systems
// cannot copy so; the caller then reads the data through libarchive.
bool copy_in_kernel(const ExtractContext& context, archive_entry* entry, const std::string& name,
                    int out, const fs::path& target) {
  if (context.archive_file < 0 || archive_entry_size_is_set(entry) == 0 ||
      archive_entry_sparse_count(entry) != 0 || archive_filter_count(context.reader) != 1 ||
      archive_filter_code(context.reader, 0) != ARCHIVE_FILTER_NONE) {
    return false;
  }
  const auto size = static_cast<std::uint64_t>(archive_entry_size(entry));
  // Data that small is in libarchive's buffer already.
  if (size < kArchiveReadBlockSize) return false;
  // The bytes libarchive consumed so far: the headers end there, on a tar block boundary.
  const loff_t start = archive_filter_bytes(context.reader, 0);
  if (start < 512 || start % 512 != 0) return false;
  // The data follows the entry's own ustar header only when that header's size field is the
  // entry's size: a sparse map, or a size given elsewhere (GNU realsize, pax GNU.sparse.* or
  // SCHILY.realsize), leaves it to libarchive.
  char header[512];
  if (::pread(context.archive_file, header, sizeof header, start - 512) !=
          static_cast<ssize_t>(sizeof header) ||
      std::memcmp(header + 257, "ustar", 5) != 0) {
    return false;
  }
  std::uint64_t stated = 0;
  for (int i = 124; i < 136 && header[i] != '\0' && header[i] != ' '; ++i) {
    if (header[i] < '0' || header[i] > '7') return false;  // base-256 or damaged
    stated = stated * 8 + static_cast<std::uint64_t>(header[i] - '0');
  }
  if (stated != size) return false;
  check_unpacked(name, size, context.stats.bytes + size, context.limits);
  context.space.check(name, context.stats.bytes, context.stats.bytes + size);
  loff_t from = start;
  std::uint64_t copied = 0;
  while (copied < size) {
    const ssize_t got = ::copy_file_range(context.archive_file, &from, out, nullptr,
                                          static_cast<std::size_t>(size - copied), 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && copied == 0 &&
        (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP ||
         errno == EBADF || errno == EPERM)) {
      return false;
    }
    if (got < 0) throw_write_failure(target, errno, context.stats.bytes + size);
    if (got == 0 && copied == 0) return false;  // some file systems say so for "cannot"
    if (got == 0) {
      throw PackageError("archive " + quoted(context.archive_path) +
                         " is corrupt or truncated in '" + name + "': it ends within the file");
    }
    copied += static_cast<std::uint64_t>(got);
  }
  // Past the data (and its padding) for the next header; libarchive must agree on where the
  // data ended.
  if (archive_read_data_skip(context.reader) != ARCHIVE_OK ||
      archive_filter_bytes(context.reader, 0) !=
          start + static_cast<loff_t>((size + 511) / 512 * 512)) {
    throw PackageError("archive " + quoted(context.archive_path) + " is corrupt or truncated in '" +
                       name + "': " + archive_text(context.reader));
  }
  context.stats.bytes += size;
  context.stats.copied_bytes += size;
  return true;
}

void extract_file(const ExtractContext& context, archive_entry* entry, const std::string& name,
                  std::span<const std::string> parts) {
  if (archive_entry_size_is_set(entry) != 0 &&
      static_cast<std::uint64_t>(archive_entry_size(entry)) > context.limits.max_file_bytes) {
    throw PackageError(refusal(name, "is larger than " +
                                         std::to_string(context.limits.max_file_bytes) +
                                         " bytes (max_file_bytes)"));
  }
  const UniqueFd parent =
      open_folder(context.root, context.destination, name, parts.first(parts.size() - 1),
                  context.created, context.reusable);
  const mode_t mode = (archive_entry_perm(entry) & 0111) != 0 ? 0755 : 0644;
  const fs::path target = context.destination / join(parts);
  UniqueFd out = open_reusable(context, parent.get(), parts);
  // Overwritten from the start and cut to its new size at the end: blocks that stay in use are
  // not freed and allocated again.
  const bool is_reused = out.is_open();
  if (!out.is_open()) {
    out = UniqueFd(::openat(parent.get(), parts.back().c_str(),
                            O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  }
  if (!out.is_open()) {
    if (errno == EEXIST) throw PackageError(refusal(name, "already exists in the destination"));
    throw IoError("cannot create " + quoted(target) + ": " + errno_text());
  }
  context.created.add(target);
  // The umask must not decide a training script's execute bit.
  if (::fchmod(out.get(), mode) != 0) {
    throw IoError("cannot set the mode of " + quoted(target) + ": " + errno_text());
  }

  if (archive_entry_size_is_set(entry) != 0) {
    context.space.check(
        name, context.stats.bytes,
        context.stats.bytes + static_cast<std::uint64_t>(archive_entry_size(entry)));
  }
  std::uint64_t written = 0;
  const bool is_copied = copy_in_kernel(context, entry, name, out.get(), target);
  if (is_copied) written = static_cast<std::uint64_t>(archive_entry_size(entry));
  while (!is_copied) {
    const void* block = nullptr;
    std::size_t size = 0;
    la_int64_t offset = 0;
    const int status = archive_read_data_block(context.reader, &block, &size, &offset);
    if (status == ARCHIVE_EOF) break;
    if (status != ARCHIVE_OK) {
      throw PackageError("archive " + quoted(context.archive_path) +
                         " is corrupt or truncated in '" + name +
                         "': " + archive_text(context.reader));
    }
    if (offset < 0 || static_cast<std::uint64_t>(offset) != written) {
      throw PackageError(refusal(name, "is a sparse file, which packages do not use"));
    }
    // Checked before writing, from the data itself: a header can understate what follows.
    check_unpacked(name, written + size, context.stats.bytes + size, context.limits);
    context.space.check(name, context.stats.bytes, context.stats.bytes + size);
    write_all(out.get(), static_cast<const char*>(block), size, target, context.stats.bytes + size);
    written += size;
    context.stats.bytes += size;
  }
  if (is_reused && ::ftruncate(out.get(), static_cast<off_t>(written)) != 0) {
    throw IoError("cannot cut " + quoted(target) + " to its size: " + errno_text());
  }
  if (context.sync && ::fsync(out.get()) != 0 && errno != EINVAL) {  // EINVAL: cannot sync
    throw IoError("cannot fsync " + quoted(target) + ": " + errno_text());
  }
  if (out.close() != 0) {
    throw IoError("cannot finish writing " + quoted(target) + ": " + errno_text());
  }
  // Normalised ("./a//b" -> "a/b") so that it compares equal to list_files()' names.
  context.stats.files.push_back(join(parts));
}

}  // namespace

std::vector<PackEntry> list_files(const fs::path& root,
                                  const std::vector<std::string>& exclude_top_level) {
  std::error_code error;
  if (!fs::is_directory(root, error)) {
    throw IoError("cannot list " + quoted(root) + ": not a folder");
  }
  std::vector<PackEntry> entries;
  fs::recursive_directory_iterator it(root, fs::directory_options::none, error);
  if (error) throw IoError("cannot list " + quoted(root) + ": " + error.message());
  for (const fs::recursive_directory_iterator end; it != end; it.increment(error)) {
    if (error) throw IoError("cannot list " + quoted(root) + ": " + error.message());
    if (it.depth() == 0 && std::find(exclude_top_level.begin(), exclude_top_level.end(),
                                     it->path().filename().string()) != exclude_top_level.end()) {
      it.disable_recursion_pending();
      continue;
    }
    const fs::file_status status = it->symlink_status(error);
    if (error) throw IoError("cannot inspect " + quoted(it->path()) + ": " + error.message());
    if (fs::is_symlink(status)) {
      throw PackageError("cannot pack " + quoted(it->path()) +
                         ": is a symlink; packages hold regular files and folders only");
    }
    if (fs::is_directory(status)) continue;
    if (!fs::is_regular_file(status)) {
      throw PackageError(
          "cannot pack " + quoted(it->path()) +
          ": is a socket, fifo or device; packages hold regular files and folders only");
    }
    entries.push_back(PackEntry{it->path(), it->path().lexically_relative(root).generic_string()});
  }
  if (error) throw IoError("cannot list " + quoted(root) + ": " + error.message());
  std::sort(entries.begin(), entries.end(),
            [](const PackEntry& a, const PackEntry& b) { return a.name < b.name; });
  return entries;
}

namespace {

// Reads up to `max_bytes` from the start of `file` into `sample`; a file that cannot be read
// adds nothing (pack() reports it properly).
void append_sample(const fs::path& file, std::size_t max_bytes, std::string& sample) {
  UniqueFd in(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!in.is_open()) return;
  const std::size_t start = sample.size();
  sample.resize(start + max_bytes);
  std::size_t filled = 0;
  while (filled < max_bytes) {
    const ssize_t got = ::read(in.get(), sample.data() + start + filled, max_bytes - filled);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    filled += static_cast<std::size_t>(got);
  }
  sample.resize(start + filled);
}

// Compression::kAuto's choice; see package.hpp.
Compression worthwhile_compression(const std::vector<PackEntry>& entries) {
  constexpr std::size_t kFilesSampled = 8;
  constexpr std::size_t kBytesPerFile = std::size_t{128} << 10;
  constexpr std::size_t kTooSmallToMatter = std::size_t{4} << 10;
  std::vector<std::pair<std::uintmax_t, const PackEntry*>> by_size;
  for (const auto& entry : entries) {
    std::error_code ec;
    const auto size = entry.content ? entry.content->size() : fs::file_size(entry.source, ec);
    if (!ec) by_size.emplace_back(size, &entry);
  }
  const std::size_t sampled = std::min(kFilesSampled, by_size.size());
  std::partial_sort(by_size.begin(), by_size.begin() + static_cast<std::ptrdiff_t>(sampled),
                    by_size.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::string sample;
  for (std::size_t i = 0; i < sampled; ++i) {
    const PackEntry& entry = *by_size[i].second;
    if (entry.content) {
      sample.append(*entry.content, 0, kBytesPerFile);
    } else {
      append_sample(entry.source, kBytesPerFile, sample);
    }
  }
  if (sample.size() < kTooSmallToMatter) return Compression::kNone;
  std::string compressed(ZSTD_compressBound(sample.size()), '\0');
  const std::size_t size = ZSTD_compress(compressed.data(), compressed.size(), sample.data(),
                                         sample.size(), 1);
  if (ZSTD_isError(size) != 0) return Compression::kNone;
  return static_cast<double>(size) <= kWorthwhileRatio * static_cast<double>(sample.size())
             ? Compression::kZstd
             : Compression::kNone;
}

}  // namespace

namespace {

// pack()'s checks of the entries and its choice of compression.
PackOptions prepare_pack(const std::vector<PackEntry>& entries, const PackOptions& requested) {
  PackOptions options = requested;
  if (options.compression == Compression::kAuto) options.compression = worthwhile_compression(entries);
  std::set<std::string_view> names;
  for (const auto& entry : entries) {
    if (!is_clean_name(entry.name)) {
      throw PackageError("pack entry '" + entry.name +
                         "' refused: names must be relative, '/'-separated, without '.' or '..'");
    }
    if (!names.insert(entry.name).second) {
      throw PackageError("pack entry '" + entry.name + "' refused: the name repeats");
    }
  }
  return options;
}

// Writes every entry to the archive `fd` or `memory` (open_writer) and closes it.
PackStats write_archive(const std::vector<PackEntry>& entries, int fd, std::string* memory,
                        const fs::path& archive_path, const PackOptions& options) {
  PackStats stats;
  stats.compression = options.compression;
  const WriteArchive writer = open_writer(fd, memory, archive_path, options);
  auto block = std::make_unique_for_overwrite<char[]>(kCopyBlockSize);
  for (const auto& entry : entries) {
    write_entry(writer.get(), entry, std::span<char>(block.get(), kCopyBlockSize), stats);
  }
  if (archive_write_close(writer.get()) != ARCHIVE_OK) {
    throw IoError("cannot finish writing " + quoted(archive_path) + ": " +
                  archive_text(writer.get()));
  }
  return stats;
}

}  // namespace

PackStats pack(const std::vector<PackEntry>& entries, const fs::path& archive_path,
               const PackOptions& requested) {
  const PackOptions options = prepare_pack(entries, requested);
  fs::path part_path = archive_path;
  part_path += ".part";
  PartFile part(part_path);
  UniqueFd out(::open(part_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out.is_open()) throw IoError("cannot create " + quoted(part_path) + ": " + errno_text());

  PackStats stats = write_archive(entries, out.get(), nullptr, part_path, options);
  // Flushed before the rename, so a crash cannot leave a complete name over incomplete data.
  if ((options.sync && ::fsync(out.get()) != 0) || out.close() != 0) {
    throw IoError("cannot flush " + quoted(part_path) + ": " + errno_text());
  }
  std::error_code error;
  stats.bytes_out = fs::file_size(part_path, error);
  if (error) throw IoError("cannot stat " + quoted(part_path) + ": " + error.message());
  fs::rename(part_path, archive_path, error);
  if (error) {
    throw IoError("cannot rename " + quoted(part_path) + " to " + quoted(archive_path) + ": " +
                  error.message());
  }
  part.commit();
  return stats;
}

std::string pack_to_memory(const std::vector<PackEntry>& entries, const PackOptions& requested) {
  const PackOptions options = prepare_pack(entries, requested);
  std::string archive;
  write_archive(entries, -1, &archive, "an archive in memory", options);
  return archive;
}

PackStats pack_directory(const fs::path& root, const fs::path& archive_path,
                         const std::vector<std::string>& exclude_top_level,
                         const PackOptions& options) {
  return pack(list_files(root, exclude_top_level), archive_path, options);
}

namespace {

// Feeds libarchive from a descriptor, from bytes in memory or from a stream, and hashes every
// byte it hands over, in order. No skip or seek callback is set, so libarchive reads everything
// through read(): the hash sees each byte once, and the file is read once.
class HashingSource {
 public:
  HashingSource(int fd, const fs::path& path)
      : fd_(fd),
        path_(path),
        block_(std::make_unique_for_overwrite<char[]>(kArchiveReadBlockSize)) {}
  HashingSource(std::string_view memory, const fs::path& path)
      : path_(path), memory_(memory), is_in_memory_(true) {}
  HashingSource(ArchiveStream& stream, const fs::path& path) : path_(path), stream_(&stream) {}

  static la_ssize_t read(archive* handle, void* self, const void** block) {
    auto& source = *static_cast<HashingSource*>(self);
    if (source.is_in_memory_) {
      *block = source.memory_.data();
      return static_cast<la_ssize_t>(source.take_memory());
    }
    if (source.stream_ != nullptr) {
      // An exception must not cross libarchive's C frames: kept, the read fails, and
      // read_entries() rethrows it.
      try {
        const std::string_view bytes = source.stream_->next();
        source.hash_.update(bytes.data(), bytes.size());
        *block = bytes.data();
        return static_cast<la_ssize_t>(bytes.size());
      } catch (...) {
        source.failure_ = std::current_exception();
        archive_set_error(handle, ECANCELED, "the archive's stream was abandoned");
        return -1;
      }
    }
    const ssize_t got = source.read_block();
    if (got < 0) {
      archive_set_error(handle, errno, "cannot read: %s", std::strerror(errno));
      return -1;
    }
    *block = source.block_.get();
    return got;
  }

  // Reads and hashes what libarchive left unread (the end-of-archive blocks, or everything
  // after a refusal), then ends the hash: 64 hex digits. Throws IoError when reading fails.
  std::string finish() {
    rethrow_failure();
    if (is_in_memory_) {
      take_memory();
      return hash_.finish_hex();
    }
    if (stream_ != nullptr) {
      for (std::string_view bytes = stream_->next(); !bytes.empty(); bytes = stream_->next()) {
        hash_.update(bytes.data(), bytes.size());
      }
      return hash_.finish_hex();
    }
    for (;;) {
      const ssize_t got = read_block();
      if (got == 0) return hash_.finish_hex();
      if (got < 0) throw IoError("cannot read archive " + quoted(path_) + ": " + errno_text());
    }
  }

 private:
  ssize_t read_block() {
    ssize_t got = 0;
    do {
      got = ::read(fd_, block_.get(), kArchiveReadBlockSize);
    } while (got < 0 && errno == EINTR);
    if (got > 0) hash_.update(block_.get(), static_cast<std::size_t>(got));
    return got;
  }

  // Hashes what is left of the bytes in memory and hands it all over at once.
  std::size_t take_memory() {
    const std::size_t size = memory_.size();
    hash_.update(memory_.data(), size);
    memory_.remove_prefix(size);
    return size;
  }

  int fd_ = -1;
  const fs::path& path_;
  std::unique_ptr<char[]> block_;
  std::string_view memory_;
  bool is_in_memory_ = false;
  ArchiveStream* stream_ = nullptr;
  std::exception_ptr failure_;  // what the stream threw inside read()
  Sha256 hash_;

 public:
  // The stream's own exception, when it ended a read: the reason, whatever libarchive said.
  void rethrow_failure() const {
    if (failure_) std::rethrow_exception(failure_);
  }
};

// The rest of the current entry's data, its last `max_bytes` only (where a log's verdict is); a
// text cut there starts at its first whole line, since a cut line could read as another value
// ("...5.2" of "12345.2").
// `on_read(bytes)` hears of every block read, and may refuse (throw) when they are too many.
template <typename OnRead>
std::string read_entry_tail(archive* reader, const fs::path& archive_name, std::uint64_t max_bytes,
                            OnRead&& on_read) {
  std::string content;
  bool cut = false;
  char block[64 * 1024];
  for (;;) {
    const la_ssize_t got = archive_read_data(reader, block, sizeof block);
    if (got == 0) break;
    if (got < 0) {
      throw PackageError("archive " + quoted(archive_name) +
                         " is not a readable tar: " + archive_text(reader));
    }
    on_read(static_cast<std::uint64_t>(got));
    content.append(block, static_cast<std::size_t>(got));
    // Trimmed now and then, so each byte moves about once.
    if (content.size() > 2 * max_bytes) {
      content.erase(0, content.size() - max_bytes);
      cut = true;
    }
  }
  if (content.size() > max_bytes) {
    content.erase(0, content.size() - max_bytes);
    cut = true;
  }
  if (const auto line_end = content.find('\n'); cut && line_end != std::string::npos) {
    content.erase(0, line_end + 1);
  }
  return content;
}

// Reads `archive` (a tar, plain or zstd or gzip), calling `on_entry(reader, entry, name,
// parts, archive_file)` for each entry that passed the common checks (limits.max_entries, the
// entry's type); `parts` is the entry's clean name, split; `archive_file` is the archive's
// descriptor when it is read from a file without a hash to check, else -1. Checks the SHA-256 when
// `expected_sha256` is set, also when reading or `on_entry` threw: a mismatch is then the reason
// given. Returns the number of entries.
template <typename OnEntry>
std::uint64_t read_entries(const ArchiveSource& archive_source, const ExtractLimits& limits,
                           const std::string* expected_sha256, OnEntry&& on_entry) {
  const fs::path& archive_path = archive_source.name();
  UniqueFd in;
  if (!archive_source.is_in_memory() && archive_source.stream() == nullptr) {
    in = UniqueFd(::open(archive_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in.is_open()) {
      throw IoError("cannot open archive " + quoted(archive_path) + ": " + errno_text());
    }
  }
  // Declared before the reader, which points at it: it outlives the reader.
  std::optional<HashingSource> source;
  if (archive_source.stream() != nullptr) {
    source.emplace(*archive_source.stream(), archive_path);  // hashed even when not checked
  } else if (expected_sha256 != nullptr && archive_source.is_in_memory()) {
    source.emplace(archive_source.bytes(), archive_path);
  } else if (expected_sha256 != nullptr) {
    source.emplace(in.get(), archive_path);
  }
  ReadArchive reader(archive_read_new(), &archive_read_free);
  if (!reader) throw std::bad_alloc();
  // Only what pack() and peers write: the other format parsers stay unreachable.
  if (archive_read_support_format_tar(reader.get()) != ARCHIVE_OK ||
      archive_read_support_filter_zstd(reader.get()) < ARCHIVE_WARN ||
      archive_read_support_filter_gzip(reader.get()) < ARCHIVE_WARN) {
    throw PackageError("cannot set up reading " + quoted(archive_path) + ": " +
                       archive_text(reader.get()));
  }
  // The bytes differ from the announced ones: that is the reason, whatever else they led to.
  auto check_hash = [&] {
    if (!source) return;
    const std::string actual = source->finish();
    if (expected_sha256 == nullptr) return;
    if (actual != *expected_sha256) {
      throw PackageError("archive " + quoted(archive_path) + " refused: hash mismatch: expected " +
                         *expected_sha256 + ", read " + actual);
    }
  };
  std::uint64_t entries = 0;
  try {
    const int opened =
        source ? archive_read_open(reader.get(), &*source, nullptr, &HashingSource::read, nullptr)
        : archive_source.is_in_memory()
            ? archive_read_open_memory(reader.get(), archive_source.bytes().data(),
                                       archive_source.bytes().size())
            : archive_read_open_fd(reader.get(), in.get(), kArchiveReadBlockSize);
    if (opened != ARCHIVE_OK) {
      throw PackageError("archive " + quoted(archive_path) +
                         " is not a readable tar: " + archive_text(reader.get()));
    }
    for (;;) {
      archive_entry* entry = nullptr;
      const int status = archive_read_next_header(reader.get(), &entry);
      if (status == ARCHIVE_EOF) break;
      // A warning still yields a usable entry, which the checks below judge on its own. The
      // usual one is a UTF-8 pax name that the C locale cannot convert: libarchive then keeps
      // the original bytes, which is what a Linux file name wants anyway.
      if (status != ARCHIVE_OK && status != ARCHIVE_WARN) {
        throw PackageError("archive " + quoted(archive_path) +
                           " is not a readable tar: " + archive_text(reader.get()));
      }
      if (++entries > limits.max_entries) {
        throw PackageError("archive " + quoted(archive_path) + " refused: more than " +
                           std::to_string(limits.max_entries) + " entries (max_entries)");
      }
      const char* raw_name = archive_entry_pathname(entry);
      const std::string name = raw_name != nullptr ? raw_name : "";
      check_type(entry, name);
      const std::vector<std::string> parts = destination_parts(name);
      if (archive_entry_filetype(entry) != AE_IFDIR && parts.empty()) {
        throw PackageError(refusal(name, "names no file"));
      }
      on_entry(reader.get(), entry, name, parts, source ? -1 : in.get());
    }
  } catch (const Error&) {
    check_hash();
    throw;
  }
  check_hash();
  return entries;
}

// extract() and extract_verified(): the hash is checked when `expected_sha256` is set.
ExtractStats extract_checked(const ArchiveSource& archive_source, const fs::path& destination,
                             const ExtractLimits& limits, const ExtractOptions& options,
                             const std::string* expected_sha256) {
  const fs::path& archive_path = archive_source.name();
  UniqueFd root(::open(destination.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.is_open()) {
    throw IoError("cannot open extraction folder " + quoted(destination) + ": " + errno_text());
  }
  CreatedPaths created;
  ExtractStats stats;
  FreeSpaceGuard space(root.get(), destination, limits.min_free_bytes);
  // ExtractOptions::sync: the folders below `destination` that received an entry.
  std::set<std::string> folders_to_sync;
  auto note_folders = [&](std::span<const std::string> parts, std::size_t depth) {
    for (std::size_t n = 1; options.sync && n <= depth; ++n)
      folders_to_sync.insert(join(parts.first(n)));
  };
  stats.entries = read_entries(
      archive_source, limits, expected_sha256,
      [&](archive* reader, archive_entry* entry, const std::string& name,
          const std::vector<std::string>& parts, int archive_file) {
        const bool is_held =
            !options.held_folder.empty() && !parts.empty() && parts.front() == options.held_folder;
        if (is_held && archive_entry_filetype(entry) == AE_IFDIR) return;
        if (is_held) {
          const std::string clean = join(parts);
          if (parts.size() == 1) {
            throw PackageError(
                refusal(name, "is a file where '" + options.held_folder + "' must be a folder"));
          }
          const bool is_wanted = options.held_files.contains(clean);
          if (is_wanted && stats.held.contains(clean)) {
            throw PackageError(refusal(name, "repeats a name"));
          }
          // Read (and hashed) whether kept or not, and counted against the limits as a file.
          std::uint64_t file_bytes = 0;
          std::string content =
              read_entry_tail(reader, archive_path, is_wanted ? options.held_max_bytes : 0,
                              [&](std::uint64_t bytes) {
                                file_bytes += bytes;
                                check_unpacked(name, file_bytes, stats.bytes + bytes, limits);
                                stats.bytes += bytes;
                              });
          if (is_wanted) stats.held[clean] = std::move(content);
        } else if (archive_entry_filetype(entry) == AE_IFDIR) {
          open_folder(root.get(), destination, name, parts, created, options.reusable);
          note_folders(parts, parts.size() - 1);
        } else {
          const ExtractContext context{reader,           archive_file, archive_path, destination,
                                       root.get(),       limits,       created,      stats,
                                       options.reusable, options.sync, space};
          extract_file(context, entry, name, parts);
          note_folders(parts, parts.size() - 1);
        }
      });
  for (const std::string& folder : folders_to_sync) {
    UniqueFd fd(
        ::openat(root.get(), folder.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.is_open() || (::fsync(fd.get()) != 0 && errno != EINVAL)) {
      throw IoError("cannot fsync folder " + quoted(destination / folder) + ": " + errno_text());
    }
  }
  created.commit();
  return stats;
}

}  // namespace

bool is_plain_tar(std::string_view head) {
  // What libarchive's zstd and gzip readers recognise (the only filters read_entries allows):
  // a zstd frame, a zstd skippable frame, a gzip member.
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(head[i]); };
  if (head.size() < kPlainTarHeadBytes) return false;
  if (byte(0) == 0x28 && byte(1) == 0xb5 && byte(2) == 0x2f && byte(3) == 0xfd) return false;
  if ((byte(0) & 0xf0) == 0x50 && byte(1) == 0x2a && byte(2) == 0x4d && byte(3) == 0x18) {
    return false;
  }
  if (byte(0) == 0x1f && byte(1) == 0x8b) return false;
  // A ustar (or GNU) header's magic.
  return head.substr(257, 5) == "ustar";
}

ExtractStats extract(const ArchiveSource& archive_source, const fs::path& destination,
                     const ExtractLimits& limits, const ExtractOptions& options) {
  return extract_checked(archive_source, destination, limits, options, nullptr);
}

ExtractStats extract_verified(const ArchiveSource& archive_source, const fs::path& destination,
                              const std::string& expected_sha256, const ExtractLimits& limits,
                              const ExtractOptions& options) {
  return extract_checked(archive_source, destination, limits, options, &expected_sha256);
}

std::map<std::string, std::string> read_verified(const ArchiveSource& archive_source,
                                                 const std::string& expected_sha256,
                                                 const std::set<std::string>& wanted,
                                                 std::uint64_t max_bytes,
                                                 const ExtractLimits& limits) {
  std::map<std::string, std::string> files;
  std::uint64_t total_bytes = 0;
  read_entries(archive_source, limits, &expected_sha256,
               [&](archive* reader, archive_entry* entry, const std::string& name,
                   const std::vector<std::string>& parts, int /*archive_file*/) {
                 if (archive_entry_filetype(entry) == AE_IFDIR) return;
                 const std::string clean = join(parts);
                 const bool is_wanted = wanted.contains(clean);
                 if (is_wanted && files.contains(clean)) {
                   throw PackageError(refusal(name, "repeats a name"));
                 }
                 // Every entry's data is read (and hashed) and counted against the limits, kept
                 // or not: a compressed archive must not unpack without bound.
                 std::uint64_t file_bytes = 0;
                 std::string content =
                     read_entry_tail(reader, archive_source.name(), is_wanted ? max_bytes : 0,
                                     [&](std::uint64_t bytes) {
                                       file_bytes += bytes;
                                       total_bytes += bytes;
                                       check_unpacked(name, file_bytes, total_bytes, limits);
                                     });
                 if (is_wanted) files[clean] = std::move(content);
               });
  return files;
}

}  // namespace conductor
