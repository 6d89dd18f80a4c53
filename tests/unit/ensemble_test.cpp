#include "conductor/ensemble.hpp"

#include <doctest/doctest.h>

#include <cmath>

#include "conductor/error.hpp"
#include "conductor/version.hpp"

using namespace conductor;

TEST_CASE("an ensemble aggregates values: mean, median, sample deviation, range") {
  Ensemble ensemble("r1", "v1", {"m1", "m2", "m3", "m4", "m5"});
  CHECK_FALSE(ensemble.is_complete());
  // 2, 4, 4, 4, 5: mean 3.8, median 4, sample variance (3.24+0.04*3+1.44)/4 = 1.2.
  CHECK(ensemble.record_value("m1", 2));
  CHECK(ensemble.record_value("m2", 4));
  CHECK(ensemble.record_value("m3", 4));
  CHECK(ensemble.record_value("m4", 4));
  CHECK(ensemble.record_value("m5", 5));
  REQUIRE(ensemble.is_complete());
  auto result = ensemble.result();
  CHECK(result.complete);
  CHECK(result.request_id == "r1");
  CHECK(result.values.size() == 5);
  CHECK(result.values[0].model_id == "m1");
  CHECK(result.mean == doctest::Approx(3.8));
  CHECK(result.median == doctest::Approx(4.0));
  CHECK(result.stddev == doctest::Approx(std::sqrt(1.2)));
  CHECK(result.min == 2);
  CHECK(result.max == 5);
}

TEST_CASE("the median of an even count is the mean of the middle pair") {
  Ensemble ensemble("r", "v", {"a", "b", "c", "d"});
  ensemble.record_value("a", 10);
  ensemble.record_value("b", 1);
  ensemble.record_value("c", 3);
  ensemble.record_value("d", 7);
  CHECK(ensemble.result().median == doctest::Approx(5.0));
}

TEST_CASE("failures complete a request and are listed; statistics cover the values only") {
  Ensemble ensemble("r", "v", {"a", "b", "c"});
  ensemble.record_value("a", 1.5);
  ensemble.record_failure("b", "exited with status 1");
  CHECK_FALSE(ensemble.is_complete());
  ensemble.fail_outstanding("timed out");
  REQUIRE(ensemble.is_complete());
  auto result = ensemble.result();
  REQUIRE(result.failures.size() == 2);
  CHECK(result.failures[0].model_id == "b");
  CHECK(result.failures[1].reason == "timed out");
  CHECK(result.mean == 1.5);
  CHECK(result.stddev == 0);
}

TEST_CASE("only the first outcome per model counts and unknown models are ignored") {
  Ensemble ensemble("r", "v", {"a"});
  CHECK(ensemble.record_value("a", 1));
  CHECK_FALSE(ensemble.record_value("a", 2));
  CHECK_FALSE(ensemble.record_failure("a", "late"));
  CHECK_FALSE(ensemble.record_value("zz", 3));
  CHECK(ensemble.result().values.at(0).value == 1);
}

TEST_CASE("an empty or all-failed ensemble completes with zero statistics") {
  Ensemble none("r", "v", {});
  CHECK(none.is_complete());
  Ensemble failed("r", "v", {"a"});
  failed.record_failure("a", "x");
  auto result = failed.result();
  CHECK(result.complete);
  CHECK(result.values.empty());
  CHECK(result.mean == 0);
}

TEST_CASE("predictions are read with the original's PredictedBuffer pattern by default") {
  CHECK(parse_prediction("loading\nPredictedBuffer=0.73\n", kDefaultPredictionPattern) == 0.73);
  CHECK(parse_prediction("PredictedBuffer=-1.5e3", kDefaultPredictionPattern) == -1500.0);
  CHECK(parse_prediction("PredictedBuffer=7\nPredictedBuffer=8", kDefaultPredictionPattern) == 7.0);
  CHECK_FALSE(parse_prediction("no value here", kDefaultPredictionPattern));
  CHECK_FALSE(parse_prediction("PredictedBuffer=abc", kDefaultPredictionPattern));
  CHECK_FALSE(parse_prediction("PredictedBuffer=nan", kDefaultPredictionPattern));
}

TEST_CASE(
    "a client's long output lines are read in their first 4 KiB only and never overflow the "
    "regex engine's stack") {
  // Before lines were cut, each of these crashed the process: libstdc++'s regex recursed once
  // per character of the match attempt (an 8 MiB stack took about 30,000).
  const std::string long_run(1u << 20, 'x');
  CHECK_FALSE(parse_prediction("PredictedBuffer=" + long_run + "\n", kDefaultPredictionPattern));
  const std::string digits(1u << 20, '7');
  CHECK_FALSE(parse_prediction(digits, "[-+]?(?:\\d+\\.?\\d*|\\.\\d+)(?:[eE][-+]?\\d+)?"));
  // A value on a line of its own after a long one is found; one beyond a line's first 4 KiB
  // is not read.
  CHECK(parse_prediction(long_run + "\nPredictedBuffer=0.25\n", kDefaultPredictionPattern) == 0.25);
  const std::string value = "PredictedBuffer=1";
  const std::string filler(kMaxPredictionLineChars - value.size(), ' ');
  CHECK(parse_prediction(filler + value + "\n", kDefaultPredictionPattern) == 1.0);  // just fits
  CHECK_FALSE(parse_prediction(filler + " " + value + "\n", kDefaultPredictionPattern));
  // A value the cut goes through is not read as its first digits.
  CHECK_FALSE(parse_prediction(filler + value + "2345\n", kDefaultPredictionPattern));
  CHECK(parse_prediction(filler + value + "2345\nPredictedBuffer=7\n", kDefaultPredictionPattern) ==
        7.0);
  // A match never spans lines.
  CHECK_FALSE(parse_prediction("Value:\n3\n", "Value:\\s*(\\d+)"));
  CHECK(parse_prediction("Value: 3\n", "Value:\\s*(\\d+)") == 3.0);
}

TEST_CASE("a version's own prediction pattern is honoured and a broken one is refused") {
  CHECK(parse_prediction("class: 3 (p=0.9)", "class: (\\d+)") == 3.0);
  CHECK(parse_prediction("42", "\\d+") == 42.0);
  CHECK_THROWS_WITH_AS(parse_prediction("x", "("), doctest::Contains("not a valid regex"), Error);
}
