// conductor_bench: Conductor against this machine's own limits (issue 6). Each benchmark
// measures the raw limit in the same run and prints the ratio next to the absolute figures,
// medians of --runs runs. Run through scripts/bench; see docs/performance.md.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <functional>
#include <set>
#include <string>

#include "bench_support.hpp"
#include "cluster_bench.hpp"
#include "raw_limits.hpp"
#include "scale_bench.hpp"

namespace bench = conductor::bench;
using bench::format;
using bench::median;

namespace {

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

std::vector<double> repeat(int runs, const std::function<double()>& measure) {
  std::vector<double> values;
  for (int i = 0; i < runs; ++i) values.push_back(measure());
  return values;
}

// "runs: 1.2 1.3 ..." on stderr, so the table's medians can be checked against every run.
void show_runs(const std::string& what, const std::vector<double>& values, int decimals) {
  std::string line = "  " + what + ":";
  for (double value : values) line += " " + format(value, decimals);
  std::fprintf(stderr, "%s\n", line.c_str());
}

std::vector<double> in_gb(std::vector<double> values) {
  for (double& value : values) value /= 1e9;
  return values;
}

std::string ratio_of(double conductor, double raw) { return format(conductor / raw, 3); }
std::string yes_no(bool met) { return met ? "yes" : "no"; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Conductor benchmarks against this machine's own limits (docs/performance.md)."};
  bool full = false;
  int runs = 5, idle_clients = 2000, models = 10000, raw_router_port = 0;
  std::vector<std::string> only;
  app.add_flag("--full", full, "1 GiB payload and result (default 256 MiB)");
  app.add_option("--runs", runs, "Runs per figure; the table shows medians")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  app.add_option("--only", only,
                 "Benchmarks to run: dispatch process payload results scale restart")
      ->delimiter(',')
      ->check(CLI::IsMember({"dispatch", "process", "payload", "results", "scale", "restart"}));
  app.add_option("--idle-clients", idle_clients, "Idle clients in the scale benchmark")
      ->capture_default_str()
      ->check(CLI::Range(1, 20000));
  app.add_option("--models", models, "Stored models in the restart benchmark")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--raw-router", raw_router_port, "(internal) serve as the bare ROUTER on PORT");
  CLI11_PARSE(app, argc, argv);
  if (raw_router_port > 0) return bench::raw_router_main(raw_router_port);

  const std::set<std::string> selected(only.begin(), only.end());
  auto wanted = [&](const std::string& name) {
    return selected.empty() || selected.contains(name);
  };
  const std::uint64_t big = full ? (1ull << 30) : (256ull << 20);
  const std::string big_name = full ? "1 GiB" : "256 MiB";
  std::printf("Machine: %ld cores (nproc), %s; load average at start %s\n",
              ::sysconf(_SC_NPROCESSORS_ONLN), cpu_model().c_str(), load_average().c_str());
  std::printf("Medians of %d runs; per-run figures on stderr.\n\n", runs);
  std::fflush(stdout);

  std::vector<bench::Row> rows;
  bench::ScratchDir scratch("conductor-bench-raw");
  const std::vector<std::string> touch = {"/usr/bin/touch", (scratch / "model.h5").string()};
  try {
    if (wanted("dispatch")) {
      std::fprintf(stderr, "dispatch\n");
      auto raw = repeat(runs, [] { return bench::raw_zmq_round_trips(8, 1.0); });
      show_runs("raw ZeroMQ lock-step round trips/s, 8 peers", raw, 0);
      auto spawn = repeat(runs, [&] { return bench::raw_spawn_rate(touch, 8, 1.0); });
      show_runs("raw spawn-and-wait of touch/s, 8 threads", spawn, 0);
      auto items = bench::items_per_second(8, runs, 200);
      show_runs("items/s, 8 clients", items, 1);
      const double ratio = median(items) / median(raw);
      rows.push_back(
          {"dispatch: 8 clients, items of `touch model.h5`",
           bench::format_rate(median(items), "items/s"),
           bench::format_rate(median(raw), "round trips/s"), ratio_of(median(items), median(raw)),
           ">= 0.5", yes_no(ratio >= 0.5),
           "spawning touch alone, 8 at a time: " + bench::format_rate(median(spawn), "/s")});
    }
    if (wanted("process")) {
      std::fprintf(stderr, "process\n");
      auto raw = repeat(runs, [&] { return bench::raw_spawn_rate(touch, 2, 1.0); });
      show_runs("raw spawn-and-wait of touch/s, 2 threads", raw, 0);
      auto truth = repeat(runs, [] { return bench::raw_spawn_rate({"/bin/true"}, 2, 1.0); });
      show_runs("raw spawn-and-wait of /bin/true/s, 2 threads", truth, 0);
      auto items = bench::items_per_second(2, runs, 100);
      show_runs("items/s, 2 clients", items, 1);
      const double ratio = median(items) / median(raw);
      rows.push_back({"process items: 2 clients, `touch model.h5`",
                      bench::format_rate(median(items), "items/s"),
                      bench::format_rate(median(raw), "spawns/s"),
                      ratio_of(median(items), median(raw)), ">= 0.7", yes_no(ratio >= 0.7),
                      "/bin/true spawned 2 at a time: " + bench::format_rate(median(truth), "/s")});
    }
    if (wanted("payload")) {
      std::fprintf(stderr, "payload\n");
      auto raw = repeat(runs, [&] { return bench::raw_tcp_bytes_per_second(big); });
      show_runs("raw loopback TCP GB/s", in_gb(raw), 3);
      auto hash = repeat(runs, [&] { return bench::sha256_bytes_per_second(big); });
      show_runs("SHA-256 GB/s", in_gb(hash), 3);
      auto figures = bench::payload_transfer(big, runs);
      std::vector<double> rates;
      for (double seconds : figures.download_seconds)
        rates.push_back(figures.archive_bytes / seconds);
      show_runs("download seconds", figures.download_seconds, 3);
      const double ratio = median(rates) / median(raw);
      rows.push_back({"payload: " + big_name + " version to a fresh client",
                      bench::format_bytes_rate(median(rates)),
                      bench::format_bytes_rate(median(raw)), ratio_of(median(rates), median(raw)),
                      ">= 0.4", yes_no(ratio >= 0.4),
                      "archive " + std::to_string(figures.archive_bytes) + " B in " +
                          bench::format_ms(median(figures.download_seconds)) + "; SHA-256 " +
                          bench::format_bytes_rate(median(hash)) + "; first item incl. packing " +
                          format(figures.first_item_seconds, 2) + " s"});
      rows.push_back({"payload: second item of that version, same client",
                      std::to_string(figures.second_item_bytes) + " B", "-", "-", "0 B",
                      yes_no(figures.second_item_bytes == 0), "payload bytes the client fetched"});
    }
    if (wanted("results")) {
      std::fprintf(stderr, "results\n");
      auto raw = repeat(runs, [&] { return bench::raw_tcp_bytes_per_second(big); });
      show_runs("raw loopback TCP GB/s", in_gb(raw), 3);
      auto disk =
          repeat(runs, [&] { return bench::durable_write_bytes_per_second(scratch.path(), big); });
      show_runs("durable write GB/s", in_gb(disk), 3);
      auto figures = bench::result_upload(big, runs);
      show_runs("upload seconds", figures.upload_seconds, 3);
      show_runs("offer to stored seconds", figures.stored_seconds, 3);
      std::vector<double> rates;
      for (double seconds : figures.upload_seconds) rates.push_back(figures.result_bytes / seconds);
      const double ratio = median(rates) / median(raw);
      rows.push_back(
          {"results: " + big_name + " model uploaded", bench::format_bytes_rate(median(rates)),
           bench::format_bytes_rate(median(raw)), ratio_of(median(rates), median(raw)), ">= 0.4",
           yes_no(ratio >= 0.4),
           "until stored (extract + fsync): " + format(median(figures.stored_seconds), 2) +
               " s; disk write+fsync " + bench::format_bytes_rate(median(disk))});
    }
    if (wanted("scale")) {
      std::fprintf(stderr, "scale\n");
      auto raw = bench::idle_clients_on_raw_router(idle_clients, runs, 2.0);
      show_runs("bare ROUTER CPU %", raw.cpu_percent, 2);
      auto server = bench::idle_clients_on_server(idle_clients, runs, 2.0);
      show_runs("server CPU %", server.cpu_percent, 2);
      const double cpu = median(server.cpu_percent);
      const double mb = server.resident_bytes / 1e6;
      const std::string who = std::to_string(server.connected) + " idle clients";
      rows.push_back({"scale: " + who + ", server CPU", format(cpu, 2) + " % of a core",
                      format(median(raw.cpu_percent), 2) + " % (bare ROUTER)", "-", "< 10 %",
                      yes_no(cpu < 10),
                      "heartbeat 1 s; clients simulated by DEALERs of one process"});
      rows.push_back({"scale: " + who + ", server RSS", format(mb, 1) + " MB",
                      format(raw.resident_bytes / 1e6, 1) + " MB (bare ROUTER)", "-", "< 200 MB",
                      yes_no(mb < 200), ""});
    }
    if (wanted("restart")) {
      std::fprintf(stderr, "restart\n");
      auto figures = bench::restart_with_models(models, runs);
      show_runs("seconds until a HELLO is answered", figures.seconds, 3);
      show_runs("the same without models", figures.empty_seconds, 3);
      const double seconds = median(figures.seconds);
      rows.push_back({"restart: " + std::to_string(models) + " stored models",
                      format(seconds, 3) + " s",
                      format(median(figures.empty_seconds), 3) + " s (no models)", "-", "< 2 s",
                      yes_no(seconds < 2),
                      "reading every meta.xml once: " + format(figures.meta_scan_seconds, 3) +
                          " s; seeding took " + format(figures.seed_seconds, 1) + " s"});
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "conductor_bench: %s\n", e.what());
    if (!rows.empty()) bench::print_table(rows);
    return 1;
  }
  std::printf("\n");
  bench::print_table(rows);
  std::printf("\nload average at the end %s\n", load_average().c_str());
  return 0;
}
