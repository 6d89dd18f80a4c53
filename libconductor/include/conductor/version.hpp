// Value types describing a version: a named training setup and the commands that train
// one model from it. Plain values; copy freely. See config.hpp for reading and writing them.
#pragma once

#include <optional>
#include <string>
#include <string_view>
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

// Which clients may run a version's items: any, only CPU clients, or only GPU clients (a
// client's type is its CONDUCTOR_TYPE). Extension element <Requires>, "cpu" or "gpu".
enum class Requirement { kAny, kCpu, kGpu };

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
  Requirement requirement = Requirement::kAny;

  friend bool operator==(const Version&, const Version&) = default;
};

const char* to_string(DatasetType type) noexcept;
// "any", "cpu" or "gpu".
const char* to_string(Requirement requirement) noexcept;
// Reads "any", "cpu" or "gpu" (an empty text is "any"); nullopt for anything else.
std::optional<Requirement> parse_requirement(std::string_view text) noexcept;
// Whether a client of `client_type` ("cpu" or "gpu") may run items that need `requirement`.
bool satisfies(const std::string& client_type, Requirement requirement) noexcept;

}  // namespace conductor
