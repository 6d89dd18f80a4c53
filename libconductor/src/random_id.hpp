// Random identifiers: RFC 4122 version-4 UUIDs from libsodium's CSPRNG (work item ids, client
// ids, session ids). Thread-safe.
#pragma once

#include <string>

namespace conductor {

std::string random_uuid();
// 16 random lower-case hex digits: a temporary file's suffix.
std::string random_suffix();

}  // namespace conductor
