#include "transport.hpp"

#include <cerrno>

#include "conductor/error.hpp"
#include "protocol.hpp"

namespace conductor::transport {

std::string bind_router(zmq::socket_t& socket, const std::string& endpoint,
                        const std::string& curve_secret_key) {
  try {
    if (!curve_secret_key.empty()) {
      socket.set(zmq::sockopt::curve_server, 1);
      socket.set(zmq::sockopt::curve_secretkey, curve_secret_key);
      socket.set(zmq::sockopt::zap_domain, "conductor");
    }
    socket.set(zmq::sockopt::router_mandatory, 1);
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::maxmsgsize, protocol::kMaxFrameBytes);
    // Per client, in messages: what a client that stops reading (or floods) can make the
    // server hold. The most a well-behaved client has in flight is a window of 8 chunks (1 MiB
    // each at most: FETCH is refused beyond WELCOME's chunk_size) per download and 8 PULLs or
    // UPLOADs per upload for each of up to 64 slots (1,024), plus an ASSIGN, an ACK and a
    // heartbeat or two per slot: 1,280 covers that, and bounds one client's queue near 1.25 GiB
    // (10,000 messages of up to 4 MiB before, 40 GiB). A message beyond it is refused
    // (ROUTER_MANDATORY), which the protocol treats as lost.
    socket.set(zmq::sockopt::sndhwm, 1280);
    socket.set(zmq::sockopt::rcvhwm, 1280);
    // No ZMTP heartbeats from this side: CWP/1's own heartbeats judge every client, and each
    // connection's PING timers cost libzmq's I/O thread a linear walk of its timer map per
    // message (13 % of it with 2,000 idle clients). Clients still PING the server (libzmq
    // answers without timers of its own); a peer that vanished without closing its connection
    // is found by the kernel's TCP keepalive instead: 30 s idle, then 3 probes 10 s apart.
    socket.set(zmq::sockopt::tcp_keepalive, 1);
    socket.set(zmq::sockopt::tcp_keepalive_idle, 30);
    socket.set(zmq::sockopt::tcp_keepalive_intvl, 10);
    socket.set(zmq::sockopt::tcp_keepalive_cnt, 3);
    // Keepalive probes wait while sent data is unacknowledged: a peer that vanished in the
    // middle of a transfer is dropped after 60 s of unacknowledged data (TCP_USER_TIMEOUT).
    socket.set(zmq::sockopt::tcp_maxrt, 60000);
    socket.set(zmq::sockopt::handshake_ivl, 10000);
    socket.bind(endpoint);
    return socket.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    throw TransportError("cannot bind '" + endpoint + "': " + e.what());
  }
}

void connect_dealer(zmq::socket_t& socket, const std::string& endpoint,
                    const CurveClientKeys& curve) {
  try {
    if (!curve.server_key.empty()) {
      socket.set(zmq::sockopt::curve_serverkey, curve.server_key);
      socket.set(zmq::sockopt::curve_publickey, curve.public_key);
      socket.set(zmq::sockopt::curve_secretkey, curve.secret_key);
    }
    // Not IMMEDIATE: HELLO must wait in the queue until the connection is up. A socket that
    // loses its server is replaced (Paranoid Pirate), so stale queues never outlive it.
    socket.set(zmq::sockopt::immediate, 0);
    socket.set(zmq::sockopt::linger, 200);
    socket.set(zmq::sockopt::maxmsgsize, protocol::kMaxFrameBytes);
    socket.set(zmq::sockopt::reconnect_ivl, 200);
    socket.set(zmq::sockopt::reconnect_ivl_max, 5000);
    socket.set(zmq::sockopt::heartbeat_ivl, 5000);
    socket.set(zmq::sockopt::heartbeat_timeout, 15000);
    socket.connect(endpoint);
  } catch (const zmq::error_t& e) {
    throw TransportError("cannot connect to '" + endpoint + "': " + e.what());
  }
}

std::optional<Received> receive(zmq::socket_t& socket, std::size_t max_frames) {
  Received received;
  bool more = true;
  bool first = true;
  while (more) {
    zmq::message_t frame;
    auto result = socket.recv(frame, first ? zmq::recv_flags::dontwait : zmq::recv_flags::none);
    if (!result) return std::nullopt;  // only possible for the first frame
    first = false;
    more = frame.more();
    if (received.frames.size() < max_frames) {
      received.frames.push_back(std::move(frame));
    } else {
      received.oversized = true;  // keep draining: multipart delivery is atomic, so this ends
    }
  }
  return received;
}

bool send(zmq::socket_t& socket, std::vector<zmq::message_t>& frames) {
  try {
    for (std::size_t i = 0; i < frames.size(); ++i) {
      auto flags = zmq::send_flags::dontwait;
      if (i + 1 < frames.size()) flags = flags | zmq::send_flags::sndmore;
      if (!socket.send(frames[i], flags)) return false;
    }
    return true;
  } catch (const zmq::error_t&) {
    return false;
  }
}

bool poll(zmq::pollitem_t* items, std::size_t count, std::chrono::milliseconds timeout) {
  try {
    zmq::poll(items, count, timeout);
    return true;
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return false;
    throw;
  }
}

bool is_local_endpoint(const std::string& endpoint) {
  if (endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://")) return true;
  if (!endpoint.starts_with("tcp://")) return false;
  std::string host = endpoint.substr(6, endpoint.rfind(':') - 6);
  return host == "127.0.0.1" || host == "localhost" || host == "[::1]" || host == "::1" ||
         host.starts_with("127.");
}

std::string normalize_endpoint(const std::string& address) {
  std::string rest = address;
  if (rest.starts_with("tcp://")) rest = rest.substr(6);
  auto colon = rest.rfind(':');
  if (rest.empty() || colon == std::string::npos || colon == 0 || colon + 1 == rest.size() ||
      rest.find_first_not_of("0123456789", colon + 1) != std::string::npos ||
      rest.find('/') != std::string::npos) {
    throw Error(ErrorCode::kArgument, "server address '" + address +
                                          "' refused: expected host:port or tcp://host:port");
  }
  return "tcp://" + rest;
}

}  // namespace conductor::transport
