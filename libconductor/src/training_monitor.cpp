// Console parsing for TrainingMonitor: hand-written scanning rather than std::regex, since it
// runs on every console line of a long training run.
#include "conductor/training_monitor.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>

namespace conductor {
namespace {

constexpr std::string_view kDivergedMarker = "loss: nan - val_loss: nan";
constexpr std::string_view kConductorErrorMarker = "utility.exceptions.ConductorError";
constexpr std::string_view kEpochWord = "Epoch";
constexpr std::string_view kBlanks = " \t";

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_word_char(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

// Parses the decimal number at the front of `text` and drops it; nullopt when there is none
// or it does not fit an int.
std::optional<int> take_number(std::string_view& text) {
  int value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data()) return std::nullopt;
  text.remove_prefix(static_cast<std::size_t>(end - text.data()));
  return value;
}

struct EpochProgress {
  int epoch;
  int total;
};

std::optional<EpochProgress> find_epoch(std::string_view line) {
  for (std::size_t at = line.find(kEpochWord); at != std::string_view::npos;
       at = line.find(kEpochWord, at + 1)) {
    if (at > 0 && is_word_char(line[at - 1])) continue;  // "MyEpoch 1/2" is not Keras
    std::string_view rest = line.substr(at + kEpochWord.size());
    const std::size_t digits = rest.find_first_not_of(' ');
    if (digits == 0 || digits == std::string_view::npos || !is_digit(rest[digits])) continue;
    rest.remove_prefix(digits);
    const std::optional<int> epoch = take_number(rest);
    if (!epoch || rest.empty() || rest.front() != '/') continue;
    rest.remove_prefix(1);
    if (rest.empty() || !is_digit(rest.front())) continue;
    const std::optional<int> total = take_number(rest);
    if (!total) continue;
    return EpochProgress{*epoch, *total};
  }
  return std::nullopt;
}

std::optional<double> find_duration_seconds(std::string_view line) {
  std::string_view previous;
  while (!line.empty()) {
    const std::size_t begin = line.find_first_not_of(kBlanks);
    if (begin == std::string_view::npos) break;
    line.remove_prefix(begin);
    const std::size_t end = std::min(line.find_first_of(kBlanks), line.size());
    const std::string_view token = line.substr(0, end);
    line.remove_prefix(end);
    if (token.size() < 2 || token.back() != 's' || previous == "ETA:") {
      previous = token;
      continue;
    }
    std::uint64_t seconds = 0;
    const char* digits_end = token.data() + token.size() - 1;
    const auto [stop, ec] = std::from_chars(token.data(), digits_end, seconds);
    if (ec == std::errc() && stop == digits_end) return static_cast<double>(seconds);
    previous = token;
  }
  return std::nullopt;
}

}  // namespace

TrainingMonitor::Verdict TrainingMonitor::observe(std::string_view line) {
  if (is_aborted()) return Verdict::kAbort;
  if (line.find(kDivergedMarker) != std::string_view::npos) {
    abort_reason_ = "training diverged: " + std::string(kDivergedMarker);
    return Verdict::kAbort;
  }
  if (line.find(kConductorErrorMarker) != std::string_view::npos) {
    abort_reason_ = "ConductorError raised: " + std::string(line);
    return Verdict::kAbort;
  }
  if (const std::optional<EpochProgress> progress = find_epoch(line)) {
    epoch_ = progress->epoch;
    total_epochs_ = progress->total;
  }
  if (const std::optional<double> seconds = find_duration_seconds(line)) {
    last_epoch_seconds_ = seconds;
  }
  return Verdict::kContinue;
}

}  // namespace conductor
