// Placement: which connected clients may take a work item (the version's processing-unit
// requirement and the reserve rule) and, for an item that is not running, why it waits, in
// plain words (`conductorctl explain`). Pure functions over values: no I/O, no clock of their
// own; thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "conductor/scheduler.hpp"
#include "conductor/version.hpp"

namespace conductor {

// A connected client as placement sees it.
struct ClientSlots {
  std::string id;
  std::string host;
  std::string type = "cpu";       // its processing unit, "cpu" or "gpu"
  std::vector<std::string> gpus;  // slot i runs on gpus[i]; empty on a CPU client
  int slots = 1;
  int waiting = 0;                // free slots that asked for work (READY)
  bool reserved = false;          // a reserve client: prediction items only (ReservePolicy)
};

// Whether `client` may run `item`, whose version needs `requirement`: the client's type
// satisfies it, and a reserve client takes prediction items only.
bool may_take(const ClientSlots& client, const WorkItem& item, Requirement requirement);

// Why an item is where it is.
struct Explanation {
  // "running"; "leased" (its client went silent and may come back); "queued"; "held" (only
  // reserve clients could run it, and they take prediction items only).
  std::string state;
  // One line of plain words, e.g. "queued: version v2 requires gpu; none of the 3 connected
  // clients has a GPU (position 1 of 3 in the queue)".
  std::string text;
};

// What explain_item looks at.
struct PlacementView {
  const Scheduler& scheduler;
  std::vector<ClientSlots> clients;  // the connected clients, in connection order
  // The requirement of an item's version (kAny when the version is gone).
  std::function<Requirement(const WorkItem&)> requirement_of;
  // Whether an item's version is still being packed (its items wait for the package); empty:
  // never.
  std::function<bool(const WorkItem&)> is_packing;
  double reserve_fraction = 0;
  TimePoint now;                                   // the scheduler's clock
  std::chrono::system_clock::time_point wall_now;  // the same moment, for printed times
};

// Explains the queued or active item `item_id`; nullopt when the scheduler knows no such item
// (it finished, was dropped, or never existed).
std::optional<Explanation> explain_item(const std::string& item_id, const PlacementView& view);

}  // namespace conductor
