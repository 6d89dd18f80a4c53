#include "conductor/terminal.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace conductor {

namespace {

constexpr std::size_t kMinWidth = 3;
constexpr std::size_t kActivityBlock = 3;

}  // namespace

std::string progress_bar(double fraction, std::size_t width) {
  const std::size_t inner = std::max(width, kMinWidth) - 2;
  if (!(fraction > 0)) fraction = 0;  // also NaN
  fraction = std::min(fraction, 1.0);
  // Floor, so a bar is full only when the work is done.
  const auto filled = static_cast<std::size_t>(std::floor(fraction * static_cast<double>(inner)));
  return "[" + std::string(filled, '#') + std::string(inner - filled, '.') + "]";
}

std::string activity_bar(double elapsed_seconds, std::size_t width, double step_seconds) {
  const std::size_t inner = std::max(width, kMinWidth) - 2;
  const std::size_t block = std::min(kActivityBlock, inner);
  const std::size_t positions = inner - block + 1;
  std::size_t start = 0;
  if (positions > 1 && elapsed_seconds > 0 && step_seconds > 0) {
    // There and back again: 0, 1, ..., positions-1, positions-2, ..., 1, 0, ...
    const auto period = 2 * (positions - 1);
    const auto step = static_cast<std::size_t>(std::fmod(elapsed_seconds / step_seconds,
                                                         static_cast<double>(period)));
    start = step < positions ? step : period - step;
  }
  return "[" + std::string(start, ' ') + std::string(block, '=') +
         std::string(inner - block - start, ' ') + "]";
}

std::string format_duration(double seconds) {
  if (!(seconds > 0)) seconds = 0;
  char text[48];
  if (seconds < 59.95) {
    std::snprintf(text, sizeof text, "%.1fs", seconds);
    return text;
  }
  const long long total = std::llround(seconds);
  if (total < 3600) {
    std::snprintf(text, sizeof text, "%lldm%02llds", total / 60, total % 60);
  } else {
    std::snprintf(text, sizeof text, "%lldh%02lldm%02llds", total / 3600, total / 60 % 60,
                  total % 60);
  }
  return text;
}

bool is_interactive_terminal(int fd) {
  const char* term = std::getenv("TERM");
  const bool dumb = term == nullptr || *term == '\0' || std::strcmp(term, "dumb") == 0;
  return ::isatty(fd) == 1 && !dumb;
}

}  // namespace conductor
