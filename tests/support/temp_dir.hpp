// TempDir: a uniquely named folder under the system temp folder, removed with everything in it
// when the object dies. Owns the folder; not thread-safe (one test owns one TempDir).
// Also the small file helpers tests need to set up and inspect such folders.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace conductor::test {

class TempDir {
 public:
  // Creates <temp>/<prefix>-<pid>-<random>. Throws IoError when the folder cannot be made.
  explicit TempDir(std::string_view prefix = "conductor-test");
  // Removes the folder, unless CONDUCTOR_KEEP_TEST_DIRS is set (for looking at a failure
  // afterwards); a failure to remove is ignored (a destructor must not throw). The folder gets
  // its owner permissions back first, so a test may make it read-only to provoke write errors.
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const noexcept { return path_; }
  std::filesystem::path operator/(const std::filesystem::path& relative) const {
    return path_ / relative;
  }
  // Creates the sub-folder `relative` (and missing parents) and returns its path.
  // Throws IoError when it cannot be made.
  std::filesystem::path make(const std::filesystem::path& relative) const;

 private:
  std::filesystem::path path_;
};

// The whole file as bytes. Throws IoError when it cannot be read.
std::string read_file(const std::filesystem::path& file);
// Like read_file, but an empty string when the file does not exist (yet).
std::string read_file_if_present(const std::filesystem::path& file);
// Writes the bytes, creating missing parent folders, and returns `file`, so a fixture can be
// written and handed on in one expression. Throws IoError on failure.
std::filesystem::path write_file(const std::filesystem::path& file, std::string_view bytes);

// `size` bytes that no compressor shrinks (xorshift), the same on every call.
std::string pseudo_random(std::size_t size);
// Names of the entries directly in `folder`, sorted; empty when the folder does not exist.
std::vector<std::string> list_names(const std::filesystem::path& folder);
// How many entries `folder` holds directly. Unlike list_names, a folder that is missing or
// cannot be listed throws IoError: a check that a folder was emptied must not pass when the
// folder itself is gone.
std::size_t count_entries(const std::filesystem::path& folder);
// The lines of `text` without their line ends; a last line without '\n' counts.
std::vector<std::string> split_lines(std::string_view text);

// The checked-in fixtures folder (tests/data): CONDUCTOR_TEST_DATA_DIR where the build defines
// it, else found next to this source file.
std::filesystem::path test_data_dir();

}  // namespace conductor::test
