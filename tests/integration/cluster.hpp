// Cluster: one conductor-server and any number of conductor-clients, started as real processes
// on 127.0.0.1 inside one TempDir, plus the fixture writers that prepare the server's working
// folder and run_ctl, which runs conductorctl against it. Owns every process (clients die
// before the server, the folder last). Not thread-safe. Header-only so that each integration
// test file can use it without a build edit.
#pragma once

#include <doctest/doctest.h>

#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "conductor/asset_store.hpp"
#include "conductor/error.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

namespace conductor::test {

inline const std::filesystem::path kServerBin = CONDUCTOR_SERVER_BIN;
inline const std::filesystem::path kClientBin = CONDUCTOR_CLIENT_BIN;

// One training version as the tests need it: its commands are always `/bin/sh train.sh` (and
// `/bin/sh predict.sh`) in the client's working folder, so the script text needs no XML or
// shell quoting.
struct VersionSpec {
  std::string name;
  int target_models = 1;
  std::string train_script;                                  // contents of train.sh
  std::vector<std::pair<std::string, std::string>> payload;  // further input files
  std::string predict_script = {};                           // predict.sh; empty: no predictions
  std::string requirement = {};  // <Requires>: "gpu", "cpu"; empty: none
  std::string prediction_output = {};  // <PredictionOutput>; empty: the console is read
};

// <Created>...<TargetModels> of one version, in the original's XmlSerializer layout.
inline std::string version_body(const VersionSpec& spec, const std::string& indent) {
  return indent + "<Created>2024-01-02T03:04:05.0000000+00:00</Created>\n" + indent +
         "<LastUpdated>2024-01-02T03:04:05.0000000+00:00</LastUpdated>\n" + indent + "<Name>" +
         spec.name + "</Name>\n" + indent + "<DatasetType>Generic</DatasetType>\n" + indent +
         "<Status />\n" + indent + "<TrainingCommands>\n" + indent + "  <Command>\n" + indent +
         "    <FileName>/bin/sh</FileName>\n" + indent + "    <Arguments>train.sh</Arguments>\n" +
         indent + "  </Command>\n" + indent + "</TrainingCommands>\n" + indent +
         (spec.predict_script.empty() ? "<PredictionCommands />\n"
                                      : "<PredictionCommands>\n" + indent + "  <Command>\n" +
                                            indent + "    <FileName>/bin/sh</FileName>\n" + indent +
                                            "    <Arguments>predict.sh</Arguments>\n" + indent +
                                            "  </Command>\n" + indent + "</PredictionCommands>\n") +
         indent + "<TargetModels>" + std::to_string(spec.target_models) + "</TargetModels>\n" +
         (spec.prediction_output.empty()
              ? ""
              : indent + "<PredictionOutput>" + spec.prediction_output + "</PredictionOutput>\n") +
         (spec.requirement.empty() ? ""
                                   : indent + "<Requires>" + spec.requirement + "</Requires>\n");
}

// train.sh, predict.sh and the further input files, into `folder`.
inline void write_scripts(const std::filesystem::path& folder, const VersionSpec& spec) {
  write_file(folder / "train.sh", spec.train_script);
  if (!spec.predict_script.empty()) write_file(folder / "predict.sh", spec.predict_script);
  for (const auto& [name, bytes] : spec.payload) write_file(folder / name, bytes);
}

inline void write_payload(const std::filesystem::path& server_dir, const VersionSpec& spec) {
  write_scripts(server_dir / "assets" / spec.name, spec);
}

// config/config.xml holding `global_versions`, and each one's payload under assets/<name>/.
inline void write_configuration(const std::filesystem::path& server_dir, double reserve_nodes,
                                const std::vector<VersionSpec>& global_versions) {
  std::string xml =
      "<?xml version=\"1.0\"?>\n"
      "<ConductorConfiguration xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" "
      "xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">\n"
      "  <Created>2024-01-02T03:04:05.0000000+00:00</Created>\n"
      "  <LastUpdated>2024-01-02T03:04:05.0000000+00:00</LastUpdated>\n";
  if (global_versions.empty()) {
    xml += "  <Versions />\n";
  } else {
    xml += "  <Versions>\n";
    for (const auto& spec : global_versions) {
      xml += "    <Version>\n" + version_body(spec, "      ") + "    </Version>\n";
      write_payload(server_dir, spec);
    }
    xml += "  </Versions>\n";
  }
  xml += "  <ReserveNodes>" + std::to_string(reserve_nodes) + "</ReserveNodes>\n";
  xml += "</ConductorConfiguration>\n";
  write_file(server_dir / "config" / "config.xml", xml);
}

// `folder`/version.xml plus the payload: a version folder as an operator would upload it.
inline void write_version_folder(const std::filesystem::path& folder, const VersionSpec& spec) {
  write_file(folder / "version.xml",
             "<?xml version=\"1.0\"?>\n"
             "<Version xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" "
             "xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">\n" +
                 version_body(spec, "  ") + "</Version>\n");
  write_scripts(folder, spec);
}

// assets/<name>/version.xml plus the payload: a local version.
inline void write_local_version(const std::filesystem::path& server_dir, const VersionSpec& spec) {
  write_version_folder(server_dir / "assets" / spec.name, spec);
}

// A random id in the form the server gives work items (and so models).
// The seed of a randomized test: $CONDUCTOR_TEST_SEED when set (to replay a failure the test
// printed the seed of), else a fresh one.
inline std::uint64_t test_seed() {
  if (const char* forced = std::getenv("CONDUCTOR_TEST_SEED"); forced && *forced) {
    return std::strtoull(forced, nullptr, 10);
  }
  return std::random_device{}();
}

// Whether every version of `targets` holds exactly its target of models (`cluster.model_ids`).
// Sets `overshot` when one holds more: a version above its target is a failure however brief,
// so it stays set.
template <typename AnyCluster>
bool all_at_target(const AnyCluster& cluster, const std::map<std::string, int>& targets,
                   bool& overshot) {
  bool all = true;
  for (const auto& [version, target] : targets) {
    const auto stored = static_cast<int>(cluster.model_ids(version).size());
    if (stored > target) overshot = true;
    if (stored != target) all = false;
  }
  return all;
}

inline std::string random_item_id() {
  static std::mt19937_64 random(std::random_device{}());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) id += '-';
    id += kHex[random() % 16];
  }
  return id;
}

// Stores a trained model of `version` in the working folder as the server would have, for
// tests that need models without waiting for training; call it before the server starts.
// `files` land in models/<id>/ (a metrics.json among them becomes the model's metrics);
// one must match "*.h5". Returns the model's id.
inline std::string store_model(const std::filesystem::path& server_dir, const std::string& version,
                               const std::vector<std::pair<std::string, std::string>>& files) {
  AssetStore store(server_dir);
  const std::string id = random_item_id();
  const auto staged = store.spool_dir() / ("seed-" + id);
  for (const auto& [name, bytes] : files) write_file(staged / name, bytes);
  Version spec;
  spec.name = version;
  ModelMeta meta;
  meta.item_id = id;
  meta.duration_seconds = 1.5;
  meta.epochs = 2;
  meta.node_name = "seeded";
  auto outcome = store.commit_model(spec, staged, meta, "seeded by the test\n");
  REQUIRE_MESSAGE(outcome.status == CommitStatus::kStored, outcome.reason);
  return id;
}

inline const std::filesystem::path kCtlBin = CONDUCTORCTL_BIN;

// One finished run of conductorctl.
struct CtlRun {
  ExitStatus status;
  std::string out;  // stdout
  std::string err;  // stderr
  std::chrono::milliseconds took{0};
};

// Runs conductorctl with `arguments` in `folder` (which keeps its output files), stdin from
// `input` (empty: /dev/null). Fails the test (REQUIRE) if it has not ended within `limit`.
inline CtlRun run_ctl(const std::filesystem::path& folder, std::vector<std::string> arguments,
                      std::vector<std::pair<std::string, std::string>> environment = {},
                      const std::filesystem::path& input = {},
                      std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  static int runs = 0;
  const std::string stem = "ctl-" + std::to_string(++runs);
  arguments.insert(arguments.begin(), kCtlBin.string());
  const auto started = std::chrono::steady_clock::now();
  ChildProcess ctl(ChildOptions{arguments,
                                folder / (stem + ".out"),
                                std::move(environment),
                                {},
                                input,
                                folder / (stem + ".err")});
  auto status = ctl.wait_for_exit(limit);
  CtlRun run;
  run.took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  run.out = read_file_if_present(folder / (stem + ".out"));
  run.err = read_file_if_present(folder / (stem + ".err"));
  INFO("conductorctl stdout:\n" << run.out << "\nstderr:\n" << run.err);
  REQUIRE_MESSAGE(status.has_value(), "conductorctl still runs after " << limit.count() << " ms");
  run.status = *status;
  return run;
}

// The JSON conductorctl printed (--json); fails the test unless it exited 0 with JSON.
inline nlohmann::json parse_json(const CtlRun& run) {
  INFO("conductorctl stdout:\n" << run.out << "\nstderr:\n" << run.err);
  REQUIRE(run.status.exited_with(0));
  REQUIRE(nlohmann::json::accept(run.out));
  return nlohmann::json::parse(run.out);
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A server log line "Item <id> of <version> (attempt <n>) handed to <host>[ slot <s>]".
struct Handout {
  std::string item;
  std::string version;
  int attempt = 0;
  std::string host;
  int slot = 0;
};

// Writes `file` at scope exit (or at raise()), so that commands blocked until it exists are
// released even when a check fails first.
class FlagOnExit {
 public:
  explicit FlagOnExit(std::filesystem::path file) : file_(std::move(file)) {}
  ~FlagOnExit() {
    try {
      raise();
    } catch (...) {
    }
  }
  FlagOnExit(const FlagOnExit&) = delete;
  FlagOnExit& operator=(const FlagOnExit&) = delete;
  void raise() const { write_file(file_, "go\n"); }

 private:
  std::filesystem::path file_;
};

// The last `lines` lines of `text`, for failure messages.
inline std::string tail_lines(const std::string& text, std::size_t lines) {
  auto all = split_lines(text);
  std::string result;
  for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
    result += all[i] + "\n";
  }
  return result;
}

// conductor-server's command line in these tests: 200 ms heartbeats, quiet, its endpoint
// written to `endpoint_file`, then `extra`.
inline std::vector<std::string> server_argv(const std::filesystem::path& server_dir,
                                            const std::string& bind,
                                            const std::filesystem::path& endpoint_file,
                                            const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {kServerBin.string(),
                                   "--workdir",
                                   server_dir.string(),
                                   "--bind",
                                   bind,
                                   "--endpoint-file",
                                   endpoint_file.string(),
                                   "--heartbeat-ms",
                                   "200",
                                   "--quiet"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

// conductor-client's command line in these tests: its own working folder and name, 200 ms
// heartbeats, then `extra`.
inline std::vector<std::string> client_argv(const std::string& endpoint,
                                            const std::filesystem::path& workdir,
                                            const std::string& name,
                                            const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv = {kClientBin.string(), endpoint, "--workdir",
                                   workdir.string(),    "--name", name,
                                   "--heartbeat-ms",    "200"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

// Waits until `server` has written its endpoint line to `endpoint_file` and returns the
// endpoint. Fails the test (REQUIRE) if it exits first, stays silent for 15 s, or listens
// anywhere but 127.0.0.1.
inline std::string await_endpoint(ChildProcess& server,
                                  const std::filesystem::path& endpoint_file) {
  std::string endpoint;
  const bool listening = wait_until(deadline_in(std::chrono::seconds(15)), [&] {
    endpoint = read_file_if_present(endpoint_file);
    return endpoint.find('\n') != std::string::npos || !server.is_running();
  });
  INFO("server output:\n" << server.output());
  REQUIRE(listening);
  REQUIRE(server.is_running());
  endpoint = endpoint.substr(0, endpoint.find('\n'));
  REQUIRE(endpoint.rfind("tcp://127.0.0.1:", 0) == 0);
  return endpoint;
}

class Cluster {
 public:
  explicit Cluster(std::string_view name) : root_(name) {}
  // Clients get SIGTERM first, so they stop their commands (a SIGKILLed client leaves its
  // commands' process groups running); whatever is left is then killed.
  ~Cluster() {
    for (auto& [name, process] : clients_) process->stop(std::chrono::seconds(5));
  }
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  const std::filesystem::path& root() const { return root_.path(); }
  std::filesystem::path server_dir() const { return root_ / "server"; }
  std::filesystem::path version_dir(const std::string& version) const {
    return server_dir() / "assets" / version;
  }
  std::filesystem::path log_file() const { return server_dir() / "config" / "log.txt"; }

  // Starts conductor-server on an OS-chosen port and waits until it has written its endpoint.
  // Fails the test (REQUIRE) if it exits or stays silent for 15 s.
  const std::string& start_server(const std::vector<std::string>& extra = {}) {
    return launch_server("tcp://127.0.0.1:*", extra);
  }

  // Stops the server with SIGTERM (it must exit 0) and starts it again on the same port, so
  // that the clients find it again; `extra` as for start_server.
  const std::string& restart_server(const std::vector<std::string>& extra = {}) {
    REQUIRE(server_.has_value());
    const std::string bind = endpoint_;
    auto status = server_->stop(std::chrono::seconds(10));
    INFO("server output:\n" << server_->output());
    REQUIRE(status.exited_with(0));
    return launch_server(bind, extra);
  }

  ChildProcess& server() {
    REQUIRE(server_.has_value());
    return *server_;
  }
  const std::string& endpoint() const { return endpoint_; }
  int port() const { return std::stoi(endpoint_.substr(endpoint_.rfind(':') + 1)); }

  // conductorctl against this cluster's server (its endpoint comes first), as run_ctl.
  CtlRun ctl(std::vector<std::string> arguments, const std::filesystem::path& input = {},
             std::chrono::milliseconds limit = std::chrono::seconds(60)) {
    REQUIRE(!endpoint_.empty());
    arguments.insert(arguments.begin(), endpoint_);
    return run_ctl(root_.path(), std::move(arguments), {}, input, limit);
  }

  // Starts a client named `name` with its own working folder, heartbeating every 200 ms, with
  // `extra` options (--slots 3, say).
  ChildProcess& start_client(const std::string& name,
                             std::vector<std::pair<std::string, std::string>> environment = {},
                             const std::vector<std::string>& extra = {}) {
    REQUIRE(!endpoint_.empty());
    std::vector<std::string> argv = client_argv(endpoint_, root_ / "clients" / name, name, extra);
    std::filesystem::create_directories(root_ / "clients");
    auto& slot = clients_[name];
    REQUIRE_MESSAGE(slot == nullptr, "client " << name << " started twice");
    slot = std::make_unique<ChildProcess>(
        ChildOptions{argv, root_ / (name + ".out"), std::move(environment), {}});
    return *slot;
  }

  ChildProcess& client(const std::string& name) {
    auto it = clients_.find(name);
    REQUIRE(it != clients_.end());
    return *it->second;
  }

  std::string server_log() const { return read_file_if_present(log_file()); }

  std::vector<Handout> handouts() const {
    static const std::regex kLine(
        R"(Item (\S+) of (\S+) \(attempt (\d+)\) handed to (\S+)(?: slot (\d+))?$)");
    std::vector<Handout> result;
    for (const auto& line : split_lines(server_log())) {
      std::smatch match;
      if (std::regex_search(line, match, kLine)) {
        result.push_back({match[1], match[2], std::stoi(match[3]), match[4],
                          match[5].matched ? std::stoi(match[5]) : 0});
      }
    }
    return result;
  }

  std::vector<std::string> model_ids(const std::string& version) const {
    return list_names(version_dir(version) / "models");
  }
  std::vector<std::string> error_logs(const std::string& version) const {
    return list_names(version_dir(version) / "errorlogs");
  }

  // The end of the server's log and of every process's output, for failure messages.
  std::string diagnostics() const {
    std::string text = "--- log.txt (tail)\n" + tail_lines(server_log(), 60);
    if (server_) text += "--- server output (tail)\n" + tail_lines(server_->output(), 20);
    for (const auto& [name, process] : clients_) {
      text += "--- client " + name + " (tail)\n" + tail_lines(process->output(), 20);
    }
    return text;
  }

  // Stops every client, then the server, with SIGTERM; returns the server's exit status.
  std::optional<ExitStatus> stop_all(std::chrono::milliseconds grace = std::chrono::seconds(10)) {
    for (auto& [name, process] : clients_) process->stop(grace);
    if (!server_) return std::nullopt;
    return server_->stop(grace);
  }

 private:
  const std::string& launch_server(const std::string& bind, const std::vector<std::string>& extra) {
    const auto endpoint_file = root_ / "server.endpoint";
    std::filesystem::remove(endpoint_file);  // a restart must not read the last run's
    server_.emplace(ChildOptions{
        server_argv(server_dir(), bind, endpoint_file, extra), root_ / "server.out", {}, {}});
    endpoint_ = await_endpoint(*server_, endpoint_file);
    return endpoint_;
  }

  TempDir root_;  // destroyed last: the processes write into it
  std::optional<ChildProcess> server_;
  std::map<std::string, std::unique_ptr<ChildProcess>> clients_;  // destroyed first
  std::string endpoint_;
};

}  // namespace conductor::test
