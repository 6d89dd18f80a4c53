// libFuzzer target: load_configuration, load_version_file and AssetStore::load_model_meta
// on arbitrary bytes.
// The input format and the checks live in tests/support/fuzz_inputs.hpp, through which
// tests/unit/regression_test.cpp replays the crashers kept in tests/data/regressions/xml/.
#include <cstddef>
#include <cstdint>

#include "conductor/error.hpp"
#include "support/fuzz_inputs.hpp"
#include "support/temp_dir.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // One folder per process, removed at exit; the files in it are rewritten for every input.
  static const conductor::test::TempDir work("conductor-fuzz-xml");
  try {
    conductor::test::feed_xml({data, size}, work.path());
  } catch (const conductor::Error&) {
    // a clean refusal
  }
  return 0;
}
