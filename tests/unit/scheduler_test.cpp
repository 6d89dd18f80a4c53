#include "conductor/scheduler.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace conductor;
using namespace std::chrono_literals;

namespace {

// Ids "item-1", "item-2", ... so tests can name what they expect.
Scheduler make_scheduler(SchedulerOptions options = {}) {
  return Scheduler(options, [n = 0]() mutable { return "item-" + std::to_string(++n); });
}

const TimePoint kStart{};  // the fake clock's epoch

}  // namespace

TEST_CASE("reconcile queues target minus stored minus queued minus active") {
  auto scheduler = make_scheduler();
  auto created = scheduler.reconcile({{"a", 3, 1}, {"b", 2, 0}, {"c", 1, 5}});
  REQUIRE(created.size() == 4);
  CHECK(created[0] == WorkItem{"item-1", WorkType::kTraining, "a", 0});
  CHECK(created[1].version == "a");
  CHECK(created[2].version == "b");
  CHECK(created[3].version == "b");
  CHECK(scheduler.queued_count("a") == 2);
  CHECK(scheduler.queued_count("c") == 0);

  // Running reconcile again with the same state creates nothing.
  CHECK(scheduler.reconcile({{"a", 3, 1}, {"b", 2, 0}}).empty());

  // Active items count too.
  REQUIRE(scheduler.assign("client-x", kStart));
  CHECK(scheduler.reconcile({{"a", 3, 1}}).empty());
  // Raising the target adds exactly the difference.
  CHECK(scheduler.reconcile({{"a", 5, 1}}).size() == 2);
}

TEST_CASE("reconcile ignores prediction items when counting a version's training work") {
  auto scheduler = make_scheduler();
  scheduler.enqueue({"p-1", WorkType::kPrediction, "a", 0});
  CHECK(scheduler.reconcile({{"a", 1, 0}}).size() == 1);
}

TEST_CASE("items go out first in, first out, one per client") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"a", 2, 0}, {"b", 1, 0}});
  auto first = scheduler.assign("c1", kStart);
  auto second = scheduler.assign("c2", kStart);
  auto third = scheduler.assign("c3", kStart);
  REQUIRE(first);
  REQUIRE(second);
  REQUIRE(third);
  CHECK(first->id == "item-1");
  CHECK(second->id == "item-2");
  CHECK(third->id == "item-3");
  CHECK(third->version == "b");
  CHECK_FALSE(scheduler.assign("c4", kStart));
  CHECK(scheduler.active_count() == 3);
  CHECK(scheduler.queued_count() == 0);
}

TEST_CASE("a client that holds an item gets no second one") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"a", 2, 0}});
  REQUIRE(scheduler.assign("c1", kStart));
  CHECK_FALSE(scheduler.assign("c1", kStart));
  CHECK(scheduler.queued_count() == 1);
}

TEST_CASE("assign skips items the client does not accept and keeps them queued") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"a", 1, 0}});
  scheduler.enqueue({"p-1", WorkType::kPrediction, "a", 0});
  auto item = scheduler.assign("reserve", kStart,
                               [](const WorkItem& w) { return w.type == WorkType::kPrediction; });
  REQUIRE(item);
  CHECK(item->id == "p-1");
  CHECK(scheduler.queue().front().id == "item-1");
}

TEST_CASE("scheduler requeues the item of a lost client under the same id at the front") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"a", 3, 0}});
  auto held = scheduler.assign("c1", kStart);
  REQUIRE(held);
  auto released = scheduler.release_client("c1");
  REQUIRE(released.size() == 1);
  CHECK(released[0].id == held->id);
  CHECK(released[0].attempt == 1);
  CHECK(scheduler.queue().front().id == held->id);
  CHECK(scheduler.active_count() == 0);
  // The requeued item is the next to go out, to any client.
  auto again = scheduler.assign("c2", kStart);
  REQUIRE(again);
  CHECK(again->id == held->id);
  CHECK(again->attempt == 1);
  CHECK(scheduler.release_client("nobody").empty());
}

TEST_CASE("a failed item goes to the back of the queue with its attempt counted") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"a", 2, 0}});
  auto item = scheduler.assign("c1", kStart);
  REQUIRE(item);
  CHECK_FALSE(scheduler.fail(item->id, "someone-else"));
  CHECK(scheduler.fail(item->id, "c1"));
  CHECK(scheduler.queue().back().id == item->id);
  CHECK(scheduler.queue().back().attempt == 1);
  CHECK_FALSE(scheduler.fail(item->id, "c1"));  // a second report is stale
}

TEST_CASE("scheduler requeues an item whose timeout passed, per work type") {
  SchedulerOptions options;
  options.training_timeout = 10s;
  options.prediction_timeout = 2s;
  auto scheduler = make_scheduler(options);
  scheduler.reconcile({{"a", 1, 0}});
  scheduler.enqueue({"p-1", WorkType::kPrediction, "a", 0});
  REQUIRE(scheduler.assign("trainer", kStart));
  REQUIRE(scheduler.assign("predictor", kStart));
  CHECK(scheduler.next_deadline() == kStart + 2s);

  CHECK(scheduler.expire(kStart + 1999ms).empty());
  auto expired = scheduler.expire(kStart + 2s);
  REQUIRE(expired.size() == 1);
  CHECK(expired[0].item.id == "p-1");
  CHECK(expired[0].reason == RequeueReason::kTimedOut);
  CHECK(scheduler.active_in_slot("predictor", 0) == nullptr);
  REQUIRE(scheduler.active_in_slot("trainer", 0) != nullptr);

  expired = scheduler.expire(kStart + 10s);
  REQUIRE(expired.size() == 1);
  CHECK(expired[0].item.id == "item-1");
  CHECK(expired[0].item.attempt == 1);
  CHECK(scheduler.queued_count() == 2);
  CHECK(scheduler.active_count() == 0);
  CHECK_FALSE(scheduler.next_deadline());
}

TEST_CASE("complete removes an item wherever it is and reports who ran it") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"a", 2, 0}});
  auto item = scheduler.assign("c1", kStart);
  REQUIRE(item);
  CHECK(scheduler.complete(item->id) == std::optional<std::string>("c1"));
  CHECK(scheduler.complete("item-2") == std::optional<std::string>(""));
  CHECK_FALSE(scheduler.complete("item-2"));
  CHECK(scheduler.queued_count() == 0);
  CHECK(scheduler.active_count() == 0);
  // The client is free again.
  scheduler.reconcile({{"a", 3, 2}});
  CHECK(scheduler.assign("c1", kStart));
}

TEST_CASE("a reconnecting client reattaches to its requeued item") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"a", 2, 0}});
  auto item = scheduler.assign("c1", kStart);
  REQUIRE(item);
  CHECK(scheduler.reattach(item->id, "c1", kStart));  // still active for it
  scheduler.release_client("c1");
  CHECK(scheduler.reattach(item->id, "c1", kStart + 1s));
  REQUIRE(scheduler.active_in_slot("c1", 0));
  CHECK(scheduler.active_in_slot("c1", 0)->item.id == item->id);
  CHECK(scheduler.queued_count() == 1);
  // Someone else's item cannot be taken over.
  CHECK_FALSE(scheduler.reattach(item->id, "c2", kStart));
  CHECK_FALSE(scheduler.reattach("no-such-item", "c2", kStart));
}

TEST_CASE("dropping a version's queue leaves other versions and active items alone") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"a", 2, 0}, {"b", 1, 0}});
  REQUIRE(scheduler.assign("c1", kStart));  // item-1 of a
  CHECK(scheduler.drop_queued("a") == 1);
  CHECK(scheduler.queued_count() == 1);
  CHECK(scheduler.active_count("a") == 1);
}

TEST_CASE("a lost client's item waits out its lease, then returns to the front of the queue") {
  SchedulerOptions options;
  options.lease_grace = 3s;
  auto scheduler = make_scheduler(options);
  scheduler.reconcile({{"a", 2, 0}});
  auto held = scheduler.assign("c1", kStart);
  REQUIRE(held);
  auto waiting = scheduler.lose_client("c1", kStart + 1s);
  REQUIRE(waiting.size() == 1);
  CHECK(waiting[0].id == held->id);
  // Still counted as active, so reconcile adds nothing and nobody else gets it.
  CHECK(scheduler.active_count() == 1);
  CHECK(scheduler.reconcile({{"a", 2, 0}}).empty());
  CHECK(scheduler.next_deadline() == kStart + 4s);
  CHECK(scheduler.expire(kStart + 3999ms).empty());
  auto expired = scheduler.expire(kStart + 4s);
  REQUIRE(expired.size() == 1);
  CHECK(expired[0].item.id == held->id);
  CHECK(expired[0].item.attempt == 1);
  CHECK(expired[0].reason == RequeueReason::kClientLost);
  CHECK(scheduler.queue().front().id == held->id);
  CHECK(scheduler.active_in_slot("c1", 0) == nullptr);
}

TEST_CASE("a client that comes back within its lease keeps its item") {
  SchedulerOptions options;
  options.lease_grace = 3s;
  auto scheduler = make_scheduler(options);
  scheduler.reconcile({{"a", 1, 0}});
  auto held = scheduler.assign("c1", kStart);
  REQUIRE(held);
  scheduler.lose_client("c1", kStart);
  CHECK(scheduler.reattach(held->id, "c1", kStart + 2s));
  CHECK(scheduler.expire(kStart + 10s).empty());  // the lease ended with the reattach
  REQUIRE(scheduler.active_in_slot("c1", 0));
  CHECK_FALSE(scheduler.active_in_slot("c1", 0)->lease_end);
  // Losing it twice does not stretch the lease.
  scheduler.lose_client("c1", kStart + 20s);
  scheduler.lose_client("c1", kStart + 22s);
  CHECK(scheduler.expire(kStart + 23s).size() == 1);
}

// ---- slots -----------------------------------------------------------------------------

namespace {

bool is_training(const WorkItem& item) { return item.type == WorkType::kTraining; }

}  // namespace

TEST_CASE("each slot of a client holds one item, and a client holds one per slot") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"a", 4, 0}});
  auto first = scheduler.assign("c1", kStart, {}, 0);
  auto second = scheduler.assign("c1", kStart, {}, 1);
  REQUIRE(first);
  REQUIRE(second);
  CHECK_FALSE(scheduler.assign("c1", kStart, {}, 1));  // slot 1 is taken
  CHECK(scheduler.active_in_slot("c1", 0)->item.id == first->id);
  CHECK(scheduler.active_in_slot("c1", 1)->item.id == second->id);
  CHECK(scheduler.active_in_slot("c1", 1)->slot == 1);
  CHECK(scheduler.active_in_slot("c1", 2) == nullptr);
  auto held = scheduler.held_by("c1");
  REQUIRE(held.size() == 2);
  CHECK(held[0]->item.id == first->id);
  CHECK(held[1]->item.id == second->id);
  CHECK(scheduler.held_by("nobody").empty());
}

TEST_CASE("fill spreads items over clients in rounds before stacking them in one client's slots") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"a", 5, 0}});
  auto made = scheduler.fill({{"c1", {0, 1, 2}, {}}, {"c2", {0, 1}, {}}}, kStart);
  REQUIRE(made.size() == 5);
  // Round one: c1 slot 0, c2 slot 0; round two: c1 slot 1, c2 slot 1; round three: c1 slot 2.
  const std::vector<std::pair<std::string, int>> expected = {
      {"c1", 0}, {"c2", 0}, {"c1", 1}, {"c2", 1}, {"c1", 2}};
  for (std::size_t i = 0; i < made.size(); ++i) {
    CAPTURE(i);
    CHECK(made[i].item.id == "item-" + std::to_string(i + 1));  // first in, first out
    CHECK(made[i].client_id == expected[i].first);
    CHECK(made[i].slot == expected[i].second);
    CHECK(scheduler.active_in_slot(made[i].client_id, made[i].slot)->item.id == made[i].item.id);
  }
  CHECK(scheduler.queued_count() == 0);
}

TEST_CASE("fill stops when the queue or the free slots run out and skips a slot that is taken") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"a", 4, 0}});
  REQUIRE(scheduler.assign("c1", kStart, {}, 1));  // item-1, in slot 1
  // A stale view offers slot 1 again: it is not filled twice.
  auto made = scheduler.fill({{"c1", {1, 3}, {}}}, kStart);
  REQUIRE(made.size() == 1);
  CHECK(made[0].slot == 3);
  CHECK(scheduler.queued_count() == 2);
  made = scheduler.fill({{"c2", {0, 1, 2, 3, 4}, {}}}, kStart);
  CHECK(made.size() == 2);
  CHECK(scheduler.queued_count() == 0);
  CHECK(scheduler.fill({{"c3", {0}, {}}}, kStart).empty());
}

TEST_CASE("fill gives each client only what it accepts, first in first out among those") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"train", 2, 0}});
  scheduler.enqueue({"p-1", WorkType::kPrediction, "train", 0});
  scheduler.enqueue({"p-2", WorkType::kPrediction, "train", 0});
  auto predictions_only = [](const WorkItem& item) { return !is_training(item); };
  auto training_only = [](const WorkItem& item) { return is_training(item); };
  auto made = scheduler.fill({{"reserve", {0, 1, 2}, predictions_only}, {"trainer", {0}, training_only}},
                             kStart);
  REQUIRE(made.size() == 3);
  CHECK(made[0].item.id == "p-1");
  CHECK(made[0].client_id == "reserve");
  CHECK(made[1].item.id == "item-1");
  CHECK(made[1].client_id == "trainer");
  CHECK(made[2].item.id == "p-2");
  CHECK(made[2].client_id == "reserve");
  CHECK(made[2].slot == 1);
  // item-2 stays: the trainer's only slot is full, and the reserve takes no training.
  REQUIRE(scheduler.queued_count() == 1);
  CHECK(scheduler.queue().front().id == "item-2");
}

TEST_CASE("a lost client with several slots keeps all its items for the lease; a gone one loses all") {
  SchedulerOptions options;
  options.lease_grace = 3s;
  auto scheduler = make_scheduler(options);
  scheduler.reconcile({{"a", 4, 0}});
  scheduler.fill({{"c1", {0, 1, 2}, {}}}, kStart);
  REQUIRE(scheduler.held_by("c1").size() == 3);
  CHECK(scheduler.lose_client("c1", kStart).size() == 3);
  // Back in time for two of them; the third (slot 2) is not announced again and runs out.
  CHECK(scheduler.reattach("item-1", "c1", kStart + 1s, 0));
  CHECK(scheduler.reattach("item-2", "c1", kStart + 1s, 1));
  auto expired = scheduler.expire(kStart + 3s);
  REQUIRE(expired.size() == 1);
  CHECK(expired[0].item.id == "item-3");
  CHECK(expired[0].reason == RequeueReason::kClientLost);
  CHECK(scheduler.queue().front().id == "item-3");

  auto released = scheduler.release_client("c1");
  REQUIRE(released.size() == 2);
  CHECK(released[0].id == "item-1");  // in slot order, at the very front
  CHECK(released[1].id == "item-2");
  CHECK(scheduler.queue()[0].id == "item-1");
  CHECK(scheduler.queue()[1].id == "item-2");
  CHECK(scheduler.queue()[2].id == "item-3");
  CHECK(scheduler.queue()[0].attempt == 1);
  CHECK(scheduler.held_by("c1").empty());
}

TEST_CASE("release gives back one item of a client and leaves its other slots alone") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"a", 3, 0}});
  scheduler.fill({{"c1", {0, 1}, {}}}, kStart);
  CHECK_FALSE(scheduler.release("item-1", "c2"));
  CHECK(scheduler.release("item-1", "c1"));
  CHECK_FALSE(scheduler.release("item-1", "c1"));
  CHECK(scheduler.queue().front() == WorkItem{"item-1", WorkType::kTraining, "a", 1});
  CHECK(scheduler.active_in_slot("c1", 0) == nullptr);
  CHECK(scheduler.active_in_slot("c1", 1)->item.id == "item-2");
  // Slot 0 is free again.
  auto again = scheduler.assign("c1", kStart, {}, 0);
  REQUIRE(again);
  CHECK(again->id == "item-1");
}

TEST_CASE("reattach puts an item into the slot the client names, if that slot is free") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"a", 3, 0}});
  scheduler.fill({{"c1", {0, 1}, {}}}, kStart);
  // The client restarted and took up item-1's kept result in slot 2.
  CHECK(scheduler.reattach("item-1", "c1", kStart, 2));
  CHECK(scheduler.active_in_slot("c1", 2)->item.id == "item-1");
  CHECK(scheduler.active_in_slot("c1", 0) == nullptr);
  // Slot 1 holds item-2: item-1 stays where it is rather than share it.
  CHECK(scheduler.reattach("item-1", "c1", kStart, 1));
  CHECK(scheduler.active_in_slot("c1", 2)->item.id == "item-1");
  CHECK(scheduler.active_in_slot("c1", 1)->item.id == "item-2");
  // A queued item goes only into a free slot.
  CHECK_FALSE(scheduler.reattach("item-3", "c1", kStart, 1));
  CHECK(scheduler.reattach("item-3", "c1", kStart, 0));
  CHECK(scheduler.queue_position("item-3") == std::nullopt);
}

TEST_CASE("queue_position counts from the front") {
  auto scheduler = make_scheduler();
  scheduler.reconcile({{"a", 3, 0}});
  CHECK(scheduler.queue_position("item-1") == 0u);
  CHECK(scheduler.queue_position("item-3") == 2u);
  CHECK_FALSE(scheduler.queue_position("nope"));
}
