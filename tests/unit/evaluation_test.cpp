#include "conductor/evaluation.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "conductor/error.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace conductor;
using conductor::test::TempDir;
using conductor::test::write_file;

namespace {

std::optional<double> value_of(const Metrics& metrics, const std::string& name) {
  for (const auto& [key, value] : metrics) {
    if (key == name) return value;
  }
  return std::nullopt;
}

std::vector<std::string> names_of(const Metrics& metrics) {
  std::vector<std::string> names;
  for (const auto& entry : metrics) names.push_back(entry.first);
  return names;
}

// Two buckets of four rows, planned threshold 10 everywhere ("violation" = value > 10).
//
// Bucket 0 (completions 0.0 .. 0.09):      Bucket 3 (completions 0.3 .. 0.39):
//   pred true  class  d = p - t              pred true  class  d
//    12   11   TP      1                      15   14   TP      1
//     8    9   TN     -1                      13   12   TP      1
//    11    9   FP      2                       5    6   TN     -1
//     9   12   FN     -3                      11    4   FP      7
// TP=1 FP=1 TN=1 FN=1                       TP=2 FP=1 TN=1 FN=0
// mcc = (1-1)/sqrt(2*2*2*2) = 0             mcc = (2*1-1*0)/sqrt(3*2*2*1) = 2/sqrt(12)
// accuracy 2/4, precision 1/2, recall 1/2   accuracy 3/4, precision 2/3, recall 2/2
// f1 = 2*.5*.5/(.5+.5) = .5                 f1 = 2*(2/3)*1/(2/3+1) = .8
// specificity 1/2, npv 1/2, fpr 1/2         specificity 1/2, npv 1/1, fpr 1/2
// mae 7/4, mse 15/4, rmse sqrt(15/4)        mae 10/4, mse 52/4, rmse sqrt(13)
// true mean 10.25: sum|t-m| = .75+1.25+     true mean 9: sum|t-m| = 5+3+3+5 = 16,
//   1.25+1.75 = 5, sum(t-m)^2 = 6.75          sum(t-m)^2 = 25+9+9+25 = 68
// rae 7/5, rse 15/6.75, rrse sqrt(15/6.75)  rae 10/16, rse 52/68, rrse sqrt(52/68)
// Every metric is the mean of its two bucket values.
const char* const kTwoBuckets =
    "sequence,length,prefix,completion,predicted,true,planned,instance,prefix activities,suffix\n"
    "1,10,1,0.05,12,11,10,a,1,2 3\n"
    "2,10,1,0.0,8,9,10,b,1,2 3\n"
    "3,10,1,0.09,11,9,10,c,1,2 3\n"
    "4,10,1,0.05,9,12,10,d,1,2 3\n"
    "5,10,3,0.3,15,14,10,e,1 2 3,4\n"
    "6,10,3,0.35,13,12,10,f,1 2 3,4\n"
    "7,10,3,0.39,5,6,10,g,1 2 3,4\n"
    "8,10,3,0.31,11,4,10,h,1 2 3,4\n";

void check_two_bucket_metrics(const Metrics& metrics) {
  CHECK(names_of(metrics) == std::vector<std::string>{"mcc", "accuracy", "precision", "recall",
                                                      "f1", "specificity", "npv", "fpr", "mae",
                                                      "mse", "rmse", "rae", "rse", "rrse"});
  CHECK(*value_of(metrics, "mcc") == doctest::Approx((0.0 + 2 / std::sqrt(12.0)) / 2));
  CHECK(*value_of(metrics, "accuracy") == doctest::Approx((0.5 + 0.75) / 2));
  CHECK(*value_of(metrics, "precision") == doctest::Approx((0.5 + 2.0 / 3) / 2));
  CHECK(*value_of(metrics, "recall") == doctest::Approx((0.5 + 1.0) / 2));
  CHECK(*value_of(metrics, "f1") == doctest::Approx((0.5 + 0.8) / 2));
  CHECK(*value_of(metrics, "specificity") == doctest::Approx((0.5 + 0.5) / 2));
  CHECK(*value_of(metrics, "npv") == doctest::Approx((0.5 + 1.0) / 2));
  CHECK(*value_of(metrics, "fpr") == doctest::Approx((0.5 + 0.5) / 2));
  CHECK(*value_of(metrics, "mae") == doctest::Approx((7.0 / 4 + 10.0 / 4) / 2));
  CHECK(*value_of(metrics, "mse") == doctest::Approx((15.0 / 4 + 52.0 / 4) / 2));
  CHECK(*value_of(metrics, "rmse") == doctest::Approx((std::sqrt(15.0 / 4) + std::sqrt(13.0)) / 2));
  CHECK(*value_of(metrics, "rae") == doctest::Approx((7.0 / 5 + 10.0 / 16) / 2));
  CHECK(*value_of(metrics, "rse") == doctest::Approx((15 / 6.75 + 52.0 / 68) / 2));
  CHECK(*value_of(metrics, "rrse") ==
        doctest::Approx((std::sqrt(15 / 6.75) + std::sqrt(52.0 / 68)) / 2));
}

}  // namespace

TEST_CASE("results.csv metrics are computed per 0.1 completion bucket and averaged") {
  TempDir dir;
  const auto metrics =
      evaluate_results_csv(write_file(dir / "results.csv", kTwoBuckets), DatasetType::kGeneric);
  REQUIRE(metrics.has_value());
  check_two_bucket_metrics(*metrics);
}

TEST_CASE("results.csv may use ';', quotes, percents and no header row") {
  TempDir dir;
  // kTwoBuckets again: no header, ';' separated, completions in percent, quoted text fields
  // (one holding the separator), CRLF line ends and a blank line.
  const char* text =
      "1;10;1;5;12;11;10;\"a;x\";1;\"2 3\"\r\n"
      "2;10;1;0;8;9;10;b;1;2 3\r\n"
      "\r\n"
      "3;10;1;9;11;9;10;c;1;2 3\r\n"
      "4;10;1;5;9;12;10;d;1;2 3\r\n"
      "5;10;3;30;15;14;10;e;1 2 3;4\r\n"
      "6;10;3;35;13;12;10;f;1 2 3;4\r\n"
      "7;10;3;39;5;6;10;\"g \"\"quoted\"\"\";1 2 3;4\r\n"
      "8;10;3;31;11;4;10;h;1 2 3;4\r\n";
  const auto metrics =
      evaluate_results_csv(write_file(dir / "x-results.csv", text), DatasetType::kGeneric);
  REQUIRE(metrics.has_value());
  check_two_bucket_metrics(*metrics);
}

TEST_CASE("a metric undefined in a bucket is averaged over the other buckets only") {
  TempDir dir;
  // Bucket 0: TP, FN (no actual negative: specificity, fpr and mcc undefined; npv 0/1).
  // Bucket 5: TN, TN (no positive at all: precision, recall, f1 and mcc undefined).
  // Bucket 10 (completion exactly 1.0): TP, TN: mcc = (1*1 - 0)/sqrt(1*1*1*1) = 1.
  // All true values are equal within bucket 5, so rae and rse are undefined there (zero
  // spread) and averaged over buckets 0 and 10.
  const char* text =
      "1,4,1,0.0,12,11,10,a,x,y\n"  // TP  d=1
      "2,4,1,0.05,9,12,10,b,x,y\n"  // FN  d=-3   true mean 11.5, spread |.5|+|.5| = 1
      "3,4,2,0.5,7,8,10,c,x,y\n"    // TN  d=-1
      "4,4,2,0.55,9,8,10,d,x,y\n"   // TN  d=1    true values equal: spread 0
      "5,4,4,1.0,20,30,10,e,x,y\n"  // TP  d=-10
      "6,4,4,1.0,0,10,10,f,x,y\n";  // TN  d=-10  true mean 20, spread 10+10 = 20
  const auto metrics =
      evaluate_results_csv(write_file(dir / "results.csv", text), DatasetType::kGeneric);
  REQUIRE(metrics.has_value());
  CHECK(*value_of(*metrics, "mcc") == doctest::Approx(1.0));
  CHECK(*value_of(*metrics, "precision") == doctest::Approx((1.0 + 1.0) / 2));
  CHECK(*value_of(*metrics, "recall") == doctest::Approx((0.5 + 1.0) / 2));
  CHECK(*value_of(*metrics, "f1") == doctest::Approx((2 * 1 * 0.5 / 1.5 + 1.0) / 2));
  CHECK(*value_of(*metrics, "specificity") == doctest::Approx((1.0 + 1.0) / 2));
  CHECK(*value_of(*metrics, "fpr") == doctest::Approx(0.0));
  CHECK(*value_of(*metrics, "npv") == doctest::Approx((0.0 + 1.0 + 1.0) / 3));  // 0/(0+1) first
  CHECK(*value_of(*metrics, "accuracy") == doctest::Approx((0.5 + 1.0 + 1.0) / 3));
  CHECK(*value_of(*metrics, "mae") == doctest::Approx((2.0 + 1.0 + 10.0) / 3));
  CHECK(*value_of(*metrics, "rae") == doctest::Approx((4.0 / 1 + 20.0 / 20) / 2));
  CHECK(*value_of(*metrics, "rse") == doctest::Approx((10.0 / 0.5 + 200.0 / 200) / 2));
  for (const auto& [name, value] : *metrics) {
    CAPTURE(name);
    CHECK(std::isfinite(value));
  }
}

TEST_CASE("a metric undefined in every bucket is left out") {
  TempDir dir;
  // Only true negatives: precision, recall, f1 and mcc have a zero denominator everywhere.
  const char* text = "1,4,1,0.1,1,2,10,a,x,y\n2,4,1,0.7,3,2,10,b,x,y\n";
  const auto metrics =
      evaluate_results_csv(write_file(dir / "results.csv", text), DatasetType::kGeneric);
  REQUIRE(metrics.has_value());
  for (const char* absent : {"mcc", "precision", "recall", "f1", "rae", "rse", "rrse"}) {
    CAPTURE(std::string(absent));
    CHECK_FALSE(value_of(*metrics, absent).has_value());
  }
  CHECK(*value_of(*metrics, "accuracy") == doctest::Approx(1.0));
  CHECK(*value_of(*metrics, "npv") == doctest::Approx(1.0));
  CHECK(*value_of(*metrics, "mae") == doctest::Approx(1.0));
}

TEST_CASE("results.csv without usable rows evaluates to nothing") {
  TempDir dir;
  CHECK_FALSE(evaluate_results_csv(write_file(dir / "a.csv", ""), DatasetType::kGeneric));
  CHECK_FALSE(evaluate_results_csv(
      write_file(dir / "b.csv", "sequence,length,prefix,completion,predicted,true,planned\n"),
      DatasetType::kGeneric));
  // Diverged predictions and completions past every bucket are unusable, not malformed.
  CHECK_FALSE(evaluate_results_csv(
      write_file(dir / "c.csv", "1,4,1,0.5,nan,2,10,a,x,y\n2,4,1,-0.5,1,2,10,b,x,y\n"),
      DatasetType::kGeneric));
}

TEST_CASE("a results.csv over 64 MiB is refused before a row is read") {
  TempDir dir;
  const fs::path csv = write_file(dir / "results.csv", "1,4,1,0.5,1,2,10,a,x,y\n");
  fs::resize_file(csv, (std::uintmax_t{64} << 20) + 1);  // sparse: no 64 MiB written
  const std::string refusal = csv.string() + ": larger than 64 MiB";
  CHECK_THROWS_WITH_AS(evaluate_results_csv(csv, DatasetType::kGeneric),
                       doctest::Contains(refusal.c_str()), ConfigError);
  // In a model folder it is a problem listed, not a refusal.
  write_file(dir / "model.h5", "weights");
  const Evaluation evaluation = evaluate_model_folder(dir.path(), DatasetType::kGeneric);
  REQUIRE(evaluation.problems.size() == 1);
  CHECK(evaluation.problems[0].find("larger than 64 MiB") != std::string::npos);
}

TEST_CASE("a malformed results.csv row is a ConfigError naming file and line") {
  TempDir dir;
  const fs::path file =
      write_file(dir / "results.csv", "1,4,1,0.5,1,2,10,a,x,y\n\n2,4,1,0.5,one,2,10,b,x,y\n");
  try {
    evaluate_results_csv(file, DatasetType::kGeneric);
    FAIL("a malformed row was accepted");
  } catch (const ConfigError& error) {
    CHECK(std::string(error.what()).rfind(file.string() + ":3: ", 0) == 0);
  }
  write_file(file, "1,4,1,0.5,1,2\n");
  CHECK_THROWS_WITH_AS(evaluate_results_csv(file, DatasetType::kGeneric),
                       doctest::Contains(":1: expected at least 7 columns, got 6"), ConfigError);
  CHECK_THROWS_AS(evaluate_results_csv(dir / "missing.csv", DatasetType::kGeneric), IoError);
}

TEST_CASE("Cargo2000 buckets rows around the 50% marker activity 13 and inverts the class") {
  TempDir dir;
  // The completion column says 0.05 for all; Cargo2000 replaces it (i = index of "13" among
  // prefix then suffix activities, p = prefix):
  //   A: i 2 == p 2                          -> bucket 5                     |d| 1
  //   E: i 1 <  p 2, (2-1)/(11-1)/2+.5 = .55 -> bucket 5, moved to 6         |d| 3
  //   B: i 2 >  p 1, 1/2/2 = .25             -> bucket 2                     |d| 2
  //   C: i 1 <  p 4, (4-1)/(5-1)/2+.5 = .875 -> bucket 8                     |d| 4
  //   D: i 1 <  p 8, (8-1)/(11-1)/2+.5 = .85 -> bucket 8                     |d| 8
  // mae = (1 + 3 + 2 + (4+8)/2) / 4 = 3. Every value is <= planned 10: for Cargo2000 that is
  // a violation, so all rows are TP (specificity undefined); for Generic all are TN.
  const char* text =
      "1,5,2,0.05,9,8,10,A,1 2,13 4 5\n"
      "2,11,2,0.05,7,4,10,E,1 13,3 4 5 6 7 8 9 10 11\n"
      "3,4,1,0.05,6,4,10,B,1,2 13 4\n"
      "4,5,4,0.05,10,6,10,C,1 13 3 4,5\n"
      "5,11,8,0.05,2,10,10,D,1 13 3 4 5 6 7 8,9 10 11\n";
  const fs::path file = write_file(dir / "results.csv", text);

  const auto cargo = evaluate_results_csv(file, DatasetType::kCargo2000);
  REQUIRE(cargo.has_value());
  CHECK(*value_of(*cargo, "mae") == doctest::Approx(3.0));
  CHECK(*value_of(*cargo, "precision") == doctest::Approx(1.0));
  CHECK(*value_of(*cargo, "recall") == doctest::Approx(1.0));
  CHECK_FALSE(value_of(*cargo, "specificity").has_value());

  const auto generic = evaluate_results_csv(file, DatasetType::kGeneric);
  REQUIRE(generic.has_value());
  CHECK(*value_of(*generic, "mae") == doctest::Approx((1.0 + 3 + 2 + 4 + 8) / 5));
  CHECK(*value_of(*generic, "specificity") == doctest::Approx(1.0));
  CHECK_FALSE(value_of(*generic, "precision").has_value());

  write_file(file, std::string(text) + "6,3,1,0.05,1,2,10,F,1,2 3\n");
  CHECK_THROWS_WITH_AS(evaluate_results_csv(file, DatasetType::kCargo2000),
                       doctest::Contains(":6: no marker activity 13"), ConfigError);
}

TEST_CASE("metrics.json gives numbers and booleans, flattening nested objects") {
  TempDir dir;
  write_file(dir / "metrics.json",
             R"({"loss": 0.25, "accuracy": 0.9, "model": "lstm", "history": [1, 2],
                 "best": true, "nothing": null,
                 "val": {"loss": 0.5, "deep": {"epochs": 7}, "note": "x"}, "last": false})");
  CHECK(read_training_metrics(dir.path()) == Metrics{{"loss", 0.25},
                                                     {"accuracy", 0.9},
                                                     {"best", 1.0},
                                                     {"val.loss", 0.5},
                                                     {"val.deep.epochs", 7.0},
                                                     {"last", 0.0}});
}

TEST_CASE("metrics.csv may hold name,value rows or one header row and one value row") {
  TempDir dir;
  write_file(dir / "metrics.csv", "name,value\nloss,0.25\n\"val, acc\",0.9\nflag,True\n");
  CHECK(read_training_metrics(dir.path()) ==
        Metrics{{"loss", 0.25}, {"val, acc", 0.9}, {"flag", 1.0}});

  write_file(dir / "metrics.csv", "loss,0.25\r\nacc,nan\r\nmae,+3\r\n");
  CHECK(read_training_metrics(dir.path()) == Metrics{{"loss", 0.25}, {"mae", 3.0}});

  write_file(dir / "metrics.csv", "loss,acc,model,epoch\n0.25,0.9,lstm,5\n");
  CHECK(read_training_metrics(dir.path()) == Metrics{{"loss", 0.25}, {"acc", 0.9}, {"epoch", 5.0}});

  write_file(dir / "metrics.csv", "loss;acc\n0,25;0,9\n");
  CHECK(read_training_metrics(dir.path()) == Metrics{{"loss", 0.25}, {"acc", 0.9}});
}

TEST_CASE("training metrics keep JSON order, then CSV values, one value per name") {
  TempDir dir;
  CHECK(read_training_metrics(dir.path()).empty());
  write_file(dir / "metrics.json", R"({"b": 1, "a": 2})");
  write_file(dir / "metrics.csv", "a,3\nc,4\n");
  CHECK(read_training_metrics(dir.path()) == Metrics{{"b", 1.0}, {"a", 3.0}, {"c", 4.0}});

  Metrics target{{"x", 1}, {"y", 2}};
  merge_metrics(target, {{"y", 5}, {"z", 6}});
  CHECK(target == Metrics{{"x", 1.0}, {"y", 5.0}, {"z", 6.0}});
}

TEST_CASE("malformed metrics files are ConfigErrors naming the file") {
  TempDir dir;
  const fs::path json = write_file(dir / "metrics.json", "{\n  \"loss\": 0.25,\n  oops\n}\n");
  CHECK_THROWS_WITH_AS(read_training_metrics(dir.path()),
                       doctest::Contains((json.string() + ":3: malformed JSON").c_str()),
                       ConfigError);
  write_file(json, "[1, 2]");
  CHECK_THROWS_WITH_AS(read_training_metrics(dir.path()),
                       doctest::Contains("must hold a JSON object"), ConfigError);
  fs::remove(json);

  const fs::path csv = write_file(dir / "metrics.csv", "name,value\nloss,0.25\nacc,high\n");
  CHECK_THROWS_WITH_AS(read_training_metrics(dir.path()),
                       doctest::Contains((csv.string() + ":3: value 'high' of 'acc'").c_str()),
                       ConfigError);
  write_file(csv, "loss,0.25,extra\nacc,0.9\n");
  CHECK_THROWS_WITH_AS(read_training_metrics(dir.path()),
                       doctest::Contains((csv.string() + ":1: expected 'name,value'").c_str()),
                       ConfigError);
  write_file(csv, "\"loss,0.25\n");
  CHECK_THROWS_WITH_AS(read_training_metrics(dir.path()), doctest::Contains(":1: a quoted field"),
                       ConfigError);
  fs::remove(csv);
  fs::create_directories(dir / "metrics.csv");
  CHECK_THROWS_WITH_AS(read_training_metrics(dir.path()),
                       doctest::Contains("is not a regular file"), ConfigError);
}

TEST_CASE("evaluate_model_folder reports a bad file and still uses the others") {
  TempDir dir;
  write_file(dir / "metrics.json", "{ \"loss\": ");
  write_file(dir / "metrics.csv", "epochs,12\nmcc,0.1\n");
  write_file(dir / "b-results.csv", "not, a, results, file\n");  // sorts after a-results.csv
  write_file(dir / "a-results.csv", kTwoBuckets);
  write_file(dir / "notes.txt", "x");

  const Evaluation evaluation = evaluate_model_folder(dir.path(), DatasetType::kGeneric);
  REQUIRE(evaluation.problems.size() == 1);
  CHECK(evaluation.problems[0].find((dir / "metrics.json").string() + ":1: malformed JSON") == 0);
  REQUIRE(evaluation.metrics.size() == 15);
  CHECK(evaluation.metrics[0] == std::pair<std::string, double>{"epochs", 12.0});
  // The evaluation's mcc replaces the training's, in the training's place.
  CHECK(evaluation.metrics[1].first == "mcc");
  CHECK(evaluation.metrics[1].second == doctest::Approx(1 / std::sqrt(12.0)));
  CHECK(evaluation.metrics[2].first == "accuracy");
}

TEST_CASE("evaluate_model_folder with the folder's file list reads only the files it names") {
  TempDir dir;
  write_file(dir / "metrics.json", "{ \"loss\": ");
  write_file(dir / "metrics.csv", "epochs,12\nmcc,0.1\n");
  write_file(dir / "b-results.csv", "not, a, results, file\n");
  write_file(dir / "a-results.csv", kTwoBuckets);
  write_file(dir / "sub" / "c-results.csv", kTwoBuckets);  // not directly in the folder
  const std::vector<std::string> all = {"a-results.csv", "b-results.csv", "metrics.csv",
                                        "metrics.json", "sub/c-results.csv"};
  const Evaluation listed = evaluate_model_folder(dir.path(), DatasetType::kGeneric, all);
  const Evaluation walked = evaluate_model_folder(dir.path(), DatasetType::kGeneric);
  CHECK(listed.metrics == walked.metrics);
  CHECK(listed.problems == walked.problems);
  REQUIRE(listed.metrics.size() == 15);

  // Files left off the list are not read: the broken JSON no longer shows, and the first
  // results file named is the one evaluated.
  const Evaluation partial =
      evaluate_model_folder(dir.path(), DatasetType::kGeneric, {"b-results.csv", "metrics.csv"});
  CHECK(partial.metrics == Metrics{{"epochs", 12.0}, {"mcc", 0.1}});
  REQUIRE(partial.problems.size() == 1);
  CHECK(partial.problems[0] == (dir / "b-results.csv").string() + ": no usable rows to evaluate");
  CHECK(evaluate_model_folder(dir.path(), DatasetType::kGeneric, {}).metrics.empty());
}

TEST_CASE("evaluate_model_folder names a results file it cannot use") {
  TempDir dir;
  write_file(dir / "results.csv", "header,only\n");
  Evaluation evaluation = evaluate_model_folder(dir.path(), DatasetType::kGeneric);
  CHECK(evaluation.metrics.empty());
  REQUIRE(evaluation.problems.size() == 1);
  CHECK(evaluation.problems[0].find("results.csv:1: expected at least 7 columns") !=
        std::string::npos);

  write_file(dir / "results.csv", "");
  evaluation = evaluate_model_folder(dir.path(), DatasetType::kGeneric);
  REQUIRE(evaluation.problems.size() == 1);
  CHECK(evaluation.problems[0] == (dir / "results.csv").string() + ": no usable rows to evaluate");

  evaluation = evaluate_model_folder(dir / "missing", DatasetType::kGeneric);
  CHECK(evaluation.metrics.empty());
  CHECK(evaluation.problems.size() == 1);
}
