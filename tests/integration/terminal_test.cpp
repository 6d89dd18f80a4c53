// What people see in a terminal: `conductorctl status --watch` redrawing in place on a
// pseudo-terminal and printing plain views into a file, and conductor-client's progress bar
// per item on a terminal next to plain lines in a file. Every program ends on Ctrl-C or
// SIGINT with exit 0.
#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "cluster.hpp"
#include "http_support.hpp"
#include "support/child_process.hpp"
#include "support/pty_process.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using conductor::test::ChildProcess;
using conductor::test::Cluster;
using conductor::test::count_of;
using conductor::test::deadline_in;
using conductor::test::PtyProcess;
using conductor::test::ReleaseOnExit;
using conductor::test::VersionSpec;
using conductor::test::wait_until;
using json = nlohmann::json;

namespace {

// A cluster whose version g wants 2 models, has 1, and whose one client holds the other at
// epoch 2 of 4 until `go` exists.
struct HeldRun {
  explicit HeldRun(const std::string& name) : cluster(name), release(cluster.root() / "go") {
    conductor::test::write_configuration(
        cluster.server_dir(), 0.0,
        {conductor::test::held_version("g", 2, cluster.root() / "go")});
    conductor::test::store_model(cluster.server_dir(), "g", {{"model.h5", "seeded"}});
    url = conductor::test::start_server_with_http(cluster);
    cluster.start_client("worker");
    REQUIRE_MESSAGE(wait_until(deadline_in(30s),
                               [&] {
                                 return conductor::test::all_working_at(
                                     conductor::test::api_status(url), 1, 2, 4);
                               }),
                    cluster.diagnostics());
  }

  std::vector<std::string> ctl_argv(std::vector<std::string> arguments) const {
    arguments.insert(arguments.begin(), {conductor::test::kCtlBin.string(), cluster.endpoint()});
    return arguments;
  }

  Cluster cluster;
  ReleaseOnExit release;
  std::string url;
};

// 80 columns and more leave the bar its widest, 40.
constexpr const char* kVersionBar =
    "g  [###################...................]  1/2 stored, 1 active, 0 queued";

}  // namespace

TEST_SUITE("terminal") {

TEST_CASE("conductorctl status --watch prints plain views into a file and ends on SIGINT") {
  HeldRun run("conductor-watch-plain");
  const fs::path out = run.cluster.root() / "watch.out";
  ChildProcess watch({run.ctl_argv({"status", "--watch", "--interval", "0.2"}), out, {}, {}});
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return count_of(watch.output(), "--- ") >= 3; }),
                  watch.output());
  watch.kill(SIGINT);
  auto status = watch.wait_for_exit(15s);
  const std::string text = watch.output();
  INFO(text);
  REQUIRE(status.has_value());
  CHECK(status->exited_with(0));
  CHECK(text.find('\x1b') == std::string::npos);
  CHECK(text.starts_with("--- " + run.cluster.endpoint() + " at "));
  CHECK(count_of(text, kVersionBar) >= 3);
  CHECK(count_of(text, "Clients: 1 (reserve nodes 0)") >= 3);
  CHECK(text.find("worker") != std::string::npos);
  CHECK(text.find("2/4") != std::string::npos);  // the client's epoch
  CHECK(text.find("Queue: 0 queued; 1 active") != std::string::npos);
}

TEST_CASE("conductorctl status --watch --json prints one JSON document a line") {
  HeldRun run("conductor-watch-json");
  const fs::path out = run.cluster.root() / "watch.out";
  ChildProcess watch({run.ctl_argv({"status", "--watch", "--json", "--interval", "0.2"}), out, {}, {}});
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return count_of(watch.output(), "\n") >= 2; }),
                  watch.output());
  watch.kill(SIGTERM);
  auto status = watch.wait_for_exit(15s);
  REQUIRE(status.has_value());
  CHECK(status->exited_with(0));
  auto lines = conductor::test::split_lines(watch.output());
  REQUIRE(lines.size() >= 2);
  for (const auto& line : lines) {
    INFO(line);
    REQUIRE(json::accept(line));
    auto body = json::parse(line);
    CHECK(body["versions"][0]["stored"] == 1);
    CHECK(body["clients"][0]["epoch"] == 2);
  }
}

TEST_CASE("conductorctl status --watch redraws in place on a terminal and ends on Ctrl-C") {
  HeldRun run("conductor-watch-tty");
  PtyProcess watch({run.ctl_argv({"status", "--watch", "--interval", "0.2"}), {{"TERM", "xterm"}}});
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return count_of(watch.output(), kVersionBar) >= 3; }),
                  watch.output());
  watch.type("\x03");  // Ctrl-C, turned into SIGINT by the terminal
  auto status = watch.wait_for_exit(15s);
  const std::string text = watch.output();
  INFO(text);
  REQUIRE(status.has_value());
  CHECK(status->exited_with(0));
  CHECK(text.starts_with("\x1b[2J"));
  CHECK(count_of(text, "\x1b[H" + run.cluster.endpoint() + " at ") >= 3);  // each view from the top
  CHECK(count_of(text, "\x1b[J") >= 3);
  CHECK(text.find("Ctrl-C ends") != std::string::npos);
  CHECK(text.find("--- ") == std::string::npos);  // no plain-view headings on a terminal
}

TEST_CASE("conductor-client draws a bar per item on a terminal and prints plain lines into a file") {
  Cluster cluster("conductor-client-tty");
  const fs::path go = cluster.root() / "go";
  ReleaseOnExit release(go);
  conductor::test::write_configuration(
      cluster.server_dir(), 0.0, {conductor::test::held_version("g", 2, go)});
  const std::string url = conductor::test::start_server_with_http(cluster);
  auto& plain = cluster.start_client("plain");
  PtyProcess tty({{conductor::test::kClientBin.string(), cluster.endpoint(), "--workdir",
                   (cluster.root() / "tty").string(), "--name", "tty", "--heartbeat-ms", "200"},
                  {{"TERM", "xterm"}}});
  REQUIRE_MESSAGE(wait_until(deadline_in(30s),
                             [&] {
                               return conductor::test::all_working_at(
                                          conductor::test::api_status(url), 2, 2, 4) &&
                                      tty.output().find("epoch 2/4") != std::string::npos;
                             }),
                  tty.output() << cluster.diagnostics());
  {
    const std::string text = tty.output();
    INFO(text);
    CHECK(text.find(" training g  downloading [") != std::string::npos);
    CHECK(text.find(" training g  running [##########..........] epoch 2/4, ") != std::string::npos);
    CHECK(text.find("Epoch 2/4") != std::string::npos);  // the command's own lines still show
    CHECK(text.find("\r\x1b[K") != std::string::npos);   // the bar is erased before each line
  }
  conductor::test::write_file(go, "go\n");
  REQUIRE_MESSAGE(wait_until(deadline_in(60s), [&] { return cluster.model_ids("g").size() == 2; }),
                  cluster.diagnostics());
  REQUIRE(wait_until(deadline_in(30s),
                     [&] { return tty.output().find("stored by the server") != std::string::npos; }));
  tty.type("\x03");
  auto status = tty.wait_for_exit(15s);
  REQUIRE(status.has_value());
  CHECK(status->exited_with(0));
  CHECK(tty.output().find("Conductor client stopped") != std::string::npos);

  // The other client wrote into a file: the same kind of lines, no bars, no terminal controls.
  REQUIRE(wait_until(deadline_in(30s),
                     [&] { return plain.output().find("stored by the server") != std::string::npos; }));
  const std::string lines = plain.output();
  INFO(lines);
  CHECK(lines.find('\x1b') == std::string::npos);
  CHECK(lines.find("running [") == std::string::npos);
  CHECK(lines.find("Epoch 2/4\n") != std::string::npos);
}

TEST_CASE("conductor-client with two slots keeps one bar per slot on a terminal") {
  Cluster cluster("conductor-client-tty-slots");
  const fs::path go = cluster.root() / "go";
  ReleaseOnExit release(go);
  conductor::test::write_configuration(
      cluster.server_dir(), 0.0, {conductor::test::held_version("g", 2, go)});
  cluster.start_server();
  PtyProcess tty({{conductor::test::kClientBin.string(), cluster.endpoint(), "--workdir",
                   (cluster.root() / "tty").string(), "--name", "tty", "--heartbeat-ms", "200",
                   "--slots", "2"},
                  {{"TERM", "xterm"}}});
  // The two bars stand one under the other (the terminal turns "\n" into "\r\n").
  const std::regex two_bars(
      R"(\[slot 0\] \w{8} training g  running \[#{10}\.{10}\] epoch 2/4, [^\r\n]*\r\n)"
      R"(\[slot 1\] \w{8} training g  running \[#{10}\.{10}\] epoch 2/4)");
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return std::regex_search(tty.output(), two_bars); }),
                  tty.output() << cluster.diagnostics());
  const std::string text = tty.output();
  INFO(text);
  CHECK(text.find("[slot 0] Epoch 2/4") != std::string::npos);  // echoed lines say whose they are
  CHECK(text.find("[slot 1] Epoch 2/4") != std::string::npos);
  CHECK(text.find("\r\x1b[K\x1b[1A\r\x1b[K") != std::string::npos);  // both bars erased for a line
  conductor::test::write_file(go, "go\n");
  REQUIRE_MESSAGE(wait_until(deadline_in(60s), [&] { return cluster.model_ids("g").size() == 2; }),
                  cluster.diagnostics());
  tty.type("\x03");
  auto status = tty.wait_for_exit(15s);
  REQUIRE(status.has_value());
  CHECK(status->exited_with(0));
}

}  // TEST_SUITE("terminal")
