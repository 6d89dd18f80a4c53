#include "job_runner.hpp"

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "conductor/error.hpp"
#include "conductor/package.hpp"
#include "conductor/process_executor.hpp"
#include "conductor/sha256.hpp"
#include "conductor/training_monitor.hpp"
#include "file_io.hpp"
#include "result_receiver.hpp"

namespace conductor {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t kMaxPendingLines = 20000;  // beyond this, lines still reach console.log

}  // namespace

JobRunner::JobRunner(JobSpec spec, std::function<void()> notify)
    : spec_(std::move(spec)), notify_(std::move(notify)) {
  thread_ = std::thread([this] { work(); });
}

JobRunner::~JobRunner() {
  cancel();
  if (thread_.joinable()) thread_.join();
}

std::vector<std::string> JobRunner::take_lines(int& epoch, int& total_epochs) {
  std::lock_guard lock(mutex_);
  epoch = epoch_;
  total_epochs = total_epochs_;
  return std::exchange(lines_, {});
}

std::optional<JobOutcome> JobRunner::outcome() {
  std::lock_guard lock(mutex_);
  return outcome_;
}

void JobRunner::work() {
  JobOutcome outcome;
  try {
    outcome = run_commands();
  } catch (const std::exception& e) {
    outcome.succeeded = false;
    outcome.reason = e.what();
  }
  outcome.cancelled = is_cancelled();
  outcome.duration = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  if (!outcome.succeeded) outcome.log_tail = read_tail(spec_.console_log, 1u << 20);
  {
    std::lock_guard lock(mutex_);
    outcome_ = std::move(outcome);
  }
  notify_();
}

JobOutcome JobRunner::run_commands() {
  JobOutcome outcome;
  std::error_code ec;
  // Emptied, not removed and made again: the folder's inode is reused from item to item (a
  // creation on ext4 costs more than the files it holds when they are small). A link a command
  // put in its place is removed, never followed; what cannot be removed is left, as before.
  bool emptied = false;
  if (fs::is_directory(fs::symlink_status(spec_.work_dir, ec))) {
    emptied = true;
    for (fs::directory_iterator it(spec_.work_dir, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code removed;
      fs::remove_all(it->path(), removed);
      if (removed) emptied = false;
    }
    if (ec) emptied = false;
  }
  if (!emptied) {
    fs::remove_all(spec_.work_dir, ec);
    fs::create_directories(spec_.work_dir);
  }
  fs::create_directories(spec_.console_log.parent_path());
  std::set<std::string> input_names;
  for (std::size_t i = 0; i < spec_.packages.size(); ++i) {
    const auto& package = spec_.packages[i];
    const bool is_checked = i < spec_.package_sha256.size() && !spec_.package_sha256[i].empty();
    // A fresh download is hashed here, from the bytes unpacking reads: the client's network
    // thread only wrote it, and the file is read once.
    auto inputs = is_checked ? extract_verified(package, spec_.work_dir, spec_.package_sha256[i])
                             : extract(package, spec_.work_dir);
    input_names.insert(inputs.files.begin(), inputs.files.end());
  }
  packages_verified_.store(true);
  notify_();

  std::ofstream console(spec_.console_log, std::ios::trunc);
  TrainingMonitor monitor;
  ProcessExecutor executor;
  ProcessOptions options;
  options.working_directory = spec_.work_dir;
  options.environment = {{"CONDUCTOR_TYPE", spec_.processing_unit}};
  options.environment.insert(options.environment.end(), spec_.environment.begin(),
                             spec_.environment.end());
  options.should_stop = [&] { return is_cancelled() || monitor.is_aborted(); };
  options.on_line = [&](std::string_view line) {
    console << line << '\n';
    if (spec_.echo) spec_.echo(line);
    monitor.observe(line);
    {
      std::lock_guard lock(mutex_);
      if (lines_.size() < kMaxPendingLines) lines_.emplace_back(line);
      epoch_ = monitor.epoch();
      total_epochs_ = monitor.total_epochs();
    }
    notify_();
  };
  const auto started = started_;
  for (std::size_t i = 0; i < spec_.commands.size(); ++i) {
    const Command& command = spec_.commands[i];
    if (spec_.timeout.count() > 0) {
      auto left = spec_.timeout - std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::steady_clock::now() - started);
      options.timeout = std::max(left, std::chrono::milliseconds(1));
    }
    ProcessResult result = executor.run(command, options);
    std::string which = "command " + std::to_string(i + 1) + " of " +
                        std::to_string(spec_.commands.size()) + " (" + command.file_name + " " +
                        command.arguments + ")";
    if (monitor.is_aborted()) {
      outcome.reason = which + " aborted: " + monitor.abort_reason();
      return outcome;
    }
    if (is_cancelled()) {
      outcome.reason = which + " cancelled";
      return outcome;
    }
    if (!result.succeeded()) {
      outcome.reason = which + " " + result.describe();
      return outcome;
    }
  }
  console.flush();
  outcome.epochs = monitor.epoch();
  outcome.last_epoch = monitor.last_epoch_seconds().value_or(0.0);

  // Every file that was not an input is a result; the console log rides along under a name
  // that no training output can have.
  std::vector<PackEntry> outputs;
  for (auto& entry : list_files(spec_.work_dir)) {
    if (!input_names.contains(entry.name) && !entry.name.starts_with(".conductor/")) {
      outputs.push_back(std::move(entry));
    }
  }
  console.close();
  outputs.push_back({spec_.console_log, kConsoleLogEntry});
  fs::create_directories(spec_.result.parent_path());
  // zstd level 1: on this thread compression delays the upload; level 3 cost 0.5-0.9 s more per
  // 256 MiB of CSV for a few percent of size (docs/performance.md).
  pack(outputs, spec_.result,
       {.compression = Compression::kAuto, .level = 1, .sync = spec_.durable});
  outcome.size = fs::file_size(spec_.result);
  outcome.sha256 = sha256_file(spec_.result);
  outcome.succeeded = true;
  return outcome;
}

}  // namespace conductor
