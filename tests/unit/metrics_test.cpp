// The Prometheus text exposition format of /metrics: number spelling, escaping, histograms,
// and the server's metric families as a scraper reads them.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "prometheus_text.hpp"
#include "server_metrics.hpp"

using conductor::FailureReason;
using conductor::format_metrics;
using conductor::Histogram;
using conductor::MetricsSnapshot;
using conductor::PrometheusText;
using conductor::ServerMetrics;

namespace {

// name{labels} -> value, for every sample line of a document.
std::map<std::string, std::string> samples_of(const std::string& text) {
  std::map<std::string, std::string> samples;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    auto space = line.rfind(' ');
    samples[line.substr(0, space)] = line.substr(space + 1);
  }
  return samples;
}

// The rules a Prometheus scraper enforces: every line a comment or a sample of the family its
// # TYPE announced, each family announced once, label values quoted, values numbers.
void check_well_formed(const std::string& text) {
  static const std::regex kSample(
      R"re(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (-?[0-9.e+]+|\+Inf|-Inf|NaN))re");
  static const std::regex kHelp(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+)");
  static const std::regex kType(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram))");
  std::set<std::string> families;
  std::string current, current_type;
  std::istringstream lines(text);
  REQUIRE(!text.empty());
  CHECK(text.back() == '\n');
  for (std::string line; std::getline(lines, line);) {
    INFO("line: " << line);
    std::smatch match;
    if (std::regex_match(line, match, kHelp)) {
      CHECK(families.insert(match[1]).second);
      current = match[1];
    } else if (std::regex_match(line, match, kType)) {
      CHECK(match[1] == current);
      current_type = match[2];
    } else {
      REQUIRE(std::regex_match(line, match, kSample));
      const std::string name = match[1];
      if (current_type == "histogram") {
        CHECK((name == current + "_bucket" || name == current + "_sum" || name == current + "_count"));
      } else {
        CHECK(name == current);
      }
      if (current_type == "counter") CHECK(name.ends_with("_total"));
    }
  }
}

}  // namespace

TEST_CASE("metric values are spelled as the text format wants them") {
  CHECK(PrometheusText::format_value(0) == "0");
  CHECK(PrometheusText::format_value(42) == "42");
  CHECK(PrometheusText::format_value(-3) == "-3");
  CHECK(PrometheusText::format_value(1e15) == "1000000000000000");
  CHECK(PrometheusText::format_value(0.1) == "0.1");
  CHECK(PrometheusText::format_value(2.5) == "2.5");
  CHECK(std::stod(PrometheusText::format_value(1.0 / 3)) == 1.0 / 3);  // round-trips
  CHECK(PrometheusText::format_value(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(PrometheusText::format_value(-std::numeric_limits<double>::infinity()) == "-Inf");
  CHECK(PrometheusText::format_value(std::nan("")) == "NaN");
}

TEST_CASE("a metric family is its help, its type and its samples, with labels escaped") {
  PrometheusText out;
  out.family("demo_things_total", PrometheusText::Type::kCounter, "Things seen\nso far \\ ever");
  out.sample("demo_things_total", {}, 3);
  out.sample("demo_things_total", {{"kind", "a \"quoted\" \\ back\nslash"}, {"b", ""}}, 1.5);
  CHECK(out.text() ==
        "# HELP demo_things_total Things seen\\nso far \\\\ ever\n"
        "# TYPE demo_things_total counter\n"
        "demo_things_total 3\n"
        "demo_things_total{kind=\"a \\\"quoted\\\" \\\\ back\\nslash\",b=\"\"} 1.5\n");
}

TEST_CASE("a histogram reports cumulative buckets, +Inf, sum and count") {
  Histogram histogram({1, 5, 10});
  for (double value : {0.5, 1.0, 3.0, 7.0, 100.0}) histogram.observe(value);
  CHECK(histogram.count() == 5);
  CHECK(histogram.sum() == doctest::Approx(111.5));
  CHECK(histogram.cumulative_count(0) == 2);  // le=1 holds 1.0 itself
  CHECK(histogram.cumulative_count(1) == 3);
  CHECK(histogram.cumulative_count(2) == 4);
  CHECK(histogram.cumulative_count(3) == 5);  // +Inf
  PrometheusText out;
  out.family("demo_seconds", PrometheusText::Type::kHistogram, "Durations");
  out.histogram("demo_seconds", {{"type", "x"}}, histogram);
  CHECK(out.text() ==
        "# HELP demo_seconds Durations\n"
        "# TYPE demo_seconds histogram\n"
        "demo_seconds_bucket{type=\"x\",le=\"1\"} 2\n"
        "demo_seconds_bucket{type=\"x\",le=\"5\"} 3\n"
        "demo_seconds_bucket{type=\"x\",le=\"10\"} 4\n"
        "demo_seconds_bucket{type=\"x\",le=\"+Inf\"} 5\n"
        "demo_seconds_sum{type=\"x\"} 111.5\n"
        "demo_seconds_count{type=\"x\"} 5\n");
  check_well_formed(out.text());
}

TEST_CASE("an idle server's metrics exist with zeros for every known series") {
  MetricsSnapshot snapshot;
  snapshot.start_time = 1700000000.5;
  const std::string text = format_metrics(snapshot);
  check_well_formed(text);
  auto samples = samples_of(text);
  CHECK(samples["conductor_start_time_seconds"] == "1700000000.5");
  for (const char* type : {"cpu", "gpu"}) {
    for (const char* state : {"idle", "working", "busy"}) {
      const std::string labels = "{type=\"" + std::string(type) + "\",state=\"" + state + "\"}";
      CHECK(samples["conductor_clients" + labels] == "0");
      CHECK(samples["conductor_client_slots" + labels] == "0");
    }
  }
  for (const char* type : {"training", "prediction"}) {
    const std::string label = "{type=\"" + std::string(type) + "\"}";
    CHECK(samples["conductor_items_queued" + label] == "0");
    CHECK(samples["conductor_items_active" + label] == "0");
    CHECK(samples["conductor_items_leased" + label] == "0");
    CHECK(samples["conductor_items_completed_total" + label] == "0");
    CHECK(samples["conductor_lease_expiries_total" + label] == "0");
    CHECK(samples["conductor_item_duration_seconds_count" + label] == "0");
    for (const char* reason : {"failed", "rejected", "timeout"}) {
      CHECK(samples["conductor_item_failures_total{type=\"" + std::string(type) + "\",reason=\"" +
                    reason + "\"}"] == "0");
    }
  }
  CHECK(samples["conductor_transfer_bytes_total{direction=\"sent\"}"] == "0");
  CHECK(samples["conductor_transfer_bytes_total{direction=\"received\"}"] == "0");
  for (const char* type : {"HELLO", "HEARTBEAT", "READY", "FETCH", "PROGRESS", "RESULT", "UPLOAD",
                           "FAILED", "BYE", "CONTROL"}) {
    CHECK(samples["conductor_messages_received_total{type=\"" + std::string(type) + "\"}"] == "0");
  }
  CHECK(samples["conductor_clients_reserved"] == "0");
  CHECK(samples["conductor_prediction_requests_pending"] == "0");
}

TEST_CASE("the server's metrics carry its gauges and counters") {
  MetricsSnapshot snapshot;
  snapshot.clients[{"cpu", "working"}] = 2;
  snapshot.clients[{"gpu", "idle"}] = 1;
  snapshot.clients[{"tpu", "busy"}] = 1;  // a type the server does not know still shows
  snapshot.slots[{"gpu", "working"}] = 3;
  snapshot.slots[{"gpu", "idle"}] = 1;
  snapshot.reserved_clients = 1;
  snapshot.queued["training"] = 4;
  snapshot.queued["prediction"] = 1;
  snapshot.active["training"] = 2;
  snapshot.leased["training"] = 1;
  snapshot.versions = {{"digits", 3, 8}, {"with \"quote\"", 0, 2}};
  snapshot.pending_predictions = 1;
  ServerMetrics& counters = snapshot.counters;
  counters.bytes_sent = 123456789012;
  counters.bytes_received = 42;
  counters.count_completed("training", 0.3);
  counters.count_completed("training", 4000);
  counters.count_completed("prediction", 2);
  counters.count_failure("training", FailureReason::kFailed);
  counters.count_failure("training", FailureReason::kFailed);
  counters.count_failure("prediction", FailureReason::kTimedOut);
  counters.count_lease_expiry("training");
  counters.messages_received["READY"] = 7;

  const std::string text = format_metrics(snapshot);
  check_well_formed(text);
  auto samples = samples_of(text);
  CHECK(samples["conductor_clients{type=\"cpu\",state=\"working\"}"] == "2");
  CHECK(samples["conductor_clients{type=\"cpu\",state=\"idle\"}"] == "0");
  CHECK(samples["conductor_clients{type=\"gpu\",state=\"idle\"}"] == "1");
  CHECK(samples["conductor_clients{type=\"tpu\",state=\"busy\"}"] == "1");
  CHECK(samples["conductor_client_slots{type=\"gpu\",state=\"working\"}"] == "3");
  CHECK(samples["conductor_client_slots{type=\"gpu\",state=\"idle\"}"] == "1");
  CHECK(samples["conductor_client_slots{type=\"cpu\",state=\"working\"}"] == "0");
  CHECK(samples["conductor_clients_reserved"] == "1");
  CHECK(samples["conductor_items_queued{type=\"training\"}"] == "4");
  CHECK(samples["conductor_items_queued{type=\"prediction\"}"] == "1");
  CHECK(samples["conductor_items_active{type=\"training\"}"] == "2");
  CHECK(samples["conductor_items_leased{type=\"training\"}"] == "1");
  CHECK(samples["conductor_version_models_stored{version=\"digits\"}"] == "3");
  CHECK(samples["conductor_version_models_target{version=\"digits\"}"] == "8");
  CHECK(samples["conductor_version_models_target{version=\"with \\\"quote\\\"\"}"] == "2");
  CHECK(samples["conductor_prediction_requests_pending"] == "1");
  CHECK(samples["conductor_transfer_bytes_total{direction=\"sent\"}"] == "123456789012");
  CHECK(samples["conductor_transfer_bytes_total{direction=\"received\"}"] == "42");
  CHECK(samples["conductor_messages_received_total{type=\"READY\"}"] == "7");
  CHECK(samples["conductor_messages_received_total{type=\"RESULT\"}"] == "0");
  CHECK(samples["conductor_items_completed_total{type=\"training\"}"] == "2");
  CHECK(samples["conductor_items_completed_total{type=\"prediction\"}"] == "1");
  CHECK(samples["conductor_item_failures_total{type=\"training\",reason=\"failed\"}"] == "2");
  CHECK(samples["conductor_item_failures_total{type=\"training\",reason=\"rejected\"}"] == "0");
  CHECK(samples["conductor_item_failures_total{type=\"prediction\",reason=\"timeout\"}"] == "1");
  CHECK(samples["conductor_lease_expiries_total{type=\"training\"}"] == "1");
  CHECK(samples["conductor_item_duration_seconds_bucket{type=\"training\",le=\"0.5\"}"] == "1");
  CHECK(samples["conductor_item_duration_seconds_bucket{type=\"training\",le=\"3600\"}"] == "1");
  CHECK(samples["conductor_item_duration_seconds_bucket{type=\"training\",le=\"7200\"}"] == "2");
  CHECK(samples["conductor_item_duration_seconds_bucket{type=\"training\",le=\"+Inf\"}"] == "2");
  CHECK(samples["conductor_item_duration_seconds_sum{type=\"training\"}"] == "4000.3");
  CHECK(samples["conductor_item_duration_seconds_count{type=\"prediction\"}"] == "1");
}
