// ChaosCluster: a conductor-server and conductor-clients as real processes that a test may
// SIGKILL and start again at will, on any endpoint (a FaultRelay's, say), unlike Cluster,
// which starts each client once and stops politely. Also the checks that every stored model
// arrived whole, exactly once and without leftovers. Owns every process (clients die before
// the server, the folder last). Not thread-safe. Header-only.
#pragma once

#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "cluster.hpp"
#include "conductor/sha256.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

namespace conductor::test {

// train.sh for these tests: trains for `min_ms`..`max_ms` (at random), writes `model_bytes`
// random bytes to model.h5 and their SHA-256, as sha256sum prints it, to hash.txt and to the
// console as "model sha256: <hex>". Refuses to train without its input `data.bin`.
inline std::string hashing_train_script(std::size_t model_bytes, int min_ms, int max_ms) {
  const std::string pick_ms =
      "ms=$((" + std::to_string(min_ms) + " + r % " + std::to_string(max_ms - min_ms + 1) + "))\n";
  const std::string write_model =
      "head -c " + std::to_string(model_bytes) + " /dev/urandom > model.h5\n";
  return std::string("echo \"Epoch 1/1\"\n") +
         "test -f data.bin || { echo \"data.bin is missing\" >&2; exit 9; }\n" +
         "r=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')\n" + pick_ms +
         "sleep $((ms / 1000)).$(printf %03d $((ms % 1000)))\n" + write_model +
         "sum=$(sha256sum model.h5 | cut -d' ' -f1)\n" + "echo \"$sum\" > hash.txt\n" +
         "echo \"model sha256: $sum\"\n" + "echo \"1/1 - 0s - loss: 0.5000 - val_loss: 0.4900\"\n";
}

class ChaosCluster {
 public:
  explicit ChaosCluster(std::string_view name) : root_(name) {}
  ~ChaosCluster() {
    clients_.clear();  // before the server
    server_.reset();
  }
  ChaosCluster(const ChaosCluster&) = delete;
  ChaosCluster& operator=(const ChaosCluster&) = delete;

  const std::filesystem::path& root() const { return root_.path(); }
  std::filesystem::path server_dir() const { return root_ / "server"; }
  std::filesystem::path version_dir(const std::string& version) const {
    return server_dir() / "assets" / version;
  }
  std::string server_log() const {
    return read_file_if_present(server_dir() / "config" / "log.txt");
  }
  const std::string& endpoint() const { return endpoint_; }

  // Starts conductor-server with 200 ms heartbeats: the first time on an OS-chosen port, then
  // on the same port. Fails the test (REQUIRE) unless it listens within 15 s.
  const std::string& start_server(const std::vector<std::string>& extra = {}) {
    REQUIRE_FALSE(server_running());
    const auto endpoint_file = root_ / "server.endpoint";
    std::filesystem::remove(endpoint_file);
    server_runs_.push_back(root_ / ("server-" + std::to_string(server_runs_.size() + 1) + ".out"));
    server_.emplace(
        ChildOptions{server_argv(server_dir(), endpoint_.empty() ? "tcp://127.0.0.1:*" : endpoint_,
                                 endpoint_file, extra),
                     server_runs_.back(),
                     {},
                     {}});
    endpoint_ = await_endpoint(*server_, endpoint_file);
    return endpoint_;
  }

  // SIGKILL: no goodbye to the clients, no clean-up.
  void kill_server() {
    REQUIRE(server_.has_value());
    server_->kill(SIGKILL);
    auto status = server_->wait_for_exit(std::chrono::seconds(10));
    REQUIRE(status.has_value());
  }

  // SIGTERM; the exit status (0 for a clean stop).
  ExitStatus stop_server() {
    REQUIRE(server_.has_value());
    return server_->stop(std::chrono::seconds(10));
  }

  bool server_running() { return server_ && server_->is_running(); }

  // What every run of the server printed, oldest first.
  std::string server_output() const {
    std::string text;
    for (const auto& file : server_runs_) {
      text += "--- " + file.filename().string() + "\n" + read_file_if_present(file);
    }
    return text;
  }

  // Starts (or starts again) client `name` against `endpoint`, in its own working folder,
  // which outlives its processes, as a real client's disk does.
  void start_client(const std::string& name, const std::string& endpoint) {
    REQUIRE_FALSE(client_running(name));
    std::filesystem::create_directories(root_ / "clients");
    int run = ++client_runs_[name];
    const auto argv = client_argv(endpoint, root_ / "clients" / name, name);
    clients_[name] = std::make_unique<ChildProcess>(
        ChildOptions{argv, root_ / (name + "-" + std::to_string(run) + ".out"), {}, {}});
  }

  void kill_client(const std::string& name) {
    auto it = clients_.find(name);
    REQUIRE(it != clients_.end());
    it->second->kill(SIGKILL);
    REQUIRE(it->second->wait_for_exit(std::chrono::seconds(10)).has_value());
  }

  bool client_running(const std::string& name) {
    auto it = clients_.find(name);
    return it != clients_.end() && it->second->is_running();
  }

  // SIGTERM to every client; true if all of them exited 0.
  bool stop_clients() {
    bool clean = true;
    for (auto& [name, process] : clients_) {
      if (!process->stop(std::chrono::seconds(10)).exited_with(0)) clean = false;
    }
    return clean;
  }

  std::vector<std::string> model_ids(const std::string& version) const {
    return list_names(version_dir(version) / "models");
  }

  // The end of the server's log and of the latest output of every process.
  std::string diagnostics() const {
    std::string text = "--- log.txt (tail)\n" + tail_lines(server_log(), 80);
    if (!server_runs_.empty()) {
      text += "--- " + server_runs_.back().filename().string() + " (tail)\n" +
              tail_lines(read_file_if_present(server_runs_.back()), 20);
    }
    for (const auto& [name, process] : clients_) {
      text += "--- client " + name + " (tail)\n" + tail_lines(process->output(), 25);
    }
    return text;
  }

 private:
  TempDir root_;  // destroyed last: the processes write into it
  std::optional<ChildProcess> server_;
  std::vector<std::filesystem::path> server_runs_;
  std::string endpoint_;
  std::map<std::string, std::unique_ptr<ChildProcess>> clients_;
  std::map<std::string, int> client_runs_;
};

// Checks every model folder of `version`: named like an item id, complete, and its model.h5
// hashing to the value in its hash.txt and in its console.log. Adds the model hashes to
// `hashes` and fails the test if one was there already (a model stored twice).
inline void check_stored_models(const ChaosCluster& cluster, const std::string& version,
                                std::set<std::string>& hashes) {
  static const std::regex kItemId("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$");
  static const std::regex kConsoleHash("model sha256: ([0-9a-f]{64})");
  const auto models = cluster.version_dir(version) / "models";
  for (const auto& name : list_names(models)) {
    const auto folder = models / name;
    INFO("model folder " << folder);
    CHECK(std::regex_match(name, kItemId));
    REQUIRE(std::filesystem::is_directory(folder));
    for (const char* file : {"model.h5", "hash.txt", "console.log", "meta.xml"}) {
      CHECK_MESSAGE(std::filesystem::is_regular_file(folder / file), file << " is missing");
    }
    if (!std::filesystem::is_regular_file(folder / "model.h5")) continue;
    const std::string actual = sha256_file(folder / "model.h5");
    std::string written = read_file_if_present(folder / "hash.txt");
    while (!written.empty() && std::isspace(static_cast<unsigned char>(written.back()))) {
      written.pop_back();
    }
    const std::string console = read_file_if_present(folder / "console.log");
    std::smatch match;
    const bool printed = std::regex_search(console, match, kConsoleHash);
    CHECK_MESSAGE(printed, "no 'model sha256:' line in console.log");
    CHECK(actual == written);
    if (printed) CHECK(actual == match[1].str());
    CHECK_MESSAGE(hashes.insert(actual).second, "model " << actual << " is stored twice");
  }
}

// Nothing half-done in the server's folder: only model folders under models/ (hidden entries
// included), and spool/incoming and spool/staging empty.
inline void check_no_partial_results(const ChaosCluster& cluster,
                                     const std::vector<std::string>& versions) {
  for (const auto& version : versions) {
    for (const auto& name : list_names(cluster.version_dir(version) / "models")) {
      INFO("entry " << name << " in models/ of " << version);
      CHECK(std::filesystem::is_directory(cluster.version_dir(version) / "models" / name));
      CHECK(name.front() != '.');
    }
  }
  for (const char* folder : {"incoming", "staging"}) {
    const auto path = cluster.server_dir() / "spool" / folder;
    INFO("spool/" << folder << " holds: " << [&] {
      std::string names;
      for (const auto& name : list_names(path)) names += name + " ";
      return names;
    }());
    CHECK(list_names(path).empty());
  }
}

}  // namespace conductor::test
