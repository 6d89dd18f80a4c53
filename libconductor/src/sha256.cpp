#include "conductor/sha256.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>

#include <array>
#include <cassert>
#include <cerrno>
#include <cstring>

#include "conductor/error.hpp"

namespace conductor {
namespace {

constexpr std::size_t kFileBlockSize = std::size_t{1} << 20;

// libsodium's contract is sodium_init() before any other call; it is idempotent and
// thread-safe, so a function-local static is enough.
void ensure_sodium_ready() {
  [[maybe_unused]] static const bool ready = sodium_init() >= 0;
  assert(ready);
}

}  // namespace

struct Sha256::State {
  crypto_hash_sha256_state hash;
  bool is_finished = false;
};

Sha256::Sha256() : state_(std::make_unique<State>()) {
  ensure_sodium_ready();
  crypto_hash_sha256_init(&state_->hash);
}

Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

void Sha256::update(const void* data, std::size_t size) {
  assert(state_ && !state_->is_finished);
  crypto_hash_sha256_update(&state_->hash, static_cast<const unsigned char*>(data), size);
}

void Sha256::update(std::string_view data) { update(data.data(), data.size()); }

std::string Sha256::finish_hex() {
  assert(state_ && !state_->is_finished);
  state_->is_finished = true;
  std::array<unsigned char, crypto_hash_sha256_BYTES> digest{};
  crypto_hash_sha256_final(&state_->hash, digest.data());
  std::array<char, crypto_hash_sha256_BYTES * 2 + 1> hex{};
  sodium_bin2hex(hex.data(), hex.size(), digest.data(), digest.size());
  return std::string(hex.data(), crypto_hash_sha256_BYTES * 2);
}

std::string sha256_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw IoError("cannot open '" + path.string() + "' for hashing: " + std::strerror(errno));
  }
  Sha256 hasher;
  auto block = std::make_unique_for_overwrite<unsigned char[]>(kFileBlockSize);
  for (;;) {
    const ssize_t got = ::read(fd, block.get(), kFileBlockSize);
    if (got == 0) break;
    if (got < 0) {
      if (errno == EINTR) continue;
      const int saved = errno;
      ::close(fd);
      throw IoError("cannot read '" + path.string() + "' for hashing: " + std::strerror(saved));
    }
    hasher.update(block.get(), static_cast<std::size_t>(got));
  }
  ::close(fd);
  return hasher.finish_hex();
}

std::string sha256_hex(std::string_view data) {
  Sha256 hasher;
  hasher.update(data);
  return hasher.finish_hex();
}

}  // namespace conductor
