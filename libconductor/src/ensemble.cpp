#include "conductor/ensemble.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <regex>
#include <string>

#include "conductor/error.hpp"

namespace conductor {

Ensemble::Ensemble(std::string request_id, std::string version, std::vector<std::string> model_ids)
    : request_id_(std::move(request_id)), version_(std::move(version)) {
  slots_.reserve(model_ids.size());
  for (auto& id : model_ids) slots_.push_back(Slot{std::move(id), std::nullopt, std::nullopt});
}

Ensemble::Slot* Ensemble::find(const std::string& model_id) {
  auto it = std::find_if(slots_.begin(), slots_.end(),
                         [&](const Slot& slot) { return slot.model_id == model_id; });
  return it == slots_.end() ? nullptr : &*it;
}

bool Ensemble::record_value(const std::string& model_id, double value) {
  Slot* slot = find(model_id);
  if (!slot || slot->value || slot->failure) return false;
  slot->value = value;
  ++answered_;
  return true;
}

bool Ensemble::record_failure(const std::string& model_id, std::string reason) {
  Slot* slot = find(model_id);
  if (!slot || slot->value || slot->failure) return false;
  slot->failure = std::move(reason);
  ++answered_;
  return true;
}

void Ensemble::fail_outstanding(const std::string& reason) {
  for (auto& slot : slots_) {
    if (!slot.value && !slot.failure) {
      slot.failure = reason;
      ++answered_;
    }
  }
}

EnsembleResult Ensemble::result() const {
  EnsembleResult result;
  result.request_id = request_id_;
  result.version = version_;
  result.complete = is_complete();
  result.expected = slots_.size();
  std::vector<double> values;
  for (const auto& slot : slots_) {
    if (slot.value) {
      result.values.push_back({slot.model_id, *slot.value});
      values.push_back(*slot.value);
    } else if (slot.failure) {
      result.failures.push_back({slot.model_id, *slot.failure});
    }
  }
  if (values.empty()) return result;
  const auto n = static_cast<double>(values.size());
  result.mean = std::accumulate(values.begin(), values.end(), 0.0) / n;
  std::sort(values.begin(), values.end());
  result.min = values.front();
  result.max = values.back();
  const std::size_t mid = values.size() / 2;
  result.median = values.size() % 2 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
  if (values.size() > 1) {
    double squares = 0;
    for (double v : values) squares += (v - result.mean) * (v - result.mean);
    result.stddev = std::sqrt(squares / (n - 1));
  }
  return result;
}

std::optional<double> parse_prediction(std::string_view output, const std::string& pattern) {
  std::regex regex;
  try {
    regex = std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw Error(ErrorCode::kArgument,
                "prediction pattern '" + pattern + "' refused: not a valid regex (" + e.what() + ")");
  }
  // Line by line, each cut to its first kMaxPredictionLineChars: libstdc++'s regex engine
  // recurses once per character a match attempt takes in, and a client's line of 100,000
  // characters after "PredictedBuffer=" overflowed an 8 MiB stack (30,000 digits for a number
  // pattern). The original reads a value from a line of its own, near its start.
  std::match_results<std::string_view::const_iterator> match;
  bool found = false;
  while (!found && !output.empty()) {
    const std::size_t end = output.find('\n');
    std::string_view line = output.substr(0, end);
    output.remove_prefix(end == std::string_view::npos ? output.size() : end + 1);
    const bool is_cut = line.size() > kMaxPredictionLineChars;
    line = line.substr(0, kMaxPredictionLineChars);
    found = std::regex_search(line.begin(), line.end(), match, regex);
    // A match that runs into the cut may be a value cut short (123.45 read as 12): not one.
    if (found && is_cut && match[0].second == line.end()) found = false;
  }
  if (!found) return std::nullopt;
  std::string text = match.size() > 1 ? match[1].str() : match[0].str();
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0' || !std::isfinite(value)) return std::nullopt;
  return value;
}

}  // namespace conductor
