// Client: a worker that connects to a server, takes one work item at a time, runs its
// commands and sends the resulting files back. Owns its DEALER socket (network thread) and
// one job thread per item. Non-copyable; the destructor stops and joins. stop() is thread-safe
// and async-signal-safe; run() or start() is called once.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

namespace conductor {

struct ClientOptions {
  std::string server;                   // "host:port" or "tcp://host:port"
  std::filesystem::path workdir;        // cache, working folder, outbox; one client per folder
  std::string host_name;                // how the server names this client (default: host name)
  std::string os = "ubuntu";            // CONDUCTOR_OS
  std::string processing_unit = "cpu";  // CONDUCTOR_TYPE: cpu | gpu
  std::string container_version = "dev";  // CONDUCTOR_VERSION
  // Until the server's WELCOME states its own values.
  std::chrono::milliseconds heartbeat_interval{1000};
  int liveness = 5;
  bool log_to_stdout = true;
  // The server's CURVE public key (Z85, 40 characters; $CONDUCTOR_SERVER_KEY). Set it to talk
  // to a server that runs with CURVE; empty means plain TCP.
  std::string server_key;
  // This client's key pair; default <workdir>/client.key, created (mode 0600) when missing.
  // Its public key must be in the server's authorized_keys.
  std::filesystem::path key_file;
  // Bytes of package archives kept in <workdir>/cache, so that later items of a version fetch
  // nothing; the least recently used go first. The running item's archives always stay, even
  // when they alone are larger.
  std::uint64_t cache_bytes = 4ull << 30;
};

// Defaults from the environment: CONDUCTOR_HOST, CONDUCTOR_OS, CONDUCTOR_TYPE,
// CONDUCTOR_VERSION, CONDUCTOR_SERVER_KEY, the machine's host name, and a working folder of --workdir, else
// $CONDUCTOR_CLIENT_WORKDIR, else ./client-workdir when RUNTIMEENV=docker, else
// $HOME/ConductorClient.
ClientOptions client_options_from_environment();

class Client {
 public:
  // Validates the options and takes the working folder (locked against a second client).
  // Throws Error(kArgument) for a malformed server address, IoError when the folder is
  // unusable or already in use.
  explicit Client(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Works on the calling thread until stop(): connects, reconnects whenever the server is
  // away, and takes items one at a time.
  void run();
  void start();  // run() on a background thread owned by this object
  // Stops the running item's processes and leaves. Thread-safe, async-signal-safe.
  void stop() noexcept;

  // Items whose result the server acknowledged as stored.
  std::uint64_t completed_items() const noexcept;
  // Package bytes received from the server since construction; an item whose archives are
  // cached adds nothing.
  std::uint64_t payload_bytes_fetched() const noexcept;
  // Result bytes sent to the server since construction (a chunk sent again counts again).
  std::uint64_t result_bytes_sent() const noexcept;
  // This client's CURVE public key (Z85): what the server's authorized_keys must list.
  std::string public_key() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  std::thread thread_;
};

}  // namespace conductor
