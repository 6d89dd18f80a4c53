// The machine's own limits, measured without Conductor: what each benchmark's figure is divided
// by. Each function runs for about `seconds` (or over `bytes`) and returns one measurement.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace conductor::bench {

// Lock-step round trips per second: `peers` DEALER threads each send a 32-byte message to one
// ROUTER over loopback TCP and wait for its echo before sending the next.
double raw_zmq_round_trips(int peers, double seconds);

// Processes started and reaped per second by `parallel` threads, each running `argv` with
// posix_spawn and waiting for it, again and again.
double raw_spawn_rate(const std::vector<std::string>& argv, int parallel, double seconds);

// Seconds from starting `parallel` runs of `argv` at once (one thread each: posix_spawn, then
// waitpid; stdout and stderr to /dev/null) until the last one is reaped.
double raw_parallel_spawn_seconds(const std::vector<std::string>& argv, int parallel);

// Bytes per second from one thread to another through a loopback TCP connection, written in
// 1 MiB pieces.
double raw_tcp_bytes_per_second(std::uint64_t bytes);

// SHA-256 (conductor::Sha256) of a buffer in memory, bytes per second.
double sha256_bytes_per_second(std::uint64_t bytes);

// Files created per second under `folder`: `count` new one-byte files, each created, written and
// closed, then all deleted (not timed). The cost the file system puts on every file an item
// makes; on an ext4 without a journal it grows with the inodes deleted shortly before.
double raw_file_creations_per_second(const std::filesystem::path& folder, int count);

// Writes `bytes` to a new file under `folder` and fsyncs it: the disk's durable write speed.
double durable_write_bytes_per_second(const std::filesystem::path& folder, std::uint64_t bytes);

}  // namespace conductor::bench
