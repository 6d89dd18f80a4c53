// The digits ensemble, embedded in a C++ program: the same run as examples/embed_python.py.
// Starts a server on 127.0.0.1 and local clients in this process, trains the version
// examples/digits-ensemble, prints each model's validation accuracy as it arrives, then asks
// the ensemble about held-out images (one prediction request each) and compares its majority
// vote with the best and the median single model.
//
//   embed_cpp VERSION_DIR HELD_OUT_CSV [MODELS [CLIENTS [WORKDIR]]]
//
// HELD_OUT_CSV holds "label,pixel0,...,pixel63" lines: digits_split.py --rows N writes them.
// WORKDIR must be empty or absent; by default a temporary folder is used and removed.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <conductor/client.hpp>
#include <conductor/error.hpp>
#include <conductor/server.hpp>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr const char* kVersion = "digits-ensemble";
constexpr auto kTimeout = 600s;

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_interrupt(int) { g_interrupted = 1; }

struct HeldOut {
  int label;
  std::string pixels;  // one CSV line without the label
};

std::vector<HeldOut> read_held_out(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot read " + file.string());
  std::vector<HeldOut> rows;
  for (std::string line; std::getline(in, line);) {
    auto comma = line.find(',');
    if (comma == std::string::npos) continue;
    rows.push_back({std::stoi(line.substr(0, comma)), line.substr(comma + 1) + "\n"});
  }
  if (rows.empty()) throw std::runtime_error(file.string() + " holds no label,pixels lines");
  return rows;
}

void check_interrupt() {
  if (g_interrupted) throw std::runtime_error("interrupted");
}

// The most frequent class; a tie goes to the smaller class.
int majority(const std::vector<int>& votes) {
  std::map<int, int> counts;
  for (int vote : votes) ++counts[vote];
  return std::max_element(counts.begin(), counts.end(),
                          [](const auto& a, const auto& b) { return a.second < b.second; })
      ->first;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  std::size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

int run(const fs::path& version_dir, const std::vector<HeldOut>& held_out, int models, int clients,
        const fs::path& workdir) {
  conductor::ServerOptions server_options;
  server_options.workdir = workdir / "server";
  server_options.bind = "tcp://127.0.0.1:*";  // any free port
  server_options.log_to_stdout = false;
  conductor::Server server(server_options);
  server.set_reserve(0);  // every client trains; predictions go to whichever is idle
  server.add_version(version_dir, kVersion);
  server.set_target(kVersion, models);
  server.start();

  std::vector<std::unique_ptr<conductor::Client>> workers;  // destroyed before the server
  for (int i = 1; i <= clients; ++i) {
    conductor::ClientOptions options = conductor::client_options_from_environment();
    options.server = server.endpoint();
    options.workdir = workdir / "clients" / std::to_string(i);
    options.host_name = "local-" + std::to_string(i);
    options.log_to_stdout = false;
    workers.push_back(std::make_unique<conductor::Client>(options));
    workers.back()->start();
  }
  std::cout << "Training " << models << " models of " << kVersion << " with " << clients
            << " local clients (server " << server.endpoint() << ")" << std::endl;

  std::map<std::string, double> accuracy;  // model id -> validation accuracy
  auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (static_cast<int>(accuracy.size()) < models) {
    check_interrupt();
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("models did not arrive in time");
    auto model = server.next_stored_model(100ms);
    if (!model) continue;
    double value = 0;
    for (const auto& [name, metric] : model->meta.metrics) {
      if (name == "accuracy") value = metric;
    }
    accuracy[model->id] = value;
    std::printf("  model %zu/%d  %s  accuracy %.4f  (%s, %.1f s)\n", accuracy.size(), models,
                model->id.c_str(), value, model->meta.node_name.c_str(),
                model->meta.duration_seconds);
    std::fflush(stdout);
  }

  std::cout << "\nPredicting " << held_out.size() << " held-out images, one request each ..."
            << std::endl;
  conductor::PredictOptions predict_options;
  predict_options.version = kVersion;
  // A request queues one item per model, and the server refuses requests once
  // kPredictionQueueLimit items are queued: keep at most half that many in flight.
  const std::size_t window =
      std::max<std::size_t>(1, conductor::kPredictionQueueLimit / models / 2);
  std::vector<std::string> requests;
  std::map<std::string, int> correct;
  int ensemble_correct = 0;
  for (std::size_t i = 0; i < held_out.size(); ++i) {
    while (requests.size() < held_out.size() && requests.size() < i + window) {
      requests.push_back(server.predict(held_out[requests.size()].pixels, predict_options));
    }
    std::optional<conductor::EnsembleResult> result;
    while (!(result = server.wait_for_prediction(requests[i], 100ms))) {
      check_interrupt();
      if (std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error("predictions did not complete in time");
    }
    std::vector<int> votes;
    for (const auto& value : result->values) {
      int predicted = static_cast<int>(value.value + 0.5);
      votes.push_back(predicted);
      correct[value.model_id] += predicted == held_out[i].label;
    }
    for (const auto& failure : result->failures) {
      std::cout << "  warning: model " << failure.model_id << " gave no answer: " << failure.reason
                << "\n";
    }
    ensemble_correct += !votes.empty() && majority(votes) == held_out[i].label;
  }

  double rows = static_cast<double>(held_out.size());
  std::vector<double> singles;
  std::string best;
  for (const auto& [id, validation] : accuracy) {
    double held = correct[id] / rows;
    singles.push_back(held);
    if (best.empty() || held > correct[best] / rows) best = id;
    std::printf("  %s  validation %.4f  held-out %.4f\n", id.c_str(), validation, held);
  }
  std::printf("\nEnsemble result on %zu held-out images (%d models, majority vote):\n",
              held_out.size(), models);
  std::printf("  ensemble (majority vote)  accuracy %.4f\n", ensemble_correct / rows);
  std::printf("  best single model         accuracy %.4f  (%s)\n", correct[best] / rows,
              best.c_str());
  std::printf("  median single model       accuracy %.4f\n", median(singles));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 6) {
    std::cerr << "usage: embed_cpp VERSION_DIR HELD_OUT_CSV [MODELS [CLIENTS [WORKDIR]]]\n";
    return 2;
  }
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  bool temporary = argc < 6;
  fs::path workdir;
  try {
    int models = argc > 3 ? std::stoi(argv[3]) : 8;
    int clients = argc > 4 ? std::stoi(argv[4]) : 3;
    if (models < 1 || clients < 1)
      throw std::invalid_argument("MODELS and CLIENTS must be at least 1");
    if (temporary) {
      workdir = fs::temp_directory_path() /
                ("conductor-embed-cpp-" + std::to_string(std::random_device{}()));
    } else {
      workdir = argv[5];
      if (fs::exists(workdir) && !fs::is_empty(workdir))
        throw std::invalid_argument(workdir.string() + " is not empty");
    }
    int status = run(fs::absolute(argv[1]), read_held_out(argv[2]), models, clients, workdir);
    if (temporary) fs::remove_all(workdir);
    return status;
  } catch (const std::invalid_argument& e) {
    std::cerr << "embed_cpp: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {  // conductor::Error included: its message says what and why
    std::cerr << "embed_cpp: " << e.what() << "\n";
    if (temporary && !workdir.empty()) fs::remove_all(workdir);
    return 1;
  }
}
