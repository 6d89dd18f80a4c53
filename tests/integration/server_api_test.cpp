// conductor::Server's operator API in-process: the embedding program's view of what
// conductorctl does remotely. No clients, so every queued item stays queued.
#include <doctest/doctest.h>
#include <pthread.h>

#include <chrono>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cluster.hpp"
#include "conductor/client.hpp"
#include "conductor/error.hpp"
#include "conductor/server.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using conductor::test::contains;
using conductor::test::deadline_in;
using conductor::test::read_file;
using conductor::test::VersionSpec;
using conductor::test::wait_until;
using json = nlohmann::json;

namespace {

constexpr const char* kTrain = "head -c 64 /dev/urandom > model.h5\n";
constexpr const char* kPredict = "echo PredictedBuffer=$(cat model-latest.h5)\n";
constexpr const char* kRows = "a,b\n1,2\n";

VersionSpec predicting_version(const std::string& name, int target) {
  return VersionSpec{name, target, kTrain, {}, kPredict};
}

conductor::ServerOptions options_for(const fs::path& workdir) {
  conductor::ServerOptions options;
  options.workdir = workdir;
  options.bind = "tcp://127.0.0.1:*";
  options.log_to_stdout = false;
  return options;
}

// Runs `call` and returns the Error it throws; fails the test when it throws nothing.
template <typename Call>
conductor::Error refusal(Call&& call) {
  try {
    call();
  } catch (const conductor::Error& e) {
    return e;
  }
  FAIL("expected a conductor::Error");
  return conductor::Error(conductor::ErrorCode::kArgument, "");
}

std::set<std::string> failed_models(const conductor::EnsembleResult& result) {
  std::set<std::string> ids;
  for (const auto& failure : result.failures) ids.insert(failure.model_id);
  return ids;
}

}  // namespace

TEST_CASE("a prediction is refused with a clear reason while 400 items are queued") {
  conductor::test::TempDir root("conductor-api-limit");
  const fs::path workdir = root / "server";
  conductor::test::write_configuration(workdir, 0.0, {predicting_version("big", 401)});
  conductor::test::store_model(workdir, "big", {{"model.h5", "7"}});
  conductor::Server server(options_for(workdir));
  server.start();
  REQUIRE(wait_until(deadline_in(10s), [&] { return server.status().queued == 400; }));

  auto error = refusal([&] { server.predict(kRows); });
  CHECK(error.code() == conductor::ErrorCode::kArgument);
  CHECK_MESSAGE(contains(error.what(), "400 items are queued (limit 400)"), error.what());
  auto remote = refusal([&] { server.control("predict", {{"rows", kRows}}); });
  CHECK(std::string(remote.what()) == error.what());

  // One below the limit a request is taken, and its one item joins the queue.
  server.set_target("big", 400);
  REQUIRE(wait_until(deadline_in(10s), [&] { return server.status().queued == 399; }));
  const std::string request = server.predict(kRows);
  CHECK_FALSE(server.prediction(request).has_value());
  REQUIRE(wait_until(deadline_in(10s), [&] { return server.status().queued == 400; }));
  CHECK(contains(refusal([&] { server.predict(kRows); }).what(), "400 items are queued"));
}

TEST_CASE(
    "wait_for_prediction returns once the request completes, nullopt before, and refuses an "
    "unknown id") {
  conductor::test::TempDir root("conductor-api-wait");
  const fs::path workdir = root / "server";
  conductor::test::write_configuration(workdir, 0.0, {predicting_version("waited", 0)});
  const std::set<std::string> models = {
      conductor::test::store_model(workdir, "waited", {{"model.h5", "1"}}),
      conductor::test::store_model(workdir, "waited", {{"model.h5", "2"}})};
  auto options = options_for(workdir);
  // No client answers: the request completes at its deadline, every model failed.
  options.prediction_timeout = 3s;
  conductor::Server server(options);
  server.start();
  const std::string request = server.predict(kRows);
  CHECK_FALSE(server.wait_for_prediction(request, 50ms).has_value());
  const auto result = server.wait_for_prediction(request, 60s);
  REQUIRE(result.has_value());
  CHECK(result->request_id == request);
  CHECK(result->values.empty());
  CHECK(failed_models(*result) == models);
  // Complete: answered at once, however short the wait.
  CHECK(server.wait_for_prediction(request, 0ms).has_value());
  auto unknown = refusal([&] { server.wait_for_prediction("no-such-request", 10ms); });
  CHECK(unknown.code() == conductor::ErrorCode::kArgument);
}

TEST_CASE("wait_for_prediction returns when the server stops, not at its timeout") {
  conductor::test::TempDir root("conductor-api-wait-stop");
  const fs::path workdir = root / "server";
  conductor::test::write_configuration(workdir, 0.0, {predicting_version("waited", 0)});
  conductor::test::store_model(workdir, "waited", {{"model.h5", "1"}});
  auto options = options_for(workdir);
  options.prediction_timeout = 10min;  // no client: the request would not end on its own
  conductor::Server server(options);
  server.start();
  const std::string request = server.predict(kRows);
  auto waiting =
      std::async(std::launch::async, [&] { return server.wait_for_prediction(request, 10min); });
  CHECK(waiting.wait_for(200ms) == std::future_status::timeout);  // still running: it waits
  server.stop();
  REQUIRE(waiting.wait_for(60s) == std::future_status::ready);
  CHECK_FALSE(waiting.get().has_value());
}

TEST_CASE("a top-k prediction asks exactly the best k models by the named metric") {
  conductor::test::TempDir root("conductor-api-topk");
  const fs::path workdir = root / "server";
  conductor::test::write_configuration(workdir, 0.0, {predicting_version("ranked", 0)});
  std::map<double, std::string> by_accuracy;  // accuracy -> model id
  for (double accuracy : {0.5, 0.9, 0.7, 0.8}) {
    const double loss = accuracy == 0.7 ? 0.05 : 1 - accuracy;  // 0.7 has the lowest loss
    auto id = conductor::test::store_model(
        workdir, "ranked",
        {{"model.h5", "1"}, {"metrics.json", json{{"accuracy", accuracy}, {"loss", loss}}.dump()}});
    by_accuracy[accuracy] = id;
  }
  conductor::test::store_model(workdir, "ranked", {{"model.h5", "1"}});  // no metrics at all
  auto options = options_for(workdir);
  // No client answers: every asked model fails at the deadline, which names the asked models.
  options.prediction_timeout = 300ms;
  conductor::Server server(options);
  server.start();
  auto asked = [&](const conductor::PredictOptions& predict) {
    const std::string request = server.predict(kRows, predict);
    std::optional<conductor::EnsembleResult> result;
    REQUIRE(wait_until(deadline_in(10s),
                       [&] { return (result = server.prediction(request)).has_value(); }));
    CHECK(result->complete);
    CHECK(result->values.empty());
    CHECK(result->expected == result->failures.size());
    return failed_models(*result);
  };
  using Order = conductor::PredictOptions::Order;
  CHECK(asked({"", 2, "accuracy", Order::kAuto}) ==
        std::set<std::string>{by_accuracy[0.9], by_accuracy[0.8]});
  // "loss" is error-like: lower is better.
  CHECK(asked({"ranked", 1, "loss", Order::kAuto}) == std::set<std::string>{by_accuracy[0.7]});
  CHECK(asked({"", 1, "accuracy", Order::kLowerIsBetter}) ==
        std::set<std::string>{by_accuracy[0.5]});
  // More than there are: every model with the metric, none without.
  CHECK(asked({"", 10, "accuracy", Order::kAuto}).size() == 4);
  CHECK(asked({}).size() == 5);

  CHECK(contains(refusal([&] {
                   server.predict(kRows, {"", 2, "", Order::kAuto});
                 }).what(),
                 "--by"));
  CHECK(contains(refusal([&] {
                   server.predict(kRows, {"", 2, "f1", Order::kAuto});
                 }).what(),
                 "no model of 'ranked' has the metric 'f1'"));
  CHECK(contains(refusal([&] {
                   server.predict(kRows, {"nope", 0, "", Order::kAuto});
                 }).what(),
                 "version 'nope' is not known"));
}

TEST_CASE("operator changes are written at once and survive a restart") {
  conductor::test::TempDir root("conductor-api-persist");
  const fs::path workdir = root / "server";
  conductor::test::write_configuration(workdir, 0.2, {predicting_version("global", 3)});
  conductor::test::write_local_version(workdir, predicting_version("local", 1));
  const fs::path config_file = workdir / "config" / "config.xml";
  const fs::path version_file = workdir / "assets" / "local" / "version.xml";
  {
    conductor::Server server(options_for(workdir));
    server.start();
    server.set_reserve(0.4);
    server.set_target("global", 5);
    server.set_target("local", 2);
    server.select_version("local");
    // Written before the calls returned, not at shutdown.
    const std::string config = read_file(config_file);
    CHECK(contains(config, "<ReserveNodes>0.4</ReserveNodes>"));
    CHECK(contains(config, "<TargetModels>5</TargetModels>"));
    CHECK(contains(config, "<CurrentVersion>"));
    CHECK(contains(read_file(version_file), "<TargetModels>2</TargetModels>"));
    // Taken at once: the new targets are queued for.
    REQUIRE(wait_until(deadline_in(10s), [&] { return server.status().queued == 7; }));
  }
  conductor::Server restarted(options_for(workdir));
  auto status = json::parse(restarted.control("status", {}));
  CHECK(status["reserve_nodes"] == 0.4);
  CHECK(status["current_version"] == "local");
  std::map<std::string, int> targets;
  for (const auto& version : status["versions"]) targets[version["name"]] = version["target"];
  CHECK(targets == std::map<std::string, int>{{"global", 5}, {"local", 2}});
}

TEST_CASE("bad operator values are refused by name and change nothing") {
  conductor::test::TempDir root("conductor-api-refuse");
  const fs::path workdir = root / "server";
  conductor::test::write_configuration(workdir, 0.2, {predicting_version("only", 1)});
  conductor::Server server(options_for(workdir));
  server.start();
  const std::string before = read_file(workdir / "config" / "config.xml");
  CHECK(refusal([&] { server.set_reserve(1.5); }).code() == conductor::ErrorCode::kArgument);
  CHECK(contains(refusal([&] { server.set_target("nope", 1); }).what(),
                 "version 'nope' is not known"));
  CHECK(contains(refusal([&] { server.set_target("only", -1); }).what(), "must be >= 0"));
  CHECK(contains(refusal([&] { server.select_version("nope"); }).what(), "'nope'"));
  CHECK(contains(refusal([&] { server.remove_version("nope"); }).what(), "'nope'"));
  CHECK(contains(refusal([&] {
                   server.control("set-reserve", {{"fraction", "abc"}});
                 }).what(),
                 "'abc' refused: not a number"));
  CHECK(contains(refusal([&] {
                   server.control("set-target", {{"version", "only"}, {"target", "2.5"}});
                 }).what(),
                 "whole number"));
  CHECK(contains(refusal([&] {
                   server.control("set-target", {{"version", "only"}});
                 }).what(),
                 "argument 'target' is required"));
  CHECK(contains(refusal([&] { server.control("reboot", {}); }).what(),
                 "command 'reboot' refused: unknown"));
  CHECK(contains(refusal([&] { server.predict(kRows); }).what(), "has no stored models"));
  CHECK(read_file(workdir / "config" / "config.xml") == before);
}

TEST_CASE("a removed version stops training but keeps its stored models on disk") {
  conductor::test::TempDir root("conductor-api-remove");
  const fs::path workdir = root / "server";
  conductor::test::write_configuration(workdir, 0.2, {predicting_version("global", 4)});
  conductor::test::write_local_version(workdir, predicting_version("local", 4));
  const auto global_model = conductor::test::store_model(workdir, "global", {{"model.h5", "1"}});
  const auto local_model = conductor::test::store_model(workdir, "local", {{"model.h5", "2"}});
  {
    conductor::Server server(options_for(workdir));
    server.start();
    REQUIRE(wait_until(deadline_in(10s), [&] { return server.status().queued == 6; }));
    server.select_version("local");
    server.remove_version("local");
    // Regression: removing the current local version left it as <CurrentVersion> in config.xml.
    CHECK_FALSE(contains(read_file(workdir / "config" / "config.xml"), "<CurrentVersion>"));
    server.remove_version("global");
    REQUIRE(wait_until(deadline_in(10s), [&] {
      auto status = server.status();
      return status.queued == 0 && status.versions.empty();
    }));
    auto status = json::parse(server.control("status", {}));
    CHECK(status["versions"].empty());
    CHECK(status["current_version"] == "");
  }
  CHECK(fs::exists(workdir / "assets" / "global" / "models" / global_model / "model.h5"));
  CHECK(fs::exists(workdir / "assets" / "local" / "models" / local_model / "model.h5"));
  conductor::Server restarted(options_for(workdir));
  restarted.start();
  CHECK_FALSE(wait_until(deadline_in(1s), [&] { return restarted.status().queued > 0; }));
  CHECK(restarted.status().versions.empty());
}

TEST_CASE("next_stored_model reports each accepted model with its meta.xml, read when taken") {
  conductor::test::TempDir root("conductor-api-stored");
  const fs::path workdir = root / "server";
  conductor::test::write_configuration(workdir, 0, {VersionSpec{"v", 3, kTrain, {}}});
  conductor::Server server(options_for(workdir));
  server.start();
  conductor::ClientOptions client_options;
  client_options.server = server.endpoint();
  client_options.workdir = root / "client";
  client_options.host_name = "worker-a";
  client_options.log_to_stdout = false;
  conductor::Client client(client_options);
  client.start();
  const auto first = server.next_stored_model(60s);
  REQUIRE(first.has_value());
  CHECK(first->version == "v");
  CHECK(first->folder == fs::absolute(workdir) / "assets" / "v" / "models" / first->id);
  CHECK(first->meta.item_id == first->id);
  CHECK(first->meta.node_name == "worker-a");
  CHECK_FALSE(first->meta.timestamp.empty());
  CHECK(first->meta_error.empty());
  REQUIRE(wait_until(deadline_in(60s), [&] {
    const auto status = server.status();
    return !status.versions.empty() && status.versions.front().stored_models == 3;
  }));
  client.stop();
  // Reported in the order stored; the folders of the other two are changed before they are
  // taken: each still reported once, with an empty meta and the reason.
  const fs::path models = workdir / "assets" / "v" / "models";
  std::vector<std::string> later;
  for (const auto& entry : fs::directory_iterator(models)) {
    if (entry.path().filename() != first->id) later.push_back(entry.path().filename().string());
  }
  REQUIRE(later.size() == 2);
  for (const auto& id : later) conductor::test::write_file(models / id / "meta.xml", "<ModelMeta>");
  fs::remove_all(models / later[1]);
  for (int i = 0; i < 2; ++i) {
    const auto next = server.next_stored_model(10s);
    REQUIRE(next.has_value());
    CAPTURE(next->meta_error);
    CHECK(next->meta.item_id.empty());
    const std::string file = (models / next->id / "meta.xml").string();
    CHECK(next->meta_error.starts_with(
        file + (next->id == later[0] ? ":1: malformed XML" : ": cannot read")));
  }
  CHECK_FALSE(server.next_stored_model(100ms).has_value());
}

TEST_CASE(
    "the library's threads carry names that top -H, ps -L and perf show; a caller's thread "
    "handed to run() keeps its own") {
  conductor::test::TempDir root("conductor-api-names");
  const fs::path workdir = root / "server";
  // The command lists the names of its parent's threads while the job thread waits for it.
  conductor::test::write_configuration(
      workdir, 0, {VersionSpec{"v", 1, "cat /proc/$PPID/task/*/comm > model.h5\n", {}}});
  conductor::Server server(options_for(workdir));
  conductor::ClientOptions client_options;
  client_options.server = server.endpoint();
  client_options.workdir = root / "client";
  client_options.log_to_stdout = false;
  conductor::Client client(client_options);
  // One of the two runs on a thread of the caller's, named as a pipeline would name it.
  bool server_on_caller = false;
  SUBCASE("the server on start()'s thread, the client on the caller's") {}
  SUBCASE("the server on the caller's thread, the client on start()'s") { server_on_caller = true; }
  std::exception_ptr caller_error;
  std::thread caller([&] {
    ::pthread_setname_np(::pthread_self(), "pipeline");
    try {
      if (server_on_caller) {
        server.run();
      } else {
        client.run();
      }
    } catch (...) {
      caller_error = std::current_exception();
    }
  });
  // Whatever throws below, the caller's thread is stopped and joined before it is destroyed
  // (stop() before run() makes run() return at once).
  struct StopAndJoin {
    conductor::Server& server;
    conductor::Client& client;
    std::thread& caller;
    ~StopAndJoin() {
      client.stop();
      server.stop();
      if (caller.joinable()) caller.join();
    }
  };
  std::optional<conductor::StoredModel> stored;
  {
    const StopAndJoin guard{server, client, caller};
    if (server_on_caller) {
      client.start();
    } else {
      server.start();
    }
    stored = server.next_stored_model(60s);
  }
  if (caller_error) std::rethrow_exception(caller_error);
  REQUIRE(stored.has_value());
  std::multiset<std::string> names;
  std::istringstream lines(read_file(stored->folder / "model.h5"));
  for (std::string line; std::getline(lines, line);) names.insert(line);
  CAPTURE(read_file(stored->folder / "model.h5"));
  // Server and client share this process: the server's network thread and background worker,
  // the client's network thread, and the job thread that started the command.
  CHECK(names.count("pipeline") == 1);
  CHECK(names.count("cdr-server") == (server_on_caller ? 0 : 1));
  CHECK(names.count("cdr-client") == (server_on_caller ? 1 : 0));
  CHECK(names.count("cdr-worker") == 1);
  CHECK(names.count("cdr-job") == 1);
}

TEST_CASE("add_version copies a folder as a local version and refuses a taken name") {
  conductor::test::TempDir root("conductor-api-add");
  const fs::path workdir = root / "server";
  conductor::test::write_configuration(workdir, 0.2, {predicting_version("first", 0)});
  const fs::path upload = root / "upload" / "second";
  conductor::test::write_version_folder(upload, predicting_version("ignored-name", 2));
  conductor::test::write_file(upload / "models" / "old" / "model.h5", "not payload");
  conductor::Server server(options_for(workdir));
  server.start();
  server.add_version(upload);
  CHECK(fs::exists(workdir / "assets" / "second" / "version.xml"));
  CHECK(fs::exists(workdir / "assets" / "second" / "train.sh"));
  CHECK_FALSE(fs::exists(workdir / "assets" / "second" / "models" / "old"));
  REQUIRE(wait_until(deadline_in(10s), [&] { return server.status().queued == 2; }));
  auto status = json::parse(server.control("status", {}));
  bool listed = false;
  for (const auto& version : status["versions"]) {
    if (version["name"] == "second") listed = version["local"] == true && version["target"] == 2;
  }
  CHECK(listed);

  CHECK(contains(refusal([&] { server.add_version(upload); }).what(), "version 'second' refused"));
  CHECK(contains(refusal([&] { server.add_version(upload, "first"); }).what(),
                 "version 'first' refused"));
  conductor::test::write_file(root / "empty" / "readme.txt", "no version here");
  CHECK(contains(refusal([&] { server.add_version(root / "empty"); }).what(),
                 "holds no version.xml"));
  CHECK(contains(refusal([&] { server.add_version(upload, "../escape"); }).what(),
                 "not a plain folder name"));
}

TEST_CASE("the models command lists each stored model with its metrics") {
  conductor::test::TempDir root("conductor-api-models");
  const fs::path workdir = root / "server";
  conductor::test::write_configuration(workdir, 0.2, {predicting_version("v", 0)});
  const auto id = conductor::test::store_model(
      workdir, "v",
      {{"model.h5", "1"}, {"metrics.json", R"({"accuracy": 0.75, "val": {"loss": 0.3}})"}});
  conductor::Server server(options_for(workdir));
  auto body = json::parse(server.control("models", {{"version", "v"}}));
  CHECK(body["version"] == "v");
  REQUIRE(body["models"].size() == 1);
  const auto& model = body["models"][0];
  CHECK(model["id"] == id);
  CHECK(model["epochs"] == 2);
  CHECK(model["duration"] == 1.5);
  CHECK(model["node"] == "seeded");
  CHECK(model["metrics"]["accuracy"] == 0.75);
  CHECK(model["metrics"]["val.loss"] == 0.3);
  CHECK(contains(refusal([&] {
                   server.control("models", {{"version", "w"}});
                 }).what(),
                 "'w' is not known"));
}
