#include "conductor/package.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "conductor/error.hpp"
#include "conductor/sha256.hpp"
#include "support/piece_stream.hpp"
#include "support/temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
using conductor::Compression;
using conductor::ExtractLimits;
using conductor::ExtractOptions;
using conductor::PackageError;
using conductor::PackOptions;
using conductor::test::PieceStream;
using conductor::test::pseudo_random;
using conductor::test::read_file;
using conductor::test::TempDir;
using conductor::test::write_file;

bool is_empty_folder(const fs::path& path) { return fs::is_empty(path); }

mode_t mode_of(const fs::path& path) {
  struct stat info {};
  REQUIRE(::stat(path.c_str(), &info) == 0);
  return info.st_mode & 07777;
}

// Every file below `root`, as relative '/'-names.
std::vector<std::string> files_below(const fs::path& root) {
  std::vector<std::string> names;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_regular_file())
      names.push_back(entry.path().lexically_relative(root).generic_string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The tree a version folder might hold; models/, evaluation/ and errorlogs/ are what the
// server excludes from a package.
struct SampleTree {
  std::string big = pseudo_random(20u << 20);
  std::string binary;

  explicit SampleTree(const fs::path& root) {
    for (int i = 0; i < 256; ++i) binary.push_back(static_cast<char>(i));
    write_file(root / "train.py", "print('train')\n");
    write_file(root / "run.sh", "#!/bin/sh\necho run\n");
    fs::permissions(root / "run.sh", fs::perms::owner_exec, fs::perm_options::add);
    write_file(root / "empty.txt", "");
    write_file(root / "data/deeper/still/weights.bin", binary);
    write_file(root / "data/big.bin", big);
    write_file(root / "data/models/kept.txt", "only top-level models/ is excluded");
    write_file(root / "models/model_1.h5", "model");
    write_file(root / "evaluation/score.txt", "0.9");
    write_file(root / "errorlogs/err.log", "boom");
    fs::create_directories(root / "empty_folder");
  }

  static std::vector<std::string> packed_names() {
    return {"data/big.bin",
            "data/deeper/still/weights.bin",
            "data/models/kept.txt",
            "empty.txt",
            "run.sh",
            "train.py"};
  }

  void check_extracted(const fs::path& out) const {
    CHECK(files_below(out) == packed_names());
    CHECK(read_file(out / "train.py") == "print('train')\n");
    CHECK(read_file(out / "empty.txt").empty());
    CHECK(read_file(out / "data/deeper/still/weights.bin") == binary);
    CHECK(conductor::sha256_file(out / "data/big.bin") == conductor::sha256_hex(big));
    CHECK(read_file(out / "data/big.bin") == big);
    CHECK(mode_of(out / "run.sh") == 0755);
    CHECK(mode_of(out / "train.py") == 0644);
    CHECK_FALSE(fs::exists(out / "models"));
    CHECK_FALSE(fs::exists(out / "evaluation"));
    CHECK_FALSE(fs::exists(out / "errorlogs"));
  }
};

const std::vector<std::string> kExcluded = {"models", "evaluation", "errorlogs"};

// One entry of a hand-made archive, for archives pack() would never write.
struct Crafted {
  std::string name;
  unsigned type = AE_IFREG;
  std::string content{};
  std::string symlink{};
  std::string hardlink{};
  unsigned perm = 0644;
};

void write_crafted(const fs::path& path, const std::vector<Crafted>& entries,
                   Compression compression = Compression::kNone, bool gzip = false) {
  std::unique_ptr<archive, decltype(&archive_write_free)> writer(archive_write_new(),
                                                                 &archive_write_free);
  REQUIRE(archive_write_set_format_pax_restricted(writer.get()) == ARCHIVE_OK);
  if (compression == Compression::kZstd)
    REQUIRE(archive_write_add_filter_zstd(writer.get()) == ARCHIVE_OK);
  if (gzip) REQUIRE(archive_write_add_filter_gzip(writer.get()) == ARCHIVE_OK);
  REQUIRE(archive_write_open_filename(writer.get(), path.c_str()) == ARCHIVE_OK);
  for (const auto& crafted : entries) {
    std::unique_ptr<archive_entry, decltype(&archive_entry_free)> entry(archive_entry_new(),
                                                                        &archive_entry_free);
    archive_entry_set_pathname(entry.get(), crafted.name.c_str());
    archive_entry_set_filetype(entry.get(), crafted.type);
    archive_entry_set_perm(entry.get(), crafted.perm);
    if (!crafted.symlink.empty()) archive_entry_set_symlink(entry.get(), crafted.symlink.c_str());
    if (!crafted.hardlink.empty())
      archive_entry_set_hardlink(entry.get(), crafted.hardlink.c_str());
    if (crafted.type == AE_IFCHR) archive_entry_set_rdev(entry.get(), makedev(1, 3));
    archive_entry_set_size(entry.get(), static_cast<la_int64_t>(crafted.content.size()));
    REQUIRE(archive_write_header(writer.get(), entry.get()) == ARCHIVE_OK);
    if (!crafted.content.empty()) {
      REQUIRE(archive_write_data(writer.get(), crafted.content.data(), crafted.content.size()) ==
              static_cast<la_ssize_t>(crafted.content.size()));
    }
  }
  REQUIRE(archive_write_close(writer.get()) == ARCHIVE_OK);
}

// Extracting `archive` must throw PackageError whose message holds `expected`, and leave
// `destination` empty.
void check_refused(const fs::path& archive, const fs::path& destination,
                   const std::string& expected, const ExtractLimits& limits = {}) {
  std::string message;
  try {
    conductor::extract(archive, destination, limits);
  } catch (const PackageError& error) {
    message = error.what();
  }
  CHECK_MESSAGE(message.find(expected) != std::string::npos, "message: '" << message << "'");
  CHECK(is_empty_folder(destination));
}

}  // namespace

TEST_CASE("list_files lists regular files sorted by name and skips excluded top-level entries") {
  TempDir dir;
  const fs::path root = dir.make("version");
  const SampleTree tree(root);
  const auto entries = conductor::list_files(root, kExcluded);
  std::vector<std::string> names;
  for (const auto& entry : entries) {
    names.push_back(entry.name);
    CHECK(entry.source == root / entry.name);
  }
  CHECK(names == SampleTree::packed_names());
  CHECK(conductor::list_files(root).size() == SampleTree::packed_names().size() + 3);
}

TEST_CASE("list_files refuses a symlink, naming it, even one pointing inside the root") {
  TempDir dir;
  const fs::path root = dir.make("version");
  write_file(root / "real.txt", "x");
  fs::create_directories(root / "sub");
  fs::create_symlink(root / "real.txt", root / "sub" / "link.txt");
  std::string message;
  try {
    conductor::list_files(root);
  } catch (const PackageError& error) {
    message = error.what();
  }
  CHECK(message.find((root / "sub" / "link.txt").string()) != std::string::npos);
  CHECK(message.find("symlink") != std::string::npos);
}

TEST_CASE("list_files ignores a symlink inside an excluded top-level folder") {
  TempDir dir;
  const fs::path root = dir.make("version");
  write_file(root / "train.py", "x");
  fs::create_directories(root / "models");
  fs::create_symlink("/etc/passwd", root / "models" / "link");
  CHECK(conductor::list_files(root, kExcluded).size() == 1);
}

TEST_CASE("list_files throws IoError for a root that is not a folder") {
  TempDir dir;
  CHECK_THROWS_AS(conductor::list_files(dir.path() / "missing"), conductor::IoError);
}

TEST_CASE("pack then extract round-trips a tree byte for byte, modes and exclusions included") {
  TempDir dir;
  const fs::path root = dir.make("version");
  const SampleTree tree(root);
  const fs::path archive = dir.path() / "version.tar";
  const auto packed = conductor::pack_directory(root, archive, kExcluded);
  CHECK(packed.entries == 6);
  CHECK(packed.bytes_in == tree.big.size() + tree.binary.size() + 15 + 19 + 34);
  CHECK(packed.bytes_out == fs::file_size(archive));
  CHECK_FALSE(fs::exists(dir.path() / "version.tar.part"));

  const fs::path out = dir.make("out");
  const auto extracted = conductor::extract(archive, out);
  CHECK(extracted.files == SampleTree::packed_names());
  CHECK(extracted.entries == 6);
  CHECK(extracted.bytes == packed.bytes_in);
  tree.check_extracted(out);
}

TEST_CASE("extraction with sync writes the same tree and syncs each folder it wrote into") {
  TempDir dir;
  const fs::path archive = dir.path() / "nested.tar";
  // Folders given as entries and implied by files, several levels deep, one left empty.
  write_crafted(archive, {{"a", AE_IFDIR},
                          {"a/b/c/deep.txt", AE_IFREG, "deep"},
                          {"a/top.txt", AE_IFREG, "in a"},
                          {"empty/inner", AE_IFDIR},
                          {"root.txt", AE_IFREG, "root"}});
  const fs::path out = dir.make("out");
  ExtractOptions options;
  options.sync = true;
  const auto extracted = conductor::extract(archive, out, {}, options);
  CHECK(extracted.files == std::vector<std::string>{"a/b/c/deep.txt", "a/top.txt", "root.txt"});
  CHECK(read_file(out / "a" / "b" / "c" / "deep.txt") == "deep");
  CHECK(read_file(out / "a" / "top.txt") == "in a");
  CHECK(read_file(out / "root.txt") == "root");
  CHECK(is_empty_folder(out / "empty" / "inner"));

  // A refusal after some files were synced still leaves the destination as it was found.
  const fs::path refused = dir.path() / "refused.tar";
  write_crafted(refused, {{"x/y.txt", AE_IFREG, "y"}, {"../escape", AE_IFREG, "e"}});
  const fs::path empty = dir.make("empty-out");
  CHECK_THROWS_AS(conductor::extract(refused, empty, {}, options), PackageError);
  CHECK(is_empty_folder(empty));
}

TEST_CASE("pack with zstd compresses and extract reads it back") {
  TempDir dir;
  const fs::path root = dir.make("version");
  const SampleTree tree(root);
  write_file(root / "zeros.bin", std::string(8u << 20, '\0'));
  const fs::path archive = dir.path() / "version.tar.zst";
  const auto packed =
      conductor::pack_directory(root, archive, kExcluded, PackOptions{Compression::kZstd, 3});
  CHECK(packed.bytes_out < packed.bytes_in - (7u << 20));
  CHECK(read_file(archive).substr(0, 4) == std::string("\x28\xb5\x2f\xfd", 4));

  const fs::path out = dir.make("out");
  conductor::extract(archive, out);
  CHECK(read_file(out / "zeros.bin") == std::string(8u << 20, '\0'));
  fs::remove(out / "zeros.bin");
  tree.check_extracted(out);
}

TEST_CASE("pack with kAuto compresses training data but not random bytes or tiny folders") {
  TempDir dir;
  const std::string zstd_magic("\x28\xb5\x2f\xfd", 4);
  std::string csv = "sequence,value\n";
  for (int i = 0; i < 40000; ++i) csv += std::to_string(i) + "," + std::to_string(i % 97) + ".25\n";
  write_file(dir.path() / "text" / "data.csv", csv);
  write_file(dir.path() / "text" / "train.py", "print('train')\n");
  const std::string noise = pseudo_random(1u << 20);
  write_file(dir.path() / "noise" / "model.h5", noise);
  write_file(dir.path() / "noise" / "notes.txt", std::string(4096, 'a'));  // compressible, but a small share
  write_file(dir.path() / "tiny" / "a.txt", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
  const PackOptions automatic{.compression = Compression::kAuto};

  const auto text = conductor::pack_directory(dir.path() / "text", dir.path() / "text.tar", {}, automatic);
  CHECK(text.compression == Compression::kZstd);
  CHECK(text.bytes_out * 3 < text.bytes_in);
  CHECK(read_file(dir.path() / "text.tar").substr(0, 4) == zstd_magic);

  const auto noisy = conductor::pack_directory(dir.path() / "noise", dir.path() / "noise.tar", {}, automatic);
  CHECK(noisy.compression == Compression::kNone);
  CHECK(read_file(dir.path() / "noise.tar").substr(257, 5) == "ustar");

  const auto tiny = conductor::pack_directory(dir.path() / "tiny", dir.path() / "tiny.tar", {}, automatic);
  CHECK(tiny.compression == Compression::kNone);

  for (const std::string name : {"text", "noise", "tiny"}) {
    const fs::path out = dir.make("out-" + name);
    conductor::extract(dir.path() / (name + ".tar"), out);
    CHECK(files_below(out) == files_below(dir.path() / name));
  }
  CHECK(read_file(dir.path() / "out-text" / "data.csv") == csv);
  CHECK(read_file(dir.path() / "out-noise" / "model.h5") == noise);
}

TEST_CASE("extract reads a gzip-compressed tar and tolerates './' prefixes") {
  TempDir dir;
  const fs::path archive = dir.path() / "a.tar.gz";
  write_crafted(archive,
                {{.name = "./", .type = AE_IFDIR, .perm = 0755},
                 {.name = "./dir/a.txt", .content = "hello"},
                 {.name = "./tool", .content = "#!", .perm = 0700},
                 {.name = "./notes", .content = "n", .perm = 0600}},
                Compression::kNone, true);
  const fs::path out = dir.make("out");
  const auto stats = conductor::extract(archive, out);
  CHECK(stats.entries == 4);
  // Named as list_files() names them, so a job's inputs are never mistaken for its outputs.
  CHECK(stats.files == std::vector<std::string>{"dir/a.txt", "tool", "notes"});
  std::vector<std::string> listed;
  for (const auto& entry : conductor::list_files(out)) listed.push_back(entry.name);
  std::ranges::sort(listed);
  auto extracted = stats.files;
  std::ranges::sort(extracted);
  CHECK(listed == extracted);
  CHECK(read_file(out / "dir" / "a.txt") == "hello");
  CHECK(mode_of(out / "tool") == 0755);
  CHECK(mode_of(out / "notes") == 0644);
}

// Regression: libarchive 3.6.2 refused every non-ASCII name under the C locale, which this
// test binary runs in, until pack() wrote pax names as binary.
TEST_CASE("pack and extract keep non-ASCII, non-UTF-8 and long names byte for byte") {
  TempDir dir;
  const fs::path root = dir.make("version");
  const std::vector<std::string> names = {"caf\xc3\xa9/r\xc3\xa9sum\xc3\xa9.txt", "raw\xff.bin",
                                          std::string(120, 'n') + "/" + std::string(140, 'f')};
  for (const auto& name : names) write_file(root / name, name);
  const fs::path archive = dir.path() / "names.tar";
  conductor::pack_directory(root, archive);
  const fs::path out = dir.make("out");
  conductor::extract(archive, out);
  auto expected = names;
  std::sort(expected.begin(), expected.end());
  CHECK(files_below(out) == expected);
  for (const auto& name : names) CHECK(read_file(out / name) == name);
}

TEST_CASE("pack of no entries writes an archive that extracts to nothing") {
  TempDir dir;
  const fs::path archive = dir.path() / "empty.tar";
  const auto packed = conductor::pack({}, archive);
  CHECK(packed.entries == 0);
  const fs::path out = dir.make("out");
  CHECK(conductor::extract(archive, out).entries == 0);
  CHECK(is_empty_folder(out));
}

TEST_CASE("pack refuses unclean or repeated names and leaves no file behind") {
  TempDir dir;
  write_file(dir.path() / "f", "x");
  const fs::path archive = dir.path() / "a.tar";
  for (const std::string name : {"../f", "/f", "a/../f", "./f", "a//f", "a/", ""}) {
    CAPTURE(name);
    CHECK_THROWS_AS(conductor::pack({{dir.path() / "f", name}}, archive), PackageError);
  }
  CHECK_THROWS_AS(conductor::pack({{dir.path() / "f", "f"}, {dir.path() / "f", "f"}}, archive),
                  PackageError);
  CHECK_FALSE(fs::exists(archive));
  CHECK_FALSE(fs::exists(dir.path() / "a.tar.part"));
}

TEST_CASE("a failed pack leaves an existing archive untouched and no .part file") {
  TempDir dir;
  write_file(dir.path() / "f", "x");
  fs::create_symlink(dir.path() / "f", dir.path() / "link");
  const fs::path archive = dir.path() / "a.tar";
  write_file(archive, "previous archive");
  CHECK_THROWS_AS(
      conductor::pack({{dir.path() / "f", "f"}, {dir.path() / "link", "link"}}, archive),
      PackageError);
  CHECK(read_file(archive) == "previous archive");
  CHECK_FALSE(fs::exists(dir.path() / "a.tar.part"));
  CHECK_THROWS_AS(conductor::pack({{dir.path() / "missing", "missing"}}, archive),
                  conductor::IoError);
  CHECK_THROWS_AS(conductor::pack({{dir.path() / "f", "f"}}, archive, {Compression::kZstd, 99}),
                  PackageError);
  CHECK(read_file(archive) == "previous archive");
}

TEST_CASE("pack replaces an existing archive") {
  TempDir dir;
  write_file(dir.path() / "f", "new");
  const fs::path archive = dir.path() / "a.tar";
  write_file(archive, "previous archive");
  conductor::pack({{dir.path() / "f", "f"}}, archive);
  const fs::path out = dir.make("out");
  conductor::extract(archive, out);
  CHECK(read_file(out / "f") == "new");
}

TEST_CASE("pack without sync writes the same archive, under its name, with no .part left") {
  TempDir dir;
  const fs::path root = dir.make("version");
  const SampleTree tree(root);
  const fs::path synced = dir.path() / "synced.tar";
  const fs::path unsynced = dir.path() / "unsynced.tar";
  conductor::pack_directory(root, synced, kExcluded);
  const auto stats = conductor::pack_directory(root, unsynced, kExcluded, {.sync = false});
  CHECK(stats.bytes_out == fs::file_size(unsynced));
  CHECK(read_file(unsynced) == read_file(synced));
  CHECK_FALSE(fs::exists(dir.path() / "unsynced.tar.part"));
}

TEST_CASE("extraction refuses entries that escape or are not files or folders") {
  TempDir dir;
  const fs::path archive = dir.path() / "evil.tar";
  const fs::path out = dir.make("out");
  // A good entry first, so the refusal also has to remove what was already written.
  const Crafted good{.name = "good/first.txt", .content = "fine"};

  SUBCASE("a relative climb") {
    write_crafted(archive, {good, {.name = "../evil", .content = "x"}});
    check_refused(archive, out, "archive entry '../evil' refused: climbs out of the destination");
  }
  SUBCASE("an absolute path") {
    write_crafted(archive, {good, {.name = "/abs/path", .content = "x"}});
    check_refused(archive, out, "archive entry '/abs/path' refused: is an absolute path");
  }
  SUBCASE("a climb hidden in the middle") {
    write_crafted(archive, {good, {.name = "a/../../b", .content = "x"}});
    check_refused(archive, out, "archive entry 'a/../../b' refused: climbs out");
  }
  SUBCASE("an absolute symlink") {
    write_crafted(archive, {good, {.name = "link", .type = AE_IFLNK, .symlink = "/etc"}});
    check_refused(archive, out, "archive entry 'link' refused: is a symlink");
  }
  SUBCASE("a relative symlink") {
    write_crafted(archive, {good, {.name = "good/link", .type = AE_IFLNK, .symlink = "../.."}});
    check_refused(archive, out, "archive entry 'good/link' refused: is a symlink");
  }
  SUBCASE("a hardlink") {
    write_crafted(archive, {good, {.name = "hard", .hardlink = "good/first.txt"}});
    check_refused(archive, out, "archive entry 'hard' refused: is a hardlink");
  }
  SUBCASE("a fifo") {
    write_crafted(archive, {good, {.name = "pipe", .type = AE_IFIFO}});
    check_refused(archive, out, "archive entry 'pipe' refused: is a device, fifo or socket");
  }
  SUBCASE("a character device") {
    write_crafted(archive, {good, {.name = "null", .type = AE_IFCHR}});
    check_refused(archive, out, "archive entry 'null' refused: is a device, fifo or socket");
  }
  CHECK_FALSE(fs::exists(dir.path() / "evil"));
  CHECK_FALSE(fs::exists(dir.path() / "b"));
}

TEST_CASE("extraction refuses more entries than max_entries and removes what it wrote") {
  TempDir dir;
  const fs::path archive = dir.path() / "many.tar";
  std::vector<Crafted> entries;
  for (int i = 0; i < 5; ++i)
    entries.push_back({.name = "d/f" + std::to_string(i), .content = "x"});
  write_crafted(archive, entries);
  const fs::path out = dir.make("out");
  check_refused(archive, out, "more than 4 entries (max_entries)", ExtractLimits{.max_entries = 4});
  const fs::path fits = dir.make("fits");
  CHECK(conductor::extract(archive, fits, ExtractLimits{.max_entries = 5}).files.size() == 5);
}

TEST_CASE("extraction refuses a zstd bomb past max_total_bytes and leaves the destination empty") {
  TempDir dir;
  const fs::path archive = dir.path() / "bomb.tar.zst";
  write_crafted(archive,
                {{.name = "small.txt", .content = "x"},
                 {.name = "zeros.bin", .content = std::string(64u << 20, '\0')}},
                Compression::kZstd);
  CHECK(fs::file_size(archive) < (64u << 10));
  const fs::path out = dir.make("out");
  check_refused(archive, out,
                "archive entry 'zeros.bin' refused: takes the archive past 1048576 unpacked bytes",
                ExtractLimits{.max_total_bytes = 1u << 20});
}

TEST_CASE("extraction refuses a file larger than max_file_bytes") {
  TempDir dir;
  const fs::path archive = dir.path() / "big.tar";
  write_crafted(archive, {{.name = "big.bin", .content = std::string(2u << 20, 'b')}});
  const fs::path out = dir.make("out");
  check_refused(archive, out, "archive entry 'big.bin' refused: is larger than 1048576 bytes",
                ExtractLimits{.max_file_bytes = 1u << 20});
}

TEST_CASE("extraction refuses garbage bytes with PackageError and writes nothing") {
  TempDir dir;
  const fs::path archive = dir.path() / "garbage.tar";
  SUBCASE("random bytes") { write_file(archive, pseudo_random(10000)); }
  SUBCASE("an empty file") { write_file(archive, ""); }
  SUBCASE("a zstd frame of garbage") {
    write_file(archive, std::string("\x28\xb5\x2f\xfd", 4) + pseudo_random(5000));
  }
  const fs::path out = dir.make("out");
  check_refused(archive, out, "is not a readable tar");
}

TEST_CASE("extraction refuses a truncated archive, plain or zstd, and removes what it wrote") {
  TempDir dir;
  const fs::path root = dir.make("version");
  write_file(root / "a.txt", "first");
  write_file(root / "b.bin", pseudo_random(3u << 20));
  for (const auto compression : {Compression::kNone, Compression::kZstd}) {
    CAPTURE(static_cast<int>(compression));
    const fs::path archive = dir.path() / "whole.tar";
    conductor::pack_directory(root, archive, {}, PackOptions{compression});
    const std::string bytes = read_file(archive);
    const fs::path cut = dir.path() / "cut.tar";
    write_file(cut, bytes.substr(0, bytes.size() / 2));
    const fs::path out = dir.make("out");
    CHECK_THROWS_AS(conductor::extract(cut, out), PackageError);
    CHECK(is_empty_folder(out));
  }
}

TEST_CASE("a plain archive file's large entries are copied inside the kernel, byte for byte") {
  TempDir dir;
  const fs::path root = dir.make("version");
  const std::string long_name(150, 'n');  // beyond the 100 bytes of a plain header: pax
  std::map<std::string, std::string> files = {
      {"model.bin", pseudo_random(3u << 20)},
      {long_name + ".bin", pseudo_random(200u << 10).substr(1)},  // not a multiple of 512
      {"small.txt", "small\n"},
      {"sub/deep/weights.bin", pseudo_random((5u << 20) + 7)},
      {"exactly-64k.bin", pseudo_random(64u << 10)}};
  std::uint64_t large = 0;
  for (const auto& [name, content] : files) {
    write_file(root / name, content);
    if (content.size() >= (64u << 10)) large += content.size();
  }
  const fs::path archive = dir.path() / "v.tar";
  conductor::pack_directory(root, archive, {}, PackOptions{Compression::kNone});
  const fs::path out = dir.make("out");
  const auto stats = conductor::extract(archive, out);
  CHECK(stats.copied_bytes == large);
  for (const auto& [name, content] : files) {
    CAPTURE(name);
    CHECK(read_file(out / name) == content);
  }
  SUBCASE("a zstd archive and a checked one go through libarchive, with the same files") {
    const fs::path packed = dir.path() / "z.tar";
    conductor::pack_directory(root, packed, {}, PackOptions{Compression::kZstd});
    const fs::path zstd_out = dir.make("zstd");
    CHECK(conductor::extract(packed, zstd_out).copied_bytes == 0);
    const fs::path checked_out = dir.make("checked");
    CHECK(conductor::extract_verified(archive, checked_out, conductor::sha256_file(archive))
              .copied_bytes == 0);
    for (const auto& [name, content] : files) {
      CAPTURE(name);
      CHECK(read_file(zstd_out / name) == content);
      CHECK(read_file(checked_out / name) == content);
    }
  }
  SUBCASE("copied bytes count against max_total_bytes; what was written is removed") {
    ExtractLimits limits;
    limits.max_total_bytes = 6u << 20;
    const fs::path refused = dir.make("refused-total");
    CHECK_THROWS_AS(conductor::extract(archive, refused, limits), PackageError);
    CHECK(is_empty_folder(refused));
  }
  SUBCASE("a file that claims more than max_file_bytes is refused before any copy") {
    ExtractLimits limits;
    limits.max_file_bytes = 1u << 20;
    const fs::path refused = dir.make("refused");
    CHECK_THROWS_AS(conductor::extract(archive, refused, limits), PackageError);
    CHECK(is_empty_folder(refused));
  }
}

TEST_CASE("extraction never overwrites an existing file and keeps what was there before") {
  TempDir dir;
  const fs::path archive = dir.path() / "a.tar";
  write_crafted(archive,
                {{.name = "new.txt", .content = "new"}, {.name = "old.txt", .content = "evil"}});
  const fs::path out = dir.make("out");
  write_file(out / "old.txt", "old");
  std::string message;
  try {
    conductor::extract(archive, out);
  } catch (const PackageError& error) {
    message = error.what();
  }
  CHECK(message == "archive entry 'old.txt' refused: already exists in the destination");
  CHECK(read_file(out / "old.txt") == "old");
  CHECK(files_below(out) == std::vector<std::string>{"old.txt"});
}

TEST_CASE("extraction does not follow a symlink already in the destination") {
  TempDir dir;
  const fs::path outside = dir.make("outside");
  const fs::path out = dir.make("out");
  fs::create_directory_symlink(outside, out / "link");
  const fs::path archive = dir.path() / "a.tar";
  write_crafted(archive, {{.name = "link/x.txt", .content = "x"}});
  CHECK_THROWS_AS(conductor::extract(archive, out), PackageError);
  CHECK(is_empty_folder(outside));
}

TEST_CASE("extraction throws IoError for a missing archive or destination") {
  TempDir dir;
  const fs::path archive = dir.path() / "a.tar";
  conductor::pack({}, archive);
  CHECK_THROWS_AS(conductor::extract(dir.path() / "missing.tar", dir.path()), conductor::IoError);
  CHECK_THROWS_AS(conductor::extract(archive, dir.path() / "missing"), conductor::IoError);
}

TEST_CASE("extract_verified extracts an archive whose SHA-256 matches, plain or zstd") {
  for (const auto compression : {Compression::kNone, Compression::kZstd}) {
    CAPTURE(static_cast<int>(compression));
    TempDir dir;
    const fs::path root = dir.make("version");
    const SampleTree tree(root);
    const fs::path archive = dir.path() / "v.tar";
    conductor::pack_directory(root, archive, kExcluded, PackOptions{compression});
    const fs::path out = dir.make("out");
    const auto stats = conductor::extract_verified(archive, out, conductor::sha256_file(archive));
    CHECK(stats.files == SampleTree::packed_names());
    tree.check_extracted(out);
  }
}

TEST_CASE(
    "extract_verified refuses an archive whose last byte differs, which extract alone takes") {
  TempDir dir;
  const fs::path root = dir.make("version");
  write_file(root / "model.h5", pseudo_random(3u << 20));
  const fs::path archive = dir.path() / "v.tar";
  conductor::pack_directory(root, archive);
  const std::string announced = conductor::sha256_file(archive);
  std::string bytes = read_file(archive);
  SUBCASE("the last byte, inside the end-of-archive blocks") { bytes.back() ^= 0x01; }
  SUBCASE("bytes appended after the end") { bytes += std::string(4096, '\0'); }
  write_file(archive, bytes);
  // libarchive stops at the end-of-archive blocks: the difference is only in the hash.
  const fs::path unchecked = dir.make("unchecked");
  CHECK(conductor::extract(archive, unchecked).files == std::vector<std::string>{"model.h5"});
  const fs::path out = dir.make("out");
  std::string message;
  try {
    conductor::extract_verified(archive, out, announced);
  } catch (const PackageError& error) {
    message = error.what();
  }
  CHECK_MESSAGE(message.find("hash mismatch: expected " + announced + ", read " +
                             conductor::sha256_hex(bytes)) != std::string::npos,
                "message: '" << message << "'");
  CHECK(is_empty_folder(out));
}

TEST_CASE(
    "extract_verified names the hash mismatch, not the damage it led to, and removes what it "
    "wrote") {
  TempDir dir;
  const fs::path root = dir.make("version");
  write_file(root / "a.txt", "first");
  write_file(root / "b.bin", pseudo_random(3u << 20));
  for (const auto compression : {Compression::kNone, Compression::kZstd}) {
    CAPTURE(static_cast<int>(compression));
    const fs::path archive = dir.path() / "whole.tar";
    conductor::pack_directory(root, archive, {}, PackOptions{compression});
    const std::string announced = conductor::sha256_file(archive);
    const std::string bytes = read_file(archive);
    std::string garbled = bytes;
    std::fill_n(garbled.begin() + static_cast<std::ptrdiff_t>(bytes.size() / 2), 4096, 'x');
    for (const std::string& damage : {bytes.substr(0, bytes.size() / 2), garbled}) {
      CAPTURE(damage.size());
      const fs::path damaged = dir.path() / "damaged.tar";
      write_file(damaged, damage);
      const fs::path out = dir.make("out");
      std::string message;
      try {
        conductor::extract_verified(damaged, out, announced);
      } catch (const PackageError& error) {
        message = error.what();
      }
      CHECK_MESSAGE(message.find("hash mismatch") != std::string::npos,
                    "message: '" << message << "'");
      CHECK(is_empty_folder(out));
      fs::remove_all(out);
    }
  }
}

TEST_CASE("extract_verified refuses an intact archive for what it holds, as extract does") {
  TempDir dir;
  const fs::path archive = dir.path() / "many.tar";
  std::vector<Crafted> entries;
  for (int i = 0; i < 6; ++i) entries.push_back({"f" + std::to_string(i) + ".txt", AE_IFREG, "x"});
  write_crafted(archive, entries);
  const fs::path out = dir.make("out");
  std::string message;
  try {
    conductor::extract_verified(archive, out, conductor::sha256_file(archive),
                                ExtractLimits{.max_entries = 5});
  } catch (const PackageError& error) {
    message = error.what();
  }
  CHECK_MESSAGE(message.find("max_entries") != std::string::npos, "message: '" << message << "'");
  CHECK(is_empty_folder(out));
}

TEST_CASE("read_verified reads the wanted files' ends into memory and writes nothing") {
  TempDir dir;
  const fs::path root = dir.make("result");
  write_file(root / ".conductor" / "console.log", "training...\nPredictedBuffer=0.75\n");
  write_file(root / "out" / "prediction.txt", "0.5\n");
  write_file(root / "model.h5", pseudo_random(1u << 20));  // not wanted: skipped, still hashed
  const fs::path archive = dir.path() / "r.tar";
  conductor::pack_directory(root, archive, {}, PackOptions{Compression::kZstd});
  const std::string announced = conductor::sha256_file(archive);
  const std::set<std::string> wanted = {".conductor/console.log", "out/prediction.txt",
                                        "absent.txt"};

  const auto files = conductor::read_verified(archive, announced, wanted, 1u << 20);
  CHECK(files == std::map<std::string, std::string>{
                     {".conductor/console.log", "training...\nPredictedBuffer=0.75\n"},
                     {"out/prediction.txt", "0.5\n"}});
  // Only the end of a file longer than max_bytes is kept.
  // A cut file starts at its first whole line.
  CHECK(conductor::read_verified(archive, announced, wanted, 26).at(".conductor/console.log") ==
        "PredictedBuffer=0.75\n");
  CHECK(
      conductor::read_verified(archive, announced, wanted, 7).at(".conductor/console.log").empty());
  CHECK(fs::exists(archive));
  CHECK(conductor::test::list_names(dir.path()) == std::vector<std::string>{"r.tar", "result"});
}

TEST_CASE("read_verified refuses damaged bytes and unsafe entries as extract_verified does") {
  TempDir dir;
  SUBCASE("a flipped last byte: hash mismatch") {
    const fs::path root = dir.make("result");
    write_file(root / "a.txt", "a\n");
    const fs::path archive = dir.path() / "r.tar";
    conductor::pack_directory(root, archive);
    const std::string announced = conductor::sha256_file(archive);
    std::string bytes = read_file(archive);
    bytes.back() ^= 0x01;
    write_file(archive, bytes);
    CHECK_THROWS_WITH_AS(conductor::read_verified(archive, announced, {"a.txt"}, 1024),
                         doctest::Contains("hash mismatch"), PackageError);
  }
  SUBCASE("an entry that climbs out, even when it is not wanted") {
    const fs::path archive = dir.path() / "evil.tar";
    write_crafted(archive, {{"../escape.txt", AE_IFREG, "x"}, {"a.txt", AE_IFREG, "a"}});
    CHECK_THROWS_AS(
        conductor::read_verified(archive, conductor::sha256_file(archive), {"a.txt"}, 1024),
        PackageError);
  }
  SUBCASE("a symlink") {
    const fs::path archive = dir.path() / "link.tar";
    write_crafted(archive, {{"a.txt", AE_IFLNK, "", "/etc/passwd"}});
    CHECK_THROWS_AS(
        conductor::read_verified(archive, conductor::sha256_file(archive), {"a.txt"}, 1024),
        PackageError);
  }
  SUBCASE("more entries than max_entries") {
    const fs::path archive = dir.path() / "many.tar";
    write_crafted(archive, {{"a", AE_IFREG, "1"}, {"b", AE_IFREG, "2"}, {"c", AE_IFREG, "3"}});
    CHECK_THROWS_WITH_AS(conductor::read_verified(archive, conductor::sha256_file(archive), {"a"},
                                                  1024, ExtractLimits{.max_entries = 2}),
                         doctest::Contains("max_entries"), PackageError);
  }
}

TEST_CASE("pack_to_memory writes the archive pack() writes, and a content entry packs its bytes") {
  TempDir dir;
  const fs::path root = dir.make("result");
  write_file(root / "model.h5", pseudo_random(300000));
  write_file(root / "metrics.csv", "epoch,loss\n1,0.5\n");
  auto entries = conductor::list_files(root);
  const fs::path archive = dir.path() / "r.tar";
  conductor::pack(entries, archive, PackOptions{Compression::kZstd, 1});
  CHECK(conductor::pack_to_memory(entries, PackOptions{Compression::kZstd, 1}) ==
        read_file(archive));
  CHECK(conductor::test::list_names(dir.path()) == std::vector<std::string>{"r.tar", "result"});

  entries.push_back(conductor::PackEntry::in_memory(".conductor/console.log", "line 1\nline 2\n"));
  const std::string bytes = conductor::pack_to_memory(entries, PackOptions{Compression::kAuto});
  const fs::path out = dir.make("out");
  const auto stats =
      conductor::extract_verified(conductor::ArchiveSource::in_memory(bytes, "result in memory"),
                                  out, conductor::sha256_hex(bytes));
  CHECK(stats.files ==
        std::vector<std::string>{"metrics.csv", "model.h5", ".conductor/console.log"});
  CHECK(read_file(out / ".conductor" / "console.log") == "line 1\nline 2\n");
  CHECK(mode_of(out / ".conductor" / "console.log") == 0644);
  CHECK(read_file(out / "model.h5") == read_file(root / "model.h5"));
  // Repeated and unclean names are refused as pack() refuses them.
  entries.push_back(conductor::PackEntry::in_memory("model.h5", "again"));
  CHECK_THROWS_WITH_AS(conductor::pack_to_memory(entries), doctest::Contains("repeats"),
                       PackageError);
  CHECK_THROWS_AS(conductor::pack_to_memory({conductor::PackEntry::in_memory("../x", "x")}),
                  PackageError);
}

TEST_CASE("an archive in memory is read and refused as the same archive in a file is") {
  TempDir dir;
  const fs::path root = dir.make("result");
  write_file(root / "a.txt", "a\n");
  write_file(root / "sub" / "b.txt", "b\n");
  const std::string bytes = conductor::pack_to_memory(conductor::list_files(root));
  const std::string announced = conductor::sha256_hex(bytes);
  const auto source = conductor::ArchiveSource::in_memory(bytes, "upload of item 0a");

  CHECK(conductor::extract(source, dir.make("plain")).files ==
        std::vector<std::string>{"a.txt", "sub/b.txt"});
  CHECK(conductor::read_verified(source, announced, {"sub/b.txt"}, 1024) ==
        std::map<std::string, std::string>{{"sub/b.txt", "b\n"}});

  std::string damaged = bytes;
  damaged[513] ^= 0x01;  // in a.txt's data
  const fs::path out = dir.make("out");
  CHECK_THROWS_WITH_AS(
      conductor::extract_verified(conductor::ArchiveSource::in_memory(damaged, "upload of item 0a"),
                                  out, announced),
      doctest::Contains("'upload of item 0a' refused: hash mismatch"), PackageError);
  CHECK(is_empty_folder(out));

  std::string truncated = bytes.substr(0, 700);
  CHECK_THROWS_AS(conductor::extract(conductor::ArchiveSource::in_memory(truncated, "cut"), out),
                  PackageError);
  CHECK(is_empty_folder(out));
}

TEST_CASE("an archive read from a stream is extracted and checked as the same archive in a file") {
  TempDir dir;
  const fs::path root = dir.make("result");
  write_file(root / "model.h5", pseudo_random(300000));
  write_file(root / "sub" / "b.txt", "b\n");
  for (const auto compression : {Compression::kNone, Compression::kZstd}) {
    CAPTURE(static_cast<int>(compression));
    const std::string bytes =
        conductor::pack_to_memory(conductor::list_files(root), PackOptions{compression});
    const std::string announced = conductor::sha256_hex(bytes);
    {
      // Pieces that split headers and data anywhere; every byte is read, the trailer included.
      PieceStream stream(bytes, 1000);
      const fs::path out = dir.make("out");
      const auto stats = conductor::extract_verified(
          conductor::ArchiveSource::from_stream(stream, "upload of item 0a"), out, announced);
      CHECK(stats.files == std::vector<std::string>{"model.h5", "sub/b.txt"});
      CHECK(read_file(out / "model.h5") == read_file(root / "model.h5"));
      CHECK(stream.offset() == bytes.size());
      fs::remove_all(out);
    }
    {
      std::string damaged = bytes;
      damaged.back() ^= 0x01;
      PieceStream stream(damaged, 4096);
      const fs::path out = dir.make("out");
      CHECK_THROWS_WITH_AS(
          conductor::extract_verified(conductor::ArchiveSource::from_stream(stream, "upload 0b"),
                                      out, announced),
          doctest::Contains("'upload 0b' refused: hash mismatch"), PackageError);
      CHECK(is_empty_folder(out));
      fs::remove_all(out);
    }
    {
      // The stream gives up half-way: its own exception is the reason, and nothing is left.
      PieceStream stream(bytes, 4096, bytes.size() / 2);
      const fs::path out = dir.make("out");
      CHECK_THROWS_WITH_AS(
          conductor::extract_verified(conductor::ArchiveSource::from_stream(stream, "upload 0c"),
                                      out, announced),
          "gone", conductor::IoError);
      CHECK(is_empty_folder(out));
      fs::remove_all(out);
    }
  }
}

TEST_CASE("held entries are read into memory, never written, and checked like the rest") {
  TempDir dir;
  const fs::path root = dir.make("result");
  write_file(root / "model.h5", "weights");
  write_file(root / ".conductor" / "console.log", "one\ntwo\nthree\n");
  write_file(root / ".conductor" / "extra.bin", pseudo_random(100000));  // not wanted: dropped
  const fs::path archive = dir.path() / "r.tar";
  conductor::pack_directory(root, archive);
  const std::string announced = conductor::sha256_file(archive);
  const conductor::ExtractOptions held{".conductor", {".conductor/console.log"}, 1024};

  const fs::path out = dir.make("out");
  const auto stats = conductor::extract_verified(archive, out, announced, {}, held);
  CHECK(stats.held ==
        std::map<std::string, std::string>{{".conductor/console.log", "one\ntwo\nthree\n"}});
  CHECK(stats.files == std::vector<std::string>{"model.h5"});
  CHECK(conductor::test::list_names(out) == std::vector<std::string>{"model.h5"});
  // Only the end of a long one, from a whole line.
  const auto cut = conductor::extract_verified(
      archive, dir.make("cut"), announced, {},
      conductor::ExtractOptions{".conductor", {".conductor/console.log"}, 9});
  CHECK(cut.held.at(".conductor/console.log") == "three\n");

  SUBCASE("the held folder as a file is refused") {
    const fs::path bad = dir.path() / "bad.tar";
    write_crafted(bad, {{".conductor", AE_IFREG, "x"}, {"model.h5", AE_IFREG, "w"}});
    const fs::path target = dir.make("bad-out");
    CHECK_THROWS_WITH_AS(
        conductor::extract_verified(bad, target, conductor::sha256_file(bad), {}, held),
        doctest::Contains("must be a folder"), PackageError);
    CHECK(is_empty_folder(target));
  }
  SUBCASE("a hash mismatch in a held entry is refused") {
    std::string bytes = read_file(archive);
    const auto at = bytes.find("one\ntwo");
    REQUIRE(at != std::string::npos);
    bytes[at] = 'X';
    const fs::path target = dir.make("damaged-out");
    CHECK_THROWS_WITH_AS(
        conductor::extract_verified(conductor::ArchiveSource::in_memory(bytes, "r.tar"), target,
                                    announced, {}, held),
        doctest::Contains("hash mismatch"), PackageError);
    CHECK(is_empty_folder(target));
  }
}

TEST_CASE("extraction rewrites reusable left-overs in place, never through a link") {
  TempDir dir;
  const fs::path root = dir.make("v");
  write_file(root / "a.txt", "new a\n");
  write_file(root / "b.txt", "new b\n");
  write_file(root / "sub" / "c.txt", "new c\n");
  const fs::path archive = dir.path() / "v.tar";
  conductor::pack_directory(root, archive);
  const fs::path out = dir.make("out");
  write_file(out / "a.txt", "old a, longer than the new one\n");
  write_file(dir.path() / "secret.txt", "outside\n");
  fs::create_symlink(dir.path() / "secret.txt", out / "b.txt");
  write_file(out / "left.txt", "not in the archive\n");
  struct stat before {};
  REQUIRE(::stat((out / "a.txt").c_str(), &before) == 0);

  std::set<std::string> reusable = {"a.txt", "b.txt", "left.txt"};
  conductor::ExtractOptions options;
  options.reusable = &reusable;
  const auto stats = conductor::extract(archive, out, {}, options);
  CHECK(stats.files == std::vector<std::string>{"a.txt", "b.txt", "sub/c.txt"});
  struct stat after {};
  REQUIRE(::stat((out / "a.txt").c_str(), &after) == 0);
  CHECK(after.st_ino == before.st_ino);
  CHECK(read_file(out / "a.txt") == "new a\n");
  CHECK_FALSE(fs::is_symlink(out / "b.txt"));
  CHECK(read_file(out / "b.txt") == "new b\n");
  CHECK(read_file(dir.path() / "secret.txt") == "outside\n");
  // What the archive does not hold is left to the caller.
  CHECK(reusable == std::set<std::string>{"left.txt"});
}

TEST_CASE(
    "a reusable left-over gives way to a folder of its name, and a fifo in its place never "
    "blocks") {
  TempDir dir;
  const fs::path root = dir.make("v");
  write_file(root / "config" / "a.txt", "in a folder now\n");
  write_file(root / "b.txt", "b\n");
  const fs::path archive = dir.path() / "v.tar";
  conductor::pack_directory(root, archive);
  const fs::path out = dir.make("out");
  write_file(out / "config", "a file last time\n");
  REQUIRE(::mkfifo((out / "b.txt").c_str(), 0644) == 0);
  std::set<std::string> reusable = {"config", "b.txt"};
  conductor::ExtractOptions options;
  options.reusable = &reusable;
  conductor::extract(archive, out, {}, options);
  CHECK(read_file(out / "config" / "a.txt") == "in a folder now\n");
  CHECK(fs::is_regular_file(fs::symlink_status(out / "b.txt")));
  CHECK(read_file(out / "b.txt") == "b\n");
  CHECK(reusable.empty());
}

TEST_CASE("entries under the held folder count against the limits, kept or not") {
  TempDir dir;
  const fs::path root = dir.make("result");
  write_file(root / "model.h5", "w");
  write_file(root / ".conductor" / "junk.bin", std::string(10000, 'j'));
  const fs::path archive = dir.path() / "r.tar";
  conductor::pack_directory(root, archive, {}, PackOptions{Compression::kZstd});
  const conductor::ExtractOptions held{".conductor", {".conductor/console.log"}, 1024};
  CHECK_THROWS_WITH_AS(
      conductor::extract_verified(archive, dir.make("total"), conductor::sha256_file(archive),
                                  ExtractLimits{.max_total_bytes = 5000}, held),
      doctest::Contains("max_total_bytes"), PackageError);
  CHECK_THROWS_WITH_AS(
      conductor::extract_verified(archive, dir.make("file"), conductor::sha256_file(archive),
                                  ExtractLimits{.max_file_bytes = 5000}, held),
      doctest::Contains("max_file_bytes"), PackageError);
  CHECK(conductor::extract_verified(archive, dir.make("fits"), conductor::sha256_file(archive),
                                    ExtractLimits{.max_total_bytes = 20000}, held)
            .bytes == 10001);
}

TEST_CASE("read_verified counts every entry's data against the limits, skipped ones included") {
  TempDir dir;
  const fs::path root = dir.make("result");
  write_file(root / ".conductor" / "console.log", "PredictedBuffer=1\n");
  write_file(root / "zeros.bin", std::string(4u << 20, '\0'));  // not wanted, yet unpacked
  const fs::path archive = dir.path() / "r.tar.zst";
  conductor::pack_directory(root, archive, {}, PackOptions{Compression::kZstd});
  CHECK(fs::file_size(archive) < (64u << 10));
  const std::string announced = conductor::sha256_file(archive);
  const std::set<std::string> wanted = {".conductor/console.log"};
  CHECK_THROWS_WITH_AS(conductor::read_verified(archive, announced, wanted, 1u << 20,
                                                ExtractLimits{.max_total_bytes = 1u << 20}),
                       doctest::Contains("'zeros.bin' refused: takes the archive past 1048576"),
                       PackageError);
  CHECK_THROWS_WITH_AS(conductor::read_verified(archive, announced, wanted, 1u << 20,
                                                ExtractLimits{.max_file_bytes = 1u << 20}),
                       doctest::Contains("max_file_bytes"), PackageError);
  CHECK(conductor::read_verified(archive, announced, wanted, 1u << 20,
                                 ExtractLimits{.max_total_bytes = 5u << 20}) ==
        std::map<std::string, std::string>{{".conductor/console.log", "PredictedBuffer=1\n"}});
}

TEST_CASE("extraction refuses to fill the file system past min_free_bytes and removes its files") {
  TempDir dir;
  const fs::path root = dir.make("result");
  write_file(root / "a.txt", "small");
  write_file(root / "model.h5", pseudo_random(256u << 10));
  for (const auto compression : {Compression::kNone, Compression::kZstd}) {
    CAPTURE(static_cast<int>(compression));
    const fs::path archive = dir.path() / "r.tar";
    conductor::pack_directory(root, archive, {}, PackOptions{compression});
    // No file system has this much free: the first byte is refused, and the file made for it
    // is removed again.
    const fs::path out = dir.make("out");
    const std::string expected =
        "archive entry 'a.txt' refused: writing it would leave less than " +
        std::to_string(std::uint64_t{1} << 62) + " bytes free in";
    CHECK_THROWS_WITH_AS(
        conductor::extract(archive, out, ExtractLimits{.min_free_bytes = std::uint64_t{1} << 62}),
        doctest::Contains(expected.c_str()), conductor::IoError);
    CHECK(is_empty_folder(out));
    // With room to spare it extracts.
    CHECK(conductor::extract(archive, out, ExtractLimits{.min_free_bytes = 1u << 20}).bytes ==
          (256u << 10) + 5);
    fs::remove_all(out);
  }
}

TEST_CASE("is_plain_tar tells an uncompressed tar from a compressed one or other bytes") {
  TempDir dir;
  const fs::path root = dir.make("result");
  write_file(root / "model.h5", std::string(100000, 'm'));
  const fs::path plain = dir.path() / "plain.tar";
  const fs::path zstd = dir.path() / "r.tar.zst";
  const fs::path gzip = dir.path() / "r.tar.gz";
  conductor::pack_directory(root, plain, {}, PackOptions{Compression::kNone});
  conductor::pack_directory(root, zstd, {}, PackOptions{Compression::kZstd});
  write_crafted(gzip, {{.name = "model.h5", .content = "m"}}, Compression::kNone, true);
  CHECK(conductor::is_plain_tar(read_file(plain)));
  CHECK_FALSE(conductor::is_plain_tar(read_file(zstd)));
  CHECK_FALSE(conductor::is_plain_tar(read_file(gzip)));
  CHECK_FALSE(conductor::is_plain_tar(read_file(plain).substr(0, 511)));
  CHECK_FALSE(conductor::is_plain_tar(std::string(4096, 'x')));
  // A zstd skippable frame in front of a tar is still read through the zstd filter.
  CHECK_FALSE(conductor::is_plain_tar(std::string("\x50\x2a\x4d\x18", 4) + read_file(plain)));
}

TEST_CASE("an archive that unpacks to more than the whole file system is refused outright") {
  // A hand-made ustar header whose size field says 1 EiB (base-256), and no data: the check
  // before the file's data refuses it; no wait could make room, so it is not NoSpaceError.
  std::string header(512, '\0');
  auto put = [&](std::size_t at, std::string_view text) { header.replace(at, text.size(), text); };
  put(0, "huge.bin");
  put(100, "0000644");
  put(108, "0000000");
  put(116, "0000000");
  header[124] = static_cast<char>(0x80);
  const std::uint64_t size = std::uint64_t{1} << 60;
  for (int i = 0; i < 8; ++i) header[135 - i] = static_cast<char>((size >> (8 * i)) & 0xff);
  put(136, "00000000000");
  put(148, "        ");
  header[156] = '0';
  put(257, "ustar");
  put(263, "00");
  unsigned sum = 0;
  for (const char c : header) sum += static_cast<unsigned char>(c);
  char checksum[8];
  std::snprintf(checksum, sizeof checksum, "%06o", sum);
  header.replace(148, 7, checksum, 7);  // six digits and a NUL; the space stays
  TempDir dir;
  const fs::path archive = dir.path() / "huge.tar";
  write_file(archive, header + std::string(1024, '\0'));
  const fs::path out = dir.make("out");
  const ExtractLimits limits{.max_total_bytes = std::uint64_t{1} << 62,
                             .max_file_bytes = std::uint64_t{1} << 62,
                             .min_free_bytes = 1u << 20};
  std::string message;
  bool no_space = false;
  try {
    conductor::extract(archive, out, limits);
  } catch (const conductor::NoSpaceError& e) {
    no_space = true;
    message = e.what();
  } catch (const conductor::IoError& e) {
    message = e.what();
  }
  CHECK_FALSE(no_space);
  CHECK_MESSAGE(
      message.find("archive entry 'huge.bin' refused: the archive unpacks to more than") == 0,
      message);
  CHECK(is_empty_folder(out));
}
