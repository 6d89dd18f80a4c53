#include "running_commands.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "conductor/error.hpp"
#include "file_io.hpp"

namespace fs = std::filesystem;

namespace conductor {
namespace {

using Clock = std::chrono::steady_clock;

std::string error_text(int error) {
  return std::error_code(error, std::generic_category()).message();
}

// A small file's whole content (a /proc file has no size to ask for first); empty when it
// cannot be read.
std::string read_all(const fs::path& file) {
  std::string text;
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.is_open()) return text;
  char buffer[4096];
  for (;;) {
    const ssize_t got = ::read(fd.get(), buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return got < 0 ? std::string() : text;
    text.append(buffer, static_cast<std::size_t>(got));
  }
}

std::string first_line(const fs::path& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  return line;
}

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

// /proc/<pid>/stat; nullopt when the process is gone. The name (field 2) may hold blanks,
// parentheses and newlines, so the fields after it are found from the last ')'.
std::optional<ProcessStat> read_stat(long pid) {
  const std::string text = read_all("/proc/" + std::to_string(pid) + "/stat");
  const auto open = text.find('(');
  const auto close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  ProcessStat stat;
  stat.name = text.substr(open + 1, close - open - 1);
  // Fields 3 (state), 5 (process group) and 22 (start time), separated by single blanks.
  std::string_view rest = std::string_view(text).substr(close + 1);
  std::vector<std::string_view> fields;
  while (fields.size() < 20) {
    rest.remove_prefix(std::min(rest.find_first_not_of(' '), rest.size()));
    if (rest.empty()) return std::nullopt;
    const std::size_t end = std::min(rest.find(' '), rest.size());
    fields.push_back(rest.substr(0, end));
    rest.remove_prefix(end);
  }
  if (fields[0].size() != 1) return std::nullopt;
  stat.state = fields[0][0];
  const std::optional<long> group = parse_number(fields[2]);
  const std::optional<long> start = parse_number(fields[19]);
  if (!group || !start || *start < 0) return std::nullopt;
  stat.group = *group;
  stat.start = static_cast<std::uint64_t>(*start);
  return stat;
}

// Whether the environment `pid` started with holds `entry` ("NAME=value").
bool has_environment_entry(long pid, const std::string& entry) {
  const std::string environment = read_all("/proc/" + std::to_string(pid) + "/environ");
  for (std::size_t start = 0; start < environment.size();) {
    const std::size_t end = std::min(environment.find('\0', start), environment.size());
    if (std::string_view(environment).substr(start, end - start) == entry) return true;
    start = end + 1;
  }
  return false;
}

struct Member {
  long pid = 0;
  std::string name;
};

// The processes of `group` that still run (a zombie waits only to be reaped); when `entry` is
// set, only those whose environment holds it.
std::vector<Member> live_members(long group, const std::string& entry) {
  std::vector<Member> members;
  std::error_code ec;
  for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const std::optional<long> pid = parse_number(it->path().filename().string());
    if (!pid) continue;
    const std::optional<ProcessStat> stat = read_stat(*pid);
    if (!stat || stat->group != group || stat->state == 'Z' || stat->state == 'X') continue;
    if (!entry.empty() && !has_environment_entry(*pid, entry)) continue;
    members.push_back({*pid, stat->name});
  }
  return members;
}

// `text` as the whole content of `file`, written in place (created the first time only).
void write_in_place(const fs::path& file, const std::string& text) {
  UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
  int error = fd.is_open() ? 0 : errno;
  if (error == 0) {
    const ssize_t written = ::pwrite(fd.get(), text.data(), text.size(), 0);
    if (written < 0) {
      error = errno;
    } else if (static_cast<std::size_t>(written) != text.size()) {
      error = ENOSPC;
    } else if (::ftruncate(fd.get(), static_cast<off_t>(text.size())) != 0 || fd.close() != 0) {
      error = errno;
    }
  }
  if (error != 0) throw IoError("cannot write '" + file.string() + "': " + error_text(error));
}

// A command an earlier client left running, and what became of it.
struct Leftover {
  long slot = 0;
  long group = 0;
  bool whole_group = false;  // the leader runs: signal the group; else the token's holders
  std::string entry;         // CONDUCTOR_COMMAND_ID=<token>
  std::vector<Member> found;
  std::string error;  // a signal was refused
  bool needed_kill = false;

  std::vector<Member> remaining() const {
    return live_members(group, whole_group ? std::string() : entry);
  }
  void signal(int sig) {
    if (whole_group) {
      if (::kill(static_cast<pid_t>(-group), sig) != 0 && errno != ESRCH) error = error_text(errno);
      return;
    }
    for (const Member& member : remaining()) {
      if (::kill(static_cast<pid_t>(member.pid), sig) != 0 && errno != ESRCH) {
        error = error_text(errno);
      }
    }
  }
};

// Waits up to `limit` until no leftover without an error has a process left.
void wait_for(std::vector<Leftover>& leftovers, Clock::duration limit) {
  const auto deadline = Clock::now() + limit;
  for (;;) {
    bool any = false;
    for (const Leftover& leftover : leftovers) {
      any = any || (leftover.error.empty() && !leftover.remaining().empty());
    }
    if (!any || Clock::now() >= deadline) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string describe(const std::vector<Member>& members) {
  std::string text;
  for (const auto& member : members) {
    text += (text.empty() ? "" : ", ") + member.name + " (" + std::to_string(member.pid) + ")";
  }
  return text;
}

}  // namespace

RunningCommands::RunningCommands(fs::path folder)
    : folder_(std::move(folder)),
      boot_id_(first_line("/proc/sys/kernel/random/boot_id")),
      pid_namespace_([] {
        std::error_code ec;
        return fs::read_symlink("/proc/self/ns/pid", ec).string();
      }()) {
  std::error_code ec;
  fs::create_directories(folder_, ec);
  if (ec) throw IoError("cannot create '" + folder_.string() + "': " + ec.message());
}

fs::path RunningCommands::file_of(int slot) const { return folder_ / std::to_string(slot); }

void RunningCommands::record(int slot, int process_group, const std::string& token) {
  if (boot_id_.empty() || pid_namespace_.empty()) {
    throw IoError("cannot record process group " + std::to_string(process_group) +
                  ": /proc/sys/kernel/random/boot_id or /proc/self/ns/pid is unreadable");
  }
  const std::optional<ProcessStat> leader = read_stat(process_group);
  if (!leader) {
    throw IoError("cannot record process group " + std::to_string(process_group) + ": /proc/" +
                  std::to_string(process_group) + "/stat is unreadable");
  }
  write_in_place(file_of(slot), std::to_string(process_group) + " " +
                                    std::to_string(leader->start) + " " + boot_id_ + " " +
                                    pid_namespace_ + " " + token + "\n");
}

void RunningCommands::clear(int slot) { write_in_place(file_of(slot), {}); }

std::vector<std::string> RunningCommands::stop_leftovers(std::chrono::milliseconds grace) {
  std::vector<std::string> report;
  std::vector<fs::path> records;
  std::vector<Leftover> leftovers;
  std::error_code ec;
  for (fs::directory_iterator it(folder_, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path file = it->path();
    const std::optional<long> slot = parse_number(file.filename().string());
    std::error_code type_error;
    if (!slot || !it->is_regular_file(type_error)) continue;
    const std::string text = first_line(file);
    if (text.empty()) continue;
    records.push_back(file);
    std::istringstream fields(text);
    Leftover leftover;
    leftover.slot = *slot;
    std::uint64_t start = 0;
    std::string boot, pid_namespace, token;
    if (!(fields >> leftover.group >> start >> boot >> pid_namespace >> token) ||
        leftover.group <= 1) {
      report.push_back("ignored an unreadable record of a running command in '" + file.string() +
                       "': '" + text.substr(0, 120) + "'");
      continue;
    }
    if (boot_id_.empty() || boot != boot_id_ || pid_namespace != pid_namespace_) continue;
    leftover.entry = std::string(kTokenVariable) + "=" + token;
    const std::optional<ProcessStat> leader = read_stat(leftover.group);
    // A leader alive with another start time is a process that took the id over: the recorded
    // group ended with its last process, since an id stays taken while its group has one.
    if (leader && leader->start != start) continue;
    leftover.whole_group = leader.has_value();
    leftover.found = leftover.remaining();
    if (!leftover.found.empty()) leftovers.push_back(std::move(leftover));
  }
  if (ec) report.push_back("cannot read '" + folder_.string() + "': " + ec.message());

  for (Leftover& leftover : leftovers) leftover.signal(SIGTERM);
  wait_for(leftovers, grace);
  for (Leftover& leftover : leftovers) {
    if (leftover.error.empty() && !leftover.remaining().empty()) {
      leftover.needed_kill = true;
      leftover.signal(SIGKILL);
    }
  }
  wait_for(leftovers, std::chrono::seconds(1));
  for (const Leftover& leftover : leftovers) {
    const std::string what =
        "process group " + std::to_string(leftover.group) + " (" + describe(leftover.found) +
        ") that an earlier client left running in slot " + std::to_string(leftover.slot);
    const std::vector<Member> remaining = leftover.remaining();
    if (!leftover.error.empty()) {
      report.push_back("cannot stop " + what + ": " + leftover.error);
    } else if (!remaining.empty()) {
      report.push_back("could not stop " + what + ": " + describe(remaining) +
                       " still running after SIGKILL");
    } else {
      report.push_back("stopped " + what +
                       (leftover.needed_kill
                            ? " (SIGKILL after " + std::to_string(grace.count()) + " ms)"
                            : std::string(" (SIGTERM)")));
    }
  }
  for (const fs::path& file : records) {
    try {
      write_in_place(file, {});
    } catch (const IoError& e) {
      report.push_back(e.what());
    }
  }
  return report;
}

}  // namespace conductor
