// Outbox: the client's finished results, kept in <workdir>/outbox until the server acknowledges
// them, so that they survive a restart of the client: <item>-<attempt>.tar (the result archive)
// and <item>-<attempt>.json (what RESULT says about it). A prediction's answer has only its
// archive there: it is not offered again after a restart. Not thread-safe: the client's network
// thread owns it.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <string>

#include "job_runner.hpp"

namespace conductor {

// A finished result and the item it belongs to.
struct KeptResult {
  std::string item;
  int attempt = 0;
  std::string version;
  std::string type;  // "training" | "prediction"
  std::filesystem::path archive;
  JobOutcome outcome;  // succeeded, with size, sha256, duration, epochs, last_epoch
};

class Outbox {
 public:
  // `warn` hears of entries that cannot be kept or taken up. Throws IoError when the folder
  // cannot be created. Removes what an earlier run left that no description claims: archives
  // of results that were never kept for a restart (a prediction's answer) and half-written
  // files. Construct it before any job writes to the folder.
  Outbox(std::filesystem::path dir, std::function<void(const std::string&)> warn);

  // Where the result archive of `item`'s `attempt` goes.
  std::filesystem::path archive_path(const std::string& item, int attempt) const;

  // Writes the description of a finished result beside its archive (replace_durably);
  // a failure is only warned about: the result is still offered while the client runs.
  void keep(const KeptResult& result);

  // The first kept result whose item is not in `held`, its archive still of the recorded size;
  // an unusable entry is deleted with its archive on the way.
  std::optional<KeptResult> take_up(const std::set<std::string>& held);

  // Deletes a result's archive and its description.
  void discard(const std::filesystem::path& archive) noexcept;

 private:
  std::filesystem::path dir_;
  std::function<void(const std::string&)> warn_;
};

}  // namespace conductor
