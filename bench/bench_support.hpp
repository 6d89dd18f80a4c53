// What every benchmark shares: a scratch folder, timing and medians, fixture writers for a
// server's working folder, child processes and their /proc figures, and the result table.
// Nothing here is thread-safe unless it says so.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace conductor {
struct ServerOptions;
struct ClientOptions;
class Server;
}  // namespace conductor

namespace conductor::bench {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start);
double median(std::vector<double> values);

// A uniquely named folder under the temp folder, removed with its content on destruction.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

void write_text(const std::filesystem::path& file, const std::string& text);
// `size` bytes that no compressor shrinks (xorshift), written in 1 MiB pieces.
void write_random_file(const std::filesystem::path& file, std::uint64_t size);
// `size` bytes of CSV-like text (time stamp, sensor name, two measurements, a status per line,
// the numbers pseudo-random): data that zstd shrinks, as training data often is.
void write_csv_file(const std::filesystem::path& file, std::uint64_t size);

// What a payload or result file holds: data no compressor shrinks, or compressible text.
enum class Content { kRandom, kCsv };
void write_content_file(const std::filesystem::path& file, std::uint64_t size, Content content);
const char* to_string(Content content);  // "random", "csv"

// One version for config.xml: commands are (file, arguments) pairs.
struct VersionFixture {
  std::string name;
  int target_models = 0;
  std::vector<std::pair<std::string, std::string>> commands;
  std::string model_pattern = "*.h5";
  std::vector<std::pair<std::string, std::string>> prediction_commands{};
};
// <server_dir>/config/config.xml with these global versions (their assets/<name> folders made)
// and `reserve_nodes` as the fraction of clients kept for predictions.
void write_server_config(const std::filesystem::path& server_dir,
                         const std::vector<VersionFixture>& versions, double reserve_nodes = 0);

// `count` stored models of `version` in a server folder that no server is using: one
// committed the server's way (AssetStore), the rest copies of its meta.xml under new ids with
// plain files, as a long-running server leaves them, made in seconds rather than an fsync per
// model. Model i holds model.h5 with `model_content(i)`. Returns the ids in the order of i.
std::vector<std::string> seed_models(const std::filesystem::path& server_dir,
                                     const std::string& version, int count,
                                     const std::function<std::string(int)>& model_content);

// An in-process server's options: `workdir`, any free loopback port, no log on stdout.
ServerOptions server_options(const std::filesystem::path& workdir);
// An in-process client of `server` named `name`, working in `workdir`, no log on stdout.
ClientOptions client_options(const Server& server, const std::filesystem::path& workdir,
                             const std::string& name);

// Polls `done` every `interval` until it holds or `limit` passes; returns whether it held.
bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds limit,
              std::chrono::microseconds interval = std::chrono::microseconds(500));

// A child process started with posix_spawn, killed (SIGKILL) and reaped on destruction.
class Child {
 public:
  // `arguments[0]` is the executable's path. Its stdout and stderr go to `output` (appended).
  Child(const std::vector<std::string>& arguments, const std::filesystem::path& output);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  pid_t pid() const { return pid_; }
  // SIGTERM, then waits up to `limit` before SIGKILL.
  void stop(std::chrono::milliseconds limit = std::chrono::seconds(5));
  // Sends SIGTERM to every child first, then stops each: many children end in parallel.
  static void stop_all(std::vector<std::unique_ptr<Child>>& children);

 private:
  pid_t pid_ = -1;
};

// User plus system CPU seconds the process used so far (/proc/<pid>/stat).
double cpu_seconds(pid_t pid);
// Resident set size in bytes (/proc/<pid>/status VmRSS).
std::uint64_t resident_bytes(pid_t pid);
// The peak resident set size in bytes (VmHWM) since the process started or since the last
// reset_peak_resident().
std::uint64_t peak_resident_bytes(pid_t pid);
// Sets the process's VmHWM back to its current RSS (writes "5" to /proc/<pid>/clear_refs).
void reset_peak_resident(pid_t pid);
// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port();

// This program's own path, so it can start itself as a helper process.
std::filesystem::path self_path();

// The conductor-server command line: working folder `workdir`, listening on `bind`, writing
// the bound endpoint to `endpoint_file`, printing nothing.
std::vector<std::string> server_command(const std::filesystem::path& workdir,
                                        const std::string& bind,
                                        const std::filesystem::path& endpoint_file);
// The endpoint a server wrote to `file`; waits up to 60 s for it. Throws when none came.
std::string wait_for_endpoint_file(const std::filesystem::path& file);
// The conductor-client command line: a client named `name` in `workdir`, printing nothing.
std::vector<std::string> client_command(const std::string& endpoint,
                                        const std::filesystem::path& workdir,
                                        const std::string& name);

// "  perf window <what>: <begin>,<end>" on stderr, in seconds of CLOCK_MONOTONIC (steady_clock):
// recorded with `perf record -k CLOCK_MONOTONIC`, `perf report --time "<begin>,<end> ..."` then
// shows exactly the timed part of a benchmark.
void print_perf_window(const std::string& what, Clock::time_point begin, Clock::time_point end);

// One line of the result table.
struct Row {
  std::string name;
  std::string conductor;  // the median, with its unit
  std::string raw;        // the raw limit measured in the same run, with its unit
  std::string ratio;      // conductor / raw, or "-"
  std::string goal;
  std::string met;  // "yes", "no" or "-"
  std::string note;
};
void print_table(const std::vector<Row>& rows);

std::string format(double value, int decimals);
std::string format_rate(double per_second, const std::string& unit);  // "12,345 items/s"
std::string format_bytes_rate(double bytes_per_second);               // "1.23 GB/s"
std::string format_ms(double seconds);

}  // namespace conductor::bench
