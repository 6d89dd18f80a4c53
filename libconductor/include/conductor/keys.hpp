// CurveZMQ key files of servers, clients and operators (docs/protocol.md, "Security").
// A key file holds a public and a secret Z85 key and is created with mode 0600 on first use;
// its owner and group may read it (a Kubernetes Secret under fsGroup), every user may not.
// A server's authorized_keys lists the public keys of the clients and operators it admits.
// The apps take their keys from flags, else from the environment (resolve_server_key,
// resolve_key_pair). Functions only; thread-safe as far as the files do not change.
#pragma once

#include <filesystem>
#include <string>

namespace conductor {

// The public key in `key_file`, creating a fresh pair there when the file is missing.
// Throws IoError, or ConfigError naming the file when it is malformed, or naming the file and
// its mode when every user may read or write it.
std::string public_key_of(const std::filesystem::path& key_file);

// The server's public key from a file that holds it as the first word of its first line that
// is neither blank nor a '#' comment (conductor-keys' server.pub, a mounted ConfigMap).
// Throws IoError when the file cannot be read, ConfigError "<file>:<line>: ..." when that
// word is no 40-character Z85 key, or "<file>: ... holds no key".
std::string read_server_key_file(const std::filesystem::path& file);

// What an app was given on its command line for its keys; empty: not given.
struct KeyFlags {
  std::string server_key;                 // --server-key KEY
  std::filesystem::path server_key_file;  // --server-key-file FILE
  std::filesystem::path key_file;         // --key-file FILE: a key pair, created when missing
  std::filesystem::path key_pair;         // --key-pair FILE: an existing key pair
};

// The server's public key, the first of: flags.server_key, the key in flags.server_key_file,
// $CONDUCTOR_SERVER_KEY, the key in the file $CONDUCTOR_SERVER_KEY_FILE; "" when none (plain
// TCP). Throws as read_server_key_file() for the file it reads, naming the flag or variable.
std::string resolve_server_key(const KeyFlags& flags);

// The key pair file, the first of: flags.key_file, flags.key_pair, $CONDUCTOR_KEY_PAIR_FILE;
// empty when none (the caller's default: default_client_key_file() and so on). A key pair
// named by --key-pair or $CONDUCTOR_KEY_PAIR_FILE is never created: throws IoError naming the
// flag or variable and the file when it does not exist (a Secret that was not mounted) or
// cannot be read.
std::filesystem::path resolve_key_pair(const KeyFlags& flags);

std::filesystem::path default_server_key_file(const std::filesystem::path& server_workdir);  // config/server.key
std::filesystem::path default_authorized_keys(const std::filesystem::path& server_workdir);  // config/authorized_keys
std::filesystem::path default_client_key_file(const std::filesystem::path& client_workdir);  // client.key
// $CONDUCTOR_KEY_FILE, else $HOME/.config/conductor/operator.key: conductorctl's and embedding
// programs' key.
std::filesystem::path default_operator_key_file();

}  // namespace conductor
