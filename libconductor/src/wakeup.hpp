// Wakeup: an eventfd that one thread polls next to its sockets (zmq::poll takes plain file
// descriptors) and any other thread, or a signal handler, makes readable to end that poll at
// once. Used by the server's network thread for operator calls, stop requests and the
// background worker's completions.
#pragma once

#include "file_io.hpp"

namespace conductor {

class Wakeup {
 public:
  // Throws IoError naming `what` when the eventfd cannot be made.
  explicit Wakeup(const char* what);

  // Makes fd() readable. Thread-safe and async-signal-safe (one write(2)).
  void signal() const noexcept;
  // Makes fd() unreadable again until the next signal(). Call from the polling thread.
  void drain() const noexcept;

  int fd() const noexcept { return fd_.get(); }

 private:
  UniqueFd fd_;
};

}  // namespace conductor
