// Where the apps' keys come from (keys.hpp): flags first, then the environment, and the
// server's public key read from a file. Key pairs themselves are read in curve.cpp.
#include "conductor/keys.hpp"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <system_error>

#include "conductor/error.hpp"
#include "curve.hpp"

namespace conductor {

namespace fs = std::filesystem;

namespace {

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

// read_server_key_file(), its message led by where the file's name came from.
std::string server_key_from(const fs::path& file, const std::string& source) {
  try {
    return read_server_key_file(file);
  } catch (const ConfigError& e) {
    throw ConfigError(source + ": " + e.what());
  } catch (const IoError& e) {
    throw IoError(source + ": " + e.what());
  }
}

}  // namespace

std::string read_server_key_file(const fs::path& file) {
  std::ifstream in(file);
  if (!in) {
    std::error_code ec;
    throw IoError("cannot read the server key file '" + file.string() + "'" +
                  (fs::exists(file, ec) ? "" : ": it does not exist"));
  }
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    std::istringstream words(line);
    std::string key;
    words >> key;
    if (key.empty() || key[0] == '#') continue;
    if (!is_z85_key(key)) {
      throw ConfigError(file.string() + ":" + std::to_string(number) + ": '" + key.substr(0, 60) +
                        "' is not a 40-character Z85 public key");
    }
    return key;
  }
  throw ConfigError(file.string() + ": the server key file holds no key");
}

std::string resolve_server_key(const KeyFlags& flags) {
  if (!flags.server_key.empty()) return flags.server_key;
  if (!flags.server_key_file.empty())
    return server_key_from(flags.server_key_file, "--server-key-file");
  if (auto key = env("CONDUCTOR_SERVER_KEY"); !key.empty()) return key;
  if (auto file = env("CONDUCTOR_SERVER_KEY_FILE"); !file.empty()) {
    return server_key_from(file, "CONDUCTOR_SERVER_KEY_FILE");
  }
  return "";
}

fs::path resolve_key_pair(const KeyFlags& flags) {
  if (!flags.key_file.empty()) return flags.key_file;
  auto existing = [](const fs::path& file, const std::string& source) {
    std::error_code ec;
    if (!fs::exists(file, ec)) {
      throw IoError(source + ": key pair file '" + file.string() +
                    "' does not exist (a key pair given this way is never created; --key-file "
                    "creates one)");
    }
    if (!std::ifstream(file)) {
      throw IoError(source + ": cannot read key pair file '" + file.string() +
                    "' (its owner or group must be this user's)");
    }
    return file;
  };
  if (!flags.key_pair.empty()) return existing(flags.key_pair, "--key-pair");
  if (auto file = env("CONDUCTOR_KEY_PAIR_FILE"); !file.empty()) {
    return existing(file, "CONDUCTOR_KEY_PAIR_FILE");
  }
  return {};
}

}  // namespace conductor
