// libFuzzer target: protocol::decode on arbitrary frames, then Message::as<T>() for
// every header type.
// The input format and the checks live in tests/support/fuzz_inputs.hpp, through which
// tests/unit/regression_test.cpp replays the crashers kept in tests/data/regressions/message/.
#include <cstddef>
#include <cstdint>

#include "conductor/error.hpp"
#include "support/fuzz_inputs.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    conductor::test::feed_message({data, size});
  } catch (const conductor::Error&) {
    // a clean refusal
  }
  return 0;
}
