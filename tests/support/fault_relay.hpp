// FaultRelay: a test-only ZeroMQ relay between conductor-clients and a server that loses,
// repeats, holds back and reorders messages and cuts links on demand, so that tests can show
// the protocol surviving a bad network. Owns its sockets and one forwarding thread (start()
// starts it; stop() and the destructor join it). Every public method is thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace conductor::test {

// Probabilities are per message and per direction, in [0, 1].
struct FaultOptions {
  double drop = 0.0;       // the message is lost
  double duplicate = 0.0;  // the message arrives twice, back to back
  double delay = 0.0;      // the message, and what follows it on its link, waits `delay_for`
  std::chrono::milliseconds delay_for{50};
  // The message changes places with the next one on its link, if one follows within 250 ms
  // (else it goes on alone, that late).
  double reorder = 0.0;
  std::uint64_t seed = 1;  // of the relay's random numbers; used by the constructor only
};

enum class Direction { kToServer, kToClient };

// What the relay did so far; every message counts once in `forwarded` or in one of the losses.
struct RelayCounters {
  std::uint64_t forwarded = 0;  // messages passed on (a duplicate counts once more)
  std::uint64_t dropped = 0;    // lost to FaultOptions::drop
  std::uint64_t duplicated = 0;
  std::uint64_t delayed = 0;
  std::uint64_t reordered = 0;
  std::uint64_t lost_to_cuts = 0;  // arrived on a cut link, or were waiting on it when it was cut
  std::uint64_t cuts = 0;          // links cut, by cut(), cut_all() or a bulk trigger
  std::uint64_t bulk_cuts = 0;     // links cut by a bulk trigger
  std::uint64_t links = 0;         // client connections seen
};

class FaultRelay {
 public:
  // Binds a ROUTER on tcp://127.0.0.1:* for the clients. Each client connection (routing id)
  // gets a DEALER of its own to `server`, so the server sees one connection per client
  // connection, as without the relay. Nothing is forwarded before start().
  // Throws TransportError when the relay cannot bind.
  FaultRelay(std::string server, FaultOptions options);
  ~FaultRelay();
  FaultRelay(const FaultRelay&) = delete;
  FaultRelay& operator=(const FaultRelay&) = delete;

  // tcp://127.0.0.1:<port>: where clients connect instead of the server.
  const std::string& endpoint() const noexcept;

  // Starts the forwarding thread; does nothing while it runs.
  void start();
  // Stops and joins the forwarding thread; does nothing when it is not running. Messages held
  // back at that moment are lost. Never throws.
  void stop() noexcept;

  // Replaces the probabilities from the next message on (the random sequence goes on).
  void set_faults(const FaultOptions& options);

  // A network cut: closes the server-side connection of every link whose client named itself
  // `client` (the `host` of its last HELLO) and loses everything from and to those links for
  // `duration`, including what was held back. Afterwards the client's next message opens a new
  // connection to the server, which therefore sees a new peer.
  void cut(const std::string& client, std::chrono::milliseconds duration);
  void cut_all(std::chrono::milliseconds duration);

  // A cut in the middle of a bulk transfer: once `skip` messages of at least `min_bytes` (all
  // frames together) went `direction`, the next such message cuts its link for `duration`
  // and is lost. One-shot; several triggers may be armed and fire in the order armed.
  void cut_on_bulk(Direction direction, std::size_t min_bytes, int skip,
                   std::chrono::milliseconds duration);
  // How many armed bulk triggers have not fired yet.
  int armed_bulk_cuts() const;

  RelayCounters counters() const;
  // The names clients gave in their HELLOs, in the order first seen.
  std::vector<std::string> clients() const;
  // The last error the forwarding thread met (it keeps forwarding); empty if none.
  std::string failure() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace conductor::test
