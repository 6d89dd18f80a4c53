// SHA-256 digests as lower-case hex, for naming packages and checking transfers.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace conductor {

// Incremental SHA-256 (OpenSSL's libcrypto). Owns its hash state; movable, not copyable; not
// thread-safe (one hasher per thread). Throws nothing but std::bad_alloc.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* data, std::size_t size);
  void update(std::string_view data);
  // Ends the hash: 64 lower-case hex digits. Call once; update() or finish_hex() after it is a
  // programmer error (asserted).
  std::string finish_hex();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Hashes a file's content, read in 1 MiB blocks. Throws IoError naming the path when it cannot
// be opened or read.
std::string sha256_file(const std::filesystem::path& path);

std::string sha256_hex(std::string_view data);

}  // namespace conductor
