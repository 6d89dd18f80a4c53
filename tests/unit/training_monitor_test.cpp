#include "conductor/training_monitor.hpp"

#include <doctest/doctest.h>

using conductor::TrainingMonitor;
using Verdict = TrainingMonitor::Verdict;

TEST_CASE("training monitor knows nothing before the first Epoch line") {
  TrainingMonitor monitor;
  CHECK(monitor.epoch() == 0);
  CHECK(monitor.total_epochs() == 0);
  CHECK_FALSE(monitor.last_epoch_seconds().has_value());
  CHECK(monitor.abort_reason().empty());
  CHECK(monitor.observe("Using TensorFlow backend.") == Verdict::kContinue);
  CHECK(monitor.epoch() == 0);
}

TEST_CASE("training monitor follows Keras epochs and epoch durations") {
  TrainingMonitor monitor;
  CHECK(monitor.observe("Epoch 3/10") == Verdict::kContinue);
  CHECK(monitor.epoch() == 3);
  CHECK(monitor.total_epochs() == 10);
  CHECK_FALSE(monitor.last_epoch_seconds().has_value());

  CHECK(monitor.observe("60000/60000 [==============================] - 12s - loss: 0.3 - "
                        "val_loss: 0.4") == Verdict::kContinue);
  REQUIRE(monitor.last_epoch_seconds().has_value());
  CHECK(*monitor.last_epoch_seconds() == doctest::Approx(12.0));

  CHECK(monitor.observe("Epoch 4/10") == Verdict::kContinue);
  CHECK(monitor.epoch() == 4);
  CHECK(*monitor.last_epoch_seconds() == doctest::Approx(12.0));  // kept until the next one
  monitor.observe("1875/1875 [==============================] - 7s 4ms/step - loss: 0.2");
  CHECK(*monitor.last_epoch_seconds() == doctest::Approx(7.0));
}

TEST_CASE("training monitor ignores ETA forecasts and tokens that are not whole seconds") {
  TrainingMonitor monitor;
  monitor.observe(" 3000/60000 [>.....] - ETA: 45s - loss: 0.9");
  CHECK_FALSE(monitor.last_epoch_seconds().has_value());
  monitor.observe("step 4ms/step, 1.5s, seconds, s, 12sec");
  CHECK_FALSE(monitor.last_epoch_seconds().has_value());
}

TEST_CASE("training monitor ignores Epoch lookalikes") {
  TrainingMonitor monitor;
  monitor.observe("MyEpoch 5/6");
  monitor.observe("Epoch five/6");
  monitor.observe("Epoch 5 of 6");
  monitor.observe("Epoch 5/");
  CHECK(monitor.epoch() == 0);
  CHECK(monitor.total_epochs() == 0);
  monitor.observe("[train] Epoch 2/5 starting");
  CHECK(monitor.epoch() == 2);
  CHECK(monitor.total_epochs() == 5);
}

TEST_CASE("training monitor aborts on a diverged loss and stays aborted") {
  TrainingMonitor monitor;
  monitor.observe("Epoch 2/10");
  CHECK(monitor.observe("60000/60000 [====] - 12s - loss: nan - val_loss: nan") == Verdict::kAbort);
  CHECK(monitor.is_aborted());
  CHECK(monitor.abort_reason() == "training diverged: loss: nan - val_loss: nan");
  CHECK(monitor.observe("Epoch 3/10") == Verdict::kAbort);
  CHECK(monitor.epoch() == 2);  // progress frozen after the abort
}

TEST_CASE("training monitor aborts when the script raises ConductorError") {
  TrainingMonitor monitor;
  const char* line = "utility.exceptions.ConductorError: dataset missing";
  CHECK(monitor.observe(line) == Verdict::kAbort);
  CHECK(monitor.abort_reason() == std::string("ConductorError raised: ") + line);
}

TEST_CASE("training monitor does not abort on lines that merely contain nan") {
  TrainingMonitor monitor;
  CHECK(monitor.observe("hired a nanny for the GPU") == Verdict::kContinue);
  CHECK(monitor.observe("loss: nan") == Verdict::kContinue);
  CHECK(monitor.observe("val_loss: nan") == Verdict::kContinue);
  CHECK(monitor.observe("loss: 0.3 - val_loss: nan") == Verdict::kContinue);
  CHECK(monitor.observe("ConductorError in a comment") == Verdict::kContinue);
  CHECK_FALSE(monitor.is_aborted());
  CHECK(monitor.abort_reason().empty());
}
