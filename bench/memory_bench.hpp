// Memory against file size (issue 6, "memory stays bounded by the window, whatever the file
// size"): a conductor-server and a conductor-client process move one version of a given size to
// the client, then one result of that size back, and their peak RSS is read around each phase.
// Throws std::runtime_error when a phase does not finish in time.
#pragma once

#include <cstdint>

namespace conductor::bench {

struct MemoryFigures {
  std::uint64_t server_idle = 0;     // RSS with the client connected and nothing to do
  std::uint64_t client_idle = 0;
  std::uint64_t server_payload = 0;  // peak RSS above idle while the version goes out (packing too)
  std::uint64_t client_payload = 0;  // ... while the client fetches, checks and unpacks it
  std::uint64_t server_result = 0;   // ... while the result comes in and is stored
  std::uint64_t client_result = 0;   // ... while the client packs and uploads it
};

// Random data (plain tar, as the server sends it) of `file_bytes` each way; fresh processes.
MemoryFigures memory_while_moving(std::uint64_t file_bytes);

}  // namespace conductor::bench
