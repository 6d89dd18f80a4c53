// JobRunner: runs one work item on the client's job thread. Unpacks the version package into an
// emptied working folder (checking the SHA-256 of a freshly downloaded archive on the way), runs
// the commands one after another, watches their console, and packs every file that was not an input
// (plus the console log) into a result archive. The network thread reads progress and the outcome
// through the thread-safe accessors; `notify` (called on the job thread) wakes it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "conductor/package.hpp"
#include "conductor/version.hpp"

namespace conductor {

struct JobSpec {
  std::string item;
  int attempt = 0;
  std::string version;
  std::vector<Command> commands;
  // Archives unpacked into the working folder in order: the version's package, then the
  // item's own inputs (a prediction's model and data), from the client's cache or just
  // downloaded.
  std::vector<ArchiveSource> packages;
  // Keeps the bytes of packages held in memory (a prediction's small inputs) alive.
  std::vector<std::shared_ptr<const std::string>> package_bytes;
  // For each package, the SHA-256 its bytes must have, checked while it is unpacked
  // (extract_verified): a download not checked yet. Empty, or an empty string: not checked.
  std::vector<std::string> package_sha256;
  std::filesystem::path work_dir;     // emptied and filled from the package
  // Unpacking refuses to leave less than this free on work_dir's file system
  // (ExtractLimits::min_free_bytes; 0: not checked).
  std::uint64_t min_free_bytes = 0;
  // Where every output line is kept. A job that says little and ends soon keeps them in memory
  // only: the file is written once the lines pass kMemoryConsoleBytes or the job has run
  // kConsoleFileAfter (or when memory_result_bytes is 0).
  std::filesystem::path console_log;
  std::filesystem::path result;       // the result archive to write
  // A result of at most this many bytes (files and console log, before packing) is packed into
  // memory (JobOutcome::archive) and `result` is not written: a short job's small result then
  // costs no file. 0: always written.
  std::uint64_t memory_result_bytes = 0;
  // fsync the result before it takes its name. A training model is kept until the server
  // acknowledges it, across the client's restarts; a prediction's answer is only worth its
  // request's deadline, and is computed again if a crash loses it.
  bool durable = true;
  std::string processing_unit;        // CONDUCTOR_TYPE for the commands
  // Further variables for the commands: the slot's CUDA_VISIBLE_DEVICES and CONDUCTOR_SLOT.
  std::vector<std::pair<std::string, std::string>> environment;
  std::chrono::milliseconds timeout{0};
  // Called on the job thread with each command's process group and token (a fresh random id
  // in the command's environment as CONDUCTOR_COMMAND_ID) right after it started, and with 0
  // and an empty token once it has ended, also when the job failed (RunningCommands keeps them
  // for the client's next start). It may throw when a command started, which stops the command
  // and fails the job with the exception's text; what it throws at the end is dropped.
  std::function<void(int process_group, const std::string& token)> on_command;
  // Called on the job thread with each line the commands print; empty: lines are not echoed.
  std::function<void(std::string_view)> echo;
  // Whether new lines wake the reader (`notify`): once each time lines wait where none did,
  // however many follow before take_lines(). Off for a prediction, whose lines the client
  // sends only with its result: the job then wakes the reader once verified packages are
  // unpacked (only when some package was checked) and once at its end.
  bool wake_on_lines = true;
};

struct JobOutcome {
  bool succeeded = false;
  bool cancelled = false;
  std::string reason;    // why it failed
  std::string log_tail;  // the end of the console log, for a failure report
  std::uint64_t size = 0;
  std::string sha256;
  // The result archive, when it was packed into memory (JobSpec::memory_result_bytes); else it
  // is in JobSpec::result.
  std::shared_ptr<const std::string> archive;
  // The console log went to JobSpec::console_log (a long or talkative job); else it was only
  // held in memory and no such file was made.
  bool console_in_file = false;
  double duration = 0;
  int epochs = 0;
  double last_epoch = 0;
};

class ConsoleLog;

class JobRunner {
 public:
  static constexpr std::size_t kMemoryConsoleBytes = std::size_t{64} << 10;
  // The last item's top-level files up to this size are rewritten in place by the next item's
  // packages where they hold the same names; bigger ones are removed first.
  static constexpr std::uintmax_t kReusableFileBytes = std::uintmax_t{1} << 20;
  static constexpr std::chrono::milliseconds kConsoleFileAfter{2000};

  JobRunner(JobSpec spec, std::function<void()> notify);
  ~JobRunner();  // cancels and joins
  JobRunner(const JobRunner&) = delete;
  JobRunner& operator=(const JobRunner&) = delete;

  const JobSpec& spec() const { return spec_; }
  // Stops the running command and runs no further one; once the last command has succeeded,
  // the result is packed all the same (succeeded and cancelled then both hold).
  void cancel() noexcept { cancelled_.store(true); }
  // Blocks until the job thread is done: outcome() is set then.
  void wait();
  bool is_cancelled() const noexcept { return cancelled_.load(); }

  // Lines printed since the last call, and the latest epoch i of n.
  std::vector<std::string> take_lines(int& epoch, int& total_epochs);
  // Set once the job thread is done; `notify` follows.
  std::optional<JobOutcome> outcome();
  // True once every package is unpacked, and so each one with a package_sha256 proven intact
  // (set before the commands run; `notify` follows when a package was checked). A job that
  // ends without it refused one.
  bool are_packages_verified() const noexcept { return packages_verified_.load(); }

 private:
  void work();
  JobOutcome run_commands(ConsoleLog& console);

  JobSpec spec_;
  std::function<void()> notify_;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> packages_verified_{false};
  std::mutex mutex_;
  std::vector<std::string> lines_;
  int epoch_ = 0;
  int total_epochs_ = 0;
  std::optional<JobOutcome> outcome_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::thread thread_;
};

}  // namespace conductor
