// Scheduler: the queue of work items and who is running what. Pure logic: no I/O, no clock of
// its own (every call that needs time takes `now`), so tests drive it with a fake clock.
// Not thread-safe: the server's network thread owns it.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace conductor {

using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;

enum class WorkType { kTraining, kPrediction };
const char* to_string(WorkType type) noexcept;

// One unit of work handed to one client. `attempt` counts hand-outs that ended without a
// result (failure, lost client, timeout); the id stays the same across attempts.
struct WorkItem {
  std::string id;
  WorkType type = WorkType::kTraining;
  std::string version;
  int attempt = 0;

  friend bool operator==(const WorkItem&, const WorkItem&) = default;
};

struct ActiveItem {
  WorkItem item;
  std::string client_id;
  int slot = 0;  // which of its client's slots runs it (docs/protocol.md, "slots")
  TimePoint started;
  TimePoint deadline;  // the per-type outer bound
  // Set while its client is out of touch: the item waits until then for the client to come
  // back (reattach) before it returns to the queue.
  std::optional<TimePoint> lease_end;
};

struct SchedulerOptions {
  std::chrono::milliseconds training_timeout = std::chrono::hours(84);  // 3.5 days, as the original
  std::chrono::milliseconds prediction_timeout = std::chrono::minutes(20);
  // How long an item of a client that went silent stays reserved for that client.
  std::chrono::milliseconds lease_grace = std::chrono::seconds(10);
};

// How many models a version wants and has; input to Scheduler::reconcile.
struct VersionDemand {
  std::string version;
  int target_models = 0;
  int stored_models = 0;
};

// Why an item went back to the queue.
enum class RequeueReason { kFailed, kClientLost, kTimedOut };

struct Requeued {
  WorkItem item;  // as queued again: attempt already counted
  RequeueReason reason;
};

// A client's free slots that asked for work, for Scheduler::fill.
struct FreeSlots {
  std::string client_id;
  std::vector<int> slots;                        // filled in this order
  std::function<bool(const WorkItem&)> accepts;  // what this client may run; empty: anything
};

struct Assignment {
  WorkItem item;
  std::string client_id;
  int slot = 0;
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options, std::function<std::string()> new_id);

  // Queues target - stored - queued - active new training items for each version (never
  // negative) and returns them in queue order.
  std::vector<WorkItem> reconcile(const std::vector<VersionDemand>& demands);

  // Appends an item to the queue (prediction requests use this).
  void enqueue(WorkItem item);

  // Hands the first queued item (FIFO) accepted by `accepts` to slot `slot` of `client_id` and
  // makes it active until complete/fail/release/expire. A slot holds at most one item: a slot
  // that already holds one gets nothing.
  std::optional<WorkItem> assign(const std::string& client_id, TimePoint now,
                                 const std::function<bool(const WorkItem&)>& accepts = {},
                                 int slot = 0);

  // Fills free slots from the queue, first in first out, in rounds: each round walks `clients`
  // in the given order and gives each client that still has a free slot the first queued item
  // it accepts; rounds go on until one hands out nothing. So items spread over clients before
  // they stack up in one client's slots. Returns the hand-outs in the order they were made.
  std::vector<Assignment> fill(const std::vector<FreeSlots>& clients, TimePoint now);

  // The item's result was stored: it leaves the queue or the active set, whoever ran it.
  // Returns the client that held it (empty if it was queued), or nullopt if the item is unknown.
  std::optional<std::string> complete(const std::string& item_id);

  // The client reported failure: the item returns to the back of the queue, attempt + 1.
  // Returns false when the item is not active for that client (a stale report).
  bool fail(const std::string& item_id, const std::string& client_id);

  // The client does not hold its items any more (it left for good): they return to the front
  // of the queue under the same ids at once, in slot order.
  std::vector<WorkItem> release_client(const std::string& client_id);

  // The client does not hold this one item any more (it said so): the item returns to the
  // front of the queue, attempt + 1. False when it is not active for that client.
  bool release(const std::string& item_id, const std::string& client_id);

  // The client went silent: its items stay reserved for it until now + lease_grace, then
  // expire() returns them to the queue. Returns the items now waiting for their client.
  std::vector<WorkItem> lose_client(const std::string& client_id, TimePoint now);

  // Items whose per-type timeout passed, and items whose lost client's lease ran out, return
  // to the front of the queue (oldest first), each with why.
  std::vector<Requeued> expire(TimePoint now);

  // A client that reconnects and still runs `item_id` in `slot` takes it back: true if the item
  // was queued and that slot is free (now active again for this client), or it is already
  // active for this client (a lease ends; it moves to `slot` when that slot is free).
  bool reattach(const std::string& item_id, const std::string& client_id, TimePoint now,
                int slot = 0);

  // Drops every queued item of a version (active ones finish or fail on their own).
  std::size_t drop_queued(const std::string& version);

  bool is_known(const std::string& item_id) const;
  std::optional<WorkItem> find(const std::string& item_id) const;
  // The item in slot `slot` of `client_id`; nullptr when that slot holds none.
  const ActiveItem* active_in_slot(const std::string& client_id, int slot) const;
  // Every item `client_id` holds, in slot order.
  std::vector<const ActiveItem*> held_by(const std::string& client_id) const;
  // Where a queued item stands: 0 for the next to go out; nullopt when it is not queued.
  std::optional<std::size_t> queue_position(const std::string& item_id) const;
  const std::deque<WorkItem>& queue() const noexcept { return queue_; }
  const std::map<std::string, ActiveItem>& active() const noexcept { return active_; }
  std::size_t queued_count() const noexcept { return queue_.size(); }
  std::size_t active_count() const noexcept { return active_.size(); }
  std::size_t queued_count(const std::string& version) const;
  std::size_t active_count(const std::string& version) const;
  std::optional<TimePoint> next_deadline() const;

 private:
  std::chrono::milliseconds timeout_for(WorkType type) const;
  void activate(const WorkItem& item, const std::string& client_id, int slot, TimePoint now);
  // Takes an active item out; returns it with its attempt counted.
  WorkItem deactivate(std::map<std::string, ActiveItem>::iterator it);

  SchedulerOptions options_;
  std::function<std::string()> new_id_;
  std::deque<WorkItem> queue_;
  std::map<std::string, ActiveItem> active_;                         // by item id
  std::map<std::string, std::map<int, std::string>> by_client_;     // client -> slot -> item
};

}  // namespace conductor
