// Reading and writing the server's configuration (config/config.xml) and a local version
// (assets/<name>/version.xml) in the original's .NET XmlSerializer layout, so that the
// original and this project can read each other's files. See tests/data/ for examples.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conductor/version.hpp"

namespace conductor {

// The contents of config/config.xml: a plain value; copy freely.
struct Configuration {
  std::string created;            // ISO 8601, kept verbatim
  std::string last_updated;       // ISO 8601, kept verbatim
  std::vector<Version> versions;  // the global versions (<Versions>); names are unique
  // The version predictions use, written in full as the original does (not as a reference
  // into `versions`).
  std::optional<Version> current_version;
  double reserve_nodes = 0.2;  // fraction of clients kept free for predictions, 0..1

  friend bool operator==(const Configuration&, const Configuration&) = default;
};

// ReserveNodes 0.2, no versions, Created and LastUpdated set to now: what the original
// writes when it starts without a config.xml.
Configuration default_configuration();

// Reads a config.xml. Unknown elements are ignored and missing ones take the defaults of
// Configuration and Version, so files of the original and of later versions load.
// Throws ConfigError "<file>:<line>: <problem>" when the file cannot be read, is not
// well-formed XML, has another root element than <ConductorConfiguration>, or holds an
// invalid value (see load_version_file; also ReserveNodes outside [0,1], a global version
// without a Name, a Name that cannot be a folder name, or two global versions with one Name).
Configuration load_configuration(const std::filesystem::path& file);

// Writes `config` atomically: a temporary sibling "<file>.tmp-<random>" is written and
// fsynced, renamed over `file`, and the folder fsynced. A failed save leaves the previous
// file untouched (the temporary is removed). Callers must not save over a file that failed
// to load: that would destroy what the operator has to repair.
// Throws IoError when the file system refuses, ConfigError when a text value holds a
// character XML 1.0 cannot carry (a control character other than tab, newline or CR).
void save_configuration(const Configuration& config, const std::filesystem::path& file);

// Reads a local version.xml (root element <Version>). The caller decides the name (the
// folder name wins over <Name>); this returns what the file says.
// Throws ConfigError "<file>:<line>: <problem>" for an unreadable or malformed file, another
// root element, a TargetModels that is not a non-negative integer, an unknown DatasetType,
// or a Command without FileName.
Version load_version_file(const std::filesystem::path& file);

// Writes a version.xml atomically, like save_configuration (same guarantees and throws).
void save_version_file(const Version& version, const std::filesystem::path& file);

// .NET's round-trip form in UTC, 7 fraction digits: "2018-07-20T10:15:30.1234567+00:00".
std::string format_timestamp(std::chrono::system_clock::time_point time);

// Reads the forms the original writes: "YYYY-MM-DDThh:mm:ss", an optional fraction of up to
// 7 digits, then "Z", "+hh:mm" or "-hh:mm" (no offset at all is read as UTC). Returns an
// empty optional for anything else, including impossible dates.
std::optional<std::chrono::system_clock::time_point> parse_timestamp(std::string_view text);

}  // namespace conductor
