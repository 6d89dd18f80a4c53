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
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/processes.hpp"
#include "support/temp_dir.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using conductor::RunningCommands;
using conductor::test::is_running_process;
using conductor::test::KillOnExit;
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
// runs, with CONDUCTOR_COMMAND_ID=`token` in its environment unless `token` is empty. The
// caller reaps it.
pid_t start_group(const std::string& script, const std::string& token = {}) {
  posix_spawnattr_t attributes;
  REQUIRE(::posix_spawnattr_init(&attributes) == 0);
  REQUIRE(::posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP) == 0);
  REQUIRE(::posix_spawnattr_setpgroup(&attributes, 0) == 0);
  std::string shell = "/bin/sh", flag = "-c", text = script;
  char* argv[] = {shell.data(), flag.data(), text.data(), nullptr};
  std::vector<std::string> variables;
  for (char** entry = environ; *entry != nullptr; ++entry) variables.emplace_back(*entry);
  if (!token.empty())
    variables.push_back(std::string(RunningCommands::kTokenVariable) + "=" + token);
  std::vector<char*> envp;
  for (auto& variable : variables) envp.push_back(variable.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, "/bin/sh", nullptr, &attributes, argv, envp.data());
  ::posix_spawnattr_destroy(&attributes);
  REQUIRE(rc == 0);
  return pid;
}

// A script line that writes the pid of the last background process to `file`, whole.
std::string write_background_pid(const fs::path& file) {
  return "echo $! > '" + file.string() + ".tmp'; mv '" + file.string() + ".tmp' '" + file.string() +
         "'";
}

// The pid a script wrote to `file`, once it has.
pid_t pid_written_to(const fs::path& file) {
  REQUIRE(
      eventually([&] { return read_file_if_present(file).find('\n') != std::string::npos; }, 10s));
  return std::stoi(read_file(file));
}

// Kills the group of an unreaped leader (whose id stays reserved until then), then reaps it.
void end_group(pid_t leader) {
  ::kill(-leader, SIGKILL);
  int status = 0;
  ::waitpid(leader, &status, 0);
}

}  // namespace

TEST_CASE("a command group an earlier client left running is stopped with SIGTERM, and only that") {
  TempDir root("conductor-running");
  const pid_t leader = start_group("sleep 60 & " + write_background_pid(root / "child") + "; wait");
  const pid_t child = pid_written_to(root / "child");
  const pid_t bystander = start_group("sleep 60");  // a group nobody recorded
  KillOnExit cleanup;
  for (pid_t pid : {leader, child, bystander}) cleanup.add(pid);
  RunningCommands(root / "running").record(3, leader, "t-3");
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
  CHECK_FALSE(is_running_process(leader));
  CHECK(eventually([&] { return !is_running_process(child); }));
  CHECK(is_running_process(bystander));
  CHECK(read_file(root / "running" / "3").empty());
  end_group(leader);
  end_group(bystander);
}

TEST_CASE("several slots' leftovers are stopped together: SIGKILL once the grace has passed") {
  TempDir root("conductor-running-stubborn");
  // Ignoring SIGTERM, which the background sleep inherits.
  const pid_t first =
      start_group("trap '' TERM; sleep 60 & " + write_background_pid(root / "child-0") + "; wait");
  const pid_t second =
      start_group("trap '' TERM; sleep 60 & " + write_background_pid(root / "child-1") + "; wait");
  const pid_t first_child = pid_written_to(root / "child-0");
  const pid_t second_child = pid_written_to(root / "child-1");
  KillOnExit cleanup;
  for (pid_t pid : {first, second, first_child, second_child}) cleanup.add(pid);
  {
    RunningCommands running(root / "running");
    running.record(0, first, "t-0");
    running.record(1, second, "t-1");
  }

  const auto started = std::chrono::steady_clock::now();
  const std::vector<std::string> report = RunningCommands(root / "running").stop_leftovers(300ms);
  const auto took = std::chrono::steady_clock::now() - started;
  CHECK(took >= 300ms);
  CHECK(took < 1300ms);  // one grace for both, not one each
  REQUIRE(report.size() == 2);
  for (const std::string& line : report) {
    INFO(line);
    CHECK(line.starts_with("stopped process group "));
    CHECK(line.ends_with("(SIGKILL after 300 ms)"));
  }
  CHECK_FALSE(is_running_process(first));
  CHECK_FALSE(is_running_process(second));
  CHECK(eventually(
      [&] { return !is_running_process(first_child) && !is_running_process(second_child); }));
  end_group(first);
  end_group(second);
}

TEST_CASE("once the leader is gone, only the group's processes that carry the token are stopped") {
  TempDir root("conductor-running-leaderless");
  // Both leaders start a background sleep and exit at once; their sleeps live on, leaderless.
  const std::string token = "0f1e2d3c-token";
  const pid_t ours = start_group("sleep 60 & " + write_background_pid(root / "ours"), token);
  const pid_t theirs = start_group("sleep 60 & " + write_background_pid(root / "theirs"));
  const pid_t our_child = pid_written_to(root / "ours");
  const pid_t their_child = pid_written_to(root / "theirs");
  KillOnExit cleanup;
  for (pid_t pid : {our_child, their_child}) cleanup.add(pid);
  {
    RunningCommands running(root / "running");
    running.record(0, ours, token);
    running.record(1, theirs, token);  // a group id recorded, now held by processes without it
  }
  for (pid_t leader : {ours, theirs}) {
    int status = 0;
    ::waitpid(leader, &status, 0);
  }

  const std::vector<std::string> report = RunningCommands(root / "running").stop_leftovers(5s);
  REQUIRE(report.size() == 1);
  INFO(report[0]);
  CHECK(report[0] == "stopped process group " + std::to_string(ours) + " (sleep (" +
                         std::to_string(our_child) +
                         ")) that an earlier client left running in slot 0 (SIGTERM)");
  CHECK(eventually([&] { return !is_running_process(our_child); }));
  CHECK(is_running_process(their_child));
  CHECK(read_file(root / "running" / "0").empty());
  CHECK(read_file(root / "running" / "1").empty());
  ::kill(their_child, SIGKILL);
}

TEST_CASE("a process that took over a recorded id is never signalled") {
  TempDir root("conductor-running-reused");
  const pid_t other = start_group("sleep 60", "t-1");
  KillOnExit cleanup;
  cleanup.add(other);
  RunningCommands(root / "running").record(1, other, "t-1");
  // The same id, started at another time: the recorded group ended and the id was reused.
  std::istringstream fields(read_file(root / "running" / "1"));
  long group = 0;
  unsigned long long start = 0;
  std::string boot, pid_namespace, token;
  const bool parsed = static_cast<bool>(fields >> group >> start >> boot >> pid_namespace >> token);
  REQUIRE(parsed);
  CHECK(group == other);
  CHECK(token == "t-1");
  write_file(root / "running" / "1", std::to_string(group) + " " + std::to_string(start + 1) + " " +
                                         boot + " " + pid_namespace + " " + token + "\n");

  CHECK(RunningCommands(root / "running").stop_leftovers(5s).empty());
  CHECK(is_running_process(other));
  CHECK(read_file(root / "running" / "1").empty());
  end_group(other);
}

TEST_CASE("records of ended groups, another boot or another pid namespace go quietly") {
  TempDir root("conductor-running-stale");
  const pid_t ended = start_group("exit 0");
  RunningCommands(root / "running").record(0, ended, "t-0");  // recorded while it still exists
  int status = 0;
  ::waitpid(ended, &status, 0);
  const pid_t alive = start_group("sleep 60", "t-2");
  KillOnExit cleanup;
  cleanup.add(alive);
  RunningCommands(root / "running").record(2, alive, "t-2");
  std::istringstream fields(read_file(root / "running" / "2"));
  std::string group, start, boot, pid_namespace, token;
  REQUIRE(static_cast<bool>(fields >> group >> start >> boot >> pid_namespace >> token));
  write_file(root / "running" / "1",
             group + " " + start + " another-boot " + pid_namespace + " " + token + "\n");
  write_file(root / "running" / "2",
             group + " " + start + " " + boot + " pid:[4026531835] " + token + "\n");
  write_file(root / "running" / "3", "gone fishing\n");
  write_file(root / "running" / "notes.txt", "an operator's file\n");
  write_file(root / "running" / "4", "");

  const std::vector<std::string> report = RunningCommands(root / "running").stop_leftovers(5s);
  REQUIRE(report.size() == 1);
  CHECK(report[0] == "ignored an unreadable record of a running command in '" +
                         (root / "running" / "3").string() + "': 'gone fishing'");
  CHECK(is_running_process(alive));  // named only by records of another boot or namespace
  for (const char* slot : {"0", "1", "2", "3", "4"}) {
    INFO("slot " << slot);
    CHECK(read_file(root / "running" / slot).empty());
  }
  CHECK(read_file(root / "running" / "notes.txt") == "an operator's file\n");
  end_group(alive);
}

TEST_CASE("a slot's record is rewritten in place: no file is created per command") {
  TempDir root("conductor-running-in-place");
  RunningCommands running(root / "running");
  running.record(0, ::getpid(), "t-0");
  struct stat first {};
  REQUIRE(::stat((root / "running" / "0").c_str(), &first) == 0);
  const std::string written = read_file(root / "running" / "0");
  CHECK(written.starts_with(std::to_string(::getpid()) + " "));
  CHECK(written.ends_with(" t-0\n"));
  running.clear(0);
  CHECK(read_file(root / "running" / "0").empty());
  running.record(0, ::getpid(), "t-0");
  CHECK(read_file(root / "running" / "0") == written);
  struct stat second {};
  REQUIRE(::stat((root / "running" / "0").c_str(), &second) == 0);
  CHECK(first.st_ino == second.st_ino);
  running.clear(0);
}

TEST_CASE("recording a process that does not exist is refused with the reason") {
  TempDir root("conductor-running-missing");
  const pid_t ended = start_group("exit 0");
  int status = 0;
  ::waitpid(ended, &status, 0);
  CHECK_THROWS_WITH(RunningCommands(root / "running").record(0, ended, "t-0"),
                    doctest::Contains("/stat is unreadable"));
}

TEST_CASE("a record holds the group and the leader's start time as /proc/<pid>/stat shows them") {
  TempDir root("conductor-running");
  const pid_t leader = start_group("sleep 60");
  KillOnExit cleanup;
  cleanup.add(leader);
  RunningCommands(root / "running").record(2, leader, "t-2");
  // Field 22 of /proc/<pid>/stat, counted here without the parser under test.
  const std::string stat = read_file_if_present("/proc/" + std::to_string(leader) + "/stat");
  std::istringstream after_name(stat.substr(stat.rfind(')') + 2));
  std::vector<std::string> fields;
  for (std::string field; after_name >> field;) fields.push_back(field);
  REQUIRE(fields.size() > 19);
  std::istringstream record(read_file(root / "running" / "2"));
  std::string group, start;
  record >> group >> start;
  CHECK(group == std::to_string(leader));
  CHECK(fields[2] == std::to_string(leader));  // field 5: the process group, its own
  CHECK(start == fields[19]);
  CHECK(start != "0");
  end_group(leader);
}

TEST_CASE("a command whose name holds blanks and parentheses is recorded and stopped") {
  TempDir root("conductor-running");
  // /proc/<pid>/stat shows the name between parentheses, and this one looks like more fields.
  const fs::path program = root / "x) S 1 1 (y";
  fs::copy_file("/bin/sleep", program);
  const pid_t leader = start_group("exec '" + program.string() + "' 60");
  KillOnExit cleanup;
  cleanup.add(leader);
  REQUIRE(eventually([&] {
    return read_file_if_present("/proc/" + std::to_string(leader) + "/stat")
               .find("(x) S 1 1 (y)") != std::string::npos;
  }));
  RunningCommands(root / "running").record(0, leader, "t-0");

  const std::vector<std::string> report = RunningCommands(root / "running").stop_leftovers(5s);
  REQUIRE(report.size() == 1);
  INFO(report[0]);
  CHECK(report[0].starts_with("stopped process group " + std::to_string(leader) +
                              " (x) S 1 1 (y (" + std::to_string(leader) + "))"));
  CHECK_FALSE(is_running_process(leader));
  end_group(leader);
}
