// Positional file reads and writes for chunked transfers: one chunk at a time, never a whole
// file in memory. Throw IoError naming the file.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace conductor {

// Owns a POSIX file descriptor. close() reports what ::close says (some file systems report a
// failed write only there), the destructor closes silently. Movable, not copyable.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) noexcept : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = other.release();
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const noexcept { return fd_; }
  bool is_open() const noexcept { return fd_ >= 0; }
  int release() noexcept {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  int close() noexcept { return ::close(release()); }
  void reset() noexcept {
    if (fd_ >= 0) ::close(release());
  }

 private:
  int fd_;
};

// The last `max_bytes` of a file (all of it when smaller); empty when it cannot be read.
std::string read_tail(const std::filesystem::path& file, std::uintmax_t max_bytes);

void read_at(const std::filesystem::path& file, std::uint64_t offset, void* data, std::size_t size);
// The same range of bytes held in `memory` when it is set (an archive kept in memory), else of
// `file`.
void read_at(const std::string* memory, const std::filesystem::path& file, std::uint64_t offset,
             void* data, std::size_t size);

// An open file for chunked writing; closes on destruction. Movable, not copyable.
class ChunkFile {
 public:
  // Creates or truncates `file` (mode 0644).
  explicit ChunkFile(const std::filesystem::path& file);
  ~ChunkFile();
  ChunkFile(ChunkFile&& other) noexcept;
  ChunkFile& operator=(ChunkFile&& other) noexcept;
  ChunkFile(const ChunkFile&) = delete;
  ChunkFile& operator=(const ChunkFile&) = delete;

  // Throws IoError naming the file; NoSpaceError when the file system is full (ENOSPC, EDQUOT).
  void write_at(std::uint64_t offset, const void* data, std::size_t size);
  void sync();  // fsync
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// Creates `file` (which must not exist: O_EXCL, so a planted symlink is never followed) holding
// `bytes`, and makes its contents durable (fsync) unless `sync` is false (a caller that syncs a
// whole folder afterwards). Throws IoError naming the file.
void write_durably(const std::filesystem::path& file, std::string_view bytes, bool sync = true);

// Makes `file` hold `bytes`, all or nothing, also across a crash: they are written to a new
// file beside it (`file` + ".tmp-" + 16 random hex digits), fsynced, renamed over `file`, and
// the folder is fsynced. An existing `file` keeps its permission bits (an operator's chmod);
// a new one gets `mode` less the umask. Throws IoError "cannot save <file>: <step>: <reason>":
// before the rename, with the temporary file removed and `file` as it was; after it (the
// folder's fsync failed), with `file` holding the new bytes.
void replace_durably(const std::filesystem::path& file, std::string_view bytes, mode_t mode = 0644);

// The room on a file system: what an unprivileged user may still write (statvfs' f_bavail) and
// its whole size (f_blocks), in bytes.
struct FileSystemSpace {
  std::uint64_t free = 0;
  std::uint64_t capacity = 0;
};
// Of the file system holding `path`, or of open descriptor `fd` when it is not -1 (`path` then
// only names it in the error). Throws IoError naming `path`.
FileSystemSpace file_system_space(const std::filesystem::path& path, int fd = -1);

// Whether writing `bytes` where `free` bytes are free leaves at least `reserve` free.
constexpr bool leaves_room(std::uint64_t free, std::uint64_t bytes, std::uint64_t reserve) {
  return free >= bytes && free - bytes >= reserve;
}

// Throws for a write to `path` that failed with `error` (an errno): NoSpaceError, with
// `needed` (NoSpaceError::needed), for a full disk or quota (ENOSPC, EDQUOT), which may pass;
// IoError for anything else, a fault. Either names the path and the reason.
[[noreturn]] void throw_write_failure(const std::filesystem::path& path, int error,
                                      std::uint64_t needed);

// fsync of a file or folder by path (a file system that cannot fsync a folder is tolerated).
// Throws IoError naming the path.
void sync_path(const std::filesystem::path& path);

// fsync of every regular file and folder below `folder`, then of `folder`: what a rename is
// about to publish must be on disk first. `on_file`, when set, sees each regular file's path
// relative to `folder` ("sub/name"), after its fsync. Each entry is opened relative to its open
// parent folder, never by its whole path, and a symlink is never followed. Throws IoError
// naming the path.
void sync_tree(const std::filesystem::path& folder,
               const std::function<void(const std::string& relative)>& on_file = {});

// An exclusive advisory lock (flock) on a file, held while the object lives: one server per
// working folder, one client per client folder. Movable, not copyable.
class FileLock {
 public:
  // Throws IoError naming `what` when another process holds the lock.
  FileLock(const std::filesystem::path& file, const std::string& what);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace conductor
