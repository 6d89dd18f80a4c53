#include "conductor/placement.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <numeric>

namespace conductor {

namespace {

// "2024-05-01T10:00:00Z": when an operator reads it, seconds are enough.
std::string utc_time(std::chrono::system_clock::time_point time) {
  std::time_t seconds = std::chrono::system_clock::to_time_t(time);
  std::tm parts{};
  gmtime_r(&seconds, &parts);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

std::string count_of(std::size_t n, const std::string& singular, const std::string& plural) {
  return std::to_string(n) + " " + (n == 1 ? singular : plural);
}

std::string explain_active(const ActiveItem& active, const PlacementView& view) {
  auto wall = [&](TimePoint steady) {
    return utc_time(view.wall_now + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                        steady - view.now));
  };
  const std::string attempt = "attempt " + std::to_string(active.item.attempt);
  if (active.lease_end) {
    return "waiting for client " + active.client_id + " (lease until " + wall(*active.lease_end) +
           ") to come back; if it does not, the item is queued again (" + attempt + ")";
  }
  std::string where = "client " + active.client_id;
  auto client = std::find_if(view.clients.begin(), view.clients.end(),
                             [&](const ClientSlots& c) { return c.id == active.client_id; });
  if (client != view.clients.end()) {
    where = "client " + client->host + " (" + client->id + ")";
  }
  where += " slot " + std::to_string(active.slot);
  if (client != view.clients.end() && active.slot >= 0 &&
      static_cast<std::size_t>(active.slot) < client->gpus.size()) {
    where += " (GPU " + client->gpus[static_cast<std::size_t>(active.slot)] + ")";
  }
  return "running on " + where + " since " + wall(active.started) + " (" + attempt + ")";
}

// Why a queued item is still queued; sets `held` when only reserve clients could run it.
std::string explain_queued(const WorkItem& item, std::size_t position, const PlacementView& view,
                           bool& held) {
  const Requirement requirement = view.requirement_of(item);
  const std::size_t connected = view.clients.size();
  const std::string where = " (position " + std::to_string(position + 1) + " of " +
                            std::to_string(view.scheduler.queued_count()) + " in the queue)";
  if (connected == 0) return "queued: no client is connected" + where;

  std::vector<const ClientSlots*> capable, eligible;
  for (const auto& client : view.clients) {
    if (!satisfies(client.type, requirement)) continue;
    capable.push_back(&client);
    if (may_take(client, item, requirement)) eligible.push_back(&client);
  }
  if (capable.empty()) {
    const bool gpu = requirement == Requirement::kGpu;
    return "queued: version " + item.version + " requires " + to_string(requirement) + "; " +
           (connected == 1 ? std::string("the only connected client ") +
                                 (gpu ? "has no GPU" : "is not a CPU client")
                           : "none of the " + std::to_string(connected) + " connected clients " +
                                 (gpu ? "has a GPU" : "is a CPU client")) +
           where;
  }
  if (eligible.empty()) {
    held = true;
    char fraction[32];
    std::snprintf(fraction, sizeof fraction, "%g", view.reserve_fraction);
    return "held: clients in reserve for predictions: " +
           (capable.size() == 1 ? std::string("the only client able to run it takes")
                                : "all " + std::to_string(capable.size()) +
                                      " clients able to run it take") +
           " prediction items only (reserve nodes " + fraction + ")" + where;
  }
  if (view.is_packing && view.is_packing(item)) {
    return "queued: version " + item.version + " is being packed; its items go out once the " +
           "package is ready" + where;
  }
  const int slots = std::accumulate(eligible.begin(), eligible.end(), 0,
                                    [](int sum, const ClientSlots* c) { return sum + c->slots; });
  const int free = std::accumulate(eligible.begin(), eligible.end(), 0,
                                   [](int sum, const ClientSlots* c) { return sum + c->waiting; });
  std::string kind = requirement == Requirement::kAny ? "" : std::string(to_string(requirement)) + " ";
  std::string clients = "the " + count_of(eligible.size(), kind + "client", kind + "clients");
  if (eligible.size() < capable.size()) clients += " outside the reserve";
  if (free == 0) {
    return "queued: every slot of " + clients + " is busy (" + std::to_string(slots) + " of " +
           std::to_string(slots) + ")" + where;
  }
  return "queued: " + count_of(static_cast<std::size_t>(free), "slot", "slots") + " of " + clients +
         " free; it goes out at the next dispatch unless items ahead of it take them" + where;
}

}  // namespace

bool may_take(const ClientSlots& client, const WorkItem& item, Requirement requirement) {
  return satisfies(client.type, requirement) &&
         (!client.reserved || item.type == WorkType::kPrediction);
}

std::optional<Explanation> explain_item(const std::string& item_id, const PlacementView& view) {
  if (auto it = view.scheduler.active().find(item_id); it != view.scheduler.active().end()) {
    return Explanation{it->second.lease_end ? "leased" : "running", explain_active(it->second, view)};
  }
  auto position = view.scheduler.queue_position(item_id);
  if (!position) return std::nullopt;
  bool held = false;
  std::string text = explain_queued(view.scheduler.queue()[*position], *position, view, held);
  return Explanation{held ? "held" : "queued", std::move(text)};
}

}  // namespace conductor
