#include "conductor/evaluation.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string_view>
#include <system_error>
#include <unordered_map>

#include "conductor/error.hpp"

namespace conductor {
namespace {

namespace fs = std::filesystem;

constexpr const char* kJsonFile = "metrics.json";
constexpr const char* kCsvFile = "metrics.csv";
constexpr std::string_view kResultsSuffix = "results.csv";
// Files the training writes are client data: bounded, so a hostile result cannot exhaust the
// server's memory.
constexpr std::uintmax_t kMaxMetricsFileBytes = 16u << 20;
// Its rows are held in memory (40 bytes for a line of 14 or more) on the server (on the thread
// that unpacked the result): a larger file, which a compressed result carries cheaply, is not
// evaluated.
constexpr std::uintmax_t kMaxResultsFileBytes = 64u << 20;
constexpr std::size_t kMaxTrainingMetrics = 10000;
constexpr std::size_t kMaxLineBytes = 1u << 20;
constexpr int kMaxJsonDepth = 64;

constexpr int kBucketCount = 11;  // 0.0-0.1, ..., 0.9-1.0, and 1.0 itself
constexpr int kCargo2000MidBucket = 5;
constexpr const char* kCargo2000Marker = "13";
// Completions are fractions; a file whose completions go past the last bucket gives percents.
constexpr double kLargestFraction = 1.1;
// Keeps a computed completion that should be a bucket boundary but came out a hair below it
// (0.7999999999999999 for 0.8) in the bucket it opens.
constexpr double kBoundarySlack = 1e-9;

[[noreturn]] void fail(const fs::path& file, int line, const std::string& why) {
  throw ConfigError(file.string() + ":" + std::to_string(line) + ": " + why);
}

[[noreturn]] void fail(const fs::path& file, const std::string& why) {
  throw ConfigError(file.string() + ": " + why);
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::strchr(" \t\r\n", text.front())) text.remove_prefix(1);
  while (!text.empty() && std::strchr(" \t\r\n", text.back())) text.remove_suffix(1);
  return text;
}

bool is_blank(std::string_view line) { return trim(line).empty(); }

enum class FieldKind { kNumber, kNonFinite, kText };

struct Field {
  FieldKind kind = FieldKind::kText;
  double value = 0;
};

// `decimal_comma` accepts "0,93" for files whose separator is ';', as spreadsheets in many
// locales write them.
Field classify(std::string_view raw, bool decimal_comma = false) {
  std::string text(trim(raw));
  if (decimal_comma && text.find('.') == std::string::npos) {
    std::replace(text.begin(), text.end(), ',', '.');
  }
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "true") return {FieldKind::kNumber, 1};
  if (lower == "false") return {FieldKind::kNumber, 0};
  std::string_view number = text;
  if (!number.empty() && number.front() == '+') number.remove_prefix(1);
  double value = 0;
  auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
  if (number.empty() || end != number.data() + number.size() ||
      (ec != std::errc() && ec != std::errc::result_out_of_range)) {
    return {};
  }
  if (ec != std::errc() || !std::isfinite(value)) return {FieldKind::kNonFinite, 0};
  return {FieldKind::kNumber, value};
}

std::optional<long long> parse_integer(std::string_view raw) {
  const std::string_view text = trim(raw);
  long long value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// One CSV line into fields; quoted fields may hold the separator, and "" stands for a quote.
// nullopt when a quote is left open (fields spanning lines are not supported).
std::optional<std::vector<std::string>> split_fields(std::string_view line, char separator) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c != '"') {
        fields.back() += c;
      } else if (i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else {
        quoted = false;
      }
    } else if (c == '"' && trim(fields.back()).empty()) {
      fields.back().clear();
      quoted = true;
    } else if (c == separator) {
      fields.emplace_back();
    } else {
      fields.back() += c;
    }
  }
  if (quoted) return std::nullopt;
  return fields;
}

char separator_of(std::string_view first_line) {
  bool quoted = false;
  for (char c : first_line) {
    if (c == '"') quoted = !quoted;
    if (c == ';' && !quoted) return ';';
  }
  return ',';
}

// Lines of a file of any size, one at a time, without "\n" or "\r\n"; each at most
// kMaxLineBytes.
class LineReader {
 public:
  explicit LineReader(const fs::path& file) : file_(file), stream_(file, std::ios::binary) {
    if (!stream_) throw IoError("cannot read " + file.string() + ": " + std::strerror(errno));
  }

  bool next(std::string& line) {
    line.clear();
    std::streambuf& buffer = *stream_.rdbuf();
    int c = buffer.sbumpc();
    if (c == std::char_traits<char>::eof()) return false;
    ++number_;
    for (; c != std::char_traits<char>::eof() && c != '\n'; c = buffer.sbumpc()) {
      if (line.size() == kMaxLineBytes) fail(file_, number_, "line longer than 1 MiB");
      line += static_cast<char>(c);
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return true;
  }

  int number() const { return number_; }

 private:
  fs::path file_;
  std::ifstream stream_;
  int number_ = 0;
};

// Keeps names unique as metrics arrive: a repeated name takes the new value in its old place.
class MetricsBuilder {
 public:
  explicit MetricsBuilder(Metrics& metrics) : metrics_(metrics) {
    for (std::size_t i = 0; i < metrics_.size(); ++i) index_.emplace(metrics_[i].first, i);
  }

  void set(const std::string& name, double value) {
    auto [found, added] = index_.emplace(name, metrics_.size());
    if (added) {
      metrics_.emplace_back(name, value);
    } else {
      metrics_[found->second].second = value;
    }
  }

  std::size_t size() const { return metrics_.size(); }

 private:
  Metrics& metrics_;
  std::unordered_map<std::string, std::size_t> index_;
};

enum class Presence { kAbsent, kRegular };

Presence presence_of(const fs::path& file) {
  std::error_code error;
  const fs::file_type type = fs::symlink_status(file, error).type();
  if (type == fs::file_type::not_found) return Presence::kAbsent;
  if (error) fail(file, "cannot inspect: " + error.message());
  if (type != fs::file_type::regular) fail(file, "is not a regular file");
  return Presence::kRegular;
}

// Refuses a file above `max_bytes`; `too_large` says so in the problem's words.
void check_size(const fs::path& file, std::uintmax_t max_bytes, const std::string& too_large) {
  std::error_code error;
  const std::uintmax_t size = fs::file_size(file, error);
  if (error) throw IoError("cannot read " + file.string() + ": " + error.message());
  if (size > max_bytes) fail(file, too_large);
}

std::string read_bounded(const fs::path& file) {
  check_size(file, kMaxMetricsFileBytes, "larger than 16 MiB");
  std::ifstream stream(file, std::ios::binary);
  if (!stream) throw IoError("cannot read " + file.string() + ": " + std::strerror(errno));
  return {std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>()};
}

void check_count(const fs::path& file, const MetricsBuilder& builder) {
  if (builder.size() > kMaxTrainingMetrics) fail(file, "holds more than 10000 values");
}

void flatten(const fs::path& file, const nlohmann::ordered_json& object, const std::string& prefix,
             int depth, MetricsBuilder& builder) {
  if (depth > kMaxJsonDepth) fail(file, "objects nested deeper than 64 levels");
  for (const auto& [key, value] : object.items()) {
    const std::string name = prefix + key;
    if (value.is_object()) {
      flatten(file, value, name + ".", depth + 1, builder);
    } else if (value.is_boolean()) {
      builder.set(name, value.get<bool>() ? 1.0 : 0.0);
    } else if (value.is_number()) {
      const double number = value.get<double>();
      if (std::isfinite(number)) builder.set(name, number);
    }
    check_count(file, builder);
  }
}

Metrics read_metrics_json(const fs::path& file) {
  Metrics metrics;
  if (presence_of(file) == Presence::kAbsent) return metrics;
  const std::string text = read_bounded(file);
  nlohmann::ordered_json document;
  try {
    document = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::parse_error& error) {
    const std::size_t end = std::min<std::size_t>(error.byte, text.size());
    const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<long>(end), '\n');
    fail(file, static_cast<int>(line), std::string("malformed JSON: ") + error.what());
  } catch (const nlohmann::json::exception& error) {
    // A number beyond a double ("1e400") is out_of_range, not a parse_error, and has no offset.
    fail(file, std::string("malformed JSON: ") + error.what());
  }
  if (!document.is_object()) {
    fail(file, std::string("must hold a JSON object, not ") + document.type_name());
  }
  MetricsBuilder builder(metrics);
  flatten(file, document, "", 1, builder);
  return metrics;
}

struct CsvRow {
  int line = 0;
  std::vector<std::string> fields;
};

Metrics read_metrics_csv(const fs::path& file) {
  Metrics metrics;
  if (presence_of(file) == Presence::kAbsent) return metrics;
  const std::string text = read_bounded(file);
  std::vector<CsvRow> rows;
  char separator = ',';
  int line_number = 0;
  for (std::size_t start = 0; start < text.size();) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + start, end - start);
    start = end + 1;
    ++line_number;
    if (is_blank(line)) continue;
    if (rows.empty()) separator = separator_of(line);
    auto fields = split_fields(line, separator);
    if (!fields) fail(file, line_number, "a quoted field is not closed");
    rows.push_back({line_number, std::move(*fields)});
  }
  const bool decimal_comma = separator == ';';
  MetricsBuilder builder(metrics);

  const bool is_wide = rows.size() == 2 && rows[0].fields.size() == rows[1].fields.size() &&
                       (rows[0].fields.size() != 2 ||
                        classify(rows[1].fields[0], decimal_comma).kind != FieldKind::kText);
  if (is_wide) {
    for (std::size_t column = 0; column < rows[0].fields.size(); ++column) {
      const Field value = classify(rows[1].fields[column], decimal_comma);
      if (value.kind != FieldKind::kNumber) continue;
      const std::string name(trim(rows[0].fields[column]));
      if (name.empty()) {
        fail(file, rows[0].line, "column " + std::to_string(column + 1) + " has no name");
      }
      builder.set(name, value.value);
    }
    check_count(file, builder);
    return metrics;
  }

  for (std::size_t i = 0; i < rows.size(); ++i) {
    const CsvRow& row = rows[i];
    if (row.fields.size() != 2) {
      fail(file, row.line,
           "expected 'name" + std::string(1, separator) + "value', got " +
               std::to_string(row.fields.size()) + " fields");
    }
    const std::string name(trim(row.fields[0]));
    const Field value = classify(row.fields[1], decimal_comma);
    if (value.kind == FieldKind::kText) {
      if (i == 0) continue;  // a header row
      fail(file, row.line,
           "value '" + std::string(trim(row.fields[1])) + "' of '" + name + "' is not a number");
    }
    if (name.empty()) fail(file, row.line, "a value has no name");
    if (value.kind == FieldKind::kNumber) builder.set(name, value.value);
    check_count(file, builder);
  }
  return metrics;
}

// The columns of a results.csv row.
enum Column : std::size_t {
  kSequenceLength = 1,
  kPrefix = 2,
  kCompletion = 3,
  kPredicted = 4,
  kTrue = 5,
  kPlanned = 6,
  kPrefixActivities = 8,
  kSuffixActivities = 9,
};
constexpr std::size_t kGenericColumns = kPlanned + 1;
constexpr std::size_t kCargo2000Columns = kSuffixActivities + 1;

struct ResultRow {
  double completion = 0;
  double predicted = 0;
  double truth = 0;
  double planned = 0;
  int bucket = -1;  // -1: in no bucket
};

int bucket_of(double completion) {
  if (!(completion >= 0)) return -1;
  const double bucket = std::floor(completion * 10 + kBoundarySlack);
  return bucket < kBucketCount ? static_cast<int>(bucket) : -1;
}

std::vector<std::string> split_words(std::string_view text) {
  std::vector<std::string> words;
  std::size_t at = 0;
  while (at < text.size()) {
    at = text.find_first_not_of(" \t", at);
    if (at == std::string_view::npos) break;
    std::size_t end = text.find_first_of(" \t", at);
    if (end == std::string_view::npos) end = text.size();
    words.emplace_back(text.substr(at, end - at));
    at = end;
  }
  return words;
}

// The Cargo2000 bucket of a row, from where its 50% marker activity lies (see the header).
int cargo2000_bucket(const fs::path& file, int line, const std::vector<std::string>& fields) {
  const auto length = parse_integer(fields[kSequenceLength]);
  const auto prefix = parse_integer(fields[kPrefix]);
  if (!length || !prefix) fail(file, line, "sequence length and prefix must be whole numbers");
  std::vector<std::string> activities = split_words(fields[kPrefixActivities]);
  const std::vector<std::string> suffix = split_words(fields[kSuffixActivities]);
  activities.insert(activities.end(), suffix.begin(), suffix.end());
  const auto marker = std::find(activities.begin(), activities.end(), kCargo2000Marker);
  if (marker == activities.end()) {
    fail(file, line,
         std::string("no marker activity ") + kCargo2000Marker + " among the activities");
  }
  const auto index = static_cast<double>(marker - activities.begin());
  const auto done = static_cast<double>(*prefix);
  if (index == done) return kCargo2000MidBucket;
  if (index > done) return bucket_of(done / index / 2);
  const double remaining = static_cast<double>(*length) - index;
  if (remaining <= 0) return -1;  // a prefix past the sequence's end: inconsistent, unusable
  const int bucket = bucket_of((done - index) / remaining / 2 + 0.5);
  return bucket == kCargo2000MidBucket ? kCargo2000MidBucket + 1 : bucket;
}

std::optional<double> ratio(double numerator, double denominator) {
  if (denominator == 0) return std::nullopt;
  return numerator / denominator;
}

constexpr std::array<const char*, 14> kMetricNames = {
    "mcc", "accuracy", "precision", "recall", "f1",  "specificity", "npv",
    "fpr", "mae",      "mse",       "rmse",   "rae", "rse",         "rrse"};
using BucketMetrics = std::array<std::optional<double>, kMetricNames.size()>;

BucketMetrics bucket_metrics(const std::vector<const ResultRow*>& rows, bool violation_is_above) {
  double tp = 0, fp = 0, tn = 0, fn = 0, abs_sum = 0, square_sum = 0, truth_sum = 0;
  for (const ResultRow* row : rows) {
    const bool actual = (row->truth > row->planned) == violation_is_above;
    const bool predicted = (row->predicted > row->planned) == violation_is_above;
    (actual ? (predicted ? tp : fn) : (predicted ? fp : tn)) += 1;
    const double deviation = row->predicted - row->truth;
    abs_sum += std::abs(deviation);
    square_sum += deviation * deviation;
    truth_sum += row->truth;
  }
  const auto n = static_cast<double>(rows.size());
  const double truth_mean = truth_sum / n;
  double abs_spread = 0, square_spread = 0;
  for (const ResultRow* row : rows) {
    abs_spread += std::abs(row->truth - truth_mean);
    square_spread += (row->truth - truth_mean) * (row->truth - truth_mean);
  }

  const auto precision = ratio(tp, tp + fp);
  const auto recall = ratio(tp, tp + fn);
  std::optional<double> f1;
  if (precision && recall) f1 = ratio(2 * *precision * *recall, *precision + *recall);
  const double mse = square_sum / n;
  const auto rse = ratio(square_sum, square_spread);
  return {ratio(tp * tn - fp * fn, std::sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))),
          (tp + tn) / n,
          precision,
          recall,
          f1,
          ratio(tn, tn + fp),
          ratio(tn, tn + fn),
          ratio(fp, fp + tn),
          abs_sum / n,
          mse,
          std::sqrt(mse),
          ratio(abs_sum, abs_spread),
          rse,
          rse ? std::optional<double>(std::sqrt(*rse)) : std::nullopt};
}

// Reads the rows of a results file and places each in its bucket. Throws as
// evaluate_results_csv.
std::vector<ResultRow> read_result_rows(const fs::path& csv, DatasetType type) {
  const std::size_t needed = type == DatasetType::kCargo2000 ? kCargo2000Columns : kGenericColumns;
  check_size(csv, kMaxResultsFileBytes, "larger than 64 MiB, which is not evaluated");
  std::vector<ResultRow> rows;
  LineReader reader(csv);
  std::string line;
  char separator = ',';
  bool first = true;
  while (reader.next(line)) {
    if (is_blank(line)) continue;
    if (first) separator = separator_of(line);
    const auto fields = split_fields(line, separator);
    if (!fields) fail(csv, reader.number(), "a quoted field is not closed");
    const bool decimal_comma = separator == ';';
    std::array<Field, 4> numbers;
    bool has_text = false;
    for (std::size_t column = kCompletion; column <= kPlanned && column < fields->size();
         ++column) {
      numbers[column - kCompletion] = classify((*fields)[column], decimal_comma);
      has_text = has_text || numbers[column - kCompletion].kind == FieldKind::kText;
    }
    const bool is_header = first && has_text;
    first = false;
    if (is_header) continue;
    if (fields->size() < needed) {
      fail(csv, reader.number(),
           "expected at least " + std::to_string(needed) + " columns, got " +
               std::to_string(fields->size()));
    }
    if (has_text) {
      fail(csv, reader.number(), "completion, predicted, true and planned values must be numbers");
    }
    if (std::any_of(numbers.begin(), numbers.end(),
                    [](const Field& f) { return f.kind != FieldKind::kNumber; })) {
      continue;  // "nan" or "inf": a diverged prediction, unusable
    }
    ResultRow row{numbers[0].value, numbers[1].value, numbers[2].value, numbers[3].value, -1};
    if (type == DatasetType::kCargo2000) {
      row.bucket = cargo2000_bucket(csv, reader.number(), *fields);
      if (row.bucket < 0) continue;
    }
    rows.push_back(row);
  }
  if (type != DatasetType::kCargo2000) {
    const bool is_percent = std::any_of(rows.begin(), rows.end(), [](const ResultRow& row) {
      return row.completion > kLargestFraction;
    });
    for (ResultRow& row : rows) {
      row.bucket = bucket_of(is_percent ? row.completion / 100 : row.completion);
    }
  }
  return rows;
}

}  // namespace

void merge_metrics(Metrics& target, const Metrics& source) {
  MetricsBuilder builder(target);
  for (const auto& [name, value] : source) builder.set(name, value);
}

Metrics read_training_metrics(const fs::path& model_folder) {
  Metrics metrics = read_metrics_json(model_folder / kJsonFile);
  merge_metrics(metrics, read_metrics_csv(model_folder / kCsvFile));
  return metrics;
}

std::optional<Metrics> evaluate_results_csv(const fs::path& csv, DatasetType type) {
  const std::vector<ResultRow> rows = read_result_rows(csv, type);
  std::array<std::vector<const ResultRow*>, kBucketCount> buckets;
  for (const ResultRow& row : rows) {
    if (row.bucket >= 0) buckets[static_cast<std::size_t>(row.bucket)].push_back(&row);
  }
  // The original inverts the class for Cargo2000: there a value at or below plan is positive.
  const bool violation_is_above = type != DatasetType::kCargo2000;
  std::array<double, kMetricNames.size()> sums{};
  std::array<int, kMetricNames.size()> counts{};
  bool any = false;
  for (const auto& bucket : buckets) {
    if (bucket.empty()) continue;
    any = true;
    const BucketMetrics values = bucket_metrics(bucket, violation_is_above);
    for (std::size_t i = 0; i < values.size(); ++i) {
      // Finite but huge values (a diverged model's 1e212) overflow the squares to inf, and
      // inf / inf is NaN: such a metric is as undefined in this bucket as a zero denominator.
      if (!values[i] || !std::isfinite(*values[i])) continue;
      sums[i] += *values[i];
      ++counts[i];
    }
  }
  if (!any) return std::nullopt;
  Metrics metrics;
  for (std::size_t i = 0; i < kMetricNames.size(); ++i) {
    if (counts[i] > 0 && std::isfinite(sums[i])) {
      metrics.emplace_back(kMetricNames[i], sums[i] / counts[i]);
    }
  }
  return metrics;
}

namespace {

// evaluate_model_folder(), from `files` when given, else from the folder's listing.
Evaluation evaluate(const fs::path& folder, DatasetType type,
                    const std::vector<std::string>* files) {
  auto is_listed = [&](std::string_view name) {
    return files == nullptr || std::find(files->begin(), files->end(), name) != files->end();
  };
  auto is_results = [](const std::string& name) {
    return name.size() >= kResultsSuffix.size() &&
           name.compare(name.size() - kResultsSuffix.size(), kResultsSuffix.size(),
                        kResultsSuffix) == 0;
  };
  Evaluation evaluation;
  auto attempt = [&](auto&& step) {
    try {
      step();
    } catch (const std::exception& error) {
      evaluation.problems.emplace_back(error.what());
    }
  };
  if (is_listed(kJsonFile)) {
    attempt([&] { merge_metrics(evaluation.metrics, read_metrics_json(folder / kJsonFile)); });
  }
  if (is_listed(kCsvFile)) {
    attempt([&] { merge_metrics(evaluation.metrics, read_metrics_csv(folder / kCsvFile)); });
  }
  attempt([&] {
    std::vector<fs::path> candidates;
    if (files != nullptr) {
      for (const std::string& file : *files) {
        if (file.find('/') == std::string::npos && is_results(file)) {
          candidates.push_back(folder / file);
        }
      }
    } else {
      std::error_code error;
      for (fs::directory_iterator it(folder, error), end; !error && it != end;
           it.increment(error)) {
        std::error_code ignored;
        if (is_results(it->path().filename().string()) &&
            it->symlink_status(ignored).type() == fs::file_type::regular) {
          candidates.push_back(it->path());
        }
      }
      if (error) throw IoError("cannot list " + folder.string() + ": " + error.message());
    }
    if (candidates.empty()) return;
    const fs::path results = *std::min_element(candidates.begin(), candidates.end());
    const std::optional<Metrics> metrics = evaluate_results_csv(results, type);
    if (!metrics) {
      evaluation.problems.push_back(results.string() + ": no usable rows to evaluate");
      return;
    }
    merge_metrics(evaluation.metrics, *metrics);
  });
  return evaluation;
}

}  // namespace

Evaluation evaluate_model_folder(const fs::path& folder, DatasetType type) {
  return evaluate(folder, type, nullptr);
}

Evaluation evaluate_model_folder(const fs::path& folder, DatasetType type,
                                 const std::vector<std::string>& files) {
  return evaluate(folder, type, &files);
}

}  // namespace conductor
