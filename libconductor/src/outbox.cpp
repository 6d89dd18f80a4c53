#include "outbox.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <vector>

#include "conductor/error.hpp"
#include "file_io.hpp"

namespace conductor {

namespace fs = std::filesystem;

namespace {

fs::path description_of(fs::path archive) { return archive.replace_extension(".json"); }

}  // namespace

Outbox::Outbox(fs::path dir, std::function<void(const std::string&)> warn)
    : dir_(std::move(dir)), warn_(std::move(warn)) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw IoError("cannot use outbox '" + dir_.string() + "': " + ec.message());
  std::vector<fs::path> unclaimed;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const fs::path& path = entry.path();
    if (path.extension() == ".json") continue;
    if (path.extension() == ".tar" && fs::exists(description_of(path))) continue;
    unclaimed.push_back(path);
  }
  for (const auto& path : unclaimed) fs::remove(path, ec);
}

fs::path Outbox::archive_path(const std::string& item, int attempt) const {
  return dir_ / (item + "-" + std::to_string(attempt) + ".tar");
}

void Outbox::keep(const KeptResult& result) {
  const JobOutcome& o = result.outcome;
  nlohmann::json record = {{"item", result.item},       {"attempt", result.attempt},
                           {"version", result.version}, {"type", result.type},
                           {"size", o.size},            {"sha256", o.sha256},
                           {"duration", o.duration},    {"epochs", o.epochs},
                           {"last_epoch", o.last_epoch}};
  const fs::path file = description_of(result.archive);
  // Durable before it is published, and never published half-written: a description the next
  // start cannot read makes it delete the archive beside it.
  try {
    replace_durably(file, record.dump());
  } catch (const std::exception& e) {
    warn_("Cannot keep " + file.string() + " for a restart: " + e.what());
  }
}

std::optional<KeptResult> Outbox::take_up(const std::set<std::string>& held) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (entry.path().extension() != ".json") continue;
    try {
      auto record = nlohmann::json::parse(std::ifstream(entry.path()));
      KeptResult kept;
      kept.item = record.at("item").get<std::string>();
      if (held.contains(kept.item)) continue;
      kept.attempt = record.at("attempt").get<int>();
      kept.version = record.at("version").get<std::string>();
      kept.type = record.at("type").get<std::string>();
      kept.archive = entry.path();
      kept.archive.replace_extension(".tar");
      JobOutcome& o = kept.outcome;
      o.succeeded = true;
      o.size = record.at("size").get<std::uint64_t>();
      o.sha256 = record.at("sha256").get<std::string>();
      o.duration = record.at("duration").get<double>();
      o.epochs = record.at("epochs").get<int>();
      o.last_epoch = record.at("last_epoch").get<double>();
      if (fs::file_size(kept.archive, ec) != o.size || ec) {
        throw std::runtime_error("archive is missing or changed");
      }
      return kept;
    } catch (const std::exception& e) {
      warn_("Dropping unusable outbox entry " + entry.path().string() + ": " + e.what());
      fs::path archive = entry.path();
      discard(archive.replace_extension(".tar"));
    }
  }
  return std::nullopt;
}

void Outbox::discard(const fs::path& archive) noexcept {
  std::error_code ec;
  fs::remove(archive, ec);
  fs::remove(description_of(archive), ec);
}

}  // namespace conductor
