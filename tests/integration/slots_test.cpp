// Client slots and version requirements with the real apps on 127.0.0.1: several items at once
// per client (CPU slots, one per GPU with its own CUDA_VISIBLE_DEVICES), items of a version that
// requires a GPU only on GPU clients, `conductorctl explain`, and a client with several items
// that goes silent or is killed. Overlap is proven with files the commands write, never with
// timings; every wait is bounded.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "cluster.hpp"
#include "conductor/package.hpp"
#include "conductor/sha256.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using conductor::test::ChildOptions;
using conductor::test::ChildProcess;
using conductor::test::Cluster;
using conductor::test::contains;
using conductor::test::deadline_in;
using conductor::test::FlagOnExit;
using conductor::test::parse_json;
using conductor::test::read_file_if_present;
using conductor::test::split_lines;
using conductor::test::VersionSpec;
using conductor::test::wait_until;
using json = nlohmann::json;

namespace {

// train.sh that appends "start slot=<CONDUCTOR_SLOT> gpu=<CUDA_VISIBLE_DEVICES>
// order=<CUDA_DEVICE_ORDER> dir=<folder>" to
// `runs` (outside every working folder), then waits until the line after `wait_for` exists:
// either `runs` holds `starts` start lines (the items run side by side, or none ever ends) or
// a flag file. Bounded, so that an orphaned copy never lingers. Then it writes model.h5, its
// CUDA_VISIBLE_DEVICES into gpu.txt and its CONDUCTOR_TYPE into unit.txt, and appends "end".
std::string recording_script(const fs::path& runs, const std::string& wait_for) {
  const std::string log = "'" + runs.string() + "'";
  return "echo \"Epoch 1/1\"\n"
         "echo \"start slot=$CONDUCTOR_SLOT gpu=${CUDA_VISIBLE_DEVICES-unset} "
         "order=${CUDA_DEVICE_ORDER-unset} dir=$(pwd)\" >> " +
         log + "\ni=0\nuntil " + wait_for +
         "; do\n  i=$((i+1)); [ $i -gt 600 ] && exit 4\n  sleep 0.1\ndone\n"
         "printf '%s' \"${CUDA_VISIBLE_DEVICES-unset}\" > gpu.txt\n"
         "printf '%s' \"$CONDUCTOR_TYPE\" > unit.txt\n"
         "head -c 256 /dev/urandom > model.h5\n"
         "echo \"end slot=$CONDUCTOR_SLOT\" >> " +
         log + "\n";
}

// Waits until `runs` holds `starts` start lines.
std::string side_by_side(const fs::path& runs, int starts) {
  return recording_script(runs, "[ \"$(grep -c '^start' '" + runs.string() + "')\" -ge " +
                                    std::to_string(starts) + " ]");
}

// Waits until `flag` exists.
std::string until_flag(const fs::path& runs, const fs::path& flag) {
  return recording_script(runs, "[ -e '" + flag.string() + "' ]");
}

std::size_t count_prefix(const std::vector<std::string>& lines, const std::string& prefix) {
  std::size_t n = 0;
  for (const auto& line : lines) n += line.rfind(prefix, 0) == 0 ? 1 : 0;
  return n;
}

// The start lines recording_script wrote so far.
std::size_t starts(const fs::path& runs) {
  return count_prefix(split_lines(read_file_if_present(runs)), "start");
}

// Waits until version "v" holds `items` models of side_by_side items and checks that they ran at
// the same time: all `items` started before any ended. Returns the start lines.
std::vector<std::string> side_by_side_starts(const Cluster& cluster, const fs::path& runs, int items) {
  REQUIRE_MESSAGE(
      wait_until(deadline_in(60s),
                 [&] { return cluster.model_ids("v").size() == static_cast<std::size_t>(items); }),
      cluster.diagnostics() << "--- runs.log\n" << read_file_if_present(runs));
  const auto lines = split_lines(read_file_if_present(runs));
  INFO("runs.log:\n" << read_file_if_present(runs));
  REQUIRE(lines.size() == 2 * static_cast<std::size_t>(items));
  const std::vector<std::string> started(lines.begin(), lines.begin() + items);
  CHECK(count_prefix(started, "start") == static_cast<std::size_t>(items));
  CHECK(count_prefix({lines.begin() + items, lines.end()}, "end") == static_cast<std::size_t>(items));
  return started;
}

// The value of `key=` in a "start ..." line of recording_script.
std::string field(const std::string& line, const std::string& key) {
  std::smatch match;
  std::regex pattern(key + "=(\\S*)");
  return std::regex_search(line, match, pattern) ? match[1].str() : "";
}

std::string model_file(const Cluster& cluster, const std::string& version, const std::string& id,
                       const std::string& name) {
  return read_file_if_present(cluster.version_dir(version) / "models" / id / name);
}

// Sends one CWP/1 message by hand: [routing id (a ROUTER's)][signature][msgpack header]
// [payload, when given].
void send_cwp(zmq::socket_t& socket, std::uint8_t type, const json& header,
              const zmq::message_t* routing = nullptr, const std::string* payload = nullptr) {
  if (routing) socket.send(zmq::buffer(routing->data(), routing->size()), zmq::send_flags::sndmore);
  const char signature[] = {'C', 'W', 'P', 1, static_cast<char>(type)};
  const auto bytes = json::to_msgpack(header);
  socket.send(zmq::buffer(signature, sizeof signature), zmq::send_flags::sndmore);
  socket.send(zmq::buffer(bytes), payload ? zmq::send_flags::sndmore : zmq::send_flags::none);
  if (payload) socket.send(zmq::buffer(*payload), zmq::send_flags::none);
}

// The frames of the next message within `limit`; nullopt when none came.
std::optional<std::vector<zmq::message_t>> receive_frames(zmq::socket_t& socket,
                                                          std::chrono::milliseconds limit) {
  zmq::pollitem_t items[] = {{socket.handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(items, 1, limit);
  if (!(items[0].revents & ZMQ_POLLIN)) return std::nullopt;
  std::vector<zmq::message_t> frames;
  REQUIRE(zmq::recv_multipart(socket, std::back_inserter(frames)));
  return frames;
}

constexpr std::uint8_t kHello = 0x01, kHeartbeat = 0x02, kReady = 0x03, kResult = 0x06,
                       kFetch = 0x04, kFailed = 0x08, kControl = 0x10, kWelcome = 0x41,
                       kAssign = 0x43, kAck = 0x46, kCancel = 0x47, kError = 0x48,
                       kControlReply = 0x50, kChunk = 0x44;

// A server by hand: a ROUTER on 127.0.0.1, and a real conductor-client connected to it
// (`name`, heartbeat 200 ms, `extra` options), working and writing its output in `root`.
struct ServerByHand {
  ServerByHand(const fs::path& root, const std::string& name,
               const std::vector<std::string>& extra = {})
      : router(bound_router(context)),
        client(conductor::test::ChildOptions{
            client_argv(root, name, extra), root / "client.out", {}, {}}) {}

  zmq::context_t context;
  zmq::socket_t router;
  conductor::test::ChildProcess client;

 private:
  static zmq::socket_t bound_router(zmq::context_t& context) {
    zmq::socket_t router(context, zmq::socket_type::router);
    router.set(zmq::sockopt::linger, 0);
    router.bind("tcp://127.0.0.1:*");
    return router;
  }
  std::vector<std::string> client_argv(const fs::path& root, const std::string& name,
                                       const std::vector<std::string>& extra) const {
    std::vector<std::string> argv = {conductor::test::kClientBin.string(),
                                     router.get(zmq::sockopt::last_endpoint),
                                     "--workdir",
                                     (root / "client").string(),
                                     "--name",
                                     name,
                                     "--heartbeat-ms",
                                     "200"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }
};

// A client speaking CWP/1 by hand: as it was before slots (HELLO without slots, READY as an
// empty map, the held item in the running_* fields), or, through take_one_item(), as a client
// with one slot.
class ClientBeforeSlots {
 public:
  explicit ClientBeforeSlots(const std::string& endpoint) : socket_(context_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
  }

  void send(std::uint8_t type, const json& header) { send_cwp(socket_, type, header); }
  // With a payload frame after the header (RESULT with its archive inline).
  void send(std::uint8_t type, const json& header, const std::string& payload) {
    send_cwp(socket_, type, header, nullptr, &payload);
  }

  // The next message of `type` within `limit` (others are skipped), as its header.
  std::optional<json> receive(std::uint8_t type, std::chrono::milliseconds limit = 10s) {
    const auto deadline = deadline_in(limit);
    while (std::chrono::steady_clock::now() < deadline) {
      auto frames = receive_frames(socket_, 100ms);
      if (!frames) continue;
      REQUIRE(frames->size() == 2);
      if ((*frames)[0].data<std::uint8_t>()[4] != type) continue;
      return json::from_msgpack((*frames)[1].to_string());
    }
    return std::nullopt;
  }

  // HELLO as a client with one slot (`slots` 1), then READY for it: the WELCOME and the ASSIGN
  // that follow, both required.
  std::pair<json, json> take_one_item(const Cluster& cluster) {
    send(kHello, {{"protocol", 1},
                  {"client_id", "hand-1"},
                  {"host", "hand"},
                  {"type", "cpu"},
                  {"slots", 1}});
    auto welcome = receive(kWelcome);
    REQUIRE_MESSAGE(welcome.has_value(), cluster.diagnostics());
    send(kReady, {{"slot", 0}});
    auto assign = receive(kAssign);
    REQUIRE_MESSAGE(assign.has_value(), cluster.diagnostics());
    return {*welcome, *assign};
  }

  // RESULT of `assigned` with `archive` inline, naming `ready_slot` when given.
  void offer_result(const json& assigned, const std::string& archive,
                    std::optional<int> ready_slot = std::nullopt) {
    json offer = {{"item", assigned.at("item")},
                  {"attempt", assigned.at("attempt")},
                  {"size", archive.size()},
                  {"sha256", conductor::sha256_hex(archive)},
                  {"duration", 0.5},
                  {"epochs", 0},
                  {"last_epoch", 0.0}};
    if (ready_slot) offer["ready_slot"] = *ready_slot;
    send(kResult, offer, archive);
  }

 private:
  zmq::context_t context_;
  zmq::socket_t socket_;
};


}  // namespace

TEST_CASE("a client from before slots is served as before: one slot, its item taken back on HELLO") {
  Cluster cluster("conductor-slots-old-client");
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"v", 2, "sleep 30\n", {}}});
  // This hand-made client sends no heartbeats: a long lease keeps its item while it is silent.
  cluster.start_server({"--lease-ms", "60000"});
  const json hello = {{"protocol", 1}, {"client_id", "old-1"}, {"host", "old"}, {"type", "cpu"}};
  std::string item;
  {
    ClientBeforeSlots old(cluster.endpoint());
    old.send(kHello, hello);
    auto welcome = old.receive(kWelcome);
    REQUIRE(welcome.has_value());
    CHECK(welcome->value("slots", -1) == 1);
    old.send(kReady, json::object());
    auto assign = old.receive(kAssign);
    REQUIRE_MESSAGE(assign.has_value(), cluster.diagnostics());
    item = assign->at("item").get<std::string>();
    CHECK(assign->value("slot", -1) == 0);
    // READY again (an ASSIGN it lost, say): the same item, not a second one.
    old.send(kReady, json::object());
    auto again = old.receive(kAssign);
    REQUIRE(again.has_value());
    CHECK(again->at("item") == item);
  }
  // Back on a new connection, naming its item the old way: taken back, nothing cancelled.
  ClientBeforeSlots back(cluster.endpoint());
  json reconnect = hello;
  reconnect.update({{"running_item", item}, {"running_version", "v"}, {"running_attempt", 0},
                    {"running_type", "training"}});
  back.send(kHello, reconnect);
  REQUIRE(back.receive(kWelcome).has_value());
  REQUIRE_MESSAGE(wait_until(deadline_in(10s),
                             [&] { return contains(cluster.server_log(), "Client old resumed item " + item); }),
                  cluster.diagnostics());
  CHECK_FALSE(back.receive(kCancel, 1s).has_value());
  json status = parse_json(cluster.ctl({"status", "--json"}));
  REQUIRE(status["active"].size() == 1);
  CHECK(status["active"][0]["id"] == item);
  CHECK(status["active"][0]["slot"] == 0);
}

TEST_CASE("a RESULT or FAILED naming its ready_slot gets the slot's next item with its ACK") {
  Cluster cluster("conductor-slots-ready-with-ack");
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"v", 6, "sleep 30\n", {}}});
  // This hand-made client sends no heartbeats: a long liveness keeps it connected meanwhile.
  cluster.start_server({"--lease-ms", "60000", "--liveness", "100"});
  ClientBeforeSlots client(cluster.endpoint());  // speaks CWP/1 by hand, with one slot
  const auto [welcome, assign] = client.take_one_item(cluster);
  CHECK(welcome.value("ready_with_ack", false));

  const std::string archive =
      conductor::pack_to_memory({conductor::PackEntry::in_memory("model.h5", "weights")});
  auto result = [&](const json& assigned, std::optional<int> ready_slot) {
    client.offer_result(assigned, archive, ready_slot);
  };

  // Stored, and the next item follows without a READY.
  result(assign, 0);
  auto ack = client.receive(kAck);
  REQUIRE_MESSAGE(ack.has_value(), cluster.diagnostics());
  CHECK(ack->at("item") == assign.at("item"));
  CHECK(ack->at("status") == "stored");
  CHECK(ack->value("took_ready", false));
  auto next = client.receive(kAssign, 5s);
  REQUIRE_MESSAGE(next.has_value(), cluster.diagnostics());
  CHECK(next->at("item") != assign.at("item"));

  // Without ready_slot the slot waits for its READY, as before.
  result(*next, std::nullopt);
  ack = client.receive(kAck);
  REQUIRE(ack.has_value());
  CHECK(ack->at("status") == "stored");
  CHECK_FALSE(ack->value("took_ready", true));
  CHECK_FALSE(client.receive(kAssign, 1s).has_value());
  client.send(kReady, {{"slot", 0}});
  auto third = client.receive(kAssign);
  REQUIRE(third.has_value());

  // A failure works the same way: the item goes back to the queue, the slot gets one.
  client.send(kFailed, {{"item", third->at("item")},
                        {"attempt", third->at("attempt")},
                        {"reason", "exit code 1"},
                        {"log", "boom"},
                        {"duration", 0.1},
                        {"ready_slot", 0}});
  ack = client.receive(kAck);
  REQUIRE(ack.has_value());
  CHECK(ack->at("status") == "failure-recorded");
  CHECK(ack->value("took_ready", false));
  auto fourth = client.receive(kAssign, 5s);
  REQUIRE_MESSAGE(fourth.has_value(), cluster.diagnostics());

  // A slot the client does not have is refused by name, and nothing is stored.
  const auto stored = cluster.model_ids("v").size();
  result(*fourth, 1);
  auto error = client.receive(kError);
  REQUIRE(error.has_value());
  CHECK(contains(error->at("message").get<std::string>(), "ready_slot 1"));
  CHECK(cluster.model_ids("v").size() == stored);
}

TEST_CASE("an operator's upload may not take a work item's id; the item's result is stored") {
  Cluster cluster("conductor-slots-upload-ids");
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"v", 1, "sleep 30\n", {}}});
  cluster.start_server({"--lease-ms", "60000", "--liveness", "100"});
  ClientBeforeSlots client(cluster.endpoint());  // speaks CWP/1 by hand, with one slot
  const json assign = client.take_one_item(cluster).second;
  const std::string item = assign.at("item");
  const std::string archive =
      conductor::pack_to_memory({conductor::PackEntry::in_memory("model.h5", "weights")});
  // An add-version upload under the item's id is refused before anything is pulled.
  client.send(kControl, {{"request", item},
                         {"command", "add-version"},
                         {"args",
                          {{"name", "other"},
                           {"size", std::to_string(archive.size())},
                           {"sha256", conductor::sha256_hex(archive)}}}});
  auto reply = client.receive(kControlReply);
  REQUIRE_MESSAGE(reply.has_value(), cluster.diagnostics());
  CHECK_FALSE(reply->at("ok").get<bool>());
  CHECK(contains(reply->at("error").get<std::string>(), "is a work item's id"));
  // The item's own result is still taken.
  client.offer_result(assign, archive);
  auto ack = client.receive(kAck);
  REQUIRE_MESSAGE(ack.has_value(), cluster.diagnostics());
  CHECK(ack->at("status") == "stored");
  CHECK(cluster.model_ids("v") == std::vector<std::string>{item});
}

TEST_CASE("a FETCH for more than WELCOME's chunk size is refused by name") {
  Cluster cluster("conductor-slots-fetch-length");
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"v", 1, "sleep 30\n", {}}});
  cluster.start_server({"--lease-ms", "60000", "--liveness", "100"});
  ClientBeforeSlots client(cluster.endpoint());
  const auto [welcome, assign] = client.take_one_item(cluster);
  const std::uint64_t chunk = welcome.at("chunk_size");
  client.send(kFetch, {{"blob", assign.at("blob")}, {"offset", 0}, {"length", chunk + 1}});
  auto error = client.receive(kError);
  REQUIRE_MESSAGE(error.has_value(), cluster.diagnostics());
  CHECK(error->at("message") == "FETCH refused: length " + std::to_string(chunk + 1) +
                                    " above the chunk size " + std::to_string(chunk));
  CHECK(error->at("blob") == assign.at("blob"));
}

TEST_CASE("a client with 3 slots asks a server from before slots for one item at a time") {
  conductor::test::TempDir root("conductor-slots-old-server");
  // The old server, by hand: a ROUTER that answers HELLO with a WELCOME without `slots`.
  ServerByHand server(root.path(), "new", {"--slots", "3"});
  auto& [context, router, client] = server;

  std::vector<json> readies;
  bool welcomed = false;
  const auto deadline = deadline_in(3s);  // READY comes at once, and again after 1 s of nothing
  while (std::chrono::steady_clock::now() < deadline) {
    auto received = receive_frames(router, 50ms);
    if (!received) continue;
    auto& frames = *received;
    REQUIRE(frames.size() == 3);
    const auto type = frames[1].data<std::uint8_t>()[4];
    const json header = json::from_msgpack(frames[2].to_string());
    if (type == kHello) {
      CHECK(header.at("slots") == 3);
      send_cwp(router, kWelcome, {{"session", "s"}, {"heartbeat_ms", 200}, {"liveness", 5}}, &frames[0]);
      welcomed = true;
    } else if (type == kReady) {
      readies.push_back(header);
    } else if (type == kHeartbeat) {
      send_cwp(router, kHeartbeat, json::object(), &frames[0]);
    }
  }
  INFO("client output:\n" << client.output());
  CHECK(welcomed);
  REQUIRE_FALSE(readies.empty());
  for (const auto& ready : readies) CHECK(ready.value("slot", 0) == 0);
  CHECK(conductor::test::contains(client.output(), "The server fills 1 of this client's 3 slots"));
}

TEST_CASE(
    "a client refuses an ASSIGN and a CHUNK that no server should send, ignores an ACK of another "
    "attempt, and goes on") {
  conductor::test::TempDir root("conductor-client-bad-server");
  // A server by hand: a ROUTER that welcomes the client, then sends what the client refuses.
  ServerByHand server(root.path(), "target");
  auto& [context, router, client] = server;
  const std::string package =
      conductor::pack_to_memory({conductor::PackEntry::in_memory("model.h5", "weights")});
  const std::string blob = conductor::sha256_hex(package);
  auto assign = [&](const std::string& version) {
    return json{{"item", "0a1b"},
                {"attempt", 1},
                {"type", "training"},
                {"version", version},
                {"commands", json::array({{{"file_name", "/bin/true"}, {"arguments", ""}}})},
                {"blob", blob},
                {"blob_size", package.size()},
                {"slot", 0}};
  };
  int readies = 0;
  int fetches = 0;
  int results = 0;
  const auto deadline = deadline_in(30s);
  while (std::chrono::steady_clock::now() < deadline && readies < 3) {
    auto received = receive_frames(router, 50ms);
    if (!received) continue;
    auto& frames = *received;
    REQUIRE(frames.size() >= 3);
    const auto type = frames[1].data<std::uint8_t>()[4];
    const json header = json::from_msgpack(frames[2].to_string());
    if (type == kHello) {
      send_cwp(router, kWelcome,
               {{"session", "s"},
                {"heartbeat_ms", 200},
                {"liveness", 5},
                {"slots", 1},
                {"chunk_size", 65536}},
               &frames[0]);
    } else if (type == kReady) {
      // First a version longer than any server's (every later HELLO would repeat it), then a
      // good one; the third READY ends the test.
      if (++readies <= 2) {
        send_cwp(router, kAssign, assign(readies == 1 ? std::string(4096, 'v') : "v"), &frames[0]);
      }
    } else if (type == kFetch) {
      // First an empty chunk: a download that never moves must not look alive, and the client
      // asks again once its patience (heartbeat x liveness) runs out. Then the package.
      const std::string bytes = ++fetches == 1 ? std::string() : package;
      send_cwp(router, kChunk, {{"blob", blob}, {"offset", 0}}, &frames[0], &bytes);
    } else if (type == kResult) {
      // First an ACK of another attempt: not about this result, which is offered again. Then
      // its own, after which the slot is free and asks for work.
      send_cwp(router, kAck,
               {{"item", header.at("item")},
                {"attempt", ++results == 1 ? 0 : header.at("attempt").get<int>()},
                {"status", "stored"},
                {"reason", ""}},
               &frames[0]);
    } else if (type == kHeartbeat) {
      send_cwp(router, kHeartbeat, json::object(), &frames[0]);
    }
  }
  INFO("client output:\n" << client.output());
  CHECK(conductor::test::contains(client.output(), "ASSIGN refused: version must hold"));
  CHECK(conductor::test::contains(client.output(), "CHUNK refused: 0 bytes"));
  CHECK(conductor::test::contains(client.output(),
                                  "stored for attempt 0, while the slot holds attempt 1; ignored"));
  CHECK(fetches == 2);  // the empty chunk counted for nothing: the same bytes asked again
  CHECK(results == 2);  // the ACK of attempt 0 left the result with the client
  CHECK(readies == 3);
  CHECK(client.is_running());
}

TEST_CASE("a CPU client with --slots 3 runs three items side by side, each in its own slot and folder") {
  Cluster cluster("conductor-slots-cpu");
  const fs::path runs = cluster.root() / "runs.log";
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"v", 3, side_by_side(runs, 3), {}}});
  cluster.start_server();
  cluster.start_client("triple", {}, {"--slots", "3"});

  std::set<std::string> slots, folders;
  for (const auto& line : side_by_side_starts(cluster, runs, 3)) {
    slots.insert(field(line, "slot"));
    folders.insert(field(line, "dir"));
  }
  CHECK(slots == std::set<std::string>{"0", "1", "2"});
  CHECK(folders.size() == 3);
  // Each item was handed out once, to its own slot of the one client.
  const auto handouts = cluster.handouts();
  REQUIRE(handouts.size() == 3);
  std::set<int> handed_slots;
  for (const auto& handout : handouts) {
    CHECK(handout.host == "triple");
    CHECK(handout.attempt == 0);
    handed_slots.insert(handout.slot);
  }
  CHECK(handed_slots == std::set<int>{0, 1, 2});

  json status = parse_json(cluster.ctl({"status", "--json"}));
  REQUIRE(status["clients"].size() == 1);
  CHECK(status["clients"][0]["slots"] == 3);
  CHECK(status["clients"][0]["type"] == "cpu");
  CHECK(cluster.stop_all()->exited_with(0));
}

TEST_CASE("a GPU client runs one item per GPU at once, each seeing only its own GPU") {
  Cluster cluster("conductor-slots-gpu");
  const fs::path runs = cluster.root() / "runs.log";
  conductor::test::write_configuration(
      cluster.server_dir(), 0.0, {VersionSpec{"v", 2, side_by_side(runs, 2), {}, {}, "gpu"}});
  cluster.start_server();
  std::vector<std::string> gpus = {"0", "1"};  // slot i's CUDA_VISIBLE_DEVICES
  std::string order = "PCI_BUS_ID";            // the jobs' CUDA_DEVICE_ORDER: nvidia-smi's order
  // A stand-in nvidia-smi on PATH that prints `listing` for -L; no CUDA_VISIBLE_DEVICES to go by.
  auto start_with_nvidia_smi = [&](const std::string& listing) {
    const fs::path bin = cluster.root() / "bin";
    conductor::test::write_file(
        bin / "nvidia-smi",
        "#!/bin/sh\n[ \"$1\" = -L ] || exit 2\ncat <<'EOF'\n" + listing + "EOF\n");
    REQUIRE(::chmod((bin / "nvidia-smi").c_str(), 0755) == 0);
    const char* path = std::getenv("PATH");
    cluster.start_client("gpus", {{"CONDUCTOR_TYPE", "gpu"},
                                  {"CUDA_VISIBLE_DEVICES", ""},
                                  {"PATH", bin.string() + ":" + (path ? path : "/usr/bin:/bin")}});
  };
  SUBCASE("GPUs from --gpus, over CUDA_VISIBLE_DEVICES") {
    cluster.start_client("gpus", {{"CUDA_VISIBLE_DEVICES", "5,6"}}, {"--gpus", "0,1"});
  }
  SUBCASE("a CUDA_DEVICE_ORDER of the client's own stays") {
    cluster.start_client("gpus", {{"CUDA_DEVICE_ORDER", "FASTEST_FIRST"}}, {"--gpus", "0,1"});
    order = "FASTEST_FIRST";
  }
  SUBCASE("GPUs detected with nvidia-smi -L") {
    start_with_nvidia_smi(
        "GPU 0: Stand-in GPU (UUID: GPU-aaaa)\nGPU 1: Stand-in GPU (UUID: GPU-bbbb)\n");
  }
  SUBCASE("MIG instances detected with nvidia-smi -L, one slot each") {
    start_with_nvidia_smi(
        "GPU 0: Stand-in A100 (UUID: GPU-aaaa)\n"
        "  MIG 3g.20gb     Device  0: (UUID: MIG-1111)\n"
        "  MIG 3g.20gb     Device  1: (UUID: MIG-2222)\n");
    gpus = {"MIG-1111", "MIG-2222"};
  }

  // Slot 0 runs on the first GPU and slot 1 on the second, and each model records the one GPU
  // it saw.
  for (const auto& line : side_by_side_starts(cluster, runs, 2)) {
    CHECK(field(line, "gpu") == gpus.at(std::stoul(field(line, "slot"))));
    CHECK(field(line, "order") == order);
  }
  std::multiset<std::string> seen;
  for (const auto& id : cluster.model_ids("v")) {
    seen.insert(model_file(cluster, "v", id, "gpu.txt"));
    CHECK(model_file(cluster, "v", id, "unit.txt") == "gpu");
  }
  CHECK(seen == std::multiset<std::string>(gpus.begin(), gpus.end()));

  json status = parse_json(cluster.ctl({"status", "--json"}));
  REQUIRE(status["clients"].size() == 1);
  CHECK(status["clients"][0]["slots"] == 2);
  CHECK(status["clients"][0]["gpus"] == json(gpus));
  CHECK(cluster.stop_all()->exited_with(0));
}

TEST_CASE("an item of a version that requires gpu waits while only CPU clients are connected, "
          "explain says why, and only a GPU client runs it") {
  Cluster cluster("conductor-slots-requires");
  const fs::path runs = cluster.root() / "runs.log";
  const std::string quick = recording_script(runs, "true");
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"needs-gpu", 2, quick, {}, {}, "gpu"},
                                        VersionSpec{"plain", 1, quick, {}}});
  cluster.start_server();
  cluster.start_client("cpu-box", {}, {"--slots", "2"});

  // The CPU client trains what it may and then waits with both slots free.
  json status;
  auto idle_with_gpu_work_queued = [&] {
    status = parse_json(cluster.ctl({"status", "--json"}));
    return cluster.model_ids("plain").size() == 1 && status["clients"].size() == 1 &&
           status["clients"][0]["waiting_slots"] == 2 && status["queued"].size() == 2;
  };
  REQUIRE_MESSAGE(wait_until(deadline_in(60s), idle_with_gpu_work_queued),
                  cluster.diagnostics() << status.dump(2));
  const std::string item = status["queued"][0]["id"];
  CHECK(status["queued"][0]["requires"] == "gpu");
  CHECK(status["queued"][0]["version"] == "needs-gpu");

  // explain, by the short id `status` prints, in words and as JSON.
  auto told = cluster.ctl({"explain", item.substr(0, 8)});
  INFO("explain:\n" << told.out << told.err);
  CHECK(told.status.exited_with(0));
  CHECK(contains(told.out, "Item " + item + " (training of needs-gpu, attempt 0)"));
  CHECK(contains(told.out,
                 "queued: version needs-gpu requires gpu; the only connected client has no GPU "
                 "(position 1 of 2 in the queue)"));
  json explained = parse_json(cluster.ctl({"explain", item, "--json"}));
  CHECK(explained["item"] == item);
  CHECK(explained["state"] == "queued");
  CHECK(explained["version"] == "needs-gpu");
  CHECK(contains(explained["reason"].get<std::string>(), "requires gpu"));
  // `queue` lists the full ids.
  auto queue = cluster.ctl({"queue"});
  CHECK(queue.status.exited_with(0));
  CHECK(contains(queue.out, item));

  cluster.start_client("gpu-box", {}, {"--gpus", "0"});
  REQUIRE_MESSAGE(wait_until(deadline_in(60s), [&] { return cluster.model_ids("needs-gpu").size() == 2; }),
                  cluster.diagnostics());
  for (const auto& handout : cluster.handouts()) {
    CAPTURE(handout.item);
    CHECK(handout.host == (handout.version == "needs-gpu" ? "gpu-box" : "cpu-box"));
  }
  for (const auto& id : cluster.model_ids("needs-gpu")) {
    CHECK(model_file(cluster, "needs-gpu", id, "unit.txt") == "gpu");
  }
  CHECK(model_file(cluster, "plain", cluster.model_ids("plain").at(0), "unit.txt") == "cpu");

  // A finished item is no longer explained.
  auto finished = cluster.ctl({"explain", item});
  CHECK(finished.status.exited_with(3));
  CHECK(contains(finished.err, "is not known"));

  // The requirement is an operator setting that persists.
  auto set = cluster.ctl({"set-requirement", "plain", "cpu"});
  CHECK(set.status.exited_with(0));
  CHECK(contains(set.out, "Items of plain now run on cpu clients only"));
  status = parse_json(cluster.ctl({"status", "--json"}));
  for (const auto& version : status["versions"]) {
    CHECK(version["requires"] == (version["name"] == "plain" ? "cpu" : "gpu"));
  }
  CHECK(contains(read_file_if_present(cluster.server_dir() / "config" / "config.xml"),
                 "<Requires>cpu</Requires>"));
  CHECK(cluster.ctl({"set-requirement", "plain", "tpu"}).status.exited_with(2));
  CHECK(cluster.stop_all()->exited_with(0));
}

TEST_CASE("a client with 3 slots that goes silent and comes back within its lease keeps all 3 items") {
  Cluster cluster("conductor-slots-silent");
  const fs::path runs = cluster.root() / "runs.log";
  const fs::path flag = cluster.root() / "release";
  FlagOnExit release(flag);
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"v", 3, until_flag(runs, flag), {}}});
  // A lease far longer than the silence, so that coming back is what ends it.
  cluster.start_server({"--lease-ms", "60000"});
  auto& sleeper = cluster.start_client("sleeper", {}, {"--slots", "3"});
  REQUIRE_MESSAGE(wait_until(deadline_in(60s),
                             [&] { return starts(runs) == 3; }),
                  cluster.diagnostics());

  // Frozen, the client says nothing (its commands run on); the server drops it for silence.
  sleeper.kill(SIGSTOP);
  const bool dropped = wait_until(deadline_in(30s), [&] {
    return contains(cluster.server_log(), "Client disconnected: sleeper");
  });
  sleeper.kill(SIGCONT);
  REQUIRE_MESSAGE(dropped, cluster.diagnostics());
  auto resumed = [&] {
    std::size_t n = 0;
    for (const auto& line : split_lines(cluster.server_log())) {
      n += contains(line, "Client sleeper resumed item") ? 1 : 0;
    }
    return n;
  };
  REQUIRE_MESSAGE(wait_until(deadline_in(30s), [&] { return resumed() == 3; }), cluster.diagnostics());

  release.raise();
  REQUIRE_MESSAGE(wait_until(deadline_in(60s), [&] { return cluster.model_ids("v").size() == 3; }),
                  cluster.diagnostics());
  // Nothing was handed out twice: the three items finished under their first hand-out.
  const auto handouts = cluster.handouts();
  REQUIRE(handouts.size() == 3);
  std::set<std::string> handed;
  for (const auto& handout : handouts) {
    CHECK(handout.attempt == 0);
    handed.insert(handout.item);
  }
  const auto stored = cluster.model_ids("v");
  CHECK(std::set<std::string>(stored.begin(), stored.end()) == handed);
  CHECK(starts(runs) == 3);
  CHECK(cluster.stop_all()->exited_with(0));
}

TEST_CASE("when a client with 3 slots is SIGKILLed mid-run, its 3 items are queued again and "
          "finished once each by another client") {
  Cluster cluster("conductor-slots-killed");
  const fs::path runs = cluster.root() / "runs.log";
  const fs::path flag = cluster.root() / "release";
  FlagOnExit release(flag);
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"v", 3, until_flag(runs, flag), {}}});
  cluster.start_server();
  cluster.start_client("victim", {}, {"--slots", "3"});
  REQUIRE_MESSAGE(wait_until(deadline_in(60s),
                             [&] { return starts(runs) == 3; }),
                  cluster.diagnostics());
  std::set<std::string> victims_items;
  for (const auto& handout : cluster.handouts()) victims_items.insert(handout.item);
  REQUIRE(victims_items.size() == 3);
  cluster.start_client("rescuer", {}, {"--slots", "3"});

  cluster.client("victim").kill(SIGKILL);
  REQUIRE(cluster.client("victim").wait_for_exit(10s).has_value());
  auto rescued = [&] {
    std::set<std::string> items;
    for (const auto& handout : cluster.handouts()) {
      if (handout.host == "rescuer") items.insert(handout.item);
    }
    return items;
  };
  REQUIRE_MESSAGE(wait_until(deadline_in(60s), [&] { return rescued().size() == 3; }),
                  cluster.diagnostics());
  CHECK(rescued() == victims_items);
  for (const auto& handout : cluster.handouts()) {
    if (handout.host == "rescuer") CHECK(handout.attempt == 1);
  }

  release.raise();
  REQUIRE_MESSAGE(wait_until(deadline_in(60s), [&] { return cluster.model_ids("v").size() == 3; }),
                  cluster.diagnostics());
  const auto stored = cluster.model_ids("v");
  CHECK(std::set<std::string>(stored.begin(), stored.end()) == victims_items);
  CHECK_FALSE(wait_until(deadline_in(1s), [&] { return cluster.model_ids("v").size() > 3; }));
  CHECK(cluster.server().is_running());
}

TEST_CASE(
    "ASSIGN carries small prediction inputs to a client that takes them inline, not to one that "
    "does not") {
  Cluster cluster("conductor-inline-inputs");
  conductor::test::write_configuration(
      cluster.server_dir(), 1.0, {VersionSpec{"v", 0, "exit 1\n", {}, "cat model-latest.h5\n"}});
  conductor::test::store_model(cluster.server_dir(), "v", {{"model.h5", "PredictedBuffer=1\n"}});
  cluster.start_server({"--lease-ms", "60000"});
  const fs::path rows = cluster.root() / "rows.csv";
  conductor::test::write_file(rows, "x\n1\n");
  std::vector<std::unique_ptr<ChildProcess>> requests;
  // Asks for one prediction without waiting for it (the hand-made clients never answer).
  auto request = [&] {
    requests.push_back(std::make_unique<ChildProcess>(
        ChildOptions{{conductor::test::kCtlBin.string(), cluster.endpoint(), "predict", "--wait",
                      "60", rows.string()},
                     cluster.root() / ("predict-" + std::to_string(requests.size()) + ".out"),
                     {},
                     {}}));
  };
  // The frames of the next ASSIGN `socket` receives within 30 s.
  auto next_assign = [&](zmq::socket_t& socket) {
    const auto deadline = deadline_in(30s);
    while (std::chrono::steady_clock::now() < deadline) {
      auto frames = receive_frames(socket, 100ms);
      if (frames && (*frames)[0].data<std::uint8_t>()[4] == kAssign) return std::move(*frames);
    }
    FAIL("no ASSIGN within 30 s\n" << cluster.diagnostics());
    return std::vector<zmq::message_t>{};
  };
  zmq::context_t context;
  auto connect = [&](const std::string& id, std::optional<std::uint32_t> inline_bytes) {
    zmq::socket_t socket(context, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger, 0);
    socket.connect(cluster.endpoint());
    json hello = {{"protocol", 1}, {"client_id", id}, {"host", id}, {"type", "cpu"}, {"slots", 1}};
    if (inline_bytes) hello["inline_inputs_bytes"] = *inline_bytes;
    send_cwp(socket, kHello, hello);
    send_cwp(socket, kReady, {{"slot", 0}});
    return socket;
  };

  zmq::socket_t taker = connect("taker", 262144);
  request();
  auto frames = next_assign(taker);
  REQUIRE(frames.size() == 3);
  const json assign = json::from_msgpack(frames[1].to_string());
  CHECK(assign.at("type") == "prediction");
  CHECK(frames[2].size() == assign.at("inputs_size").get<std::size_t>());
  CHECK(conductor::sha256_hex(frames[2].to_string()) == assign.at("inputs").get<std::string>());

  zmq::socket_t fetcher = connect("fetcher", std::nullopt);
  request();
  frames = next_assign(fetcher);
  CHECK(frames.size() == 2);
  CHECK_FALSE(json::from_msgpack(frames[1].to_string()).at("inputs").get<std::string>().empty());
  for (auto& process : requests) process->kill(SIGTERM);
}

TEST_CASE(
    "a client from before model archives is never given a large model's prediction item; a "
    "current client is") {
  Cluster cluster("conductor-slots-old-predict");
  const std::string predict = "n=$(head -n 1 model-latest.h5)\necho \"PredictedBuffer=$n\"\n";
  conductor::test::write_configuration(cluster.server_dir(), 0.0,
                                       {VersionSpec{"v", 0, "exit 1\n", {}, predict}});
  // Beyond the 1 MiB the server holds in memory: the model goes as an archive of its own.
  const std::string model = conductor::test::store_model(
      cluster.server_dir(), "v", {{"model.h5", "7\n" + conductor::test::pseudo_random(2 << 20)}});
  cluster.start_server({"--lease-ms", "60000"});
  ClientBeforeSlots old(cluster.endpoint());
  old.send(kHello, {{"protocol", 1},
                    {"client_id", "old-1"},
                    {"host", "old"},
                    {"type", "cpu"},
                    {"slots", 1},
                    {"inline_inputs_bytes", 262144}});
  REQUIRE(old.receive(kWelcome).has_value());
  old.send(kReady, {{"slot", 0}});

  const fs::path rows = cluster.root() / "rows.csv";
  conductor::test::write_file(rows, "a,b\n1,2\n");
  ChildProcess request(ChildOptions{{conductor::test::kCtlBin.string(), cluster.endpoint(),
                                     "predict", "--json", "--wait", "60", rows.string()},
                                    cluster.root() / "predict.out",
                                    {},
                                    {}});
  REQUIRE_MESSAGE(wait_until(deadline_in(10s),
                             [&] { return contains(cluster.server_log(), "model(s) queued"); }),
                  cluster.diagnostics());
  CHECK_FALSE(old.receive(kAssign, 2s).has_value());

  cluster.start_client("current");
  const auto done = request.wait_for_exit(60s);
  INFO("conductorctl output:\n" << request.output() << cluster.diagnostics());
  REQUIRE(done.has_value());
  CHECK(done->exited_with(0));
  const std::string output = request.output();
  REQUIRE(output.find('{') != std::string::npos);
  const json result = json::parse(output.substr(output.find('{')));
  REQUIRE(result["values"].size() == 1);
  CHECK(result["values"][0]["model"] == model);
  CHECK(result["values"][0]["value"] == 7.0);
  CHECK_FALSE(old.receive(kAssign, 500ms).has_value());
}
