#include "job_runner.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "conductor/error.hpp"
#include "conductor/package.hpp"
#include "conductor/process_executor.hpp"
#include "conductor/sha256.hpp"
#include "conductor/training_monitor.hpp"
#include "file_io.hpp"
#include "random_id.hpp"
#include "result_receiver.hpp"
#include "running_commands.hpp"
#include "thread_name.hpp"

namespace conductor {

namespace fs = std::filesystem;

namespace {

// Tells JobSpec::on_command that a command has ended as it goes out of scope, however the
// command ended; what that throws is dropped (the command's outcome is what counts).
class CommandEnded {
 public:
  explicit CommandEnded(const std::function<void(int, const std::string&)>& on_command)
      : on_command_(on_command) {}
  ~CommandEnded() {
    try {
      if (on_command_) on_command_(0, {});
    } catch (...) {
    }
  }
  CommandEnded(const CommandEnded&) = delete;
  CommandEnded& operator=(const CommandEnded&) = delete;

 private:
  const std::function<void(int, const std::string&)>& on_command_;
};

constexpr std::size_t kMaxPendingLines = 20000;  // beyond this, lines still reach console.log

}  // namespace

// The job's console: in memory while it is small and young (a short job then creates no file
// for it), in JobSpec::console_log from the moment it is not, where a person can follow it.
class ConsoleLog {
 public:
  ConsoleLog(fs::path file, bool memory_first) : file_(std::move(file)) {
    if (!memory_first) to_file();
  }

  void add(std::string_view line) {
    if (is_in_file_) {
      out_ << line << '\n';
      return;
    }
    text_.append(line);
    text_ += '\n';
    if (text_.size() > JobRunner::kMemoryConsoleBytes) to_file();
  }

  // The job has run `elapsed`: long enough, and what it said goes to the file. Called every
  // poll interval (100 ms), which is also how soon a line reaches the file for a person
  // following it there: one write per interval, not one per line.
  void tick(std::chrono::steady_clock::duration elapsed) {
    if (!is_in_file_ && elapsed >= JobRunner::kConsoleFileAfter) to_file();
    if (is_in_file_) out_.flush();
  }

  bool is_in_memory() const { return !is_in_file_; }
  const std::string& text() const { return text_; }
  void close() { out_.close(); }

  // The last `max_bytes`, from memory or from the file.
  std::string tail(std::size_t max_bytes) {
    if (is_in_file_) {
      out_.flush();
      return read_tail(file_, max_bytes);
    }
    return text_.size() > max_bytes ? text_.substr(text_.size() - max_bytes) : text_;
  }

 private:
  void to_file() {
    is_in_file_ = true;
    std::error_code ignored;
    fs::create_directories(file_.parent_path(), ignored);
    out_.open(file_, std::ios::trunc);  // a console that cannot be written is only not kept
    out_ << text_;
    text_ = {};
  }

  fs::path file_;
  std::ofstream out_;
  std::string text_;
  bool is_in_file_ = false;
};

JobRunner::JobRunner(JobSpec spec, std::function<void()> notify)
    : spec_(std::move(spec)), notify_(std::move(notify)) {
  thread_ = std::thread([this] {
    name_this_thread("cdr-job");
    work();
  });
}

JobRunner::~JobRunner() {
  cancel();
  wait();
}

void JobRunner::wait() {
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
  ConsoleLog console(spec_.console_log, spec_.memory_result_bytes > 0);
  try {
    outcome = run_commands(console);
  } catch (const std::exception& e) {
    outcome = JobOutcome{};
    outcome.reason = e.what();
  }
  outcome.cancelled = is_cancelled();
  outcome.console_in_file = !console.is_in_memory();
  outcome.duration = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  if (!outcome.succeeded) outcome.log_tail = console.tail(1u << 20);
  {
    std::lock_guard lock(mutex_);
    outcome_ = std::move(outcome);
  }
  notify_();
}

JobOutcome JobRunner::run_commands(ConsoleLog& console) {
  JobOutcome outcome;
  std::error_code ec;
  // Emptied, not removed and made again: the folder's inode is reused from item to item (a
  // creation on ext4 costs more than the files it holds when they are small), and so are the
  // inodes of the last item's top-level files, which the packages rewrite in place where they
  // hold the same names (the version's scripts, a prediction's inputs); the rest go once the
  // packages are unpacked. A link a command put in the folder's place is removed, never
  // followed; what cannot be removed is left, as before.
  std::set<std::string> reusable;
  bool emptied = false;
  if (fs::is_directory(fs::symlink_status(spec_.work_dir, ec))) {
    emptied = true;
    for (fs::directory_iterator it(spec_.work_dir, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code removed;
      // Small ones only: the inode is what is saved, and a big left-over would take up the
      // disk while the next packages are unpacked. One lstat tells all three.
      struct stat info {};
      if (::lstat(it->path().c_str(), &info) == 0 && S_ISREG(info.st_mode) && info.st_nlink == 1 &&
          static_cast<std::uintmax_t>(info.st_size) <= kReusableFileBytes) {
        reusable.insert(it->path().filename().string());
        continue;
      }
      fs::remove_all(it->path(), removed);
      if (removed) emptied = false;
    }
    if (ec) emptied = false;
  }
  if (!emptied) {
    reusable.clear();
    fs::remove_all(spec_.work_dir, ec);
    fs::create_directories(spec_.work_dir);
  }
  std::set<std::string> input_names;
  // Left-overs no package rewrote go, also when unpacking failed.
  auto remove_left_overs = [&] {
    for (const std::string& name : std::exchange(reusable, {})) {
      if (::unlink((spec_.work_dir / name).c_str()) != 0 && errno != ENOENT) {
        throw IoError("cannot empty " + spec_.work_dir.string() + " of " + name + ": " +
                      std::strerror(errno));
      }
    }
  };
  try {
    for (std::size_t i = 0; i < spec_.packages.size(); ++i) {
      const auto& package = spec_.packages[i];
      const bool is_checked = i < spec_.package_sha256.size() && !spec_.package_sha256[i].empty();
      // A fresh download is hashed here, from the bytes unpacking reads: the client's network
      // thread only wrote it, and the file is read once.
      ExtractOptions options;
      options.reusable = &reusable;
      ExtractLimits limits;
      limits.min_free_bytes = spec_.min_free_bytes;
      auto inputs = is_checked ? extract_verified(package, spec_.work_dir, spec_.package_sha256[i],
                                                  limits, options)
                               : extract(package, spec_.work_dir, limits, options);
      input_names.insert(inputs.files.begin(), inputs.files.end());
    }
  } catch (...) {
    try {
      remove_left_overs();
    } catch (const std::exception&) {
      // The unpacking failure is the one to report; the next item empties the folder again.
    }
    throw;
  }
  remove_left_overs();
  packages_verified_.store(true);
  // The reader settles checked downloads on hearing of it; nothing to settle, no wake-up.
  const bool checked = std::any_of(spec_.package_sha256.begin(), spec_.package_sha256.end(),
                                   [](const std::string& sha256) { return !sha256.empty(); });
  if (checked) notify_();

  TrainingMonitor monitor;
  ProcessExecutor executor;
  ProcessOptions options;
  options.working_directory = spec_.work_dir;
  options.environment = {{"CONDUCTOR_TYPE", spec_.processing_unit}};
  options.environment.insert(options.environment.end(), spec_.environment.begin(),
                             spec_.environment.end());
  // Asked every poll interval while a command runs: the console's clock ticks here too.
  options.should_stop = [&] {
    console.tick(std::chrono::steady_clock::now() - started_);
    return is_cancelled() || monitor.is_aborted();
  };
  options.on_line = [&](std::string_view line) {
    console.add(line);
    if (spec_.echo) spec_.echo(line);
    monitor.observe(line);
    bool first_waiting = false;
    {
      std::lock_guard lock(mutex_);
      first_waiting = lines_.empty();
      if (lines_.size() < kMaxPendingLines) lines_.emplace_back(line);
      epoch_ = monitor.epoch();
      total_epochs_ = monitor.total_epochs();
    }
    // Lines already waiting have woken the reader, which takes them all at once.
    if (first_waiting && spec_.wake_on_lines) notify_();
  };
  std::string token;
  if (spec_.on_command) {
    options.environment.emplace_back(RunningCommands::kTokenVariable, std::string());
    options.on_started = [&](int pid) { spec_.on_command(pid, token); };
  }
  const auto started = started_;
  for (std::size_t i = 0; i < spec_.commands.size(); ++i) {
    const Command& command = spec_.commands[i];
    if (spec_.timeout.count() > 0) {
      auto left = spec_.timeout - std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::steady_clock::now() - started);
      options.timeout = std::max(left, std::chrono::milliseconds(1));
    }
    if (spec_.on_command) {
      token = random_uuid();
      options.environment.back().second = token;
    }
    const CommandEnded tell_ended(spec_.on_command);
    ProcessResult result = executor.run(command, options);
    std::string which = "command " + std::to_string(i + 1) + " of " +
                        std::to_string(spec_.commands.size()) + " (" + command.file_name + " " +
                        command.arguments + ")";
    if (monitor.is_aborted()) {
      outcome.reason = which + " aborted: " + monitor.abort_reason();
      return outcome;
    }
    // The last command having succeeded, the work is done: its result is packed even when a
    // cancel came meanwhile (a client's stop keeps it for its next run; a server's CANCEL
    // drops it all the same).
    const bool is_done = result.succeeded() && i + 1 == spec_.commands.size();
    if (is_cancelled() && !is_done) {
      outcome.reason = which + " cancelled";
      return outcome;
    }
    if (!result.succeeded()) {
      outcome.reason = which + " " + result.describe();
      return outcome;
    }
  }
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
  if (console.is_in_memory()) {
    outputs.push_back(PackEntry::in_memory(kConsoleLogEntry, console.text()));
  } else {
    outputs.push_back({spec_.console_log, kConsoleLogEntry});
  }
  std::uint64_t result_bytes = 0;
  for (const PackEntry& entry : outputs) {
    result_bytes += entry.content ? entry.content->size() : fs::file_size(entry.source);
  }
  // zstd level 1: on this thread compression delays the upload; level 3 cost 0.5-0.9 s more per
  // 256 MiB of CSV for a few percent of size (docs/performance.md).
  const PackOptions pack_options{.compression = Compression::kAuto, .level = 1, .sync = spec_.durable};
  if (spec_.memory_result_bytes > 0 && result_bytes <= spec_.memory_result_bytes) {
    auto archive = std::make_shared<const std::string>(pack_to_memory(outputs, pack_options));
    outcome.size = archive->size();
    outcome.sha256 = sha256_hex(*archive);
    outcome.archive = std::move(archive);
  } else {
    fs::create_directories(spec_.result.parent_path());
    pack(outputs, spec_.result, pack_options);
    outcome.size = fs::file_size(spec_.result);
    outcome.sha256 = sha256_file(spec_.result);
  }
  outcome.succeeded = true;
  return outcome;
}

}  // namespace conductor
