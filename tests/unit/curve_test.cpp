#include "curve.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>

#include "conductor/error.hpp"
#include "conductor/keys.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace conductor;
using conductor::test::read_file;
using conductor::test::TempDir;
using conductor::test::write_file;

namespace {

// doctest's Contains takes a C string: a matcher for a message built at run time.
doctest::Contains contains(const std::string& text) { return doctest::Contains(text.c_str()); }

}  // namespace

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

TEST_CASE("a key file every user may read or write is refused with its name and mode") {
  TempDir dir;
  const fs::path file = dir / "node.key";
  const KeyPair made = load_or_create_keypair(file);
  const std::pair<fs::perms, const char*> refused[] = {
      {fs::perms(0644), "mode 0644 lets every user read it"},
      {fs::perms(0604), "mode 0604 lets every user read it"},
      {fs::perms(0602), "mode 0602 lets every user write it"},
      {fs::perms(0666), "mode 0666 lets every user read and write it"},
  };
  for (const auto& [mode, message] : refused) {
    INFO("mode " << static_cast<int>(mode));
    fs::permissions(file, mode, fs::perm_options::replace);
    CHECK_THROWS_WITH_AS(load_or_create_keypair(file),
                         contains(file.string() + ":1: key file refused: " + message), ConfigError);
  }
  // Owner and group may read it (and the group write it): a Secret under fsGroup.
  for (fs::perms mode :
       {fs::perms(0600), fs::perms(0400), fs::perms(0440), fs::perms(0640), fs::perms(0660)}) {
    INFO("mode " << static_cast<int>(mode));
    fs::permissions(file, mode, fs::perm_options::replace);
    CHECK(load_or_create_keypair(file).secret_key == made.secret_key);
  }
}

TEST_CASE("a key pair mounted as Kubernetes mounts a Secret is read through its ..data links") {
  // kubelet's layout: <mount>/client.key -> ..data/client.key, ..data -> ..<timestamp>/,
  // the file root's and 0440 (defaultMode) with the pod's fsGroup.
  TempDir dir;
  const KeyPair made = load_or_create_keypair(dir / "made.key");
  const fs::path mount = dir / "client-key";
  fs::create_directories(mount / "..2024_05_01_10_00_00.123");
  fs::copy_file(dir / "made.key", mount / "..2024_05_01_10_00_00.123" / "client.key");
  fs::create_directory_symlink("..2024_05_01_10_00_00.123", mount / "..data");
  fs::create_symlink("..data/client.key", mount / "client.key");
  const fs::path target = mount / "..2024_05_01_10_00_00.123" / "client.key";
  fs::permissions(target, fs::perms(0440), fs::perm_options::replace);
  CHECK(load_or_create_keypair(mount / "client.key").public_key == made.public_key);
  CHECK(public_key_of(mount / "client.key") == made.public_key);
  // A link to a file every user may read is refused, naming both.
  fs::permissions(target, fs::perms(0444), fs::perm_options::replace);
  CHECK_THROWS_WITH_AS(
      load_or_create_keypair(mount / "client.key"),
      contains((mount / "client.key").string() + ":1: key file refused: mode 0444 (a link to " +
               fs::canonical(target).string() + ")"),
      ConfigError);
}

TEST_CASE("a malformed key file is refused with file and line") {
  TempDir dir;

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

namespace {

// Sets (or, with nullopt, unsets) an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("a server key file gives the first word of its first line that is no comment") {
  TempDir dir;
  const std::string key = load_or_create_keypair(dir / "server.key").public_key;
  write_file(dir / "server.pub", key + "\n");
  CHECK(read_server_key_file(dir / "server.pub") == key);
  write_file(dir / "label.pub",
             "\n# the server of the lab\n  " + key + " conductor-server-0");  // no final newline
  CHECK(read_server_key_file(dir / "label.pub") == key);

  write_file(dir / "empty.pub", "\n# nothing\n");
  CHECK_THROWS_WITH_AS(read_server_key_file(dir / "empty.pub"),
                       doctest::Contains("empty.pub: the server key file holds no key"),
                       ConfigError);
  write_file(dir / "bad.pub", "# a key\nnot-a-key\n");
  CHECK_THROWS_WITH_AS(
      read_server_key_file(dir / "bad.pub"),
      doctest::Contains("bad.pub:2: 'not-a-key' is not a 40-character Z85 public key"),
      ConfigError);
  CHECK_THROWS_WITH_AS(read_server_key_file(dir / "none.pub"),
                       doctest::Contains("none.pub': it does not exist"), IoError);
}

TEST_CASE("the server key comes from the flags first, then CONDUCTOR_SERVER_KEY, then its file") {
  TempDir dir;
  const std::string from_flag_file = load_or_create_keypair(dir / "a.key").public_key;
  const std::string from_env = load_or_create_keypair(dir / "b.key").public_key;
  const std::string from_env_file = load_or_create_keypair(dir / "c.key").public_key;
  write_file(dir / "flag.pub", from_flag_file + "\n");
  write_file(dir / "env.pub", from_env_file + "\n");
  const std::string given(40, 'k');

  ScopedEnv key("CONDUCTOR_SERVER_KEY", from_env);
  ScopedEnv file("CONDUCTOR_SERVER_KEY_FILE", (dir / "env.pub").string());
  CHECK(resolve_server_key({given, {}, {}, {}}) == given);
  CHECK(resolve_server_key({{}, dir / "flag.pub", {}, {}}) == from_flag_file);
  CHECK(resolve_server_key({}) == from_env);  // the key given outright wins over its file
  {
    ScopedEnv no_key("CONDUCTOR_SERVER_KEY", std::nullopt);
    CHECK(resolve_server_key({}) == from_env_file);
    // A flag wins even over a variable naming a broken file, which is then never read.
    ScopedEnv broken("CONDUCTOR_SERVER_KEY_FILE", (dir / "missing.pub").string());
    CHECK(resolve_server_key({given, {}, {}, {}}) == given);
    CHECK_THROWS_WITH_AS(resolve_server_key({}),
                         contains("CONDUCTOR_SERVER_KEY_FILE: cannot read the server key file '" +
                                  (dir / "missing.pub").string() + "'"),
                         IoError);
    CHECK_THROWS_WITH_AS(resolve_server_key({{}, dir / "missing.pub", {}, {}}),
                         doctest::Contains("--server-key-file: cannot read"), IoError);
    ScopedEnv none("CONDUCTOR_SERVER_KEY_FILE", std::nullopt);
    CHECK(resolve_server_key({}).empty());  // plain TCP
  }
}

TEST_CASE(
    "the key pair comes from --key-file or --key-pair, then CONDUCTOR_KEY_PAIR_FILE, and must "
    "exist unless --key-file") {
  TempDir dir;
  load_or_create_keypair(dir / "flag.key");
  load_or_create_keypair(dir / "env.key");
  ScopedEnv pair("CONDUCTOR_KEY_PAIR_FILE", (dir / "env.key").string());
  CHECK(resolve_key_pair({{}, {}, dir / "new.key", {}}) == dir / "new.key");  // created later
  CHECK(resolve_key_pair({{}, {}, {}, dir / "flag.key"}) == dir / "flag.key");
  CHECK(resolve_key_pair({}) == dir / "env.key");
  CHECK_THROWS_WITH_AS(
      resolve_key_pair({{}, {}, {}, dir / "gone.key"}),
      contains("--key-pair: key pair file '" + (dir / "gone.key").string() + "' does not exist"),
      IoError);
  {
    ScopedEnv gone("CONDUCTOR_KEY_PAIR_FILE", (dir / "gone.key").string());
    CHECK(resolve_key_pair({{}, {}, {}, dir / "flag.key"}) == dir / "flag.key");  // the flag wins
    CHECK_THROWS_WITH_AS(resolve_key_pair({}),
                         doctest::Contains("CONDUCTOR_KEY_PAIR_FILE: key pair file"), IoError);
    CHECK_FALSE(fs::exists(dir / "gone.key"));
  }
  ScopedEnv none("CONDUCTOR_KEY_PAIR_FILE", std::nullopt);
  CHECK(resolve_key_pair({}).empty());  // the app's default
}
