// End-to-end tests: the real conductor-server and conductor-client executables on 127.0.0.1,
// each test in its own temp folder, every wait bounded by a deadline.
#include <doctest/doctest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster.hpp"
#include "conductor/sha256.hpp"
#include "support/child_process.hpp"
#include "support/processes.hpp"
#include "support/temp_dir.hpp"
#include "wire_abuse.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using conductor::test::Cluster;
using conductor::test::contains;
using conductor::test::deadline_in;
using conductor::test::FlagOnExit;
using conductor::test::Handout;
using conductor::test::is_running_process;
using conductor::test::KillOnExit;
using conductor::test::read_file;
using conductor::test::read_file_if_present;
using conductor::test::split_lines;
using conductor::test::VersionSpec;
using conductor::test::wait_until;

namespace {

// Prints Keras-like progress, checks its input is there and writes a 4 KiB random model and a
// metrics file that records the CONDUCTOR_TYPE it saw.
constexpr const char* kTrainScript = R"(echo "Epoch 1/2"
echo "4/4 - 1s - loss: 0.6931 - val_loss: 0.6820"
echo "Epoch 2/2"
echo "4/4 - 1s - loss: 0.5000 - val_loss: 0.4900"
test -f data.csv || { echo "data.csv is missing" >&2; exit 9; }
head -c 4096 /dev/urandom > model.h5
echo "unit=$CONDUCTOR_TYPE" > metrics.txt
echo "loss=0.5" >> metrics.txt
)";

const std::vector<std::pair<std::string, std::string>> kPayload = {
    {"data.csv", "sequence,value\n1,0.5\n2,0.25\n"}};

VersionSpec training_version(const std::string& name, int target) {
  return VersionSpec{name, target, kTrainScript, kPayload};
}

// The text of <element> in an XML file we wrote ourselves or the server wrote flat.
std::string element_text(const std::string& xml, const std::string& element) {
  std::smatch match;
  std::regex pattern("<" + element + ">([^<]*)</" + element + ">");
  return std::regex_search(xml, match, pattern) ? match[1].str() : std::string("<missing>");
}

std::optional<Handout> last_handout_of(const std::vector<Handout>& handouts,
                                       const std::string& item) {
  std::optional<Handout> last;
  for (const auto& handout : handouts) {
    if (handout.item == item) last = handout;
  }
  return last;
}

void check_log_format(const Cluster& cluster) {
  static const std::regex kLine(
      R"(^\[\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)\] \[CL:\d+ QW:\d+ AW:\d+\] \S.*$)");
  auto lines = split_lines(cluster.server_log());
  CHECK(lines.size() >= 3);
  for (const auto& line : lines) {
    INFO("log line: " << line);
    CHECK(std::regex_match(line, kLine));
  }
}

}  // namespace

TEST_CASE("a server and three clients bring every version exactly to its target") {
  Cluster cluster("conductor-e2e-target");
  const std::map<std::string, int> targets = {{"global-v", 4}, {"local-v", 3}};
  conductor::test::write_configuration(cluster.server_dir(), 0.2,
                                       {training_version("global-v", 4)});
  conductor::test::write_local_version(cluster.server_dir(), training_version("local-v", 3));
  cluster.start_server();
  cluster.start_client("alpha", {{"CONDUCTOR_TYPE", "gpu"}});
  cluster.start_client("beta", {{"CONDUCTOR_TYPE", "cpu"}});
  cluster.start_client("gamma", {{"CONDUCTOR_TYPE", "cpu"}});

  bool overshot = false;
  auto all_at_target = [&] { return conductor::test::all_at_target(cluster, targets, overshot); };
  REQUIRE_MESSAGE(wait_until(deadline_in(90s), [&] { return all_at_target() || overshot; }),
                  cluster.diagnostics());
  CHECK_FALSE_MESSAGE(overshot, cluster.diagnostics());
  // Results still in flight would show up now; the versions must stay exactly at target.
  CHECK_FALSE_MESSAGE(wait_until(deadline_in(1500ms), [&] { return !all_at_target(); }),
                      cluster.diagnostics());

  const auto handouts = cluster.handouts();
  const std::set<std::string> expected_files = {"console.log", "meta.xml", "metrics.txt",
                                                "model.h5"};
  for (const auto& [version, target] : targets) {
    for (const auto& id : cluster.model_ids(version)) {
      const fs::path folder = cluster.version_dir(version) / "models" / id;
      INFO("model folder " << folder);
      auto names = conductor::test::list_names(folder);
      // Payload inputs (train.sh, data.csv, version.xml) must not come back as outputs.
      CHECK(std::set<std::string>(names.begin(), names.end()) == expected_files);
      CHECK(fs::file_size(folder / "model.h5") == 4096);

      const std::string console = read_file_if_present(folder / "console.log");
      CHECK(console.find("Epoch 1/2") != std::string::npos);
      CHECK(console.find("Epoch 2/2") != std::string::npos);
      CHECK(console.find("loss: 0.5000 - val_loss: 0.4900") != std::string::npos);

      const std::string meta = read_file_if_present(folder / "meta.xml");
      CHECK(element_text(meta, "ItemId") == id);
      CHECK(element_text(meta, "Epochs") == "2");
      const std::string node = element_text(meta, "NodeName");
      CHECK((node == "alpha" || node == "beta" || node == "gamma"));
      const std::string unit = element_text(meta, "ProcessingUnit");
      CHECK(unit == (node == "alpha" ? "gpu" : "cpu"));
      // The command saw the same CONDUCTOR_TYPE the client reported.
      CHECK(read_file_if_present(folder / "metrics.txt").find("unit=" + unit + "\n") !=
            std::string::npos);

      auto handout = last_handout_of(handouts, id);
      REQUIRE_MESSAGE(handout.has_value(), "no 'handed to' line for item " << id);
      CHECK(handout->version == version);
      CHECK(handout->host == node);
    }
  }
  check_log_format(cluster);
  // The apps run their loops on the main thread, which keeps the process's name (the one pgrep
  // and pkill match; Linux keeps 15 characters of it).
  CHECK(read_file("/proc/" + std::to_string(cluster.server().pid()) + "/comm") ==
        "conductor-serve\n");
  CHECK(read_file("/proc/" + std::to_string(cluster.client("alpha").pid()) + "/comm") ==
        "conductor-clien\n");

  for (const std::string name : {"alpha", "beta", "gamma"}) {
    INFO("client " << name << ": " << cluster.client(name).output());
    CHECK(cluster.client(name).stop(10s).exited_with(0));
  }
  auto server_exit = cluster.server().stop(10s);
  INFO("server output: " << cluster.server().output());
  CHECK(server_exit.exited_with(0));
}

TEST_CASE("an item held by a client that is SIGKILLed is finished by another under the same id") {
  Cluster cluster("conductor-e2e-kill");
  const fs::path flag = cluster.root() / "release";
  const fs::path started = cluster.root() / "started";
  FlagOnExit release(flag);
  // Says it runs, then holds its item until the test raises the flag; bounded so that an
  // orphaned copy never lingers.
  const std::string script = "echo \"Epoch 1/1\"\n: > '" + started.string() +
                             "'\ni=0\nwhile [ ! -e '" + flag.string() +
                             "' ]; do\n  i=$((i+1)); [ $i -gt 600 ] && exit 4\n  sleep 0.1\n"
                             "done\nhead -c 1024 /dev/urandom > model.h5\n";
  // No reserve nodes: a lone surviving client must be allowed to train.
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"slow", 1, script, {}}});
  cluster.start_server();
  cluster.start_client("victim");

  auto handed_to = [&](const std::string& host) -> std::optional<Handout> {
    for (const auto& handout : cluster.handouts()) {
      if (handout.host == host) return handout;
    }
    return std::nullopt;
  };
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return handed_to("victim").has_value(); }),
                  cluster.diagnostics());
  const Handout first = *handed_to("victim");
  CHECK(first.version == "slow");
  cluster.start_client("rescuer");
  // Let the command start before the kill, so the item really is mid-run.
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return fs::exists(started); }),
                  cluster.diagnostics());

  const auto killed_at = std::chrono::steady_clock::now();
  cluster.client("victim").kill(SIGKILL);
  auto victim_exit = cluster.client("victim").wait_for_exit(5s);
  REQUIRE(victim_exit.has_value());
  CHECK(victim_exit->signal == SIGKILL);

  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return handed_to("rescuer").has_value(); }),
                  cluster.diagnostics());
  const auto noticed_after = std::chrono::steady_clock::now() - killed_at;
  const Handout second = *handed_to("rescuer");
  CHECK(second.item == first.item);
  CHECK(second.version == "slow");
  CHECK(second.attempt > first.attempt);
  // Heartbeats every 200 ms with liveness 5 notice the loss in about a second.
  CHECK_MESSAGE(noticed_after < 5s,
                "re-handed after "
                    << std::chrono::duration_cast<std::chrono::milliseconds>(noticed_after).count()
                    << " ms");

  release.raise();
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return !cluster.model_ids("slow").empty(); }),
                  cluster.diagnostics());
  CHECK(cluster.model_ids("slow") == std::vector<std::string>{first.item});
  CHECK(fs::exists(cluster.version_dir("slow") / "models" / first.item / "model.h5"));
  CHECK_FALSE(wait_until(deadline_in(1s), [&] { return cluster.model_ids("slow").size() > 1; }));
  CHECK(cluster.server().is_running());
}

TEST_CASE(
    "a client restarted after SIGKILL first stops the commands its predecessor left running, "
    "then runs the item again") {
  Cluster cluster("conductor-e2e-leftovers");
  const fs::path leader_file = cluster.root() / "leader";
  const fs::path child_file = cluster.root() / "child";
  const fs::path go = cluster.root() / "go";
  // The first run leaves a child in its process group and waits for it; once `go` exists a
  // run trains at once.
  const std::string script = "if [ -e '" + go.string() +
                             "' ]; then head -c 1024 /dev/urandom > model.h5; exit 0; fi\n"
                             "sleep 120 &\necho $! > '" +
                             child_file.string() + ".tmp'\nmv '" + child_file.string() + ".tmp' '" +
                             child_file.string() + "'\necho $$ > '" + leader_file.string() +
                             ".tmp'\nmv '" + leader_file.string() + ".tmp' '" +
                             leader_file.string() + "'\nwait\n";
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"held", 1, script, {}}});
  cluster.start_server();
  cluster.start_client("crashy");
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return fs::exists(leader_file); }),
                  cluster.diagnostics());
  const pid_t leader = std::stoi(read_file(leader_file));
  const pid_t child = std::stoi(read_file(child_file));
  KillOnExit cleanup;
  cleanup.add(leader);
  cleanup.add(child);
  // Written right after the command started: long since, but the kill must not beat it.
  const fs::path record = cluster.root() / "clients" / "crashy" / "running" / "0";
  REQUIRE_MESSAGE(
      wait_until(deadline_in(10s), [&] { return !read_file_if_present(record).empty(); }),
      cluster.diagnostics());

  cluster.client("crashy").kill(SIGKILL);
  REQUIRE(cluster.client("crashy").wait_for_exit(10s).has_value());
  // What the client's death leaves: the command and its child go on.
  CHECK_FALSE(wait_until(deadline_in(500ms), [&] {
    return !is_running_process(leader) || !is_running_process(child);
  }));

  conductor::test::write_file(go, "go\n");
  // A console log the killed run left behind (one past 2 s would have it): no job of the new
  // run follows it, and the result that ends the item holds its own console.
  const fs::path stale_log = cluster.root() / "clients" / "crashy" / "logs" / "earlier-item.log";
  conductor::test::write_file(stale_log, "what a killed run said\n");
  conductor::test::ChildProcess again(conductor::test::ChildOptions{
      conductor::test::client_argv(cluster.endpoint(), cluster.root() / "clients" / "crashy",
                                   "crashy"),
      cluster.root() / "again.out",
      {},
      {}});
  CHECK_MESSAGE(
      wait_until(deadline_in(10s),
                 [&] { return !is_running_process(leader) && !is_running_process(child); }),
      again.output());
  const std::string stopped = "Start-up: stopped process group " + std::to_string(leader) + " (";
  CHECK_MESSAGE(wait_until(deadline_in(10s), [&] { return contains(again.output(), stopped); }),
                again.output());
  CHECK_MESSAGE(contains(again.output(), "sleep (" + std::to_string(child) + ")"), again.output());
  CHECK_MESSAGE(contains(again.output(), "left running in slot 0 (SIGTERM)"), again.output());
  REQUIRE_MESSAGE(
      wait_until(deadline_in(60s), [&] { return cluster.model_ids("held").size() == 1; }),
      cluster.diagnostics() << "\n--- restarted client\n"
                            << again.output());
  CHECK_FALSE(fs::exists(stale_log));
  CHECK(again.stop(10s).exited_with(0));
  // The run that stored the model recorded its group and cleared the record when it ended.
  CHECK(read_file(record).empty());
}

TEST_CASE("a running training item's console is followed in spool/live until its model is stored") {
  Cluster cluster("conductor-e2e-live");
  const fs::path flag = cluster.root() / "release";
  FlagOnExit release(flag);
  const std::string script = "echo 'Epoch 1/2'\necho 'first line of the run'\ni=0\nwhile [ ! -e '" +
                             flag.string() +
                             "' ]; do\n  i=$((i+1)); [ $i -gt 600 ] && exit 4\n  sleep 0.1\n"
                             "done\nhead -c 64 /dev/urandom > model.h5\n";
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"followed", 1, script, {}}});
  cluster.start_server();
  cluster.start_client("worker");
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return !cluster.handouts().empty(); }),
                  cluster.diagnostics());
  const fs::path live =
      cluster.server_dir() / "spool" / "live" / (cluster.handouts().front().item + ".log");
  REQUIRE_MESSAGE(wait_until(deadline_in(30s),
                             [&] {
                               return read_file_if_present(live).find("first line of the run") !=
                                      std::string::npos;
                             }),
                  cluster.diagnostics());
  CHECK(read_file(live).find("Epoch 1/2") != std::string::npos);
  // Past 2 s the client writes the console to logs/<item>.log as well, where a person on the
  // client's machine follows it; the file goes once the server has the result.
  const fs::path client_log =
      cluster.root() / "clients" / "worker" / "logs" / (cluster.handouts().front().item + ".log");
  REQUIRE_MESSAGE(
      wait_until(deadline_in(30s),
                 [&] {
                   return read_file_if_present(client_log).find("first line of the run") !=
                          std::string::npos;
                 }),
      cluster.diagnostics());

  release.raise();
  REQUIRE_MESSAGE(
      wait_until(deadline_in(30s), [&] { return cluster.model_ids("followed").size() == 1; }),
      cluster.diagnostics());
  CHECK_FALSE(fs::exists(live));
  const fs::path stored =
      cluster.version_dir("followed") / "models" / cluster.model_ids("followed").front();
  CHECK(read_file(stored / "console.log").find("first line of the run") != std::string::npos);
  CHECK_MESSAGE(wait_until(deadline_in(30s), [&] { return !fs::exists(client_log); }),
                cluster.diagnostics());
}

TEST_CASE("a large version and large results pass through the server's background worker intact") {
  // 12 MiB of payload and 12 MiB per result: both above the sizes the server packs and
  // unpacks on its network thread, so both go through the background worker.
  std::mt19937 random(7);
  const std::string data = conductor::test::random_bytes(random, 12u << 20);
  const std::string data_sha = conductor::sha256_hex(data);
  // The command proves its input arrived whole, then returns it as the model.
  const std::string script = "echo \"" + data_sha + "  data.bin\" | sha256sum -c - || exit 9\n"
                             "cp data.bin model.h5\n";
  Cluster cluster("conductor-e2e-large");
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"large", 3, script, {{"data.bin", data}}}});
  cluster.start_server();
  cluster.start_client("alpha");
  cluster.start_client("beta");
  REQUIRE_MESSAGE(wait_until(deadline_in(120s), [&] { return cluster.model_ids("large").size() >= 3; }),
                  cluster.diagnostics());
  CHECK_FALSE_MESSAGE(wait_until(deadline_in(1500ms), [&] { return cluster.model_ids("large").size() != 3; }),
                      cluster.diagnostics());
  for (const auto& id : cluster.model_ids("large")) {
    INFO("model " << id);
    CHECK(conductor::sha256_file(cluster.version_dir("large") / "models" / id / "model.h5") == data_sha);
  }
  // Nothing left half-done in the spool.
  CHECK(conductor::test::list_names(cluster.server_dir() / "spool" / "staging").empty());
  CHECK(cluster.server().stop(10s).exited_with(0));
}

TEST_CASE(
    "a server short of disk leaves a result with its client, naming the reserve, and stores it "
    "once it has room") {
  Cluster cluster("conductor-e2e-disk-reserve");
  conductor::test::write_configuration(cluster.server_dir(), 0.0, {training_version("tight", 1)});
  // A reserve of 4 EiB: no file system has that much free.
  cluster.start_server({"--min-free-mb", std::to_string(std::uint64_t{1} << 42)});
  cluster.start_client("worker");
  REQUIRE_MESSAGE(
      wait_until(deadline_in(60s),
                 [&] { return cluster.server_log().find("bytes free in") != std::string::npos; }),
      cluster.diagnostics());
  CHECK(cluster.server_log().find("writing it would leave less than " +
                                  std::to_string(std::uint64_t{1} << 62)) != std::string::npos);
  CHECK(cluster.model_ids("tight").empty());
  // Not the result's fault: no error log, and the item is not run again.
  CHECK(cluster.error_logs("tight").empty());
  REQUIRE(cluster.handouts().size() == 1);
  const std::string item = cluster.handouts().front().item;
  // With the reserve lifted, the client's next offer of the same result is stored.
  cluster.restart_server({"--min-free-mb", "0"});
  REQUIRE_MESSAGE(
      wait_until(deadline_in(60s), [&] { return cluster.model_ids("tight").size() == 1; }),
      cluster.diagnostics());
  CHECK(cluster.model_ids("tight").front() == item);
  CHECK(wait_until(deadline_in(10s), [&] {
    return conductor::test::list_names(cluster.server_dir() / "spool" / "staging").empty();
  }));
}

TEST_CASE("a client short of disk fails its item naming its reserve; one with room trains it") {
  Cluster cluster("conductor-e2e-client-reserve");
  conductor::test::write_configuration(cluster.server_dir(), 0.0, {training_version("cramped", 1)});
  cluster.start_server();
  // A reserve of 4 EiB: the package is not even downloaded.
  cluster.start_client("full", {}, {"--min-free-mb", std::to_string(std::uint64_t{1} << 42)});
  REQUIRE_MESSAGE(
      wait_until(deadline_in(60s), [&] { return !cluster.error_logs("cramped").empty(); }),
      cluster.diagnostics());
  cluster.client("full").stop(10s);
  const std::string why = conductor::test::read_file(cluster.version_dir("cramped") / "errorlogs" /
                                                     cluster.error_logs("cramped").front());
  CHECK_MESSAGE(
      why.find("not downloaded: it would leave less than " +
               std::to_string(std::uint64_t{1} << 62) + " bytes free") != std::string::npos,
      why);
  CHECK(cluster.model_ids("cramped").empty());
  // The item goes back to the queue; a client with room trains it.
  cluster.start_client("roomy");
  REQUIRE_MESSAGE(
      wait_until(deadline_in(60s), [&] { return cluster.model_ids("cramped").size() == 1; }),
      cluster.diagnostics());
}

TEST_CASE(
    "a failing command leaves capped error logs and no model while another version "
    "reaches its target") {
  Cluster cluster("conductor-e2e-failure");
  const std::string failing = "echo \"Epoch 1/1\"\necho \"about to fail\"\nexit 3\n";
  conductor::test::write_configuration(
      cluster.server_dir(), 0.0,
      {VersionSpec{"broken", 2, failing, {}}, training_version("healthy", 3)});
  cluster.start_server();
  cluster.start_client("one");
  cluster.start_client("two");

  // An item handed out 12 times has failed at least 11 times: past the 10-log cap.
  auto most_retried = [&]() -> std::pair<std::string, int> {
    std::map<std::string, int> handed;
    for (const auto& handout : cluster.handouts()) {
      if (handout.version == "broken") ++handed[handout.item];
    }
    std::pair<std::string, int> most{"", 0};
    for (const auto& [item, count] : handed) {
      if (count > most.second) most = {item, count};
    }
    return most;
  };
  REQUIRE_MESSAGE(
      wait_until(
          deadline_in(90s),
          [&] { return cluster.model_ids("healthy").size() >= 3 && most_retried().second >= 12; }),
      cluster.diagnostics());
  CHECK(cluster.model_ids("healthy").size() == 3);
  CHECK(cluster.model_ids("broken").empty());

  const std::regex kErrorLogName(R"(^(.+)-(\d+)\.log$)");
  std::map<std::string, int> logs_per_item;
  std::set<std::string> broken_items;
  for (const auto& handout : cluster.handouts()) {
    if (handout.version == "broken") broken_items.insert(handout.item);
  }
  const auto names = cluster.error_logs("broken");
  CHECK(!names.empty());
  for (const auto& name : names) {
    INFO("error log " << name);
    std::smatch match;
    REQUIRE(std::regex_match(name, match, kErrorLogName));
    CHECK(broken_items.count(match[1].str()) == 1);
    const int n = std::stoi(match[2].str());
    CHECK((n >= 0 && n <= 9));
    ++logs_per_item[match[1].str()];
    CHECK(read_file(cluster.version_dir("broken") / "errorlogs" / name).find("about to fail") !=
          std::string::npos);
  }
  for (const auto& [item, count] : logs_per_item) {
    INFO("item " << item);
    CHECK(count <= 10);
  }
  const auto [retried, handed] = most_retried();
  INFO("item " << retried << " was handed out " << handed << " times");
  CHECK(logs_per_item[retried] == 10);
  CHECK(cluster.error_logs("healthy").empty());
  CHECK(cluster.server().is_running());
}

namespace {

// Random bytes on raw connections, then DEALERs that complete the ZMTP handshake and send
// malformed multipart messages. Returns how many DEALERs got an ERROR reply back.
int abuse_server(int port, std::mt19937& random) {
  using conductor::test::random_bytes;
  using conductor::test::RawConnection;
  namespace zmtp = conductor::test::zmtp;
  for (int i = 0; i < 8; ++i) {
    RawConnection connection(port);
    connection.send(random_bytes(random, 64 + 1024 * static_cast<std::size_t>(i)));
  }
  const std::string signature = std::string("CWP") + '\x01';
  const std::vector<std::vector<std::string>> messages = {
      {random_bytes(random, 40)},
      {""},
      {signature + '\x01', random_bytes(random, 100)},            // HELLO, header not msgpack
      {signature + '\x01', "\xdf\xff\xff\xff\xff"},               // map of 4 billion entries
      {signature + '\x01', "\x81\xa4name\xdb\xff\xff\xff\xf0"},   // string of 4 GiB
      {signature + '\x03', "\x80", "extra", "frames", "beyond"},  // READY with 5 frames
      {signature + '\x07', "\x80", random_bytes(random, 300)},    // UPLOAD before HELLO
      {signature + '\x06', "\x93\x01\x02\x03"},                   // header is an array
      {std::string("CWP") + '\x02' + '\x01', "\x80"},             // unknown major version
      {signature + '\xee', "\x80"},                               // unknown message type
      {"CW"},                                                     // short signature
  };
  int answered = 0;
  for (int i = 0; i < 3; ++i) {
    RawConnection dealer(port);
    if (!zmtp::handshake_as_dealer(dealer, 5s)) continue;
    for (const auto& frames : messages) dealer.send(zmtp::message(frames));
    if (dealer.receive_until(signature + '\x48', 5s)) ++answered;  // ERROR
  }
  RawConnection liar(port);
  if (zmtp::handshake_as_dealer(liar, 5s)) liar.send(zmtp::lying_frame_header(1ull << 40));
  return answered;
}

// Abuses the server from a thread of its own for as long as it lives, so the garbage overlaps
// the run; joined at scope exit even when a check fails first.
class BackgroundAbuse {
 public:
  BackgroundAbuse(int port, unsigned seed)
      : thread_([this, port, seed] {
          std::mt19937 random(seed);
          try {
            while (!stop_.load()) {
              answered_ += abuse_server(port, random);
              ++rounds_;
            }
          } catch (const std::exception& e) {
            failure_ = e.what();  // read only after join
          }
        }) {}
  ~BackgroundAbuse() { finish(); }
  BackgroundAbuse(const BackgroundAbuse&) = delete;
  BackgroundAbuse& operator=(const BackgroundAbuse&) = delete;

  void finish() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  int rounds() const { return rounds_.load(); }
  int answered() const { return answered_.load(); }
  const std::string& failure() const { return failure_; }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> rounds_{0};
  std::atomic<int> answered_{0};
  std::string failure_;
  std::thread thread_;  // last: starts once the counters exist
};

}  // namespace

TEST_CASE("garbage on the server's port does not disturb a run") {
  Cluster cluster("conductor-e2e-garbage");
  // Slow enough that the garbage overlaps items in flight.
  conductor::test::write_configuration(
      cluster.server_dir(), 0.0,
      {VersionSpec{"steady", 4, std::string("sleep 0.3\n") + kTrainScript, kPayload}});
  cluster.start_server();
  const auto seed = std::random_device{}();
  CAPTURE(seed);
  std::mt19937 random(seed);

  // A peer that greets and then stays silent for the whole run.
  conductor::test::RawConnection idle(cluster.port());
  idle.send(conductor::test::zmtp::greeting());

  CHECK_MESSAGE(abuse_server(cluster.port(), random) == 3, cluster.diagnostics());
  REQUIRE(cluster.server().is_running());
  BackgroundAbuse abuse(cluster.port(), seed + 1);
  cluster.start_client("worker-a");
  cluster.start_client("worker-b");
  REQUIRE_MESSAGE(
      wait_until(deadline_in(90s), [&] { return cluster.model_ids("steady").size() >= 4; }),
      cluster.diagnostics());
  abuse.finish();
  INFO("abuse rounds: " << abuse.rounds() << ", ERROR replies: " << abuse.answered());
  CHECK(abuse.failure() == "");
  CHECK(abuse.rounds() > 0);
  CHECK(abuse.answered() == 3 * abuse.rounds());
  CHECK(cluster.model_ids("steady").size() == 4);
  CHECK_MESSAGE(cluster.server().is_running(), cluster.diagnostics());
  check_log_format(cluster);
  auto server_exit = cluster.stop_all();
  REQUIRE(server_exit.has_value());
  CHECK(server_exit->exited_with(0));
}

TEST_CASE("the server refuses a broken configuration with exit code 3 and leaves it untouched") {
  Cluster cluster("conductor-e2e-config");
  fs::path broken;
  std::string expected_location;
  SUBCASE("an invalid value in config.xml") {
    broken = cluster.server_dir() / "config" / "config.xml";
    conductor::test::write_file(broken,
                                "<?xml version=\"1.0\"?>\n"
                                "<ConductorConfiguration>\n"
                                "  <Versions />\n"
                                "  <ReserveNodes>lots</ReserveNodes>\n"
                                "</ConductorConfiguration>\n");
    expected_location = broken.string() + ":4";
  }
  SUBCASE("malformed XML in config.xml") {
    broken = cluster.server_dir() / "config" / "config.xml";
    conductor::test::write_file(broken,
                                "<?xml version=\"1.0\"?>\n"
                                "<ConductorConfiguration>\n"
                                "  <Versions>\n"
                                "  </Version>\n");
    expected_location = broken.string() + ":";
  }
  SUBCASE("an invalid value in a local version.xml") {
    conductor::test::write_configuration(cluster.server_dir(), 0.2, {});
    broken = cluster.version_dir("local") / "version.xml";
    conductor::test::write_file(broken,
                                "<?xml version=\"1.0\"?>\n"
                                "<Version>\n"
                                "  <Name>local</Name>\n"
                                "  <TargetModels>-2</TargetModels>\n"
                                "</Version>\n");
    expected_location = broken.string() + ":4";
  }
  const std::string before = read_file(broken);
  conductor::test::ChildProcess server(
      conductor::test::ChildOptions{{conductor::test::kServerBin.string(), "--workdir",
                                     cluster.server_dir().string(), "--bind", "tcp://127.0.0.1:*"},
                                    cluster.root() / "server.out",
                                    {},
                                    {}});
  auto status = server.wait_for_exit(15s);
  const std::string output = server.output();
  INFO("server output:\n" << output);
  REQUIRE(status.has_value());
  CHECK(status->exited_with(3));
  CHECK(output.find(expected_location) != std::string::npos);
  CHECK(read_file(broken) == before);
}

TEST_CASE("the server exits 2 for bad arguments and 4 when it cannot bind") {
  Cluster cluster("conductor-e2e-arguments");
  conductor::test::write_configuration(cluster.server_dir(), 0.2, {});
  auto run_server = [&](std::vector<std::string> arguments) {
    arguments.insert(arguments.begin(), conductor::test::kServerBin.string());
    conductor::test::ChildProcess server(
        conductor::test::ChildOptions{arguments, cluster.root() / "second.out", {}, {}});
    auto status = server.wait_for_exit(15s);
    INFO("output:\n" << server.output());
    REQUIRE(status.has_value());
    return *status;
  };
  auto check_exit = [](const conductor::test::ExitStatus& status, int expected) {
    CHECK_MESSAGE(status.exited_with(expected),
                  "expected exit code " << expected << ", got " << status.describe());
  };
  const std::vector<std::string> safe = {"--workdir", cluster.server_dir().string(), "--bind",
                                         "tcp://127.0.0.1:*"};
  auto with_safe = [&](std::vector<std::string> arguments) {
    arguments.insert(arguments.begin(), safe.begin(), safe.end());
    return arguments;
  };
  check_exit(run_server(with_safe({"--no-such-option"})), 2);
  check_exit(run_server(with_safe({"--heartbeat-ms", "banana"})), 2);

  cluster.start_server();
  const fs::path other = cluster.root() / "other";
  check_exit(run_server({"--workdir", other.string(), "--bind", cluster.endpoint()}), 4);
  CHECK(cluster.server().is_running());
}

TEST_CASE(
    "a result the server has not acknowledged survives the client's restart: stored once, not run "
    "again") {
  Cluster cluster("conductor-e2e-kept");
  enum class Ending { kKilledOnceKept, kStoppedAfterJob, kStoppedWhilePacking };
  Ending ending = Ending::kKilledOnceKept;
  SUBCASE("killed once the result is in the outbox") {}
  SUBCASE("stopped right after the job") { ending = Ending::kStoppedAfterJob; }
  SUBCASE("stopped while the finished job packs its result") {
    ending = Ending::kStoppedWhilePacking;
  }
  const fs::path flag = cluster.root() / "release";
  const fs::path runs = cluster.root() / "runs.log";
  FlagOnExit release(flag);
  // Short once released: its small result is held in memory at first (the client writes it to
  // the outbox only 2 s after the job, or when it stops). A result of 64 MiB is packed into the
  // outbox after the command, which takes a while: a stop then comes while it is packed.
  const std::string model_bytes = ending == Ending::kStoppedWhilePacking ? "64M" : "1024";
  const std::string script = "echo start >> '" + runs.string() + "'\ni=0\nwhile [ ! -e '" +
                             flag.string() +
                             "' ]; do\n  i=$((i+1)); [ $i -gt 600 ] && exit 4\n  sleep 0.05\n"
                             "done\necho kept-result-console\nhead -c " +
                             model_bytes + " /dev/urandom > model.h5\n";
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"v", 1, script, {}}});
  cluster.start_server();
  const fs::path workdir = cluster.root() / "clients" / "keeper";
  cluster.start_client("keeper");
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return fs::exists(runs); }),
                  cluster.diagnostics());

  // The server is frozen: the result is offered and never acknowledged.
  cluster.server().kill(SIGSTOP);
  release.raise();
  auto& keeper = cluster.client("keeper");
  auto kept = [&] {
    std::size_t n = 0;
    for (const auto& entry : fs::directory_iterator(workdir / "outbox")) {
      n += entry.path().extension() == ".json" ? 1 : 0;
    }
    return n;
  };
  if (ending == Ending::kStoppedWhilePacking) {
    // Stopped as soon as packing begins, which is after the command ended: the job is still
    // packing (or has just finished).
    auto packing = [&] {
      std::error_code ec;
      for (const auto& entry : fs::directory_iterator(workdir / "outbox", ec)) {
        const std::string name = entry.path().filename().string();
        if (name.ends_with(".tar.part") || name.ends_with(".tar")) return true;
      }
      return false;
    };
    REQUIRE_MESSAGE(wait_until(deadline_in(30s), packing, 1ms), cluster.diagnostics());
    CHECK(keeper.stop(30s).exited_with(0));
    CHECK_MESSAGE(kept() == 1, keeper.output());
  } else {
    const bool finished =
        wait_until(deadline_in(30s), [&] { return contains(keeper.output(), "finished in"); });
    REQUIRE_MESSAGE(finished, cluster.diagnostics());
    if (ending == Ending::kKilledOnceKept) {
      REQUIRE_MESSAGE(wait_until(deadline_in(15s), [&] { return kept() == 1; }),
                      cluster.diagnostics());
      keeper.kill(SIGKILL);
      REQUIRE(keeper.wait_for_exit(10s).has_value());
    } else {
      CHECK(keeper.stop(10s).exited_with(0));
      CHECK(kept() == 1);
    }
  }
  cluster.server().kill(SIGCONT);

  // The same client folder again: the kept result is offered and stored, the job not run again.
  conductor::test::ChildProcess again(conductor::test::ChildOptions{
      conductor::test::client_argv(cluster.endpoint(), workdir, "keeper"),
      cluster.root() / "again.out",
      {},
      {}});
  REQUIRE_MESSAGE(wait_until(deadline_in(60s), [&] { return cluster.model_ids("v").size() == 1; }),
                  cluster.diagnostics() << "\n--- restarted client\n"
                                        << again.output());
  // The frozen server may have stored it already from the RESULT the first client sent before
  // it went (a small result travels with it); the restarted client offers it all the same.
  CHECK_MESSAGE(wait_until(deadline_in(30s),
                           [&] {
                             return contains(again.output(),
                                             "Resuming the unacknowledged result of item");
                           }),
                again.output());
  const auto ids = cluster.model_ids("v");
  CHECK(contains(read_file(cluster.version_dir("v") / "models" / ids.front() / "console.log"),
                 "kept-result-console"));
  CHECK(split_lines(read_file(runs)).size() == 1);
  REQUIRE_MESSAGE(wait_until(deadline_in(15s), [&] { return kept() == 0; }), again.output());
  CHECK(again.stop(10s).exited_with(0));
  CHECK(cluster.server().stop(10s).exited_with(0));
}
