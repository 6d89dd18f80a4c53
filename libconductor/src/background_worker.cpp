#include "background_worker.hpp"

#include <exception>

#include "thread_name.hpp"

namespace conductor {

BackgroundWorker::BackgroundWorker(const char* thread_name)
    : thread_([this, thread_name] {
        name_this_thread(thread_name);
        work();
      }) {}

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

void BackgroundWorker::post(Completion completion) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    completions_.push_back(std::move(completion));
  }
  wake_.signal();
}

void BackgroundWorker::run_completions() {
  wake_.drain();
  for (;;) {
    Completion completion;
    {
      std::lock_guard lock(mutex_);
      if (completions_.empty()) return;
      completion = std::move(completions_.front());
      completions_.pop_front();
    }
    try {
      completion();
    } catch (...) {
      // Later completions stay queued: keep the descriptor readable so the next poll runs them.
      wake_.signal();
      throw;
    }
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
    wake_.signal();
  }
}

}  // namespace conductor
