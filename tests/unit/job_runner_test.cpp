// JobRunner: the client's job thread. Here: the SHA-256 of a freshly downloaded archive, which
// the job checks while it unpacks it (the client's network thread only wrote the bytes).
#include "job_runner.hpp"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "conductor/package.hpp"
#include "conductor/sha256.hpp"
#include "support/temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
using conductor::JobOutcome;
using conductor::JobRunner;
using conductor::JobSpec;
using conductor::test::pseudo_random;
using conductor::test::read_file;
using conductor::test::TempDir;
using conductor::test::write_file;

// A job of `archive` whose one command copies data.bin to model.h5.
JobSpec copying_job(const fs::path& root, const fs::path& archive, const std::string& sha256) {
  JobSpec spec;
  spec.item = "0a0b";
  spec.attempt = 1;
  spec.version = "v1";
  spec.commands = {{"/bin/cp", "data.bin model.h5", {}}};
  spec.packages = {archive};
  spec.package_sha256 = {sha256};
  spec.work_dir = root / "work";
  spec.console_log = root / "logs" / "0a0b.log";
  spec.result = root / "outbox" / "0a0b-1.tar";
  return spec;
}

JobOutcome wait_for(JobRunner& job) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto outcome = job.outcome()) return *outcome;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  FAIL("the job did not end within 60 s");
  return {};
}

// The count once it has reached `at_least`, or after 10 s: a job wakes its reader just after
// it publishes what it wakes it for, so the reader may see that first.
int count_reaching(const std::atomic<int>& count, int at_least) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (count.load() < at_least && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return count.load();
}

// A version of data.bin (random, 3 MiB) packed into root/v.tar; its bytes.
std::string packed_version(const fs::path& root) {
  write_file(root / "version" / "data.bin", pseudo_random(3u << 20));
  conductor::pack_directory(root / "version", root / "v.tar");
  return read_file(root / "v.tar");
}

}  // namespace

TEST_CASE(
    "a job checks a downloaded archive's SHA-256 while unpacking it, then runs its commands") {
  TempDir root("conductor-job-verified");
  const std::string bytes = packed_version(root.path());
  std::atomic<int> notified = 0;
  std::optional<JobRunner> job;
  job.emplace(copying_job(root.path(), root / "v.tar", conductor::sha256_hex(bytes)),
              [&] { ++notified; });
  const JobOutcome outcome = wait_for(*job);
  CHECK_MESSAGE(outcome.succeeded, outcome.reason);
  CHECK(job->are_packages_verified());
  job.reset();           // joined: every wake it made is counted
  CHECK(notified == 2);  // once verified, once done
  CHECK(read_file(root / "work" / "model.h5") == read_file(root / "version" / "data.bin"));
}

TEST_CASE("a job refuses a downloaded archive whose last byte differs and runs no command") {
  TempDir root("conductor-job-damaged");
  const std::string bytes = packed_version(root.path());
  std::string damaged = bytes;
  damaged.back() ^= 0x01;  // in the end-of-archive blocks: unpacking alone would not notice
  write_file(root / "v.tar", damaged);
  JobRunner job(copying_job(root.path(), root / "v.tar", conductor::sha256_hex(bytes)), [] {});
  const JobOutcome outcome = wait_for(job);
  CHECK_FALSE(outcome.succeeded);
  CHECK(outcome.reason.find("hash mismatch") != std::string::npos);
  CHECK_FALSE(job.are_packages_verified());
  CHECK_FALSE(fs::exists(root / "work" / "model.h5"));
  CHECK_FALSE(fs::exists(root / "work" / "data.bin"));  // what was unpacked is removed again
}

TEST_CASE("a job takes an archive from the cache as it is: no SHA-256 to check") {
  TempDir root("conductor-job-cached");
  packed_version(root.path());
  JobRunner job(copying_job(root.path(), root / "v.tar", ""), [] {});
  const JobOutcome outcome = wait_for(job);
  CHECK_MESSAGE(outcome.succeeded, outcome.reason);
  CHECK(job.are_packages_verified());
}

TEST_CASE("a job does not unpack what would leave less than its reserve free, and runs nothing") {
  TempDir root("conductor-job-reserve");
  packed_version(root.path());
  JobSpec spec = copying_job(root.path(), root / "v.tar", "");
  spec.min_free_bytes = std::uint64_t{1} << 62;  // no file system has this much free
  JobRunner job(std::move(spec), [] {});
  const JobOutcome outcome = wait_for(job);
  CHECK_FALSE(outcome.succeeded);
  CHECK_MESSAGE(outcome.reason.find("'data.bin' refused: writing it would leave less than " +
                                    std::to_string(std::uint64_t{1} << 62) + " bytes free") !=
                    std::string::npos,
                outcome.reason);
  CHECK_FALSE(fs::exists(root / "work" / "data.bin"));
  CHECK_FALSE(fs::exists(root / "work" / "model.h5"));
}

TEST_CASE("a job names each command's process group and token as it starts, and its end") {
  TempDir root("conductor-job-groups");
  packed_version(root.path());
  JobSpec spec = copying_job(root.path(), root / "v.tar", "");
  spec.commands = {{"/bin/sh", "-c 'echo $$ $CONDUCTOR_COMMAND_ID > first'", {}},
                   {"/bin/sh", "-c 'echo $$ $CONDUCTOR_COMMAND_ID > second'", {}},
                   {"/bin/cp", "data.bin model.h5", {}}};
  std::vector<std::pair<int, std::string>> heard;  // written on the job thread, read after it
  spec.on_command = [&](int group, const std::string& token) { heard.emplace_back(group, token); };
  JobRunner job(std::move(spec), [] {});
  const JobOutcome outcome = wait_for(job);
  CHECK_MESSAGE(outcome.succeeded, outcome.reason);
  REQUIRE(heard.size() == 6);
  const std::string first = read_file(root / "work" / "first");
  const std::string second = read_file(root / "work" / "second");
  CHECK(first == std::to_string(heard[0].first) + " " + heard[0].second + "\n");
  CHECK(second == std::to_string(heard[2].first) + " " + heard[2].second + "\n");
  CHECK(heard[0].second.size() == 36);  // a UUID, fresh for each command
  CHECK(heard[2].second != heard[0].second);
  CHECK(heard[4].first > 0);
  for (std::size_t ended : {1u, 3u, 5u}) {
    CHECK(heard[ended].first == 0);
    CHECK(heard[ended].second.empty());
  }
}

TEST_CASE("a job whose command's group cannot be recorded fails with the reason, command stopped") {
  TempDir root("conductor-job-unrecorded");
  packed_version(root.path());
  JobSpec spec = copying_job(root.path(), root / "v.tar", "");
  // Would leave a file behind a second later, were it not stopped.
  spec.commands = {{"/bin/sh", "-c 'sleep 1; touch late'", {}}};
  int ends = 0;
  spec.on_command = [&](int group, const std::string&) {
    if (group > 0) throw std::runtime_error("cannot write 'running/0': No space left on device");
    ++ends;
  };
  JobRunner job(std::move(spec), [] {});
  const JobOutcome outcome = wait_for(job);
  CHECK_FALSE(outcome.succeeded);
  CHECK(outcome.reason == "cannot write 'running/0': No space left on device");
  CHECK(ends == 1);  // told of the end all the same
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  CHECK_FALSE(fs::exists(root / "work" / "late"));
}

TEST_CASE("a job empties its work folder of the last item's files but never follows a link there") {
  TempDir dir;
  packed_version(dir.path());
  const std::string sha = conductor::sha256_file(dir.path() / "v.tar");
  SUBCASE("left-overs of the last item are gone") {
    write_file(dir.path() / "work" / "old-output.txt", "from the last item");
    write_file(dir.path() / "work" / "sub" / "deeper.txt", "also");
  }
  SUBCASE("a link in the work folder's place is removed, its target kept") {
    write_file(dir.path() / "elsewhere" / "precious.txt", "keep me");
    fs::create_directory_symlink(dir.path() / "elsewhere", dir.path() / "work");
  }
  JobRunner job(copying_job(dir.path(), dir.path() / "v.tar", sha), [] {});
  const JobOutcome outcome = wait_for(job);
  CHECK(outcome.succeeded);
  CHECK_FALSE(fs::is_symlink(dir.path() / "work"));
  CHECK(conductor::test::list_names(dir.path() / "work") ==
        std::vector<std::string>{"data.bin", "model.h5"});
  if (fs::exists(dir.path() / "elsewhere")) {
    CHECK(read_file(dir.path() / "elsewhere" / "precious.txt") == "keep me");
  }
}

namespace {

// A job of an empty version whose one command is `sh -c <script>`.
JobSpec shell_job(const fs::path& root, const std::string& script,
                  std::uint64_t memory_result_bytes) {
  fs::create_directories(root / "empty");
  if (!fs::exists(root / "empty.tar"))
    conductor::pack_directory(root / "empty", root / "empty.tar");
  JobSpec spec = copying_job(root, root / "empty.tar", "");
  spec.commands = {{"/bin/sh", "-c \"" + script + "\"", {}}};
  spec.memory_result_bytes = memory_result_bytes;
  return spec;
}

// The files of a result archive held in memory, by name.
std::map<std::string, std::string> files_of(const std::string& archive, const fs::path& scratch) {
  fs::create_directories(scratch);
  const auto stats =
      conductor::extract(conductor::ArchiveSource::in_memory(archive, "result"), scratch);
  std::map<std::string, std::string> files;
  for (const auto& name : stats.files) files[name] = read_file(scratch / name);
  return files;
}

}  // namespace

TEST_CASE("a short job's small result is packed into memory: no console file, no result file") {
  TempDir root("conductor-job-memory");
  JobRunner job(shell_job(root.path(), "echo hello; printf weights > model.h5", 1u << 20), [] {});
  const JobOutcome outcome = wait_for(job);
  REQUIRE_MESSAGE(outcome.succeeded, outcome.reason);
  REQUIRE(outcome.archive != nullptr);
  CHECK(outcome.size == outcome.archive->size());
  CHECK(outcome.sha256 == conductor::sha256_hex(*outcome.archive));
  CHECK_FALSE(fs::exists(root / "outbox" / "0a0b-1.tar"));
  CHECK_FALSE(fs::exists(root / "logs" / "0a0b.log"));
  CHECK_FALSE(outcome.console_in_file);
  CHECK(files_of(*outcome.archive, root / "check") ==
        std::map<std::string, std::string>{{"model.h5", "weights"},
                                           {".conductor/console.log", "hello\n"}});
}

TEST_CASE("a result beyond memory_result_bytes, or with none allowed, is written to its file") {
  TempDir root("conductor-job-file");
  SUBCASE("too big") {
    JobRunner job(shell_job(root.path(), "head -c 5000 /dev/zero > model.h5", 4096), [] {});
    const JobOutcome outcome = wait_for(job);
    REQUIRE_MESSAGE(outcome.succeeded, outcome.reason);
    CHECK(outcome.archive == nullptr);
    CHECK(outcome.sha256 == conductor::sha256_file(root / "outbox" / "0a0b-1.tar"));
    // The console stayed in memory (short and quiet) and still rides along.
    CHECK_FALSE(fs::exists(root / "logs" / "0a0b.log"));
  }
  SUBCASE("none allowed: the console is written as it comes, as before") {
    JobRunner job(shell_job(root.path(), "echo said; printf w > model.h5", 0), [] {});
    const JobOutcome outcome = wait_for(job);
    REQUIRE_MESSAGE(outcome.succeeded, outcome.reason);
    CHECK(outcome.archive == nullptr);
    CHECK(outcome.console_in_file);
    CHECK(read_file(root / "logs" / "0a0b.log") == "said\n");
  }
  fs::create_directories(root / "check");
  conductor::extract(root / "outbox" / "0a0b-1.tar", root / "check");
  CHECK(fs::exists(root / "check" / "model.h5"));
  CHECK(fs::exists(root / "check" / ".conductor" / "console.log"));
}

TEST_CASE("a job's console goes to its file once the job has run 2 s or said more than 64 KiB") {
  TempDir root("conductor-job-console");
  SUBCASE("a long job: the line said at the start is in the file while it runs") {
    // The job ends only once the test has seen the line in the file (or after 20 s).
    const fs::path flag = root / "seen";
    JobRunner job(shell_job(root.path(),
                            "echo early; i=0; while [ ! -e '" + flag.string() +
                                "' ] && [ $i -lt 400 ]; do i=$((i+1)); sleep 0.05; done; "
                                "printf w > model.h5",
                            1u << 20),
                  [&] {});
    const bool in_file = [&] {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
      while (std::chrono::steady_clock::now() < deadline) {
        if (fs::exists(root / "logs" / "0a0b.log") &&
            read_file(root / "logs" / "0a0b.log") == "early\n")
          return true;
        if (job.outcome()) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      return false;
    }();
    CHECK(in_file);
    write_file(flag, "");
    const JobOutcome outcome = wait_for(job);
    REQUIRE_MESSAGE(outcome.succeeded, outcome.reason);
    REQUIRE(outcome.archive != nullptr);  // still small: packed in memory, from the file
    CHECK(outcome.console_in_file);
    CHECK(files_of(*outcome.archive, root / "check").at(".conductor/console.log") == "early\n");
  }
  SUBCASE("a talkative job") {
    JobRunner job(shell_job(root.path(), "seq 1 20000; printf w > model.h5", 1u << 20), [] {});
    const JobOutcome outcome = wait_for(job);
    REQUIRE_MESSAGE(outcome.succeeded, outcome.reason);
    CHECK(outcome.console_in_file);
    const std::string console = read_file(root / "logs" / "0a0b.log");
    CHECK(console.size() > conductor::JobRunner::kMemoryConsoleBytes);
    CHECK(console.starts_with("1\n2\n"));
    CHECK(console.ends_with("\n20000\n"));
  }
}

TEST_CASE(
    "a job wakes its reader once for lines waiting, however many, and not for a cached package") {
  TempDir root("conductor-job-wakes");
  std::atomic<int> notified = 0;
  SUBCASE("lines not taken: one wake for all of them, one at the end") {
    // 2,000 lines reach the job in many reads; nobody takes them until the job has ended.
    std::optional<JobRunner> job;
    job.emplace(shell_job(root.path(), "seq 1 2000; printf w > model.h5", 1u << 20),
                [&] { ++notified; });
    const JobOutcome outcome = wait_for(*job);
    REQUIRE_MESSAGE(outcome.succeeded, outcome.reason);
    int epoch = 0, total = 0;
    CHECK(job->take_lines(epoch, total).size() == 2000);
    job.reset();  // joined: every wake it made is counted
    CHECK(notified == 2);
  }
  SUBCASE("lines taken re-arm the wake: the next line wakes the reader again") {
    const fs::path flag = root / "taken";
    std::optional<JobRunner> job;
    job.emplace(shell_job(root.path(),
                          "echo first; i=0; while [ ! -e '" + flag.string() +
                              "' ] && [ $i -lt 400 ]; do i=$((i+1)); sleep 0.05; done; "
                              "echo second; printf w > model.h5",
                          1u << 20),
                [&] { ++notified; });
    int epoch = 0, total = 0;
    std::vector<std::string> lines;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (lines.empty() && std::chrono::steady_clock::now() < deadline) {
      lines = job->take_lines(epoch, total);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    CHECK(lines == std::vector<std::string>{"first"});
    CHECK(count_reaching(notified, 1) == 1);
    write_file(flag, "");
    const JobOutcome outcome = wait_for(*job);
    REQUIRE_MESSAGE(outcome.succeeded, outcome.reason);
    CHECK(job->take_lines(epoch, total) == std::vector<std::string>{"second"});
    job.reset();
    CHECK(notified == 3);  // "second", then the end
  }
  SUBCASE("a prediction's lines wake nobody: the job wakes its reader once, at the end") {
    JobSpec spec = shell_job(root.path(), "seq 1 50; printf w > model.h5", 1u << 20);
    spec.wake_on_lines = false;
    std::optional<JobRunner> job;
    job.emplace(std::move(spec), [&] { ++notified; });
    const JobOutcome outcome = wait_for(*job);
    REQUIRE_MESSAGE(outcome.succeeded, outcome.reason);
    int epoch = 0, total = 0;
    CHECK(job->take_lines(epoch, total).size() == 50);  // still there for the reader
    job.reset();
    CHECK(notified == 1);
  }
}

TEST_CASE("a failed job reports the end of its console, from memory or from the file") {
  TempDir root("conductor-job-failed");
  JobRunner job(shell_job(root.path(), "echo first; echo boom >&2; exit 3", 1u << 20), [] {});
  const JobOutcome outcome = wait_for(job);
  CHECK_FALSE(outcome.succeeded);
  CHECK(outcome.log_tail.find("first") != std::string::npos);
  CHECK(outcome.log_tail.find("boom") != std::string::npos);
  CHECK_FALSE(outcome.console_in_file);
  CHECK_FALSE(fs::exists(root / "logs" / "0a0b.log"));
}

TEST_CASE(
    "the next job rewrites the last item's top-level files in place and removes what no package "
    "holds") {
  TempDir root("conductor-job-reuse");
  write_file(root / "version" / "train.sh", "echo train\n");
  write_file(root / "version" / "data.csv", "a,b\n1,2\n");
  conductor::pack_directory(root / "version", root / "v.tar");
  auto ino = [&](const std::string& name) {
    struct stat info {};
    REQUIRE(::stat((root / "work" / name).c_str(), &info) == 0);
    return info.st_ino;
  };
  // The first job changes an input, leaves an output, and links an input to a file outside.
  JobSpec first = copying_job(root.path(), root / "v.tar", "");
  first.commands = {
      {"/bin/sh",
       "-c \"printf changed > data.csv; printf w > model.h5; ln train.sh ../outside.sh\"",
       {}}};
  {
    JobRunner job(first, [] {});
    REQUIRE(wait_for(job).succeeded);
  }
  const auto data_inode = ino("data.csv");
  JobSpec second = copying_job(root.path(), root / "v.tar", conductor::sha256_file(root / "v.tar"));
  second.item = "0a0c";
  second.commands = {{"/bin/sh",
                      "-c \"[ ! -e model.h5 ] && cat data.csv > seen.txt && printf w > model.h5\"",
                      {}}};
  JobRunner job(second, [] {});
  const JobOutcome outcome = wait_for(job);
  REQUIRE_MESSAGE(outcome.succeeded, outcome.reason);
  // Rewritten where it was: the same inode, the package's bytes again.
  CHECK(ino("data.csv") == data_inode);
  CHECK(read_file(root / "work" / "seen.txt") == "a,b\n1,2\n");
  // The linked one was replaced, never written through: the file outside is as the job left it.
  CHECK(read_file(root / "work" / "train.sh") == "echo train\n");
  CHECK(read_file(root / "outside.sh") == "echo train\n");
  struct stat info {};
  REQUIRE(::stat((root / "outside.sh").c_str(), &info) == 0);
  CHECK(info.st_nlink == 1);
}

TEST_CASE(
    "a left-over file where the next package has a folder of its name does not fail the item") {
  TempDir root("conductor-job-file-to-folder");
  write_file(root / "version" / "config" / "settings.txt", "s\n");
  conductor::pack_directory(root / "version", root / "v.tar");
  write_file(root / "work" / "config", "an output of the last item\n");
  write_file(root / "work" / "big.bin", std::string(JobRunner::kReusableFileBytes + 1, 'b'));
  JobSpec spec = copying_job(root.path(), root / "v.tar", "");
  spec.commands = {{"/bin/sh", "-c \"cat config/settings.txt > model.h5; ls > listing.txt\"", {}}};
  JobRunner job(spec, [] {});
  const JobOutcome outcome = wait_for(job);
  REQUIRE_MESSAGE(outcome.succeeded, outcome.reason);
  CHECK(read_file(root / "work" / "model.h5") == "s\n");
  CHECK(read_file(root / "work" / "listing.txt") == "config\nlisting.txt\nmodel.h5\n");
}
