#include "curve.hpp"

#include <doctest/doctest.h>

#include <filesystem>

#include "conductor/error.hpp"
#include "conductor/keys.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace conductor;
using conductor::test::read_file;
using conductor::test::TempDir;
using conductor::test::write_file;

TEST_CASE("a key file is created once, private, and read back unchanged") {
  TempDir dir;
  const fs::path file = dir / "nested" / "node.key";
  KeyPair first = load_or_create_keypair(file);
  CHECK(is_z85_key(first.public_key));
  CHECK(is_z85_key(first.secret_key));
  CHECK(first.public_key != first.secret_key);
  auto perms = fs::status(file).permissions();
  CHECK((perms & (fs::perms::group_all | fs::perms::others_all)) == fs::perms::none);
  KeyPair again = load_or_create_keypair(file);
  CHECK(again.public_key == first.public_key);
  CHECK(again.secret_key == first.secret_key);
  CHECK(public_key_of(file) == first.public_key);
  CHECK(read_file(file).find(first.secret_key) != std::string::npos);
}

TEST_CASE("a key file readable by others or malformed is refused with file and line") {
  TempDir dir;
  const fs::path file = dir / "node.key";
  load_or_create_keypair(file);
  fs::permissions(file, fs::perms::group_read, fs::perm_options::add);
  CHECK_THROWS_WITH_AS(load_or_create_keypair(file), doctest::Contains("readable by others"), ConfigError);

  const fs::path broken = dir / "broken.key";
  write_file(broken, "# comment\npublic tooshort\n");
  fs::permissions(broken, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
  CHECK_THROWS_WITH_AS(load_or_create_keypair(broken), doctest::Contains("broken.key:2:"), ConfigError);

  const fs::path half = dir / "half.key";
  write_file(half, "public " + std::string(40, 'a') + "\n");
  fs::permissions(half, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
  CHECK_THROWS_WITH_AS(load_or_create_keypair(half), doctest::Contains("both a public and a secret"),
                       ConfigError);
}

TEST_CASE("an allow-list takes one key per line with comments and labels") {
  TempDir dir;
  const std::string a(40, 'a');
  const std::string b = std::string(39, 'b') + "#";
  const fs::path list = write_file(dir / "authorized_keys", "# operators\n" + a + " laptop\n\n  " + b + "\n");
  auto keys = load_authorized_keys(list);
  CHECK(keys.size() == 2);
  CHECK(keys.contains(a));
  CHECK(keys.contains(b));
  CHECK(load_authorized_keys(dir / "missing").empty());
}

TEST_CASE("a malformed or group-writable allow-list is refused") {
  TempDir dir;
  const fs::path list = write_file(dir / "authorized_keys", std::string(40, 'a') + "\nnot-a-key\n");
  CHECK_THROWS_WITH_AS(load_authorized_keys(list), doctest::Contains("authorized_keys:2:"), ConfigError);
  write_file(list, std::string(40, 'a') + "\n");
  fs::permissions(list, fs::perms::group_write, fs::perm_options::add);
  CHECK_THROWS_WITH_AS(load_authorized_keys(list), doctest::Contains("writable by others"), ConfigError);
}

TEST_CASE("Z85 keys are exactly 40 characters of the Z85 alphabet") {
  CHECK(is_z85_key(std::string(40, 'Z')));
  CHECK_FALSE(is_z85_key(std::string(39, 'Z')));
  CHECK_FALSE(is_z85_key(std::string(41, 'Z')));
  CHECK_FALSE(is_z85_key(std::string(39, 'Z') + "\""));
  CHECK_FALSE(is_z85_key(std::string(39, 'Z') + " "));
}
