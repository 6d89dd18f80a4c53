// Client: a worker that connects to a server, takes work items (one per slot: several at once
// when it has several slots), runs their commands and sends the resulting files back. Owns its
// DEALER socket (network thread) and one job thread per running item. Non-copyable; the destructor stops and joins. stop() is thread-safe
// and async-signal-safe; run() or start() is called once.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace conductor {

struct ClientOptions {
  std::string server;                   // "host:port" or "tcp://host:port"
  std::filesystem::path workdir;        // cache, working folder, outbox; one client per folder
  std::string host_name;                // how the server names this client (default: host name)
  std::string os = "ubuntu";            // CONDUCTOR_OS
  std::string processing_unit = "cpu";  // CONDUCTOR_TYPE: cpu | gpu
  // Items run at once, each in its own slot (own working folder, own job). 0: one on a CPU
  // client, one per GPU on a GPU client; a GPU client takes no other number.
  int slots = 0;
  // A GPU client's GPUs, as CUDA_VISIBLE_DEVICES names them ("0", "1", or UUIDs): slot i runs
  // its commands with CUDA_VISIBLE_DEVICES=gpus[i] and, unless the client's environment has
  // one, CUDA_DEVICE_ORDER=PCI_BUS_ID (indexes in nvidia-smi's order). Empty: detect_gpus(); when
  // that finds none either, one slot whose commands see the machine's GPUs as they are (the
  // original's way). A CPU client has none.
  std::vector<std::string> gpus;
  std::string container_version = "dev";  // CONDUCTOR_VERSION
  // Until the server's WELCOME states its own values.
  std::chrono::milliseconds heartbeat_interval{1000};
  int liveness = 5;
  bool log_to_stdout = true;
  // How the log and the commands' output are printed (with log_to_stdout): kPlain, line by
  // line; kAuto, the same lines plus a progress bar per item, redrawn in place, when stdout is
  // a terminal. kPlain by default: a program that embeds clients owns its terminal.
  enum class Display { kPlain, kAuto };
  Display display = Display::kPlain;
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
  // Bytes kept free on the working folder's file system: a package download, or unpacking a
  // package into an item's work folder, that would leave less fails its item, naming the
  // reserve, and the server hands the item out again. 0: not checked (a full disk still fails
  // the item, at the first write that finds it full).
  std::uint64_t min_free_bytes = std::uint64_t{256} << 20;
};

// Defaults from the environment: CONDUCTOR_HOST, CONDUCTOR_OS, CONDUCTOR_TYPE,
// CONDUCTOR_VERSION, CONDUCTOR_SERVER_KEY, the machine's host name, and a working folder of --workdir, else
// $CONDUCTOR_CLIENT_WORKDIR, else ./client-workdir when RUNTIMEENV=docker, else
// $HOME/ConductorClient.
ClientOptions client_options_from_environment();

// The GPUs this machine offers a GPU client: $CUDA_VISIBLE_DEVICES split at commas when it is
// set and not empty, else the indexes `nvidia-smi -L` lists (for a GPU split into MIG
// instances, the instances' MIG-... UUIDs instead), else none (no nvidia-smi, or it failed).
std::vector<std::string> detect_gpus();

// "0,1, 3" -> {"0", "1", "3"}: the GPUs of a CUDA_VISIBLE_DEVICES value or of --gpus. Blanks
// around entries are dropped and empty entries skipped; entries may be indexes or UUIDs.
std::vector<std::string> split_gpu_list(std::string_view text);

class Client {
 public:
  // Validates the options and takes the working folder (locked against a second client).
  // Throws Error(kArgument) for a malformed server address, a processing unit other than cpu
  // or gpu, slots outside 1..64, a GPU client with a slot count other than its GPU count (or
  // with a GPU named twice), GPUs given to a CPU client; IoError when the folder is
  // unusable or already in use.
  explicit Client(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Works on the calling thread until stop(): connects, reconnects whenever the server is
  // away, and takes an item whenever a slot is free.
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
  // How many items it runs at once, and (a GPU client) the GPU of each slot.
  int slots() const noexcept;
  std::vector<std::string> gpus() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  std::thread thread_;
};

}  // namespace conductor
