// What the HTTP and terminal tests share: a Cluster whose server also serves HTTP on an
// OS-chosen port of 127.0.0.1, GETs against it, the samples of a /metrics answer, and a
// training script that holds its item at a known epoch until the test lets it go.
// Header-only, like cluster.hpp; not thread-safe.
#pragma once

#include <doctest/doctest.h>
#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cluster.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

namespace conductor::test {

// How many times `part` occurs in `text` (overlaps included).
inline std::size_t count_of(const std::string& text, const std::string& part) {
  std::size_t count = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++count;
  return count;
}

// Starts the cluster's server with --http 127.0.0.1:0 and returns its "http://127.0.0.1:PORT",
// read from --http-endpoint-file.
inline std::string start_server_with_http(Cluster& cluster, std::vector<std::string> extra = {}) {
  const auto file = cluster.root() / "http.endpoint";
  extra.insert(extra.end(), {"--http", "127.0.0.1:0", "--http-endpoint-file", file.string()});
  cluster.start_server(extra);
  std::string url = read_file(file);  // written before the endpoint file start_server waited for
  while (!url.empty() && std::isspace(static_cast<unsigned char>(url.back()))) url.pop_back();
  REQUIRE(url.starts_with("http://127.0.0.1:"));
  return url;
}

struct HttpAnswer {
  int status = 0;
  std::string content_type;
  std::string body;
};

// GET url + path; fails the test (REQUIRE) when no answer comes.
inline HttpAnswer http_get(const std::string& url, const std::string& path) {
  httplib::Client client(url);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(10, 0);
  auto result = client.Get(path.c_str());
  REQUIRE_MESSAGE(result, "no answer from " << url << path << ": " << httplib::to_string(result.error()));
  return {result->status, result->get_header_value("Content-Type"), result->body};
}

inline nlohmann::json api_status(const std::string& url) {
  auto answer = http_get(url, "/api/status");
  REQUIRE(answer.status == 200);
  return nlohmann::json::parse(answer.body);
}

// "name{labels}" -> value of every sample in a /metrics answer.
inline std::map<std::string, double> metric_samples(const std::string& url) {
  auto answer = http_get(url, "/metrics");
  REQUIRE(answer.status == 200);
  std::map<std::string, double> samples;
  std::istringstream lines(answer.body);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    samples[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return samples;
}

// Prints "Epoch 1/4" and "Epoch 2/4", waits until `go` exists, then finishes the epochs and
// writes a model.
// Held for at most 60 s, and no longer than the folder of `go` exists: a test that ends without
// releasing it (its temp folder removed first) leaves no process behind.
inline std::string held_training_script(const std::filesystem::path& go) {
  const std::string folder = go.parent_path().string();
  return "echo 'Epoch 1/4'\necho 'Epoch 2/4'\ni=0\nwhile [ ! -f '" + go.string() +
         "' ]; do\n  i=$((i+1)); [ $i -gt 1200 ] && exit 4\n  [ -d '" + folder +
         "' ] || exit 4\n  sleep 0.05\ndone\necho 'Epoch 3/4'\necho 'Epoch 4/4'\n"
         "head -c 2048 /dev/urandom > model.h5\n";
}

// A version whose training is held_training_script(go).
inline VersionSpec held_version(const std::string& name, int target, const std::filesystem::path& go) {
  return VersionSpec{name, target, held_training_script(go), {}};
}

// Written at scope exit, so held training is released even when a check fails first.
class ReleaseOnExit {
 public:
  explicit ReleaseOnExit(std::filesystem::path file) : file_(std::move(file)) {}
  ~ReleaseOnExit() {
    try {
      write_file(file_, "go\n");
    } catch (...) {
    }
  }
  ReleaseOnExit(const ReleaseOnExit&) = delete;
  ReleaseOnExit& operator=(const ReleaseOnExit&) = delete;

 private:
  std::filesystem::path file_;
};

// Whether every client in an /api/status body is working at `epoch` of `total`, and there
// are `count` of them.
inline bool all_working_at(const nlohmann::json& status, std::size_t count, int epoch, int total) {
  if (status["clients"].size() != count) return false;
  for (const auto& client : status["clients"]) {
    if (client["state"] != "working" || client["epoch"] != epoch || client["total_epochs"] != total) {
      return false;
    }
  }
  return true;
}

}  // namespace conductor::test
