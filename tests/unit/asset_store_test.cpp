#include "conductor/asset_store.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "conductor/error.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace conductor;
using conductor::test::count_entries;
using conductor::test::read_file;
using conductor::test::TempDir;
using conductor::test::test_data_dir;
using conductor::test::write_file;

namespace {

Version version_named(const std::string& name) {
  Version version;
  version.name = name;
  version.target_models = 2;
  return version;
}

ModelMeta meta_for(const std::string& id) {
  ModelMeta meta;
  meta.item_id = id;
  meta.duration_seconds = 12.5;
  meta.epochs = 3;
  meta.last_epoch_seconds = 4.25;
  meta.node_name = "node-7";
  meta.os = "ubuntu";
  meta.processing_unit = "gpu";
  meta.container_version = "dev";
  meta.attempt = 2;
  return meta;
}

// A result as the transport would leave it: extracted into a folder in the spool.
fs::path stage(const AssetStore& store, const std::string& name,
               std::initializer_list<const char*> files) {
  const fs::path folder = store.spool_dir() / name;
  fs::create_directories(folder);
  for (const char* file : files) write_file(folder / file, std::string("contents of ") + file);
  return folder;
}

}  // namespace

TEST_CASE("the asset store creates its folders under the root") {
  TempDir dir;
  const AssetStore store(dir.path() / "work");
  CHECK(store.root() == dir.path() / "work");
  CHECK(fs::is_directory(dir.path() / "work" / "config"));
  CHECK(fs::is_directory(dir.path() / "work" / "assets"));
  CHECK(fs::is_directory(store.spool_dir()));
  CHECK(store.config_file() == dir.path() / "work" / "config" / "config.xml");
  CHECK(store.log_file() == dir.path() / "work" / "config" / "log.txt");
  CHECK(store.version_dir("v1") == dir.path() / "work" / "assets" / "v1");
}

TEST_CASE("a missing config.xml is written with the defaults") {
  TempDir dir;
  const AssetStore store(dir.path());
  const Configuration config = store.load_or_create_configuration();
  CHECK(config.reserve_nodes == 0.2);
  CHECK(config.versions.empty());
  REQUIRE(fs::exists(store.config_file()));
  CHECK(load_configuration(store.config_file()) == config);
  CHECK(store.load_or_create_configuration() == config);
}

TEST_CASE("a broken config.xml throws and is left exactly as it was") {
  TempDir dir;
  const AssetStore store(dir.path());
  const std::string broken = "<?xml version=\"1.0\"?>\n<ConductorConfiguration>\n  <Versions>\n";
  write_file(store.config_file(), broken);
  CHECK_THROWS_AS(store.load_or_create_configuration(), ConfigError);
  CHECK(read_file(store.config_file()) == broken);
  CHECK(count_entries(store.config_file().parent_path()) == 1);
}

TEST_CASE("a local version takes its folder name and a global one of that name gives way") {
  TempDir dir;
  const AssetStore store(dir.path());
  fs::copy_file(test_data_dir() / "config.xml", store.config_file());
  const Configuration config = store.load_or_create_configuration();
  write_file(store.version_dir("rnn-c2k-v1") / "version.xml",
             read_file(test_data_dir() / "version.xml"));
  write_file(store.version_dir("b-local") / "version.xml",
             read_file(test_data_dir() / "version.xml"));
  write_file(store.version_dir("a-payload-only") / "train.py", "print()\n");
  write_file(store.version_dir(".hidden") / "version.xml",
             read_file(test_data_dir() / "version.xml"));

  const std::vector<VersionEntry> entries = store.load_versions(config);
  REQUIRE(entries.size() == 3);
  CHECK(entries[0].version.name == "rnn-c2k-v1");
  CHECK(entries[0].is_local);
  CHECK(entries[0].version.target_models == 3);
  CHECK(entries[0].version.training_commands.at(0).arguments == "-c \"sh train.sh\"");
  CHECK(entries[0].folder == store.version_dir("rnn-c2k-v1"));
  CHECK(entries[1].version == config.versions[1]);
  CHECK_FALSE(entries[1].is_local);
  CHECK(entries[1].folder == store.version_dir("rnn-generic-v2"));
  CHECK(entries[2].version.name == "b-local");
  CHECK(entries[2].is_local);
}

TEST_CASE("a broken version.xml is a ConfigError naming the file and line") {
  TempDir dir;
  const AssetStore store(dir.path());
  const fs::path file = store.version_dir("local") / "version.xml";
  write_file(
      file, "<?xml version=\"1.0\"?>\n<Version>\n  <DatasetType>Audio</DatasetType>\n</Version>\n");
  try {
    store.load_versions(Configuration{});
    FAIL("a broken version.xml loaded");
  } catch (const ConfigError& error) {
    CHECK(std::string(error.what()).rfind(file.string() + ":3: ", 0) == 0);
  }
}

TEST_CASE("commit_model stores a result with its meta.xml and console.log") {
  TempDir dir;
  AssetStore store(dir.path());
  const Version version = version_named("v1");
  const fs::path staged = stage(store, "incoming-1", {"model.h5", "logs/history.csv"});

  const CommitOutcome outcome =
      store.commit_model(version, staged, meta_for("id-1"), "Epoch 1/3\n");
  CHECK(outcome.status == CommitStatus::kStored);
  CHECK(outcome.reason.empty());
  CHECK_FALSE(fs::exists(staged));
  const fs::path model = store.version_dir("v1") / "models" / "id-1";
  CHECK(read_file(model / "model.h5") == "contents of model.h5");
  CHECK(read_file(model / "logs" / "history.csv") == "contents of logs/history.csv");
  CHECK(read_file(model / "console.log") == "Epoch 1/3\n");
  CHECK(store.has_model("v1", "id-1"));
  CHECK(store.stored_model_ids("v1") == std::vector<std::string>{"id-1"});

  const ModelMeta loaded = store.load_model_meta("v1", "id-1");
  CHECK(parse_timestamp(loaded.timestamp).has_value());
  ModelMeta expected = meta_for("id-1");
  expected.timestamp = loaded.timestamp;
  CHECK(loaded == expected);

  const std::string text = read_file(model / "meta.xml");
  CHECK(text.rfind("<?xml version=\"1.0\"?>\n<ModelMeta xmlns:xsi=", 0) == 0);
  size_t previous = 0;
  for (const char* element :
       {"<ItemId>id-1<", "<Attempt>2<", "<Duration>12.5<", "<Epochs>3<", "<LastEpochDuration>4.25<",
        "<NodeName>node-7<", "<OperatingSystem>ubuntu<", "<ProcessingUnit>gpu<",
        "<ContainerVersion>dev<", "<Timestamp>", "<Metrics/>"}) {
    CAPTURE(std::string(element));
    const size_t at = text.find(element);
    REQUIRE(at != std::string::npos);
    CHECK(at > previous);
    previous = at;
  }
}

TEST_CASE("commit_model keeps a given timestamp and replaces a meta.xml the client sent") {
  TempDir dir;
  AssetStore store(dir.path());
  const fs::path staged = stage(store, "incoming", {"model.h5", "meta.xml", "console.log"});
  ModelMeta meta = meta_for("id-1");
  meta.timestamp = "2018-07-20T08:15:30.0000000+00:00";
  meta.node_name = "bad\x01name";
  REQUIRE(store.commit_model(version_named("v1"), staged, meta, "").status ==
          CommitStatus::kStored);
  const ModelMeta loaded = store.load_model_meta("v1", "id-1");
  CHECK(loaded.timestamp == meta.timestamp);
  CHECK(loaded.node_name == "bad?name");
  CHECK(read_file(store.version_dir("v1") / "models" / "id-1" / "console.log").empty());
}

TEST_CASE("commit_model answers kDuplicate for a stored id and leaves the stored model alone") {
  TempDir dir;
  AssetStore store(dir.path());
  const Version version = version_named("v1");
  REQUIRE(
      store.commit_model(version, stage(store, "first", {"model.h5"}), meta_for("id-1"), "first")
          .status == CommitStatus::kStored);
  const fs::path second = stage(store, "second", {"model.h5", "other.h5"});
  CHECK(store.commit_model(version, second, meta_for("id-1"), "second").status ==
        CommitStatus::kDuplicate);
  CHECK_FALSE(fs::exists(second));
  const fs::path model = store.version_dir("v1") / "models" / "id-1";
  CHECK(read_file(model / "console.log") == "first");
  CHECK_FALSE(fs::exists(model / "other.h5"));

  // Even an empty folder of that name counts: a rename would silently replace it.
  fs::create_directories(store.version_dir("v1") / "models" / "id-2");
  CHECK(store.commit_model(version, stage(store, "third", {"model.h5"}), meta_for("id-2"), "")
            .status == CommitStatus::kDuplicate);
  CHECK(fs::is_empty(store.version_dir("v1") / "models" / "id-2"));
}

TEST_CASE("commit_model that the file system refuses removes the staged result too") {
  TempDir dir;
  AssetStore store(dir.path());
  // models/ cannot be made: a file holds its name.
  write_file(store.version_dir("v1") / "models", "not a folder");
  const fs::path staged = stage(store, "incoming", {"model.h5"});
  CHECK_THROWS_AS(store.commit_model(version_named("v1"), staged, meta_for("id-1"), "log"),
                  IoError);
  CHECK_FALSE(fs::exists(staged));
  CHECK(read_file(store.version_dir("v1") / "models") == "not a folder");
}

TEST_CASE("commit_model rejects a result without a model file and leaves no models/<id>") {
  TempDir dir;
  AssetStore store(dir.path());
  const fs::path staged = stage(store, "incoming", {"history.csv", "model.h5.partial"});
  const CommitOutcome outcome =
      store.commit_model(version_named("v1"), staged, meta_for("id-1"), "log");
  CHECK(outcome.status == CommitStatus::kRejected);
  CHECK(outcome.reason.find("'*.h5'") != std::string::npos);
  CHECK(outcome.reason.find("id-1") != std::string::npos);
  CHECK_FALSE(fs::exists(store.version_dir("v1") / "models" / "id-1"));
  CHECK_FALSE(fs::exists(staged));
  CHECK_FALSE(store.has_model("v1", "id-1"));
}

TEST_CASE("commit_model judges an extraction's list of synced files, not the folder's listing") {
  TempDir dir;
  AssetStore store(dir.path());
  const Version version = version_named("v1");
  SUBCASE("stored, the client's meta.xml replaced by the server's") {
    const std::vector<std::string> files = {"model.h5", "logs/history.csv", "meta.xml"};
    const fs::path staged = stage(store, "listed", {"model.h5", "logs/history.csv", "meta.xml"});
    REQUIRE(store.commit_model(version, staged, meta_for("id-1"), "Epoch 1/3\n", &files).status ==
            CommitStatus::kStored);
    const fs::path model = store.version_dir("v1") / "models" / "id-1";
    CHECK(read_file(model / "model.h5") == "contents of model.h5");
    CHECK(read_file(model / "logs" / "history.csv") == "contents of logs/history.csv");
    CHECK(read_file(model / "console.log") == "Epoch 1/3\n");
    CHECK(store.load_model_meta("v1", "id-1").node_name == "node-7");
  }
  SUBCASE("a model file the list does not name does not count") {
    const std::vector<std::string> files = {"notes.txt"};
    const fs::path staged = stage(store, "unlisted", {"model.h5", "notes.txt"});
    CHECK(store.commit_model(version, staged, meta_for("id-1"), "", &files).status ==
          CommitStatus::kRejected);
    CHECK_FALSE(fs::exists(staged));
    CHECK_FALSE(store.has_model("v1", "id-1"));
  }
  SUBCASE("a folder under the name of a server's record goes, and what it held is no model") {
    const std::vector<std::string> only = {"console.log/model.h5", "x.txt"};
    const fs::path rejected = stage(store, "records", {"console.log/model.h5", "x.txt"});
    CHECK(store.commit_model(version, rejected, meta_for("id-1"), "", &only).status ==
          CommitStatus::kRejected);
    const std::vector<std::string> files = {"console.log/model.h5", "net.h5"};
    const fs::path staged = stage(store, "records-2", {"console.log/model.h5", "net.h5"});
    REQUIRE(store.commit_model(version, staged, meta_for("id-2"), "said\n", &files).status ==
            CommitStatus::kStored);
    CHECK(read_file(store.version_dir("v1") / "models" / "id-2" / "console.log") == "said\n");
  }
  SUBCASE("empty folders under those names, which no list names, go too") {
    const std::vector<std::string> files = {"model.h5"};
    const fs::path staged = stage(store, "empty-records", {"model.h5"});
    fs::create_directory(staged / "meta.xml");
    fs::create_directory(staged / "console.log");
    REQUIRE(store.commit_model(version, staged, meta_for("id-3"), "said\n", &files).status ==
            CommitStatus::kStored);
    const fs::path model = store.version_dir("v1") / "models" / "id-3";
    CHECK(read_file(model / "console.log") == "said\n");
    CHECK(store.load_model_meta("v1", "id-3").node_name == "node-7");
    CHECK(read_file(model / "model.h5") == "contents of model.h5");
  }
}

TEST_CASE("the model pattern matches the relative path or the bare file name") {
  TempDir dir;
  AssetStore store(dir.path());
  Version version = version_named("v1");

  version.model_pattern = "checkpoints/*.ckpt";
  CHECK(store.commit_model(version, stage(store, "a", {"checkpoints/last.ckpt"}), meta_for("a"), "")
            .status == CommitStatus::kStored);
  CHECK(store.commit_model(version, stage(store, "b", {"last.ckpt"}), meta_for("b"), "").status ==
        CommitStatus::kRejected);

  version.model_pattern = "*.pt";
  CHECK(store.commit_model(version, stage(store, "c", {"deep/down/net.pt"}), meta_for("c"), "")
            .status == CommitStatus::kStored);

  version.model_pattern = "";  // means the original's "*.h5"
  CHECK(store.commit_model(version, stage(store, "d", {"net.pt"}), meta_for("d"), "").status ==
        CommitStatus::kRejected);
  CHECK(store.commit_model(version, stage(store, "e", {"net.h5"}), meta_for("e"), "").status ==
        CommitStatus::kStored);

  // Only a regular file the client sent is a model: not a symlink, and not the server's own
  // meta.xml and console.log, whatever the pattern.
  const fs::path linked = stage(store, "f", {"notes.txt"});
  fs::create_symlink(linked / "notes.txt", linked / "net.h5");
  CHECK(store.commit_model(version, linked, meta_for("f"), "").status == CommitStatus::kRejected);
  version.model_pattern = "*.xml";
  CHECK(store.commit_model(version, stage(store, "g", {"meta.xml"}), meta_for("g"), "").status ==
        CommitStatus::kRejected);
  CHECK(
      store
          .commit_model(version, stage(store, "h", {"meta.xml", "sub/meta.xml"}), meta_for("h"), "")
          .status == CommitStatus::kStored);
  version.model_pattern = "console.*";
  CHECK(store.commit_model(version, stage(store, "i", {"console.log"}), meta_for("i"), "").status ==
        CommitStatus::kRejected);
}

TEST_CASE("commit_model replaces a folder the client sent as meta.xml or console.log") {
  TempDir dir;
  AssetStore store(dir.path());
  const fs::path staged = stage(store, "incoming", {"model.h5", "meta.xml/x", "console.log/y/z"});
  REQUIRE(store.commit_model(version_named("v1"), staged, meta_for("id-1"), "the log").status ==
          CommitStatus::kStored);
  const fs::path model = store.version_dir("v1") / "models" / "id-1";
  CHECK(store.load_model_meta("v1", "id-1").node_name == "node-7");
  CHECK(read_file(model / "console.log") == "the log");
  CHECK(read_file(model / "model.h5") == "contents of model.h5");
}

TEST_CASE("commit_model refuses item ids and staged folders that would escape the store") {
  TempDir dir;
  AssetStore store(dir.path());
  const Version version = version_named("v1");
  const fs::path staged = stage(store, "incoming", {"model.h5"});
  for (const char* id : {"../escape", "a/b", "..", ".", "", ".hidden"}) {
    CAPTURE(std::string(id));
    try {
      store.commit_model(version, staged, meta_for(id), "");
      FAIL("an unsafe item id was accepted");
    } catch (const Error& error) {
      CHECK(error.code() == ErrorCode::kArgument);
    }
  }
  CHECK(fs::exists(staged));

  const fs::path outside = dir.path() / "outside";
  write_file(outside / "model.h5", "x");
  CHECK_THROWS_AS(store.commit_model(version, outside, meta_for("id-1"), ""), Error);
  CHECK_THROWS_AS(store.commit_model(version, store.spool_dir(), meta_for("id-1"), ""), Error);
  // Spelled inside the spool but leading out of it: through "..", or through a symlink.
  CHECK_THROWS_AS(
      store.commit_model(version, store.spool_dir() / "incoming" / ".." / ".." / "outside",
                         meta_for("id-1"), ""),
      Error);
  fs::create_symlink(outside, store.spool_dir() / "link");
  CHECK_THROWS_AS(store.commit_model(version, store.spool_dir() / "link", meta_for("id-1"), ""),
                  Error);
  fs::create_directories(outside / "deeper");
  CHECK_THROWS_AS(
      store.commit_model(version, store.spool_dir() / "link" / "deeper", meta_for("id-1"), ""),
      Error);
  // Read lexically, spool/link/../incoming is spool/incoming; the kernel goes through the link.
  write_file(dir.path() / "incoming" / "model.h5", "elsewhere");
  CHECK_THROWS_AS(store.commit_model(version, store.spool_dir() / "link" / ".." / "incoming",
                                     meta_for("id-1"), ""),
                  Error);
  CHECK(read_file(dir.path() / "incoming" / "model.h5") == "elsewhere");
  CHECK(fs::exists(outside / "model.h5"));
  CHECK(fs::exists(outside / "deeper"));
  CHECK_FALSE(fs::exists(store.version_dir("v1") / "models" / "id-1"));

  // A folder inside the spool reached another way (a symlink to the store's root) is taken.
  fs::create_directory_symlink(dir.path(), dir.path() / "alias");
  CHECK(
      store.commit_model(version, dir.path() / "alias" / "spool" / "incoming", meta_for("id-2"), "")
          .status == CommitStatus::kStored);
  CHECK_THROWS_AS(store.version_dir("../up"), Error);
}

TEST_CASE("error logs are numbered 0 to 9 per item and the tenth slot is overwritten") {
  TempDir dir;
  AssetStore store(dir.path());
  const fs::path logs = store.version_dir("v1") / "errorlogs";
  for (int n = 0; n < 10; ++n) {
    CHECK(store.write_error_log("v1", "id-1", "attempt " + std::to_string(n)) ==
          logs / ("id-1-" + std::to_string(n) + ".log"));
  }
  CHECK(store.write_error_log("v1", "id-2", "other item") == logs / "id-2-0.log");
  CHECK(store.write_error_log("v1", "id-1", "attempt 10") == logs / "id-1-9.log");
  CHECK(store.write_error_log("v1", "id-1", "attempt 11") == logs / "id-1-9.log");
  CHECK(read_file(logs / "id-1-9.log") == "attempt 11");
  CHECK(read_file(logs / "id-1-8.log") == "attempt 8");
  CHECK(count_entries(logs) == 11);
  CHECK(count_entries(store.spool_dir()) == 0);

  fs::remove(logs / "id-1-3.log");
  CHECK(store.write_error_log("v1", "id-1", "fills the gap") == logs / "id-1-3.log");
}

TEST_CASE("stored_model_ids lists model folders sorted, without hidden entries or files") {
  TempDir dir;
  AssetStore store(dir.path());
  CHECK(store.stored_model_ids("v1").empty());
  const fs::path models = store.version_dir("v1") / "models";
  for (const char* id : {"c", "a", "b"}) fs::create_directories(models / id);
  fs::create_directories(models / ".partial");
  write_file(models / "notes.txt", "x");
  write_file(models / ".DS_Store", "x");
  CHECK(store.stored_model_ids("v1") == std::vector<std::string>{"a", "b", "c"});
  CHECK_FALSE(store.has_model("v1", "notes.txt"));
  CHECK(store.has_model("v1", "a"));
}

TEST_CASE("clean_spool removes leftovers of interrupted work and keeps the configuration") {
  TempDir dir;
  AssetStore store(dir.path());
  store.load_or_create_configuration();
  stage(store, "half-extracted", {"model.h5", "deep/file"});
  write_file(store.spool_dir() / "errorlog-1.tmp", "x");
  write_file(store.config_file().string() + ".tmp-0123456789abcdef", "x");
  store.clean_spool();
  CHECK(count_entries(store.spool_dir()) == 0);
  CHECK(count_entries(store.config_file().parent_path()) == 1);
  CHECK(fs::exists(store.config_file()));
}

TEST_CASE("load_model_meta refuses a broken meta.xml, naming file and line") {
  TempDir dir;
  AssetStore store(dir.path());
  const fs::path file = store.version_dir("v1") / "models" / "id-1" / "meta.xml";
  write_file(file, "<?xml version=\"1.0\"?>\n<ModelMeta>\n  <Epochs>many</Epochs>\n</ModelMeta>\n");
  try {
    store.load_model_meta("v1", "id-1");
    FAIL("a broken meta.xml loaded");
  } catch (const ConfigError& error) {
    CHECK(std::string(error.what()).rfind(file.string() + ":3: <Epochs> must be a number", 0) == 0);
  }
  CHECK_THROWS_AS(store.load_model_meta("v1", "id-2"), ConfigError);
}

TEST_CASE("meta.xml keeps a model's metrics in order through a round trip") {
  TempDir dir;
  AssetStore store(dir.path());
  ModelMeta meta = meta_for("id-1");
  meta.metrics = {{"val_loss", 0.1}, {"accuracy", 0.93}, {"epochs", 12}, {"tiny", 1e-300}};
  REQUIRE(
      store.commit_model(version_named("v1"), stage(store, "in", {"model.h5"}), meta, "").status ==
      CommitStatus::kStored);
  const ModelMeta loaded = store.load_model_meta("v1", "id-1");
  CHECK(loaded.metrics == meta.metrics);  // exact: values are written to round-trip

  const std::string text = read_file(store.version_dir("v1") / "models" / "id-1" / "meta.xml");
  CHECK(text.find("  <Metrics>\n    <Metric>\n      <Name>val_loss</Name>\n      "
                  "<Value>0.1</Value>\n    </Metric>\n    <Metric>\n      <Name>accuracy</Name>") !=
        std::string::npos);
  CHECK(text.find("EvaluationProblems") == std::string::npos);
}

TEST_CASE("commit_model stores the metrics of the training's files after the caller's") {
  TempDir dir;
  AssetStore store(dir.path());
  const fs::path staged = stage(store, "in", {"model.h5"});
  write_file(staged / "metrics.json", R"({"loss": 0.5, "mcc": 7, "val": {"acc": 0.75}})");
  // One bucket: TP (12 > 10 and 11 > 10) and TN: mcc 1, accuracy 1, mae (1 + 1) / 2.
  write_file(staged / "test_results.csv",
             "seq,len,prefix,completion,pred,true,planned,id,prefix acts,suffix acts\n"
             "1,4,1,0.25,12,11,10,a,1,2 3\n"
             "2,4,1,0.25,8,9,10,b,1,2 3\n");
  ModelMeta meta = meta_for("id-1");
  meta.metrics = {{"server_side", 1.0}, {"loss", 9.0}};
  REQUIRE(store.commit_model(version_named("v1"), staged, meta, "").status ==
          CommitStatus::kStored);

  const Metrics metrics = store.load_model_meta("v1", "id-1").metrics;
  std::vector<std::string> names;
  for (const auto& entry : metrics) names.push_back(entry.first);
  CHECK(names == std::vector<std::string>{"server_side", "loss", "mcc", "val.acc", "accuracy",
                                          "precision", "recall", "f1", "specificity", "npv", "fpr",
                                          "mae", "mse", "rmse", "rae", "rse", "rrse"});
  CHECK(metrics[0].second == 1.0);
  CHECK(metrics[1].second == 0.5);  // the training's value replaces the caller's
  CHECK(metrics[2].second == 1.0);  // the evaluation's mcc replaces the training's 7
  CHECK(metrics[3].second == 0.75);
  CHECK(metrics[4].second == 1.0);
  CHECK(metrics[11].second == 1.0);
  const std::string text = read_file(store.version_dir("v1") / "models" / "id-1" / "meta.xml");
  CHECK(text.find("EvaluationProblems") == std::string::npos);
}

TEST_CASE("commit_model stores an evaluation taken earlier instead of evaluating again") {
  TempDir dir;
  AssetStore store(dir.path());
  const fs::path staged = stage(store, "in", {"model.h5"});
  write_file(staged / "metrics.json", R"({"loss": 0.5})");
  const conductor::Evaluation earlier{{{"loss", 0.25}, {"accuracy", 0.9}},
                                      {"metrics.csv: a problem found earlier"}};
  REQUIRE(store.commit_model(version_named("v1"), staged, meta_for("id-1"), "", nullptr, &earlier)
              .status == CommitStatus::kStored);
  CHECK(store.load_model_meta("v1", "id-1").metrics == Metrics{{"loss", 0.25}, {"accuracy", 0.9}});
  const std::string text = read_file(store.version_dir("v1") / "models" / "id-1" / "meta.xml");
  CHECK(text.find("a problem found earlier") != std::string::npos);
}

TEST_CASE("commit_model stores a model whose metrics files are bad and says why in meta.xml") {
  TempDir dir;
  AssetStore store(dir.path());
  const fs::path staged = stage(store, "in", {"model.h5"});
  write_file(staged / "metrics.json", "{\"loss\": ");
  write_file(staged / "metrics.csv", "loss,0.25\n");
  write_file(staged / "results.csv", "1,2\n");
  Version version = version_named("v1");
  version.dataset_type = DatasetType::kCargo2000;
  REQUIRE(store.commit_model(version, staged, meta_for("id-1"), "").status ==
          CommitStatus::kStored);

  CHECK(store.load_model_meta("v1", "id-1").metrics == Metrics{{"loss", 0.25}});
  const std::string text = read_file(store.version_dir("v1") / "models" / "id-1" / "meta.xml");
  const size_t start = text.find("<EvaluationProblems>");
  const size_t end = text.find("</EvaluationProblems>");
  REQUIRE(start != std::string::npos);
  REQUIRE(end != std::string::npos);
  const std::string problems = text.substr(start + 20, end - start - 20);
  // Named relative to the model folder: the spool path no longer exists.
  CHECK(problems.rfind("metrics.json:1: malformed JSON", 0) == 0);
  CHECK(problems.find("\nresults.csv:1: expected at least 10 columns") != std::string::npos);
  CHECK(problems.find(store.spool_dir().string()) == std::string::npos);
}

TEST_CASE("load_model_meta reads metrics under any element name and refuses a bad value") {
  TempDir dir;
  AssetStore store(dir.path());
  const fs::path file = store.version_dir("v1") / "models" / "id-1" / "meta.xml";
  write_file(file,
             "<?xml version=\"1.0\"?>\n<ModelMeta>\n  <Metrics>\n"
             "    <VersionStatusModelMetricItem><Name>MCC</Name><Value>0.5</Value>"
             "</VersionStatusModelMetricItem>\n"
             "    <Metric><Name>MAE</Name><Value> 2 </Value></Metric>\n"
             "  </Metrics>\n</ModelMeta>\n");
  CHECK(store.load_model_meta("v1", "id-1").metrics == Metrics{{"MCC", 0.5}, {"MAE", 2.0}});

  write_file(file,
             "<?xml version=\"1.0\"?>\n<ModelMeta>\n  <Metrics>\n"
             "    <Metric><Name>MAE</Name><Value>high</Value></Metric>\n"
             "  </Metrics>\n</ModelMeta>\n");
  try {
    store.load_model_meta("v1", "id-1");
    FAIL("a metric that is not a number loaded");
  } catch (const ConfigError& error) {
    CHECK(std::string(error.what()).rfind(file.string() + ":4: <Value> must be a number", 0) == 0);
  }
  write_file(file,
             "<?xml version=\"1.0\"?>\n<ModelMeta>\n  <Metrics>\n"
             "    <Metric><Value>1</Value></Metric>\n  </Metrics>\n</ModelMeta>\n");
  CHECK_THROWS_AS(store.load_model_meta("v1", "id-1"), ConfigError);
}
