// The client's outbox: results kept until acknowledged, across a restart of the client.
#include "outbox.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "support/temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
using conductor::KeptResult;
using conductor::Outbox;
using conductor::test::list_names;
using conductor::test::TempDir;
using conductor::test::write_file;

KeptResult finished(const Outbox& outbox, const std::string& item, const std::string& type) {
  KeptResult result{item, 2, "v1", type, outbox.archive_path(item, 2), {}};
  write_file(result.archive, "archive of " + item);
  result.outcome.succeeded = true;
  result.outcome.size = fs::file_size(result.archive);
  result.outcome.sha256 = std::string(64, 'a');
  result.outcome.duration = 1.5;
  result.outcome.epochs = 3;
  return result;
}

}  // namespace

TEST_CASE("a kept result is taken up by the next run with everything RESULT says") {
  TempDir dir;
  {
    Outbox outbox(dir / "outbox", [](const std::string&) {});
    outbox.keep(finished(outbox, "item-a", "training"));
  }
  Outbox restarted(dir / "outbox", [](const std::string&) {});
  const auto kept = restarted.take_up({});
  REQUIRE(kept.has_value());
  CHECK(kept->item == "item-a");
  CHECK(kept->attempt == 2);
  CHECK(kept->version == "v1");
  CHECK(kept->type == "training");
  CHECK(kept->outcome.size == fs::file_size(kept->archive));
  CHECK(kept->outcome.epochs == 3);
  CHECK_FALSE(restarted.take_up({"item-a"}).has_value());  // held by a slot already
  restarted.discard(kept->archive);
  CHECK(list_names(dir / "outbox").empty());
}

TEST_CASE("a restart removes archives no description claims and half-written files") {
  TempDir dir;
  {
    Outbox outbox(dir / "outbox", [](const std::string&) {});
    outbox.keep(finished(outbox, "kept", "training"));
    finished(outbox, "answer", "prediction");  // an answer's archive, never described
    write_file(dir / "outbox" / "torn-0.tar.part", "half");
    write_file(dir / "outbox" / "torn-0.json.tmp", "{");
  }
  Outbox restarted(dir / "outbox", [](const std::string&) {});
  CHECK(list_names(dir / "outbox") == std::vector<std::string>{"kept-2.json", "kept-2.tar"});
  const auto kept = restarted.take_up({});
  REQUIRE(kept.has_value());
  CHECK(kept->item == "kept");
}

TEST_CASE("a description that cannot be published is warned about and leaves no file behind") {
  TempDir dir;
  // A torn write of a run before goes at start.
  write_file(dir / "outbox" / "blocked-2.json.tmp-0123456789abcdef", "stale");
  std::vector<std::string> warnings;
  Outbox outbox(dir / "outbox", [&](const std::string& text) { warnings.push_back(text); });
  CHECK(conductor::test::list_names(dir / "outbox").empty());
  const KeptResult result = finished(outbox, "blocked", "training");
  // A folder holds the description's name: the rename fails after the write.
  write_file(dir / "outbox" / "blocked-2.json" / "inside", "x");
  outbox.keep(result);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find("Cannot keep " + (dir / "outbox" / "blocked-2.json").string()) == 0);
  // Nothing but the folder in the way and the result itself, which is still offered while the
  // client runs.
  CHECK(conductor::test::list_names(dir / "outbox") ==
        std::vector<std::string>{"blocked-2.json", result.archive.filename().string()});
  CHECK(fs::is_directory(dir / "outbox" / "blocked-2.json"));
}
