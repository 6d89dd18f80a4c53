#include "conductor/placement.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <map>
#include <string>


using namespace conductor;
using namespace std::chrono_literals;

namespace {

const TimePoint kStart{};  // the fake clock's epoch
// 2024-05-01T10:00:00Z: what kStart is on the wall clock in these tests.
const auto kWallStart = std::chrono::system_clock::time_point(std::chrono::seconds(1714557600));

Scheduler make_scheduler(SchedulerOptions options = {}) {
  return Scheduler(options, [n = 0]() mutable { return "item-" + std::to_string(++n); });
}

ClientSlots client(const std::string& id, const std::string& type, int slots, int waiting,
                   bool reserved = false, std::vector<std::string> gpus = {}) {
  return ClientSlots{id, "host-" + id, type, std::move(gpus), slots, waiting, reserved};
}

// Explains `item` with versions "g" (needs gpu), "c" (needs cpu) and anything else (any).
Explanation explain(const Scheduler& scheduler, const std::string& item,
                    std::vector<ClientSlots> clients, TimePoint now = kStart,
                    double reserve_fraction = 0.2) {
  const std::map<std::string, Requirement> requirements = {{"g", Requirement::kGpu},
                                                           {"c", Requirement::kCpu}};
  PlacementView view{scheduler,
                     std::move(clients),
                     [&](const WorkItem& work) {
                       auto it = requirements.find(work.version);
                       return it == requirements.end() ? Requirement::kAny : it->second;
                     },
                     [](const WorkItem& work) { return work.version == "packing"; },
                     reserve_fraction,
                     now,
                     kWallStart + (now - kStart)};
  auto explanation = explain_item(item, view);
  REQUIRE(explanation.has_value());
  return *explanation;
}

WorkItem training(const std::string& version) { return {"x", WorkType::kTraining, version, 0}; }
WorkItem prediction(const std::string& version) { return {"x", WorkType::kPrediction, version, 0}; }

}  // namespace

TEST_CASE("a client may take an item its type satisfies; a reserve client only predictions") {
  const auto gpu = client("g1", "gpu", 2, 0);
  const auto cpu = client("c1", "cpu", 1, 0);
  const auto reserve = client("r1", "gpu", 1, 0, true);
  CHECK(may_take(gpu, training("v"), Requirement::kGpu));
  CHECK(may_take(gpu, training("v"), Requirement::kAny));
  CHECK_FALSE(may_take(gpu, training("v"), Requirement::kCpu));
  CHECK_FALSE(may_take(cpu, training("v"), Requirement::kGpu));
  CHECK(may_take(cpu, prediction("v"), Requirement::kCpu));
  CHECK_FALSE(may_take(reserve, training("v"), Requirement::kAny));
  CHECK(may_take(reserve, prediction("v"), Requirement::kGpu));
  CHECK_FALSE(may_take(reserve, prediction("v"), Requirement::kCpu));
}

TEST_CASE("explain says a gpu item waits because no connected client has a GPU") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"any", 2, 0}, {"g", 1, 0}});  // item-3 is the gpu one
  auto e = explain(scheduler, "item-3",
                   {client("a", "cpu", 1, 0), client("b", "cpu", 2, 1), client("c", "cpu", 1, 0)});
  CHECK(e.state == "queued");
  CHECK(e.text ==
        "queued: version g requires gpu; none of the 3 connected clients has a GPU "
        "(position 3 of 3 in the queue)");
  e = explain(scheduler, "item-3", {client("a", "cpu", 4, 4)});
  CHECK(e.text ==
        "queued: version g requires gpu; the only connected client has no GPU "
        "(position 3 of 3 in the queue)");
}

TEST_CASE("explain says a cpu item waits because every connected client is a GPU client") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"c", 1, 0}});
  auto e = explain(scheduler, "item-1", {client("a", "gpu", 2, 2), client("b", "gpu", 1, 1)});
  CHECK(e.text ==
        "queued: version c requires cpu; none of the 2 connected clients is a CPU client "
        "(position 1 of 1 in the queue)");
}

TEST_CASE("explain says a queued item waits for a client when none is connected") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"g", 1, 0}});
  CHECK(explain(scheduler, "item-1", {}).text ==
        "queued: no client is connected (position 1 of 1 in the queue)");
}

TEST_CASE("explain counts the busy slots of the clients that could run the item") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"g", 5, 0}});
  scheduler.fill({{"g1", {0, 1}, {}}, {"g2", {0, 1}, {}}}, kStart);  // item-5 stays queued
  auto e = explain(scheduler, "item-5",
                   {client("g1", "gpu", 2, 0), client("g2", "gpu", 2, 0), client("c1", "cpu", 8, 8)});
  CHECK(e.state == "queued");
  CHECK(e.text ==
        "queued: every slot of the 2 gpu clients is busy (4 of 4) (position 1 of 1 in the queue)");
  // Without a requirement every client counts.
  auto any = make_scheduler();
  any.reconcile({{"v", 2, 0}});
  any.fill({{"c1", {0}, {}}}, kStart);
  CHECK(explain(any, "item-2", {client("c1", "cpu", 1, 0)}).text ==
        "queued: every slot of the 1 client is busy (1 of 1) (position 1 of 1 in the queue)");
}

TEST_CASE("explain names free slots that are about to take the item") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"g", 2, 0}});
  auto e = explain(scheduler, "item-2", {client("g1", "gpu", 4, 2)});
  CHECK(e.state == "queued");
  CHECK(e.text ==
        "queued: 2 slots of the 1 gpu client free; it goes out at the next dispatch unless items "
        "ahead of it take them (position 2 of 2 in the queue)");
}

TEST_CASE("explain says an item waits for its version's package while it is packed") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"packing", 1, 0}});
  CHECK(explain(scheduler, "item-1", {client("c1", "cpu", 2, 2)}).text ==
        "queued: version packing is being packed; its items go out once the package is ready "
        "(position 1 of 1 in the queue)");
}

TEST_CASE("explain says a training item is held while only reserve clients could run it") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"g", 1, 0}});
  auto e = explain(scheduler, "item-1",
                   {client("g1", "gpu", 2, 2, true), client("c1", "cpu", 1, 1)});
  CHECK(e.state == "held");
  CHECK(e.text ==
        "held: clients in reserve for predictions: the only client able to run it takes "
        "prediction items only (reserve nodes 0.2) (position 1 of 1 in the queue)");
  // A prediction item of the same version may use the reserve client.
  scheduler.enqueue({"p-1", WorkType::kPrediction, "g", 0});
  e = explain(scheduler, "p-1", {client("g1", "gpu", 2, 2, true), client("c1", "cpu", 1, 1)});
  CHECK(e.state == "queued");
  CHECK(e.text.rfind("queued: 2 slots of the 1 gpu client free", 0) == 0);
  // Clients in reserve are left out of the busy count for training items.
  e = explain(scheduler, "item-1",
              {client("g1", "gpu", 2, 2, true), client("g2", "gpu", 1, 0)});
  CHECK(e.text ==
        "queued: every slot of the 1 gpu client outside the reserve is busy (1 of 1) "
        "(position 1 of 2 in the queue)");
}

TEST_CASE("explain says where a running item runs, and since when") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"g", 2, 0}});
  scheduler.fill({{"g1", {1}, {}}}, kStart + 90s);
  auto e = explain(scheduler, "item-1", {client("g1", "gpu", 2, 1, false, {"0", "3"})},
                   kStart + 150s);
  CHECK(e.state == "running");
  CHECK(e.text ==
        "running on client host-g1 (g1) slot 1 (GPU 3) since 2024-05-01T10:01:30Z (attempt 0)");
}

TEST_CASE("explain says an item waits for its silent client until the lease ends") {
  SchedulerOptions options;
  options.lease_grace = 30s;
  auto scheduler = make_scheduler(options);
  scheduler.reconcile({{"v", 1, 0}});
  scheduler.fill({{"c-12", {0}, {}}}, kStart);
  scheduler.lose_client("c-12", kStart + 60s);
  auto e = explain(scheduler, "item-1", {}, kStart + 70s);
  CHECK(e.state == "leased");
  CHECK(e.text ==
        "waiting for client c-12 (lease until 2024-05-01T10:01:30Z) to come back; if it does not, "
        "the item is queued again (attempt 0)");
}

TEST_CASE("explain knows nothing of an item that is neither queued nor active") {
  auto scheduler = make_scheduler();
  PlacementView view{scheduler, {}, [](const WorkItem&) { return Requirement::kAny; }, {}, 0,
                     kStart, kWallStart};
  CHECK_FALSE(explain_item("item-1", view).has_value());
}
