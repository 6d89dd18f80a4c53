#include "support/child_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <thread>

#include "conductor/error.hpp"
#include "support/temp_dir.hpp"

extern char** environ;

namespace conductor::test {

namespace {

// posix_spawn's file actions and attributes need cleaning up on every path out.
class SpawnSetup {
 public:
  SpawnSetup() {
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawnattr_init(&attributes);
  }
  ~SpawnSetup() {
    ::posix_spawn_file_actions_destroy(&actions);
    ::posix_spawnattr_destroy(&attributes);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
};

}  // namespace

std::vector<std::string> environment_with(
    const std::vector<std::pair<std::string, std::string>>& additions) {
  std::map<std::string, std::string> variables;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string text(*entry);
    auto equals = text.find('=');
    if (equals == std::string::npos) continue;
    variables[text.substr(0, equals)] = text.substr(equals + 1);
  }
  for (const auto& [name, value] : additions) variables[name] = value;
  std::vector<std::string> result;
  for (const auto& [name, value] : variables) result.push_back(name + "=" + value);
  return result;
}

std::vector<char*> c_pointers(std::vector<std::string>& strings) {
  std::vector<char*> result;
  for (auto& text : strings) result.push_back(text.data());
  result.push_back(nullptr);
  return result;
}

std::string ExitStatus::describe() const {
  if (signal != 0) return "killed by signal " + std::to_string(signal);
  return "exit code " + std::to_string(code);
}

ChildProcess::ChildProcess(ChildOptions options) : options_(std::move(options)) {
  if (options_.argv.empty()) throw ProcessError("ChildProcess needs a program to start");
  const std::string& program = options_.argv.front();
  // Opened here, not in the child, so a bad path is reported as what it is.
  int output = ::open(options_.output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (output < 0) {
    throw IoError("cannot open " + options_.output.string() + ": " + std::strerror(errno));
  }
  int errors = output;
  if (!options_.error_output.empty()) {
    errors = ::open(options_.error_output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (errors < 0) {
      int code = errno;
      ::close(output);
      throw IoError("cannot open " + options_.error_output.string() + ": " + std::strerror(code));
    }
  }
  SpawnSetup setup;
  const std::string input = options_.input.empty() ? "/dev/null" : options_.input.string();
  ::posix_spawn_file_actions_addopen(&setup.actions, 0, input.c_str(), O_RDONLY, 0);
  ::posix_spawn_file_actions_adddup2(&setup.actions, output, 1);
  ::posix_spawn_file_actions_adddup2(&setup.actions, errors, 2);
  if (!options_.working_directory.empty()) {
    ::posix_spawn_file_actions_addchdir_np(&setup.actions, options_.working_directory.c_str());
  }
  // A test runner may block or ignore signals; the programs under test must see the defaults,
  // or "exits 0 on SIGTERM" could never be observed.
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int signal : {SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGCHLD}) sigaddset(&defaults, signal);
  ::posix_spawnattr_setsigmask(&setup.attributes, &none);
  ::posix_spawnattr_setsigdefault(&setup.attributes, &defaults);
  ::posix_spawnattr_setflags(&setup.attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<std::string> arguments = options_.argv;
  std::vector<std::string> environment = environment_with(options_.environment);
  auto argv = c_pointers(arguments);
  auto envp = c_pointers(environment);
  int result = ::posix_spawn(&pid_, program.c_str(), &setup.actions, &setup.attributes, argv.data(),
                             envp.data());
  ::close(output);
  if (errors != output) ::close(errors);
  if (result != 0) {
    pid_ = -1;
    throw ProcessError("cannot start " + program + ": " + std::strerror(result));
  }
}

ChildProcess::~ChildProcess() {
  if (pid_ <= 0 || status_) return;
  ::kill(pid_, SIGKILL);
  int raw = 0;
  while (::waitpid(pid_, &raw, 0) < 0 && errno == EINTR) {
  }
}

std::string ChildProcess::output() const { return read_file_if_present(options_.output); }

void ChildProcess::kill(int signal) noexcept {
  if (pid_ > 0 && !status_) ::kill(pid_, signal);
}

bool ChildProcess::try_reap() noexcept {
  if (status_) return true;
  int raw = 0;
  pid_t reaped = ::waitpid(pid_, &raw, WNOHANG);
  if (reaped != pid_) return false;
  ExitStatus status;
  if (WIFEXITED(raw)) status.code = WEXITSTATUS(raw);
  if (WIFSIGNALED(raw)) status.signal = WTERMSIG(raw);
  status_ = status;
  return true;
}

std::optional<ExitStatus> ChildProcess::wait_for_exit(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return status_;
  wait_until(
      deadline_in(timeout), [this] { return try_reap(); }, std::chrono::milliseconds(5));
  return status_;
}

ExitStatus ChildProcess::stop(std::chrono::milliseconds grace) {
  kill(SIGTERM);
  if (auto status = wait_for_exit(grace)) return *status;
  kill(SIGKILL);
  // SIGKILL cannot be caught, so the wait is short; the bound only guards against a kernel hang.
  if (auto status = wait_for_exit(std::chrono::seconds(10))) return *status;
  return ExitStatus{};
}

bool wait_until(Deadline deadline, const std::function<bool()>& condition,
                std::chrono::milliseconds interval) {
  while (true) {
    if (condition()) return true;
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(interval, deadline - now));
  }
}

}  // namespace conductor::test
