#include "transport.hpp"

#include <doctest/doctest.h>

#include <cstdlib>

#include "conductor/error.hpp"
#include "conductor/server.hpp"
#include "protocol.hpp"

using namespace conductor;

TEST_CASE("server addresses are accepted as host:port or tcp://host:port") {
  CHECK(transport::normalize_endpoint("example.org:8080") == "tcp://example.org:8080");
  CHECK(transport::normalize_endpoint("tcp://10.0.0.5:9000") == "tcp://10.0.0.5:9000");
  CHECK(transport::normalize_endpoint("127.0.0.1:1") == "tcp://127.0.0.1:1");
}

TEST_CASE("malformed server addresses are refused with the address in the message") {
  for (const char* bad : {"", "example.org", "example.org:", ":8080", "tcp://", "http://x:80",
                          "host:80a", "ipc:///tmp/x"}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH_AS(transport::normalize_endpoint(bad),
                         doctest::Contains("expected host:port or tcp://host:port"), Error);
  }
}

TEST_CASE("a message with too many frames is drained without desynchronising the socket") {
  zmq::context_t context;
  zmq::socket_t router(context, zmq::socket_type::router);
  std::string endpoint = transport::bind_router(router, "tcp://127.0.0.1:*");
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  transport::connect_dealer(dealer, endpoint);
  for (int i = 0; i < 10; ++i) dealer.send(zmq::str_buffer("x"), zmq::send_flags::sndmore);
  dealer.send(zmq::str_buffer("last"), zmq::send_flags::none);
  auto good = protocol::encode(protocol::MessageType::kReady, protocol::Empty{});
  REQUIRE(transport::send(dealer, good));

  std::optional<transport::Received> first;
  for (int tries = 0; tries < 200 && !first; ++tries) {
    zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0}};
    transport::poll(items, 1, std::chrono::milliseconds(20));
    first = transport::receive(router, protocol::kMaxFrames + 1);
  }
  REQUIRE(first);
  CHECK(first->oversized);
  CHECK(first->frames.size() == protocol::kMaxFrames + 1);

  std::optional<transport::Received> second;
  for (int tries = 0; tries < 200 && !second; ++tries) {
    zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0}};
    transport::poll(items, 1, std::chrono::milliseconds(20));
    second = transport::receive(router, protocol::kMaxFrames + 1);
  }
  REQUIRE(second);
  CHECK_FALSE(second->oversized);
  CHECK(protocol::decode(second->frames, 1).type() == protocol::MessageType::kReady);
}

TEST_CASE("the server's working folder follows --workdir, CONDUCTOR_WORKDIR, RUNTIMEENV, HOME") {
  const char* home = std::getenv("HOME");
  const std::string saved_home = home ? home : "";
  ::setenv("HOME", "/home/someone", 1);
  ::unsetenv("CONDUCTOR_WORKDIR");
  ::unsetenv("RUNTIMEENV");
  CHECK(default_server_workdir() == "/home/someone/Conductor");
  ::setenv("RUNTIMEENV", "docker", 1);
  CHECK(default_server_workdir() == std::filesystem::current_path() / "workdir");
  ::setenv("CONDUCTOR_WORKDIR", "/srv/conductor", 1);
  CHECK(default_server_workdir() == "/srv/conductor");
  CHECK(default_server_workdir("/explicit") == "/explicit");
  ::unsetenv("CONDUCTOR_WORKDIR");
  ::unsetenv("RUNTIMEENV");
  ::setenv("HOME", saved_home.c_str(), 1);
}
