// Ensemble: collects the single predictions of one prediction request, one per model, and
// aggregates them. A plain value with no I/O; not thread-safe (the server's thread owns it).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conductor {

struct PredictionValue {
  std::string model_id;
  double value = 0;
};

struct PredictionFailure {
  std::string model_id;
  std::string reason;
};

// The ensemble's answer. Statistics cover the values that arrived; with no value they are 0
// and `values` is empty. `stddev` is the sample standard deviation (n - 1; 0 for one value).
struct EnsembleResult {
  std::string request_id;
  std::string version;
  bool complete = false;  // every model answered or failed
  std::size_t expected = 0;
  std::vector<PredictionValue> values;     // in model order
  std::vector<PredictionFailure> failures; // in model order
  double mean = 0;
  double median = 0;
  double stddev = 0;
  double min = 0;
  double max = 0;
};

class Ensemble {
 public:
  // One slot per model; ids must be unique.
  Ensemble(std::string request_id, std::string version, std::vector<std::string> model_ids);

  // Record one model's outcome. The first outcome per model counts; later ones, and ids not
  // in the request, are ignored (returns false).
  bool record_value(const std::string& model_id, double value);
  bool record_failure(const std::string& model_id, std::string reason);
  // Every model that has not answered yet fails with `reason` (a deadline passed).
  void fail_outstanding(const std::string& reason);

  bool is_complete() const noexcept { return answered_ == slots_.size(); }
  const std::string& request_id() const noexcept { return request_id_; }
  EnsembleResult result() const;

 private:
  struct Slot {
    std::string model_id;
    std::optional<double> value;
    std::optional<std::string> failure;
  };
  Slot* find(const std::string& model_id);

  std::string request_id_;
  std::string version_;
  std::vector<Slot> slots_;
  std::size_t answered_ = 0;
};

// How much of each output line parse_prediction() searches: the rest of a longer line is not
// read (a regex over it could overflow the stack).
inline constexpr std::size_t kMaxPredictionLineChars = 4096;

// Reads a prediction from command output: the first match of `pattern` (ECMAScript regex whose
// first group, or whole match without groups, is the number), searched line by line in the
// first kMaxPredictionLineChars of each line, so a match never spans lines (and one that runs
// into a line's cut is not taken). nullopt when nothing
// matches or the text is not a finite number. Throws Error(kArgument) for an invalid pattern.
std::optional<double> parse_prediction(std::string_view output, const std::string& pattern);

}  // namespace conductor
