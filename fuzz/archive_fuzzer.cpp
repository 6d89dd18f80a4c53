// libFuzzer target: conductor::extract on arbitrary bytes, into a fresh folder, with small
// limits. The input format and the checks live in tests/support/fuzz_inputs.hpp, through which
// tests/unit/regression_test.cpp replays the crashers kept in tests/data/regressions/archive/.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "conductor/error.hpp"
#include "support/fuzz_inputs.hpp"
#include "support/temp_dir.hpp"

namespace {

constexpr std::size_t kBlock = 512;

// The size field of a ustar header (12 octal digits at 124), or -1 when it is not octal.
long long entry_size(const std::uint8_t* header) {
  long long size = 0;
  for (std::size_t i = 124; i < 136 && header[i] != 0 && header[i] != ' '; ++i) {
    if (header[i] < '0' || header[i] > '7' || size > (1ll << 40)) return -1;
    size = size * 8 + (header[i] - '0');
  }
  return size;
}

// Every tar header carries a checksum of itself, so nearly every mutation of one makes libarchive
// refuse the archive at once and the extraction code behind it is never reached. For an
// uncompressed tar, the headers are walked as a reader would and their checksums made right
// again after each mutation.
void fix_tar_checksums(std::uint8_t* data, std::size_t size) {
  if (size < kBlock || std::memcmp(data + 257, "ustar", 5) != 0) return;
  for (std::size_t offset = 0; offset + kBlock <= size;) {
    std::uint8_t* header = data + offset;
    if (std::all_of(header, header + kBlock, [](std::uint8_t byte) { return byte == 0; })) return;
    std::memset(header + 148, ' ', 8);
    unsigned sum = 0;
    for (std::size_t i = 0; i < kBlock; ++i) sum += header[i];
    std::snprintf(reinterpret_cast<char*>(header + 148), 8, "%06o", sum & 0777777u);
    header[155] = ' ';
    const long long content = entry_size(header);
    if (content < 0) return;
    offset += kBlock + (static_cast<std::size_t>(content) + kBlock - 1) / kBlock * kBlock;
  }
}

}  // namespace

extern "C" std::size_t LLVMFuzzerMutate(std::uint8_t* data, std::size_t size,
                                        std::size_t max_size);

extern "C" std::size_t LLVMFuzzerCustomMutator(std::uint8_t* data, std::size_t size,
                                               std::size_t max_size, unsigned int /*seed*/) {
  size = LLVMFuzzerMutate(data, size, max_size);
  fix_tar_checksums(data, size);
  return size;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // One folder per process, removed at exit; the files in it are rewritten for every input.
  static const conductor::test::TempDir work("conductor-fuzz-archive");
  try {
    conductor::test::feed_archive({data, size}, work.path());
  } catch (const conductor::Error&) {
    // a clean refusal
  }
  return 0;
}
