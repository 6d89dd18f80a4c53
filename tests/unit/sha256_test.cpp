#include "conductor/sha256.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "conductor/error.hpp"
#include "support/temp_dir.hpp"

using conductor::test::TempDir;
using conductor::test::write_file;

TEST_CASE("sha256_hex matches the FIPS 180-2 vectors for the empty string and abc") {
  CHECK(conductor::sha256_hex("") ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(conductor::sha256_hex("abc") ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(conductor::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST_CASE("Sha256 fed in pieces gives the same digest as one update") {
  conductor::Sha256 hasher;
  hasher.update("a");
  hasher.update(std::string_view{});
  hasher.update("bc", 2);
  CHECK(hasher.finish_hex() == conductor::sha256_hex("abc"));
}

TEST_CASE("Sha256 of one million 'a' matches the FIPS 180-2 long vector") {
  conductor::Sha256 hasher;
  const std::string thousand(1000, 'a');
  for (int i = 0; i < 1000; ++i) hasher.update(thousand);
  CHECK(hasher.finish_hex() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("a moved Sha256 keeps its state") {
  conductor::Sha256 first;
  first.update("ab");
  conductor::Sha256 second(std::move(first));
  second.update("c");
  CHECK(second.finish_hex() == conductor::sha256_hex("abc"));
}

TEST_CASE("sha256_file equals sha256_hex of the same bytes across block boundaries") {
  TempDir dir;
  std::string content;
  content.reserve((3u << 20) + 17);
  for (std::size_t i = 0; i < (3u << 20) + 17; ++i) {
    content.push_back(static_cast<char>((i * 2654435761u) >> 13));
  }
  write_file(dir.path() / "data.bin", content);
  write_file(dir.path() / "empty", "");
  CHECK(conductor::sha256_file(dir.path() / "data.bin") == conductor::sha256_hex(content));
  CHECK(conductor::sha256_file(dir.path() / "empty") == conductor::sha256_hex(""));
}

TEST_CASE("sha256_file throws IoError naming a file that does not exist") {
  TempDir dir;
  const auto missing = dir.path() / "missing.bin";
  CHECK_THROWS_AS(conductor::sha256_file(missing), conductor::IoError);
  try {
    conductor::sha256_file(missing);
  } catch (const conductor::IoError& error) {
    CHECK(std::string(error.what()).find(missing.string()) != std::string::npos);
  }
}

TEST_CASE("sha256_file throws IoError for a directory") {
  TempDir dir;
  CHECK_THROWS_AS(conductor::sha256_file(dir.path()), conductor::IoError);
}
