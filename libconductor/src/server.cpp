#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "conductor/error.hpp"
#include "conductor/keys.hpp"
#include "conductor/reserve_policy.hpp"
#include "file_io.hpp"
#include "random_id.hpp"
#include "server_impl.hpp"
#include "thread_name.hpp"

namespace conductor {

using namespace std::chrono_literals;

fs::path default_server_workdir(const fs::path& explicit_dir) {
  if (!explicit_dir.empty()) return explicit_dir;
  if (const char* dir = std::getenv("CONDUCTOR_WORKDIR"); dir && *dir) return dir;
  if (const char* env = std::getenv("RUNTIMEENV"); env && std::string(env) == "docker") {
    return fs::current_path() / "workdir";
  }
  const char* home = std::getenv("HOME");
  return fs::path(home && *home ? home : ".") / "Conductor";
}

namespace {

// A RESULT's or FAILED's `ready_slot`: -1 (none) or one of the client's slots.
void check_ready_slot(const char* what, int slot, int slots) {
  if (slot != -1 && (slot < 0 || slot >= slots)) {
    throw ProtocolError(std::string(what) + " refused: ready_slot " + std::to_string(slot) +
                        " is not one of the " + std::to_string(slots) +
                        " slot(s) this client announced");
  }
}

// Item ids travel over the network and become file names: only what random_uuid() makes.
bool is_valid_item_id(const std::string& id) {
  return !id.empty() && id.size() <= 64 &&
         id.find_first_not_of("0123456789abcdefABCDEF-") == std::string::npos;
}

constexpr std::uint32_t kChunkSize = 1u << 20;
constexpr int kWindow = 8;

}  // namespace

Server::Impl::Impl(ServerOptions options)
    : options_(std::move(options)),
      store_(options_.workdir),
      lock_(store_.root() / "config" / "server.lock", "working folder '" + store_.root().string() + "'"),
      log_(store_.log_file(), options_.log_to_stdout),
      scheduler_(SchedulerOptions{options_.training_timeout, options_.prediction_timeout,
                                  lease_grace()},
                 random_uuid),
      router_(context_, zmq::socket_type::router) {
  store_.clean_spool();
  cache_ = std::make_unique<PackageCache>(store_.spool_dir() / "packages", worker_);
  prediction_inputs_ = std::make_shared<PredictionInputs>(store_.spool_dir() / "model-packs");
  receiver_ = std::make_unique<ResultReceiver>(
      store_, kChunkSize, kWindow, result_worker_,
      [this](const std::string& client, ResultReceiver::Finished done) {
        on_finished(client, std::move(done));
      },
      [this](const std::string& client, const protocol::Pull& pull) { send_pull(client, pull); },
      options_.min_free_bytes);
  config_ = store_.load_or_create_configuration();
  load_versions();
  setup_security();
  endpoint_ = transport::bind_router(router_, options_.bind, zap_ ? curve_secret_ : std::string{});
  curve_secret_.clear();
  log("Conductor server listening on " + endpoint_ + ", working folder " +
      store_.root().string() + ", " + std::to_string(versions_.size()) + " version(s)");
  reconcile("start-up");
  publish_status();  // status() is meaningful before the first turn of the loop
  start_http();
}

void Server::Impl::run() {
  mark_serving();
  auto next_reconcile = SteadyClock::now() + options_.reconcile_interval;
  while (!stop_requested_.load()) {
    zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, worker_.wake_fd(), ZMQ_POLLIN, 0},
                               {nullptr, wake_.fd(), ZMQ_POLLIN, 0},
                               {nullptr, result_worker_.wake_fd(), ZMQ_POLLIN, 0},
                               {zap_ ? zap_->socket().handle() : nullptr, 0, ZMQ_POLLIN, 0}};
    if (!transport::poll(items, zap_ ? 5 : 4, 50ms)) continue;  // interrupted by a signal
    // Each eventfd is read only when it woke the poll: at thousands of messages a second an
    // idle read per turn is a syscall per message. Drained before run_tasks(), so a task
    // queued after this wakes the next poll.
    if (items[2].revents & ZMQ_POLLIN) wake_.drain();
    if (zap_) zap_->serve();
    // Drain everything that is waiting before judging liveness, so a slow turn of this
    // loop never makes a client that kept sending look dead.
    for (int budget = 0; budget < 10000; ++budget) {
      auto received = transport::receive(router_, protocol::kMaxFrames + 1);
      if (!received) break;
      handle(*received);
    }
    try {
      if (items[1].revents & ZMQ_POLLIN) worker_.run_completions();
      if (items[3].revents & ZMQ_POLLIN) result_worker_.run_completions();
      run_tasks();
      serve_timers(next_reconcile);
    } catch (const std::exception& e) {
      // A file system hiccup during a check must not end the server; the next turn retries.
      error(std::string("Housekeeping failed, retrying on the next turn: ") + e.what());
    }
  }
  for (auto& [id, peer] : peers_) send(peer, MessageType::kResync, protocol::Empty{});
  {
    std::lock_guard lock(tasks_mutex_);
    serving_ = false;
  }
  run_tasks();  // what arrived while stopping still gets an answer
  {
    // No request completes any more: waiters return now rather than at their timeout.
    std::lock_guard lock(finished_mutex_);
    stopped_ = true;
  }
  finished_ready_.notify_all();
  log("Conductor server stopped");
}

void Server::Impl::serve_timers(TimePoint& next_reconcile) {
  {
    auto now = SteadyClock::now();
    if (zap_ && now >= next_key_check_) {
      next_key_check_ = now + 1s;
      refresh_authorized_keys();
    }
    // Liveness is judged a few times per heartbeat, not on every turn: with thousands of
    // clients the loop turns for every heartbeat that arrives.
    if (now >= next_liveness_check_) {
      next_liveness_check_ = now + std::max<std::chrono::milliseconds>(options_.heartbeat_interval / 4, 10ms);
      drop_silent_clients(now);
    }
    if (now >= next_upload_check_) {
      next_upload_check_ = now + 1s;
      // Long enough to resume after a long network cut; short enough that a client or
      // operator that never returns does not keep its partial upload on disk for good.
      const auto idle_limit = std::max<std::chrono::milliseconds>(kUploadIdleLimit, lease_grace());
      for (const auto& upload : receiver_->abandon_idle(now, idle_limit)) {
        warn("Upload of " + upload + " abandoned: nothing arrived for " +
             std::to_string(idle_limit.count() / 1000) + " s");
      }
    }
    for (const auto& [item, reason] : scheduler_.expire(now)) {
      const bool lost = reason == RequeueReason::kClientLost;
      if (lost) {
        metrics_.count_lease_expiry(to_string(item.type));
      } else {
        metrics_.count_failure(to_string(item.type), FailureReason::kTimedOut);
      }
      // A prediction that timed out, or lost three clients, is a failure: its request completes.
      if (is_prediction(item) && (!lost || item.attempt >= 3)) {
        scheduler_.complete(item.id);
        record_prediction(item, std::nullopt,
                          lost ? "lost " + std::to_string(item.attempt) + " clients"
                               : "timed out after " + std::to_string(options_.prediction_timeout.count()) + " ms");
      } else {
        warn("Item " + item.id + " of " + item.version +
             (lost ? ": its client did not come back within the lease" : " timed out") + "; queued again");
      }
    }
    expire_predictions(now);
    if (now >= next_reconcile) {
      reload_versions();
      reconcile("periodic check");
      next_reconcile = now + options_.reconcile_interval;
    }
    dispatch(now);
    publish_status();
    publish_http();
  }
}

void Server::Impl::announce_stored(const std::string& version, const std::string& id) {
  // Its meta.xml is read by next_stored_model(), on the caller's thread: this thread has
  // every client to serve, and a server nobody asks never reads it.
  StoredModel model{version, id, store_.version_dir(version) / "models" / id, {}, {}};
  std::lock_guard lock(stored_mutex_);
  stored_models_.push_back(std::move(model));
  while (stored_models_.size() > 10000) stored_models_.pop_front();
  stored_ready_.notify_all();
}

std::optional<StoredModel> Server::Impl::next_stored_model(std::chrono::milliseconds timeout) {
  std::unique_lock lock(stored_mutex_);
  if (!stored_ready_.wait_for(lock, timeout, [&] { return !stored_models_.empty(); })) return std::nullopt;
  StoredModel model = std::move(stored_models_.front());
  stored_models_.pop_front();
  lock.unlock();
  try {
    model.meta = store_.load_model_meta(model.version, model.id);
  } catch (const Error& e) {
    // Removed since (the version was removed), or edited: still reported, its meta empty.
    model.meta_error = e.what();
  }
  return model;
}

bool Server::Impl::wait_until_finished(const std::string& request_id, TimePoint deadline) {
  std::unique_lock lock(finished_mutex_);
  return finished_ready_.wait_until(lock, deadline, [&] {
    return stopped_ ||
           std::find(finished_ids_.begin(), finished_ids_.end(), request_id) != finished_ids_.end();
  });
}

void Server::Impl::mark_serving() {
  {
    std::lock_guard lock(tasks_mutex_);
    serving_ = true;
  }
  std::lock_guard lock(finished_mutex_);
  stopped_ = false;
}

void Server::Impl::run_tasks() {
  std::deque<std::function<void()>> tasks;
  {
    std::lock_guard lock(tasks_mutex_);
    tasks.swap(tasks_);
  }
  for (auto& task : tasks) task();
}

void Server::Impl::handle(transport::Received& received) {
  auto& frames = received.frames;
  if (frames.empty()) return;
  std::string routing = frames[0].to_string();
  Peer* peer = find_by_routing(routing);
  if (peer) peer->last_seen = SteadyClock::now();
  // Under CURVE every connection carries the key that passed the ZAP handler. A key that has
  // since been revoked, or a connection that speaks for another key's client, is refused.
  std::string key = zap_ && frames.size() > 1 ? user_id_of(frames[1]) : std::string{};
  if (zap_ && (!zap_->is_allowed(key) || (peer && peer->key != key))) {
    reply(routing, MessageType::kError,
          protocol::ErrorMessage{static_cast<int>(protocol::ErrorReply::kRefused),
                                 "refused: this client's key is not authorized", true, "", ""});
    return;
  }
  protocol::Subject subject;  // repeated in an ERROR, so a client knows which slot it concerns
  try {
    if (received.oversized) {
      throw ProtocolError("message refused: more than " +
                          std::to_string(protocol::kMaxFrames) + " frames");
    }
    auto message = protocol::decode(frames, 1);
    ++metrics_.messages_received[protocol::to_string(message.type())];
    if (message.payload() &&
        (message.type() == MessageType::kUpload || message.type() == MessageType::kResult)) {
      metrics_.bytes_received += message.payload()->size();
    }
    try {
      subject = message.as<protocol::Subject>();
    } catch (const ProtocolError&) {
      // A header whose item is not a string is refused below all the same.
    }
    if (message.type() == MessageType::kHello) {
      on_hello(routing, key, message.as<protocol::Hello>());
      return;
    }
    // Operators need no HELLO: they are not workers and never count as clients.
    if (message.type() == MessageType::kControl) {
      on_control(routing, message.as<protocol::Control>());
      return;
    }
    // An operator's folder upload; a worker's chunk from before a server restart gets RESYNC.
    if (!peer && message.type() == MessageType::kUpload &&
        receiver_->is_receiving(std::string(kOperatorPrefix) + routing, message.as<protocol::Upload>().item)) {
      on_control_upload(routing, message);
      return;
    }
    if (!peer) {
      // A client we do not know (we restarted, or it was declared dead): say HELLO again.
      reply(routing, MessageType::kResync, protocol::Empty{});
      return;
    }
    switch (message.type()) {
      case MessageType::kHeartbeat: send(*peer, MessageType::kHeartbeat, protocol::Empty{}); break;
      case MessageType::kReady: on_ready(*peer, message.as<protocol::Ready>()); break;
      case MessageType::kFetch: on_fetch(*peer, message.as<protocol::Fetch>()); break;
      case MessageType::kProgress: on_progress(*peer, message.as<protocol::Progress>()); break;
      case MessageType::kResult:
        on_result(*peer, message.as<protocol::ResultOffer>(),
                  message.payload() ? &*message.payload() : nullptr);
        break;
      case MessageType::kUpload: on_upload(*peer, message); break;
      case MessageType::kFailed: on_failed(*peer, message.as<protocol::Failed>()); break;
      case MessageType::kBye: drop_peer(peer->id, "said goodbye", Departure::kGone); break;
      default:
        throw ProtocolError(std::string("message refused: ") + protocol::to_string(message.type()) +
                            " is a server-to-client message");
    }
  } catch (const ProtocolError& e) {
    std::string who = peer ? peer->host + " (" + peer->id + ")" : "an unidentified peer";
    warn("Refused a message from " + who + ": " + e.what());
    reply(routing, MessageType::kError,
          protocol::ErrorMessage{static_cast<int>(protocol::ErrorReply::kMalformed), e.what(),
                                 false, subject.item, subject.blob});
  } catch (const std::exception& e) {
    // Anything else is our own failure to serve this one message; the loop goes on.
    error(std::string("Failed to handle a message: ") + e.what());
    reply(routing, MessageType::kError,
          protocol::ErrorMessage{static_cast<int>(protocol::ErrorReply::kRefused), e.what(), false,
                                 subject.item, subject.blob});
  }
}

void Server::Impl::on_hello(const std::string& routing, const std::string& key,
                            const protocol::Hello& hello) {
  if (hello.client_id.empty() || hello.client_id.size() > 128) {
    throw ProtocolError("HELLO refused: client_id must hold 1 to 128 bytes");
  }
  if (hello.protocol != protocol::kMajorVersion) {
    throw ProtocolError("HELLO refused: protocol " + std::to_string(hello.protocol) +
                        " is not supported");
  }
  auto [it, is_new] = peers_.try_emplace(hello.client_id);
  Peer& peer = it->second;
  if (!is_new) by_routing_.erase(peer.routing);
  if (auto other = by_routing_.find(routing); other != by_routing_.end()) {
    // The same connection now speaks for another id: forget the old one.
    drop_peer(other->second, "reintroduced itself under another id", Departure::kGone);
  }
  peer.id = hello.client_id;
  peer.routing = routing;
  peer.key = key;
  peer.host = hello.host.substr(0, 256);
  peer.os = hello.os.substr(0, 64);
  peer.type = hello.type.substr(0, 16);
  peer.version = hello.version.substr(0, 64);
  peer.slots = std::clamp(hello.slots, 1, protocol::kMaxSlots);
  peer.inline_inputs_bytes =
      std::min<std::uint64_t>(hello.inline_inputs_bytes, protocol::kMaxPayloadBytes);
  peer.model_archives = hello.model_archives;
  peer.gpus.clear();
  for (std::size_t i = 0; i < hello.gpus.size() && i < static_cast<std::size_t>(peer.slots); ++i) {
    peer.gpus.push_back(hello.gpus[i].substr(0, 64));
  }
  peer.last_seen = SteadyClock::now();
  peer.waiting.clear();
  if (is_new) peer.order = next_order_++;
  by_routing_[routing] = peer.id;

  protocol::Welcome welcome;
  welcome.session = random_uuid();
  welcome.heartbeat_ms = static_cast<int>(options_.heartbeat_interval.count());
  welcome.liveness = options_.liveness;
  welcome.chunk_size = kChunkSize;
  welcome.window = kWindow;
  welcome.slots = peer.slots;
  welcome.inline_result_bytes = static_cast<std::uint32_t>(ResultReceiver::kInlineResultBytes);
  welcome.ready_with_ack = true;
  send(peer, MessageType::kWelcome, welcome);
  log(std::string(is_new ? "Client connected: " : "Client reconnected: ") + describe(peer));
  reattach(peer, hello);
}

void Server::Impl::reattach(Peer& peer, const protocol::Hello& hello) {
  std::vector<protocol::RunningItem> running = hello.running;
  if (running.empty() && !hello.running_item.empty()) {
    // A client that predates slots names its one item in the running_* fields.
    running.push_back({hello.running_item, hello.running_version, hello.running_attempt,
                       hello.running_type, 0});
  }
  std::set<std::string> named;
  for (const auto& entry : running) named.insert(entry.item);
  for (const ActiveItem* held : scheduler_.held_by(peer.id)) {
    if (named.contains(held->item.id)) continue;
    std::string id = held->item.id;
    scheduler_.release(id, peer.id);
    warn("Client " + peer.host + " no longer runs item " + id + "; queued again");
  }
  const auto now = SteadyClock::now();
  for (const auto& entry : running) reattach_one(peer, entry, now);
}

void Server::Impl::reattach_one(Peer& peer, const protocol::RunningItem& running, TimePoint now) {
  if (running.item.empty()) return;
  const bool valid_slot = running.slot >= 0 && running.slot < peer.slots;
  if (valid_slot && scheduler_.reattach(running.item, peer.id, now, running.slot)) {
    log("Client " + peer.host + " resumed item " + running.item);
    return;
  }
  if (valid_slot && !scheduler_.is_known(running.item) && is_valid_item_id(running.item) &&
      adopt(peer, running, now)) {
    return;
  }
  send(peer, MessageType::kCancel,
       protocol::Cancel{running.item, "the item was handed to another client or finished"});
}

bool Server::Impl::adopt(Peer& peer, const protocol::RunningItem& running, TimePoint now) {
  // Prediction requests do not survive a restart; only training work is taken over.
  if (running.type != "training") return false;
  if (!versions_.contains(running.version)) return false;
  if (store_.has_model(running.version, running.item)) return false;
  if (scheduler_.active_in_slot(peer.id, running.slot)) return false;
  for (const auto& queued : scheduler_.queue()) {
    if (queued.type == WorkType::kTraining && queued.version == running.version) {
      std::string replaced = queued.id;
      scheduler_.complete(replaced);
      scheduler_.enqueue(WorkItem{running.item, WorkType::kTraining, running.version, running.attempt});
      scheduler_.reattach(running.item, peer.id, now, running.slot);
      log("Client " + peer.host + " resumed item " + running.item + " of " + running.version +
          " from before a restart");
      return true;
    }
  }
  return false;
}

void Server::Impl::on_ready(Peer& peer, const protocol::Ready& ready) {
  if (ready.slot < 0 || ready.slot >= peer.slots) {
    throw ProtocolError("READY refused: slot " + std::to_string(ready.slot) + " is not one of the " +
                        std::to_string(peer.slots) + " slot(s) this client announced");
  }
  // READY from a slot that holds an item means its ASSIGN was lost or crossed this READY: the
  // same ASSIGN again is safe (a client that has the item ignores it). A client that really
  // lost its item says so in HELLO, which releases it.
  if (const ActiveItem* held = scheduler_.active_in_slot(peer.id, ready.slot)) {
    WorkItem item = held->item;
    hand_out(peer, item, ready.slot, package_of(item.version), Handout::kRepeat);
    return;
  }
  peer.waiting.insert(ready.slot);
}

void Server::Impl::acknowledge(Peer& peer, protocol::Ack ack, int ready_slot) {
  // Checked when the RESULT or FAILED came; a client that said HELLO since may have fewer slots.
  ack.took_ready = ready_slot >= 0 && ready_slot < peer.slots;
  send(peer, MessageType::kAck, ack);
  if (ack.took_ready) on_ready(peer, protocol::Ready{ready_slot});
}

void Server::Impl::on_fetch(Peer& peer, const protocol::Fetch& fetch) {
  const PackageBlob* blob = cache_->find(fetch.blob);
  if (!blob) {
    for (const auto& [id, item] : prediction_items_) {
      if (item.inputs.sha256 == fetch.blob) blob = &item.inputs;
      if (item.model_pack && item.model_pack->sha256 == fetch.blob) blob = &*item.model_pack;
      if (blob) break;
    }
  }
  // At most WELCOME's chunk_size: what one FETCH makes the server read and queue stays small,
  // and the ROUTER's send queue (transport.cpp) bounds how many of them wait for one client.
  if (!blob || fetch.length == 0 || fetch.length > kChunkSize || fetch.offset >= blob->size) {
    const std::string why = !blob ? "unknown blob"
                            : fetch.length > kChunkSize
                                ? "length " + std::to_string(fetch.length) +
                                      " above the chunk size " + std::to_string(kChunkSize)
                                : "range outside the blob";
    send(peer, MessageType::kError,
         protocol::ErrorMessage{static_cast<int>(protocol::ErrorReply::kRefused),
                                "FETCH refused: " + why, false, "", fetch.blob});
    return;
  }
  auto length = std::min<std::uint64_t>(fetch.length, blob->size - fetch.offset);
  zmq::message_t payload(length);
  read_at(blob->bytes.get(), blob->file, fetch.offset, payload.data(), length);
  metrics_.bytes_sent += length;
  send(peer, MessageType::kChunk, protocol::Chunk{fetch.blob, fetch.offset}, std::move(payload));
}

void Server::Impl::on_progress(Peer& peer, const protocol::Progress& progress) {
  auto active = scheduler_.active().find(progress.item);
  if (active == scheduler_.active().end() || active->second.client_id != peer.id) return;  // stale
  // Epochs of items this client no longer holds are forgotten here, where new ones arrive.
  std::erase_if(peer.epochs, [&](const auto& entry) {
    auto held = scheduler_.active().find(entry.first);
    return held == scheduler_.active().end() || held->second.client_id != peer.id;
  });
  peer.epochs[progress.item] = Epoch{progress.epoch, progress.total_epochs};
  // Only training has a live console to follow: a prediction's lines reach the server in its
  // result moments later, and one file per answering model is most of a fan-out's cost.
  if (active->second.item.type == WorkType::kTraining) {
    receiver_->append_live_log(progress.item, progress.lines);
  }
}

void Server::Impl::on_result(Peer& peer, const protocol::ResultOffer& offer,
                             const zmq::message_t* inline_archive) {
  if (!is_valid_item_id(offer.item)) throw ProtocolError("RESULT refused: malformed item id");
  check_ready_slot("RESULT", offer.ready_slot, peer.slots);
  auto item = scheduler_.find(offer.item);
  if (!item) {
    // Stored already (a repeat after a lost ACK) or unknown: either way nothing to add.
    acknowledge(peer,
                protocol::Ack{offer.item, offer.attempt, "duplicate", "no open item with this id"},
                offer.ready_slot);
    return;
  }
  // Of a prediction's answer only its output file (when the version names one) and console
  // log are read, never extracted.
  std::set<std::string> read_files;
  if (auto version = versions_.find(item->version);
      is_prediction(*item) && version != versions_.end()) {
    if (auto output = prediction_output_entry(version->second.version)) read_files.insert(*output);
  }
  // A training result's metrics are evaluated where it is unpacked, off this thread when it is
  // large; the version's dataset type as it is now (a later change applies to later results).
  std::optional<DatasetType> evaluate_as;
  if (auto version = versions_.find(item->version);
      !is_prediction(*item) && version != versions_.end()) {
    evaluate_as = version->second.version.dataset_type;
  }
  std::vector<protocol::Pull> pulls;
  try {
    pulls =
        receiver_->begin(peer.id, *item, offer, std::move(read_files), inline_archive, evaluate_as);
  } catch (const NoSpaceError& e) {
    // The server's want, not the result's fault: no answer, so the client keeps the result and
    // offers it again (7.2) until there is room.
    warn("Result of item " + item->id + " from " + peer.host + " waits: " + e.what());
    return;
  }
  for (auto& pull : pulls) send(peer, MessageType::kPull, pull);
}

void Server::Impl::on_upload(Peer& peer, protocol::Message& message) {
  auto upload = message.as<protocol::Upload>();
  std::vector<protocol::Pull> pulls;
  try {
    pulls = receiver_->receive(peer.id, upload, std::move(*message.payload()));
  } catch (const NoSpaceError& e) {
    // As in on_result: the upload is dropped, no answer; the client offers the result again.
    warn("Result of item " + upload.item + " from " + peer.host + " waits: " + e.what());
    return;
  }
  for (auto& pull : pulls) send(peer, MessageType::kPull, pull);
}

void Server::Impl::send_pull(const std::string& client, const protocol::Pull& pull) {
  if (client.starts_with(kOperatorPrefix)) {
    reply(client.substr(kOperatorPrefix.size()), MessageType::kPull, pull);
  } else if (auto peer = peers_.find(client); peer != peers_.end()) {
    send(peer->second, MessageType::kPull, pull);
  }
}

void Server::Impl::on_finished(const std::string& client, ResultReceiver::Finished done) {
  if (client.starts_with(kOperatorPrefix)) {
    finish_control_upload(client.substr(kOperatorPrefix.size()), done);
    return;
  }
  auto peer = peers_.find(client);
  if (peer == peers_.end()) {
    // It went away while its result was extracted; it keeps the result and offers it again.
    std::error_code ec;
    if (!done.staged.empty()) fs::remove_all(done.staged, ec);
    log("Result of item " + done.item.id + " not stored yet: its client left while it was unpacked");
    return;
  }
  finish_result(peer->second, done);
}

void Server::Impl::finish_result(Peer& peer, const ResultReceiver::Finished& done) {
  const WorkItem& item = done.item;
  auto version = versions_.find(item.version);
  if (version == versions_.end()) {
    // Ended before the ACK: a slot named in ready_slot must not be handed this item again.
    withdraw(item, "its version was removed");
    acknowledge(peer, protocol::Ack{item.id, item.attempt, "rejected", "version was removed"},
                done.offer.ready_slot);
    return;
  }
  if (is_prediction(item)) {
    std::optional<double> value;
    std::string failure;
    if (!done.error.empty()) {
      failure = "result refused: " + done.error;
    } else {
      try {
        value = read_prediction(version->second.version, done);
        if (!value) failure = "no value matching '" + version->second.version.prediction_pattern + "' in the output";
      } catch (const Error& e) {
        failure = e.what();
      }
    }
    std::error_code ec;
    if (!done.staged.empty()) fs::remove_all(done.staged, ec);
    auto holder = scheduler_.complete(item.id);
    if (holder && !holder->empty() && *holder != peer.id) cancel_on(*holder, item.id, "another client delivered it");
    if (value) {
      metrics_.count_completed(to_string(item.type), done.offer.duration);
    } else {
      metrics_.count_failure(to_string(item.type), FailureReason::kRejected);
    }
    record_prediction(item, value, failure);
    acknowledge(peer,
                protocol::Ack{item.id, done.offer.attempt, value ? "stored" : "rejected", failure},
                done.offer.ready_slot);
    return;
  }
  ModelMeta meta;
  meta.item_id = item.id;
  meta.attempt = done.offer.attempt;
  meta.duration_seconds = done.offer.duration;
  meta.epochs = done.offer.epochs;
  meta.last_epoch_seconds = done.offer.last_epoch;
  meta.node_name = peer.host;
  meta.os = peer.os;
  meta.processing_unit = peer.type;
  meta.container_version = peer.version;
  if (done.no_space) {
    // Not the result's fault: no ACK, so the client keeps it and offers it again (7.2).
    warn("Result of item " + item.id + " from " + peer.host +
         " not stored yet, its client offers it again: " + done.error);
    return;
  }
  if (!done.error.empty()) {
    metrics_.count_failure(to_string(item.type), FailureReason::kRejected);
    record_failure(peer, item, done.offer.attempt, "result refused: " + done.error, done.console_log);
    acknowledge(peer, protocol::Ack{item.id, done.offer.attempt, "rejected", done.error},
                done.offer.ready_slot);
    return;
  }
  // A version never exceeds its target, even when the operator lowered it while items ran.
  if (stored_[item.version] >= version->second.version.target_models &&
      (stored_[item.version] = static_cast<int>(store_.stored_model_ids(item.version).size())) >=
          version->second.version.target_models) {
    std::error_code ec;
    fs::remove_all(done.staged, ec);
    scheduler_.complete(item.id);
    log("Result of item " + item.id + " from " + peer.host + " not kept: " + item.version +
        " is at its target");
    acknowledge(
        peer,
        protocol::Ack{item.id, done.offer.attempt, "duplicate", "the version is at its target"},
        done.offer.ready_slot);
    return;
  }
  auto outcome =
      store_.commit_model(version->second.version, done.staged, meta, done.console_log,
                          &done.staged_files, done.evaluation ? &*done.evaluation : nullptr);
  switch (outcome.status) {
    case CommitStatus::kStored: {
      auto holder = scheduler_.complete(item.id);
      if (holder && !holder->empty() && *holder != peer.id) cancel_on(*holder, item.id, "another client delivered it");
      int stored = ++stored_[item.version];
      metrics_.count_completed(to_string(item.type), done.offer.duration);
      log("Model " + item.id + " of " + item.version + " stored from " + peer.host + " (" +
          std::to_string(stored) + "/" + std::to_string(version->second.version.target_models) +
          ")");
      announce_stored(item.version, item.id);
      reconcile("accepted result", Count::kInMemory);
      // Last: taking the slot as READY may hand out an item, which may throw.
      acknowledge(peer, protocol::Ack{item.id, done.offer.attempt, "stored", ""},
                  done.offer.ready_slot);
      break;
    }
    case CommitStatus::kDuplicate:
      scheduler_.complete(item.id);
      acknowledge(peer, protocol::Ack{item.id, done.offer.attempt, "duplicate", ""},
                  done.offer.ready_slot);
      break;
    case CommitStatus::kRejected:
      metrics_.count_failure(to_string(item.type), FailureReason::kRejected);
      record_failure(peer, item, done.offer.attempt, "result rejected: " + outcome.reason,
                     done.console_log);
      acknowledge(peer, protocol::Ack{item.id, done.offer.attempt, "rejected", outcome.reason},
                  done.offer.ready_slot);
      break;
  }
}

void Server::Impl::on_failed(Peer& peer, const protocol::Failed& failed) {
  if (!is_valid_item_id(failed.item)) throw ProtocolError("FAILED refused: malformed item id");
  check_ready_slot("FAILED", failed.ready_slot, peer.slots);
  auto active = scheduler_.active().find(failed.item);
  const bool held = active != scheduler_.active().end() && active->second.client_id == peer.id;
  if (held) metrics_.count_failure(to_string(active->second.item.type), FailureReason::kFailed);
  if (held && is_prediction(active->second.item)) {
    WorkItem item = active->second.item;
    scheduler_.complete(item.id);
    record_prediction(item, std::nullopt, failed.reason);
  } else if (held) {
    WorkItem item = active->second.item;
    record_failure(peer, item, failed.attempt, failed.reason, failed.log);
  }
  acknowledge(peer, protocol::Ack{failed.item, failed.attempt, "failure-recorded", ""},
              failed.ready_slot);
}

void Server::Impl::record_failure(Peer& peer, const WorkItem& item, int attempt, const std::string& reason,
                    std::string_view console) {
  std::string text = "Item " + item.id + " of version " + item.version + ", attempt " +
                     std::to_string(attempt) + ", on " + peer.host + ": " + reason + "\n\n";
  text.append(console);
  try {
    auto file = store_.write_error_log(item.version, item.id, text);
    warn("Item " + item.id + " of " + item.version + " failed on " + peer.host + ": " + reason +
         " (log: " + file.filename().string() + "); queued again");
  } catch (const Error& e) {
    error("Item " + item.id + " failed (" + reason +
          ") and its log could not be kept: " + e.what());
  }
  receiver_->end_live_log(item.id);
  scheduler_.fail(item.id, peer.id);
}

void Server::Impl::dispatch(TimePoint now) {
  if (scheduler_.queued_count() == 0) return;
  // Each client takes what its processing unit can run; the first clients in connection order
  // are the reserve, all of whose slots take prediction items only.
  const auto clients = placement_clients();
  if (std::none_of(clients.begin(), clients.end(), [](const ClientSlots& c) { return c.waiting > 0; })) {
    return;
  }
  // Items of a version still being packed wait; the others go out meanwhile.
  const std::map<std::string, const PackageBlob*> packaged = packaged_queued_versions();
  // A large model's prediction item only goes to a client that unpacks its model archive.
  auto accepts = [this, &packaged](const ClientSlots& client) {
    const bool model_archives = peers_.at(client.id).model_archives;
    return [this, client, model_archives, &packaged](const WorkItem& item) {
      return packaged.contains(item.version) && may_take(client, item, requirement_of(item)) &&
             (model_archives || !has_model_archive(item));
    };
  };
  // Clients of one type, reserve status and capability take the same items: the queue is
  // searched once per such kind, not once per client (many idle CPU clients beside GPU-only
  // work, say).
  std::map<std::tuple<std::string, bool, bool>, bool> kind_has_work;
  std::vector<FreeSlots> free;
  for (const ClientSlots& client : clients) {
    const Peer& peer = peers_.at(client.id);
    if (peer.waiting.empty()) continue;
    auto [kind, is_new] =
        kind_has_work.try_emplace({client.type, client.reserved, peer.model_archives}, false);
    if (is_new) {
      kind->second = std::any_of(scheduler_.queue().begin(), scheduler_.queue().end(), accepts(client));
    }
    if (!kind->second) continue;
    free.push_back({client.id, std::vector<int>(peer.waiting.begin(), peer.waiting.end()),
                    accepts(client)});
  }
  for (const auto& assignment : scheduler_.fill(free, now)) {
    Peer& peer = peers_.at(assignment.client_id);
    if (hand_out(peer, assignment.item, assignment.slot, packaged.at(assignment.item.version))) {
      peer.waiting.erase(assignment.slot);
    }
  }
}

bool Server::Impl::has_model_archive(const WorkItem& item) const {
  const auto prediction = prediction_items_.find(item.id);
  return prediction != prediction_items_.end() && prediction->second.model_pack.has_value();
}

std::vector<ClientSlots> Server::Impl::placement_clients() const {
  std::vector<const Peer*> ordered;
  for (const auto& [id, peer] : peers_) ordered.push_back(&peer);
  std::sort(ordered.begin(), ordered.end(), [](auto* a, auto* b) { return a->order < b->order; });
  const std::size_t reserved = ReservePolicy(config_.reserve_nodes).reserved_count(ordered.size());
  std::vector<ClientSlots> clients;
  for (std::size_t i = 0; i < ordered.size(); ++i) {
    const Peer& peer = *ordered[i];
    clients.push_back({peer.id, peer.host, peer.type, peer.gpus, peer.slots,
                       static_cast<int>(peer.waiting.size()), i < reserved});
  }
  return clients;
}

Requirement Server::Impl::requirement_of(const WorkItem& item) const {
  auto version = versions_.find(item.version);
  return version == versions_.end() ? Requirement::kAny : version->second.version.requirement;
}

bool Server::Impl::hand_out(Peer& peer, const WorkItem& item, int slot, const PackageBlob* blob,
                            Handout handout) {
  auto entry = versions_.find(item.version);
  if (entry == versions_.end()) {
    withdraw(item, "its version was removed");
    return false;
  }
  const Version& version = entry->second.version;
  if (!blob) {
    // Still packing (or unpackable): a first hand-out goes back to the front of the queue; a
    // repeat waits for the client's next READY.
    if (handout == Handout::kFirst) scheduler_.release(item.id, peer.id);
    return false;
  }
  protocol::Assign assign;
  assign.item = item.id;
  assign.attempt = item.attempt;
  assign.type = to_string(item.type);
  assign.version = version.name;
  const auto& commands =
      item.type == WorkType::kTraining ? version.training_commands : version.prediction_commands;
  for (const auto& command : commands) assign.commands.push_back({command.file_name, command.arguments});
  assign.blob = blob->sha256;
  assign.blob_size = blob->size;
  assign.model_pattern = version.model_pattern;
  std::optional<zmq::message_t> inputs;
  if (auto prediction = prediction_items_.find(item.id); prediction != prediction_items_.end()) {
    const PackageBlob& blob = prediction->second.inputs;
    assign.inputs = blob.sha256;
    assign.inputs_size = blob.size;
    if (const auto& pack = prediction->second.model_pack) {
      assign.model = pack->sha256;
      assign.model_size = pack->size;
    }
    // Small inputs held in memory go with the ASSIGN to a client that takes them so: no
    // FETCH/CHUNK round trip before its job can start.
    if (blob.bytes && blob.size <= peer.inline_inputs_bytes) {
      inputs.emplace(blob.bytes->data(), blob.bytes->size());
      metrics_.bytes_sent += blob.size;
    }
  }
  auto timeout = item.type == WorkType::kTraining ? options_.training_timeout
                                                  : options_.prediction_timeout;
  assign.timeout_ms = timeout.count();
  assign.slot = slot;
  send(peer, MessageType::kAssign, assign, std::move(inputs));
  // "slot n" only for clients that run several items, so one-slot logs read as before.
  const std::string where = peer.host + (peer.slots > 1 ? " slot " + std::to_string(slot) : "");
  if (handout == Handout::kRepeat) {
    log("Item " + item.id + " of " + version.name + " sent again to " + where);
  } else {
    log("Item " + item.id + " of " + version.name + " (attempt " + std::to_string(item.attempt) +
        ") handed to " + where);
  }
  return true;
}

void Server::Impl::reconcile(const std::string& why, Count count) {
  std::vector<VersionDemand> demands;
  for (const auto& [name, entry] : versions_) {
    if (unpackable_.contains(name)) continue;
    // After an accepted result the count kept in memory is exact (this server stored it);
    // other checks look at the disk, where an operator may have added or removed models.
    auto known = stored_.find(name);
    if (count == Count::kFromDisk || known == stored_.end()) {
      stored_[name] = static_cast<int>(store_.stored_model_ids(name).size());
    }
    demands.push_back({name, entry.version.target_models, stored_[name]});
  }
  auto created = scheduler_.reconcile(demands);
  if (!created.empty()) {
    log("Version check (" + why + "): queued " + std::to_string(created.size()) + " new item(s)");
  }
}

void Server::Impl::load_versions() {
  // Loaded aside first: a broken version.xml leaves the versions in force untouched.
  std::map<std::string, VersionEntry> loaded;
  for (auto& entry : store_.load_versions(config_)) {
    std::error_code ec;
    fs::create_directories(entry.folder, ec);
    loaded[entry.version.name] = std::move(entry);
  }
  versions_ = std::move(loaded);
}

void Server::Impl::reload_versions() {
  unpackable_.clear();
  try {
    config_ = store_.load_or_create_configuration();
    load_versions();
  } catch (const Error& e) {
    error(std::string("Keeping the versions loaded before: ") + e.what());
  }
  for (const auto& item : std::vector<WorkItem>(scheduler_.queue().begin(), scheduler_.queue().end())) {
    if (!versions_.contains(item.version)) withdraw(item, "its version was removed");
  }
}

const PackageBlob* Server::Impl::package_of(const std::string& version) {
  auto entry = versions_.find(version);
  if (entry == versions_.end() || unpackable_.contains(version)) return nullptr;
  try {
    return cache_->get(version, entry->second.folder);
  } catch (const Error& e) {
    error("Version " + version + " cannot be packed, its items wait for the next check: " + e.what());
    withdraw_queued(version, std::string("its version cannot be packed: ") + e.what());
    unpackable_.insert(version);
    return nullptr;
  }
}

std::map<std::string, const PackageBlob*> Server::Impl::packaged_queued_versions() {
  std::set<std::string> wanted;
  for (const auto& item : scheduler_.queue()) wanted.insert(item.version);
  std::map<std::string, const PackageBlob*> packaged;
  for (const auto& version : wanted) {
    if (const PackageBlob* blob = package_of(version)) packaged.emplace(version, blob);
  }
  return packaged;
}

void Server::Impl::withdraw(const WorkItem& item, const std::string& reason) {
  scheduler_.complete(item.id);
  if (is_prediction(item)) record_prediction(item, std::nullopt, reason);
}

void Server::Impl::withdraw_queued(const std::string& version, const std::string& reason) {
  for (const auto& item : std::vector<WorkItem>(scheduler_.queue().begin(), scheduler_.queue().end())) {
    if (item.version == version) withdraw(item, reason);
  }
}

void Server::Impl::setup_security() {
  using Security = ServerOptions::Security;
  const bool local = transport::is_local_endpoint(options_.bind);
  const bool curve = options_.security == Security::kCurve ||
                     (options_.security == Security::kAuto && !local);
  if (!curve) {
    if (!local) {
      warn("Serving " + options_.bind + " WITHOUT encryption or authentication (--insecure): "
           "anyone who reaches this port can take work and upload results");
    }
    return;
  }
  fs::path key_file = options_.key_file.empty() ? default_server_key_file(store_.root()) : options_.key_file;
  fs::path allowed = options_.authorized_keys.empty() ? default_authorized_keys(store_.root())
                                                      : options_.authorized_keys;
  KeyPair keys = load_or_create_keypair(key_file);
  public_key_ = keys.public_key;
  curve_secret_ = keys.secret_key;
  // Beside the key pair for whoever hands it to clients; not where that folder is read-only
  // (a mounted Secret).
  const fs::path public_file = key_file.parent_path() / "server.pub";
  const bool wrote_public =
      static_cast<bool>(std::ofstream(public_file) << keys.public_key << '\n');
  zap_ = std::make_unique<ZapHandler>(context_, allowed);
  log("CURVE on: server public key " + public_key_ +
      (wrote_public ? " (also in " + public_file.string() + ")" : std::string{}) + "; " +
      std::to_string(zap_->allowed().size()) + " client key(s) allowed by " + allowed.string());
  if (zap_->allowed().empty()) {
    warn("No client key is authorized yet: add clients' public keys (conductor-client --print-key) "
         "to " + allowed.string() + "; it is re-read within a second");
  }
}

void Server::Impl::refresh_authorized_keys() {
  try {
    if (!zap_->refresh()) return;
  } catch (const Error& e) {
    error(std::string("Keeping the previous allow-list: ") + e.what());
    return;
  }
  log("Allow-list re-read: " + std::to_string(zap_->allowed().size()) + " client key(s)");
  std::vector<std::string> revoked;
  for (const auto& [id, peer] : peers_) {
    if (!zap_->is_allowed(peer.key)) revoked.push_back(id);
  }
  for (const auto& id : revoked) drop_peer(id, "lost its authorization (key revoked)", Departure::kGone);
}

void Server::Impl::drop_silent_clients(TimePoint now) {
  auto limit = options_.heartbeat_interval * options_.liveness;
  std::vector<std::string> silent;
  for (const auto& [id, peer] : peers_) {
    if (now - peer.last_seen > limit) silent.push_back(id);
  }
  for (const auto& id : silent) {
    drop_peer(id, "went silent for " + std::to_string(limit.count()) + " ms", Departure::kSilent);
  }
}

// `id` by value: callers pass a peer's own id, which this erases.
void Server::Impl::drop_peer(std::string id, const std::string& why, Departure departure) {
  auto it = peers_.find(id);
  if (it == peers_.end()) return;
  std::string host = it->second.host;
  by_routing_.erase(it->second.routing);
  peers_.erase(it);
  std::string items;
  if (departure == Departure::kSilent) {
    // Maybe only the network failed: its item and a half-done upload wait for it a while.
    for (const auto& item : scheduler_.lose_client(id, SteadyClock::now())) items += " " + item.id;
    log("Client disconnected: " + host + " (" + id + ") " + why +
        (items.empty() ? "" : "; its item waits " + std::to_string(lease_grace().count()) +
                                  " ms for it to come back:" + items));
    return;
  }
  receiver_->abandon(id);
  for (const auto& item : scheduler_.release_client(id)) {
    items += " " + item.id;
    if (is_prediction(item) && item.attempt >= 3) {
      scheduler_.complete(item.id);
      record_prediction(item, std::nullopt, "lost " + std::to_string(item.attempt) + " clients");
    }
  }
  log("Client disconnected: " + host + " (" + id + ") " + why +
      (items.empty() ? "" : "; queued again:" + items));
}

void Server::Impl::cancel_on(const std::string& client_id, const std::string& item_id,
                             const std::string& reason) {
  auto it = peers_.find(client_id);
  if (it == peers_.end()) return;
  send(it->second, MessageType::kCancel, protocol::Cancel{item_id, reason});
}

Server::Impl::Peer* Server::Impl::find_by_routing(const std::string& routing) {
  auto it = by_routing_.find(routing);
  if (it == by_routing_.end()) return nullptr;
  return &peers_.at(it->second);
}

std::string Server::Impl::describe(const Peer& peer) {
  std::string slots = peer.slots > 1 ? ", " + std::to_string(peer.slots) + " slots" : "";
  if (!peer.gpus.empty()) {
    slots += ", GPUs";
    for (std::size_t i = 0; i < peer.gpus.size(); ++i) slots += (i ? "," : " ") + peer.gpus[i];
  }
  return peer.host + " (" + peer.id + ", " + peer.os + "/" + peer.type + "/" + peer.version + slots +
         ")";
}

void Server::Impl::publish_status() {
  ServerStatus status;
  status.clients = peers_.size();
  status.queued = scheduler_.queued_count();
  status.active = scheduler_.active_count();
  for (const auto& [name, entry] : versions_) {
    status.versions.push_back({name, entry.is_local, entry.version.target_models, stored_[name],
                               scheduler_.queued_count(name), scheduler_.active_count(name)});
  }
  std::lock_guard lock(status_mutex_);
  status_ = std::move(status);
}

Server::Server(ServerOptions options) {
  options.workdir = default_server_workdir(options.workdir);
  impl_ = std::make_unique<Impl>(std::move(options));
}

Server::~Server() {
  stop();
  if (thread_.joinable()) thread_.join();
}

void Server::run() { impl_->run(); }

void Server::start() {
  impl_->mark_serving();
  // Only a thread the library made gets its name: run() on the caller's thread (the main
  // thread of an app or of Python) leaves the process's name alone.
  thread_ = std::thread([this] {
    name_this_thread("cdr-server");
    impl_->run();
  });
}

void Server::stop() { impl_->stop(); }

void Server::set_reserve(double fraction) {
  impl_->call([&] { impl_->set_reserve(fraction); });
}
void Server::set_target(const std::string& version, int target_models) {
  impl_->call([&] { impl_->set_target(version, target_models); });
}
void Server::set_requirement(const std::string& version, Requirement requirement) {
  impl_->call([&] { impl_->set_requirement(version, requirement); });
}
Explanation Server::explain(const std::string& item_id) const {
  return impl_->call([&] { return impl_->explain(item_id); });
}
void Server::add_version(const fs::path& folder, const std::string& name) {
  impl_->call([&] { impl_->add_version(folder, name, false); });
}
void Server::remove_version(const std::string& version) {
  impl_->call([&] { impl_->remove_version(version); });
}
void Server::select_version(const std::string& version) {
  impl_->call([&] { impl_->select_version(version); });
}
std::string Server::predict(const std::string& csv_rows, const PredictOptions& options) {
  return impl_->call([&] { return impl_->predict(csv_rows, options); });
}
std::optional<EnsembleResult> Server::prediction(const std::string& request_id) const {
  return impl_->call([&] { return impl_->prediction(request_id); });
}
std::optional<EnsembleResult> Server::wait_for_prediction(const std::string& request_id,
                                                          std::chrono::milliseconds timeout) const {
  const auto deadline = SteadyClock::now() + timeout;
  if (auto result = prediction(request_id)) return result;  // throws for an unknown id
  if (!impl_->wait_until_finished(request_id, deadline)) return std::nullopt;
  return prediction(request_id);
}
std::optional<StoredModel> Server::next_stored_model(std::chrono::milliseconds timeout) {
  return impl_->next_stored_model(timeout);
}

std::string Server::control(const std::string& command, const std::map<std::string, std::string>& args) {
  return impl_->call([&] { return impl_->execute(command, args); });
}
std::string Server::endpoint() const { return impl_->endpoint(); }
std::string Server::http_endpoint() const { return impl_->http_url(); }
std::string Server::public_key() const { return impl_->public_key(); }
const fs::path& Server::workdir() const { return impl_->workdir(); }
ServerStatus Server::status() const { return impl_->status(); }

}  // namespace conductor
