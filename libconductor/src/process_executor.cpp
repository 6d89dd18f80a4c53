// Linux process execution. posix_spawn (vfork-based in glibc) reports a failed exec as an error
// and reaps that child itself, so no half-started copy of the caller ever runs on. A pidfd tells
// poll() when the child exits, so one poll() watches both the output pipe and the exit without
// a SIGCHLD handler, which a library must not install.
#include "conductor/process_executor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <memory>

#include "conductor/error.hpp"
#include "file_io.hpp"

extern char** environ;

namespace conductor {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// After SIGKILL the pipe can only stay open if a process that left the group (setsid) holds
// it; we stop waiting for its end of file after this long.
constexpr milliseconds kDrainAfterKill{1000};
constexpr std::size_t kReadChunk = 64 * 1024;
// glibc's choice when PATH is unset.
constexpr std::string_view kDefaultPath = "/bin:/usr/bin";

std::string errno_text(int error) {
  char buffer[256];
  return ::strerror_r(error, buffer, sizeof buffer);  // GNU variant: returns the text
}

milliseconds elapsed_since(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start);
}

int wait_millis(Clock::time_point now, Clock::time_point wake) {
  if (wake <= now) return 0;
  return static_cast<int>(std::chrono::ceil<milliseconds>(wake - now).count());
}

// Cuts a byte stream into lines for ProcessOptions::on_line.
class LineSplitter {
 public:
  explicit LineSplitter(const std::function<void(std::string_view)>& sink) : sink_(sink) {}

  void feed(std::string_view bytes) {
    if (after_cr_ && !bytes.empty() && bytes.front() == '\n') bytes.remove_prefix(1);
    after_cr_ = false;
    while (!bytes.empty()) {
      const std::size_t end = bytes.find_first_of("\r\n");
      if (end == std::string_view::npos) {
        append(bytes);
        return;
      }
      append(bytes.substr(0, end));
      emit();
      std::size_t next = end + 1;
      if (bytes[end] == '\r') {
        if (next < bytes.size() && bytes[next] == '\n') {
          ++next;
        } else if (next == bytes.size()) {
          after_cr_ = true;  // its '\n' may open the next read
        }
      }
      bytes.remove_prefix(next);
    }
  }

  void finish() {
    if (!partial_.empty()) emit();
  }

 private:
  void append(std::string_view bytes) {
    while (!bytes.empty()) {
      // A full buffer goes out only once more bytes arrive, so a line of exactly the limit
      // followed by its newline stays one line rather than gaining an empty successor.
      if (partial_.size() == ProcessOptions::kMaxLineBytes) emit();
      const std::size_t take =
          std::min(bytes.size(), ProcessOptions::kMaxLineBytes - partial_.size());
      partial_.append(bytes.substr(0, take));
      bytes.remove_prefix(take);
    }
  }

  void emit() {
    std::string line;
    line.swap(partial_);
    if (sink_) sink_(line);
  }

  const std::function<void(std::string_view)>& sink_;
  std::string partial_;
  bool after_cr_ = false;
};

// The parent's environment with `overrides` applied, as "NAME=value" strings.
// Returns an error message instead when an override cannot be an environment entry.
std::vector<std::string> build_environment(
    const std::vector<std::pair<std::string, std::string>>& overrides, std::string& error) {
  std::vector<std::string> entries;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    entries.emplace_back(*entry);
  }
  for (const auto& [name, value] : overrides) {
    if (name.empty() || name.find_first_of(std::string_view("=\0", 2)) != std::string::npos ||
        value.find('\0') != std::string::npos) {
      error = "cannot set environment variable '" + name +
              "': a name must be non-empty without '=', and neither may hold a NUL byte";
      return {};
    }
    const std::string prefix = name + "=";
    std::erase_if(entries, [&](const std::string& e) { return e.starts_with(prefix); });
    entries.push_back(prefix + value);
  }
  return entries;
}

std::string_view find_variable(const std::vector<std::string>& entries, std::string_view name) {
  for (const std::string& entry : entries) {
    std::string_view view(entry);
    if (view.size() > name.size() && view.starts_with(name) && view[name.size()] == '=') {
      return view.substr(name.size() + 1);
    }
  }
  return {};
}

// Searches PATH (the child's, since its environment is the one the command was written for)
// for `name`. Relative PATH entries resolve against the child's working directory, and the
// returned path is as the child will see it after its chdir.
std::optional<std::string> find_on_path(const std::string& name, std::string_view path,
                                        const fs::path& working_directory, std::string& error) {
  bool found_unexecutable = false;
  std::size_t begin = 0;
  while (begin <= path.size()) {
    std::size_t end = path.find(':', begin);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view dir = path.substr(begin, end - begin);
    begin = end + 1;
    const fs::path candidate = fs::path(dir.empty() ? "." : dir) / name;
    const fs::path as_seen_here = candidate.is_relative() && !working_directory.empty()
                                      ? working_directory / candidate
                                      : candidate;
    struct stat info {};
    if (::stat(as_seen_here.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) continue;
    if (::access(as_seen_here.c_str(), X_OK) == 0) return candidate.string();
    found_unexecutable = true;
  }
  error = found_unexecutable
              ? "cannot execute '" + name + "': Permission denied"
              : "cannot execute '" + name + "': not found on PATH (" + std::string(path) + ")";
  return std::nullopt;
}

// Starts `program` in its own process group with stdin from /dev/null and stdout and stderr on
// `output_fd`. Returns 0 or the errno that prevented the start (including a failed exec).
int spawn(const std::string& program, const std::vector<std::string>& argv,
          const std::vector<std::string>& environment, const fs::path& working_directory,
          int output_fd, pid_t& pid) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  if (int rc = ::posix_spawn_file_actions_init(&actions); rc != 0) return rc;
  if (int rc = ::posix_spawnattr_init(&attributes); rc != 0) {
    ::posix_spawn_file_actions_destroy(&actions);
    return rc;
  }
  int rc = 0;
  auto step = [&rc](int step_rc) {
    if (rc == 0) rc = step_rc;
  };
  if (!working_directory.empty()) {
    step(::posix_spawn_file_actions_addchdir_np(&actions, working_directory.c_str()));
  }
  step(::posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0));
  step(::posix_spawn_file_actions_adddup2(&actions, output_fd, STDOUT_FILENO));
  step(::posix_spawn_file_actions_adddup2(&actions, output_fd, STDERR_FILENO));
  // Descriptors other parts of the process opened without O_CLOEXEC (sockets, files) must
  // not leak into a training run that may outlive them.
  step(::posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1));

  // The caller may ignore SIGPIPE (ZeroMQ programs do) or block signals in this thread; an
  // ignored disposition and the mask survive exec, so reset them for the child: every signal,
  // which also spares glibc's child asking the disposition of each signal not named here
  // before it resets it (109 rt_sigaction calls per start instead of 64).
  sigset_t defaults;
  sigfillset(&defaults);
  sigset_t unblocked;
  sigemptyset(&unblocked);
  step(::posix_spawnattr_setsigdefault(&attributes, &defaults));
  step(::posix_spawnattr_setsigmask(&attributes, &unblocked));
  step(::posix_spawnattr_setpgroup(&attributes, 0));
  step(::posix_spawnattr_setflags(
      &attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK));

  auto pointers = [](const std::vector<std::string>& strings) {
    std::vector<char*> result;
    result.reserve(strings.size() + 1);
    for (const std::string& s : strings) result.push_back(const_cast<char*>(s.c_str()));
    result.push_back(nullptr);
    return result;
  };
  std::vector<char*> argv_pointers = pointers(argv);
  std::vector<char*> environment_pointers = pointers(environment);
  if (rc == 0) {
    rc = ::posix_spawn(&pid, program.c_str(), &actions, &attributes, argv_pointers.data(),
                       environment_pointers.data());
  }
  ::posix_spawnattr_destroy(&attributes);
  ::posix_spawn_file_actions_destroy(&actions);
  return rc;
}

// A started child whose process group we may signal until it is reaped. Its destructor kills
// and reaps a child still unreaped (a callback threw), so run() never leaks a process.
class RunningChild {
 public:
  // Through syscall(): glibc 2.36's <sys/pidfd.h> lacks C linkage for C++ callers.
  explicit RunningChild(pid_t pid)
      : pid_(pid), pidfd_(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))) {}
  RunningChild(const RunningChild&) = delete;
  RunningChild& operator=(const RunningChild&) = delete;
  ~RunningChild() {
    if (reaped_) return;
    signal_group(SIGKILL);
    reap();
  }

  // -1 when the kernel offers no pidfd; callers then poll has_exited() on a timer.
  int pidfd() const noexcept { return pidfd_.get(); }

  // Whether the child has ended, without reaping it: while it stays a zombie its pid, and so
  // its process group id, cannot be reused, which keeps signal_group() aimed at our group.
  bool has_exited() const {
    siginfo_t info{};
    return ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           info.si_pid == pid_;
  }

  void signal_group(int sig) const {
    assert(!reaped_);
    ::kill(-pid_, sig);  // ESRCH (group already gone) is fine
  }

  int reap() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    return status;
  }

 private:
  pid_t pid_;
  UniqueFd pidfd_;
  bool reaped_ = false;
};

// Feeds the child's output to on_line until the pipe closes and the child has exited, ending
// the child's group on request, on timeout, or because the child left it behind. Returns why
// we stopped the child, if we did.
std::optional<ProcessEnd> supervise(const RunningChild& child, UniqueFd& output,
                                    const ProcessOptions& options, Clock::time_point started) {
  LineSplitter lines(options.on_line);
  // Not zeroed: 64 KiB of memset per command is most of what a short command's output costs.
  const auto buffer = std::make_unique_for_overwrite<char[]>(kReadChunk);
  // "Never" is time_point::max() rather than an empty optional: GCC's -O2 flow analysis
  // reports optional<time_point> as maybe-uninitialized here.
  constexpr Clock::time_point kNever = Clock::time_point::max();
  const Clock::time_point deadline = options.timeout ? started + *options.timeout : kNever;
  Clock::time_point next_stop_check = started;
  std::optional<ProcessEnd> stop_reason;
  bool group_terminated = false;
  Clock::time_point kill_due = kNever;
  std::optional<Clock::time_point> give_up_reading;
  bool output_open = true;
  bool exited = false;
  milliseconds exit_check_backoff{1};  // only without a pidfd

  while (output_open || !exited) {
    const Clock::time_point now = Clock::now();
    const bool watching = !exited && !stop_reason;
    if (watching) {
      if (now >= deadline) {
        stop_reason = ProcessEnd::kTimedOut;
      } else if (options.should_stop && now >= next_stop_check) {
        next_stop_check = now + options.poll_interval;
        if (options.should_stop()) stop_reason = ProcessEnd::kStopped;
      }
    }
    // Ending the program ends what it left behind; both go through SIGTERM first.
    if ((stop_reason || exited) && !group_terminated) {
      child.signal_group(SIGTERM);
      group_terminated = true;
      kill_due = now + options.kill_grace;
    }
    if (now >= kill_due) {
      child.signal_group(SIGKILL);
      kill_due = kNever;
      give_up_reading = now + kDrainAfterKill;
    }
    if (exited && give_up_reading && now >= *give_up_reading) break;

    Clock::time_point wake = now + options.poll_interval;
    if (watching) wake = std::min(wake, deadline);
    if (watching && options.should_stop) wake = std::min(wake, next_stop_check);
    wake = std::min(wake, kill_due);
    if (give_up_reading) wake = std::min(wake, *give_up_reading);
    if (!exited && child.pidfd() < 0) {
      wake = std::min(wake, now + exit_check_backoff);
      exit_check_backoff = std::min(exit_check_backoff * 2, options.poll_interval);
    }

    pollfd fds[2];
    nfds_t count = 0;
    if (output_open) fds[count++] = pollfd{output.get(), POLLIN, 0};
    if (!exited && child.pidfd() >= 0) fds[count++] = pollfd{child.pidfd(), POLLIN, 0};
    // EINTR and the rare ENOMEM only shorten this wait; the loop re-checks everything.
    const int ready = ::poll(fds, count, wait_millis(now, wake));
    if (ready > 0 && output_open && fds[0].revents != 0) {
      const ssize_t got = ::read(output.get(), buffer.get(), kReadChunk);
      if (got > 0) {
        lines.feed(std::string_view(buffer.get(), static_cast<std::size_t>(got)));
      } else if (got == 0 || errno != EINTR) {
        output_open = false;
        output.reset();
        lines.finish();
      }
    }
    if (!exited) exited = child.has_exited();
  }
  if (output_open) lines.finish();
  // The pipe can close and the exit be seen in one pass, before the group was signalled above:
  // what the program left running with its output elsewhere (`nohup x > log &`) gets SIGTERM
  // too, while the unreaped leader keeps the group id ours. One that ignores SIGTERM and does
  // not hold the output is not waited for: only a /proc scan per command could tell it apart
  // from an orphan that is already a zombie.
  if (!group_terminated) child.signal_group(SIGTERM);
  return stop_reason;
}

std::string format_duration(milliseconds duration) {
  if (duration < std::chrono::seconds(1)) return std::to_string(duration.count()) + "ms";
  const auto tenths = duration.count() / 100;
  std::string text = std::to_string(tenths / 10);
  if (tenths % 10 != 0) text += "." + std::to_string(tenths % 10);
  return text + "s";
}

}  // namespace

std::vector<std::string> split_arguments(std::string_view arguments) {
  auto refuse = [&](const char* why) {
    return ProcessError("cannot split arguments `" + std::string(arguments) + "`: " + why);
  };
  if (arguments.find('\0') != std::string_view::npos) throw refuse("it contains a NUL byte");

  enum class Quote { kNone, kSingle, kDouble };
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;  // set by any quote too, so "" yields an empty word
  Quote quote = Quote::kNone;
  for (std::size_t i = 0; i < arguments.size(); ++i) {
    const char c = arguments[i];
    const bool has_next = i + 1 < arguments.size();
    switch (quote) {
      case Quote::kSingle:
        if (c == '\'') {
          quote = Quote::kNone;
        } else {
          word += c;
        }
        break;
      case Quote::kDouble:
        if (c == '"') {
          quote = Quote::kNone;
        } else if (c == '\\' && has_next &&
                   std::string_view("\"\\$`\n").find(arguments[i + 1]) != std::string_view::npos) {
          ++i;
          if (arguments[i] != '\n') word += arguments[i];  // backslash-newline joins lines
        } else {
          word += c;
        }
        break;
      case Quote::kNone:
        if (c == ' ' || c == '\t' || c == '\n') {
          if (in_word) words.push_back(std::move(word));
          word.clear();
          in_word = false;
        } else if (c == '\'') {
          quote = Quote::kSingle;
          in_word = true;
        } else if (c == '"') {
          quote = Quote::kDouble;
          in_word = true;
        } else if (c == '\\') {
          if (!has_next) throw refuse("it ends in a backslash that escapes nothing");
          ++i;
          if (arguments[i] == '\n') continue;  // line continuation: neither text nor separator
          word += arguments[i];
          in_word = true;
        } else {
          word += c;
          in_word = true;
        }
        break;
    }
  }
  if (quote == Quote::kSingle) throw refuse("a single quote is never closed");
  if (quote == Quote::kDouble) throw refuse("a double quote is never closed");
  if (in_word) words.push_back(std::move(word));
  return words;
}

const char* to_string(ProcessEnd end) noexcept {
  switch (end) {
    case ProcessEnd::kExited:
      return "exited";
    case ProcessEnd::kSignaled:
      return "signaled";
    case ProcessEnd::kStopped:
      return "stopped";
    case ProcessEnd::kTimedOut:
      return "timed out";
    case ProcessEnd::kFailedToStart:
      return "failed to start";
  }
  return "unknown";
}

std::string ProcessResult::describe() const {
  switch (end) {
    case ProcessEnd::kExited:
      return "exited with status " + std::to_string(exit_code);
    case ProcessEnd::kSignaled:
      return "killed by signal " + std::to_string(signal);
    case ProcessEnd::kStopped:
      return "stopped";
    case ProcessEnd::kTimedOut:
      return "timed out after " + format_duration(duration);
    case ProcessEnd::kFailedToStart:
      return "failed to start: " + error;
  }
  return "unknown end";
}

ProcessResult ProcessExecutor::run(const Command& command, const ProcessOptions& options) const {
  std::vector<std::string> argv = split_arguments(command.arguments);
  argv.insert(argv.begin(), command.file_name);

  const Clock::time_point started = Clock::now();
  ProcessResult result;
  auto fail = [&](std::string error) {
    result.end = ProcessEnd::kFailedToStart;
    result.error = std::move(error);
    result.duration = elapsed_since(started);
    return result;
  };

  const std::string& name = command.file_name;
  if (name.empty()) return fail("cannot execute a command whose file name is empty");
  const fs::path& directory = options.working_directory;
  // Checked here because a failed chdir inside posix_spawn reads like a missing program.
  if (std::error_code ec; !directory.empty() && !fs::is_directory(directory, ec)) {
    return fail("cannot execute '" + name + "' in '" + directory.string() +
                "': the working directory is missing or not a directory");
  }
  std::string error;
  const std::vector<std::string> environment = build_environment(options.environment, error);
  if (!error.empty()) return fail(error);
  std::string program = name;
  if (name.find('/') == std::string::npos) {
    std::string_view path = find_variable(environment, "PATH");
    std::optional<std::string> found =
        find_on_path(name, path.empty() ? kDefaultPath : path, directory, error);
    if (!found) return fail(error);
    program = std::move(*found);
  }

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return fail("cannot execute '" + name + "': no pipe for its output: " + errno_text(errno));
  }
  UniqueFd output(pipe_fds[0]);
  UniqueFd output_write_end(pipe_fds[1]);
  pid_t pid = -1;
  const int spawn_error = spawn(program, argv, environment, directory, pipe_fds[1], pid);
  output_write_end.reset();  // the child's copies alone must hold it, or EOF never comes
  if (spawn_error != 0) return fail("cannot execute '" + name + "': " + errno_text(spawn_error));

  RunningChild child(pid);
  if (options.on_started) options.on_started(pid);
  const std::optional<ProcessEnd> stop_reason = supervise(child, output, options, started);

  const int status = child.reap();
  result.duration = elapsed_since(started);
  if (WIFEXITED(status)) {
    result.end = ProcessEnd::kExited;
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.end = ProcessEnd::kSignaled;
    result.signal = WTERMSIG(status);
  }
  if (stop_reason) result.end = *stop_reason;
  return result;
}

}  // namespace conductor
