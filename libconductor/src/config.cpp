#include "conductor/config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <tinyxml2.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>

#include "conductor/error.hpp"
#include "file_io.hpp"

namespace conductor {
namespace {

namespace fs = std::filesystem;

// XmlSerializer puts these on every root element; the original's files carry them.
constexpr std::string_view kNamespaceAttributes =
    R"( xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance")"
    R"( xmlns:xsd="http://www.w3.org/2001/XMLSchema")";

// ---------------------------------------------------------------------------------------
// Writing. A hand-written emitter rather than tinyxml2::XMLPrinter, because the original's
// layout writes empty elements as "<Status />" and tinyxml2 cannot.

class XmlOut {
 public:
  explicit XmlOut(const fs::path& file) : file_(file) { text_ = "<?xml version=\"1.0\"?>\n"; }

  void open(std::string_view name, std::string_view attributes = {}) {
    indent();
    text_ += '<';
    text_ += name;
    text_ += attributes;
    text_ += ">\n";
    ++depth_;
  }

  void close(std::string_view name) {
    --depth_;
    indent();
    text_ += "</";
    text_ += name;
    text_ += ">\n";
  }

  void empty(std::string_view name) {
    indent();
    text_ += '<';
    text_ += name;
    text_ += " />\n";
  }

  void leaf(std::string_view name, std::string_view value) {
    if (value.empty()) return empty(name);
    indent();
    text_ += '<';
    text_ += name;
    text_ += '>';
    append_escaped(name, value);
    text_ += "</";
    text_ += name;
    text_ += ">\n";
  }

  const std::string& text() const { return text_; }

 private:
  void indent() { text_.append(static_cast<size_t>(depth_) * 2, ' '); }

  void append_escaped(std::string_view element, std::string_view value) {
    for (char c : value) {
      if (c == '&') {
        text_ += "&amp;";
      } else if (c == '<') {
        text_ += "&lt;";
      } else if (c == '>') {
        text_ += "&gt;";
      } else if (c == '\r') {
        text_ += "&#xD;";  // a raw CR would come back as LF: parsers normalise line ends
      } else if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') {
        char code[8];
        std::snprintf(code, sizeof code, "%02X", static_cast<unsigned>(c));
        throw ConfigError("cannot save " + file_.string() + ": <" + std::string(element) +
                          "> holds control character U+00" + code + ", which XML 1.0 cannot carry");
      } else {
        text_ += c;
      }
    }
  }

  fs::path file_;
  std::string text_;
  int depth_ = 0;
};

std::string format_double(double value) {
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, end);
}

void write_commands(XmlOut& out, std::string_view element, const std::vector<Command>& commands) {
  if (commands.empty()) return out.empty(element);
  out.open(element);
  for (const Command& command : commands) {
    out.open("Command");
    out.leaf("FileName", command.file_name);
    out.leaf("Arguments", command.arguments);
    if (!command.parameters.empty()) out.leaf("Parameters", command.parameters);
    out.close("Command");
  }
  out.close(element);
}

// The children of a <Version>-typed element, in XmlSerializer's order. An empty timestamp
// is left out rather than written empty: the original reads a missing DateTime as its
// default but refuses an empty one.
void write_version_body(XmlOut& out, const Version& version) {
  if (!version.created.empty()) out.leaf("Created", version.created);
  if (!version.last_updated.empty()) out.leaf("LastUpdated", version.last_updated);
  out.leaf("Name", version.name);
  out.leaf("DatasetType", to_string(version.dataset_type));
  out.leaf("Status", version.status);
  write_commands(out, "TrainingCommands", version.training_commands);
  write_commands(out, "PredictionCommands", version.prediction_commands);
  out.leaf("TargetModels", std::to_string(version.target_models));
  if (version.model_pattern != kDefaultModelPattern)
    out.leaf("ModelPattern", version.model_pattern);
  if (version.prediction_pattern != kDefaultPredictionPattern)
    out.leaf("PredictionPattern", version.prediction_pattern);
  if (!version.prediction_output.empty()) out.leaf("PredictionOutput", version.prediction_output);
  if (version.requirement != Requirement::kAny) out.leaf("Requires", to_string(version.requirement));
}

// ---------------------------------------------------------------------------------------
// Reading.

// tinyxml2's ErrorStr() repeats the code and line ("Error=XML_ERROR_MISMATCHED_ELEMENT
// ErrorID=14 (0xe) Line number=3: XMLElement name=Versions"); the file:line prefix already
// says where, so keep the words: "mismatched element (XMLElement name=Versions)".
std::string describe_error(const tinyxml2::XMLDocument& document) {
  std::string words = document.ErrorName();
  if (words.rfind("XML_ERROR_", 0) == 0) words.erase(0, 10);
  for (char& c : words) c = c == '_' ? ' ' : static_cast<char>(std::tolower(c));
  const std::string full = document.ErrorStr() ? document.ErrorStr() : "";
  if (auto at = full.find("Line number="); at != std::string::npos) {
    if (auto colon = full.find(": ", at); colon != std::string::npos) {
      words += " (" + full.substr(colon + 2) + ")";
    }
  }
  return words;
}

class Reader {
 public:
  explicit Reader(const fs::path& file) : file_(file) {}

  // Parses the file into `document` and returns its root, checked to be `root_name`.
  const tinyxml2::XMLElement& load(tinyxml2::XMLDocument& document, std::string_view root_name) {
    std::ifstream stream(file_, std::ios::binary);
    if (!stream) throw ConfigError(file_.string() + ": cannot read: " + std::strerror(errno));
    const std::string text{std::istreambuf_iterator<char>(stream),
                           std::istreambuf_iterator<char>()};
    if (stream.bad()) throw ConfigError(file_.string() + ": cannot read: " + std::strerror(errno));
    if (document.Parse(text.data(), text.size()) != tinyxml2::XML_SUCCESS) {
      fail(document.ErrorLineNum(), "malformed XML: " + describe_error(document));
    }
    const tinyxml2::XMLElement* root = document.RootElement();
    if (root == nullptr) fail(1, "no root element");
    if (root->Name() != root_name) {
      fail(root->GetLineNum(), "root element is <" + std::string(root->Name()) + ">, expected <" +
                                   std::string(root_name) + ">");
    }
    return *root;
  }

  [[noreturn]] void fail(int line, const std::string& problem) const {
    throw ConfigError(file_.string() + ":" + std::to_string(line < 1 ? 1 : line) + ": " + problem);
  }

  static std::string text(const tinyxml2::XMLElement* element) {
    const char* value = element == nullptr ? nullptr : element->GetText();
    return value == nullptr ? std::string() : std::string(value);
  }

  // XmlSerializer allows XML whitespace around numbers and enum names.
  static std::string_view trimmed(const std::string& value) {
    constexpr std::string_view kSpace = " \t\r\n";
    std::string_view view = value;
    auto first = view.find_first_not_of(kSpace);
    if (first == std::string_view::npos) return {};
    return view.substr(first, view.find_last_not_of(kSpace) - first + 1);
  }

  int non_negative_int(const tinyxml2::XMLElement& element) const {
    const std::string raw = text(&element);
    std::string_view value = trimmed(raw);
    int result = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), result);
    if (value.empty() || ec != std::errc() || end != value.data() + value.size() || result < 0) {
      fail(element.GetLineNum(), "<" + std::string(element.Name()) +
                                     "> must be a non-negative integer, got '" + raw + "'");
    }
    return result;
  }

  double fraction(const tinyxml2::XMLElement& element) const {
    const std::string raw = text(&element);
    std::string_view value = trimmed(raw);
    double result = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), result);
    if (value.empty() || ec != std::errc() || end != value.data() + value.size() ||
        !std::isfinite(result) || result < 0 || result > 1) {
      fail(element.GetLineNum(),
           "<" + std::string(element.Name()) + "> must be a number from 0 to 1, got '" + raw + "'");
    }
    return result;
  }

  DatasetType dataset_type(const tinyxml2::XMLElement& element) const {
    const std::string raw = text(&element);
    std::string_view value = trimmed(raw);
    if (value == to_string(DatasetType::kGeneric)) return DatasetType::kGeneric;
    if (value == to_string(DatasetType::kCargo2000)) return DatasetType::kCargo2000;
    fail(element.GetLineNum(),
         "unknown <DatasetType> '" + raw + "' (expected Generic or Cargo2000)");
  }

  std::vector<Command> commands(const tinyxml2::XMLElement* list) const {
    std::vector<Command> result;
    if (list == nullptr) return result;
    for (auto* element = list->FirstChildElement("Command"); element != nullptr;
         element = element->NextSiblingElement("Command")) {
      const tinyxml2::XMLElement* file_name = element->FirstChildElement("FileName");
      if (file_name == nullptr || text(file_name).empty()) {
        fail(element->GetLineNum(),
             "<Command> in <" + std::string(list->Name()) + "> has no <FileName>");
      }
      result.push_back(Command{text(file_name), text(element->FirstChildElement("Arguments")),
                               text(element->FirstChildElement("Parameters"))});
    }
    return result;
  }

  Version version(const tinyxml2::XMLElement& element) const {
    Version version;
    version.created = text(element.FirstChildElement("Created"));
    version.last_updated = text(element.FirstChildElement("LastUpdated"));
    version.name = text(element.FirstChildElement("Name"));
    if (auto* type = element.FirstChildElement("DatasetType"))
      version.dataset_type = dataset_type(*type);
    version.status = text(element.FirstChildElement("Status"));
    version.training_commands = commands(element.FirstChildElement("TrainingCommands"));
    version.prediction_commands = commands(element.FirstChildElement("PredictionCommands"));
    if (auto* target = element.FirstChildElement("TargetModels")) {
      version.target_models = non_negative_int(*target);
    }
    if (auto* pattern = element.FirstChildElement("ModelPattern"))
      version.model_pattern = text(pattern);
    if (auto* pattern = element.FirstChildElement("PredictionPattern")) {
      version.prediction_pattern = text(pattern);
      try {
        std::regex check(version.prediction_pattern, std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        fail(pattern->GetLineNum(), "<PredictionPattern> is not a valid regular expression: " +
                                        std::string(e.what()));
      }
    }
    if (auto* output = element.FirstChildElement("PredictionOutput")) {
      version.prediction_output = text(output);
      fs::path path = version.prediction_output;
      bool climbs = false;
      for (const auto& part : path) climbs = climbs || part == "..";
      if (path.empty() || path.is_absolute() || climbs) {
        fail(output->GetLineNum(), "<PredictionOutput> must be a relative path inside the working "
                                   "folder, got '" + version.prediction_output + "'");
      }
    }
    if (auto* requires_element = element.FirstChildElement("Requires")) {
      version.requirement = requirement(*requires_element);
    }
    return version;
  }

 private:
  Requirement requirement(const tinyxml2::XMLElement& element) const {
    const std::string raw = text(&element);
    if (auto parsed = parse_requirement(trimmed(raw))) return *parsed;
    fail(element.GetLineNum(), "unknown <Requires> '" + raw + "' (expected cpu or gpu)");
  }

  fs::path file_;
};

// A global version's name becomes assets/<name>/, so it has to be one plain folder name.
std::string folder_name_problem(const std::string& name) {
  if (name.empty()) return "has no <Name>";
  if (name == "." || name == "..") return "is named '" + name + "', which is not a folder name";
  if (name.find('/') != std::string::npos) {
    return "is named '" + name + "', but a name must not contain '/' (it names a folder)";
  }
  return {};
}

}  // namespace

const char* to_string(DatasetType type) noexcept {
  switch (type) {
    case DatasetType::kGeneric:
      return "Generic";
    case DatasetType::kCargo2000:
      return "Cargo2000";
  }
  return "Generic";
}

const char* to_string(Requirement requirement) noexcept {
  switch (requirement) {
    case Requirement::kCpu:
      return "cpu";
    case Requirement::kGpu:
      return "gpu";
    case Requirement::kAny:
      break;
  }
  return "any";
}

std::optional<Requirement> parse_requirement(std::string_view text) noexcept {
  if (text.empty() || text == "any") return Requirement::kAny;
  if (text == "cpu") return Requirement::kCpu;
  if (text == "gpu") return Requirement::kGpu;
  return std::nullopt;
}

bool satisfies(const std::string& client_type, Requirement requirement) noexcept {
  return requirement == Requirement::kAny || client_type == to_string(requirement);
}

Configuration default_configuration() {
  Configuration config;
  config.created = format_timestamp(std::chrono::system_clock::now());
  config.last_updated = config.created;
  return config;
}

Configuration load_configuration(const fs::path& file) {
  tinyxml2::XMLDocument document;
  Reader reader(file);
  const tinyxml2::XMLElement& root = reader.load(document, "ConductorConfiguration");

  Configuration config;
  config.created = Reader::text(root.FirstChildElement("Created"));
  config.last_updated = Reader::text(root.FirstChildElement("LastUpdated"));
  std::map<std::string, int> lines_by_name;
  if (auto* versions = root.FirstChildElement("Versions")) {
    for (auto* element = versions->FirstChildElement("Version"); element != nullptr;
         element = element->NextSiblingElement("Version")) {
      Version version = reader.version(*element);
      auto* name = element->FirstChildElement("Name");
      int line = name != nullptr ? name->GetLineNum() : element->GetLineNum();
      if (std::string problem = folder_name_problem(version.name); !problem.empty()) {
        reader.fail(line, "<Version> in <Versions> " + problem);
      }
      auto [first, inserted] = lines_by_name.emplace(version.name, line);
      if (!inserted) {
        reader.fail(line, "version name '" + version.name + "' is used twice (first at line " +
                              std::to_string(first->second) + ")");
      }
      config.versions.push_back(std::move(version));
    }
  }
  if (auto* current = root.FirstChildElement("CurrentVersion")) {
    config.current_version = reader.version(*current);
  }
  if (auto* reserve = root.FirstChildElement("ReserveNodes")) {
    config.reserve_nodes = reader.fraction(*reserve);
  }
  return config;
}

void save_configuration(const Configuration& config, const fs::path& file) {
  XmlOut out(file);
  out.open("ConductorConfiguration", kNamespaceAttributes);
  if (!config.created.empty()) out.leaf("Created", config.created);
  if (!config.last_updated.empty()) out.leaf("LastUpdated", config.last_updated);
  if (config.versions.empty()) {
    out.empty("Versions");
  } else {
    out.open("Versions");
    for (const Version& version : config.versions) {
      out.open("Version");
      write_version_body(out, version);
      out.close("Version");
    }
    out.close("Versions");
  }
  if (config.current_version) {
    out.open("CurrentVersion");
    write_version_body(out, *config.current_version);
    out.close("CurrentVersion");
  }
  out.leaf("ReserveNodes", format_double(config.reserve_nodes));
  out.close("ConductorConfiguration");
  replace_durably(file, out.text());
}

Version load_version_file(const fs::path& file) {
  tinyxml2::XMLDocument document;
  Reader reader(file);
  return reader.version(reader.load(document, "Version"));
}

void save_version_file(const Version& version, const fs::path& file) {
  XmlOut out(file);
  out.open("Version", kNamespaceAttributes);
  write_version_body(out, version);
  out.close("Version");
  replace_durably(file, out.text());
}

std::string format_timestamp(std::chrono::system_clock::time_point time) {
  using namespace std::chrono;
  const auto day = floor<days>(time);
  const year_month_day date{day};
  const hh_mm_ss clock{floor<seconds>(time - day)};
  const auto ticks = duration_cast<nanoseconds>(time - floor<seconds>(time)).count() / 100;
  char buffer[96];  // room for any int the compiler can imagine
  std::snprintf(buffer, sizeof buffer, "%04d-%02u-%02uT%02d:%02d:%02d.%07lld+00:00",
                static_cast<int>(date.year()), static_cast<unsigned>(date.month()),
                static_cast<unsigned>(date.day()), static_cast<int>(clock.hours().count()),
                static_cast<int>(clock.minutes().count()),
                static_cast<int>(clock.seconds().count()), static_cast<long long>(ticks));
  return buffer;
}

std::optional<std::chrono::system_clock::time_point> parse_timestamp(std::string_view text) {
  using namespace std::chrono;
  size_t position = 0;
  // Reads exactly `count` digits; -1 when they are not there.
  auto digits = [&](size_t count) -> int {
    if (text.size() - position < count) return -1;
    int value = 0;
    for (size_t i = 0; i < count; ++i) {
      char c = text[position + i];
      if (c < '0' || c > '9') return -1;
      value = value * 10 + (c - '0');
    }
    position += count;
    return value;
  };
  auto literal = [&](char expected) {
    if (position >= text.size() || text[position] != expected) return false;
    ++position;
    return true;
  };

  const int y = digits(4);
  if (y < 1 || !literal('-')) return std::nullopt;
  const int mo = digits(2);
  if (mo < 0 || !literal('-')) return std::nullopt;
  const int d = digits(2);
  if (d < 0 || !literal('T')) return std::nullopt;
  const int h = digits(2);
  if (h < 0 || !literal(':')) return std::nullopt;
  const int mi = digits(2);
  if (mi < 0 || !literal(':')) return std::nullopt;
  const int s = digits(2);
  if (s < 0) return std::nullopt;
  const year_month_day date{year{y}, month{static_cast<unsigned>(mo)},
                            day{static_cast<unsigned>(d)}};
  if (!date.ok() || h > 23 || mi > 59 || s > 59) return std::nullopt;

  long long ticks = 0;  // 100 ns, .NET's unit
  if (literal('.')) {
    int count = 0;
    while (position < text.size() && text[position] >= '0' && text[position] <= '9') {
      if (++count > 7) return std::nullopt;
      ticks = ticks * 10 + (text[position++] - '0');
    }
    if (count == 0) return std::nullopt;
    for (; count < 7; ++count) ticks *= 10;
  }

  minutes offset{0};
  if (literal('Z')) {
  } else if (position < text.size() && (text[position] == '+' || text[position] == '-')) {
    const bool negative = text[position++] == '-';
    const int oh = digits(2);
    if (oh < 0 || oh > 14 || !literal(':')) return std::nullopt;
    const int om = digits(2);
    if (om < 0 || om > 59) return std::nullopt;
    offset = minutes{(negative ? -1 : 1) * (oh * 60 + om)};
  }
  if (position != text.size()) return std::nullopt;

  const auto local =
      sys_days{date} + hours{h} + minutes{mi} + seconds{s} + nanoseconds{ticks * 100};
  return time_point_cast<system_clock::duration>(local - offset);
}

}  // namespace conductor
