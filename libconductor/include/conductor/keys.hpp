// CurveZMQ key files of servers, clients and operators (docs/protocol.md, "Security").
// A key file holds a public and a secret Z85 key and is created with mode 0600 on first use;
// a server's authorized_keys lists the public keys of the clients and operators it admits.
#pragma once

#include <filesystem>
#include <string>

namespace conductor {

// The public key in `key_file`, creating a fresh pair there when the file is missing.
// Throws IoError, or ConfigError naming the file when it is malformed or not private.
std::string public_key_of(const std::filesystem::path& key_file);

std::filesystem::path default_server_key_file(const std::filesystem::path& server_workdir);  // config/server.key
std::filesystem::path default_authorized_keys(const std::filesystem::path& server_workdir);  // config/authorized_keys
std::filesystem::path default_client_key_file(const std::filesystem::path& client_workdir);  // client.key
// $CONDUCTOR_KEY_FILE, else $HOME/.config/conductor/operator.key: conductorctl's and embedding
// programs' key.
std::filesystem::path default_operator_key_file();

}  // namespace conductor
