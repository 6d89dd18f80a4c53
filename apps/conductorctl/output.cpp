#include "output.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "conductor/terminal.hpp"

namespace conductor::ctl {

using json = nlohmann::json;

Table::Table(std::vector<std::string> header) : header_(std::move(header)) {}

void Table::add_row(std::vector<std::string> cells) {
  cells.resize(header_.size());
  rows_.push_back(std::move(cells));
}

void Table::print(std::ostream& out) const {
  std::vector<std::size_t> widths;
  for (const auto& cell : header_) widths.push_back(cell.size());
  for (const auto& row : rows_) {
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  auto print_row = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (std::size_t i = 0; i < cells.size(); ++i) {
      line += cells[i];
      if (i + 1 < cells.size()) line += std::string(widths[i] - cells[i].size() + 2, ' ');
    }
    out << line << '\n';
  };
  print_row(header_);
  for (const auto& row : rows_) print_row(row);
}

std::string format_number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.6g", value);
  return text;
}

namespace {

std::string seconds_of(const nlohmann::json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_number() ? format_duration(it->get<double>()) : "";
}

// Ids are UUIDs; eight characters tell them apart on one screen.
std::string short_id(const std::string& id) { return id.substr(0, 8); }

std::string text(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_boolean()) return it->get<bool>() ? "yes" : "no";
  if (it->is_number()) return format_number(it->get<double>());
  return it->dump();
}

const json& list(const json& body, const char* key) {
  static const json kEmpty = json::array();
  auto it = body.find(key);
  return it != body.end() && it->is_array() ? *it : kEmpty;
}

// "1/2" busy of all slots, and the GPUs of a GPU client: "2/2 (GPU 0,1)".
std::string slots_of(const json& client) {
  std::string slots = text(client, "busy_slots") + "/" + text(client, "slots");
  const json& gpus = list(client, "gpus");
  if (gpus.empty()) return slots;
  std::string names;
  for (const auto& gpu : gpus) names += (names.empty() ? "" : ",") + gpu.get<std::string>();
  return slots + " (GPU " + names + ")";
}

constexpr std::size_t kQueuedShown = 10;

// status shows the head of the queue with short ids; queue shows every item with its full id.
enum class Listing { kHead, kAll };

// The queued items and the active ones.
void print_items(const json& body, std::ostream& out, Listing listing) {
  const bool all = listing == Listing::kAll;
  auto id_of = [&](const std::string& id) { return all ? id : short_id(id); };
  Table queue_table({"QUEUED", "TYPE", "VERSION", "ATTEMPT", "REQUIRES"});
  std::size_t shown = 0;
  for (const auto& item : list(body, "queued")) {
    if (!all && shown++ == kQueuedShown) break;
    queue_table.add_row({id_of(text(item, "id")), text(item, "type"), text(item, "version"),
                         text(item, "attempt"), text(item, "requires")});
  }
  if (!queue_table.empty()) queue_table.print(out);
  Table active_table({"ITEM", "TYPE", "VERSION", "ATTEMPT", "CLIENT", "SLOT", "RUNNING"});
  for (const auto& item : list(body, "active")) {
    active_table.add_row({id_of(text(item, "id")), text(item, "type"), text(item, "version"),
                          text(item, "attempt"), text(item, "client"), text(item, "slot"),
                          seconds_of(item, "running_seconds")});
  }
  if (!active_table.empty()) active_table.print(out);
}

void print_clients(const json& body, std::ostream& out) {
  const json& clients = list(body, "clients");
  out << "Clients: " << clients.size() << " (reserve nodes " << text(body, "reserve_nodes")
      << ")\n";
  Table client_table(
      {"HOST", "ID", "OS", "TYPE", "STATE", "RESERVED", "SLOTS", "ITEM", "VERSION", "EPOCH"});
  for (const auto& client : clients) {
    // One row per item it runs (a client with several slots runs several), or one idle row.
    std::vector<std::string> row = {text(client, "host"),     short_id(text(client, "id")),
                                    text(client, "os"),       text(client, "type"),
                                    text(client, "state"),    text(client, "reserved"),
                                    slots_of(client)};
    const json& items = list(client, "items");
    if (items.empty()) {
      row.insert(row.end(), {"-", "-", "-"});
      client_table.add_row(row);
    }
    for (const auto& item : items) {
      std::string slot = client.value("slots", 1) > 1 ? " [" + text(item, "slot") + "]" : "";
      row.resize(7);
      row.insert(row.end(), {short_id(text(item, "item")) + " " + text(item, "item_type") + slot,
                             text(item, "item_version"),
                             text(item, "epoch") + "/" + text(item, "total_epochs")});
      client_table.add_row(row);
      row.assign(7, "");  // further items of the same client: only the item columns
    }
  }
  if (!client_table.empty()) client_table.print(out);
}

void print_versions(const json& body, std::ostream& out) {
  out << "Versions (current: " << text(body, "current_version") << ")\n";
  Table version_table({"NAME", "LOCAL", "CURRENT", "STORED/TARGET", "QUEUED", "ACTIVE", "REQUIRES"});
  for (const auto& version : list(body, "versions")) {
    version_table.add_row({text(version, "name"), text(version, "local"), text(version, "current"),
                           text(version, "stored") + "/" + text(version, "target"),
                           text(version, "queued"), text(version, "active"),
                           text(version, "requires")});
  }
  version_table.print(out);
}

// One bar per version: stored models of the target.
void print_version_bars(const json& body, std::ostream& out, std::size_t width) {
  out << "Versions (current: " << text(body, "current_version") << ")\n";
  std::size_t name_width = 0;
  for (const auto& version : list(body, "versions")) {
    name_width = std::max(name_width, text(version, "name").size());
  }
  for (const auto& version : list(body, "versions")) {
    const double stored = version.value("stored", 0.0);
    const double target = version.value("target", 0.0);
    const std::string name = text(version, "name");
    const std::string numbers = "  " + text(version, "stored") + "/" + text(version, "target") +
                                " stored, " + text(version, "active") + " active, " +
                                text(version, "queued") + " queued";
    // The bar takes what the name and the numbers leave, within reason.
    const std::size_t used = name_width + 2 + numbers.size();
    const std::size_t bar = std::clamp<std::size_t>(width > used ? width - used : 0, 12, 40);
    out << name << std::string(name_width - name.size() + 2, ' ')
        << progress_bar(target > 0 ? stored / target : 1.0, bar) << numbers << "\n";
  }
}

// The queue's summary line, the head of the queue and the active items.
void print_work(const json& body, std::ostream& out) {
  std::map<std::string, std::size_t> queued_by_type;
  for (const auto& item : list(body, "queued")) ++queued_by_type[text(item, "type")];
  out << "Queue: " << list(body, "queued").size() << " queued";
  std::string separator = " (";
  for (const auto& [type, count] : queued_by_type) {
    out << separator << count << " " << type;
    separator = ", ";
  }
  if (!queued_by_type.empty()) out << ")";
  out << "; " << list(body, "active").size() << " active; " << text(body, "pending_predictions")
      << " prediction request(s) running\n";
  print_items(body, out, Listing::kHead);
  const std::size_t queued = list(body, "queued").size();
  if (queued > kQueuedShown) {
    out << "(" << queued - kQueuedShown << " more queued; `conductorctl queue` lists all)\n";
  }
}

void print_status(const json& body, std::ostream& out) {
  print_clients(body, out);
  out << "\n";
  print_versions(body, out);
  out << "\n";
  print_work(body, out);
}

void print_queue(const json& body, std::ostream& out) {
  out << "Queue: " << list(body, "queued").size() << " queued; " << list(body, "active").size()
      << " active\n";
  print_items(body, out, Listing::kAll);
}

void print_explanation(const json& body, std::ostream& out) {
  out << "Item " << text(body, "item") << " (" << text(body, "type") << " of "
      << text(body, "version") << ", attempt " << text(body, "attempt") << ")\n"
      << text(body, "reason") << "\n";
}

void print_models(const json& body, std::ostream& out) {
  const json& models = list(body, "models");
  std::set<std::string> metric_names;
  for (const auto& model : models) {
    if (auto metrics = model.find("metrics"); metrics != model.end() && metrics->is_object()) {
      for (const auto& [name, value] : metrics->items()) metric_names.insert(name);
    }
  }
  out << "Models of " << text(body, "version") << ": " << models.size() << "\n";
  std::vector<std::string> header = {"ID", "DURATION", "EPOCHS", "NODE"};
  header.insert(header.end(), metric_names.begin(), metric_names.end());
  Table table(header);
  std::vector<std::string> problems;
  for (const auto& model : models) {
    std::vector<std::string> row = {text(model, "id"), seconds_of(model, "duration"),
                                    text(model, "epochs"), text(model, "node")};
    const json metrics = model.value("metrics", json::object());
    for (const auto& name : metric_names) row.push_back(text(metrics, name.c_str()));
    if (model.contains("problem")) {
      row[1] = "?";
      problems.push_back(text(model, "id") + ": " + text(model, "problem"));
    }
    table.add_row(std::move(row));
  }
  if (!table.empty()) table.print(out);
  for (const auto& problem : problems) out << "unreadable meta.xml of " << problem << '\n';
}

void print_prediction(const json& body, std::ostream& out) {
  out << "Prediction " << text(body, "request") << " of " << text(body, "version") << "\n";
  Table values({"MODEL", "VALUE"});
  for (const auto& value : list(body, "values")) {
    values.add_row({text(value, "model"), text(value, "value")});
  }
  if (!values.empty()) values.print(out);
  const json& failures = list(body, "failures");
  if (!failures.empty()) {
    out << "\nFailures: " << failures.size() << "\n";
    Table table({"MODEL", "REASON"});
    for (const auto& failure : failures)
      table.add_row({text(failure, "model"), text(failure, "reason")});
    table.print(out);
  }
  out << "\n"
      << list(body, "values").size() << " value(s) of " << text(body, "expected")
      << " model(s): mean " << text(body, "mean") << ", median " << text(body, "median")
      << ", stddev " << text(body, "stddev") << ", min " << text(body, "min") << ", max "
      << text(body, "max") << "\n";
}

}  // namespace

void print_watch_view(const json& body, std::ostream& out, std::size_t width) {
  print_version_bars(body, out, width);
  out << "\n";
  print_clients(body, out);
  out << "\n";
  print_work(body, out);
}

void print_readable(const std::string& command, const json& body, std::ostream& out) {
  if (command == "status") {
    print_status(body, out);
  } else if (command == "models") {
    print_models(body, out);
  } else if (command == "predict") {
    print_prediction(body, out);
  } else if (command == "set-reserve") {
    out << "Reserve nodes set to " << text(body, "reserve_nodes") << "\n";
  } else if (command == "queue") {
    print_queue(body, out);
  } else if (command == "explain") {
    print_explanation(body, out);
  } else if (command == "set-requirement") {
    out << "Items of " << text(body, "version") << " now run on "
        << (text(body, "requires") == "any" ? std::string("any client")
                                            : text(body, "requires") + " clients only")
        << "\n";
  } else if (command == "set-target") {
    out << "Target of " << text(body, "version") << " set to " << text(body, "target")
        << " model(s)\n";
  } else if (command == "add-version") {
    out << "Version " << text(body, "added") << " added\n";
  } else if (command == "remove-version") {
    out << "Version " << text(body, "removed") << " removed; its stored models stay on disk\n";
  } else if (command == "select") {
    out << "Current version: " << text(body, "current_version") << "\n";
  } else {
    out << body.dump(2) << "\n";
  }
}

}  // namespace conductor::ctl
