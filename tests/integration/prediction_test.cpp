// Ensemble predictions end to end: conductorctl predict against the real server and clients on
// 127.0.0.1, with models stored before the server starts so each value is known to the test.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "cluster.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using conductor::test::Cluster;
using conductor::test::deadline_in;
using conductor::test::FlagOnExit;
using conductor::test::Handout;
using conductor::test::parse_json;
using conductor::test::VersionSpec;
using conductor::test::wait_until;
using json = nlohmann::json;

namespace {

constexpr const char* kRows = "feature,value\nmarker,42\n";

// Checks that the request's rows and the model arrived, then answers with the number the
// model file holds. A model holding "fail" makes the command fail; "mute" prints no value.
constexpr const char* kPredictScript =
    R"(test -f predictiondata.csv || { echo "no predictiondata.csv" >&2; exit 7; }
grep -q '^marker,42$' predictiondata.csv || { echo "unexpected rows" >&2; exit 8; }
test -f model-latest.h5 || { echo "no model-latest.h5" >&2; exit 9; }
value=$(cat model-latest.h5)
[ "$value" = fail ] && { echo "this model cannot predict" >&2; exit 5; }
[ "$value" = mute ] && { echo "nothing to say"; exit 0; }
echo "PredictedBuffer=$value"
)";

// Holds its item until `flag` exists (bounded, so that an orphan never lingers).
std::string blocking_train_script(const fs::path& flag) {
  return "echo \"Epoch 1/4\"\ni=0\nwhile [ ! -e '" + flag.string() +
         "' ]; do\n  i=$((i+1)); [ $i -gt 900 ] && exit 4\n  sleep 0.1\ndone\n"
         "echo 100 > model.h5\n";
}


std::map<std::string, double> values_by_model(const json& result) {
  std::map<std::string, double> values;
  for (const auto& value : result.at("values")) values[value.at("model")] = value.at("value");
  return values;
}

bool has_line(const std::string& text, const std::string& line) {
  for (const auto& each : conductor::test::split_lines(text)) {
    if (each == line) return true;
  }
  return false;
}

}  // namespace

TEST_CASE(
    "a prediction over 5 models is answered with every value by the reserve client alone while "
    "training runs on the others") {
  Cluster cluster("conductor-predict-reserve");
  const fs::path flag = cluster.root() / "release";
  FlagOnExit release(flag);
  // 5 models stored, 6 more wanted: 3 train on the workers while 3 wait in the queue.
  conductor::test::write_configuration(
      cluster.server_dir(), 0.25,
      {VersionSpec{"v", 11, blocking_train_script(flag), {}, kPredictScript}});
  std::map<std::string, double> expected;
  for (double value : {4.0, 1.0, 10.0, 3.0, 2.0}) {
    expected[conductor::test::store_model(
        cluster.server_dir(), "v", {{"model.h5", std::to_string(static_cast<int>(value))}})] =
        value;
  }
  cluster.start_server();
  // Connection order makes the reserve: "reserve" is in before the others start.
  cluster.start_client("reserve");
  REQUIRE_MESSAGE(wait_until(deadline_in(30s),
                             [&] {
                               return cluster.server_log().find("Client connected: reserve") !=
                                      std::string::npos;
                             }),
                  cluster.diagnostics());
  for (const std::string name : {"w1", "w2", "w3"}) cluster.start_client(name);
  auto training_handouts = [&] {
    std::set<std::string> hosts;
    for (const auto& handout : cluster.handouts()) hosts.insert(handout.host);
    return hosts;
  };
  REQUIRE_MESSAGE(
      wait_until(deadline_in(30s),
                 [&] {
                   return training_handouts() == std::set<std::string>{"w1", "w2", "w3"};
                 }),
      cluster.diagnostics());
  const auto before = cluster.handouts();

  json status = parse_json(cluster.ctl({"status", "--json"}));
  REQUIRE(status["clients"].size() == 4);
  for (const auto& client : status["clients"]) {
    CHECK(client["reserved"] == (client["host"] == "reserve"));
  }
  CHECK(status["active"].size() == 3);
  CHECK(status["queued"].size() == 3);

  const fs::path rows = cluster.root() / "rows.csv";
  conductor::test::write_file(rows, kRows);
  const json result = parse_json(cluster.ctl({"predict", "--json", "--wait", "60", rows.string()}));
  CHECK(result["complete"] == true);
  CHECK(result["version"] == "v");
  CHECK(result["expected"] == 5);
  CHECK(result["failures"].empty());
  CHECK(values_by_model(result) == expected);
  CHECK(result["mean"].get<double>() == doctest::Approx(4.0));
  CHECK(result["median"].get<double>() == doctest::Approx(3.0));
  CHECK(result["min"].get<double>() == doctest::Approx(1.0));
  CHECK(result["max"].get<double>() == doctest::Approx(10.0));

  // Every hand-out since the request is a prediction item, and only the reserve got any.
  const auto after = cluster.handouts();
  REQUIRE(after.size() >= before.size());
  std::vector<Handout> predictions(after.begin() + static_cast<std::ptrdiff_t>(before.size()),
                                   after.end());
  CHECK(predictions.size() == 5);
  for (const auto& handout : predictions) {
    CHECK(handout.host == "reserve");
    CHECK(handout.version == "v");
  }
  for (const auto& handout : before) CHECK(handout.host != "reserve");
  // Training went on meanwhile, untouched.
  status = parse_json(cluster.ctl({"status", "--json"}));
  CHECK(status["active"].size() == 3);
  CHECK(status["queued"].size() == 3);
  for (const auto& item : status["active"]) CHECK(item["type"] == "training");
  CHECK(status["pending_predictions"] == 0);
}

TEST_CASE("a failing prediction command yields a completed result that lists the failure") {
  Cluster cluster("conductor-predict-failure");
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"v", 0, "exit 1\n", {}, kPredictScript}});
  std::map<std::string, std::string> ids;  // model content -> id
  for (const std::string content : {"1", "fail", "mute", "5"}) {
    ids[content] = conductor::test::store_model(cluster.server_dir(), "v", {{"model.h5", content}});
  }
  cluster.start_server();
  cluster.start_client("solo");
  const fs::path rows = cluster.root() / "rows.csv";
  conductor::test::write_file(rows, kRows);

  const auto run = cluster.ctl({"predict", "--wait", "60", rows.string()});
  INFO("conductorctl stdout:\n" << run.out << "\nstderr:\n" << run.err << cluster.diagnostics());
  REQUIRE(run.status.exited_with(0));
  // The readable form: one row per model, the failures with their reasons, the summary.
  CHECK(has_line(run.out, ids["1"] + "  1"));
  CHECK(has_line(run.out, ids["5"] + "  5"));
  CHECK(run.out.find("Failures: 2") != std::string::npos);
  CHECK(run.out.find(ids["fail"] + "  ") != std::string::npos);
  CHECK(run.out.find(ids["mute"] + "  no value matching") != std::string::npos);
  CHECK(run.out.find("2 value(s) of 4 model(s): mean 3, median 3, stddev 2.82843, min 1, max 5") !=
        std::string::npos);

  // The same prediction as JSON.
  const json result = parse_json(cluster.ctl({"predict", "--json", "--wait", "60", rows.string()}));
  CHECK(result["complete"] == true);
  CHECK(result["expected"] == 4);
  CHECK(values_by_model(result) == std::map<std::string, double>{{ids["1"], 1}, {ids["5"], 5}});
  std::map<std::string, std::string> reasons;
  for (const auto& failure : result["failures"]) reasons[failure["model"]] = failure["reason"];
  REQUIRE(reasons.size() == 2);
  CHECK(reasons[ids["fail"]].find("exited with status 5") != std::string::npos);
  CHECK(reasons[ids["mute"]].find("no value matching") != std::string::npos);
  CHECK(result["mean"] == 3.0);
  CHECK(result["median"] == 3.0);
  CHECK(cluster.model_ids("v").size() == 4);  // prediction outputs never become models
}

TEST_CASE("a version's PredictionOutput file is where the value is read, not the console") {
  Cluster cluster("conductor-predict-output");
  // The console says something else, so only the file can give the right values; a model
  // holding "none" writes no file, which is a failure even though the console has a number.
  const std::string predict =
      "echo 'PredictedBuffer=999'\n"
      "[ \"$(cat model-latest.h5)\" = none ] && exit 0\n"
      "mkdir -p out && echo \"answer: $(cat model-latest.h5)\" > out/answer.txt\n";
  VersionSpec spec{"v", 0, "exit 1\n", {}, predict};
  spec.prediction_output = "out/answer.txt";
  conductor::test::write_configuration(cluster.server_dir(), 0.0, {spec});
  std::map<std::string, std::string> ids;  // model content -> id
  for (const std::string content : {"7", "11", "none"}) {
    ids[content] = conductor::test::store_model(cluster.server_dir(), "v", {{"model.h5", content}});
  }
  cluster.start_server();
  cluster.start_client("solo");
  const fs::path rows = cluster.root() / "rows.csv";
  conductor::test::write_file(rows, kRows);
  const auto run = cluster.ctl({"predict", "--json", "--wait", "60", rows.string()});
  INFO("conductorctl stdout:\n" << run.out << "\nstderr:\n" << run.err << cluster.diagnostics());
  REQUIRE(run.status.exited_with(0));
  const json result = parse_json(run);
  CHECK(values_by_model(result) == std::map<std::string, double>{{ids["7"], 7}, {ids["11"], 11}});
  REQUIRE(result["failures"].size() == 1);
  CHECK(result["failures"][0]["model"] == ids["none"]);
  // Answers are read from the archives, never unpacked on the server.
  CHECK(conductor::test::list_names(cluster.server_dir() / "spool" / "staging").empty());
}

TEST_CASE("predict --top 2 --by accuracy asks exactly the two most accurate models") {
  Cluster cluster("conductor-predict-topk");
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"v", 0, "exit 1\n", {}, kPredictScript}});
  std::map<double, std::string> by_accuracy;
  for (double accuracy : {0.6, 0.9, 0.8, 0.7}) {
    by_accuracy[accuracy] =
        conductor::test::store_model(cluster.server_dir(), "v",
                                     {{"model.h5", std::to_string(static_cast<int>(accuracy * 10))},
                                      {"metrics.json", json{{"accuracy", accuracy}}.dump()}});
  }
  cluster.start_server();
  cluster.start_client("solo");
  // The rows come from stdin this time.
  const fs::path rows = cluster.root() / "rows.csv";
  conductor::test::write_file(rows, kRows);
  const json result =
      parse_json(cluster.ctl({"predict", "--top", "2", "--by", "accuracy", "--json", "-"}, rows));
  CHECK(result["complete"] == true);
  CHECK(result["expected"] == 2);
  CHECK(values_by_model(result) ==
        std::map<std::string, double>{{by_accuracy[0.9], 9}, {by_accuracy[0.8], 8}});
  CHECK(result["mean"] == 8.5);

  const auto refused = cluster.ctl({"predict", "--top", "2", "--by", "f1", rows.string()});
  CHECK(refused.status.exited_with(3));
  CHECK(refused.err.find("no model of 'v' has the metric 'f1'") != std::string::npos);
}

TEST_CASE(
    "a prediction's inputs travel in memory when small and through files when not: both answered") {
  Cluster cluster("conductor-predict-sizes");
  conductor::test::write_configuration(cluster.server_dir(), 1.0,
                                       {VersionSpec{"v", 0, "exit 1\n", {}, kPredictScript}});
  std::map<std::string, double> expected;
  expected[conductor::test::store_model(cluster.server_dir(), "v", {{"model.h5", "3"}})] = 3.0;
  // 2 MiB of weights beside it: its inputs archive is beyond what is held in memory.
  expected[conductor::test::store_model(
      cluster.server_dir(), "v",
      {{"model.h5", "7"}, {"weights.bin", conductor::test::pseudo_random(2u << 20)}})] = 7.0;
  cluster.start_server();
  cluster.start_client("reserve");
  const fs::path rows = cluster.root() / "rows.csv";
  conductor::test::write_file(rows, kRows);
  const json result = parse_json(cluster.ctl({"predict", "--json", "--wait", "60", rows.string()}));
  CHECK(result["complete"] == true);
  CHECK(result["failures"].empty());
  CHECK(values_by_model(result) == expected);
  // In the client's cache: the version's package and the large inputs; the small ones never
  // touched the disk there.
  std::size_t cached = 0;
  for (const auto& entry :
       fs::directory_iterator(cluster.root() / "clients" / "reserve" / "cache")) {
    cached += entry.path().extension() == ".tar" ? 1 : 0;
  }
  CHECK(cached == 2);
  CHECK(cluster.stop_all()->exited_with(0));
}

TEST_CASE(
    "a large model's files reach a client once: the next request over it moves only its rows") {
  Cluster cluster("conductor-predict-large");
  // The model's first line holds its number, 2 MiB of weights follow: beyond the 1 MiB the
  // server holds in memory, so each model goes as an archive of its own. The answer adds the
  // number of rows, so each request's rows must reach the job.
  const std::string predict =
      "n=$(head -n 1 model-latest.h5)\nrows=$(wc -l < predictiondata.csv)\n"
      "echo \"PredictedBuffer=$((n + rows))\"\n";
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"v", 0, "exit 1\n", {}, predict}});
  std::map<std::string, int> numbers;  // model id -> number
  for (int number : {10, 20}) {
    const std::string weights = conductor::test::pseudo_random(2 << 20);
    numbers[conductor::test::store_model(cluster.server_dir(), "v",
                                         {{"model.h5", std::to_string(number) + "\n" + weights}})] =
        number;
  }
  cluster.start_server();
  cluster.start_client("solo");
  const fs::path cache = cluster.root() / "clients" / "solo" / "cache";
  // The archives in the client's cache of at least `size` bytes.
  auto cached_at_least = [&](std::uintmax_t size) {
    std::set<std::string> names;
    for (const auto& entry : fs::directory_iterator(cache)) {
      if (entry.path().extension() == ".tar" && entry.file_size() >= size) {
        names.insert(entry.path().filename().string());
      }
    }
    return names;
  };
  auto predict_rows = [&](const std::string& rows, int lines) {
    const fs::path file = cluster.root() / ("rows-" + std::to_string(lines) + ".csv");
    conductor::test::write_file(file, rows);
    const auto run = cluster.ctl({"predict", "--json", "--wait", "60", file.string()});
    INFO("conductorctl stdout:\n" << run.out << "\nstderr:\n" << run.err << cluster.diagnostics());
    REQUIRE(run.status.exited_with(0));
    std::map<std::string, double> want;
    for (const auto& [id, number] : numbers) want[id] = number + lines;
    CHECK(values_by_model(parse_json(run)) == want);
  };

  predict_rows("a,b\n1,2\n", 2);
  const std::set<std::string> packs = cached_at_least(2 << 20);
  CHECK(packs.size() == 2);  // one archive per model, kept
  // The two packs and the trash folder.
  CHECK(conductor::test::list_names(cluster.server_dir() / "spool" / "model-packs").size() == 3);
  // A download writes a new file; the cache only touches a file it reuses.
  auto inode = [&](const std::string& name) {
    struct stat info {};
    REQUIRE(::stat((cache / name).c_str(), &info) == 0);
    return info.st_ino;
  };
  std::map<std::string, ino_t> written;
  for (const auto& name : packs) written[name] = inode(name);

  const auto server_packs =
      conductor::test::list_names(cluster.server_dir() / "spool" / "model-packs");
  predict_rows("a,b\n1,2\n3,4\n5,6\n", 4);
  CHECK(cached_at_least(2 << 20) == packs);
  // Not packed again on the server either (a new pack would have a new name).
  CHECK(conductor::test::list_names(cluster.server_dir() / "spool" / "model-packs") ==
        server_packs);
  for (const auto& [name, number] : written) {
    INFO(name);
    CHECK(inode(name) == number);  // not fetched again
  }
}
