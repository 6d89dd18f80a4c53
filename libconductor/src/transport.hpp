// ZeroMQ plumbing shared by Server and Client: socket setup with the options from
// docs/protocol.md, bounded receives that never desynchronise, and non-blocking sends.
// Sockets are not thread-safe: each belongs to the one thread that created it.
#pragma once

#include <zmq.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace conductor::transport {

// ROUTER for the server: ROUTER_MANDATORY (errors instead of silent drops), LINGER 0,
// MAXMSGSIZE, ZMTP heartbeats as a TCP backstop. Binds `endpoint`; returns the bound endpoint
// (port resolved when the caller asked for port 0 or '*'). Throws TransportError.
// With `curve_secret_key` (Z85) the socket is a CURVE server whose handshakes the context's
// ZAP handler judges (domain "conductor"); bind that handler first.
std::string bind_router(zmq::socket_t& socket, const std::string& endpoint,
                        const std::string& curve_secret_key = {});

// DEALER for a client: queues until connected, short LINGER, fast reconnects,
// MAXMSGSIZE. Throws TransportError when the endpoint is malformed.
// With `curve` keys set, the connection is encrypted and authenticated against `server_key`.
struct CurveClientKeys {
  std::string server_key;  // Z85 public key of the server; empty: no CURVE
  std::string public_key;
  std::string secret_key;
};
void connect_dealer(zmq::socket_t& socket, const std::string& endpoint,
                    const CurveClientKeys& curve = {});

// Whether binding `endpoint` only exposes the socket to this machine (loopback, ipc, inproc).
bool is_local_endpoint(const std::string& endpoint);

// Receives one whole multipart message without blocking. At most `max_frames` frames are kept:
// a longer message is drained to its end and reported as `oversized` so the next receive starts
// on a message boundary. Returns nullopt when nothing is waiting.
struct Received {
  std::vector<zmq::message_t> frames;
  bool oversized = false;
};
std::optional<Received> receive(zmq::socket_t& socket, std::size_t max_frames);

// Sends all frames without blocking. Returns false when the peer is gone or its queue is full
// (ROUTER_MANDATORY: EHOSTUNREACH / EAGAIN); the caller treats that as a lost message.
bool send(zmq::socket_t& socket, std::vector<zmq::message_t>& frames);

// zmq::poll that treats EINTR (a signal arrived) as "nothing happened": returns false then.
bool poll(zmq::pollitem_t* items, std::size_t count, std::chrono::milliseconds timeout);

// "host:port" or "tcp://host:port" -> "tcp://host:port". Throws Error(kArgument) otherwise.
std::string normalize_endpoint(const std::string& address);

}  // namespace conductor::transport
