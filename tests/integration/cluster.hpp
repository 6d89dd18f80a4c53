// Cluster: one conductor-server and any number of conductor-clients, started as real processes
// on 127.0.0.1 inside one TempDir, plus the fixture writers that prepare the server's working
// folder. Owns every process (clients die before the server, the folder last). Not
// thread-safe. Header-only so that each integration test file can use it without a build edit.
#pragma once

#include <doctest/doctest.h>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "conductor/error.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

namespace conductor::test {

inline const std::filesystem::path kServerBin = CONDUCTOR_SERVER_BIN;
inline const std::filesystem::path kClientBin = CONDUCTOR_CLIENT_BIN;

// One training version as the tests need it: its commands are always `/bin/sh train.sh` in the
// client's working folder, so the script text needs no XML or shell quoting.
struct VersionSpec {
  std::string name;
  int target_models = 1;
  std::string train_script;                                  // contents of train.sh
  std::vector<std::pair<std::string, std::string>> payload;  // further input files
};

// <Created>...<TargetModels> of one version, in the original's XmlSerializer layout.
inline std::string version_body(const VersionSpec& spec, const std::string& indent) {
  return indent + "<Created>2024-01-02T03:04:05.0000000+00:00</Created>\n" + indent +
         "<LastUpdated>2024-01-02T03:04:05.0000000+00:00</LastUpdated>\n" + indent + "<Name>" +
         spec.name + "</Name>\n" + indent + "<DatasetType>Generic</DatasetType>\n" + indent +
         "<Status />\n" + indent + "<TrainingCommands>\n" + indent + "  <Command>\n" + indent +
         "    <FileName>/bin/sh</FileName>\n" + indent + "    <Arguments>train.sh</Arguments>\n" +
         indent + "  </Command>\n" + indent + "</TrainingCommands>\n" + indent +
         "<PredictionCommands />\n" + indent + "<TargetModels>" +
         std::to_string(spec.target_models) + "</TargetModels>\n";
}

inline void write_payload(const std::filesystem::path& server_dir, const VersionSpec& spec) {
  const auto folder = server_dir / "assets" / spec.name;
  write_file(folder / "train.sh", spec.train_script);
  for (const auto& [name, bytes] : spec.payload) write_file(folder / name, bytes);
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

// assets/<name>/version.xml plus the payload: a local version.
inline void write_local_version(const std::filesystem::path& server_dir, const VersionSpec& spec) {
  write_file(server_dir / "assets" / spec.name / "version.xml",
             "<?xml version=\"1.0\"?>\n"
             "<Version xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" "
             "xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">\n" +
                 version_body(spec, "  ") + "</Version>\n");
  write_payload(server_dir, spec);
}

// A server log line "Item <id> of <version> (attempt <n>) handed to <host>".
struct Handout {
  std::string item;
  std::string version;
  int attempt = 0;
  std::string host;
};

class Cluster {
 public:
  explicit Cluster(std::string_view name) : root_(name) {}
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
    const auto endpoint_file = root_ / "server.endpoint";
    std::vector<std::string> argv = {kServerBin.string(),
                                     "--workdir",
                                     server_dir().string(),
                                     "--bind",
                                     "tcp://127.0.0.1:*",
                                     "--endpoint-file",
                                     endpoint_file.string(),
                                     "--heartbeat-ms",
                                     "200",
                                     "--quiet"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    server_.emplace(ChildOptions{argv, root_ / "server.out", {}, {}});
    bool listening = wait_until(deadline_in(std::chrono::seconds(15)), [&] {
      return !read_file_if_present(endpoint_file).empty() || !server_->is_running();
    });
    endpoint_ = read_file_if_present(endpoint_file);
    while (!endpoint_.empty() && std::isspace(static_cast<unsigned char>(endpoint_.back()))) {
      endpoint_.pop_back();
    }
    INFO("server output:\n" << server_->output());
    REQUIRE(listening);
    REQUIRE(server_->is_running());
    REQUIRE(endpoint_.rfind("tcp://127.0.0.1:", 0) == 0);
    return endpoint_;
  }

  ChildProcess& server() {
    REQUIRE(server_.has_value());
    return *server_;
  }
  const std::string& endpoint() const { return endpoint_; }
  int port() const { return std::stoi(endpoint_.substr(endpoint_.rfind(':') + 1)); }

  // Starts a client named `name` with its own working folder, heartbeating every 200 ms.
  ChildProcess& start_client(const std::string& name,
                             std::vector<std::pair<std::string, std::string>> environment = {}) {
    REQUIRE(!endpoint_.empty());
    std::vector<std::string> argv = {kClientBin.string(),
                                     endpoint_,
                                     "--workdir",
                                     (root_ / "clients" / name).string(),
                                     "--name",
                                     name,
                                     "--heartbeat-ms",
                                     "200"};
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
    static const std::regex kLine(R"(Item (\S+) of (\S+) \(attempt (\d+)\) handed to (\S+)$)");
    std::vector<Handout> result;
    for (const auto& line : split_lines(server_log())) {
      std::smatch match;
      if (std::regex_search(line, match, kLine)) {
        result.push_back({match[1], match[2], std::stoi(match[3]), match[4]});
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
    std::string text = "--- log.txt (tail)\n" + tail(server_log(), 60);
    if (server_) text += "--- server output (tail)\n" + tail(server_->output(), 20);
    for (const auto& [name, process] : clients_) {
      text += "--- client " + name + " (tail)\n" + tail(process->output(), 20);
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
  static std::string tail(const std::string& text, std::size_t lines) {
    auto all = split_lines(text);
    std::string result;
    for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
      result += all[i] + "\n";
    }
    return result;
  }

  TempDir root_;  // destroyed last: the processes write into it
  std::optional<ChildProcess> server_;
  std::map<std::string, std::unique_ptr<ChildProcess>> clients_;  // destroyed first
  std::string endpoint_;
};

}  // namespace conductor::test
