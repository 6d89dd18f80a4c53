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
                                          const std::function<bool(const WorkItem&)>& accepts) {
  if (by_client_.contains(client_id)) return std::nullopt;
  auto it = std::find_if(queue_.begin(), queue_.end(),
                         [&](const WorkItem& item) { return !accepts || accepts(item); });
  if (it == queue_.end()) return std::nullopt;
  WorkItem item = *it;
  queue_.erase(it);
  active_[item.id] = ActiveItem{item, client_id, now, now + timeout_for(item.type), std::nullopt};
  by_client_[client_id] = item.id;
  return item;
}

std::optional<std::string> Scheduler::complete(const std::string& item_id) {
  if (auto it = active_.find(item_id); it != active_.end()) {
    std::string client = it->second.client_id;
    by_client_.erase(client);
    active_.erase(it);
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
  WorkItem item = it->second.item;
  ++item.attempt;
  by_client_.erase(client_id);
  active_.erase(it);
  queue_.push_back(std::move(item));
  return true;
}

std::vector<WorkItem> Scheduler::release_client(const std::string& client_id) {
  std::vector<WorkItem> released;
  auto owner = by_client_.find(client_id);
  if (owner == by_client_.end()) return released;
  auto it = active_.find(owner->second);
  assert(it != active_.end());
  WorkItem item = it->second.item;
  ++item.attempt;
  active_.erase(it);
  by_client_.erase(owner);
  queue_.push_front(item);
  released.push_back(std::move(item));
  return released;
}

std::vector<WorkItem> Scheduler::lose_client(const std::string& client_id, TimePoint now) {
  std::vector<WorkItem> waiting;
  auto owner = by_client_.find(client_id);
  if (owner == by_client_.end()) return waiting;
  ActiveItem& active = active_.at(owner->second);
  if (!active.lease_end) active.lease_end = now + options_.lease_grace;
  waiting.push_back(active.item);
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
      WorkItem item = it->second.item;
      ++item.attempt;
      by_client_.erase(it->second.client_id);
      it = active_.erase(it);
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

bool Scheduler::reattach(const std::string& item_id, const std::string& client_id, TimePoint now) {
  if (auto it = active_.find(item_id); it != active_.end()) {
    if (it->second.client_id != client_id) return false;
    it->second.lease_end.reset();
    return true;
  }
  if (by_client_.contains(client_id)) return false;
  auto it = std::find_if(queue_.begin(), queue_.end(),
                         [&](const WorkItem& item) { return item.id == item_id; });
  if (it == queue_.end()) return false;
  WorkItem item = *it;
  queue_.erase(it);
  active_[item.id] = ActiveItem{item, client_id, now, now + timeout_for(item.type), std::nullopt};
  by_client_[client_id] = item.id;
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

const ActiveItem* Scheduler::active_for_client(const std::string& client_id) const {
  auto owner = by_client_.find(client_id);
  if (owner == by_client_.end()) return nullptr;
  return &active_.at(owner->second);
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

std::chrono::milliseconds Scheduler::timeout_for(WorkType type) const {
  return type == WorkType::kTraining ? options_.training_timeout : options_.prediction_timeout;
}

}  // namespace conductor
