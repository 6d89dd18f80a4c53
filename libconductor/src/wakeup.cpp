#include "wakeup.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "conductor/error.hpp"

namespace conductor {

Wakeup::Wakeup(const char* what) : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!fd_.is_open()) {
    throw IoError(std::string("cannot make the eventfd of ") + what + ": " + std::strerror(errno));
  }
}

void Wakeup::signal() const noexcept {
  const std::uint64_t one = 1;
  // EAGAIN only when the counter is near overflow: the descriptor is readable then anyway.
  [[maybe_unused]] const ssize_t put = ::write(fd_.get(), &one, sizeof one);
}

void Wakeup::drain() const noexcept {
  std::uint64_t count = 0;
  // Non-blocking: EAGAIN only says nothing was signalled since the last drain.
  [[maybe_unused]] const ssize_t got = ::read(fd_.get(), &count, sizeof count);
}

}  // namespace conductor
