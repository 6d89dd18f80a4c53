#include "conductor/asset_store.hpp"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <tinyxml2.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <system_error>
#include <type_traits>
#include <vector>

#include "conductor/error.hpp"
#include "file_io.hpp"
#include "random_id.hpp"

namespace conductor {
namespace {

namespace fs = std::filesystem;

constexpr const char* kMetaFile = "meta.xml";
constexpr const char* kConsoleLogFile = "console.log";
constexpr int kErrorLogsPerItem = 10;

bool is_hidden(const std::string& name) { return !name.empty() && name.front() == '.'; }

// Names become path components under root/assets, and item ids come from clients: a name
// that could climb out or hide is refused before it touches a path.
void check_name(std::string_view what, const std::string& name, bool allow_hidden) {
  bool plain = !name.empty() && name != "." && name != ".." &&
               name.find_first_of(std::string_view("/\0", 2)) == std::string::npos;
  if (!plain || (!allow_hidden && is_hidden(name))) {
    throw Error(ErrorCode::kArgument,
                std::string(what) + " '" + name + "' is not a plain folder name");
  }
}

[[noreturn]] void throw_io(std::string_view action, const fs::path& path, int error) {
  throw IoError("cannot " + std::string(action) + " " + path.string() + ": " +
                std::strerror(error));
}

void create_folders(const fs::path& folder) {
  std::error_code error;
  fs::create_directories(folder, error);
  if (error) throw_io("create folder", folder, error.value());
}

void remove_tree(const fs::path& path) {
  std::error_code error;
  fs::remove_all(path, error);
  if (error) throw_io("remove", path, error.value());
}

fs::file_type type_of(const fs::path& path) {
  std::error_code ignored;
  return fs::symlink_status(path, ignored).type();
}

std::string format_double(double value) {
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, end);
}

// Client-reported text (node name, OS...) must not make meta.xml unreadable: XML 1.0
// cannot carry control characters other than tab and newline.
std::string xml_safe(const std::string& text) {
  std::string result = text;
  for (char& c : result) {
    if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') c = '?';
  }
  return result;
}

// The original's files are indented by two spaces; tinyxml2 uses four.
class TwoSpacePrinter : public tinyxml2::XMLPrinter {
 protected:
  void PrintSpace(int depth) override {
    for (int i = 0; i < depth; ++i) Write("  ");
  }
};

std::string meta_xml(const ModelMeta& meta, const std::vector<std::string>& problems = {}) {
  tinyxml2::XMLDocument document;
  document.InsertEndChild(document.NewDeclaration("xml version=\"1.0\""));
  tinyxml2::XMLElement* root = document.NewElement("ModelMeta");
  root->SetAttribute("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance");
  root->SetAttribute("xmlns:xsd", "http://www.w3.org/2001/XMLSchema");
  document.InsertEndChild(root);
  auto add = [&](const char* name, const std::string& text) {
    tinyxml2::XMLElement* element = root->InsertNewChildElement(name);
    if (!text.empty()) element->SetText(xml_safe(text).c_str());
  };
  add("ItemId", meta.item_id);
  add("Attempt", std::to_string(meta.attempt));
  add("Duration", format_double(meta.duration_seconds));
  add("Epochs", std::to_string(meta.epochs));
  add("LastEpochDuration", format_double(meta.last_epoch_seconds));
  add("NodeName", meta.node_name);
  add("OperatingSystem", meta.os);
  add("ProcessingUnit", meta.processing_unit);
  add("ContainerVersion", meta.container_version);
  add("Timestamp", meta.timestamp);
  tinyxml2::XMLElement* metrics = root->InsertNewChildElement("Metrics");
  for (const auto& [name, value] : meta.metrics) {
    if (!std::isfinite(value)) continue;  // "nan" would make the file unreadable
    tinyxml2::XMLElement* metric = metrics->InsertNewChildElement("Metric");
    metric->InsertNewChildElement("Name")->SetText(xml_safe(name).c_str());
    metric->InsertNewChildElement("Value")->SetText(format_double(value).c_str());
  }
  if (!problems.empty()) {
    std::string text;
    for (const std::string& problem : problems) text += (text.empty() ? "" : "\n") + problem;
    add("EvaluationProblems", text);
  }
  TwoSpacePrinter printer;
  document.Print(&printer);
  return std::string(printer.CStr(), static_cast<size_t>(printer.CStrSize() - 1));
}

class MetaReader {
 public:
  explicit MetaReader(const fs::path& file) : file_(file) {}

  [[noreturn]] void fail(int line, const std::string& problem) const {
    throw ConfigError(file_.string() + ":" + std::to_string(line < 1 ? 1 : line) + ": " + problem);
  }

  ModelMeta read() const {
    std::ifstream stream(file_, std::ios::binary);
    if (!stream) throw ConfigError(file_.string() + ": cannot read: " + std::strerror(errno));
    const std::string text{std::istreambuf_iterator<char>(stream),
                           std::istreambuf_iterator<char>()};
    tinyxml2::XMLDocument document;
    if (document.Parse(text.data(), text.size()) != tinyxml2::XML_SUCCESS) {
      const char* detail = document.ErrorStr();
      fail(document.ErrorLineNum(),
           std::string("malformed XML: ") + (detail ? detail : document.ErrorName()));
    }
    const tinyxml2::XMLElement* root = document.RootElement();
    if (root == nullptr || std::string_view(root->Name()) != "ModelMeta") {
      fail(root ? root->GetLineNum() : 1, "root element must be <ModelMeta>");
    }
    ModelMeta meta;
    meta.item_id = text_of(root, "ItemId");
    meta.attempt = number<int>(root, "Attempt", 0);
    meta.duration_seconds = number<double>(root, "Duration", 0.0);
    meta.epochs = number<int>(root, "Epochs", 0);
    meta.last_epoch_seconds = number<double>(root, "LastEpochDuration", 0.0);
    meta.node_name = text_of(root, "NodeName");
    meta.os = text_of(root, "OperatingSystem");
    meta.processing_unit = text_of(root, "ProcessingUnit");
    meta.container_version = text_of(root, "ContainerVersion");
    meta.timestamp = text_of(root, "Timestamp");
    meta.metrics = metrics(root);
    return meta;
  }

 private:
  static std::string text_of(const tinyxml2::XMLElement* parent, const char* name) {
    const tinyxml2::XMLElement* element = parent->FirstChildElement(name);
    const char* value = element ? element->GetText() : nullptr;
    return value ? value : "";
  }

  Metrics metrics(const tinyxml2::XMLElement* root) const {
    Metrics listed;
    const tinyxml2::XMLElement* list = root->FirstChildElement("Metrics");
    if (list == nullptr) return listed;
    for (const tinyxml2::XMLElement* item = list->FirstChildElement(); item != nullptr;
         item = item->NextSiblingElement()) {
      const std::string name = text_of(item, "Name");
      if (name.empty()) fail(item->GetLineNum(), "a metric without a <Name>");
      if (item->FirstChildElement("Value") == nullptr) {
        fail(item->GetLineNum(), "metric '" + name + "' has no <Value>");
      }
      listed.emplace_back(name, number<double>(item, "Value", 0.0));
    }
    Metrics unique;  // a hand-edited file may repeat a name: the last one counts
    merge_metrics(unique, listed);
    return unique;
  }

  template <typename T>
  T number(const tinyxml2::XMLElement* parent, const char* name, T fallback) const {
    const tinyxml2::XMLElement* element = parent->FirstChildElement(name);
    if (element == nullptr) return fallback;
    const std::string raw = text_of(parent, name);
    std::string_view value = raw;
    while (!value.empty() && std::strchr(" \t\r\n", value.front())) value.remove_prefix(1);
    while (!value.empty() && std::strchr(" \t\r\n", value.back())) value.remove_suffix(1);
    T result{};
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), result);
    bool finite = true;
    if constexpr (std::is_floating_point_v<T>) finite = std::isfinite(result);
    if (value.empty() || ec != std::errc() || end != value.data() + value.size() || !finite) {
      fail(element->GetLineNum(),
           "<" + std::string(name) + "> must be a number, got '" + raw + "'");
    }
    return result;
  }

  fs::path file_;
};

// Removes one entry the client may have sent: a file (the usual case, one unlink) or a folder.
void remove_entry(const fs::path& path) {
  if (::unlink(path.c_str()) == 0 || errno == ENOENT) return;
  if (errno != EISDIR && errno != EPERM) throw_io("remove", path, errno);
  remove_tree(path);
}

// Whether a path relative to a folder names something strictly below it.
bool is_strictly_below(const fs::path& relative) {
  return !relative.empty() && *relative.begin() != "." && *relative.begin() != "..";
}

// True when `path` is a folder (not a symlink to one) strictly inside `folder`. Spelled below
// `folder` without "." or ".." and with a real folder at every level, one lstat a level
// settles it; anything else is settled after resolving symlinks ("link/.." is not where it
// reads).
bool is_folder_inside(const fs::path& path, const fs::path& folder) {
  std::error_code error;
  const fs::path absolute = fs::absolute(path, error);
  const bool plain =
      !error && std::none_of(absolute.begin(), absolute.end(),
                             [](const fs::path& part) { return part == "." || part == ".."; });
  const fs::path relative = plain ? absolute.lexically_relative(folder) : fs::path();
  if (is_strictly_below(relative)) {
    fs::path level = folder;
    bool real = true;
    for (const fs::path& part : relative) {
      level /= part;
      if (part.empty() || type_of(level) != fs::file_type::directory) {
        real = false;
        break;
      }
    }
    if (real) return true;
  }
  if (type_of(path) != fs::file_type::directory) return false;
  const fs::path resolved = fs::canonical(path, error);
  if (error) return false;
  const fs::path base = fs::canonical(folder, error);
  return !error && is_strictly_below(resolved.lexically_relative(base));
}

}  // namespace

AssetStore::AssetStore(fs::path root) {
  std::error_code error;
  root_ = fs::absolute(root, error);
  if (error) throw_io("resolve", root, error.value());
  root_ = root_.lexically_normal();
  create_folders(root_ / "config");
  create_folders(root_ / "assets");
  create_folders(spool_dir());
}

fs::path AssetStore::config_file() const { return root_ / "config" / "config.xml"; }

fs::path AssetStore::log_file() const { return root_ / "config" / "log.txt"; }

fs::path AssetStore::spool_dir() const { return root_ / "spool"; }

fs::path AssetStore::version_dir(const std::string& version) const {
  check_name("version name", version, /*allow_hidden=*/true);
  return root_ / "assets" / version;
}

Configuration AssetStore::load_or_create_configuration() const {
  const fs::path file = config_file();
  if (type_of(file) == fs::file_type::not_found) {
    Configuration config = default_configuration();
    save_configuration(config, file);
    return config;
  }
  return load_configuration(file);
}

std::vector<VersionEntry> AssetStore::load_versions(const Configuration& config) const {
  std::vector<VersionEntry> entries;
  for (const Version& version : config.versions) {
    entries.push_back(VersionEntry{version, false, version_dir(version.name)});
  }

  std::vector<std::string> local_names;
  std::error_code error;
  for (fs::directory_iterator it(root_ / "assets", error), end; !error && it != end;
       it.increment(error)) {
    const std::string name = it->path().filename().string();
    std::error_code ignored;
    if (is_hidden(name) || !it->is_directory(ignored)) continue;
    if (fs::is_regular_file(it->path() / "version.xml", ignored)) local_names.push_back(name);
  }
  if (error) throw_io("list", root_ / "assets", error.value());
  std::sort(local_names.begin(), local_names.end());

  for (const std::string& name : local_names) {
    VersionEntry entry{load_version_file(version_dir(name) / "version.xml"), true,
                       version_dir(name)};
    entry.version.name = name;
    auto global = std::find_if(entries.begin(), entries.end(), [&](const VersionEntry& e) {
      return !e.is_local && e.version.name == name;
    });
    if (global != entries.end()) {
      *global = std::move(entry);
    } else {
      entries.push_back(std::move(entry));
    }
  }
  return entries;
}

std::vector<std::string> AssetStore::stored_model_ids(const std::string& version) const {
  const fs::path models = version_dir(version) / "models";
  std::vector<std::string> ids;
  std::error_code error;
  fs::directory_iterator it(models, error);
  if (error == std::errc::no_such_file_or_directory) return ids;
  for (fs::directory_iterator end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (!is_hidden(name) && it->symlink_status().type() == fs::file_type::directory) {
      ids.push_back(name);
    }
  }
  if (error) throw_io("list", models, error.value());
  std::sort(ids.begin(), ids.end());
  return ids;
}

bool AssetStore::has_model(const std::string& version, const std::string& item_id) const {
  check_name("item id", item_id, /*allow_hidden=*/false);
  return type_of(version_dir(version) / "models" / item_id) == fs::file_type::directory;
}

CommitOutcome AssetStore::commit_model(const Version& version, const fs::path& staged_folder,
                                       const ModelMeta& meta, std::string_view console_log_text,
                                       const std::vector<std::string>* synced_files,
                                       const Evaluation* evaluated) {
  check_name("item id", meta.item_id, /*allow_hidden=*/false);
  const fs::path models = version_dir(version.name) / "models";
  if (!is_folder_inside(staged_folder, spool_dir())) {
    throw Error(ErrorCode::kArgument, "staged result " + staged_folder.string() +
                                          " is not a folder inside " + spool_dir().string());
  }
  // Whatever throws from here on (a full disk, a models/ that cannot be made), the staged
  // result goes too: it may be as large as a result can be, and its client offers it again.
  struct RemoveOnThrow {
    const fs::path& folder;
    int exceptions = std::uncaught_exceptions();
    ~RemoveOnThrow() {
      if (std::uncaught_exceptions() <= exceptions) return;
      std::error_code ignored;
      fs::remove_all(folder, ignored);
    }
  } remove_on_throw{staged_folder};
  const fs::path target = models / meta.item_id;
  if (type_of(target) != fs::file_type::not_found) {
    remove_tree(staged_folder);
    return {CommitStatus::kDuplicate, {}};
  }
  const std::string pattern =
      version.model_pattern.empty() ? std::string(kDefaultModelPattern) : version.model_pattern;
  // The server's own records replace whatever the client sent under these names (files or
  // folders, empty ones included, which no list of files names), which never count as the
  // model.
  remove_entry(staged_folder / kMetaFile);
  remove_entry(staged_folder / kConsoleLogFile);
  bool has_model = false;
  auto judge = [&](const std::string& relative) {
    if (has_model) return;
    const std::string name = relative.substr(relative.rfind('/') + 1);
    has_model = ::fnmatch(pattern.c_str(), relative.c_str(), 0) == 0 ||
                ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
  };
  if (synced_files != nullptr) {
    for (const std::string& file : *synced_files) {
      const std::string top = file.substr(0, file.find('/'));
      if (top != kMetaFile && top != kConsoleLogFile) judge(file);
    }
  } else {
    // Everything the rename publishes must be on disk first, or a crash right after it could
    // show a model folder with empty files; the same pass looks for the model.
    sync_tree(staged_folder, judge);
  }
  if (!has_model) {
    remove_tree(staged_folder);
    return {CommitStatus::kRejected, "result for item " + meta.item_id + " of version " +
                                         version.name + " holds no file matching '" + pattern +
                                         "'"};
  }
  ModelMeta stored = meta;
  if (stored.timestamp.empty())
    stored.timestamp = format_timestamp(std::chrono::system_clock::now());
  Evaluation evaluation =
      evaluated != nullptr ? *evaluated
      : synced_files != nullptr
          ? evaluate_model_folder(staged_folder, version.dataset_type, *synced_files)
          : evaluate_model_folder(staged_folder, version.dataset_type);
  merge_metrics(stored.metrics, evaluation.metrics);
  // The spool path is gone after the rename; name files relative to the model folder.
  const std::string spool_prefix = (staged_folder / "").string();
  for (std::string& problem : evaluation.problems) {
    for (size_t at; (at = problem.find(spool_prefix)) != std::string::npos;) {
      problem.erase(at, spool_prefix.size());
    }
  }
  write_durably(staged_folder / kMetaFile, meta_xml(stored, evaluation.problems));
  write_durably(staged_folder / kConsoleLogFile, console_log_text);
  sync_path(staged_folder);

  create_folders(models);
  // RENAME_NOREPLACE: plain rename() would silently replace an empty models/<id> created
  // since the check above.
  if (::renameat2(AT_FDCWD, staged_folder.c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) !=
      0) {
    const int error = errno;
    if (error == EEXIST || error == ENOTEMPTY) {
      remove_tree(staged_folder);
      return {CommitStatus::kDuplicate, {}};
    }
    if (error != EINVAL && error != ENOSYS) throw_io("move result into", target, error);
    // The file system lacks RENAME_NOREPLACE; the check above is all the protection left.
    if (::rename(staged_folder.c_str(), target.c_str()) != 0) {
      throw_io("move result into", target, errno);
    }
  }
  sync_path(models);
  return {CommitStatus::kStored, {}};
}

fs::path AssetStore::write_error_log(const std::string& version, const std::string& item_id,
                                     std::string_view text) {
  check_name("item id", item_id, /*allow_hidden=*/false);
  const fs::path folder = version_dir(version) / "errorlogs";
  create_folders(folder);
  fs::path target;
  for (int n = 0; n < kErrorLogsPerItem; ++n) {
    target = folder / (item_id + "-" + std::to_string(n) + ".log");
    if (type_of(target) == fs::file_type::not_found) break;
  }
  // Written in the spool and renamed, so a reader never sees half a log and the tenth
  // log replaces its predecessor in one step.
  const fs::path temporary = spool_dir() / ("errorlog-" + random_suffix() + ".tmp");
  try {
    write_durably(temporary, text);
  } catch (...) {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    throw;
  }
  if (::rename(temporary.c_str(), target.c_str()) != 0) {
    const int error = errno;
    std::error_code ignored;
    fs::remove(temporary, ignored);
    throw_io("write error log", target, error);
  }
  sync_path(folder);
  return target;
}

void AssetStore::clean_spool() const {
  const std::string config_prefix = config_file().filename().string() + ".tmp-";
  std::vector<fs::path> leftovers;
  auto collect = [&](const fs::path& folder, const std::string& prefix) {
    std::error_code error;
    for (fs::directory_iterator it(folder, error), end; !error && it != end; it.increment(error)) {
      if (it->path().filename().string().rfind(prefix, 0) == 0) leftovers.push_back(it->path());
    }
    if (error) throw_io("list", folder, error.value());
  };
  collect(spool_dir(), "");
  collect(config_file().parent_path(), config_prefix);
  for (const fs::path& leftover : leftovers) remove_tree(leftover);
}

ModelMeta AssetStore::load_model_meta(const std::string& version,
                                      const std::string& item_id) const {
  check_name("item id", item_id, /*allow_hidden=*/false);
  return MetaReader(version_dir(version) / "models" / item_id / kMetaFile).read();
}

}  // namespace conductor
