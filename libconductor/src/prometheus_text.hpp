// Prometheus' text exposition format (version 0.0.4), written by hand because it is small:
// PrometheusText appends metric families (# HELP, # TYPE, samples) to a string, escaping help
// texts and label values as the format demands; Histogram counts observations into fixed
// buckets. Plain values, no I/O; not thread-safe (one writer per document, one owner per
// histogram).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conductor {

// Observations counted into buckets with fixed upper bounds (le), plus their sum and count.
class Histogram {
 public:
  // `upper_bounds` ascending and finite; the +Inf bucket is implicit.
  explicit Histogram(std::vector<double> upper_bounds);

  void observe(double value);

  const std::vector<double>& upper_bounds() const noexcept { return upper_bounds_; }
  // Observations <= upper_bounds()[i], cumulative as Prometheus reports them.
  std::uint64_t cumulative_count(std::size_t bucket) const;
  std::uint64_t count() const noexcept { return count_; }
  double sum() const noexcept { return sum_; }

 private:
  std::vector<double> upper_bounds_;
  std::vector<std::uint64_t> counts_;  // per bucket, not cumulative
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

using Labels = std::vector<std::pair<std::string, std::string>>;

class PrometheusText {
 public:
  enum class Type { kCounter, kGauge, kHistogram };

  // Starts a metric family: its # HELP and # TYPE lines. Each name once per document.
  void family(std::string_view name, Type type, std::string_view help);
  // One sample of the current family (or of a histogram's _bucket/_sum/_count series).
  void sample(std::string_view name, const Labels& labels, double value);
  // A histogram family's samples: cumulative _bucket series (le="..." added to `labels`),
  // then _sum and _count.
  void histogram(std::string_view name, const Labels& labels, const Histogram& histogram);

  const std::string& text() const noexcept { return text_; }

  // The format's number spelling: integers without exponent or decimals, other values with
  // enough digits to round-trip, "+Inf", "-Inf", "NaN".
  static std::string format_value(double value);

 private:
  std::string text_;
};

// The Content-Type of this format.
inline constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace conductor
