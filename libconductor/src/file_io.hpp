// Positional file reads and writes for chunked transfers: one chunk at a time, never a whole
// file in memory. Throw IoError naming the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace conductor {

void read_at(const std::filesystem::path& file, std::uint64_t offset, void* data, std::size_t size);

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

  void write_at(std::uint64_t offset, const void* data, std::size_t size);
  void sync();  // fsync
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

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
