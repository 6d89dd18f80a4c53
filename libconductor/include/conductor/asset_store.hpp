// The server's working folder, laid out as the original's:
//   <root>/config/config.xml, <root>/config/log.txt,
//   <root>/assets/<version>/ (payload; version.xml when the version is local),
//   <root>/assets/<version>/models/<item id>/ (one trained model, with meta.xml and console.log),
//   <root>/assets/<version>/errorlogs/<item id>-<n>.log,
// plus <root>/spool/, this project's scratch space on the same file system, from which
// results are moved into place by one rename so that a crash never leaves half a model.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "conductor/config.hpp"
#include "conductor/evaluation.hpp"
#include "conductor/version.hpp"

namespace conductor {

// What the server records about one trained model, written as models/<id>/meta.xml.
// A plain value.
struct ModelMeta {
  std::string item_id;
  double duration_seconds = 0;
  int epochs = 0;
  double last_epoch_seconds = 0;
  std::string node_name;
  std::string os;
  std::string processing_unit;
  std::string container_version;
  std::string timestamp;  // format_timestamp(); commit_model fills it in when empty
  int attempt = 0;
  // <Metrics><Metric><Name/><Value/></Metric>...</Metrics>; see evaluation.hpp. Values that
  // are not finite are not written.
  Metrics metrics;

  friend bool operator==(const ModelMeta&, const ModelMeta&) = default;
};

enum class CommitStatus { kStored, kDuplicate, kRejected };

struct CommitOutcome {
  CommitStatus status = CommitStatus::kRejected;
  std::string reason;  // why, when kRejected
};

// A version as the server schedules it: global (from config.xml) or local (a version.xml
// in its folder).
struct VersionEntry {
  Version version;
  bool is_local = false;
  std::filesystem::path folder;  // assets/<name>
};

// The server's working folder. Holds nothing but paths: every call goes to the disk, so
// several instances over one root see the same state, but the class is not thread-safe and
// one server process should own a root. Version names and item ids must be plain folder
// names (no '/', not "." or ".."; item ids not hidden either); calls given anything else
// throw Error(ErrorCode::kArgument), since item ids arrive from the network.
class AssetStore {
 public:
  // Makes `root` absolute and creates root/config, root/assets and root/spool.
  // Throws IoError when they cannot be created.
  explicit AssetStore(std::filesystem::path root);

  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path config_file() const;                            // root/config/config.xml
  std::filesystem::path log_file() const;                               // root/config/log.txt
  std::filesystem::path spool_dir() const;                              // root/spool
  std::filesystem::path version_dir(const std::string& version) const;  // root/assets/<version>

  // Loads config.xml, first writing default_configuration() when there is no such file.
  // A broken file throws ConfigError and is left exactly as it was, for the operator to
  // repair. Throws IoError when the default cannot be written.
  Configuration load_or_create_configuration() const;

  // The global versions of `config`, in their order, then each assets/<folder>/version.xml
  // (local; its name is the folder name, whatever <Name> says) in folder-name order. A local
  // version named like a global one takes the global one's place. Hidden folders are skipped.
  // Throws ConfigError naming file and line for a broken version.xml.
  std::vector<VersionEntry> load_versions(const Configuration& config) const;

  // The model folder names under assets/<version>/models, sorted; hidden entries and plain
  // files are not models. Empty when there is no models folder.
  std::vector<std::string> stored_model_ids(const std::string& version) const;

  bool has_model(const std::string& version, const std::string& item_id) const;

  // Moves a result into place as models/<meta.item_id>. `staged_folder` holds the files the
  // client sent, already extracted somewhere under spool_dir() (so the move is one rename).
  // - kDuplicate when models/<id> already exists;
  // - kRejected when no file matches version.model_pattern (fnmatch against the path relative
  //   to the staged folder and against the bare file name; an empty pattern means "*.h5");
  // - kStored otherwise: meta.xml and console.log are written into the staged folder, every
  //   file and folder in it is fsynced, and it is renamed to models/<id> without replacing
  //   anything, then models/ is fsynced. A result is judged before anything is evaluated or
  //   written for it. meta.xml is `meta` with the timestamp filled in
  //   when empty and, after meta.metrics, the metrics of evaluate_model_folder(staged_folder,
  //   version.dataset_type) (a name in both takes the evaluation's value); the files that
  //   could not be used are listed, one a line, in an <EvaluationProblems> element present
  //   only when there are some. So every accepted model gets its metrics, and a bad metrics
  //   or results file never refuses a model.
  // The staged folder is consumed on every outcome (moved or removed). A crash at any
  // moment leaves either no models/<id> or a complete one; leftovers stay in the spool.
  // Throws Error(kArgument) when the staged folder is not a folder under spool_dir() (it is
  // then left alone), IoError when the file system refuses (the staged folder is then removed
  // as far as the file system lets; what is left goes with clean_spool()).
  // `synced_files`, when given, lists every regular file in the staged folder (relative,
  // "/"-separated, as ExtractStats::files names them), each already fsynced together with the
  // folders below the staged folder that hold it (ExtractOptions::sync): the folder is then
  // judged from the list and not walked again; only the two records and the staged folder
  // itself are synced here.
  // `evaluated`: the folder's evaluate_model_folder(), taken earlier (off the caller's thread);
  // null: evaluated here.
  CommitOutcome commit_model(const Version& version, const std::filesystem::path& staged_folder,
                             const ModelMeta& meta, std::string_view console_log_text,
                             const std::vector<std::string>* synced_files = nullptr,
                             const Evaluation* evaluated = nullptr);

  // Writes errorlogs/<id>-<n>.log with the first n in 0..9 not yet used; when all ten exist,
  // n = 9 is overwritten, so at most ten logs are kept per item. The file appears complete or
  // not at all. Returns its path. Throws IoError.
  std::filesystem::path write_error_log(const std::string& version, const std::string& item_id,
                                        std::string_view text);

  // Removes what interrupted commits, transfers and saves left behind: everything in
  // spool_dir() and config.xml.tmp-* files. Call at start-up, before serving. Throws IoError.
  void clean_spool() const;

  // Reads models/<id>/meta.xml. Each child of <Metrics> with a <Name> and a <Value> is a
  // metric, whatever the child's own name (the original's serializer named it after its
  // class). Throws ConfigError "<file>:<line>: <problem>" when it is missing, malformed or
  // holds a value of the wrong type.
  ModelMeta load_model_meta(const std::string& version, const std::string& item_id) const;

 private:
  std::filesystem::path root_;
};

}  // namespace conductor
