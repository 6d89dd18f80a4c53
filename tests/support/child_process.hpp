// ChildProcess: one program started by a test, its stdout and stderr going to one file
// (unless ChildOptions gives stderr a file of its own).
// Owns the process: the destructor SIGKILLs it if it still runs and reaps it, so a failed
// check never leaves it behind. Not thread-safe; use it from the test's thread.
// Also wait_until, the polling loop tests use instead of sleeping.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace conductor::test {

// How a process ended: `signal` is 0 when it exited by itself with `code`.
struct ExitStatus {
  int code = -1;
  int signal = 0;

  bool exited_with(int expected) const noexcept { return signal == 0 && code == expected; }
  std::string describe() const;
};

struct ChildOptions {
  std::vector<std::string> argv;  // argv[0] is the program's path (not looked up in PATH)
  std::filesystem::path output;   // stdout and stderr, truncated at start
  std::vector<std::pair<std::string, std::string>> environment;  // added to (or replacing) ours
  std::filesystem::path working_directory;                       // empty: the test's own
  std::filesystem::path input = {};                              // read as stdin; empty: /dev/null
  std::filesystem::path error_output = {};  // stderr, truncated at start; empty: into `output`
};

class ChildProcess {
 public:
  // Starts the program. Throws ProcessError when it cannot be started (the message names the
  // program and why); IoError when the output file cannot be opened.
  explicit ChildProcess(ChildOptions options);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const noexcept { return pid_; }
  const std::filesystem::path& output_file() const noexcept { return options_.output; }
  // What it printed so far (stdout and stderr interleaved).
  std::string output() const;

  // Sends `signal` unless the process has already been reaped. Never throws.
  void kill(int signal) noexcept;
  // The exit status once the process has ended, or nullopt if it still runs after `timeout`.
  // Polls, so a zero timeout only looks.
  std::optional<ExitStatus> wait_for_exit(std::chrono::milliseconds timeout);
  bool is_running() { return !wait_for_exit(std::chrono::milliseconds(0)).has_value(); }
  // SIGTERM, then SIGKILL if it has not ended within `grace`; returns how it ended.
  ExitStatus stop(std::chrono::milliseconds grace);

 private:
  bool try_reap() noexcept;

  ChildOptions options_;
  pid_t pid_ = -1;
  std::optional<ExitStatus> status_;
};

// This process's environment with `additions` added (or replacing), as NAME=VALUE strings.
std::vector<std::string> environment_with(
    const std::vector<std::pair<std::string, std::string>>& additions);
// execve-style pointers into `strings`, ending with nullptr; valid while `strings` lives.
std::vector<char*> c_pointers(std::vector<std::string>& strings);

using Deadline = std::chrono::steady_clock::time_point;

inline Deadline deadline_in(std::chrono::milliseconds from_now) {
  return std::chrono::steady_clock::now() + from_now;
}

// Calls `condition` until it returns true (-> true) or `deadline` passes (-> false), looking
// every `interval`. The condition is called at least once, and once more at the deadline.
bool wait_until(Deadline deadline, const std::function<bool()>& condition,
                std::chrono::milliseconds interval = std::chrono::milliseconds(20));

}  // namespace conductor::test
