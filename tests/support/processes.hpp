// Looking at processes the tests did not start themselves (a client's commands, their
// children) through /proc, and killing what a failed check left running without ever hitting
// a process that took over its id. Header-only.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace conductor::test {

struct ProcessState {
  char state = '?';         // 'Z': a zombie, waiting to be reaped
  std::uint64_t start = 0;  // clock ticks after boot
};

// From /proc/<pid>/stat; nullopt once the process is gone.
inline std::optional<ProcessState> process_state(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(close + 1));
  ProcessState state;
  fields >> state.state;
  std::string skipped;
  for (int field = 4; field < 22 && fields; ++field) fields >> skipped;
  fields >> state.start;
  if (!fields) return std::nullopt;
  return state;
}

// Still running: neither gone nor a zombie.
inline bool is_running_process(pid_t pid) {
  const auto state = process_state(pid);
  return state && state->state != 'Z';
}

// SIGKILL at scope exit to each process added, if it still is the process it was when added
// (the same start time): a process that took over the id since is left alone.
class KillOnExit {
 public:
  KillOnExit() = default;
  ~KillOnExit() {
    for (const auto& [pid, start] : processes_) {
      const auto state = process_state(pid);
      if (state && state->start == start) ::kill(pid, SIGKILL);
    }
  }
  KillOnExit(const KillOnExit&) = delete;
  KillOnExit& operator=(const KillOnExit&) = delete;

  void add(pid_t pid) {
    if (const auto state = process_state(pid)) processes_.emplace_back(pid, state->start);
  }

 private:
  std::vector<std::pair<pid_t, std::uint64_t>> processes_;
};

}  // namespace conductor::test
