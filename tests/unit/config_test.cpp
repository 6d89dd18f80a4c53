#include "conductor/config.hpp"

#include <doctest/doctest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
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

// The message a ConfigError carries when loading `file` fails, or "" when it loads.
std::string load_error(const fs::path& file, bool as_version = false) {
  try {
    if (as_version) {
      load_version_file(file);
    } else {
      load_configuration(file);
    }
  } catch (const ConfigError& error) {
    return error.what();
  }
  return "";
}

constexpr const char* kHeader =
    "<?xml version=\"1.0\"?>\n"
    "<ConductorConfiguration xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" "
    "xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">\n";

}  // namespace

TEST_CASE("the original's config.xml loads with its values") {
  const Configuration config = load_configuration(test_data_dir() / "config.xml");
  CHECK(config.created == "2018-07-20T10:15:30.1234567+02:00");
  CHECK(config.last_updated == "2018-09-02T08:00:01.5000000+02:00");
  CHECK(config.reserve_nodes == 0.25);
  REQUIRE(config.versions.size() == 2);

  const Version& c2k = config.versions[0];
  CHECK(c2k.name == "rnn-c2k-v1");
  CHECK(c2k.dataset_type == DatasetType::kCargo2000);
  CHECK(c2k.status.empty());
  CHECK(c2k.target_models == 10);
  CHECK(c2k.model_pattern == "*.h5");
  REQUIRE(c2k.training_commands.size() == 1);
  CHECK(c2k.training_commands[0] == Command{"/bin/bash", "-c \"python3 train.py --epochs 3\"", ""});
  REQUIRE(c2k.prediction_commands.size() == 1);
  CHECK(c2k.prediction_commands[0].arguments ==
        "-c \"python3 predict.py predictiondata.csv model-latest.h5\"");

  const Version& generic = config.versions[1];
  CHECK(generic.name == "rnn-generic-v2");
  CHECK(generic.dataset_type == DatasetType::kGeneric);
  CHECK(generic.created == "2018-08-01T09:00:00.0000000+02:00");
  CHECK(generic.target_models == 4);
  CHECK(generic.prediction_commands.empty());
  REQUIRE(generic.training_commands.size() == 2);
  CHECK(generic.training_commands[1] ==
        Command{"/bin/bash", "-c \"python3 train.py --epochs 5 --units 64\"", "units=64"});

  REQUIRE(config.current_version.has_value());
  CHECK(config.current_version->name == "rnn-generic-v2");
  CHECK(*config.current_version == generic);
}

TEST_CASE("the original's version.xml loads with its commands and TargetModels") {
  const Version version = load_version_file(test_data_dir() / "version.xml");
  CHECK(version.name == "ignored-because-the-folder-name-wins");
  CHECK(version.target_models == 3);
  CHECK(version.dataset_type == DatasetType::kGeneric);
  CHECK(version.training_commands == std::vector<Command>{{"/bin/sh", "-c \"sh train.sh\"", ""}});
  CHECK(version.prediction_commands ==
        std::vector<Command>{{"/bin/sh", "-c \"sh predict.sh\"", ""}});
}

TEST_CASE("saving an unchanged fixture writes the original's text back") {
  TempDir dir;
  SUBCASE("config.xml") {
    const Configuration config = load_configuration(test_data_dir() / "config.xml");
    save_configuration(config, dir.path() / "config.xml");
    CHECK(read_file(dir.path() / "config.xml") == read_file(test_data_dir() / "config.xml"));
    CHECK(load_configuration(dir.path() / "config.xml") == config);
  }
  SUBCASE("version.xml") {
    const Version version = load_version_file(test_data_dir() / "version.xml");
    save_version_file(version, dir.path() / "version.xml");
    CHECK(read_file(dir.path() / "version.xml") == read_file(test_data_dir() / "version.xml"));
    CHECK(load_version_file(dir.path() / "version.xml") == version);
  }
  CHECK(count_entries(dir.path()) == 1);  // no temporary left behind
}

TEST_CASE("values with markup, line ends and a custom ModelPattern survive a round trip") {
  TempDir dir;
  Version version;
  version.name = "odd & <named>";
  version.dataset_type = DatasetType::kCargo2000;
  version.status = "  spaced  ";
  version.training_commands = {{"/bin/sh", "-c 'echo \"a\" > out.txt'\r\n\tnext", "x=1&y=2"}};
  version.target_models = 7;
  version.model_pattern = "checkpoints/*.ckpt";

  save_version_file(version, dir.path() / "version.xml");
  const std::string text = read_file(dir.path() / "version.xml");
  CHECK(text.find("<ModelPattern>checkpoints/*.ckpt</ModelPattern>") != std::string::npos);
  CHECK(text.find("<Created") == std::string::npos);  // empty timestamps are left out
  CHECK(text.find("<PredictionCommands />") != std::string::npos);
  CHECK(load_version_file(dir.path() / "version.xml") == version);

  Configuration config;
  config.versions = {version};
  config.reserve_nodes = 1;
  save_configuration(config, dir.path() / "config.xml");
  CHECK(read_file(dir.path() / "config.xml").find("<CurrentVersion>") == std::string::npos);
  CHECK(load_configuration(dir.path() / "config.xml") == config);
}

TEST_CASE("a version's Requires survives a round trip and is written only when set") {
  TempDir dir;
  const fs::path file = dir.path() / "version.xml";
  Version version = load_version_file(test_data_dir() / "version.xml");
  CHECK(version.requirement == Requirement::kAny);

  version.requirement = Requirement::kGpu;
  save_version_file(version, file);
  const std::string text = read_file(file);
  // After the elements the original knows, so that it still reads the file.
  CHECK(text.find("  <TargetModels>3</TargetModels>\n  <Requires>gpu</Requires>\n</Version>") !=
        std::string::npos);
  CHECK(load_version_file(file) == version);

  version.requirement = Requirement::kCpu;
  Configuration config;
  config.versions = {version};
  config.current_version = version;
  save_configuration(config, dir.path() / "config.xml");
  const Configuration loaded = load_configuration(dir.path() / "config.xml");
  CHECK(loaded.versions.at(0).requirement == Requirement::kCpu);
  CHECK(loaded.current_version->requirement == Requirement::kCpu);

  version.requirement = Requirement::kAny;
  save_version_file(version, file);
  CHECK(read_file(file).find("Requires") == std::string::npos);

  // Blanks around the value are allowed, as for the original's enums; "any" is the default.
  write_file(file, "<?xml version=\"1.0\"?>\n<Version>\n  <Requires> gpu </Requires>\n</Version>\n");
  CHECK(load_version_file(file).requirement == Requirement::kGpu);
  write_file(file, "<?xml version=\"1.0\"?>\n<Version>\n  <Requires>any</Requires>\n</Version>\n");
  CHECK(load_version_file(file).requirement == Requirement::kAny);
}

TEST_CASE("requirements read and print as any, cpu and gpu, and match client types") {
  CHECK(parse_requirement("gpu") == Requirement::kGpu);
  CHECK(parse_requirement("cpu") == Requirement::kCpu);
  CHECK(parse_requirement("any") == Requirement::kAny);
  CHECK(parse_requirement("") == Requirement::kAny);
  CHECK_FALSE(parse_requirement("GPU").has_value());
  CHECK(std::string(to_string(Requirement::kGpu)) == "gpu");
  CHECK(satisfies("gpu", Requirement::kGpu));
  CHECK_FALSE(satisfies("cpu", Requirement::kGpu));
  CHECK_FALSE(satisfies("gpu", Requirement::kCpu));
  CHECK(satisfies("cpu", Requirement::kAny));
  CHECK(satisfies("gpu", Requirement::kAny));
}

TEST_CASE("the default configuration has ReserveNodes 0.2, no versions and the time of now") {
  const Configuration config = default_configuration();
  CHECK(config.reserve_nodes == 0.2);
  CHECK(config.versions.empty());
  CHECK_FALSE(config.current_version.has_value());
  const auto created = parse_timestamp(config.created);
  REQUIRE(created.has_value());
  CHECK(std::chrono::abs(*created - std::chrono::system_clock::now()) < std::chrono::minutes(1));
  CHECK(config.last_updated == config.created);

  TempDir dir;
  save_configuration(config, dir.path() / "config.xml");
  const std::string text = read_file(dir.path() / "config.xml");
  CHECK(text.find("<Versions />") != std::string::npos);
  CHECK(text.find("<ReserveNodes>0.2</ReserveNodes>") != std::string::npos);
  CHECK(load_configuration(dir.path() / "config.xml") == config);
}

TEST_CASE("loading ignores unknown elements and gives missing ones their defaults") {
  TempDir dir;
  const fs::path file = dir.path() / "config.xml";
  write_file(file, std::string(kHeader) +
                       "  <FutureSetting>on</FutureSetting>\n"
                       "  <Versions>\n"
                       "    <Version><Name>bare</Name><Shiny>yes</Shiny></Version>\n"
                       "  </Versions>\n"
                       "</ConductorConfiguration>\n");
  const Configuration config = load_configuration(file);
  CHECK(config.reserve_nodes == 0.2);
  CHECK(config.created.empty());
  REQUIRE(config.versions.size() == 1);
  Version expected;
  expected.name = "bare";
  CHECK(config.versions[0] == expected);
}

TEST_CASE("loading refuses invalid configurations, naming file and line") {
  struct Case {
    const char* what;
    const char* body;  // follows kHeader, which takes lines 1 and 2
    int line;
    const char* problem;
  };
  const Case cases[] = {
      // tinyxml2 points at the element left open, not at the closing tag that mismatches.
      {"malformed XML", "  <Versions>\n  </Version>\n</ConductorConfiguration>\n", 3,
       "malformed XML: mismatched element (XMLElement name=Versions)"},
      {"an attribute without quotes",
       "\n  <Versions a=1>\n  </Versions>\n</ConductorConfiguration>\n", 4,
       "malformed XML: parsing attribute"},
      {"a negative TargetModels",
       "  <Versions>\n    <Version>\n      <Name>a</Name>\n      <TargetModels>-1</TargetModels>\n"
       "    </Version>\n  </Versions>\n</ConductorConfiguration>\n",
       6, "non-negative integer"},
      {"a fractional TargetModels",
       "  <Versions>\n    <Version>\n      <Name>a</Name>\n      <TargetModels>2.5</TargetModels>\n"
       "    </Version>\n  </Versions>\n</ConductorConfiguration>\n",
       6, "non-negative integer"},
      {"ReserveNodes above 1", "  <ReserveNodes>1.5</ReserveNodes>\n</ConductorConfiguration>\n", 3,
       "from 0 to 1"},
      {"ReserveNodes not a number",
       "\n  <ReserveNodes>lots</ReserveNodes>\n</ConductorConfiguration>\n", 4, "from 0 to 1"},
      {"ReserveNodes NaN", "  <ReserveNodes>NaN</ReserveNodes>\n</ConductorConfiguration>\n", 3,
       "from 0 to 1"},
      {"an unknown DatasetType",
       "  <Versions>\n    <Version>\n      <Name>a</Name>\n      "
       "<DatasetType>Images</DatasetType>\n"
       "    </Version>\n  </Versions>\n</ConductorConfiguration>\n",
       6, "unknown <DatasetType> 'Images'"},
      {"an unknown Requires",
       "  <Versions>\n    <Version>\n      <Name>a</Name>\n      <Requires>tpu</Requires>\n"
       "    </Version>\n  </Versions>\n</ConductorConfiguration>\n",
       6, "unknown <Requires> 'tpu' (expected cpu or gpu)"},
      {"a Command without FileName",
       "  <Versions>\n    <Version>\n      <Name>a</Name>\n      <TrainingCommands>\n"
       "        <Command><Arguments>-c true</Arguments></Command>\n"
       "      </TrainingCommands>\n    </Version>\n  </Versions>\n</ConductorConfiguration>\n",
       7, "has no <FileName>"},
      {"a global Version without Name",
       "  <Versions>\n    <Version>\n      <TargetModels>1</TargetModels>\n    </Version>\n"
       "  </Versions>\n</ConductorConfiguration>\n",
       4, "has no <Name>"},
      {"a Name that is not a folder name",
       "  <Versions>\n    <Version>\n      <Name>../up</Name>\n    </Version>\n"
       "  </Versions>\n</ConductorConfiguration>\n",
       5, "must not contain '/'"},
      {"two global versions with one name",
       "  <Versions>\n    <Version>\n      <Name>twin</Name>\n    </Version>\n"
       "    <Version>\n      <Name>twin</Name>\n    </Version>\n"
       "  </Versions>\n</ConductorConfiguration>\n",
       8, "'twin' is used twice (first at line 5)"},
  };
  TempDir dir;
  const fs::path file = dir.path() / "config.xml";
  for (const Case& c : cases) {
    const std::string what = c.what;
    CAPTURE(what);
    write_file(file, std::string(kHeader) + c.body);
    const std::string message = load_error(file);
    CAPTURE(message);
    CHECK(message.rfind(file.string() + ":" + std::to_string(c.line) + ": ", 0) == 0);
    CHECK(message.find(c.problem) != std::string::npos);
  }
}

TEST_CASE("loading refuses a wrong root element, an unreadable file and an empty one") {
  TempDir dir;
  const fs::path file = dir.path() / "version.xml";
  write_file(file,
             "<?xml version=\"1.0\"?>\n\n<ConductorConfiguration>\n</ConductorConfiguration>\n");
  std::string message = load_error(file, /*as_version=*/true);
  CHECK(message.rfind(file.string() + ":3: root element is <ConductorConfiguration>", 0) == 0);
  CHECK(load_error(file).empty());

  message = load_error(dir.path() / "absent.xml");
  CHECK(message.find((dir.path() / "absent.xml").string() + ": cannot read") == 0);

  write_file(file, "");
  CHECK(load_error(file, /*as_version=*/true).rfind(file.string() + ":1: malformed XML", 0) == 0);
}

TEST_CASE("a local version.xml needs no Name but a valid TargetModels") {
  TempDir dir;
  const fs::path file = dir.path() / "version.xml";
  write_file(
      file,
      "<?xml version=\"1.0\"?>\n<Version>\n  <TargetModels>three</TargetModels>\n</Version>\n");
  CHECK(load_error(file, true).rfind(file.string() + ":3: <TargetModels> must be", 0) == 0);
  write_file(
      file, "<?xml version=\"1.0\"?>\n<Version>\n  <TargetModels> 3 </TargetModels>\n</Version>\n");
  CHECK(load_version_file(file).target_models == 3);
  CHECK(load_version_file(file).name.empty());
}

TEST_CASE("a failing save leaves the old file intact") {
  TempDir dir;
  const std::string old_text = read_file(test_data_dir() / "config.xml");
  const Configuration config = default_configuration();

  SUBCASE("the target folder is missing") {
    CHECK_THROWS_AS(save_configuration(config, dir.path() / "missing" / "config.xml"), IoError);
    CHECK_FALSE(fs::exists(dir.path() / "missing"));
  }
  SUBCASE("the temporary cannot be created next to the target") {
    // A name at the file system's limit leaves no room for the ".tmp-<random>" suffix.
    const fs::path file = dir.path() / std::string(250, 'c');
    write_file(file, old_text);
    CHECK_THROWS_AS(save_configuration(config, file), IoError);
    CHECK(read_file(file) == old_text);
    CHECK(count_entries(dir.path()) == 1);
  }
  SUBCASE("the rename over the target fails after the temporary was written") {
    const fs::path file = dir.path() / "config.xml";
    fs::create_directories(file / "occupied");
    CHECK_THROWS_AS(save_configuration(config, file), IoError);
    CHECK(fs::is_directory(file / "occupied"));
    CHECK(count_entries(dir.path()) == 1);  // the temporary was removed
  }
  SUBCASE("a value XML cannot carry") {
    const fs::path file = dir.path() / "config.xml";
    write_file(file, old_text);
    Configuration bad = config;
    bad.versions.push_back(Version{});
    bad.versions.back().name = "bell\x07";
    CHECK_THROWS_AS(save_configuration(bad, file), ConfigError);
    CHECK(read_file(file) == old_text);
  }
  SUBCASE("writing the new content fails part way (a full disk, a quota)") {
    // RLIMIT_FSIZE makes write() fail with EFBIG past 64 bytes, for root too (a read-only
    // folder would not stop root); SIGXFSZ is ignored so the failure is an error code.
    const fs::path file = dir.path() / "config.xml";
    write_file(file, old_text);
    rlimit saved{};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
    const auto previous_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit tiny = saved;
    tiny.rlim_cur = 64;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &tiny) == 0);
    bool threw_io_error = false;
    try {
      save_configuration(config, file);
    } catch (const IoError&) {
      threw_io_error = true;
    } catch (...) {
    }
    ::setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, previous_handler);
    CHECK(threw_io_error);
    CHECK(read_file(file) == old_text);
    CHECK(count_entries(dir.path()) == 1);  // the temporary was removed
  }
}

TEST_CASE("a save keeps the permissions an operator gave the file") {
  TempDir dir;
  const fs::path file = dir.path() / "config.xml";
  write_file(file, "old");
  fs::permissions(file, fs::perms::owner_read | fs::perms::owner_write);
  save_configuration(default_configuration(), file);
  CHECK(fs::status(file).permissions() == (fs::perms::owner_read | fs::perms::owner_write));
}

TEST_CASE("timestamps are formatted the .NET way in UTC") {
  using namespace std::chrono;
  const sys_days day = year{2018} / July / 20;
  const auto time = day + hours{8} + minutes{15} + seconds{30} + nanoseconds{123456789};
  CHECK(format_timestamp(time_point_cast<system_clock::duration>(time)) ==
        "2018-07-20T08:15:30.1234567+00:00");
  CHECK(format_timestamp(system_clock::time_point{}) == "1970-01-01T00:00:00.0000000+00:00");
}

TEST_CASE("parse_timestamp reads the original's forms and applies the offset") {
  using namespace std::chrono;
  const auto expected = sys_days{year{2018} / July / 20} + hours{8} + minutes{15} + seconds{30};
  CHECK(parse_timestamp("2018-07-20T10:15:30+02:00") == expected);
  CHECK(parse_timestamp("2018-07-20T08:15:30Z") == expected);
  CHECK(parse_timestamp("2018-07-20T08:15:30") == expected);
  CHECK(parse_timestamp("2018-07-20T03:45:30-04:30") == expected);
  CHECK(parse_timestamp("2018-07-20T08:15:30.5Z") == expected + milliseconds{500});
  CHECK(parse_timestamp("2018-07-20T10:15:30.1234567+02:00") == expected + nanoseconds{123456700});

  const auto now = time_point_cast<microseconds>(system_clock::now());
  CHECK(parse_timestamp(format_timestamp(now)) == now);
}

TEST_CASE("parse_timestamp refuses what is not a timestamp") {
  for (const char* text :
       {"", "2018-07-20", "2018-13-01T00:00:00Z", "2018-02-30T00:00:00Z", "2018-07-20T24:00:00Z",
        "2018-07-20T08:15:30.Z", "2018-07-20T08:15:30.12345678Z", "2018-07-20T08:15:30+15:00",
        "2018-07-20T08:15:30+02", "2018-07-20T08:15:30Z junk", "0000-01-01T00:00:00Z",
        "2018-7-20T08:15:30Z"}) {
    const std::string shown = text;
    CAPTURE(shown);
    CHECK_FALSE(parse_timestamp(text).has_value());
  }
}

TEST_CASE("dataset types are named as the original names them") {
  CHECK(std::string(to_string(DatasetType::kGeneric)) == "Generic");
  CHECK(std::string(to_string(DatasetType::kCargo2000)) == "Cargo2000");
}
