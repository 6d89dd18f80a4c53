#include "conductor/scheduler.hpp"

#include <algorithm>
#include <cassert>
#include <utility>

namespace conductor {

const char* to_string(WorkType type) noexcept {
  switch (type) {
    case WorkType::kTraining: return "training";
    case WorkType::kPrediction: return "prediction";
  }
  return "unknown";
}

Scheduler::Scheduler(SchedulerOptions options, std::function<std::string()> new_id)
    : options_(options), new_id_(std::move(new_id)) {
  assert(new_id_);
}

std::vector<WorkItem> Scheduler::reconcile(const std::vector<VersionDemand>& demands) {
  std::vector<WorkItem> created;
  for (const auto& demand : demands) {
    auto is_training_of = [&](const WorkItem& item) {
      return item.type == WorkType::kTraining && item.version == demand.version;
    };
    long have = demand.stored_models + std::count_if(queue_.begin(), queue_.end(), is_training_of) +
                std::count_if(active_.begin(), active_.end(),
                              [&](const auto& entry) { return is_training_of(entry.second.item); });
    for (long missing = demand.target_models - have; missing > 0; --missing) {
      WorkItem item{new_id_(), WorkType::kTraining, demand.version, 0};
      queue_.push_back(item);
      created.push_back(std::move(item));
    }
  }
  return created;
}

void Scheduler::enqueue(WorkItem item) { queue_.push_back(std::move(item)); }

std::optional<WorkItem> Scheduler::assign(const std::string& client_id, TimePoint now,
                                          const std::function<bool(const WorkItem&)>& accepts,
                                          int slot) {
  if (active_in_slot(client_id, slot)) return std::nullopt;
  auto it = std::find_if(queue_.begin(), queue_.end(),
                         [&](const WorkItem& item) { return !accepts || accepts(item); });
  if (it == queue_.end()) return std::nullopt;
  WorkItem item = *it;
  queue_.erase(it);
  activate(item, client_id, slot, now);
  return item;
}

std::vector<Assignment> Scheduler::fill(const std::vector<FreeSlots>& clients, TimePoint now) {
  std::vector<Assignment> made;
  std::vector<std::size_t> next(clients.size(), 0);  // each client's next free slot
  // The queue only shrinks while filling: a client that found nothing it accepts never will.
  std::vector<bool> done(clients.size(), false);
  for (bool handed_out = true; handed_out && !queue_.empty();) {
    handed_out = false;
    for (std::size_t i = 0; i < clients.size() && !queue_.empty(); ++i) {
      if (done[i]) continue;
      const FreeSlots& client = clients[i];
      // A slot that is not free after all (a caller's stale view) is skipped, not filled twice.
      while (next[i] < client.slots.size() && active_in_slot(client.client_id, client.slots[next[i]])) {
        ++next[i];
      }
      if (next[i] >= client.slots.size()) continue;
      const int slot = client.slots[next[i]];
      auto item = assign(client.client_id, now, client.accepts, slot);
      if (!item) {
        done[i] = true;
        continue;
      }
      ++next[i];
      made.push_back({std::move(*item), client.client_id, slot});
      handed_out = true;
    }
  }
  return made;
}

std::optional<std::string> Scheduler::complete(const std::string& item_id) {
  if (auto it = active_.find(item_id); it != active_.end()) {
    std::string client = it->second.client_id;
    deactivate(it);
    return client;
  }
  auto it = std::find_if(queue_.begin(), queue_.end(),
                         [&](const WorkItem& item) { return item.id == item_id; });
  if (it == queue_.end()) return std::nullopt;
  queue_.erase(it);
  return std::string{};
}

bool Scheduler::fail(const std::string& item_id, const std::string& client_id) {
  auto it = active_.find(item_id);
  if (it == active_.end() || it->second.client_id != client_id) return false;
  queue_.push_back(deactivate(it));
  return true;
}

std::vector<WorkItem> Scheduler::release_client(const std::string& client_id) {
  std::vector<WorkItem> released;
  auto owner = by_client_.find(client_id);
  if (owner == by_client_.end()) return released;
  std::vector<std::string> items;
  for (const auto& [slot, item_id] : owner->second) items.push_back(item_id);
  for (const auto& item_id : items) released.push_back(deactivate(active_.find(item_id)));
  // In slot order at the very front, ahead of newer work.
  for (auto it = released.rbegin(); it != released.rend(); ++it) queue_.push_front(*it);
  return released;
}

bool Scheduler::release(const std::string& item_id, const std::string& client_id) {
  auto it = active_.find(item_id);
  if (it == active_.end() || it->second.client_id != client_id) return false;
  queue_.push_front(deactivate(it));
  return true;
}

std::vector<WorkItem> Scheduler::lose_client(const std::string& client_id, TimePoint now) {
  std::vector<WorkItem> waiting;
  auto owner = by_client_.find(client_id);
  if (owner == by_client_.end()) return waiting;
  for (const auto& [slot, item_id] : owner->second) {
    ActiveItem& active = active_.at(item_id);
    if (!active.lease_end) active.lease_end = now + options_.lease_grace;
    waiting.push_back(active.item);
  }
  return waiting;
}

std::vector<Requeued> Scheduler::expire(TimePoint now) {
  std::vector<Requeued> expired;
  std::map<std::string, TimePoint> started;  // when each expired item was handed out
  for (auto it = active_.begin(); it != active_.end();) {
    const bool timed_out = it->second.deadline <= now;
    const bool lease_over = it->second.lease_end && *it->second.lease_end <= now;
    if (timed_out || lease_over) {
      started[it->first] = it->second.started;
      auto next = std::next(it);
      WorkItem item = deactivate(it);
      it = next;
      expired.push_back({std::move(item), timed_out ? RequeueReason::kTimedOut : RequeueReason::kClientLost});
    } else {
      ++it;
    }
  }
  // Oldest first at the very front, so requeued work keeps its place ahead of newer items.
  std::stable_sort(expired.begin(), expired.end(), [&](const Requeued& a, const Requeued& b) {
    return started.at(a.item.id) < started.at(b.item.id);
  });
  for (auto it = expired.rbegin(); it != expired.rend(); ++it) queue_.push_front(it->item);
  return expired;
}

bool Scheduler::reattach(const std::string& item_id, const std::string& client_id, TimePoint now,
                         int slot) {
  if (auto it = active_.find(item_id); it != active_.end()) {
    ActiveItem& active = it->second;
    if (active.client_id != client_id) return false;
    active.lease_end.reset();
    // The client may run it in another slot now (it restarted and took up a kept result).
    if (active.slot != slot && !active_in_slot(client_id, slot)) {
      auto& slots = by_client_[client_id];
      slots.erase(active.slot);
      slots[slot] = item_id;
      active.slot = slot;
    }
    return true;
  }
  if (active_in_slot(client_id, slot)) return false;
  auto it = std::find_if(queue_.begin(), queue_.end(),
                         [&](const WorkItem& item) { return item.id == item_id; });
  if (it == queue_.end()) return false;
  WorkItem item = *it;
  queue_.erase(it);
  activate(item, client_id, slot, now);
  return true;
}

std::size_t Scheduler::drop_queued(const std::string& version) {
  return std::erase_if(queue_, [&](const WorkItem& item) { return item.version == version; });
}

bool Scheduler::is_known(const std::string& item_id) const { return find(item_id).has_value(); }

std::optional<WorkItem> Scheduler::find(const std::string& item_id) const {
  if (auto it = active_.find(item_id); it != active_.end()) return it->second.item;
  auto it = std::find_if(queue_.begin(), queue_.end(),
                         [&](const WorkItem& item) { return item.id == item_id; });
  if (it == queue_.end()) return std::nullopt;
  return *it;
}

const ActiveItem* Scheduler::active_in_slot(const std::string& client_id, int slot) const {
  auto owner = by_client_.find(client_id);
  if (owner == by_client_.end()) return nullptr;
  auto held = owner->second.find(slot);
  if (held == owner->second.end()) return nullptr;
  return &active_.at(held->second);
}

std::vector<const ActiveItem*> Scheduler::held_by(const std::string& client_id) const {
  std::vector<const ActiveItem*> held;
  if (auto owner = by_client_.find(client_id); owner != by_client_.end()) {
    for (const auto& [slot, item_id] : owner->second) held.push_back(&active_.at(item_id));
  }
  return held;
}

std::optional<std::size_t> Scheduler::queue_position(const std::string& item_id) const {
  auto it = std::find_if(queue_.begin(), queue_.end(),
                         [&](const WorkItem& item) { return item.id == item_id; });
  if (it == queue_.end()) return std::nullopt;
  return static_cast<std::size_t>(it - queue_.begin());
}

std::size_t Scheduler::queued_count(const std::string& version) const {
  return static_cast<std::size_t>(std::count_if(
      queue_.begin(), queue_.end(), [&](const WorkItem& item) { return item.version == version; }));
}

std::size_t Scheduler::active_count(const std::string& version) const {
  return static_cast<std::size_t>(std::count_if(active_.begin(), active_.end(), [&](const auto& entry) {
    return entry.second.item.version == version;
  }));
}

std::optional<TimePoint> Scheduler::next_deadline() const {
  std::optional<TimePoint> next;
  for (const auto& [id, active] : active_) {
    TimePoint due = active.lease_end ? std::min(active.deadline, *active.lease_end) : active.deadline;
    if (!next || due < *next) next = due;
  }
  return next;
}

void Scheduler::activate(const WorkItem& item, const std::string& client_id, int slot,
                         TimePoint now) {
  assert(!active_in_slot(client_id, slot));
  active_[item.id] =
      ActiveItem{item, client_id, slot, now, now + timeout_for(item.type), std::nullopt};
  by_client_[client_id][slot] = item.id;
}

WorkItem Scheduler::deactivate(std::map<std::string, ActiveItem>::iterator it) {
  WorkItem item = it->second.item;
  ++item.attempt;
  auto owner = by_client_.find(it->second.client_id);
  owner->second.erase(it->second.slot);
  if (owner->second.empty()) by_client_.erase(owner);
  active_.erase(it);
  return item;
}

std::chrono::milliseconds Scheduler::timeout_for(WorkType type) const {
  return type == WorkType::kTraining ? options_.training_timeout : options_.prediction_timeout;
}

}  // namespace conductor
