// Server::Impl, part two: operator commands (conductorctl and the embedding API) and
// ensemble predictions. Runs on the server's network thread like the rest of Impl.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <regex>
#include <sstream>

#include "conductor/error.hpp"
#include "conductor/package.hpp"
#include "conductor/reserve_policy.hpp"
#include "conductor/sha256.hpp"
#include "random_id.hpp"
#include "server_impl.hpp"

namespace conductor {

using json = nlohmann::json;

namespace {

constexpr std::size_t kFinishedPredictionsKept = 200;

Error argument_error(const std::string& message) { return Error(ErrorCode::kArgument, message); }

const std::string& required(const std::map<std::string, std::string>& args, const std::string& key) {
  auto it = args.find(key);
  if (it == args.end() || it->second.empty()) throw argument_error("argument '" + key + "' is required");
  return it->second;
}

std::string optional_arg(const std::map<std::string, std::string>& args, const std::string& key) {
  auto it = args.find(key);
  return it == args.end() ? std::string{} : it->second;
}

double to_number(const std::string& text, const std::string& what) {
  try {
    std::size_t used = 0;
    double value = std::stod(text, &used);
    if (used == text.size()) return value;
  } catch (const std::exception&) {
  }
  throw argument_error(what + " '" + text + "' refused: not a number");
}

int to_count(const std::string& text, const std::string& what) {
  double value = to_number(text, what);
  if (!(value >= 0 && value <= 1e9) || value != static_cast<int>(value)) {
    throw argument_error(what + " '" + text + "' refused: must be a whole number >= 0");
  }
  return static_cast<int>(value);
}

bool is_plain_name(const std::string& name) {
  return !name.empty() && name.size() <= 200 && name != "." && name != ".." && name[0] != '.' &&
         name.find_first_of("/\\") == std::string::npos;
}

bool lower_is_better(const std::string& metric) {
  static const std::regex error_like("(^|[._-])(loss|mae|mse|rmse|rae|rse|rrse|fpr|error)($|[._-])",
                                     std::regex::icase);
  return std::regex_search(metric, error_like);
}

// Host names, failure reasons and metric names come from clients: a stray byte that is not
// UTF-8 is replaced instead of failing the whole reply.
std::string reply_text(const json& body) {
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

json ensemble_json(const EnsembleResult& result) {
  json values = json::array();
  for (const auto& v : result.values) values.push_back({{"model", v.model_id}, {"value", v.value}});
  json failures = json::array();
  for (const auto& f : result.failures) failures.push_back({{"model", f.model_id}, {"reason", f.reason}});
  return {{"request", result.request_id}, {"version", result.version},
          {"complete", result.complete}, {"expected", result.expected},
          {"values", values},          {"failures", failures},
          {"mean", result.mean},       {"median", result.median},
          {"stddev", result.stddev},   {"min", result.min},
          {"max", result.max}};
}

// ---- protocol ----------------------------------------------------------------------------

void Server::Impl::on_control(const std::string& routing, const protocol::Control& control) {
  try {
    serve_control(routing, control);
  } catch (const Error& e) {
    control_reply(routing, control.request, false, e.what(), "");
  }
}

void Server::Impl::serve_control(const std::string& routing, const protocol::Control& control) {
  if (control.command == "add-version") {
    // The folder arrives as an archive pulled in chunks; the reply follows the last chunk.
    protocol::ResultOffer offer;
    offer.item = control.request;
    const double size = to_number(required(control.args, "size"), "size");
    if (!(size >= 1 && size <= 1e15)) throw argument_error("size '" + required(control.args, "size") + "' refused");
    offer.size = static_cast<std::uint64_t>(size);
    offer.sha256 = required(control.args, "sha256");
    const std::string& name = required(control.args, "name");
    if (!is_plain_name(name)) throw argument_error("version name '" + name + "' refused: not a plain folder name");
    if (control.request.empty() || control.request.size() > 64 ||
        control.request.find_first_not_of("0123456789abcdef-") != std::string::npos) {
      throw ProtocolError("CONTROL add-version refused: request id must be a lower-case UUID");
    }
    // Uploads are kept by id: an operator's must not be taken for a work item's result.
    if (scheduler_.is_known(control.request)) {
      throw ProtocolError("CONTROL add-version refused: request id '" + control.request +
                          "' is a work item's id");
    }
    WorkItem upload{control.request, WorkType::kTraining, name, 0};
    std::vector<protocol::Pull> pulls;
    try {
      pulls = receiver_->begin(std::string(kOperatorPrefix) + routing, upload, offer);
    } catch (const NoSpaceError&) {
      // The receiver words it for a client's result; an operator is told in his own terms.
      throw IoError("version folder '" + name + "' (" + std::to_string(offer.size) +
                    " bytes packed) refused: receiving it would leave less than " +
                    std::to_string(options_.min_free_bytes) +
                    " bytes free in the server's working folder (--min-free-mb)");
    }
    for (auto& pull : pulls) reply(routing, MessageType::kPull, pull);
    return;
  }
  control_reply(routing, control.request, true, "", execute(control.command, control.args));
}

void Server::Impl::on_control_upload(const std::string& routing, protocol::Message& message) {
  auto upload = message.as<protocol::Upload>();
  std::vector<protocol::Pull> pulls;
  try {
    pulls = receiver_->receive(std::string(kOperatorPrefix) + routing, upload,
                               std::move(*message.payload()));
  } catch (const NoSpaceError& e) {
    // The upload is dropped: the operator hears why, instead of waiting for a reply.
    control_reply(routing, upload.item, false, std::string("version folder refused: ") + e.what(),
                  "");
    return;
  }
  for (auto& pull : pulls) reply(routing, MessageType::kPull, pull);
}

void Server::Impl::finish_control_upload(const std::string& routing, const ResultReceiver::Finished& done) {
  try {
    if (!done.error.empty()) throw argument_error("version folder refused: " + done.error);
    add_version(done.staged, done.item.version, true);
    control_reply(routing, done.item.id, true, "", json{{"added", done.item.version}}.dump());
  } catch (const Error& e) {
    std::error_code ec;
    fs::remove_all(done.staged, ec);
    control_reply(routing, done.item.id, false, e.what(), "");
  }
}

void Server::Impl::control_reply(const std::string& routing, const std::string& request, bool ok,
                                 const std::string& error, const std::string& body) {
  reply(routing, MessageType::kControlReply, protocol::ControlReply{request, ok, error, body});
}

std::string Server::Impl::execute(const std::string& command,
                                  const std::map<std::string, std::string>& args) {
  if (command == "status") return status_json();
  if (command == "models") return models_json(required(args, "version"));
  if (command == "set-reserve") {
    set_reserve(to_number(required(args, "fraction"), "reserve fraction"));
    return json{{"reserve_nodes", config_.reserve_nodes}}.dump();
  }
  if (command == "set-target") {
    const auto& version = required(args, "version");
    set_target(version, to_count(required(args, "target"), "target"));
    return json{{"version", version}, {"target", versions_.at(version).version.target_models}}.dump();
  }
  if (command == "set-requirement") {
    const auto& version = required(args, "version");
    const auto& text = required(args, "requires");
    auto requirement = parse_requirement(text);
    if (!requirement) throw argument_error("requirement '" + text + "' refused: must be cpu, gpu or any");
    set_requirement(version, *requirement);
    return json{{"version", version}, {"requires", to_string(*requirement)}}.dump();
  }
  if (command == "explain") return explain_json(required(args, "item"));
  if (command == "add-version") {
    fs::path folder = required(args, "folder");
    add_version(folder, optional_arg(args, "name"), false);
    return json{{"added", optional_arg(args, "name").empty() ? folder.filename().string()
                                                             : optional_arg(args, "name")}}.dump();
  }
  if (command == "remove-version") {
    remove_version(required(args, "version"));
    return json{{"removed", required(args, "version")}}.dump();
  }
  if (command == "select") {
    select_version(required(args, "version"));
    return json{{"current_version", current_version()}}.dump();
  }
  if (command == "predict") {
    PredictOptions options;
    options.version = optional_arg(args, "version");
    if (auto top = optional_arg(args, "top"); !top.empty()) options.top = to_count(top, "top");
    options.by = optional_arg(args, "by");
    auto order = optional_arg(args, "order");
    if (order == "desc") options.order = PredictOptions::Order::kHigherIsBetter;
    if (order == "asc") options.order = PredictOptions::Order::kLowerIsBetter;
    auto id = predict(required(args, "rows"), options);
    return json{{"request", id}, {"items", predictions_.at(id).ensemble.result().expected}}.dump();
  }
  if (command == "prediction") {
    auto result = prediction(required(args, "request"));
    if (!result) return json{{"complete", false}}.dump();
    return reply_text(ensemble_json(*result));
  }
  throw argument_error("command '" + command + "' refused: unknown (known: status, models, " +
                       "explain, set-reserve, set-target, set-requirement, add-version, " +
                       "remove-version, select, predict, prediction)");
}

// ---- views -------------------------------------------------------------------------------

std::string Server::Impl::status_json() const {
  return reply_text(status_view());
}

json Server::Impl::status_view() const {
  const auto now = SteadyClock::now();
  auto seconds = [&](TimePoint since) { return std::chrono::duration<double>(now - since).count(); };
  json clients = json::array();
  for (const ClientSlots& slots : placement_clients()) {
    const Peer& peer = peers_.at(slots.id);
    const auto held = scheduler_.held_by(peer.id);
    json items = json::array();
    for (const ActiveItem* active : held) {
      auto epoch = peer.epochs.find(active->item.id);
      const Epoch progress = epoch == peer.epochs.end() ? Epoch{} : epoch->second;
      items.push_back({{"item", active->item.id}, {"item_type", to_string(active->item.type)},
                       {"item_version", active->item.version}, {"slot", active->slot},
                       {"epoch", progress.epoch}, {"total_epochs", progress.total}});
    }
    json client = {{"id", peer.id},         {"host", peer.host},    {"os", peer.os},
                   {"type", peer.type},     {"version", peer.version},
                   {"reserved", slots.reserved},
                   {"state", client_state(peer)},
                   {"slots", peer.slots},   {"gpus", peer.gpus},
                   {"busy_slots", held.size()}, {"waiting_slots", peer.waiting.size()},
                   {"items", items},        {"epoch", 0}, {"total_epochs", 0}};
    if (!held.empty()) {
      // The first item also in the flat fields that readers of one-slot clients know.
      for (const char* key : {"item", "item_type", "item_version", "epoch", "total_epochs"}) {
        client[key] = items[0][key];
      }
    }
    clients.push_back(client);
  }
  json queued = json::array();
  for (const auto& item : scheduler_.queue()) {
    queued.push_back({{"id", item.id}, {"type", to_string(item.type)}, {"version", item.version},
                      {"attempt", item.attempt}, {"requires", to_string(requirement_of(item))}});
  }
  json active = json::array();
  for (const auto& [id, entry] : scheduler_.active()) {
    auto host = peers_.contains(entry.client_id) ? peers_.at(entry.client_id).host : entry.client_id;
    active.push_back({{"id", id}, {"type", to_string(entry.item.type)}, {"version", entry.item.version},
                      {"attempt", entry.item.attempt}, {"client", host}, {"slot", entry.slot},
                      {"running_seconds", seconds(entry.started)}});
  }
  json versions = json::array();
  const std::string current = current_version();
  for (const auto& [name, entry] : versions_) {
    auto stored = stored_.find(name);
    versions.push_back({{"name", name},
                        {"local", entry.is_local},
                        {"current", name == current},
                        {"target", entry.version.target_models},
                        {"stored", stored == stored_.end() ? 0 : stored->second},
                        {"queued", scheduler_.queued_count(name)},
                        {"active", scheduler_.active_count(name)},
                        {"requires", to_string(entry.version.requirement)}});
  }
  return json{{"clients", clients},   {"queued", queued},
              {"active", active},     {"versions", versions},
              {"reserve_nodes", config_.reserve_nodes},
              {"current_version", current},
              {"pending_predictions", predictions_.size()}};
}

Explanation Server::Impl::explain(const std::string& item_prefix, WorkItem* item) const {
  if (item_prefix.empty()) throw argument_error("argument 'item' is required");
  // A full id, or its first characters as `conductorctl status` prints them.
  std::vector<WorkItem> matches;
  auto consider = [&](const WorkItem& candidate) {
    if (candidate.id.starts_with(item_prefix)) matches.push_back(candidate);
  };
  for (const auto& queued : scheduler_.queue()) consider(queued);
  for (const auto& [id, active] : scheduler_.active()) consider(active.item);
  auto exact = std::find_if(matches.begin(), matches.end(),
                            [&](const WorkItem& match) { return match.id == item_prefix; });
  if (exact != matches.end()) matches = {*exact};
  if (matches.empty()) {
    throw argument_error("item '" + item_prefix + "' is not known: it is neither queued nor " +
                         "running (finished, dropped, or never handed out)");
  }
  if (matches.size() > 1) {
    throw argument_error("item '" + item_prefix + "' is ambiguous: " +
                         std::to_string(matches.size()) + " items start with it");
  }
  PlacementView view{scheduler_,
                     placement_clients(),
                     [this](const WorkItem& queued) { return requirement_of(queued); },
                     [this](const WorkItem& queued) { return cache_->is_packing(queued.version); },
                     config_.reserve_nodes,
                     SteadyClock::now(),
                     std::chrono::system_clock::now()};
  if (item) *item = matches.front();
  return *explain_item(matches.front().id, view);
}

std::string Server::Impl::explain_json(const std::string& item_prefix) const {
  WorkItem item;
  Explanation explanation = explain(item_prefix, &item);
  return json{{"item", item.id},         {"type", to_string(item.type)},
              {"version", item.version}, {"attempt", item.attempt},
              {"state", explanation.state}, {"reason", explanation.text}}
      .dump();
}

std::string Server::Impl::models_json(const std::string& version) const {
  if (!versions_.contains(version)) throw argument_error("version '" + version + "' is not known");
  json models = json::array();
  for (const auto& id : store_.stored_model_ids(version)) {
    json model = {{"id", id}};
    try {
      ModelMeta meta = store_.load_model_meta(version, id);
      json metrics = json::object();
      for (const auto& [name, value] : meta.metrics) metrics[name] = value;
      model.update({{"duration", meta.duration_seconds}, {"epochs", meta.epochs},
                    {"node", meta.node_name},            {"os", meta.os},
                    {"processing_unit", meta.processing_unit},
                    {"timestamp", meta.timestamp},       {"metrics", metrics}});
    } catch (const Error& e) {
      model["problem"] = e.what();
    }
    models.push_back(model);
  }
  return reply_text(json{{"version", version}, {"models", models}});
}

std::string Server::Impl::current_version() const {
  if (config_.current_version && versions_.contains(config_.current_version->name)) {
    return config_.current_version->name;
  }
  // As the original: without a selection, the newest version by Created.
  std::string newest;
  std::optional<std::chrono::system_clock::time_point> newest_time;
  for (const auto& [name, entry] : versions_) {
    auto created = parse_timestamp(entry.version.created);
    if (newest.empty() || (created && (!newest_time || *created > *newest_time))) {
      newest = name;
      newest_time = created;
    }
  }
  return newest;
}

// ---- configuration changes -----------------------------------------------------------------

void Server::Impl::save_config() {
  config_.last_updated = format_timestamp(std::chrono::system_clock::now());
  save_configuration(config_, store_.config_file());
}

void Server::Impl::set_reserve(double fraction) {
  ReservePolicy check(fraction);  // throws for values outside [0, 1]
  config_.reserve_nodes = fraction;
  save_config();
  log("Reserve nodes set to " + std::to_string(fraction));
}

void Server::Impl::update_version(const std::string& name,
                                  const std::function<void(Version&)>& change) {
  auto entry = versions_.find(name);
  if (entry == versions_.end()) throw argument_error("version '" + name + "' is not known");
  if (entry->second.is_local) {
    fs::path file = entry->second.folder / "version.xml";
    Version version = load_version_file(file);
    change(version);
    version.last_updated = format_timestamp(std::chrono::system_clock::now());
    save_version_file(version, file);
  } else {
    for (auto& version : config_.versions) {
      if (version.name == name) change(version);
    }
    if (config_.current_version && config_.current_version->name == name) {
      change(*config_.current_version);
    }
    save_config();
  }
  change(entry->second.version);
}

void Server::Impl::set_requirement(const std::string& name, Requirement requirement) {
  update_version(name, [&](Version& version) { version.requirement = requirement; });
  log("Version " + name + " now runs on " +
      (requirement == Requirement::kAny ? std::string("any client")
                                        : std::string(to_string(requirement)) + " clients only"));
}

void Server::Impl::set_target(const std::string& name, int target) {
  if (target < 0) throw argument_error("target " + std::to_string(target) + " refused: must be >= 0");
  update_version(name, [&](Version& version) { version.target_models = target; });
  // Lowering a target takes back the queued work beyond it at once, newest first (older items
  // may be a reconnecting client's work); raising it queues more.
  auto is_training = [&](const WorkItem& item) {
    return item.version == name && item.type == WorkType::kTraining;
  };
  long excess = static_cast<long>(store_.stored_model_ids(name).size()) - target;
  for (const auto& item : scheduler_.queue()) excess += is_training(item) ? 1 : 0;
  for (const auto& [id, active] : scheduler_.active()) excess += is_training(active.item) ? 1 : 0;
  std::vector<std::string> surplus;
  for (auto it = scheduler_.queue().rbegin(); excess > 0 && it != scheduler_.queue().rend(); ++it) {
    if (!is_training(*it)) continue;
    surplus.push_back(it->id);
    --excess;
  }
  for (const auto& id : surplus) scheduler_.complete(id);
  log("Target of " + name + " set to " + std::to_string(target));
  reconcile("target changed");
}

void Server::Impl::add_version(const fs::path& folder, std::string name, bool move_folder) {
  if (name.empty()) name = fs::path(folder).lexically_normal().filename().string();
  if (name.empty()) name = fs::path(folder).lexically_normal().parent_path().filename().string();
  if (!is_plain_name(name)) throw argument_error("version name '" + name + "' refused: not a plain folder name");
  if (versions_.contains(name) || fs::exists(store_.version_dir(name))) {
    throw argument_error("version '" + name + "' refused: a version or folder of that name exists");
  }
  if (!fs::is_regular_file(folder / "version.xml")) {
    throw argument_error("folder '" + folder.string() + "' refused: it holds no version.xml");
  }
  load_version_file(folder / "version.xml");  // throws ConfigError naming file and line
  fs::path target = store_.version_dir(name);
  if (move_folder) {
    fs::rename(folder, target);
  } else {
    // Copy beside the target first, so the version appears whole or not at all.
    fs::path staging = store_.spool_dir() / ("add-" + random_uuid());
    fs::copy(folder, staging, fs::copy_options::recursive);
    std::error_code ec;
    for (const auto& skip : kNonPayloadFolders) fs::remove_all(staging / skip, ec);
    fs::rename(staging, target);
  }
  load_versions();
  log("Version " + name + " added");
  reconcile("version added");
}

void Server::Impl::remove_version(const std::string& name) {
  auto entry = versions_.find(name);
  if (entry == versions_.end()) throw argument_error("version '" + name + "' is not known");
  if (entry->second.is_local) {
    // The folder and its models stay; without version.xml it is no longer a version.
    fs::path file = entry->second.folder / "version.xml";
    fs::rename(file, entry->second.folder / "version.xml.removed");
  } else {
    std::erase_if(config_.versions, [&](const Version& v) { return v.name == name; });
  }
  const bool was_current = config_.current_version && config_.current_version->name == name;
  if (was_current) config_.current_version.reset();
  if (!entry->second.is_local || was_current) save_config();
  withdraw_queued(name, "its version was removed");
  load_versions();
  log("Version " + name + " removed; its stored models stay on disk");
}

void Server::Impl::select_version(const std::string& name) {
  auto entry = versions_.find(name);
  if (entry == versions_.end()) throw argument_error("version '" + name + "' is not known");
  config_.current_version = entry->second.version;
  save_config();
  log("Current version set to " + name);
}

// ---- predictions -------------------------------------------------------------------------

std::vector<std::string> Server::Impl::ranked_models(const std::string& version,
                                                     const PredictOptions& options) const {
  auto ids = store_.stored_model_ids(version);
  if (options.top == 0) return ids;
  if (options.by.empty()) throw argument_error("--top needs a metric to rank by (--by)");
  bool lower = options.order == PredictOptions::Order::kLowerIsBetter ||
               (options.order == PredictOptions::Order::kAuto && lower_is_better(options.by));
  std::vector<std::pair<double, std::string>> scored;
  for (const auto& id : ids) {
    try {
      for (const auto& [name, value] : store_.load_model_meta(version, id).metrics) {
        if (name == options.by) scored.emplace_back(value, id);
      }
    } catch (const Error&) {
      // A model without readable metrics cannot be ranked; it is left out.
    }
  }
  if (scored.empty()) throw argument_error("no model of '" + version + "' has the metric '" + options.by + "'");
  std::stable_sort(scored.begin(), scored.end(), [&](const auto& a, const auto& b) {
    return lower ? a.first < b.first : a.first > b.first;
  });
  std::vector<std::string> chosen;
  for (std::size_t i = 0; i < scored.size() && i < options.top; ++i) chosen.push_back(scored[i].second);
  return chosen;
}

std::string Server::Impl::predict(const std::string& csv_rows, const PredictOptions& options) {
  const std::string name = options.version.empty() ? current_version() : options.version;
  auto entry = versions_.find(name);
  if (name.empty() || entry == versions_.end()) {
    throw argument_error("prediction refused: version '" + name + "' is not known");
  }
  const Version& version = entry->second.version;
  if (version.prediction_commands.empty()) {
    throw argument_error("prediction refused: version '" + name + "' has no PredictionCommands");
  }
  if (const auto queued = scheduler_.queued_count() + inputs_packing_;
      queued >= kPredictionQueueLimit) {
    throw argument_error("prediction refused: " + std::to_string(queued) +
                         " items are queued (limit " + std::to_string(kPredictionQueueLimit) + ")");
  }
  auto models = ranked_models(name, options);
  if (models.empty()) throw argument_error("prediction refused: version '" + name + "' has no stored models");

  const std::string request = random_uuid();
  const fs::path folder = store_.spool_dir() / "predictions" / request;
  fs::create_directories(folder);
  predictions_.emplace(request,
                       PendingPrediction{Ensemble(request, name, models),
                                         SteadyClock::now() + options_.prediction_timeout, folder});
  // The inputs are made on the background worker, one model per job, so this returns at once
  // and the network thread keeps serving; each model's item is queued as soon as its inputs
  // exist, so the first clients start while the rest are still being made. Jobs run in
  // submission order: the rows are written before any model needs them.
  auto rows = std::make_shared<PredictionInputs::Rows>();
  rows->file = folder / "predictiondata.csv";
  worker_.submit([this, request, rows, csv_rows]() -> BackgroundWorker::Completion {
    try {
      PredictionInputs::prepare(*rows, csv_rows);
      return {};
    } catch (const std::exception& e) {
      // Each model's job then fails to read the rows and records the failure.
      return [this, request, reason = std::string(e.what())] {
        warn("Prediction " + request + ": " + reason);
      };
    }
  });
  inputs_packing_ += models.size();
  for (const auto& model : models) {
    worker_.submit([this, request, name, model, rows, inputs = prediction_inputs_,
                    model_dir = store_.version_dir(name) / "models" / model,
                    archive = folder / (model + ".tar"),
                    budget = inputs_in_memory_]() -> BackgroundWorker::Completion {
      std::optional<PredictionInputs::Made> blob;
      std::string failure;
      try {
        blob = inputs->make(model_dir, *rows, archive, kMemoryInputsBytes, budget);
      } catch (const std::exception& e) {  // every failure ends in the completion below
        failure = std::string("its inputs could not be packed: ") + e.what();
      } catch (...) {
        failure = "its inputs could not be packed";
      }
      return [this, request, name, model, blob = std::move(blob), failure] {
        queue_prediction_item(request, name, model, blob, failure);
      };
    });
  }
  log("Prediction " + request + " for " + name + ": " + std::to_string(models.size()) +
      " model(s) queued");
  return request;
}

void Server::Impl::queue_prediction_item(const std::string& request, const std::string& version,
                                         const std::string& model,
                                         const std::optional<PredictionInputs::Made>& inputs,
                                         const std::string& failure) {
  --inputs_packing_;
  auto pending = predictions_.find(request);
  if (pending == predictions_.end()) return;  // it ended (deadline, version removed) meanwhile
  if (!inputs) {
    warn("Prediction of model " + model + " for request " + request + " failed: " + failure);
    pending->second.ensemble.record_failure(model, failure);
    if (pending->second.ensemble.is_complete()) finish_prediction_request(request);
    return;
  }
  WorkItem item{random_uuid(), WorkType::kPrediction, version, 0};
  prediction_items_[item.id] = PredictionItem{request, model, inputs->inputs, inputs->model};
  scheduler_.enqueue(item);
}

std::optional<EnsembleResult> Server::Impl::prediction(const std::string& request_id) const {
  if (predictions_.contains(request_id)) return std::nullopt;
  for (const auto& result : finished_predictions_) {
    if (result.request_id == request_id) return result;
  }
  throw argument_error("prediction request '" + request_id + "' is not known");
}

std::optional<double> Server::Impl::read_prediction(const Version& version,
                                                    const ResultReceiver::Finished& done) const {
  if (const auto output = prediction_output_entry(version)) {
    // As on_result asked ResultReceiver to read it; a result without that file has no value.
    auto file = done.files.find(*output);
    const std::string content = file != done.files.end() ? file->second : std::string{};
    if (auto value = parse_prediction(content, version.prediction_pattern)) return value;
    return parse_prediction(content, "[-+]?(?:\\d+\\.?\\d*|\\.\\d+)(?:[eE][-+]?\\d+)?");
  }
  return parse_prediction(done.console_log, version.prediction_pattern);
}

std::optional<std::string> Server::Impl::prediction_output_entry(const Version& version) {
  if (version.prediction_output.empty()) return std::nullopt;
  // A name that climbs out of the result (../x, /x) is ignored: the console is read instead.
  const fs::path name = fs::path(version.prediction_output).lexically_normal();
  if (name.empty() || name.is_absolute() || *name.begin() == "..") return std::nullopt;
  return name.generic_string();
}

void Server::Impl::record_prediction(const WorkItem& item, std::optional<double> value,
                                     const std::string& failure) {
  auto it = prediction_items_.find(item.id);
  if (it == prediction_items_.end()) return;
  const std::string request = it->second.request;
  const std::string model = it->second.model;
  prediction_items_.erase(it);
  auto pending = predictions_.find(request);
  if (pending == predictions_.end()) return;
  if (value) {
    pending->second.ensemble.record_value(model, *value);
  } else {
    warn("Prediction of model " + model + " for request " + request + " failed: " + failure);
    pending->second.ensemble.record_failure(model, failure);
  }
  if (pending->second.ensemble.is_complete()) finish_prediction_request(request);
}

void Server::Impl::finish_prediction_request(const std::string& request) {
  auto pending = predictions_.find(request);
  if (pending == predictions_.end()) return;
  // Items still out (the deadline passed) are withdrawn; a late answer is acknowledged and dropped.
  for (auto it = prediction_items_.begin(); it != prediction_items_.end();) {
    if (it->second.request != request) {
      ++it;
      continue;
    }
    if (auto holder = scheduler_.complete(it->first); holder && !holder->empty()) {
      cancel_on(*holder, it->first, "its prediction request ended (deadline passed)");
    }
    it = prediction_items_.erase(it);
  }
  auto result = pending->second.ensemble.result();
  std::error_code ec;
  fs::remove_all(pending->second.folder, ec);
  predictions_.erase(pending);
  std::ostringstream summary;
  summary << "Prediction " << request << " complete: " << result.values.size() << " value(s), "
          << result.failures.size() << " failure(s), mean " << result.mean << ", median "
          << result.median;
  log(summary.str());
  finished_predictions_.push_back(std::move(result));
  while (finished_predictions_.size() > kFinishedPredictionsKept) finished_predictions_.pop_front();
  {
    std::lock_guard lock(finished_mutex_);
    finished_ids_.push_back(request);
    while (finished_ids_.size() > kFinishedPredictionsKept) finished_ids_.pop_front();
  }
  finished_ready_.notify_all();
}

void Server::Impl::expire_predictions(TimePoint now) {
  std::vector<std::string> overdue;
  for (auto& [id, pending] : predictions_) {
    if (pending.deadline <= now) overdue.push_back(id);
  }
  for (const auto& id : overdue) {
    predictions_.at(id).ensemble.fail_outstanding("no answer within the prediction timeout");
    finish_prediction_request(id);
  }
}

}  // namespace conductor
