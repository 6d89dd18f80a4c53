#include "support/pty_process.hpp"

#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "conductor/error.hpp"

namespace conductor::test {

PtyProcess::PtyProcess(PtyOptions options) {
  if (options.argv.empty()) throw ProcessError("PtyProcess needs a program to start");
  // Everything the child needs is made before fork: after it, only exec-safe calls.
  std::vector<std::string> arguments = options.argv;
  std::vector<std::string> environment = environment_with(options.environment);
  auto argv = c_pointers(arguments);
  auto envp = c_pointers(environment);
  winsize size{};
  size.ws_col = options.columns;
  size.ws_row = options.rows;
  pid_ = ::forkpty(&master_, nullptr, nullptr, &size);
  if (pid_ < 0) throw ProcessError(std::string("forkpty failed: ") + std::strerror(errno));
  if (pid_ == 0) {
    // The test runner may block or ignore signals; the program must see the defaults.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int signal : {SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGCHLD}) ::signal(signal, SIG_DFL);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::fcntl(master_, F_SETFL, ::fcntl(master_, F_GETFL) | O_NONBLOCK);
  ::fcntl(master_, F_SETFD, FD_CLOEXEC);
}

PtyProcess::~PtyProcess() {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGKILL);
    int raw = 0;
    while (::waitpid(pid_, &raw, 0) < 0 && errno == EINTR) {
    }
  }
  if (master_ >= 0) ::close(master_);
}

void PtyProcess::drain() {
  char buffer[4096];
  while (true) {
    ssize_t n = ::read(master_, buffer, sizeof buffer);
    if (n > 0) {
      output_.append(buffer, static_cast<std::size_t>(n));
      continue;
    }
    // EAGAIN: nothing more now; EIO: the program and everything it started closed the terminal.
    if (n < 0 && errno == EINTR) continue;
    return;
  }
}

const std::string& PtyProcess::output() {
  drain();
  return output_;
}

void PtyProcess::type(const std::string& text) {
  std::size_t written = 0;
  while (written < text.size()) {
    ssize_t n = ::write(master_, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw IoError(std::string("cannot type into the terminal: ") + std::strerror(errno));
    written += static_cast<std::size_t>(n);
  }
}

bool PtyProcess::try_reap() {
  if (status_) return true;
  int raw = 0;
  if (::waitpid(pid_, &raw, WNOHANG) != pid_) return false;
  ExitStatus status;
  if (WIFEXITED(raw)) status.code = WEXITSTATUS(raw);
  if (WIFSIGNALED(raw)) status.signal = WTERMSIG(raw);
  status_ = status;
  drain();
  return true;
}

std::optional<ExitStatus> PtyProcess::wait_for_exit(std::chrono::milliseconds timeout) {
  wait_until(deadline_in(timeout), [this] {
    drain();
    return try_reap();
  }, std::chrono::milliseconds(10));
  return status_;
}

}  // namespace conductor::test
