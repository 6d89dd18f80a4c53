#include "blob_cache.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "conductor/error.hpp"
#include "support/temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
using conductor::BlobCache;
using conductor::test::list_names;
using conductor::test::read_file;
using conductor::test::TempDir;
using conductor::test::write_file;

// A well-formed blob id that differs in its first digit: blob(1), blob(2), ...
std::string blob(int n) {
  return std::string(1, "0123456789abcdef"[n % 16]) + std::string(63, 'e');
}

// Downloads `size` bytes of `id` into the cache the way the client does: reserve, write, commit.
void download(BlobCache& cache, const std::string& id, std::size_t size) {
  write_file(cache.reserve(id, size), std::string(size, 'x'));
  cache.commit(id);
}

}  // namespace

TEST_CASE("a blob cache evicts the least recently used archive when a new one would not fit") {
  TempDir root("conductor-blob-lru");
  BlobCache cache(root / "cache", 300);
  download(cache, blob(1), 100);
  download(cache, blob(2), 100);
  download(cache, blob(3), 100);
  REQUIRE(cache.find(blob(1)).has_value());  // blob 2 is now the least recently used

  download(cache, blob(4), 100);
  CHECK(cache.count() == 3);
  CHECK(cache.size_bytes() == 300);
  CHECK_FALSE(cache.contains(blob(2)));
  CHECK_FALSE(fs::exists(cache.path_of(blob(2))));
  CHECK(cache.find(blob(1)).has_value());
  CHECK(cache.find(blob(3)).has_value());
  CHECK(cache.find(blob(4)).has_value());
}

TEST_CASE("a blob cache makes room for a download before it starts") {
  TempDir root("conductor-blob-reserve");
  BlobCache cache(root / "cache", 250);
  download(cache, blob(1), 100);
  download(cache, blob(2), 100);
  const fs::path part = cache.reserve(blob(3), 120);
  CHECK(part == root / "cache" / (blob(3) + ".part"));
  CHECK_FALSE(cache.contains(blob(1)));
  CHECK(cache.contains(blob(2)));
  CHECK(cache.size_bytes() == 100);
}

TEST_CASE("a blob cache never evicts an archive in use, even when it alone exceeds the bound") {
  TempDir root("conductor-blob-in-use");
  BlobCache cache(root / "cache", 150);
  download(cache, blob(1), 100);
  cache.set_in_use({blob(1), blob(2)});
  download(cache, blob(2), 100);  // both in use: 200 bytes over a 150-byte bound stay
  CHECK(cache.size_bytes() == 200);
  CHECK(cache.find(blob(1)).has_value());
  CHECK(cache.find(blob(2)).has_value());

  cache.set_in_use({blob(2)});  // released: the least recently used of the rest goes
  CHECK(cache.size_bytes() == 100);
  CHECK(cache.find(blob(2)).has_value());
  CHECK_FALSE(cache.find(blob(1)).has_value());

  cache.set_in_use({blob(3)});
  download(cache, blob(3), 400);  // larger than the whole cache, kept while in use
  CHECK(cache.contains(blob(3)));
  CHECK_FALSE(cache.contains(blob(2)));
  cache.set_in_use({});
  CHECK(cache.count() == 0);
  CHECK(cache.size_bytes() == 0);
  CHECK(list_names(root / "cache").empty());
}

TEST_CASE("a blob cache opened on a folder removes abandoned .part files and keeps the rest") {
  TempDir root("conductor-blob-reopen");
  const fs::path dir = root / "cache";
  write_file(dir / (blob(1) + ".part"), "half a download");
  write_file(dir / (blob(2) + ".tar"), std::string(10, 'a'));
  write_file(dir / "notes.txt", "not an archive");
  write_file(dir / "short.tar", "not named by a hash");
  BlobCache cache(dir, 1000);
  CHECK_FALSE(fs::exists(dir / (blob(1) + ".part")));
  CHECK(cache.count() == 1);
  CHECK(cache.size_bytes() == 10);
  CHECK(cache.find(blob(2)) == dir / (blob(2) + ".tar"));
  CHECK(read_file(dir / "notes.txt") == "not an archive");
  CHECK(fs::exists(dir / "short.tar"));
}

TEST_CASE("a blob cache keeps the order of use across a reopen and shrinks to a smaller bound") {
  TempDir root("conductor-blob-order");
  const fs::path dir = root / "cache";
  {
    BlobCache cache(dir, 1000);
    download(cache, blob(1), 100);
    download(cache, blob(2), 100);
    download(cache, blob(3), 100);
    // Modification times mark use; make blob 2 clearly the oldest, blob 1 the newest.
    const auto now = fs::file_time_type::clock::now();
    fs::last_write_time(cache.path_of(blob(2)), now - std::chrono::hours(3));
    fs::last_write_time(cache.path_of(blob(3)), now - std::chrono::hours(2));
    fs::last_write_time(cache.path_of(blob(1)), now - std::chrono::hours(1));
  }
  BlobCache smaller(dir, 200);
  CHECK(smaller.count() == 2);
  CHECK_FALSE(smaller.contains(blob(2)));
  CHECK_FALSE(fs::exists(dir / (blob(2) + ".tar")));
  download(smaller, blob(4), 100);
  CHECK_FALSE(smaller.contains(blob(3)));
  CHECK(smaller.contains(blob(1)));
}

TEST_CASE("a blob cache forgets an archive whose file was removed behind its back") {
  TempDir root("conductor-blob-gone");
  BlobCache cache(root / "cache", 1000);
  download(cache, blob(1), 100);
  download(cache, blob(2), 50);
  fs::remove(cache.path_of(blob(1)));
  write_file(cache.path_of(blob(2)), "shorter");  // changed: no longer what its hash names
  CHECK_FALSE(cache.find(blob(1)).has_value());
  CHECK_FALSE(cache.find(blob(2)).has_value());
  CHECK(cache.count() == 0);
  CHECK(cache.size_bytes() == 0);
  CHECK_FALSE(fs::exists(cache.path_of(blob(2))));
  download(cache, blob(1), 100);  // fetched again
  CHECK(cache.size_bytes() == 100);
}

TEST_CASE("a blob cache refuses blob ids that are not a SHA-256, so no path leaves its folder") {
  TempDir root("conductor-blob-ids");
  BlobCache cache(root / "cache", 1000);
  CHECK(BlobCache::is_blob_id(blob(1)));
  for (const std::string& bad :
       {std::string("../../etc/passwd"), std::string(64, 'E'), std::string(63, 'a'),
        std::string(65, 'a'), std::string(), std::string(62, 'a') + "/a"}) {
    CAPTURE(bad);
    CHECK_FALSE(BlobCache::is_blob_id(bad));
    CHECK_THROWS_AS(cache.find(bad), conductor::PackageError);
    CHECK_THROWS_AS(cache.reserve(bad, 1), conductor::PackageError);
    CHECK_THROWS_AS(cache.commit(bad), conductor::PackageError);
    cache.abandon(bad);  // ignored
  }
  CHECK_THROWS_WITH_AS(cache.find("../x"), doctest::Contains("blob id '../x' refused"),
                       conductor::PackageError);
}

TEST_CASE("a blob cache drops an abandoned download and refuses to commit one never written") {
  TempDir root("conductor-blob-abandon");
  BlobCache cache(root / "cache", 1000);
  const fs::path part = cache.reserve(blob(5), 10);
  write_file(part, "0123456789");
  cache.abandon(blob(5));
  CHECK_FALSE(fs::exists(part));
  CHECK_THROWS_AS(cache.commit(blob(5)), conductor::IoError);
  CHECK(cache.count() == 0);
}
