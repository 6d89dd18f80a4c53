// CurveZMQ keys and the ZAP allow-list (docs/protocol.md, "Security"). Keys are Z85 text
// (40 characters). A key file holds "public <key>" and "secret <key>" lines and is created
// with mode 0600; an allow-list holds one public key per line ('#' starts a comment, text
// after the key is a free label).
#pragma once

#include <zmq.hpp>

#include <chrono>
#include <filesystem>
#include <optional>
#include <set>
#include <string>

namespace conductor {

struct KeyPair {
  std::string public_key;  // Z85
  std::string secret_key;  // Z85
};

// Reads `file`, or creates it with a fresh pair (mode 0600, atomically) when it is missing.
// Throws IoError, or ConfigError naming the file and line when it is malformed, or naming the
// file and its mode when every user may read or write it (owner and group may: a Kubernetes
// Secret under fsGroup is 0440 or 0640).
KeyPair load_or_create_keypair(const std::filesystem::path& file);

bool is_z85_key(const std::string& text);

// Loads an allow-list. Throws ConfigError "<file>:<line>: ..." for a malformed key or a file
// that others than its owner may write.
std::set<std::string> load_authorized_keys(const std::filesystem::path& file);

// The ZAP handler of one context: a REP socket on inproc://zeromq.zap.01 that accepts CURVE
// handshakes from allowed keys only and names each connection's key as its User-Id. The
// allow-list file is re-read when it changes, so a revocation needs no restart. Owned and
// served by the thread that owns the CURVE server socket; bind it before that socket binds.
class ZapHandler {
 public:
  // Throws TransportError when the handler cannot be bound, ConfigError for a bad list.
  ZapHandler(zmq::context_t& context, std::filesystem::path authorized_keys);

  zmq::socket_t& socket() { return socket_; }
  // Answers every waiting handshake request. Returns the number refused.
  int serve();
  // Re-reads the allow-list when its modification time changed. Returns true when it did.
  bool refresh();
  bool is_allowed(const std::string& public_key) const { return allowed_.contains(public_key); }
  const std::set<std::string>& allowed() const { return allowed_; }

 private:
  zmq::socket_t socket_;
  std::filesystem::path file_;
  // The modification time the list was read at; nullopt before the first read. A missing
  // file counts as the time point zero, so it is read once, not every second.
  std::optional<std::filesystem::file_time_type> loaded_at_;
  std::set<std::string> allowed_;
};

// The User-Id libzmq attached to a received frame (the client's Z85 key under CURVE), or
// empty when the connection has none.
std::string user_id_of(zmq::message_t& frame);

}  // namespace conductor
