#include "file_io.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>

#include "conductor/error.hpp"

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
    if (n < 0) throw IoError("cannot write '" + path_.string() + "': " + why());
    done += static_cast<std::size_t>(n);
  }
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

void sync_path(const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.is_open()) throw IoError("cannot open " + path.string() + " for fsync: " + why());
  if (::fsync(fd.get()) != 0 && errno != EINVAL) {
    throw IoError("cannot fsync " + path.string() + ": " + why());
  }
}

void sync_tree(const std::filesystem::path& folder) {
  namespace fs = std::filesystem;
  std::error_code error;
  for (fs::recursive_directory_iterator it(folder, error), end; !error && it != end;
       it.increment(error)) {
    const fs::file_type type = it->symlink_status().type();
    if (type == fs::file_type::regular || type == fs::file_type::directory) sync_path(it->path());
  }
  if (error) throw IoError("cannot list " + folder.string() + ": " + error.message());
  sync_path(folder);
}

}  // namespace conductor
