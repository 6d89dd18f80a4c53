// BackgroundWorker: one thread for the server's slow file work (packing a large version,
// extracting and syncing a large result), so that the network thread keeps answering every
// client meanwhile. Jobs run one at a time in submission order. What a job returns, its
// completion, runs afterwards on the thread that calls run_completions() (the network
// thread), which alone touches the server's state. wake_fd() is readable while a completion
// waits, so the network thread polls it next to its sockets and reacts at once.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "wakeup.hpp"

namespace conductor {

class BackgroundWorker {
 public:
  using Completion = std::function<void()>;
  using Job = std::function<Completion()>;

  // Throws IoError when the wake-up descriptor cannot be made. `thread_name` (at most 15
  // characters, a string literal) names the thread for top, perf and gdb.
  explicit BackgroundWorker(const char* thread_name = "cdr-worker");
  // Lets the running job finish, drops queued jobs and waiting completions, joins.
  ~BackgroundWorker();
  BackgroundWorker(const BackgroundWorker&) = delete;
  BackgroundWorker& operator=(const BackgroundWorker&) = delete;

  // Queues `job`. A job that throws gets a completion that rethrows the same exception, so
  // the failure surfaces on the network thread. Thread-safe.
  void submit(Job job);

  // Queues `completion` to run on the thread that runs completions, as if a job had returned
  // it: for threads of their own (a result extracted while it arrives). Dropped once the worker
  // is being destroyed. Thread-safe.
  void post(Completion completion);

  // Runs the completions of finished jobs, oldest first; an exception from one propagates and
  // leaves the later ones for the next call (wake_fd() stays readable for them). Call from one
  // thread only, when wake_fd() is readable or at any other time.
  void run_completions();

  // An eventfd, readable while completions wait.
  int wake_fd() const noexcept { return wake_.fd(); }

 private:
  void work();

  std::mutex mutex_;
  std::condition_variable wanted_;
  std::deque<Job> jobs_;                 // guarded by mutex_
  std::deque<Completion> completions_;   // guarded by mutex_
  bool stopping_ = false;                // guarded by mutex_
  Wakeup wake_{"the background worker"};
  std::thread thread_;
};

}  // namespace conductor
