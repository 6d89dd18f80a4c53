#include "curve.hpp"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "conductor/error.hpp"
#include "conductor/keys.hpp"
#include "file_io.hpp"
#include "random_id.hpp"

namespace conductor {

namespace fs = std::filesystem;

bool is_z85_key(const std::string& text) {
  static const std::string kZ85 =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
  return text.size() == 40 && text.find_first_not_of(kZ85) == std::string::npos;
}

KeyPair load_or_create_keypair(const fs::path& file) {
  if (!fs::exists(file)) {
    KeyPair pair;
    char public_key[41] = {};
    char secret_key[41] = {};
    if (zmq_curve_keypair(public_key, secret_key) != 0) {
      throw IoError("cannot generate a CURVE key pair: libzmq was built without CURVE");
    }
    pair.public_key = public_key;
    pair.secret_key = secret_key;
    std::error_code ec;
    fs::create_directories(file.parent_path(), ec);
    // Readable by the owner only from its first byte; whole, or not there, after a crash.
    replace_durably(file,
                    "# CurveZMQ key pair of this Conductor node. Keep the secret line secret.\n"
                    "public " +
                        pair.public_key + "\nsecret " + pair.secret_key + "\n",
                    0600);
    return pair;
  }
  // Owner and group may read it: Kubernetes mounts a Secret owned by root and readable
  // through the pod's fsGroup (0440, 0640). Every user of the machine may not.
  struct stat info{};
  if (::stat(file.c_str(), &info) == 0 && (info.st_mode & (S_IROTH | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(info.st_mode & 07777));
    std::error_code ec;
    const std::string link =
        fs::is_symlink(file, ec) ? " (a link to " + fs::canonical(file, ec).string() + ")" : "";
    const char* what = (info.st_mode & S_IROTH) && (info.st_mode & S_IWOTH) ? "read and write"
                       : (info.st_mode & S_IROTH)                           ? "read"
                                                                            : "write";
    throw ConfigError(file.string() + ":1: key file refused: mode " + mode + link +
                      " lets every user " + what +
                      " it (chmod o-rw it; owner and group may read it)");
  }
  std::ifstream in(file);
  if (!in) throw IoError("cannot read key file '" + file.string() + "'");
  KeyPair pair;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    std::istringstream words(line);
    std::string kind, key;
    words >> kind >> key;
    if (kind.empty() || kind[0] == '#') continue;
    if ((kind != "public" && kind != "secret") || !is_z85_key(key)) {
      throw ConfigError(file.string() + ":" + std::to_string(number) +
                        ": expected 'public <key>' or 'secret <key>' with a 40-character Z85 key");
    }
    (kind == "public" ? pair.public_key : pair.secret_key) = key;
  }
  if (pair.public_key.empty() || pair.secret_key.empty()) {
    throw ConfigError(file.string() + ":1: key file needs both a public and a secret line");
  }
  return pair;
}

std::set<std::string> load_authorized_keys(const fs::path& file) {
  // Whoever can write the list can let anyone in.
  struct stat info{};
  if (::stat(file.c_str(), &info) == 0 && (info.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    throw ConfigError(file.string() + ":1: allow-list refused: writable by others than its owner "
                      "(chmod go-w it)");
  }
  std::set<std::string> keys;
  std::ifstream in(file);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    std::istringstream words(line);
    std::string key;
    words >> key;
    if (key.empty() || key[0] == '#') continue;
    if (!is_z85_key(key)) {
      throw ConfigError(file.string() + ":" + std::to_string(number) +
                        ": '" + key.substr(0, 60) + "' is not a 40-character Z85 public key");
    }
    keys.insert(key);
  }
  return keys;
}

ZapHandler::ZapHandler(zmq::context_t& context, fs::path authorized_keys)
    : socket_(context, zmq::socket_type::rep), file_(std::move(authorized_keys)) {
  try {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    throw TransportError(std::string("cannot bind the ZAP handler: ") + e.what());
  }
  refresh();
}

bool ZapHandler::refresh() {
  std::error_code ec;
  auto stamp = fs::last_write_time(file_, ec);
  if (ec) stamp = {};
  if (loaded_at_ && stamp == *loaded_at_) return false;
  loaded_at_ = stamp;  // a broken list is reported once per change, not on every check
  allowed_ = fs::exists(file_) ? load_authorized_keys(file_) : std::set<std::string>{};
  return true;
}

int ZapHandler::serve() {
  int refused = 0;
  while (true) {
    std::vector<zmq::message_t> request;
    zmq::message_t frame;
    if (!socket_.recv(frame, zmq::recv_flags::dontwait)) return refused;
    request.push_back(std::move(frame));
    while (request.back().more()) {
      zmq::message_t next;
      (void)socket_.recv(next, zmq::recv_flags::none);
      request.push_back(std::move(next));
    }
    // RFC 27: version, request id, domain, address, identity, mechanism, credentials...
    std::string request_id = request.size() > 1 ? request[1].to_string() : "";
    std::string status = "400";
    std::string text = "key not allowed";
    std::string user;
    if (request.size() >= 7 && request[5].to_string() == "CURVE" && request[6].size() == 32) {
      char z85[41] = {};
      zmq_z85_encode(z85, static_cast<const std::uint8_t*>(request[6].data()), 32);
      if (allowed_.contains(z85)) {
        status = "200";
        text = "OK";
        user = z85;
      }
    }
    if (status != "200") ++refused;
    std::vector<std::string> reply = {"1.0", request_id, status, text, user, ""};
    for (std::size_t i = 0; i < reply.size(); ++i) {
      zmq::message_t part(reply[i].data(), reply[i].size());
      socket_.send(part, i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
}

std::string user_id_of(zmq::message_t& frame) {
  const char* value = zmq_msg_gets(frame.handle(), "User-Id");
  return value ? value : "";
}


// ---- public key-file API (keys.hpp) ---------------------------------------------------------

std::string public_key_of(const fs::path& key_file) { return load_or_create_keypair(key_file).public_key; }

fs::path default_server_key_file(const fs::path& server_workdir) {
  return server_workdir / "config" / "server.key";
}

fs::path default_authorized_keys(const fs::path& server_workdir) {
  return server_workdir / "config" / "authorized_keys";
}

fs::path default_client_key_file(const fs::path& client_workdir) { return client_workdir / "client.key"; }

fs::path default_operator_key_file() {
  if (const char* file = std::getenv("CONDUCTOR_KEY_FILE"); file && *file) return file;
  const char* home = std::getenv("HOME");
  return fs::path(home && *home ? home : ".") / ".config" / "conductor" / "operator.key";
}

}  // namespace conductor
