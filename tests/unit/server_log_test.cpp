// ServerLog: the original's line format, config/log.txt rotated by size, the recent lines.
#include "server_log.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "support/temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
using conductor::LogCounts;
using conductor::ServerLog;
using conductor::test::list_names;
using conductor::test::read_file;
using conductor::test::TempDir;

}  // namespace

TEST_CASE("the server log writes the original's line format and rotates log.txt by size") {
  TempDir dir;
  const fs::path file = dir.path() / "log.txt";
  {
    ServerLog log(file, false, 4096, 2);
    log.info(LogCounts{3, 2, 1}, "first line");
    log.warn(LogCounts{}, "careful");
    const std::string text = read_file(file);
    CHECK(text.find("] [CL:3 QW:2 AW:1] first line\n") != std::string::npos);
    CHECK(text.find("] [CL:0 QW:0 AW:0] warning: careful\n") != std::string::npos);
    CHECK(text.starts_with("[20"));
    // Enough lines for several files of 4 KiB: log.txt starts again, two older ones are kept.
    for (int i = 0; i < 200; ++i) log.info(LogCounts{}, "line " + std::to_string(i));
    CHECK(log.recent_lines().back().ends_with("line 199"));
  }
  CHECK(list_names(dir.path()) == std::vector<std::string>{"log.1.txt", "log.2.txt", "log.txt"});
  for (const auto* name : {"log.txt", "log.1.txt", "log.2.txt"}) {
    CAPTURE(name);
    CHECK(fs::file_size(dir.path() / name) <= 4096);
  }
  CHECK(read_file(file).find("line 199\n") != std::string::npos);
  CHECK(read_file(dir.path() / "log.1.txt").find("line 199") == std::string::npos);
  // A server that starts again appends to log.txt.
  const auto size = fs::file_size(file);
  ServerLog(file, false, 4096, 2).info(LogCounts{}, "again");
  CHECK(fs::file_size(file) > size);
}
