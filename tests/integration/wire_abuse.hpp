// RawConnection: a plain TCP connection to 127.0.0.1 that sends whatever a test wants, from
// random bytes to hand-made ZMTP 3.0 frames, so a test can play a broken or hostile peer
// without a ZeroMQ library. Owns its socket (closed at destruction). Not thread-safe.
// Header-only so that each integration test file can use it without a build edit.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "conductor/error.hpp"

namespace conductor::test {

class RawConnection {
 public:
  // Connects to 127.0.0.1:port. Throws IoError when the connection is refused.
  explicit RawConnection(int port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    if (fd_ < 0) throw IoError(std::string("socket: ") + std::strerror(errno));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
      int error = errno;
      ::close(fd_);
      throw IoError("connect to 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(error));
    }
  }
  ~RawConnection() { ::close(fd_); }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  // Sends the bytes; false once the peer has closed or reset the connection, which a server
  // is entitled to do to garbage.
  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t sent = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (sent < 0 && errno == EINTR) continue;
      if (sent <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(sent));
    }
    return true;
  }

  // Reads until `wanted` has appeared in everything received so far, the peer closes, or
  // `timeout` passes. Returns whether it appeared.
  bool receive_until(std::string_view wanted, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (received_.find(wanted) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd item{fd_, POLLIN, 0};
      if (::poll(&item, 1, static_cast<int>(left.count())) <= 0) continue;
      char buffer[4096];
      ssize_t got = ::recv(fd_, buffer, sizeof buffer, 0);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return false;
      received_.append(buffer, static_cast<std::size_t>(got));
    }
    return true;
  }

  // Everything receive_until has read so far.
  const std::string& received() const noexcept { return received_; }

 private:
  int fd_;
  std::string received_;
};

// ZMTP 3.0 pieces (rfc.zeromq.org/spec/23): enough to be accepted as a DEALER by a ROUTER.
namespace zmtp {

// Signature, version 3.0, NULL mechanism, as-server 0, filler: 64 bytes.
inline std::string greeting() {
  std::string bytes;
  bytes += '\xff';
  bytes.append(8, '\0');
  bytes += '\x7f';
  bytes += '\x03';
  bytes += '\x00';
  std::string mechanism = "NULL";
  mechanism.resize(20, '\0');
  bytes += mechanism;
  bytes += '\x00';
  bytes.append(31, '\0');
  return bytes;
}

inline std::string big_endian(std::uint64_t value, int bytes) {
  std::string result;
  for (int i = bytes - 1; i >= 0; --i) result += static_cast<char>((value >> (8 * i)) & 0xff);
  return result;
}

// The NULL mechanism's READY command announcing a DEALER with no routing id.
inline std::string ready_as_dealer() {
  auto property = [](std::string_view name, std::string_view value) {
    return std::string(1, static_cast<char>(name.size())) + std::string(name) +
           big_endian(value.size(), 4) + std::string(value);
  };
  std::string body =
      std::string("\x05READY") + property("Socket-Type", "DEALER") + property("Identity", "");
  return std::string(1, '\x04') + static_cast<char>(body.size()) + body;
}

// Greets as a DEALER the way libzmq does: our greeting, then the peer's greeting and READY,
// then our READY. (libzmq 4.3.4 tends to drop a peer that sends its READY and first messages
// before the handshake has been answered.) Returns false when the peer never answered.
inline bool handshake_as_dealer(RawConnection& connection, std::chrono::milliseconds timeout) {
  if (!connection.send(greeting())) return false;
  if (!connection.receive_until("\x05READY", timeout)) return false;
  return connection.send(ready_as_dealer());
}

// One message of `frames` (an empty frame list is not allowed by ZMTP; callers pass >= 1).
inline std::string message(const std::vector<std::string>& frames) {
  std::string bytes;
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const bool more = i + 1 < frames.size();
    const std::string& frame = frames[i];
    if (frame.size() < 256) {
      bytes += static_cast<char>(more ? 0x01 : 0x00);
      bytes += static_cast<char>(frame.size());
    } else {
      bytes += static_cast<char>(more ? 0x03 : 0x02);
      bytes += big_endian(frame.size(), 8);
    }
    bytes += frame;
  }
  return bytes;
}

// A frame header announcing `size` bytes that never follow.
inline std::string lying_frame_header(std::uint64_t size) {
  return std::string(1, '\x02') + big_endian(size, 8);
}

}  // namespace zmtp

inline std::string random_bytes(std::mt19937& random, std::size_t size) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(byte(random));
  return bytes;
}

}  // namespace conductor::test
