// Controller: an operator's connection to a running server — what conductorctl uses, and what
// a pipeline uses to steer a server in another process. Owns one DEALER socket; not
// thread-safe (one Controller per thread). Commands and reply bodies: docs/protocol.md.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

namespace conductor {

class Controller {
 public:
  // `server` as "host:port" or "tcp://host:port". With `server_key` (the server's CURVE public
  // key) the connection is encrypted and authenticated with the operator key pair in
  // `key_file` (default: default_operator_key_file(), created when missing), whose public key
  // the server must authorize. Throws Error(kArgument) when the address or key is malformed.
  explicit Controller(const std::string& server,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10),
                      const std::string& server_key = {}, const std::filesystem::path& key_file = {});
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Runs one command and returns its reply body (a JSON document). Throws Error(kArgument)
  // carrying the server's refusal, TransportError when no reply came within the timeout.
  std::string call(const std::string& command, const std::map<std::string, std::string>& args = {});

  // Packs `folder` (with its version.xml) and uploads it as the local version `name`
  // (default: the folder's name). Throws what call() throws, PackageError for a folder
  // that cannot be packed.
  std::string add_version(const std::filesystem::path& folder, const std::string& name = {});

  // Starts a prediction over `csv_rows` (at most 1 MiB) with the "predict" arguments in
  // `args` (version, top, by, order) and waits up to `wait` for the ensemble. Returns the
  // final "prediction" body; throws TransportError when it is not complete in time.
  std::string predict(const std::string& csv_rows, std::map<std::string, std::string> args,
                      std::chrono::milliseconds wait);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace conductor
