// TrainingMonitor: reads a training command's console lines as the original client did, to
// report progress (epoch i of n, last epoch duration) and to spot runs that cannot succeed.
// A plain value with no I/O; not thread-safe: one per running work item, fed by one thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace conductor {

// Recognises, anywhere in a line:
//   "Epoch <i>/<n>"                  current epoch i of n (Keras prints it before each epoch);
//   a blank-separated "<digits>s"    the last epoch's duration ("... - 12s - loss: ..."), except
//                                    after "ETA:", which is a forecast, not a duration;
//   "loss: nan - val_loss: nan"      the training diverged: abort;
//   "utility.exceptions.ConductorError"  the training script gave up: abort.
class TrainingMonitor {
 public:
  enum class Verdict { kContinue, kAbort };

  // Updates progress from one line. Returns kAbort for the line that shows the run cannot
  // succeed and for every line after it (progress then stays frozen). Never throws.
  Verdict observe(std::string_view line);

  int epoch() const noexcept { return epoch_; }                // 0 until the first Epoch line
  int total_epochs() const noexcept { return total_epochs_; }  // 0 until known
  std::optional<double> last_epoch_seconds() const noexcept { return last_epoch_seconds_; }
  bool is_aborted() const noexcept { return !abort_reason_.empty(); }
  // Empty unless aborted: "training diverged: loss: nan - val_loss: nan" or
  // "ConductorError raised: <the line>".
  const std::string& abort_reason() const noexcept { return abort_reason_; }

 private:
  int epoch_ = 0;
  int total_epochs_ = 0;
  std::optional<double> last_epoch_seconds_;
  std::string abort_reason_;
};

}  // namespace conductor
