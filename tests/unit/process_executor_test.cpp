#include "conductor/process_executor.hpp"

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "conductor/error.hpp"
#include "support/processes.hpp"
#include "support/temp_dir.hpp"

namespace {

using conductor::Command;
using conductor::ProcessEnd;
using conductor::ProcessError;
using conductor::ProcessExecutor;
using conductor::ProcessOptions;
using conductor::ProcessResult;
using conductor::split_arguments;
using conductor::test::TempDir;
using namespace std::chrono_literals;
using Words = std::vector<std::string>;

void write_script(const std::filesystem::path& file, const std::string& text, mode_t mode) {
  conductor::test::write_file(file, text);
  REQUIRE(::chmod(file.c_str(), mode) == 0);
}

struct Run {
  ProcessResult result;
  Words lines;
};

Run run(const std::string& file_name, const std::string& arguments, ProcessOptions options = {}) {
  Run out;
  options.on_line = [&out](std::string_view line) { out.lines.emplace_back(line); };
  out.result = ProcessExecutor().run(Command{file_name, arguments, ""}, options);
  return out;
}

bool has_no_children() { return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD; }

// Gone or a zombie (killed, waiting for init to reap it), polled up to a deadline.
bool process_ends_soon(pid_t pid) {
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!conductor::test::is_running_process(pid)) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

}  // namespace

TEST_CASE("split_arguments splits the fixture form into the flag and one quoted script") {
  CHECK(split_arguments("-c \"python3 train.py --epochs 3\"") ==
        Words{"-c", "python3 train.py --epochs 3"});
  CHECK(split_arguments("-c \"sh train.sh\"") == Words{"-c", "sh train.sh"});
}

TEST_CASE("split_arguments separates words on runs of blanks and yields none for blank input") {
  CHECK(split_arguments("").empty());
  CHECK(split_arguments(" \t\n ").empty());
  CHECK(split_arguments("  a   b\tc\n d  ") == Words{"a", "b", "c", "d"});
}

TEST_CASE("split_arguments joins adjacent quoted and unquoted parts into one word") {
  CHECK(split_arguments("a\"b c\"d") == Words{"ab cd"});
  CHECK(split_arguments("'it'\"'\"'s' x") == Words{"it's", "x"});
  CHECK(split_arguments("--name='two words'") == Words{"--name=two words"});
}

TEST_CASE("split_arguments keeps quotes of the other kind nested inside quotes") {
  CHECK(split_arguments("-c \"echo 'hello world' done\"") ==
        Words{"-c", "echo 'hello world' done"});
  CHECK(split_arguments("'say \"hi\"'") == Words{"say \"hi\""});
  CHECK(split_arguments("-c \"echo \\\"quoted\\\"\"") == Words{"-c", "echo \"quoted\""});
}

TEST_CASE("split_arguments honours only the POSIX escapes inside double quotes") {
  CHECK(split_arguments(R"("a\"b\\c\$d\`e\n")") == Words{R"(a"b\c$d`e\n)"});
  CHECK(split_arguments("\"ab\\\ncd\"") == Words{"abcd"});
}

TEST_CASE("split_arguments treats a backslash outside quotes as escaping the next character") {
  CHECK(split_arguments(R"(a\ b \'c\' \\ \")") == Words{"a b", "'c'", "\\", "\""});
  CHECK(split_arguments("ab\\\ncd") == Words{"abcd"});
  CHECK(split_arguments(R"('a\b')") == Words{R"(a\b)"});
}

TEST_CASE("split_arguments turns empty quotes into an empty word") {
  CHECK(split_arguments("\"\"") == Words{""});
  CHECK(split_arguments("''") == Words{""});
  CHECK(split_arguments("a \"\" b ''") == Words{"a", "", "b", ""});
}

TEST_CASE("split_arguments expands nothing: variables, globs, tilde and substitutions stay") {
  CHECK(split_arguments("$HOME * ~ ~/x $(id) `id` ${A:-b}") ==
        Words{"$HOME", "*", "~", "~/x", "$(id)", "`id`", "${A:-b}"});
  CHECK(split_arguments("#x a|b;c>d &") == Words{"#x", "a|b;c>d", "&"});
}

TEST_CASE(
    "split_arguments refuses unterminated quotes and a trailing backslash, naming the input") {
  CHECK_THROWS_WITH_AS(split_arguments("-c \"python3 train.py"),
                       doctest::Contains("-c \"python3 train.py"), ProcessError);
  CHECK_THROWS_WITH_AS(split_arguments("-c \"x\" 'y"), doctest::Contains("single quote"),
                       ProcessError);
  CHECK_THROWS_WITH_AS(split_arguments("\"a\\\""), doctest::Contains("double quote"), ProcessError);
  CHECK_THROWS_WITH_AS(split_arguments("abc\\"), doctest::Contains("backslash"), ProcessError);
  CHECK_THROWS_AS(split_arguments(std::string_view("a\0b", 3)), ProcessError);
}

TEST_CASE("run refuses unparsable arguments with ProcessError before starting anything") {
  CHECK_THROWS_AS(ProcessExecutor().run(Command{"/bin/true", "\"open", ""}, {}), ProcessError);
}

TEST_CASE("run reports the exit status of the program") {
  const Run ok = run("/bin/sh", "-c \"exit 0\"");
  CHECK(ok.result.end == ProcessEnd::kExited);
  CHECK(ok.result.exit_code == 0);
  CHECK(ok.result.succeeded());
  CHECK(ok.result.describe() == "exited with status 0");

  const Run three = run("sh", "-c 'exit 3'");
  CHECK(three.result.end == ProcessEnd::kExited);
  CHECK(three.result.exit_code == 3);
  CHECK_FALSE(three.result.succeeded());
  CHECK(three.result.describe() == "exited with status 3");
}

TEST_CASE("run delivers stdout and stderr lines merged in the order written") {
  const Run r = run("bash", "-c 'echo one; echo two >&2; echo three; echo four >&2'");
  CHECK(r.result.succeeded());
  CHECK(r.lines == Words{"one", "two", "three", "four"});
}

TEST_CASE("run delivers a trailing partial line at exit and ends lines at LF, CRLF or CR") {
  CHECK(run("printf", "'first\\nlast'").lines == Words{"first", "last"});
  CHECK(run("printf", "'a\\r\\nb\\rc\\n\\nd\\n'").lines == Words{"a", "b", "c", "", "d"});
  CHECK(run("bash", "-c \"printf 'x\\r'; sleep 0.05; printf '\\ny\\n'\"").lines == Words{"x", "y"});
}

TEST_CASE("run gives the child stdin from /dev/null") {
  const Run r = run("cat", "");
  CHECK(r.result.succeeded());
  CHECK(r.lines.empty());
}

TEST_CASE("run passes extra environment variables on top of the parent's") {
  REQUIRE(::setenv("CONDUCTOR_TEST_INHERITED", "parent", 1) == 0);
  ProcessOptions options;
  options.environment = {{"CONDUCTOR_TYPE", "gpu"}};
  CHECK(run("bash", "-c 'echo $CONDUCTOR_TYPE $CONDUCTOR_TEST_INHERITED'", options).lines ==
        Words{"gpu parent"});

  options.environment.emplace_back("CONDUCTOR_TEST_INHERITED", "child");
  CHECK(run("bash", "-c 'echo $CONDUCTOR_TYPE $CONDUCTOR_TEST_INHERITED'", options).lines ==
        Words{"gpu child"});
  ::unsetenv("CONDUCTOR_TEST_INHERITED");

  options.environment = {{"BAD=NAME", "x"}};
  const Run bad = run("true", "", options);
  CHECK(bad.result.end == ProcessEnd::kFailedToStart);
  CHECK(bad.result.error.find("BAD=NAME") != std::string::npos);
}

TEST_CASE("run looks a bare program name up on the PATH given in its environment") {
  TempDir dir;
  write_script(dir.path() / "conductor-probe", "#!/bin/sh\necho probed \"$@\"\n", 0755);
  ProcessOptions options;
  options.environment = {{"PATH", dir.path().string() + ":/usr/bin:/bin"}};
  const Run r = run("conductor-probe", "a 'b c'", options);
  CHECK(r.result.succeeded());
  CHECK(r.lines == Words{"probed a b c"});
}

TEST_CASE("run starts the child in the working directory") {
  TempDir dir;
  ProcessOptions options;
  options.working_directory = dir.path();
  const Run r = run("pwd", "-P", options);
  CHECK(r.result.succeeded());
  CHECK(r.lines == Words{std::filesystem::canonical(dir.path()).string()});

  write_script(dir.path() / "train.sh", "#!/bin/sh\necho trained in \"$(basename \"$PWD\")\"\n",
               0755);
  const Run script = run("./train.sh", "", options);
  CHECK(script.result.succeeded());
  CHECK(script.lines == Words{"trained in " + dir.path().filename().string()});

  options.working_directory = dir.path() / "missing";
  const Run missing = run("pwd", "", options);
  CHECK(missing.result.end == ProcessEnd::kFailedToStart);
  CHECK(missing.result.error.find("missing") != std::string::npos);
}

TEST_CASE("run reports a program that cannot start as a result and leaves no child behind") {
  const Run absolute = run("/no/such/program", "--flag");
  CHECK(absolute.result.end == ProcessEnd::kFailedToStart);
  CHECK(absolute.result.error == "cannot execute '/no/such/program': No such file or directory");
  CHECK(absolute.result.describe() ==
        "failed to start: cannot execute '/no/such/program': No such file or directory");
  CHECK(absolute.lines.empty());
  CHECK(has_no_children());

  const Run bare = run("conductor-no-such-program-anywhere", "");
  CHECK(bare.result.end == ProcessEnd::kFailedToStart);
  CHECK(bare.result.error.find("'conductor-no-such-program-anywhere': not found on PATH") !=
        std::string::npos);

  TempDir dir;
  write_script(dir.path() / "not-executable.sh", "#!/bin/sh\necho ran\n", 0644);
  const Run refused = run((dir.path() / "not-executable.sh").string(), "");
  CHECK(refused.result.end == ProcessEnd::kFailedToStart);
  CHECK(refused.result.error.find("Permission denied") != std::string::npos);
  CHECK(refused.lines.empty());

  CHECK(run("", "").result.end == ProcessEnd::kFailedToStart);
  CHECK(has_no_children());
}

TEST_CASE("run stops the whole process tree when should_stop turns true") {
  std::atomic<pid_t> grandchild{0};
  ProcessOptions options;
  options.poll_interval = 20ms;
  options.kill_grace = 2000ms;
  options.on_line = [&](std::string_view line) { grandchild = std::stoi(std::string(line)); };
  options.should_stop = [&] { return grandchild != 0; };
  const ProcessResult result =
      ProcessExecutor().run(Command{"bash", "-c \"sleep 100 & echo $!; wait\"", ""}, options);
  CHECK(result.end == ProcessEnd::kStopped);
  CHECK(result.signal == SIGTERM);
  CHECK(result.describe() == "stopped");
  CHECK(result.duration < 2000ms);
  REQUIRE(grandchild != 0);
  CHECK(process_ends_soon(grandchild));
  CHECK(has_no_children());
}

TEST_CASE("run kills a child that ignores SIGTERM once the grace period has passed") {
  std::atomic<bool> ready{false};
  ProcessOptions options;
  options.poll_interval = 20ms;
  options.kill_grace = 300ms;
  options.on_line = [&](std::string_view line) { ready = ready || line == "ready"; };
  options.should_stop = [&] { return ready.load(); };
  const ProcessResult result = ProcessExecutor().run(
      Command{"bash", "-c 'trap \"\" TERM; echo ready; sleep 100'", ""}, options);
  CHECK(result.end == ProcessEnd::kStopped);
  CHECK(result.signal == SIGKILL);
  CHECK(result.duration >= 300ms);
  CHECK(result.duration < 2300ms);
}

TEST_CASE("run stops a child that outlives the timeout and reports kTimedOut") {
  ProcessOptions options;
  options.timeout = 200ms;
  const Run r = run("sleep", "100", options);
  CHECK(r.result.end == ProcessEnd::kTimedOut);
  CHECK(r.result.signal == SIGTERM);
  CHECK(r.result.duration >= 200ms);
  CHECK(r.result.duration < 2000ms);
  CHECK(r.result.describe().starts_with("timed out after "));
  CHECK_FALSE(r.result.succeeded());
}

TEST_CASE("run reports a child killed by a signal it did not get from us") {
  const Run r = run("bash", "-c 'kill -9 $$'");
  CHECK(r.result.end == ProcessEnd::kSignaled);
  CHECK(r.result.signal == SIGKILL);
  CHECK(r.result.describe() == "killed by signal 9");
}

TEST_CASE("run ends what the program left running in its group when it exits") {
  const Run r = run("bash", "-c 'sleep 100 & echo $!'");
  CHECK(r.result.succeeded());
  REQUIRE(r.lines.size() == 1);
  CHECK(r.result.duration < 2000ms);
  CHECK(process_ends_soon(std::stoi(r.lines[0])));
}

TEST_CASE("run ends what the program left in its group with its output elsewhere") {
  // The pipe closes as the program exits, so both are seen in one pass of the loop.
  const Run r = run("bash", "-c 'sleep 100 >/dev/null 2>&1 & echo $! >&2'");
  CHECK(r.result.succeeded());
  REQUIRE(r.lines.size() == 1);
  CHECK(process_ends_soon(std::stoi(r.lines[0])));
}

TEST_CASE("run delivers all of 100000 lines in order") {
  const Run r = run("seq", "1 100000");
  CHECK(r.result.succeeded());
  REQUIRE(r.lines.size() == 100000);
  bool in_order = true;
  for (std::size_t i = 0; i < r.lines.size(); ++i) {
    in_order = in_order && r.lines[i] == std::to_string(i + 1);
  }
  CHECK(in_order);
}

TEST_CASE("run splits a 200 KiB line into 64 KiB pieces") {
  const Run r = run("bash", "-c \"head -c 204800 /dev/zero | tr '\\\\0' x; echo; echo after\"");
  CHECK(r.result.succeeded());
  REQUIRE(r.lines.size() == 5);
  for (int i = 0; i < 3; ++i) CHECK(r.lines[i] == std::string(ProcessOptions::kMaxLineBytes, 'x'));
  CHECK(r.lines[3] == std::string(204800 - 3 * ProcessOptions::kMaxLineBytes, 'x'));
  CHECK(r.lines[4] == "after");
}

TEST_CASE("run resets an ignored SIGPIPE so pipelines in the child behave normally") {
  struct sigaction ignore {
  }, previous{};
  ignore.sa_handler = SIG_IGN;
  REQUIRE(::sigaction(SIGPIPE, &ignore, &previous) == 0);
  const Run r = run("bash", "-c 'yes | head -n 1 >/dev/null; echo ${PIPESTATUS[0]}'");
  ::sigaction(SIGPIPE, &previous, nullptr);
  CHECK(r.lines == Words{std::to_string(128 + SIGPIPE)});
}

TEST_CASE("run starts the child with no signal ignored or blocked, whatever this process set") {
  struct sigaction ignore {
  }, previous_xfsz{}, previous_urg{};
  ignore.sa_handler = SIG_IGN;
  REQUIRE(::sigaction(SIGXFSZ, &ignore, &previous_xfsz) == 0);
  REQUIRE(::sigaction(SIGURG, &ignore, &previous_urg) == 0);
  sigset_t blocked, previous_mask;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGUSR1);
  sigaddset(&blocked, SIGWINCH);
  REQUIRE(::pthread_sigmask(SIG_BLOCK, &blocked, &previous_mask) == 0);
  const Run r = run("grep", "-E '^Sig(Ign|Blk):' /proc/self/status");
  ::pthread_sigmask(SIG_SETMASK, &previous_mask, nullptr);
  ::sigaction(SIGURG, &previous_urg, nullptr);
  ::sigaction(SIGXFSZ, &previous_xfsz, nullptr);
  REQUIRE(r.lines.size() == 2);
  CHECK(r.lines[0] == "SigBlk:\t0000000000000000");
  // glibc's posix_spawn leaves its own two internal signals (32 and 33) ignored; no other is.
  REQUIRE(r.lines[1].starts_with("SigIgn:\t"));
  const unsigned long long ignored = std::stoull(r.lines[1].substr(8), nullptr, 16);
  CHECK((ignored & ~0x180000000ULL) == 0);
}

TEST_CASE("run kills the child and rethrows when on_line throws") {
  ProcessOptions options;
  options.on_line = [](std::string_view) { throw std::runtime_error("sink refused"); };
  const auto started = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(
      ProcessExecutor().run(Command{"bash", "-c 'echo hi; sleep 100'", ""}, options),
      "sink refused", std::runtime_error);
  CHECK(std::chrono::steady_clock::now() - started < 2s);
  CHECK(has_no_children());
}

TEST_CASE("run names the started child, the leader of its own process group, before it ends") {
  pid_t started = 0;
  pid_t group = 0;
  ProcessOptions options;
  options.on_started = [&](int pid) {
    started = pid;
    group = ::getpgid(pid);  // the child cannot have been reaped yet
  };
  const Run r = run("bash", "-c 'echo $$'", options);
  CHECK(r.result.succeeded());
  REQUIRE(r.lines.size() == 1);
  CHECK(started == std::stoi(r.lines[0]));
  CHECK(group == started);
  CHECK(group != ::getpgrp());
}

TEST_CASE("run kills the child and rethrows when on_started throws") {
  ProcessOptions options;
  options.on_started = [](int) { throw std::runtime_error("cannot record it"); };
  const auto started = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(ProcessExecutor().run(Command{"sleep", "100", ""}, options),
                       "cannot record it", std::runtime_error);
  CHECK(std::chrono::steady_clock::now() - started < 2s);
  CHECK(has_no_children());
}

TEST_CASE("run may be called from several threads at once") {
  constexpr int kThreads = 6;
  std::vector<Run> runs(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&runs, i] {
      const std::string n = std::to_string(i);
      runs[i] =
          run("bash", "-c 'echo start-" + n + "; sleep 0.2; echo end-" + n + "; exit " + n + "'");
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int i = 0; i < kThreads; ++i) {
    const std::string n = std::to_string(i);
    CHECK(runs[i].result.end == ProcessEnd::kExited);
    CHECK(runs[i].result.exit_code == i);
    CHECK(runs[i].lines == Words{"start-" + n, "end-" + n});
    CHECK(runs[i].result.duration < 2000ms);
  }
}

TEST_CASE("ProcessResult describes each way a run can end") {
  ProcessResult result;
  result.end = ProcessEnd::kTimedOut;
  result.duration = 5000ms;
  CHECK(result.describe() == "timed out after 5s");
  result.duration = 5250ms;
  CHECK(result.describe() == "timed out after 5.2s");
  result.duration = 250ms;
  CHECK(result.describe() == "timed out after 250ms");
  result.end = ProcessEnd::kStopped;
  CHECK(result.describe() == "stopped");
  result.end = ProcessEnd::kFailedToStart;
  result.error = "cannot execute 'x': Permission denied";
  CHECK(result.describe() == "failed to start: cannot execute 'x': Permission denied");
  CHECK(std::string(conductor::to_string(ProcessEnd::kSignaled)) == "signaled");
}
