// ProcessExecutor: runs one Command as a child process (no shell), streams its console output
// line by line and stops it, with everything it started, on request or timeout. Linux only.
// Stateless and thread-safe: separate run() calls may proceed concurrently from different threads.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "conductor/version.hpp"

namespace conductor {

// Splits a Command's `arguments` into words as a POSIX shell does: blanks separate words,
// 'single quotes' keep everything literally, "double quotes" honour only \" \\ \$ \` and
// backslash-newline, a backslash outside quotes escapes the next character, and adjacent parts
// join (a"b c"d is the one word `ab cd`). Nothing is expanded or interpreted: $HOME, *, ~, `...`,
// #, |, ; and > stay literal text, because no shell ever runs the command.
// Throws ProcessError, quoting the input, on an unterminated quote, a trailing backslash or a
// NUL byte (which no argv entry can carry).
std::vector<std::string> split_arguments(std::string_view arguments);

struct ProcessOptions {
  // Where the child starts; empty means the caller's current directory. A relative
  // `file_name` containing '/' resolves against it, as it would after `cd`.
  std::filesystem::path working_directory;
  // Set or override on top of the parent's environment; also consulted for PATH lookup.
  std::vector<std::pair<std::string, std::string>> environment;
  // Receives each output line, stdout and stderr merged in the order written, without its
  // terminator. "\n", "\r\n" and a lone "\r" each end a line, as the original .NET client's
  // reader did (progress bars redraw with "\r"). A trailing partial line is delivered at exit;
  // lines longer than kMaxLineBytes arrive in pieces. Called on the caller's thread; it may
  // throw, which ends the child (SIGKILL to its group) and propagates out of run().
  std::function<void(std::string_view line)> on_line;
  // Called on the caller's thread right after the child started, with its process id, which
  // is also its process group's. It may throw, which ends the child as on_line does.
  std::function<void(int pid)> on_started;
  // Polled at least every poll_interval on the caller's thread; true stops the child.
  std::function<bool()> should_stop;
  std::chrono::milliseconds poll_interval{100};
  // Stopping sends SIGTERM to the child's process group and SIGKILL once this grace has passed.
  std::chrono::milliseconds kill_grace{3000};
  // Outer bound on the run; exceeding it stops the child as should_stop would.
  std::optional<std::chrono::milliseconds> timeout;

  static constexpr std::size_t kMaxLineBytes = 64 * 1024;
};

enum class ProcessEnd {
  kExited,         // ran to its end by itself
  kSignaled,       // a signal not sent by us ended it
  kStopped,        // should_stop asked for it to end
  kTimedOut,       // ProcessOptions::timeout ran out
  kFailedToStart,  // never ran; see ProcessResult::error
};

const char* to_string(ProcessEnd end) noexcept;

struct ProcessResult {
  ProcessEnd end = ProcessEnd::kFailedToStart;
  int exit_code = -1;  // when it exited by itself (also set if a stopped child exited on SIGTERM)
  int signal = 0;      // when kSignaled, or the signal that finally ended a stopped child
  std::string error;   // when kFailedToStart, e.g. "cannot execute '/no/such': No such file ..."
  std::chrono::milliseconds duration{0};

  bool succeeded() const noexcept { return end == ProcessEnd::kExited && exit_code == 0; }
  // One phrase for logs: "exited with status 3", "killed by signal 9", "stopped",
  // "timed out after 5s", "failed to start: <error>".
  std::string describe() const;
};

// Runs a Command: the program is `command.file_name` (looked up on PATH when it has no '/'),
// argv is file_name followed by split_arguments(command.arguments). The child runs in its own
// process group with stdin from /dev/null and stdout+stderr into one pipe; stopping or timing
// out signals the whole group so `bash -c "sleep 100 & wait"` dies entirely. When the program
// ends by itself, whatever it left running in its group is sent SIGTERM too, whether or not it
// holds the output (and SIGKILL after kill_grace if it still holds the output open): a work item
// owns everything it started. What ignores SIGTERM without holding the output outlives it.
// Stateless and thread-safe.
class ProcessExecutor {
 public:
  // Blocks until the child and the output pipe are done.
  // Throws ProcessError only when `command.arguments` cannot be split; a program that cannot
  // be started is a result with ProcessEnd::kFailedToStart. Rethrows what a callback throws.
  ProcessResult run(const Command& command, const ProcessOptions& options) const;
};

}  // namespace conductor
