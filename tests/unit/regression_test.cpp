// Bugs the fuzzers (fuzz/, scripts/fuzz) found. Every input one of them crashed on is kept in
// tests/data/regressions/<target>/ and replayed here through that fuzzer's own entry function
// (tests/support/fuzz_inputs.hpp), which must end in a clean refusal: success or a
// conductor::Error, never another exception or a sanitizer report. Each bug also has a test of
// its own, named after it, that states the fixed behaviour.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "conductor/error.hpp"
#include "conductor/evaluation.hpp"
#include "support/fuzz_inputs.hpp"
#include "support/temp_dir.hpp"

using namespace conductor;
using namespace conductor::test;
namespace fs = std::filesystem;

namespace {

fs::path regressions() { return test_data_dir() / "regressions"; }

std::string kept_input(const std::string& target, const std::string& name) {
  return read_file(regressions() / target / name);
}

std::vector<fs::path> sorted_entries(const fs::path& folder) {
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator(folder)) entries.push_back(entry.path());
  std::sort(entries.begin(), entries.end());
  return entries;
}

// Feeds `input` to the entry function of the fuzz target `target` (the folder name).
// Throws what that function throws other than conductor::Error.
void replay(const std::string& target, const fs::path& input) {
  const std::string bytes = read_file(input);
  const Bytes data(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  const TempDir work("conductor-regression");
  try {
    if (target == "message") {
      feed_message(data);
    } else if (target == "archive") {
      feed_archive(data, work.path());
    } else if (target == "xml") {
      feed_xml(data, work.path());
    } else if (target == "allow_list") {
      feed_allow_list(data, work.path());
    } else if (target == "metrics") {
      feed_metrics(data, work.path());
    } else {
      FAIL("tests/data/regressions/" << target << " names no fuzz target");
    }
  } catch (const Error&) {
    // a clean refusal
  }
}

}  // namespace

TEST_CASE("every input a fuzzer crashed on is now refused cleanly") {
  std::size_t replayed = 0;
  for (const auto& folder : sorted_entries(regressions())) {
    for (const auto& input : sorted_entries(folder)) {
      INFO("replaying ", input.string());
      CHECK_NOTHROW(replay(folder.filename().string(), input));
      ++replayed;
    }
  }
  CHECK(replayed > 0);
}

TEST_CASE("a metrics.json number beyond a double is a ConfigError, not a json out_of_range") {
  // Found by fuzz_metrics: nlohmann::json reports "3e311" as out_of_range, which is not a
  // parse_error, so it escaped read_training_metrics as a foreign exception.
  const TempDir dir;
  write_file(dir / "metrics.json", kept_input("metrics", "json-number-beyond-double"));
  CHECK_THROWS_WITH_AS(read_training_metrics(dir.path()),
                       doctest::Contains("metrics.json: malformed JSON"), ConfigError);
  write_file(dir / "metrics.json", R"({"loss": 0.5, "huge": 1e400})");
  CHECK_THROWS_AS(read_training_metrics(dir.path()), ConfigError);
  // evaluate_model_folder, which never throws, names the file as a problem.
  const Evaluation evaluation = evaluate_model_folder(dir.path(), DatasetType::kGeneric);
  REQUIRE(evaluation.problems.size() == 1);
  CHECK(evaluation.problems[0].find("metrics.json") != std::string::npos);
}

TEST_CASE("a results.csv value whose square overflows leaves metrics out instead of inf or NaN") {
  // Found by fuzz_metrics: a true value of 1E212 made mse inf (and rse inf / inf = NaN), which
  // evaluation promises never to yield; such a metric is now undefined in its bucket.
  const TempDir dir;
  const fs::path file = write_file(
      dir / "results.csv", kept_input("metrics", "results-value-whose-square-overflows"));
  const auto metrics = evaluate_results_csv(file, DatasetType::kGeneric);
  REQUIRE(metrics.has_value());
  for (const auto& [name, value] : *metrics) {
    INFO(name, " = ", value);
    CHECK(std::isfinite(value));
  }
  const auto has = [&](const char* name) {
    return std::any_of(metrics->begin(), metrics->end(),
                       [&](const auto& metric) { return metric.first == name; });
  };
  CHECK(has("mae"));  // |d| = 1E212 is still a finite mean
  CHECK_FALSE(has("mse"));
  CHECK_FALSE(has("rmse"));
}
