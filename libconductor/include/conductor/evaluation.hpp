// Evaluation: the metrics of one trained model, read from the files its training left in the
// model folder. Free functions over files; no state, safe to call from any thread.
//
// The original's rules (Conductor_Server/Assets/Evaluation in chemsorly/Conductor), kept here
// except where marked "differs":
// - A *results.csv row is: sequence id, sequence length, prefix, completion, predicted value,
//   true value, planned threshold, instance id, prefix activities, suffix activities
//   (activities blank-separated). Separator ',' or ';' (taken from the first line), fields may
//   be quoted ("" escapes a quote). The first line is a header when one of its columns 3..6 is
//   not a number (counting from 0); the original always dropped the first line (differs: a file
//   without a header loses no row). Rows with a non-finite number (a diverged model's "nan") are
//   skipped.
// - Violation (the "positive" class): Generic: value > planned, for the predicted and the true
//   value alike. Cargo2000: value <= planned, as the original inverts the class for that data.
// - Buckets of 0.1 completion: bucket b holds completions in [b/10, (b+1)/10), b = 0..10, so a
//   completion of exactly 1.0 has a bucket of its own, as in the original. A completion that is
//   itself a boundary (0.3) opens its bucket (differs: the original compared with i * 0.1,
//   0.30000000000000004 for i = 3, and so put 0.3 in bucket 2). When some completion in the file
//   exceeds 1.1 the file is taken to give percents and every completion is divided by 100 (an
//   addition). Rows outside every bucket are skipped.
// - Cargo2000 ignores the completion column. Let i be the index of the marker activity "13"
//   (the 50% point) among prefix activities then suffix activities, and p the prefix:
//   i == p: bucket 5 (completion 0.5); i > p: completion p / i / 2; i < p: completion
//   (p - i) / (length - i) / 2 + 0.5, moved to bucket 6 should it land in bucket 5. A row
//   without the marker makes the file malformed, as it failed the original's evaluation.
//   (The original wired its default bucketing in, so it never actually applied this rule;
//   here Cargo2000 versions get the bucketing the original documents.)
// - Per bucket, from the confusion matrix: mcc, accuracy, precision, recall, f1 (F-beta with
//   beta 1), specificity, npv = TN / (TN + FN) (differs: the original divided by TN + TP),
//   fpr; from d = predicted - true: mae, mse, rmse, rae = sum|d| / sum|t - mean t|,
//   rse = sum d^2 / sum (t - mean t)^2, rrse = sqrt(rse) (differs: the original took the mean
//   and spread of the *predicted* values, which is not the relative error's definition).
//   A metric undefined in a bucket (a zero denominator, or values so large that it overflows)
//   leaves that bucket out of its average; a metric undefined in every bucket is left out, as in
//   the original. Never NaN or infinite.
// - Names are lower case (the original wrote "MCC", "FMetric", "Speceficity",
//   "Negative Predictions", "False Positive Rate", ...; differs).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "conductor/version.hpp"

namespace conductor {

// An ordered list of named values (names unique; insertion order kept). A plain value.
using Metrics = std::vector<std::pair<std::string, double>>;

// Adds each of `source`'s values to `target`: a name already there gets the new value in its
// old place, a new name is appended. Throws only std::bad_alloc.
void merge_metrics(Metrics& target, const Metrics& source);

// What the training wrote itself, from the top of `model_folder`:
// - metrics.json: a JSON object; numbers and booleans (1/0) are taken, nested objects are
//   flattened with '.' ("val": {"loss": 1} -> "val.loss"), arrays, strings and null ignored;
// - metrics.csv: either "name,value" rows (a first row whose value is not a number is a header)
//   or exactly one header row plus one value row (then columns whose value is not a number are
//   ignored). Separator ',' or ';'; with ';', a decimal comma is accepted. "nan"/"inf" values are
//   skipped; true/false count as 1/0.
// JSON values first, then CSV values (a name in both keeps the CSV value). Absent files give
// nothing. Throws ConfigError naming the file (and the line, for CSV and JSON syntax) when a
// present file is malformed, is not a regular file, exceeds 16 MiB or holds over 10,000 values.
Metrics read_training_metrics(const std::filesystem::path& model_folder);

// The original's metrics (see above) of one results file, in the order mcc, accuracy,
// precision, recall, f1, specificity, npv, fpr, mae, mse, rmse, rae, rse, rrse (undefined ones
// left out); nullopt when no row is usable. Reads the file line by line and keeps 40 bytes per
// row. Throws ConfigError "<file>:<line>: <why>" for a malformed row (too few columns,
// a number that is not one, a line over 1 MiB, a Cargo2000 row without the marker),
// ConfigError "<file>: larger than 64 MiB, ..." for a file over 64 MiB, and IoError when the
// file cannot be read.
std::optional<Metrics> evaluate_results_csv(const std::filesystem::path& csv, DatasetType type);

// Everything known about one model folder. A plain value.
struct Evaluation {
  Metrics metrics;
  std::vector<std::string> problems;  // one line each: a file that was skipped, and why
};

// read_training_metrics(folder), then merged into it the evaluate_results_csv() of the first
// file directly in `folder` whose name ends in "results.csv" (by name; symlinks are not
// followed); a name in both takes the evaluation's value. Never throws: a file that cannot be used
// is named in `problems` with the reason and the other files still count; a results file without
// usable rows is a problem too.
Evaluation evaluate_model_folder(const std::filesystem::path& folder, DatasetType type);
// The same, judged from `files`, the folder's regular files (relative, "/"-separated, as
// ExtractStats::files names them), instead of the folder's listing: only files the list names
// are opened, so a folder whose files are known costs no lookups of files that are not there.
Evaluation evaluate_model_folder(const std::filesystem::path& folder, DatasetType type,
                                 const std::vector<std::string>& files);

}  // namespace conductor
