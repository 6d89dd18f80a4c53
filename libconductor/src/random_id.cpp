#include "random_id.hpp"

#include <sodium.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <stdexcept>

namespace conductor {

std::string random_uuid() {
  static const bool ready = sodium_init() >= 0;
  if (!ready) throw std::runtime_error("libsodium could not be initialised");
  std::array<std::uint8_t, 16> b{};
  randombytes_buf(b.data(), b.size());
  b[6] = static_cast<std::uint8_t>((b[6] & 0x0F) | 0x40);  // version 4
  b[8] = static_cast<std::uint8_t>((b[8] & 0x3F) | 0x80);  // RFC 4122 variant
  char text[37];
  std::snprintf(text, sizeof text,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return text;
}

std::string random_suffix() {
  static const bool ready = sodium_init() >= 0;
  if (!ready) throw std::runtime_error("libsodium could not be initialised");
  std::array<std::uint8_t, 8> b{};
  randombytes_buf(b.data(), b.size());
  char text[17];
  for (std::size_t i = 0; i < b.size(); ++i) std::snprintf(text + 2 * i, 3, "%02x", b[i]);
  return text;
}

}  // namespace conductor
