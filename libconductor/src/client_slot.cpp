// Client::Impl, part two: what a slot does with its item. An ASSIGN fills a free slot; the slot
// fetches the archives it lacks (a download another slot started is shared), runs the job,
// reports the outcome and drops the item on ACK or CANCEL, then takes up a kept result or asks
// for work again. Runs on the client's network thread like the rest of Impl.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "client_impl.hpp"
#include "gpus.hpp"

namespace conductor {

void Client::Impl::on_assign(const protocol::Assign& assign, const zmq::message_t* inputs) {
  auto is_blob_id = [](const std::string& id) {
    return id.size() == 64 && id.find_first_not_of("0123456789abcdef") == std::string::npos;
  };
  if (!is_blob_id(assign.blob) || (!assign.inputs.empty() && !is_blob_id(assign.inputs)) ||
      (!assign.model.empty() && !is_blob_id(assign.model)) || assign.item.empty() ||
      assign.item.size() > 64 ||
      assign.item.find_first_not_of("0123456789abcdef-") != std::string::npos) {
    throw ProtocolError("ASSIGN refused: malformed item or blob id");
  }
  // Both go into every later HELLO and the outbox: a server's mistake must not make this client
  // unable to say HELLO (the server refuses a header beyond its limit) or to keep results.
  if (assign.version.empty() || assign.version.size() > 256 ||
      (assign.type != "training" && assign.type != "prediction") || assign.attempt < 0) {
    throw ProtocolError(
        "ASSIGN refused: version must hold 1 to 256 bytes, type be training or "
        "prediction, attempt be 0 or more");
  }
  if (inputs != nullptr && (assign.inputs.empty() || inputs->size() != assign.inputs_size ||
                            inputs->size() > kInlineInputsBytes)) {
    throw ProtocolError("ASSIGN refused: " + std::to_string(inputs->size()) +
                        " inline bytes for inputs of " + std::to_string(assign.inputs_size));
  }
  if (slot_holding(assign.item)) return;  // sent again for a READY that crossed it
  if (assign.slot < 0 || assign.slot >= static_cast<int>(slots_.size())) {
    throw ProtocolError("ASSIGN refused: slot " + std::to_string(assign.slot) +
                        " is not one of this client's " + std::to_string(slots_.size()));
  }
  Slot& slot = slots_[static_cast<std::size_t>(assign.slot)];
  if (slot.current) {
    log_->warn("Server offered item {} while item {} is still held{}; ignored", assign.item,
               slot.current->assign.item, tag(slot));
    return;
  }
  // Assigned, not emplace()d: clang 14 judges the nested aggregate not default-constructible
  // inside optional's constraints (its member initializers are parsed late).
  slot.current = Current{};
  Current& c = *slot.current;
  c.assign = assign;
  slot.waiting_since = Clock::now();
  c.blobs.emplace_back(assign.blob, assign.blob_size);
  // A large model's own archive: downloaded into the cache and kept there like a package, so
  // the next request over the model moves only its rows.
  if (!assign.model.empty()) c.blobs.emplace_back(assign.model, assign.model_size);
  if (!assign.inputs.empty()) c.blobs.emplace_back(assign.inputs, assign.inputs_size);
  if (inputs != nullptr && !downloads_.contains(assign.inputs)) {
    // Arrived whole: a download already complete, checked by the job as any other.
    auto bytes = std::make_shared<std::string>(inputs->data<char>(), inputs->size());
    downloads_.emplace(assign.inputs, Download{assign.inputs, inputs->size(), std::nullopt,
                                               std::move(bytes), inputs->size(), inputs->size()});
    fetched_ += inputs->size();
  }
  mark_blobs_in_use();
  log_->info("Item {} of {} ({}, attempt {}){}: {} command(s)", assign.item, assign.version,
             assign.type, assign.attempt, tag(slot), assign.commands.size());
  guarded(slot, [&] { fetch_next_blob(slot); });
}

void Client::Impl::mark_blobs_in_use() {
  std::vector<std::string> in_use;
  for (const Slot& slot : slots_) {
    if (!slot.current) continue;
    for (const auto& [blob, size] : slot.current->blobs) in_use.push_back(blob);
  }
  cache_->set_in_use(in_use);
}

void Client::Impl::fetch_next_blob(Slot& slot) {
  Current& c = *slot.current;
  for (const auto& [blob, size] : c.blobs) {
    if (cache_->find(blob)) continue;
    auto it = downloads_.find(blob);
    if (it == downloads_.end()) {
      Download download{blob, size, std::nullopt, nullptr, 0, 0};
      if (blob == c.assign.inputs && size <= kMemoryInputsBytes) {
        download.memory = std::make_shared<std::string>(size, '\0');
      } else {
        // Judged once the cache has evicted what no longer fits beside it; and first whether
        // evicting all it may would do, so that an absurd size empties no cache.
        check_room(slot, blob, size, cache_->size_bytes());
        const auto part = cache_->reserve(blob, size);
        try {
          check_room(slot, blob, size);
        } catch (...) {
          cache_->abandon(blob);
          throw;
        }
        download.file.emplace(part);
      }
      it = downloads_.emplace(blob, std::move(download)).first;
      request_chunks(it->second);
    }
    Download& d = it->second;
    if (d.is_complete() && (d.verifier < 0 || d.verifier == slot.index)) {
      d.verifier = slot.index;
      if (std::find(c.verifying.begin(), c.verifying.end(), blob) == c.verifying.end()) {
        c.verifying.push_back(blob);
      }
      continue;
    }
    c.fetching = blob;
    show_progress(slot);
    return;
  }
  start_job(slot);
}

void Client::Impl::request_chunks(Download& d) {
  const std::uint64_t window_bytes = static_cast<std::uint64_t>(window_) * chunk_size_;
  while (d.requested < d.size && d.requested - d.received < window_bytes) {
    auto length = static_cast<std::uint32_t>(std::min<std::uint64_t>(chunk_size_, d.size - d.requested));
    send(MessageType::kFetch, protocol::Fetch{d.blob, d.requested, length});
    d.requested += length;
  }
}

void Client::Impl::on_chunk(protocol::Message& message) {
  auto chunk = message.as<protocol::Chunk>();
  auto it = downloads_.find(chunk.blob);
  if (it == downloads_.end()) return;
  Download& d = it->second;
  if (chunk.offset != d.received) return;  // a leftover from before a reconnect
  const auto& payload = *message.payload();
  if (d.received + payload.size() > d.size) {
    throw ProtocolError("CHUNK refused: data beyond the archive's announced size");
  }
  // Empty chunks would keep a download that never moves looking alive.
  if (payload.size() == 0 || payload.size() > chunk_size_) {
    throw ProtocolError("CHUNK refused: " + std::to_string(payload.size()) +
                        " bytes, where 1 to the chunk size " + std::to_string(chunk_size_) +
                        " were asked for");
  }
  try {
    if (d.memory) {
      std::memcpy(d.memory->data() + d.received, payload.data(), payload.size());
    } else {
      d.file->write_at(d.received, payload.data(), payload.size());
    }
  } catch (const Error& e) {
    give_up_downloads(d.blob, e.what());  // a full disk: the items that need it fail
    return;
  }
  // Only the write: the hash is taken while a job unpacks the archive (settle_verification).
  d.received += payload.size();
  d.requested = std::max(d.requested, d.received);  // a chunk longer than its FETCH asked
  fetched_ += payload.size();
  for (Slot& slot : slots_) {
    if (!slot.current || slot.current->fetching != d.blob) continue;
    slot.waiting_since = Clock::now();
    show_progress(slot);
  }
  if (d.is_complete()) {
    finish_download(d.blob);
  } else {
    request_chunks(d);
  }
}

void Client::Impl::finish_download(std::string blob) {
  for (Slot& slot : slots_) {
    if (!slot.current || slot.current->fetching != blob) continue;
    slot.current->fetching.clear();
    guarded(slot, [&] { fetch_next_blob(slot); });
  }
}

void Client::Impl::settle_verification(Slot& slot, bool is_intact) {
  const auto verified = std::exchange(slot.current->verifying, {});
  for (const auto& blob : verified) {
    auto it = downloads_.find(blob);
    if (it == downloads_.end() || it->second.verifier != slot.index) continue;
    const bool was_in_memory = it->second.memory != nullptr;
    downloads_.erase(it);  // closes the file
    if (was_in_memory) {
      // Used by this item only: nothing to cache.
    } else if (!is_intact) {
      cache_->abandon(blob);
    } else {
      try {
        cache_->commit(blob);
      } catch (const Error& e) {
        log_->warn("Archive {} could not be kept in the cache: {}", blob, e.what());
        cache_->abandon(blob);
      }
    }
    // Cached, or fetched again: a damaged download never reaches the cache.
    for (Slot& other : slots_) {
      if (!other.current || other.current->fetching != blob) continue;
      other.current->fetching.clear();
      guarded(other, [&] { fetch_next_blob(other); });
    }
  }
}

void Client::Impl::check_room(const Slot& slot, const std::string& blob, std::uint64_t size,
                              std::uint64_t freeable) const {
  if (options_.min_free_bytes == 0) return;
  const std::filesystem::path cache = options_.workdir / "cache";
  auto has_room = [&](std::uint64_t free) {
    free = free + freeable < free ? UINT64_MAX : free + freeable;
    return leaves_room(free, size, options_.min_free_bytes);
  };
  std::uint64_t free = 0;
  try {
    free = file_system_space(cache).free;
    if (has_room(free)) return;
    // The slot's last item left its files for reuse; the next job would empty the folder
    // anyway. Given back first, never following a link.
    const std::filesystem::path work = options_.workdir / "work" / std::to_string(slot.index);
    std::error_code ec;
    std::vector<std::filesystem::path> left;
    for (std::filesystem::directory_iterator it(work, ec), end; !ec && it != end;
         it.increment(ec)) {
      left.push_back(it->path());
    }
    for (const auto& path : left) std::filesystem::remove_all(path, ec);
    free = file_system_space(cache).free;
  } catch (const IoError&) {
    return;  // the writes find out
  }
  if (has_room(free)) return;
  throw NoSpaceError("archive " + blob + " (" + std::to_string(size) +
                         " bytes) not downloaded: it would leave less than " +
                         std::to_string(options_.min_free_bytes) + " bytes free in " +
                         cache.string() + " (" + std::to_string(free) +
                         " free; ClientOptions::min_free_bytes, --min-free-mb)",
                     size);
}

void Client::Impl::give_up_downloads(const std::string& blob, const std::string& why) {
  std::vector<std::string> refused;
  for (const auto& [id, download] : downloads_) {
    // One that a job is checking has all its bytes: whatever the server says now, it stays.
    if ((blob.empty() || id == blob) && download.verifier < 0) refused.push_back(id);
  }
  for (const auto& id : refused) {
    downloads_.erase(id);
    cache_->abandon(id);
    for (Slot& slot : slots_) {
      if (!slot.current || slot.current->fetching != id) continue;
      slot.current->fetching.clear();
      fail(slot, "package could not be fetched: " + why);
    }
  }
}

void Client::Impl::start_job(Slot& slot) {
  Current& c = *slot.current;
  JobSpec spec;
  spec.item = c.assign.item;
  spec.attempt = c.assign.attempt;
  spec.version = c.assign.version;
  for (const auto& command : c.assign.commands) spec.commands.push_back({command.file_name, command.arguments, {}});
  for (const auto& [blob, size] : c.blobs) {
    const bool is_checked =
        std::find(c.verifying.begin(), c.verifying.end(), blob) != c.verifying.end();
    const Download* download = is_checked ? &downloads_.at(blob) : nullptr;
    if (download && download->memory) {
      spec.packages.push_back(ArchiveSource::in_memory(*download->memory, "download " + blob));
      spec.package_bytes.push_back(download->memory);
    } else {
      spec.packages.push_back(download ? download->file->path() : cache_->path_of(blob));
    }
    spec.package_sha256.push_back(is_checked ? blob : std::string());
  }
  spec.work_dir = options_.workdir / "work" / std::to_string(slot.index);
  spec.console_log = options_.workdir / "logs" / (c.assign.item + ".log");
  spec.result = outbox_->archive_path(c.assign.item, c.assign.attempt);
  spec.min_free_bytes = options_.min_free_bytes;
  spec.memory_result_bytes = kMemoryResultBytes;
  spec.durable = c.assign.type != "prediction";
  spec.wake_on_lines = c.assign.type != "prediction";  // forward_job_progress keeps them
  spec.processing_unit = options_.processing_unit;
  spec.environment = {{"CONDUCTOR_SLOT", std::to_string(slot.index)}};
  if (!slot.gpu.empty()) {
    for (auto& entry : gpu_job_environment(slot.gpu, std::getenv("CUDA_DEVICE_ORDER"))) {
      spec.environment.push_back(std::move(entry));
    }
  }
  // At most a year: far beyond any deadline a server means, short of overflowing a time point.
  constexpr std::int64_t kMaxTimeoutMs = std::int64_t{365} * 24 * 3600 * 1000;
  spec.timeout =
      std::chrono::milliseconds(std::clamp<std::int64_t>(c.assign.timeout_ms, 0, kMaxTimeoutMs));
  // Bookkeeping only: a command whose group cannot be written down still runs, unprotected
  // against this client's crash, and says so.
  spec.on_command = [running = &*running_, log = log_, index = slot.index](
                        int process_group, const std::string& token) {
    try {
      if (process_group > 0) {
        running->record(index, process_group, token);
      } else {
        running->clear(index);
      }
    } catch (const std::exception& e) {
      log->warn("Slot {}: {}; were this client killed, its next start would not stop the command",
                index, e.what());
    }
  };
  if (console_) {
    // Several slots: each echoed line says whose it is.
    const std::string prefix = slots_.size() > 1 ? "[slot " + std::to_string(slot.index) + "] " : "";
    spec.echo = [console = console_, prefix](std::string_view line) {
      console->line(prefix.empty() ? std::string(line) : prefix + std::string(line));
    };
  }
  c.result = spec.result;
  slot.job = std::make_unique<JobRunner>(std::move(spec), [this] { wake_.signal(); });
  show_progress(slot);
}

void Client::Impl::forward_job_progress(Slot& slot) {
  if (!slot.job) return;
  const Current& c = *slot.current;
  if (!c.verifying.empty() && slot.job->are_packages_verified()) settle_verification(slot, true);
  int epoch = 0, total = 0;
  auto lines = slot.job->take_lines(epoch, total);
  if (epoch != slot.current->epoch || total != slot.current->total_epochs) {
    slot.current->epoch = epoch;
    slot.current->total_epochs = total;
    show_progress(slot);
  }
  // A prediction's lines reach the server with its result, moments later; the server keeps no
  // live console for it, so they are not sent twice.
  if (!lines.empty() && welcomed_ && !slot.job->is_cancelled() && c.assign.type != "prediction") {
    // Batches stay well inside the header limit: at most 1000 lines and 1 MiB each.
    protocol::Progress progress{c.assign.item, c.assign.attempt, epoch, total, {}};
    std::size_t bytes = 0;
    for (auto& line : lines) {
      if (line.size() > protocol::kMaxLineBytes) line.resize(protocol::kMaxLineBytes);
      if (progress.lines.size() == 1000 || bytes + line.size() > (1u << 20)) {
        send(MessageType::kProgress, progress);
        progress.lines.clear();
        bytes = 0;
      }
      bytes += line.size();
      progress.lines.push_back(std::move(line));
    }
    send(MessageType::kProgress, progress);
  }
  auto outcome = slot.job->outcome();
  if (!outcome) return;
  // Asked again now: the job may have proven its downloads intact after the check above and
  // ended since (the flag is set before the outcome). Not proven (damaged, or cancelled):
  // they are dropped.
  const bool verified = slot.job->are_packages_verified();
  slot.job.reset();
  if (!slot.current->verifying.empty()) settle_verification(slot, verified);
  if (outcome->cancelled) {
    log_->info("Item {} cancelled", c.assign.item);
    discard(slot);
    return;
  }
  slot.current->outcome = std::move(outcome);
  const JobOutcome& o = *slot.current->outcome;
  if (o.succeeded) {
    // Only a training result is kept for a restart: a prediction's answer is worth only its
    // request's deadline, and the server asks again when this client does not come back.
    if (c.assign.type != "prediction") {
      if (o.archive && o.duration < std::chrono::duration<double>(kHoldFor).count() && welcomed_) {
        slot.current->keep_due = Clock::now() + kHoldFor;
      } else {
        keep_for_restart(slot);
      }
    }
    log_->info("Item {} finished in {:.1f} s{}; sending {} bytes", c.assign.item, o.duration,
               tag(slot), o.size);
  } else {
    log_->warn("Item {} failed{}: {}", c.assign.item, tag(slot), o.reason);
  }
  if (welcomed_) report_outcome(slot);
}

void Client::Impl::report_outcome(Slot& slot) {
  slot.waiting_since = Clock::now();
  show_progress(slot);
  // Once the ACK comes the slot holds nothing (no kept result can take it up): the server
  // may take it as READY then, saving a message and a round trip per item.
  const int ready_slot = ready_with_ack_ && !may_hold_kept_ && is_usable(slot) ? slot.index : -1;
  const Current& c = *slot.current;
  const JobOutcome& o = *c.outcome;
  if (o.succeeded) {
    const protocol::ResultOffer offer{c.assign.item, c.assign.attempt, o.size,       o.sha256,
                                      o.duration,    o.epochs,         o.last_epoch, ready_slot};
    if (o.size > inline_result_bytes_) {
      send(MessageType::kResult, offer);
      return;
    }
    // Small enough to go with the offer: the server asks for nothing more.
    zmq::message_t archive(o.size);
    try {
      read_at(o.archive.get(), c.result, 0, archive.data(), o.size);
    } catch (const std::exception& e) {
      log_->warn("Result of item {} not sent with its offer: {}", c.assign.item, e.what());
      send(MessageType::kResult, offer);  // the server's PULLs meet the same trouble, guarded
      return;
    }
    uploaded_ += o.size;
    slot.current->uploaded = o.size;
    send(MessageType::kResult, offer, std::move(archive));
  } else {
    std::string tail = o.log_tail.size() > protocol::kMaxLogBytes
                           ? o.log_tail.substr(o.log_tail.size() - protocol::kMaxLogBytes)
                           : o.log_tail;
    send(MessageType::kFailed,
         protocol::Failed{c.assign.item, c.assign.attempt, o.reason, tail, o.duration, ready_slot});
  }
}

void Client::Impl::keep_for_restart(Slot& slot) {
  Current& c = *slot.current;
  c.keep_due.reset();
  if (c.is_kept || !c.outcome || !c.outcome->succeeded || c.assign.type == "prediction") return;
  c.is_kept = true;
  if (c.outcome->archive) {
    try {
      replace_durably(c.result, *c.outcome->archive);
    } catch (const std::exception& e) {
      log_->warn("Cannot keep the result of item {} for a restart: {}", c.assign.item, e.what());
      return;  // still offered while the client runs
    }
  }
  outbox_->keep(KeptResult{c.assign.item, c.assign.attempt, c.assign.version, c.assign.type,
                           c.result, *c.outcome});
}

void Client::Impl::fail(Slot& slot, const std::string& reason) {
  slot.current->outcome = JobOutcome{};
  slot.current->outcome->reason = reason;
  if (welcomed_) report_outcome(slot);
}

void Client::Impl::on_pull(const protocol::Pull& pull) {
  Slot* slot = slot_holding(pull.item);
  if (!slot || !slot->current->outcome || !slot->current->outcome->succeeded) return;
  const Current& c = *slot->current;
  const auto size = c.outcome->size;
  if (pull.offset >= size || pull.length == 0 || pull.length > chunk_size_) {
    throw ProtocolError("PULL refused: range outside the result, or longer than the chunk size");
  }
  auto length = std::min<std::uint64_t>(pull.length, size - pull.offset);
  slot->waiting_since = Clock::now();
  zmq::message_t payload(length);
  read_at(c.outcome->archive.get(), c.result, pull.offset, payload.data(), length);
  uploaded_ += length;
  slot->current->uploaded = std::max(slot->current->uploaded, pull.offset + length);
  show_progress(*slot);
  send(MessageType::kUpload, protocol::Upload{pull.item, c.assign.attempt, pull.offset},
       std::move(payload));
}

void Client::Impl::on_ack(const protocol::Ack& ack) {
  Slot* slot = slot_holding(ack.item);
  if (!slot) return;
  if (slot->job) {
    // The slot runs the item again, so the ACK answers an earlier result it gave up. Stored
    // after all (or stored before): this run is not needed; it ends soon and
    // forward_job_progress() cleans up. Refused: this run is the retry, and goes on.
    if (ack.status == "stored" || ack.status == "duplicate") {
      log_->info("Item {}: {} while it runs again; stopping that run", ack.item, ack.status);
      slot->job->cancel();
    }
    return;
  }
  // An answer to an earlier attempt of the item (a FAILED repeated before its first ACK, say):
  // not about what this slot holds now.
  if (ack.attempt != slot->current->assign.attempt) {
    log_->info("Item {}: {} for attempt {}, while the slot holds attempt {}; ignored", ack.item,
               ack.status, ack.attempt, slot->current->assign.attempt);
    return;
  }
  if (ack.status == "stored") {
    ++completed_;
    log_->info("Item {} stored by the server", ack.item);
  } else if (ack.status == "rejected") {
    log_->warn("Item {} rejected by the server: {}", ack.item, ack.reason);
  } else {
    log_->info("Item {}: {}", ack.item, ack.status);
  }
  discard(*slot, &ack);
}

void Client::Impl::on_cancel(const protocol::Cancel& cancel) {
  Slot* slot = slot_holding(cancel.item);
  if (!slot) return;
  log_->info("Server cancelled item {}: {}", cancel.item, cancel.reason);
  if (slot->job) {
    slot->job->cancel();  // the job thread ends soon; forward_job_progress() cleans up
    return;
  }
  discard(*slot);
}

void Client::Impl::take_up_kept_result(Slot& slot) {
  if (!may_hold_kept_) return;
  std::set<std::string> held;
  for (const Slot& other : slots_) {
    if (other.current) held.insert(other.current->assign.item);
  }
  auto kept = outbox_->take_up(held);
  if (!kept) {
    may_hold_kept_ = false;
    return;
  }
  Current c;
  c.assign.item = kept->item;
  c.assign.attempt = kept->attempt;
  c.assign.version = kept->version;
  c.assign.type = kept->type;
  c.result = kept->archive;
  c.outcome = std::move(kept->outcome);
  c.is_kept = true;
  slot.current = std::move(c);
  log_->info("Resuming the unacknowledged result of item {}{}", slot.current->assign.item, tag(slot));
}

void Client::Impl::discard(Slot& slot, const protocol::Ack* acknowledged) {
  if (!slot.current) return;
  const bool server_took_ready = acknowledged != nullptr && acknowledged->took_ready;
  if (!slot.current->verifying.empty()) settle_verification(slot, false);
  if (console_) console_->remove(bar_key(slot));
  // Only files that may exist are removed: a short job's result and console log never left
  // memory, and each failed unlink costs a path walk per item.
  const std::optional<JobOutcome>& outcome = slot.current->outcome;
  const bool is_in_memory = outcome && outcome->archive && !slot.current->is_kept;
  if (!slot.current->result.empty() && !is_in_memory) outbox_->discard(slot.current->result);
  if (!outcome || outcome->console_in_file || slot.current->is_kept) {
    std::error_code ec;
    fs::remove(options_.workdir / "logs" / (slot.current->assign.item + ".log"), ec);
  }
  // Inputs held in memory are never cached: gone with the last slot that wants them, unless a
  // job checks them (settle_verification lets go of those) or this slot fetches them (below).
  if (const std::string inputs = slot.current->assign.inputs; !inputs.empty()) {
    const auto download = downloads_.find(inputs);
    const bool wanted_elsewhere = std::any_of(slots_.begin(), slots_.end(), [&](const Slot& other) {
      return &other != &slot && other.current &&
             std::any_of(other.current->blobs.begin(), other.current->blobs.end(),
                         [&](const auto& blob) { return blob.first == inputs; });
    });
    if (download != downloads_.end() && download->second.memory && download->second.verifier < 0 &&
        slot.current->fetching != inputs && !wanted_elsewhere) {
      downloads_.erase(download);
    }
  }
  const std::string fetching = slot.current->fetching;
  slot.current.reset();
  // Still wanted while another slot waits for it or another slot's job checks it.
  const auto download = downloads_.find(fetching);
  const bool is_checked = download != downloads_.end() && download->second.verifier >= 0;
  const bool still_wanted =
      is_checked || std::any_of(slots_.begin(), slots_.end(), [&](const Slot& other) {
        return other.current && other.current->fetching == fetching;
      });
  if (!fetching.empty() && !still_wanted) {
    downloads_.erase(fetching);
    cache_->abandon(fetching);
  }
  mark_blobs_in_use();
  take_up_kept_result(slot);
  if (!welcomed_) return;
  if (slot.current) {
    report_outcome(slot);
  } else if (is_usable(slot)) {
    slot.waiting_since = Clock::now();  // READY is sent again when no ASSIGN comes (7.2)
    if (!server_took_ready) send(MessageType::kReady, protocol::Ready{slot.index});
  }
}

void Client::Impl::show_progress(const Slot& slot) {
  if (!console_ || console_->mode() == ClientConsole::Mode::kPlain || !slot.current) return;
  const Current& c = *slot.current;
  ItemProgress progress;
  progress.label = (slots_.size() > 1 ? "[slot " + std::to_string(slot.index) + "] " : "") +
                   c.assign.item.substr(0, 8) + " " + c.assign.type + " " + c.assign.version;
  progress.started = c.received_at;
  if (auto download = downloads_.find(c.fetching); download != downloads_.end()) {
    progress.phase = ItemProgress::Phase::kDownloading;
    progress.done_bytes = download->second.received;
    progress.total_bytes = download->second.size;
  } else if (slot.job) {
    progress.epoch = c.epoch;
    progress.total_epochs = c.total_epochs;
  } else if (c.outcome && c.outcome->succeeded) {
    progress.phase = ItemProgress::Phase::kUploading;
    progress.done_bytes = c.uploaded;
    progress.total_bytes = c.outcome->size;
  } else {
    console_->remove(bar_key(slot));
    return;
  }
  console_->show(bar_key(slot), progress);
}

}  // namespace conductor
