#include "support/temp_dir.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <system_error>

#include "conductor/error.hpp"

namespace fs = std::filesystem;

namespace conductor::test {

namespace {

std::string random_token() {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device device;
  std::uniform_int_distribution<std::size_t> pick(0, sizeof(kAlphabet) - 2);
  std::string token;
  for (int i = 0; i < 12; ++i) token += kAlphabet[pick(device)];
  return token;
}

}  // namespace

TempDir::TempDir(std::string_view prefix) {
  std::error_code error;
  const fs::path base = fs::temp_directory_path(error);
  if (error) throw IoError("no temp folder: " + error.message());
  // create_directory reports an existing folder as "not created", so a clash is retried rather
  // than shared with another test.
  for (int tries = 0; tries < 16; ++tries) {
    fs::path candidate =
        base / (std::string(prefix) + "-" + std::to_string(::getpid()) + "-" + random_token());
    if (fs::create_directory(candidate, error)) {
      path_ = candidate;
      return;
    }
    if (error) throw IoError("cannot create " + candidate.string() + ": " + error.message());
  }
  throw IoError("cannot find a free temp folder name under " + base.string());
}

TempDir::~TempDir() {
  if (std::getenv("CONDUCTOR_KEEP_TEST_DIRS") != nullptr) return;
  std::error_code ignored;
  fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ignored);
  fs::remove_all(path_, ignored);
}

fs::path TempDir::make(const fs::path& relative) const {
  const fs::path folder = path_ / relative;
  std::error_code error;
  fs::create_directories(folder, error);
  if (error) throw IoError("cannot create " + folder.string() + ": " + error.message());
  return folder;
}

std::string read_file(const fs::path& file) {
  std::ifstream stream(file, std::ios::binary);
  if (!stream) throw IoError("cannot open " + file.string() + " for reading");
  std::string bytes((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
  if (stream.bad()) throw IoError("cannot read " + file.string());
  return bytes;
}

std::string read_file_if_present(const fs::path& file) {
  std::error_code error;
  if (!fs::exists(file, error)) return {};
  return read_file(file);
}

fs::path write_file(const fs::path& file, std::string_view bytes) {
  std::error_code error;
  if (file.has_parent_path()) fs::create_directories(file.parent_path(), error);
  if (error) throw IoError("cannot create " + file.parent_path().string() + ": " + error.message());
  std::ofstream stream(file, std::ios::binary | std::ios::trunc);
  if (!stream) throw IoError("cannot open " + file.string() + " for writing");
  stream.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  stream.close();
  if (!stream) throw IoError("cannot write " + file.string());
  return file;
}

std::vector<std::string> list_names(const fs::path& folder) {
  std::vector<std::string> names;
  std::error_code error;
  for (fs::directory_iterator it(folder, error), end; !error && it != end; it.increment(error)) {
    names.push_back(it->path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::size_t count_entries(const fs::path& folder) {
  std::size_t count = 0;
  std::error_code error;
  for (fs::directory_iterator it(folder, error), end; !error && it != end; it.increment(error)) {
    ++count;
  }
  if (error) throw IoError("cannot list " + folder.string() + ": " + error.message());
  return count;
}

std::vector<std::string> split_lines(std::string_view text) {
  std::vector<std::string> lines;
  while (!text.empty()) {
    auto end = text.find('\n');
    std::string_view line = text.substr(0, end);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.emplace_back(line);
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return lines;
}

fs::path test_data_dir() {
#ifdef CONDUCTOR_TEST_DATA_DIR
  return CONDUCTOR_TEST_DATA_DIR;
#else
  return fs::path(__FILE__).parent_path().parent_path() / "data";
#endif
}

std::string pseudo_random(std::size_t size) {
  std::string bytes(size, '\0');
  std::uint64_t state = 0x9e3779b97f4a7c15ull;
  for (auto& byte : bytes) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    byte = static_cast<char>(state >> 32);
  }
  return bytes;
}

}  // namespace conductor::test
