#include "background_worker.hpp"

#include <sys/eventfd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <exception>

#include "conductor/error.hpp"

namespace conductor {

BackgroundWorker::BackgroundWorker() : wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!wake_.is_open()) {
    throw IoError(std::string("cannot make the background worker's eventfd: ") +
                  std::strerror(errno));
  }
  thread_ = std::thread([this] { work(); });
}

BackgroundWorker::~BackgroundWorker() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    jobs_.clear();
  }
  wanted_.notify_all();
  thread_.join();
}

void BackgroundWorker::submit(Job job) {
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(job));
  }
  wanted_.notify_one();
}

void BackgroundWorker::run_completions() {
  std::uint64_t count = 0;
  // Non-blocking: EAGAIN only says nothing was signalled since the last read.
  [[maybe_unused]] const ssize_t got = ::read(wake_.get(), &count, sizeof count);
  for (;;) {
    Completion completion;
    {
      std::lock_guard lock(mutex_);
      if (completions_.empty()) return;
      completion = std::move(completions_.front());
      completions_.pop_front();
    }
    completion();
  }
}

void BackgroundWorker::work() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mutex_);
      wanted_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    Completion completion;
    try {
      completion = job();
    } catch (...) {
      completion = [failure = std::current_exception()] { std::rethrow_exception(failure); };
    }
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      if (completion) completions_.push_back(std::move(completion));
    }
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t put = ::write(wake_.get(), &one, sizeof one);
  }
}

}  // namespace conductor
