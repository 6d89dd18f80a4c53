#include "file_io.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>

#include "conductor/error.hpp"
#include "random_id.hpp"

namespace conductor {

namespace {

std::string why() { return std::strerror(errno); }

}  // namespace

std::string read_tail(const std::filesystem::path& file, std::uintmax_t max_bytes) {
  std::error_code ec;
  auto size = std::filesystem::file_size(file, ec);
  if (ec) return {};
  std::ifstream in(file, std::ios::binary);
  if (size > max_bytes) in.seekg(static_cast<std::streamoff>(size - max_bytes));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void read_at(const std::string* memory, const std::filesystem::path& file, std::uint64_t offset,
             void* data, std::size_t size) {
  if (memory == nullptr) {
    read_at(file, offset, data, size);
  } else {
    std::memcpy(data, memory->data() + offset, size);
  }
}

void read_at(const std::filesystem::path& file, std::uint64_t offset, void* data, std::size_t size) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError("cannot open '" + file.string() + "': " + why());
  auto* out = static_cast<char*>(data);
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, out + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::string reason = n == 0 ? "file ended early" : why();
      ::close(fd);
      throw IoError("cannot read '" + file.string() + "' at " + std::to_string(offset + done) +
                    ": " + reason);
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
}

ChunkFile::ChunkFile(const std::filesystem::path& file) : path_(file) {
  fd_ = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw IoError("cannot create '" + file.string() + "': " + why());
}

ChunkFile::~ChunkFile() {
  if (fd_ >= 0) ::close(fd_);
}

ChunkFile::ChunkFile(ChunkFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

ChunkFile& ChunkFile::operator=(ChunkFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

void ChunkFile::write_at(std::uint64_t offset, const void* data, std::size_t size) {
  const auto* in = static_cast<const char*>(data);
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::pwrite(fd_, in + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_write_failure(path_, errno, size - done);
    done += static_cast<std::size_t>(n);
  }
}

void throw_write_failure(const std::filesystem::path& path, int error, std::uint64_t needed) {
  const std::string message = "cannot write '" + path.string() + "': " + std::strerror(error);
  if (error == ENOSPC || error == EDQUOT) throw NoSpaceError(message, needed);
  throw IoError(message);
}

FileSystemSpace file_system_space(const std::filesystem::path& path, int fd) {
  struct statvfs info {};
  if ((fd >= 0 ? ::fstatvfs(fd, &info) : ::statvfs(path.c_str(), &info)) != 0) {
    throw IoError("cannot read the free space of '" + path.string() + "': " + why());
  }
  return {static_cast<std::uint64_t>(info.f_bavail) * info.f_frsize,
          static_cast<std::uint64_t>(info.f_blocks) * info.f_frsize};
}

FileLock::FileLock(const std::filesystem::path& file, const std::string& what) {
  fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw IoError("cannot open lock file '" + file.string() + "': " + why());
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);
    fd_ = -1;
    throw IoError(what + " is in use by another process (lock '" + file.string() + "' is held)");
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);
}

void ChunkFile::sync() {
  if (::fsync(fd_) != 0) throw IoError("cannot sync '" + path_.string() + "': " + why());
}

void write_durably(const std::filesystem::path& file, std::string_view bytes, bool sync) {
  UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd.is_open()) throw IoError("cannot create " + file.string() + ": " + why());
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd.get(), bytes.data(), bytes.size());
    if (written < 0 && errno == EINTR) continue;
    if (written < 0) throw IoError("cannot write " + file.string() + ": " + why());
    bytes.remove_prefix(static_cast<std::size_t>(written));
  }
  if (sync && ::fsync(fd.get()) != 0) throw IoError("cannot fsync " + file.string() + ": " + why());
  if (fd.close() != 0) throw IoError("cannot close " + file.string() + ": " + why());
}

void replace_durably(const std::filesystem::path& file, std::string_view bytes, mode_t mode) {
  auto fail = [&](std::string_view step, int error) {
    throw IoError("cannot save " + file.string() + ": " + std::string(step) + ": " +
                  std::strerror(error));
  };
  std::filesystem::path temporary = file;
  temporary += ".tmp-" + random_suffix();
  UniqueFd fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd.is_open()) fail("create " + temporary.string(), errno);
  auto fail_written = [&](std::string_view step) {
    const int error = errno;
    ::unlink(temporary.c_str());
    fail(step, error);
  };
  // An existing file's bits are kept (an operator's chmod); a new one gets `mode` less the
  // umask, as any created file.
  struct stat existing {};
  if (::stat(file.c_str(), &existing) == 0 && ::fchmod(fd.get(), existing.st_mode & 07777) != 0) {
    fail_written("chmod " + temporary.string());
  }
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd.get(), bytes.data(), bytes.size());
    if (written < 0 && errno == EINTR) continue;
    if (written < 0) fail_written("write " + temporary.string());
    bytes.remove_prefix(static_cast<std::size_t>(written));
  }
  if (::fsync(fd.get()) != 0) fail_written("fsync " + temporary.string());
  if (fd.close() != 0) fail_written("close " + temporary.string());
  if (::rename(temporary.c_str(), file.c_str()) != 0) fail_written("rename " + temporary.string());
  const std::filesystem::path folder =
      file.parent_path().empty() ? std::filesystem::path(".") : file.parent_path();
  UniqueFd directory(::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!directory.is_open()) fail("open folder for fsync", errno);
  // Some file systems cannot fsync a folder (EINVAL); the rename is then as durable as it gets.
  if (::fsync(directory.get()) != 0 && errno != EINVAL) fail("fsync folder", errno);
}

void sync_path(const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.is_open()) throw IoError("cannot open " + path.string() + " for fsync: " + why());
  if (::fsync(fd.get()) != 0 && errno != EINVAL) {
    throw IoError("cannot fsync " + path.string() + ": " + why());
  }
}

namespace {

// fsync of the open folder `dir` and of everything below it (see sync_tree). `shown` is the
// folder's path for messages, `relative` its path below the top ("" for the top itself).
void sync_below(UniqueFd dir, const std::filesystem::path& shown, const std::string& relative,
                const std::function<void(const std::string&)>& on_file) {
  const int dir_fd = dir.get();
  DIR* listing = ::fdopendir(dir.release());
  if (listing == nullptr) {
    const int error = errno;
    ::close(dir_fd);
    throw IoError("cannot list " + shown.string() + ": " + std::strerror(error));
  }
  const std::unique_ptr<DIR, int (*)(DIR*)> closer(listing, ::closedir);
  for (errno = 0; const dirent* entry = ::readdir(listing); errno = 0) {
    const std::string_view name = entry->d_name;
    if (name == "." || name == "..") continue;
    unsigned char type = entry->d_type;
    if (type == DT_UNKNOWN) {
      struct stat info {};
      if (::fstatat(dir_fd, entry->d_name, &info, AT_SYMLINK_NOFOLLOW) != 0) {
        throw IoError("cannot inspect " + (shown / entry->d_name).string() + ": " + why());
      }
      type = S_ISREG(info.st_mode) ? DT_REG : S_ISDIR(info.st_mode) ? DT_DIR : DT_UNKNOWN;
    }
    if (type != DT_REG && type != DT_DIR) continue;  // symlinks and the like hold no data
    const int flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | (type == DT_DIR ? O_DIRECTORY : 0);
    UniqueFd child(::openat(dir_fd, entry->d_name, flags));
    if (!child.is_open()) {
      throw IoError("cannot open " + (shown / entry->d_name).string() + " for fsync: " + why());
    }
    const std::string child_relative =
        relative.empty() ? std::string(name) : relative + "/" + std::string(name);
    if (type == DT_DIR) {
      sync_below(std::move(child), shown / entry->d_name, child_relative, on_file);
      continue;
    }
    if (::fsync(child.get()) != 0 && errno != EINVAL) {  // EINVAL: a file that cannot sync
      throw IoError("cannot fsync " + (shown / entry->d_name).string() + ": " + why());
    }
    if (on_file) on_file(child_relative);
  }
  if (errno != 0) throw IoError("cannot list " + shown.string() + ": " + why());
  if (::fsync(dir_fd) != 0 && errno != EINVAL) {
    throw IoError("cannot fsync " + shown.string() + ": " + why());
  }
}

}  // namespace

void sync_tree(const std::filesystem::path& folder,
               const std::function<void(const std::string&)>& on_file) {
  UniqueFd dir(::open(folder.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECTORY | O_NOFOLLOW));
  if (!dir.is_open()) throw IoError("cannot open " + folder.string() + " for fsync: " + why());
  sync_below(std::move(dir), folder, "", on_file);
}

}  // namespace conductor
