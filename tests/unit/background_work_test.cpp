// The server's slow file work off its network thread: BackgroundWorker itself, the Wakeup
// that ends the network thread's poll, and the two users, PackageCache (large versions packed
// in the background) and ResultReceiver (large results extracted in the background).
#include <doctest/doctest.h>
#include <poll.h>

#include <atomic>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "background_worker.hpp"
#include "conductor/asset_store.hpp"
#include "conductor/error.hpp"
#include "conductor/package.hpp"
#include "conductor/sha256.hpp"
#include "package_cache.hpp"
#include "result_receiver.hpp"
#include "support/temp_dir.hpp"
#include "wakeup.hpp"

namespace {

namespace fs = std::filesystem;
using conductor::BackgroundWorker;
using conductor::PackageCache;
using conductor::ResultReceiver;
using conductor::test::read_file;
using conductor::test::TempDir;
using conductor::test::write_file;

// Waits (at most 30 s) until the worker signals a completion, then runs what waits.
void run_next_completions(BackgroundWorker& worker) {
  pollfd wake{worker.wake_fd(), POLLIN, 0};
  REQUIRE(::poll(&wake, 1, 30000) == 1);
  worker.run_completions();
}

// A version folder whose files add up to more than PackageCache packs inline; random bytes,
// so the pack stays as large (zstd does not pay).
void write_large_version(const fs::path& folder) {
  write_file(folder / "train.py", "print('train')\n");
  write_file(folder / "data.bin",
             conductor::test::pseudo_random(PackageCache::kInlinePackBytes + 8));
}

}  // namespace

TEST_CASE("a background worker runs jobs in order off the calling thread and completions on it") {
  BackgroundWorker worker;
  const auto caller = std::this_thread::get_id();
  std::vector<int> order;
  std::atomic<int> ran_elsewhere = 0;
  for (int i = 0; i < 3; ++i) {
    worker.submit([&, i]() -> BackgroundWorker::Completion {
      if (std::this_thread::get_id() != caller) ++ran_elsewhere;
      return [&, i] {
        CHECK(std::this_thread::get_id() == caller);
        order.push_back(i);
      };
    });
  }
  while (order.size() < 3) run_next_completions(worker);
  CHECK(order == std::vector<int>{0, 1, 2});
  CHECK(ran_elsewhere == 3);
}

TEST_CASE("a job that throws surfaces its exception on the thread running completions") {
  BackgroundWorker worker;
  worker.submit([]() -> BackgroundWorker::Completion { throw conductor::IoError("disk gone"); });
  pollfd wake{worker.wake_fd(), POLLIN, 0};
  REQUIRE(::poll(&wake, 1, 30000) == 1);
  CHECK_THROWS_WITH_AS(worker.run_completions(), "disk gone", conductor::IoError);
  worker.run_completions();  // nothing left, nothing thrown
}

TEST_CASE("completions left behind by one that threw keep the wake-up descriptor readable") {
  BackgroundWorker worker;
  std::atomic<bool> third_started = false;
  std::atomic<bool> release_third = false;
  bool second_ran = false;
  worker.submit([]() -> BackgroundWorker::Completion {
    return [] { throw conductor::IoError("first failed"); };
  });
  worker.submit([&]() -> BackgroundWorker::Completion { return [&] { second_ran = true; }; });
  // Once the third job runs, both completions are queued; it holds its own signal back.
  worker.submit([&]() -> BackgroundWorker::Completion {
    third_started = true;
    while (!release_third.load()) std::this_thread::yield();
    return {};
  });
  while (!third_started.load()) std::this_thread::yield();
  CHECK_THROWS_WITH_AS(worker.run_completions(), "first failed", conductor::IoError);
  CHECK_FALSE(second_ran);
  pollfd wake{worker.wake_fd(), POLLIN, 0};
  CHECK(::poll(&wake, 1, 0) == 1);
  worker.run_completions();
  CHECK(second_ran);
  release_third = true;
}

TEST_CASE("a background worker's destructor drops queued jobs and waits for the running one") {
  std::atomic<int> ran = 0;
  {
    BackgroundWorker worker;
    for (int i = 0; i < 100; ++i) {
      worker.submit([&]() -> BackgroundWorker::Completion {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        ++ran;
        return {};
      });
    }
  }
  const int after_join = ran.load();
  CHECK(after_join < 100);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(ran.load() == after_join);  // joined: nothing runs any more
}

TEST_CASE("a wakeup is readable from its signal until it is drained, from any thread") {
  const conductor::Wakeup wakeup("a test");
  auto readable = [&] {
    pollfd fd{wakeup.fd(), POLLIN, 0};
    return ::poll(&fd, 1, 0) == 1;
  };
  CHECK_FALSE(readable());
  wakeup.signal();
  wakeup.signal();  // several signals before a drain wake once
  CHECK(readable());
  wakeup.drain();
  CHECK_FALSE(readable());
  std::thread([&] { wakeup.signal(); }).join();
  pollfd fd{wakeup.fd(), POLLIN, 0};
  CHECK(::poll(&fd, 1, 30000) == 1);
  wakeup.drain();
  wakeup.drain();  // draining an unsignalled wakeup neither blocks nor fails
  CHECK_FALSE(readable());
}

TEST_CASE("a package cache packs a small version at once and a large one in the background") {
  TempDir root("conductor-pack-async");
  BackgroundWorker worker;
  PackageCache cache(root / "packs", worker);
  write_file(root / "small" / "train.py", "print('small')\n");
  const conductor::PackageBlob* small = cache.get("small", root / "small");
  REQUIRE(small != nullptr);
  CHECK(conductor::sha256_file(small->file) == small->sha256);

  write_large_version(root / "large");
  CHECK(cache.get("large", root / "large") == nullptr);  // packing started
  CHECK(cache.get("large", root / "large") == nullptr);  // still packing: not started twice
  run_next_completions(worker);
  const conductor::PackageBlob* large = cache.get("large", root / "large");
  REQUIRE(large != nullptr);
  CHECK(large->size > PackageCache::kInlinePackBytes);
  CHECK(conductor::sha256_file(large->file) == large->sha256);
  REQUIRE(cache.find(large->sha256) != nullptr);
  CHECK(cache.find(large->sha256)->file == large->file);
  // Unchanged folder: the same pack (a pack made in the background is due for a listing at
  // once, which the worker takes).
  CHECK(cache.get("large", root / "large") == large);
}

TEST_CASE("a package cache lists a version's folder again after the interval, on the worker") {
  TempDir root("conductor-pack-recheck");
  BackgroundWorker worker;
  PackageCache cache(root / "packs", worker, std::chrono::milliseconds(300));
  write_file(root / "v" / "train.py", "print('first')\n");
  const conductor::PackageBlob* first = cache.get("v", root / "v");
  REQUIRE(first != nullptr);
  const std::string first_sha = first->sha256;
  CHECK(cache.get("v", root / "v")->sha256 == first_sha);  // found current: the clock starts
  write_file(root / "v" / "train.py", "print('second, longer')\n");
  // Within the interval the folder is not listed: the pack found current is handed out, and
  // the worker was given nothing (a listing it ran would have made its descriptor readable).
  CHECK(cache.get("v", root / "v")->sha256 == first_sha);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  pollfd idle{worker.wake_fd(), POLLIN, 0};
  CHECK(::poll(&idle, 1, 0) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(350));
  // Due: listed again on the worker; until its completion runs, the pack found current.
  CHECK(cache.get("v", root / "v")->sha256 == first_sha);
  CHECK(cache.get("v", root / "v")->sha256 == first_sha);  // one listing at a time
  run_next_completions(worker);
  const conductor::PackageBlob* second = cache.get("v", root / "v");
  REQUIRE(second != nullptr);
  CHECK(second->sha256 != first_sha);
  CHECK(second->sha256 == conductor::sha256_file(second->file));
  const std::string second_sha = second->sha256;
  // Unchanged: the worker's listing finds it current, and it stays.
  std::this_thread::sleep_for(std::chrono::milliseconds(350));
  CHECK(cache.get("v", root / "v")->sha256 == second_sha);
  run_next_completions(worker);
  CHECK(cache.get("v", root / "v")->sha256 == second_sha);
  // A symlink put in the folder: the worker's listing fails, the next call names the reason.
  fs::create_symlink("/etc/passwd", root / "v" / "link");
  std::this_thread::sleep_for(std::chrono::milliseconds(350));
  CHECK(cache.get("v", root / "v")->sha256 == second_sha);
  run_next_completions(worker);
  CHECK_THROWS_AS(cache.get("v", root / "v"), conductor::PackageError);
  fs::remove(root / "v" / "link");
  // Another folder under the same version name is listed at once.
  write_file(root / "w" / "train.py", "print('elsewhere')\n");
  CHECK(cache.get("v", root / "w")->sha256 != second_sha);
}

TEST_CASE("a background pack that fails is reported on every call until the folder changes") {
  TempDir root("conductor-pack-async-fail");
  BackgroundWorker worker;
  PackageCache cache(root / "packs", worker);
  write_large_version(root / "v");
  REQUIRE(cache.get("v", root / "v") == nullptr);
  // The packs folder disappears under the worker: packing cannot write its archive.
  fs::remove_all(root / "packs");
  run_next_completions(worker);
  CHECK_THROWS_AS(cache.get("v", root / "v"), conductor::Error);
  CHECK_THROWS_AS(cache.get("v", root / "v"), conductor::Error);
  fs::create_directories(root / "packs");
  write_file(root / "v" / "more.txt", "changed");  // a new listing: packed again
  CHECK(cache.get("v", root / "v") == nullptr);
  run_next_completions(worker);
  CHECK(cache.get("v", root / "v") != nullptr);
}

namespace {

using conductor::protocol::Pull;

// Collects the PULLs a receiver sends on its own (a stream that took chunks lets more in).
struct SentPulls {
  std::vector<Pull> pulls;
  ResultReceiver::PullSender sender() {
    return [this](const std::string&, const Pull& pull) { pulls.push_back(pull); };
  }
};

// Answers `pulls` and every PULL that follows with `bytes`, as a client does: those receive()
// returns and those the receiver sends on its own (`sent`), waiting for the worker's completions
// while none is asked for, until every byte was asked for and sent.
// `answered`: bytes the test sent before.
void answer_pulls(ResultReceiver& receiver, BackgroundWorker& worker, SentPulls& sent,
                  const std::string& client, const conductor::WorkItem& item,
                  std::vector<Pull> pulls, const std::string& bytes, std::uint64_t answered = 0) {
  while (answered < bytes.size()) {
    if (pulls.empty()) pulls = std::exchange(sent.pulls, {});
    if (pulls.empty()) {
      run_next_completions(worker);
      continue;
    }
    const auto pull = pulls.front();
    pulls.erase(pulls.begin());
    auto more = receiver.receive(client, {item.id, item.attempt, pull.offset},
                                 zmq::message_t(bytes.data() + pull.offset, pull.length));
    answered += pull.length;
    pulls.insert(pulls.end(), more.begin(), more.end());
  }
}

// Uploads `bytes` to `receiver` the way a client answers PULLs.
void upload_all(ResultReceiver& receiver, BackgroundWorker& worker, SentPulls& sent,
                const std::string& client, const conductor::WorkItem& item,
                const std::string& bytes) {
  conductor::protocol::ResultOffer offer{item.id, item.attempt, bytes.size(),
                                         conductor::sha256_hex(bytes)};
  answer_pulls(receiver, worker, sent, client, item, receiver.begin(client, item, offer), bytes);
}

// Whether `condition` holds within 30 s (another thread is to make it so).
template <typename Condition>
bool eventually(Condition condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// Runs the worker's completions until `is_finished()`.
template <typename Condition>
void wait_for_finish(BackgroundWorker& worker, Condition is_finished) {
  while (!is_finished()) run_next_completions(worker);
}

// A result archive holding model.h5 of `size` random bytes.
std::string result_archive(const fs::path& root, std::size_t size) {
  write_file(root / "out" / "model.h5", conductor::test::pseudo_random(size));
  conductor::pack_directory(root / "out", root / "result.tar");
  return read_file(root / "result.tar");
}

// A result receiver over a fresh server folder, for TEST_CASE_FIXTURE: chunks of `kChunkBytes`,
// `kWindowChunks` of them asked for at once, `kReserveBytes` of disk kept free. Every result it
// hands over lands in `finished`, with its client.
template <std::uint32_t kChunkBytes, int kWindowChunks, std::uint64_t kReserveBytes = 0>
struct Receiving {
  TempDir root{"conductor-receive"};
  conductor::AssetStore store{root / "server"};
  BackgroundWorker worker;
  SentPulls sent;
  std::vector<std::pair<std::string, ResultReceiver::Finished>> finished;
  ResultReceiver receiver{cleaned(store),
                          kChunkBytes,
                          kWindowChunks,
                          worker,
                          [this](const std::string& client, ResultReceiver::Finished done) {
                            finished.emplace_back(client, std::move(done));
                          },
                          sent.sender(),
                          kReserveBytes};

  // The latest result handed over.
  ResultReceiver::Finished& last() {
    REQUIRE_FALSE(finished.empty());
    return finished.back().second;
  }

 private:
  static conductor::AssetStore& cleaned(conductor::AssetStore& store) {
    store.clean_spool();
    return store;
  }
};
// What the server uses, and smaller pieces that make a few KiB several chunks.
using MiBChunks = Receiving<1u << 20, 8>;
using MiBChunksWindow2 = Receiving<1u << 20, 2>;
using QuarterMiBChunks = Receiving<256u << 10, 2>;
using StreamChunks = Receiving<64u << 10, 2>;
using SmallChunks = Receiving<4096, 2>;
using OneChunkWindow = Receiving<4096, 1>;
// No file system has this much free.
using NoRoom = Receiving<4096, 2, std::uint64_t{1} << 62>;

}  // namespace

TEST_CASE_FIXTURE(
    StreamChunks,
    "a large training result is unpacked while it arrives, written once, never to the spool") {
  constexpr std::uint32_t kChunk = 64 << 10;
  constexpr int kWindow = 2;
  write_file(root / "out" / "model.h5", conductor::test::pseudo_random(3 << 20));
  write_file(root / "out" / ".conductor" / "console.log", "Epoch 1/1\n");
  conductor::pack_directory(root / "out", root / "result.tar");
  const std::string bytes = read_file(root / "result.tar");
  REQUIRE(bytes.size() > ResultReceiver::kMemoryResultBytes);
  const conductor::WorkItem item{"0f1a", conductor::WorkType::kTraining, "v1", 1};
  const conductor::protocol::ResultOffer offer{item.id, item.attempt, bytes.size(),
                                               conductor::sha256_hex(bytes)};

  std::vector<Pull> pulls = receiver.begin("client-1", item, offer);
  REQUIRE(pulls.size() == kWindow);
  // Chunk by chunk, as a client answers: never more asked for than the window, no spool file.
  std::uint64_t received = 0;
  std::uint64_t requested = pulls.size() * kChunk;
  while (received < bytes.size()) {
    if (pulls.empty()) {
      pulls = std::exchange(sent.pulls, {});
      for (const auto& next : pulls) requested += next.length;
      CHECK(requested - received <= kWindow * kChunk);
    }
    if (pulls.empty()) {
      run_next_completions(worker);
      continue;
    }
    const Pull pull = pulls.front();
    pulls.erase(pulls.begin());
    CHECK(pull.offset == received);  // in order, each byte asked for once
    auto more = receiver.receive("client-1", {item.id, item.attempt, pull.offset},
                                 zmq::message_t(bytes.data() + pull.offset, pull.length));
    received += pull.length;
    for (const auto& next : more) requested += next.length;
    CHECK(requested - received <= kWindow * kChunk);
    CHECK(fs::is_empty(store.spool_dir() / "incoming"));
    pulls.insert(pulls.end(), more.begin(), more.end());
  }
  // A repeat of a chunk while the rest is unpacked (the client answered PULLs of an offer it
  // repeated) is dropped, not refused: a refusal would make the client give the item up.
  if (finished.empty()) {
    CHECK(receiver
              .receive("client-1", {item.id, item.attempt, 0}, zmq::message_t(bytes.data(), kChunk))
              .empty());
  }
  wait_for_finish(worker, [&] { return !finished.empty(); });
  REQUIRE(finished.size() == 1);
  CHECK(finished[0].first == "client-1");
  const auto& done = finished[0].second;
  CHECK(done.error.empty());
  CHECK(done.console_log == "Epoch 1/1\n");
  CHECK(conductor::sha256_file(done.staged / "model.h5") ==
        conductor::sha256_file(root / "out" / "model.h5"));
  CHECK_FALSE(fs::exists(done.staged / ".conductor"));
  CHECK(fs::is_empty(store.spool_dir() / "incoming"));
  // Once answered, too.
  CHECK(
      receiver.receive("client-1", {item.id, item.attempt, 0}, zmq::message_t(bytes.data(), kChunk))
          .empty());
}

TEST_CASE_FIXTURE(
    MiBChunks,
    "a result receiver extracts a large result in the background and refuses nothing meanwhile") {
  write_file(root / "out" / "model.h5", std::string(ResultReceiver::kInlineFinishBytes, 'm'));
  conductor::pack_directory(root / "out", root / "result.tar");
  const std::string bytes = read_file(root / "result.tar");
  // A training result is unpacked while it arrives; a prediction's that is too large for memory
  // goes to a spool file and is read on the worker once complete.
  for (const auto type : {conductor::WorkType::kTraining, conductor::WorkType::kPrediction}) {
    CAPTURE(conductor::to_string(type));
    finished.clear();
    const conductor::WorkItem item{type == conductor::WorkType::kTraining ? "0a1b2c3d" : "0a1b2c3e",
                                   type, "v1", 1};
    upload_all(receiver, worker, sent, "client-1", item, bytes);
    // The client offers the same result again meanwhile (it had no answer): nothing is pulled,
    // the answer follows once the first upload is unpacked.
    if (finished.empty()) {
      CHECK(receiver
                .begin("client-1", item,
                       {item.id, item.attempt, bytes.size(), conductor::sha256_hex(bytes)})
                .empty());
    }
    wait_for_finish(worker, [&] { return !finished.empty(); });
    REQUIRE(finished.size() == 1);
    CHECK(finished[0].first == "client-1");
    const auto& done = finished[0].second;
    CHECK(done.error.empty());
    if (type == conductor::WorkType::kTraining) {
      CHECK(read_file(done.staged / "model.h5").size() == ResultReceiver::kInlineFinishBytes);
    } else {
      CHECK(done.staged.empty());
    }
    CHECK(fs::is_empty(store.spool_dir() / "incoming"));
  }
}

TEST_CASE_FIXTURE(MiBChunks, "a small result is finished before receive returns") {
  write_file(root / "out" / "model.h5", "weights");
  conductor::pack_directory(root / "out", root / "result.tar");
  upload_all(receiver, worker, sent, "client-1", {"0a1b", conductor::WorkType::kTraining, "v1", 1},
             read_file(root / "result.tar"));
  REQUIRE_FALSE(finished.empty());
  CHECK(read_file(last().staged / "model.h5") == "weights");
}

TEST_CASE_FIXTURE(
    SmallChunks,
    "a small result is received into memory and its console log is never written to the staging "
    "folder") {
  write_file(root / "out" / "model.h5", std::string(20000, 'w'));
  write_file(root / "out" / ".conductor" / "console.log", "epoch 1\nPredictedBuffer=3\n");
  write_file(root / "out" / ".conductor" / "other.txt", "not kept");
  conductor::pack_directory(root / "out", root / "result.tar");
  const std::string bytes = read_file(root / "result.tar");
  REQUIRE(bytes.size() <= ResultReceiver::kMemoryResultBytes);
  const conductor::WorkItem item{"0a1e", conductor::WorkType::kTraining, "v1", 1};
  const conductor::protocol::ResultOffer offer{item.id, item.attempt, bytes.size(),
                                               conductor::sha256_hex(bytes)};
  auto pulls = receiver.begin("client-1", item, offer);
  REQUIRE(pulls.size() == 2);
  auto more = receiver.receive("client-1", {item.id, item.attempt, 0},
                               zmq::message_t(bytes.data(), pulls[0].length));
  // Part of it is in: no file was created for it.
  CHECK(fs::is_empty(store.spool_dir() / "incoming"));
  CHECK(fs::is_empty(store.spool_dir() / "staging"));
  pulls.erase(pulls.begin());
  pulls.insert(pulls.end(), more.begin(), more.end());
  answer_pulls(receiver, worker, sent, "client-1", item, std::move(pulls), bytes, 4096);
  REQUIRE_FALSE(finished.empty());
  CHECK(last().error.empty());
  CHECK(last().console_log == "epoch 1\nPredictedBuffer=3\n");
  CHECK(read_file(last().staged / "model.h5") == std::string(20000, 'w'));
  CHECK_FALSE(fs::exists(last().staged / ".conductor"));
  CHECK(fs::is_empty(store.spool_dir() / "incoming"));
}

TEST_CASE_FIXTURE(
    OneChunkWindow,
    "small results go to memory only within its budget; what an abandoned one held is given back") {
  const std::uint64_t size = ResultReceiver::kMemoryResultBytes;
  const std::uint64_t fit = ResultReceiver::kMaxMemoryBytes / size;
  const std::string hash(64, 'a');
  // Predictions: beyond the budget, theirs go to a spool file (a training result would stream).
  auto offer = [&](const std::string& client, int n) {
    const conductor::WorkItem item{"0b" + std::to_string(n), conductor::WorkType::kPrediction, "v1",
                                   1};
    receiver.begin(client, item, {item.id, item.attempt, size, hash});
    return store.spool_dir() / "incoming" / (item.id + ".part");
  };
  for (std::uint64_t n = 0; n < fit; ++n)
    CHECK_FALSE(fs::exists(offer("client-1", static_cast<int>(n))));
  // The budget is spent: the next one is received into a file.
  CHECK(fs::exists(offer("client-2", 1000)));
  receiver.abandon("client-1");
  CHECK_FALSE(fs::exists(offer("client-3", 1001)));
}

TEST_CASE_FIXTURE(
    SmallChunks,
    "an upload nobody continues is abandoned after the idle limit, its partial file removed") {
  // Beyond what is received into memory: a prediction's upload has a partial file, a training
  // result a stream unpacking into the staging folder.
  const std::string bytes = result_archive(root.path(), ResultReceiver::kMemoryResultBytes + 4096);
  for (const auto type : {conductor::WorkType::kPrediction, conductor::WorkType::kTraining}) {
    CAPTURE(conductor::to_string(type));
    const conductor::WorkItem item{type == conductor::WorkType::kTraining ? "0abc" : "0abe", type,
                                   "v1", 1};
    const conductor::protocol::ResultOffer offer{item.id, item.attempt, bytes.size(),
                                                 conductor::sha256_hex(bytes)};
    auto pulls = receiver.begin("client-1", item, offer);
    REQUIRE(pulls.size() == 2);
    receiver.receive("client-1", {item.id, item.attempt, 0}, zmq::message_t(bytes.data(), 4096));
    const fs::path part = store.spool_dir() / "incoming" / (item.id + ".part");
    CHECK(fs::exists(part) == (type == conductor::WorkType::kPrediction));

    const auto now = std::chrono::steady_clock::now();
    CHECK(receiver.abandon_idle(now, std::chrono::minutes(10)).empty());  // still fresh
    const auto abandoned =
        receiver.abandon_idle(now + std::chrono::minutes(11), std::chrono::minutes(10));
    CHECK(abandoned == std::vector<std::string>{item.id + " from client-1"});
    CHECK_FALSE(fs::exists(part));
    CHECK_FALSE(receiver.is_receiving("client-1", item.id));
    // A late chunk of the abandoned upload is refused; the same offer again starts from byte 0.
    CHECK_THROWS_AS(receiver.receive("client-1", {item.id, item.attempt, 4096},
                                     zmq::message_t(bytes.data() + 4096, 4096)),
                    conductor::ProtocolError);
    auto again = receiver.begin("client-1", item, offer);
    REQUIRE_FALSE(again.empty());
    CHECK(again.front().offset == 0);
    receiver.abandon("client-1");
  }
  // The abandoned streams' threads removed what they had unpacked.
  CHECK(eventually([&] { return fs::is_empty(store.spool_dir() / "staging"); }));
  CHECK(finished.empty());
}

TEST_CASE_FIXTURE(SmallChunks,
                  "abandoning a client's uploads removes their partial files and unpacked bytes") {
  const std::string bytes = result_archive(root.path(), ResultReceiver::kMemoryResultBytes + 4096);
  const conductor::WorkItem prediction{"0abd", conductor::WorkType::kPrediction, "v1", 1};
  const conductor::WorkItem training{"0abf", conductor::WorkType::kTraining, "v1", 1};
  for (const auto& item : {prediction, training}) {
    receiver.begin("client-1", item,
                   {item.id, item.attempt, bytes.size(), conductor::sha256_hex(bytes)});
    receiver.receive("client-1", {item.id, item.attempt, 0}, zmq::message_t(bytes.data(), 4096));
  }
  const fs::path part = store.spool_dir() / "incoming" / (prediction.id + ".part");
  REQUIRE(fs::exists(part));
  receiver.abandon("client-2");
  CHECK(fs::exists(part));
  CHECK(receiver.is_receiving("client-1", training.id));
  receiver.abandon("client-1");
  CHECK_FALSE(fs::exists(part));
  CHECK_FALSE(receiver.is_receiving("client-1", training.id));
  CHECK(eventually([&] { return fs::is_empty(store.spool_dir() / "staging"); }));
  CHECK(finished.empty());
}

TEST_CASE_FIXTURE(
    StreamChunks,
    "a stream that cannot unpack still takes the upload to its last byte, then answers with the "
    "error and lets the item be offered afresh") {
  // The staging folder is a file: the stream cannot make its folder before reading a byte.
  fs::remove_all(store.spool_dir() / "staging");
  write_file(store.spool_dir() / "staging", "in the way");
  const std::string bytes = result_archive(root.path(), 2 << 20);
  const conductor::WorkItem item{"0ac1", conductor::WorkType::kTraining, "v1", 1};
  upload_all(receiver, worker, sent, "client-1", item, bytes);
  wait_for_finish(worker, [&] { return !finished.empty(); });
  REQUIRE(finished.size() == 1);
  CHECK_FALSE(finished[0].second.error.empty());
  CHECK(finished[0].second.staged.empty());
  CHECK_FALSE(receiver.is_receiving("client-1", item.id));
  // Not stuck as finishing: the same result offered again is pulled from its first byte.
  fs::remove(store.spool_dir() / "staging");
  fs::create_directories(store.spool_dir() / "staging");
  const conductor::protocol::ResultOffer offer{item.id, item.attempt, bytes.size(),
                                               conductor::sha256_hex(bytes)};
  auto again = receiver.begin("client-1", item, offer);
  REQUIRE_FALSE(again.empty());
  CHECK(again.front().offset == 0);
  answer_pulls(receiver, worker, sent, "client-1", item, again, bytes);
  wait_for_finish(worker, [&] { return finished.size() == 2; });
  CHECK(finished[1].second.error.empty());
  CHECK(read_file(finished[1].second.staged / "model.h5") == read_file(root / "out" / "model.h5"));
}

TEST_CASE(
    "a receiver destroyed while a stream waits for chunks ends its thread and leaves nothing") {
  TempDir root("conductor-receive-stream-stop");
  conductor::AssetStore store(root / "server");
  store.clean_spool();
  BackgroundWorker worker;
  SentPulls sent;
  const std::string bytes = result_archive(root.path(), 2 << 20);
  {
    ResultReceiver receiver(
        store, 4096, 2, worker, [](const std::string&, ResultReceiver::Finished) {}, sent.sender());
    const conductor::WorkItem item{"0ac0", conductor::WorkType::kTraining, "v1", 1};
    receiver.begin("client-1", item,
                   {item.id, item.attempt, bytes.size(), conductor::sha256_hex(bytes)});
    receiver.receive("client-1", {item.id, item.attempt, 0}, zmq::message_t(bytes.data(), 4096));
  }  // joins the stream's thread, which is waiting for the next chunk
  CHECK(fs::is_empty(store.spool_dir() / "staging"));
}

TEST_CASE(
    "a result whose last byte differs from the offered hash is refused, large or small, "
    "and leaves no file behind") {
  // The small one is received into memory, the large one unpacked while it arrives.
  for (const std::size_t size :
       {std::size_t{1000}, std::size_t{ResultReceiver::kInlineFinishBytes}}) {
    CAPTURE(size);
    TempDir root("conductor-receive-damaged");
    conductor::AssetStore store(root / "server");
    store.clean_spool();
    BackgroundWorker worker;
    SentPulls sent;
    std::optional<ResultReceiver::Finished> finished;
    ResultReceiver receiver(
        store, 1u << 20, 8, worker,
        [&](const std::string&, ResultReceiver::Finished done) { finished = std::move(done); },
        sent.sender());
    const std::string bytes = result_archive(root.path(), size);
    std::string damaged = bytes;
    damaged.back() ^= 0x01;  // in the end-of-archive blocks: only the hash can tell
    const conductor::WorkItem item{"0d4a", conductor::WorkType::kTraining, "v1", 1};
    const conductor::protocol::ResultOffer offer{item.id, item.attempt, bytes.size(),
                                                 conductor::sha256_hex(bytes)};
    answer_pulls(receiver, worker, sent, "client-1", item, receiver.begin("client-1", item, offer),
                 damaged);
    wait_for_finish(worker, [&] { return finished.has_value(); });
    REQUIRE(finished.has_value());
    CHECK(finished->error.find("hash mismatch") != std::string::npos);
    CHECK(finished->staged.empty());
    CHECK(fs::is_empty(store.spool_dir() / "incoming"));
    CHECK(fs::is_empty(store.spool_dir() / "staging"));
  }
}

TEST_CASE_FIXTURE(
    QuarterMiBChunks,
    "an upload resumed after a reconnect is verified whole, the bytes written before it included") {
  constexpr std::uint32_t kChunk = 256 << 10;
  const std::string bytes = result_archive(root.path(), ResultReceiver::kInlineFinishBytes);
  // A prediction's result goes to a spool file (which the test damages); a training result is
  // unpacked while it arrives, and resumes into the same stream.
  bool damage_first_chunk = false;
  conductor::WorkType type = conductor::WorkType::kTraining;
  SUBCASE("streamed") {}
  SUBCASE("into a file, intact") { type = conductor::WorkType::kPrediction; }
  SUBCASE("into a file, the first chunk damaged on disk meanwhile") {
    type = conductor::WorkType::kPrediction;
    damage_first_chunk = true;
  }
  const conductor::WorkItem item{"0e5b", type, "v1", 1};
  const conductor::protocol::ResultOffer offer{item.id, item.attempt, bytes.size(),
                                               conductor::sha256_hex(bytes)};
  // Two chunks arrive, then the link goes: the client offers the same result again.
  auto pulls = receiver.begin("client-1", item, offer, {"model.h5"});
  REQUIRE(pulls.size() == 2);
  for (const auto& pull : pulls) {
    receiver.receive("client-1", {item.id, item.attempt, pull.offset},
                     zmq::message_t(bytes.data() + pull.offset, pull.length));
  }
  sent.pulls.clear();  // lost with the link
  const fs::path part = store.spool_dir() / "incoming" / (item.id + ".part");
  if (damage_first_chunk) {
    conductor::ChunkFile reopened(part);  // truncates: only the damaged first chunk comes back
    std::string first = bytes.substr(0, 2 * kChunk);
    first[100] ^= 0x01;
    reopened.write_at(0, first.data(), first.size());
  }
  auto resumed = receiver.begin("client-1", item, offer, {"model.h5"});
  if (type == conductor::WorkType::kTraining && resumed.empty()) {
    resumed = std::exchange(sent.pulls, {});  // the stream had not taken the chunks yet
    while (resumed.empty()) {
      run_next_completions(worker);
      resumed = std::exchange(sent.pulls, {});
    }
  }
  REQUIRE_FALSE(resumed.empty());
  CHECK(resumed.front().offset == 2 * kChunk);  // from the last chunk received, not from 0
  answer_pulls(receiver, worker, sent, "client-1", item, resumed, bytes, 2 * kChunk);
  wait_for_finish(worker, [&] { return !finished.empty(); });
  REQUIRE_FALSE(finished.empty());
  const std::string model = read_file(root / "out" / "model.h5");
  if (damage_first_chunk) {
    CHECK(last().error.find("hash mismatch") != std::string::npos);
    CHECK(last().staged.empty());
  } else if (type == conductor::WorkType::kTraining) {
    CHECK(last().error.empty());
    CHECK(read_file(last().staged / "model.h5") == model);
  } else {
    CHECK(last().error.empty());
    CHECK(last().files["model.h5"] == model);
  }
  CHECK_FALSE(fs::exists(part));
}

TEST_CASE("pack_blob holds small archives in memory within the budget and files the rest") {
  TempDir root("conductor-pack-blob");
  write_file(root / "in" / "model.h5", std::string(1000, 'm'));
  const auto entries = conductor::list_files(root / "in");
  // One entry of 1000 bytes: a tar of at most 512 + 1024 + 1024 bytes.
  constexpr std::uint64_t kTar = 2560;
  auto budget = std::make_shared<conductor::MemoryBudget>(2 * kTar + 100);
  const conductor::PackOptions options{.sync = false};

  std::optional<conductor::PackageBlob> first =
      conductor::pack_blob(entries, root / "first.tar", options, 4096, budget);
  REQUIRE(first->bytes != nullptr);
  CHECK_FALSE(fs::exists(root / "first.tar"));
  CHECK(first->size == first->bytes->size());
  CHECK(first->sha256 == conductor::sha256_hex(*first->bytes));
  CHECK(budget->used == kTar);
  auto second = conductor::pack_blob(entries, root / "second.tar", options, 4096, budget);
  REQUIRE(second.bytes != nullptr);
  CHECK(budget->used == 2 * kTar);
  // No room left for a third: it is written to its file, and the same bytes.
  auto third = conductor::pack_blob(entries, root / "third.tar", options, 4096, budget);
  CHECK(third.bytes == nullptr);
  CHECK(read_file(root / "third.tar") == *first->bytes);
  CHECK(third.sha256 == first->sha256);
  // Beyond max_bytes: a file whatever the room.
  CHECK(conductor::pack_blob(entries, root / "big.tar", options, kTar - 1, budget).bytes ==
        nullptr);
  {
    const conductor::PackageBlob copy = *first;
    first.reset();
    CHECK(budget->used == 2 * kTar);  // the copy still holds the bytes
  }
  // The last copy gone, its bytes count no more.
  CHECK(budget->used == kTar);
}

TEST_CASE_FIXTURE(SmallChunks,
                  "a result sent inline with its offer is finished at once, no PULL asked") {
  write_file(root / "out" / "model.h5", std::string(10000, 'w'));
  conductor::pack_directory(root / "out", root / "result.tar");
  const std::string bytes = read_file(root / "result.tar");
  const conductor::WorkItem item{"0a2a", conductor::WorkType::kTraining, "v1", 1};
  const conductor::protocol::ResultOffer offer{item.id, item.attempt, bytes.size(),
                                               conductor::sha256_hex(bytes)};
  // An upload begun the usual way is replaced by the inline one.
  REQUIRE_FALSE(receiver.begin("client-1", item, offer).empty());
  const zmq::message_t archive(bytes.data(), bytes.size());
  CHECK(receiver.begin("client-1", item, offer, {}, &archive).empty());
  REQUIRE_FALSE(finished.empty());
  CHECK(last().error.empty());
  CHECK(read_file(last().staged / "model.h5") == std::string(10000, 'w'));
  CHECK_FALSE(receiver.is_receiving("client-1", item.id));

  // The inline bytes must be the offer's.
  const zmq::message_t short_archive(bytes.data(), bytes.size() - 1);
  CHECK_THROWS_AS(
      receiver.begin("client-1", {"0a2b", conductor::WorkType::kTraining, "v1", 1},
                     {"0a2b", 1, bytes.size(), conductor::sha256_hex(bytes)}, {}, &short_archive),
      conductor::ProtocolError);
  CHECK_FALSE(receiver.is_receiving("client-1", "0a2b"));
}

TEST_CASE_FIXTURE(
    MiBChunks, "a small compressed result is unpacked on the worker, never on the network thread") {
  // A few KiB that unpack to more than the worker's threshold: small as an upload, large as
  // files (a zstd bomb is the same shape).
  write_file(root / "out" / "model.h5", std::string(ResultReceiver::kInlineFinishBytes, '\0'));
  conductor::pack_directory(root / "out", root / "result.tar", {},
                            conductor::PackOptions{conductor::Compression::kZstd});
  const std::string bytes = read_file(root / "result.tar");
  REQUIRE(bytes.size() < (64u << 10));
  REQUIRE_FALSE(conductor::is_plain_tar(bytes));
  upload_all(receiver, worker, sent, "client-1", {"0c1a", conductor::WorkType::kTraining, "v1", 1},
             bytes);
  // The last byte is in, and receive() returned without unpacking it.
  CHECK(finished.empty());
  wait_for_finish(worker, [&] { return !finished.empty(); });
  CHECK(last().error.empty());
  CHECK(fs::file_size(last().staged / "model.h5") == ResultReceiver::kInlineFinishBytes);
}

TEST_CASE_FIXTURE(
    SmallChunks,
    "another client's offer of an item whose upload is open waits; the upload goes on") {
  const std::string bytes = result_archive(root.path(), 100000);
  const conductor::WorkItem item{"0c2a", conductor::WorkType::kTraining, "v1", 1};
  const conductor::protocol::ResultOffer offer{item.id, item.attempt, bytes.size(),
                                               conductor::sha256_hex(bytes)};
  auto pulls = receiver.begin("client-1", item, offer);
  REQUIRE_FALSE(pulls.empty());
  // The item's other client (it was handed out again meanwhile) offers its own result, in
  // chunks or inline: nothing is asked of it, and the first upload is not given up.
  CHECK(receiver.begin("client-2", item, offer).empty());
  const zmq::message_t archive(bytes.data(), std::min<std::size_t>(bytes.size(), 1000));
  CHECK(receiver
            .begin("client-2", item, {item.id, item.attempt, archive.size(), std::string(64, 'a')},
                   {}, &archive)
            .empty());
  CHECK(receiver.is_receiving("client-1", item.id));
  CHECK_FALSE(receiver.is_receiving("client-2", item.id));
  CHECK_THROWS_AS(
      receiver.receive("client-2", {item.id, item.attempt, 0}, zmq::message_t(bytes.data(), 4096)),
      conductor::ProtocolError);
  answer_pulls(receiver, worker, sent, "client-1", item, std::move(pulls), bytes);
  wait_for_finish(worker, [&] { return !finished.empty(); });
  REQUIRE(finished.size() == 1);
  CHECK(finished[0].first == "client-1");
  CHECK(finished[0].second.error.empty());
  CHECK(fs::file_size(finished[0].second.staged / "model.h5") == 100000);
}

TEST_CASE_FIXTURE(NoRoom,
                  "a result that would leave too little free disk is refused, naming the reserve") {
  // No file system has this much free.
  const std::uint64_t reserve = std::uint64_t{1} << 62;
  upload_all(receiver, worker, sent, "client-1", {"0c3a", conductor::WorkType::kTraining, "v1", 1},
             result_archive(root.path(), 10000));
  wait_for_finish(worker, [&] { return !finished.empty(); });
  CHECK_MESSAGE(last().error.find("'model.h5' refused: writing it would leave less than " +
                                  std::to_string(reserve) + " bytes free") != std::string::npos,
                last().error);
  CHECK(last().no_space);
  CHECK(last().staged.empty());
  CHECK(fs::is_empty(store.spool_dir() / "staging"));
  // One that is not received into memory is not even pulled.
  const conductor::WorkItem large{"0c3b", conductor::WorkType::kTraining, "v1", 1};
  CHECK_THROWS_WITH_AS(
      receiver.begin(
          "client-1", large,
          {large.id, large.attempt, ResultReceiver::kMemoryResultBytes + 1, std::string(64, 'a')}),
      doctest::Contains("result of item 0c3b (1048577 bytes) not taken yet: "
                        "receiving it would leave less than"),
      conductor::NoSpaceError);
  CHECK_FALSE(receiver.is_receiving("client-1", large.id));
  CHECK(fs::is_empty(store.spool_dir() / "incoming"));
  // The small result's next offer is not pulled in full only to fail the same way: the room
  // its first attempt was found to need is checked before anything is asked of the client.
  const std::string again = result_archive(root.path(), 10000);
  const conductor::WorkItem small{"0c3a", conductor::WorkType::kTraining, "v1", 1};
  const std::string refusal = "result of item 0c3a (" + std::to_string(again.size()) +
                              " bytes) not taken yet: an earlier attempt found that it needs";
  CHECK_THROWS_WITH_AS(
      receiver.begin("client-1", small,
                     {small.id, small.attempt, again.size(), conductor::sha256_hex(again)}),
      doctest::Contains(refusal.c_str()), conductor::NoSpaceError);
  CHECK_FALSE(receiver.is_receiving("client-1", small.id));
  // Another archive of the item (a later attempt's) is not held to what this one needed.
  const std::string other = result_archive(root.path(), 9000);
  CHECK_FALSE(receiver
                  .begin("client-1", small,
                         {small.id, small.attempt, other.size(), conductor::sha256_hex(other)})
                  .empty());
}

TEST_CASE_FIXTURE(
    MiBChunksWindow2,
    "a spool write that finds the disk full drops the upload; the next offer starts over") {
  // A prediction's result beyond what is kept in memory goes to spool/incoming/<item>.part,
  // here a link to /dev/full, where every write fails with ENOSPC as on a full disk.
  const std::string bytes = result_archive(root.path(), ResultReceiver::kMemoryResultBytes + 10);
  const conductor::WorkItem item{"0c4a", conductor::WorkType::kPrediction, "v1", 1};
  const conductor::protocol::ResultOffer offer{item.id, item.attempt, bytes.size(),
                                               conductor::sha256_hex(bytes)};
  const fs::path part = store.spool_dir() / "incoming" / "0c4a.part";
  fs::create_symlink("/dev/full", part);
  auto pulls = receiver.begin("client-1", item, offer);
  REQUIRE(pulls.size() == 2);
  CHECK_THROWS_WITH_AS(receiver.receive("client-1", {item.id, item.attempt, 0},
                                        zmq::message_t(bytes.data(), pulls.front().length)),
                       doctest::Contains("0c4a.part': No space left on device"),
                       conductor::NoSpaceError);
  // The window's other chunk, already on its way, is dropped without a word: an ERROR would
  // make the client give up the result.
  CHECK(receiver
            .receive("client-1", {item.id, item.attempt, pulls[1].offset},
                     zmq::message_t(bytes.data() + pulls[1].offset, pulls[1].length))
            .empty());
  // Dropped with its partial file (the link, not what it names), nothing answered.
  CHECK_FALSE(receiver.is_receiving("client-1", item.id));
  CHECK_FALSE(fs::exists(fs::symlink_status(part)));
  CHECK(fs::exists("/dev/full"));
  CHECK(finished.empty());
  // Offered again with room to spare: received from the start and read.
  upload_all(receiver, worker, sent, "client-1", item, bytes);
  wait_for_finish(worker, [&] { return !finished.empty(); });
  CHECK(last().error.empty());
  CHECK_FALSE(last().no_space);
}

TEST_CASE_FIXTURE(SmallChunks, "a running item's live log stops at 64 MiB with a line saying so") {
  const fs::path log = store.spool_dir() / "live" / "0c4a.log";
  const std::string line(1u << 20, 'l');
  receiver.append_live_log("0c4a", {"epoch 1", "epoch 2"});
  CHECK(read_file(log) == "epoch 1\nepoch 2\n");
  for (int i = 0; i < 70; ++i) receiver.append_live_log("0c4a", {line});
  const std::uintmax_t size = fs::file_size(log);
  CHECK(size <= (std::uintmax_t{64} << 20));
  CHECK(size > (std::uintmax_t{63} << 20));
  const std::string text = read_file(log);
  CHECK(text.ends_with("live log cut at 64 MiB; the end of the console comes with the result\n"));
  // Nothing follows the cut, however short.
  receiver.append_live_log("0c4a", {"epoch 99"});
  CHECK(fs::file_size(log) == size);
  // Another item's log is its own.
  receiver.append_live_log("0c4b", {"epoch 1"});
  CHECK(read_file(store.spool_dir() / "live" / "0c4b.log") == "epoch 1\n");
  // The run ended (it failed, say): the log goes, and the item's next run has one again.
  receiver.end_live_log("0c4a");
  CHECK_FALSE(fs::exists(log));
  receiver.append_live_log("0c4a", {"attempt 2"});
  CHECK(read_file(log) == "attempt 2\n");
}

TEST_CASE_FIXTURE(
    MiBChunks, "a large training result's metrics are evaluated where it is unpacked, when asked") {
  write_file(root / "out" / "model.h5", conductor::test::pseudo_random(2u << 20));
  write_file(root / "out" / "metrics.json", R"({"loss": 0.5, "val": {"acc": 0.75}})");
  conductor::pack_directory(root / "out", root / "result.tar");
  const std::string bytes = read_file(root / "result.tar");
  const conductor::protocol::ResultOffer offer{"", 1, bytes.size(), conductor::sha256_hex(bytes)};
  // Streamed (a training result above 1 MiB): evaluated on the stream's thread.
  const conductor::WorkItem asked{"0c5a", conductor::WorkType::kTraining, "v1", 1};
  auto with_id = [&](const std::string& id) {
    auto copy = offer;
    copy.item = id;
    return copy;
  };
  answer_pulls(receiver, worker, sent, "client-1", asked,
               receiver.begin("client-1", asked, with_id(asked.id), {}, nullptr,
                              conductor::DatasetType::kGeneric),
               bytes);
  wait_for_finish(worker, [&] { return finished.size() == 1; });
  REQUIRE(finished[0].second.error.empty());
  REQUIRE(finished[0].second.evaluation.has_value());
  CHECK(finished[0].second.evaluation->metrics ==
        conductor::Metrics{{"loss", 0.5}, {"val.acc", 0.75}});
  CHECK(finished[0].second.evaluation->problems.empty());
  // Not asked: left to commit_model.
  const conductor::WorkItem unasked{"0c5b", conductor::WorkType::kTraining, "v1", 1};
  upload_all(receiver, worker, sent, "client-1", unasked, bytes);
  wait_for_finish(worker, [&] { return finished.size() == 2; });
  CHECK(finished[1].second.error.empty());
  CHECK_FALSE(finished[1].second.evaluation.has_value());
}
