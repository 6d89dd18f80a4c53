// PtyProcess: one program started by a test on a pseudo-terminal of its own (forkpty), so that
// it sees an interactive terminal on stdin, stdout and stderr; the test reads what it drew and
// types into it (Ctrl-C is "\x03", which the terminal turns into SIGINT as a real one would).
// Owns the process and the terminal: the destructor SIGKILLs the process if it still runs,
// reaps it and closes the terminal. Not thread-safe; use it from the test's thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "support/child_process.hpp"

namespace conductor::test {

struct PtyOptions {
  std::vector<std::string> argv;  // argv[0] is the program's path (not looked up in PATH)
  std::vector<std::pair<std::string, std::string>> environment;  // added to (or replacing) ours
  unsigned short columns = 100;
  unsigned short rows = 30;
};

class PtyProcess {
 public:
  // Starts the program. Throws ProcessError when the terminal or the process cannot be made.
  explicit PtyProcess(PtyOptions options);
  ~PtyProcess();
  PtyProcess(const PtyProcess&) = delete;
  PtyProcess& operator=(const PtyProcess&) = delete;

  pid_t pid() const noexcept { return pid_; }
  // Everything the program wrote to its terminal so far, terminal controls included.
  const std::string& output();
  // Types `text` into the terminal.
  void type(const std::string& text);
  // The exit status once it ended, or nullopt if it still runs after `timeout`; keeps reading
  // its output meanwhile, so a program that writes a lot cannot block on a full terminal.
  std::optional<ExitStatus> wait_for_exit(std::chrono::milliseconds timeout);

 private:
  void drain();
  bool try_reap();

  int master_ = -1;
  pid_t pid_ = -1;
  std::string output_;
  std::optional<ExitStatus> status_;
};

}  // namespace conductor::test
