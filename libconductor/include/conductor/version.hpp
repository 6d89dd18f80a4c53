// Value types describing a version: a named training setup and the commands that train
// one model from it. Plain values; copy freely. See config.hpp for reading and writing them.
#pragma once

#include <string>
#include <vector>

namespace conductor {

// One executable and its arguments, as the original's Conductor_Shared.Command.
// `arguments` is a single string split the way a POSIX shell splits words (quotes and
// backslashes), but no shell runs it: see split_arguments() in process_executor.hpp.
struct Command {
  std::string file_name;
  std::string arguments;
  std::string parameters;  // optional free text the original carried along; never interpreted

  friend bool operator==(const Command&, const Command&) = default;
};

enum class DatasetType { kGeneric, kCargo2000 };

// The original's default is "*.h5": a result without such a file is refused.
inline constexpr const char* kDefaultModelPattern = "*.h5";
// The original read a prediction from the console line "PredictedBuffer=<number>".
inline constexpr const char* kDefaultPredictionPattern = "PredictedBuffer=(\\S+)";

struct Version {
  std::string name;
  std::string created;       // ISO 8601 as written by the original (kept verbatim)
  std::string last_updated;  // ISO 8601
  DatasetType dataset_type = DatasetType::kGeneric;
  std::string status;
  std::vector<Command> training_commands;
  std::vector<Command> prediction_commands;
  int target_models = 0;
  // Glob (over file names relative to the model folder) that a result must match at
  // least once to be accepted. Extension element <ModelPattern>; absent means "*.h5".
  std::string model_pattern = kDefaultModelPattern;
  // ECMAScript regex whose first group captures a prediction's value in the console output
  // (or in prediction_output when set). Extension element <PredictionPattern>.
  std::string prediction_pattern = kDefaultPredictionPattern;
  // A file the prediction commands write; when set, the value is read from it instead of the
  // console: its first number, or the pattern's group when the pattern matches. Extension
  // element <PredictionOutput>.
  std::string prediction_output;

  friend bool operator==(const Version&, const Version&) = default;
};

const char* to_string(DatasetType type) noexcept;

}  // namespace conductor
