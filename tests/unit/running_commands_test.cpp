// RunningCommands: the process group of each slot's command, written down so that the next
// client on the folder stops what a killed one left running, and nothing else.
#include "running_commands.hpp"

#include <doctest/doctest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/temp_dir.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using conductor::RunningCommands;
using conductor::test::read_file;
using conductor::test::read_file_if_present;
using conductor::test::TempDir;
using conductor::test::write_file;
using namespace std::chrono_literals;

// Whether `condition` holds within `limit`, asked every 20 ms.
template <typename Condition>
bool eventually(Condition&& condition, std::chrono::milliseconds limit = 3s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// `script` under /bin/sh as the leader of a process group of its own, as a client's command
// runs. The caller reaps it.
pid_t start_group(const std::string& script) {
  posix_spawnattr_t attributes;
  REQUIRE(::posix_spawnattr_init(&attributes) == 0);
  REQUIRE(::posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP) == 0);
  REQUIRE(::posix_spawnattr_setpgroup(&attributes, 0) == 0);
  std::string shell = "/bin/sh", flag = "-c", text = script;
  char* argv[] = {shell.data(), flag.data(), text.data(), nullptr};
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, "/bin/sh", nullptr, &attributes, argv, environ);
  ::posix_spawnattr_destroy(&attributes);
  REQUIRE(rc == 0);
  return pid;
}

// Still running: neither gone nor a zombie waiting to be reaped.
bool is_alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!stat || !std::getline(stat, text)) return false;
  const auto close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

// The pid a script wrote to `file`, once it has.
pid_t pid_written_to(const fs::path& file) {
  REQUIRE(
      eventually([&] { return read_file_if_present(file).find('\n') != std::string::npos; }, 10s));
  return std::stoi(read_file(file));
}

void reap(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
}

// SIGKILL to what a failed check may have left running.
class KillOnExit {
 public:
  explicit KillOnExit(std::vector<pid_t> pids) : pids_(std::move(pids)) {}
  ~KillOnExit() {
    for (pid_t pid : pids_) ::kill(pid, SIGKILL);
  }
  KillOnExit(const KillOnExit&) = delete;
  KillOnExit& operator=(const KillOnExit&) = delete;

 private:
  std::vector<pid_t> pids_;
};

}  // namespace

TEST_CASE("a command group an earlier client left running is stopped with SIGTERM, and only that") {
  TempDir root("conductor-running");
  const pid_t leader =
      start_group("sleep 60 & echo $! > '" + (root / "child").string() + ".tmp'; mv '" +
                  (root / "child").string() + ".tmp' '" + (root / "child").string() + "'; wait");
  const pid_t child = pid_written_to(root / "child");
  const pid_t bystander = start_group("sleep 60");  // a group nobody recorded
  KillOnExit cleanup({leader, child, bystander});
  RunningCommands(root / "running").record(3, leader);
  CHECK_FALSE(read_file(root / "running" / "3").empty());

  const auto started = std::chrono::steady_clock::now();
  const std::vector<std::string> report = RunningCommands(root / "running").stop_leftovers(5s);
  CHECK(std::chrono::steady_clock::now() - started < 4s);
  REQUIRE(report.size() == 1);
  INFO(report[0]);
  CHECK(report[0].starts_with("stopped process group " + std::to_string(leader) + " ("));
  CHECK(report[0].find("sleep (" + std::to_string(child) + ")") != std::string::npos);
  CHECK(report[0].find("left running in slot 3") != std::string::npos);
  CHECK(report[0].ends_with("(SIGTERM)"));
  CHECK_FALSE(is_alive(leader));
  CHECK(eventually([&] { return !is_alive(child); }));
  CHECK(is_alive(bystander));
  CHECK(read_file(root / "running" / "3").empty());
  reap(leader);
  ::kill(bystander, SIGKILL);
  reap(bystander);
}

TEST_CASE("a command group that ignores SIGTERM gets SIGKILL once the grace has passed") {
  TempDir root("conductor-running-stubborn");
  const pid_t leader = start_group(
      "trap '' TERM; sleep 60 & echo $! > '" + (root / "child.tmp").string() + "'; mv '" +
      (root / "child.tmp").string() + "' '" + (root / "child").string() + "'; wait");
  const pid_t child = pid_written_to(root / "child");
  KillOnExit cleanup({leader, child});
  RunningCommands(root / "running").record(0, leader);

  const auto started = std::chrono::steady_clock::now();
  const std::vector<std::string> report = RunningCommands(root / "running").stop_leftovers(200ms);
  const auto took = std::chrono::steady_clock::now() - started;
  CHECK(took >= 200ms);
  CHECK(took < 3s);
  REQUIRE(report.size() == 1);
  INFO(report[0]);
  CHECK(report[0].starts_with("stopped process group " + std::to_string(leader)));
  CHECK(report[0].ends_with("(SIGKILL after 200 ms)"));
  CHECK_FALSE(is_alive(leader));
  CHECK(eventually([&] { return !is_alive(child); }));
  reap(leader);
}

TEST_CASE("a process that took over a recorded id is never signalled") {
  TempDir root("conductor-running-reused");
  const pid_t other = start_group("sleep 60");
  KillOnExit cleanup({other});
  RunningCommands(root / "running").record(1, other);
  // The same id, started at another time: the recorded group ended and the id was reused.
  std::istringstream fields(read_file(root / "running" / "1"));
  long group = 0;
  unsigned long long start = 0;
  std::string boot;
  const bool parsed = static_cast<bool>(fields >> group >> start >> boot);
  REQUIRE(parsed);
  CHECK(group == other);
  write_file(root / "running" / "1",
             std::to_string(group) + " " + std::to_string(start + 1) + " " + boot + "\n");

  CHECK(RunningCommands(root / "running").stop_leftovers(5s).empty());
  CHECK(is_alive(other));
  CHECK(read_file(root / "running" / "1").empty());
  ::kill(other, SIGKILL);
  reap(other);
}

TEST_CASE("records of ended groups and of an earlier boot go quietly, unreadable ones are named") {
  TempDir root("conductor-running-stale");
  const pid_t ended = start_group("exit 0");
  RunningCommands(root / "running").record(0, ended);  // recorded while it still exists
  reap(ended);
  write_file(root / "running" / "1", "4242 17 not-this-boot\n");
  write_file(root / "running" / "2", "gone fishing\n");
  write_file(root / "running" / "notes.txt", "an operator's file\n");
  write_file(root / "running" / "3", "");

  const std::vector<std::string> report = RunningCommands(root / "running").stop_leftovers(5s);
  REQUIRE(report.size() == 1);
  CHECK(report[0] == "ignored an unreadable record of a running command in '" +
                         (root / "running" / "2").string() + "': 'gone fishing'");
  for (const char* slot : {"0", "1", "2", "3"}) {
    INFO("slot " << slot);
    CHECK(read_file(root / "running" / slot).empty());
  }
  CHECK(read_file(root / "running" / "notes.txt") == "an operator's file\n");
}

TEST_CASE("a slot's record is rewritten in place: no file is created per command") {
  TempDir root("conductor-running-in-place");
  RunningCommands running(root / "running");
  running.record(0, ::getpid());
  struct stat first {};
  REQUIRE(::stat((root / "running" / "0").c_str(), &first) == 0);
  const std::string written = read_file(root / "running" / "0");
  CHECK(written.starts_with(std::to_string(::getpid()) + " "));
  CHECK(written.ends_with("\n"));
  running.clear(0);
  CHECK(read_file(root / "running" / "0").empty());
  running.record(0, ::getpid());
  CHECK(read_file(root / "running" / "0") == written);
  struct stat second {};
  REQUIRE(::stat((root / "running" / "0").c_str(), &second) == 0);
  CHECK(first.st_ino == second.st_ino);
  running.clear(0);
}

TEST_CASE("recording a process that does not exist is refused with the reason") {
  TempDir root("conductor-running-missing");
  const pid_t ended = start_group("exit 0");
  reap(ended);
  CHECK_THROWS_WITH(RunningCommands(root / "running").record(0, ended),
                    doctest::Contains("/stat is unreadable"));
}
