#include "running_commands.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <system_error>
#include <thread>
#include <utility>

#include "conductor/error.hpp"
#include "file_io.hpp"

namespace fs = std::filesystem;

namespace conductor {
namespace {

using Clock = std::chrono::steady_clock;

// The first line of a small file; empty when it cannot be read.
std::string first_line(const fs::path& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string current_boot_id() { return first_line("/proc/sys/kernel/random/boot_id"); }

std::optional<long> parse_number(std::string_view text) {
  long value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

struct ProcessStat {
  std::string name;
  char state = '?';
  long group = 0;
  std::uint64_t start = 0;  // clock ticks after boot
};

// /proc/<pid>/stat; nullopt when the process is gone. The name (field 2) may hold blanks and
// parentheses, so the fields after it are found from the last ')'.
std::optional<ProcessStat> read_stat(long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!in || !std::getline(in, text)) return std::nullopt;
  const auto open = text.find('(');
  const auto close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  ProcessStat stat;
  stat.name = text.substr(open + 1, close - open - 1);
  std::istringstream fields(text.substr(close + 1));
  long parent = 0;
  fields >> stat.state >> parent >> stat.group;  // fields 3, 4, 5
  std::string skipped;
  for (int field = 6; field < 22 && fields; ++field) fields >> skipped;
  fields >> stat.start;  // field 22
  if (!fields) return std::nullopt;
  return stat;
}

// "name (pid)" of every process in `group` that still runs (zombies wait only to be reaped).
std::vector<std::string> live_members(long group) {
  std::vector<std::string> members;
  std::error_code ec;
  for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const std::optional<long> pid = parse_number(name);
    if (!pid) continue;
    const std::optional<ProcessStat> stat = read_stat(*pid);
    if (!stat || stat->group != group || stat->state == 'Z' || stat->state == 'X') continue;
    members.push_back(stat->name + " (" + name + ")");
  }
  return members;
}

// Waits up to `limit` for every process of `group` to end; true when none is left.
bool wait_for_group(long group, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  for (;;) {
    if (live_members(group).empty()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string join(const std::vector<std::string>& parts) {
  std::string text;
  for (const auto& part : parts) text += (text.empty() ? "" : ", ") + part;
  return text;
}

}  // namespace

RunningCommands::RunningCommands(fs::path folder)
    : folder_(std::move(folder)), boot_id_(current_boot_id()) {
  std::error_code ec;
  fs::create_directories(folder_, ec);
  if (ec) throw IoError("cannot create '" + folder_.string() + "': " + ec.message());
}

fs::path RunningCommands::file_of(int slot) const { return folder_ / std::to_string(slot); }

void RunningCommands::write(int slot, const std::string& text) {
  const fs::path file = file_of(slot);
  UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
  const bool written =
      fd.is_open() &&
      ::pwrite(fd.get(), text.data(), text.size(), 0) == static_cast<ssize_t>(text.size()) &&
      ::ftruncate(fd.get(), static_cast<off_t>(text.size())) == 0;
  if (!written || fd.close() != 0) {
    throw IoError("cannot write '" + file.string() + "': " + std::strerror(errno));
  }
}

void RunningCommands::record(int slot, int process_group) {
  const std::optional<ProcessStat> leader = read_stat(process_group);
  if (!leader) {
    throw IoError("cannot record process group " + std::to_string(process_group) + ": /proc/" +
                  std::to_string(process_group) + "/stat is unreadable");
  }
  write(slot, std::to_string(process_group) + " " + std::to_string(leader->start) + " " + boot_id_ +
                  "\n");
}

void RunningCommands::clear(int slot) { write(slot, {}); }

std::vector<std::string> RunningCommands::stop_leftovers(std::chrono::milliseconds grace) {
  std::vector<std::string> report;
  std::error_code ec;
  for (fs::directory_iterator it(folder_, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path file = it->path();
    const std::optional<long> slot = parse_number(file.filename().string());
    if (!slot || !it->is_regular_file(ec)) continue;
    const std::string text = first_line(file);
    if (text.empty()) continue;
    std::istringstream fields(text);
    long group = 0;
    std::uint64_t start = 0;
    std::string boot;
    if (!(fields >> group >> start >> boot) || group <= 1) {
      report.push_back("ignored an unreadable record of a running command in '" + file.string() +
                       "': '" + text.substr(0, 80) + "'");
    } else if (boot == boot_id_) {
      const std::optional<ProcessStat> leader = read_stat(group);
      // A leader alive with another start time is a process that reused the id: the recorded
      // group ended with its last process, since an id stays taken while its group has one.
      const bool is_ours = !leader || leader->start == start;
      const std::vector<std::string> members =
          is_ours ? live_members(group) : std::vector<std::string>{};
      if (!members.empty()) {
        const std::string what = "process group " + std::to_string(group) + " (" + join(members) +
                                 ") that an earlier client left running in slot " +
                                 std::to_string(*slot);
        if (::kill(static_cast<pid_t>(-group), SIGTERM) != 0 && errno != ESRCH) {
          report.push_back("cannot stop " + what + ": " + std::strerror(errno));
        } else if (wait_for_group(group, grace)) {
          report.push_back("stopped " + what + " (SIGTERM)");
        } else {
          ::kill(static_cast<pid_t>(-group), SIGKILL);
          const bool ended = wait_for_group(group, std::chrono::seconds(1));
          report.push_back((ended ? "stopped " : "could not stop ") + what + " (SIGKILL after " +
                           std::to_string(grace.count()) + " ms)");
        }
      }
    }
    write(static_cast<int>(*slot), {});
  }
  if (ec) report.push_back("cannot read '" + folder_.string() + "': " + ec.message());
  return report;
}

}  // namespace conductor
