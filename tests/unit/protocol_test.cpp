#include "protocol.hpp"

#include <doctest/doctest.h>

#include <random>

using namespace conductor;
using namespace conductor::protocol;

namespace {

std::vector<zmq::message_t> frames_of(std::initializer_list<std::string> parts) {
  std::vector<zmq::message_t> frames;
  for (const auto& part : parts) frames.emplace_back(part.data(), part.size());
  return frames;
}

std::string bytes(const zmq::message_t& m) { return m.to_string(); }

}  // namespace

TEST_CASE("every header round-trips through encode and decode") {
  Assign assign;
  assign.item = "3f1c";
  assign.attempt = 2;
  assign.type = "training";
  assign.version = "v1";
  assign.commands = {{"/bin/bash", "-c \"python3 train.py\""}, {"/bin/true", ""}};
  assign.blob = std::string(64, 'a');
  assign.blob_size = 123456789012ull;
  assign.model_pattern = "*.h5";
  assign.timeout_ms = 302400000;
  auto frames = encode(MessageType::kAssign, assign);
  auto decoded = decode(frames).as<Assign>();
  CHECK(decoded.item == assign.item);
  CHECK(decoded.attempt == 2);
  CHECK(decoded.commands.size() == 2);
  CHECK(decoded.commands[0].arguments == "-c \"python3 train.py\"");
  CHECK(decoded.blob_size == assign.blob_size);
  CHECK(decoded.timeout_ms == assign.timeout_ms);
  CHECK(decoded.model.empty());
  CHECK(decoded.model_size == 0);
  assign.type = "prediction";
  assign.inputs = std::string(64, 'b');
  assign.inputs_size = 1024;
  assign.model = std::string(64, 'c');
  assign.model_size = 5ull << 30;
  frames = encode(MessageType::kAssign, assign);
  decoded = decode(frames).as<Assign>();
  CHECK(decoded.inputs == assign.inputs);
  CHECK(decoded.inputs_size == 1024);
  CHECK(decoded.model == assign.model);
  CHECK(decoded.model_size == assign.model_size);

  Hello hello{kMajorVersion, "client-1", "host", "ubuntu", "gpu", "dev", "item-9", "v1", 3, "training", 1, {}, {}};
  frames = encode(MessageType::kHello, hello);
  auto message = decode(frames);
  CHECK(message.type() == MessageType::kHello);
  auto back = message.as<Hello>();
  CHECK(back.client_id == "client-1");
  CHECK(back.type == "gpu");
  CHECK(back.running_item == "item-9");
  CHECK(back.running_attempt == 3);
  CHECK(back.running_type == "training");
}

TEST_CASE("HELLO lists every running item with its slot, and WELCOME, READY, ASSIGN name slots") {
  Hello hello;
  hello.client_id = "client-1";
  hello.type = "gpu";
  hello.slots = 3;
  hello.gpus = {"0", "1", "GPU-8f3a"};
  hello.running = {{"item-1", "v1", 0, "training", 0}, {"item-2", "v2", 4, "prediction", 2}};
  auto frames = encode(MessageType::kHello, hello);
  auto back = decode(frames).as<Hello>();
  CHECK(back.slots == 3);
  CHECK(back.gpus == std::vector<std::string>{"0", "1", "GPU-8f3a"});
  REQUIRE(back.running.size() == 2);
  CHECK(back.running[1].item == "item-2");
  CHECK(back.running[1].version == "v2");
  CHECK(back.running[1].attempt == 4);
  CHECK(back.running[1].type == "prediction");
  CHECK(back.running[1].slot == 2);

  Welcome welcome;
  welcome.slots = 3;
  frames = encode(MessageType::kWelcome, welcome);
  CHECK(decode(frames).as<Welcome>().slots == 3);
  frames = encode(MessageType::kReady, Ready{2});
  CHECK(decode(frames).as<Ready>().slot == 2);
  Assign assign;
  assign.slot = 1;
  frames = encode(MessageType::kAssign, assign);
  CHECK(decode(frames).as<Assign>().slot == 1);
  ErrorMessage error{4, "FETCH refused", false, "", std::string(64, 'b')};
  frames = encode(MessageType::kError, error);
  auto refused = decode(frames).as<ErrorMessage>();
  CHECK(refused.item.empty());
  CHECK(refused.blob == std::string(64, 'b'));
}

TEST_CASE("messages of peers from before slots read as one slot, slot 0 and no subject") {
  // What such a client sends: a HELLO with only the one-item fields, READY as an empty map.
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> packer(buffer);
  packer.pack_map(2);
  packer.pack(std::string("client_id"));
  packer.pack(std::string("old-client"));
  packer.pack(std::string("running_item"));
  packer.pack(std::string("item-9"));
  std::vector<zmq::message_t> frames;
  frames.push_back(signature(MessageType::kHello));
  frames.emplace_back(buffer.data(), buffer.size());
  auto hello = decode(frames).as<Hello>();
  CHECK(hello.slots == 1);
  CHECK(hello.gpus.empty());
  CHECK(hello.running.empty());
  CHECK(hello.running_item == "item-9");

  frames = encode(MessageType::kReady, Empty{});
  CHECK(decode(frames).as<Ready>().slot == 0);
  // And what such a server sends: WELCOME without slots (0: it fills one), ERROR without subject.
  frames = encode(MessageType::kWelcome, Empty{});
  CHECK(decode(frames).as<Welcome>().slots == 0);
  frames = encode(MessageType::kError, Empty{});
  auto error = decode(frames).as<ErrorMessage>();
  CHECK(error.item.empty());
  CHECK(error.blob.empty());
}

TEST_CASE("payload messages carry their bytes in a separate frame") {
  std::string data(1000, '\x7f');
  auto frames = encode(MessageType::kChunk, Chunk{"blob", 4096}, zmq::message_t(data.data(), data.size()));
  REQUIRE(frames.size() == 3);
  auto message = decode(frames);
  REQUIRE(message.payload());
  CHECK(message.payload()->to_string() == data);
  CHECK(message.as<Chunk>().offset == 4096);
}

TEST_CASE("the server decodes after the routing id frame") {
  auto frames = encode(MessageType::kReady, Empty{});
  frames.insert(frames.begin(), zmq::message_t(std::string("\0abcd", 5)));
  CHECK(decode(frames, 1).type() == MessageType::kReady);
}

TEST_CASE("missing header fields take defaults and unknown ones are ignored") {
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> packer(buffer);
  packer.pack_map(2);
  packer.pack(std::string("item"));
  packer.pack(std::string("x"));
  packer.pack(std::string("from_the_future"));
  packer.pack(42);
  std::vector<zmq::message_t> frames;
  frames.push_back(signature(MessageType::kFailed));
  frames.emplace_back(buffer.data(), buffer.size());
  auto failed = decode(frames).as<Failed>();
  CHECK(failed.item == "x");
  CHECK(failed.attempt == 0);
  CHECK(failed.reason.empty());
}

TEST_CASE("decode refuses malformed messages with a reason") {
  SUBCASE("too few frames") {
    auto frames = frames_of({"CWP\x01\x03"});
    CHECK_THROWS_WITH_AS(decode(frames), doctest::Contains("at least signature and header"), ProtocolError);
  }
  SUBCASE("bad signature") {
    auto frames = frames_of({"HTTP/", "x"});
    CHECK_THROWS_WITH_AS(decode(frames), doctest::Contains("not CWP"), ProtocolError);
  }
  SUBCASE("unsupported major version") {
    auto frames = frames_of({std::string("CWP\x02\x03", 5), "\x80"});
    CHECK_THROWS_WITH_AS(decode(frames), doctest::Contains("major version 2"), ProtocolError);
  }
  SUBCASE("unknown type") {
    auto frames = frames_of({std::string("CWP\x01\x7e", 5), "\x80"});
    CHECK_THROWS_WITH_AS(decode(frames), doctest::Contains("unknown message type 126"), ProtocolError);
  }
  SUBCASE("payload on a message that takes none") {
    auto frames = frames_of({std::string("CWP\x01\x03", 5), "\x80", "data"});
    CHECK_THROWS_WITH_AS(decode(frames), doctest::Contains("takes no payload"), ProtocolError);
  }
  SUBCASE("missing payload") {
    auto frames = frames_of({std::string("CWP\x01\x44", 5), "\x80"});
    CHECK_THROWS_WITH_AS(decode(frames), doctest::Contains("needs a payload"), ProtocolError);
  }
  SUBCASE("too many frames") {
    auto frames = frames_of({std::string("CWP\x01\x44", 5), "\x80", "a", "b"});
    CHECK_THROWS_WITH_AS(decode(frames), doctest::Contains("4 frames"), ProtocolError);
  }
  SUBCASE("header is not a map") {
    auto frames = frames_of({std::string("CWP\x01\x03", 5), "\x01"});
    CHECK_THROWS_WITH_AS(decode(frames), doctest::Contains("not a msgpack map"), ProtocolError);
  }
  SUBCASE("truncated header") {
    auto good = encode(MessageType::kHello, Hello{});
    std::string head = bytes(good[1]);
    auto frames = frames_of({bytes(good[0]), head.substr(0, head.size() / 2)});
    CHECK_THROWS_AS(decode(frames), ProtocolError);
  }
  SUBCASE("trailing bytes after the header") {
    auto frames = frames_of({std::string("CWP\x01\x03", 5), std::string("\x80\x80", 2)});
    CHECK_THROWS_WITH_AS(decode(frames), doctest::Contains("trailing bytes"), ProtocolError);
  }
  SUBCASE("a five-byte header that claims a huge array is refused, not allocated") {
    // 0xdd = array32 with 0xffffffff elements.
    auto frames = frames_of({std::string("CWP\x01\x05", 5), std::string("\xdd\xff\xff\xff\xff", 5)});
    CHECK_THROWS_AS(decode(frames), ProtocolError);
  }
  SUBCASE("a header with the wrong field types is refused at conversion") {
    msgpack::sbuffer buffer;
    msgpack::packer<msgpack::sbuffer> packer(buffer);
    packer.pack_map(1);
    packer.pack(std::string("attempt"));
    packer.pack(std::string("not a number"));
    std::vector<zmq::message_t> frames;
    frames.push_back(signature(MessageType::kFailed));
    frames.emplace_back(buffer.data(), buffer.size());
    auto message = decode(frames);
    CHECK_THROWS_AS(message.as<Failed>(), ProtocolError);
  }
}

TEST_CASE("random garbage never crashes the decoder") {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> len(0, 64);
  for (int round = 0; round < 20000; ++round) {
    std::string header(static_cast<std::size_t>(len(rng)), '\0');
    for (auto& c : header) c = static_cast<char>(byte(rng));
    auto frames = frames_of({std::string("CWP\x01", 4) + static_cast<char>(1 + round % 9), header});
    try {
      auto message = decode(frames);
      (void)message.as<Hello>();
      (void)message.as<Progress>();
    } catch (const ProtocolError&) {
    }
  }
  CHECK(true);
}

TEST_CASE("a RESULT may carry its archive as a payload frame, or go without one") {
  const conductor::protocol::ResultOffer offer{"0a1b", 2, 5, std::string(64, 'a'), 1.5, 3, 0.5};
  auto plain = encode(MessageType::kResult, offer);
  auto without = decode(plain);
  CHECK_FALSE(without.payload().has_value());
  CHECK(without.as<conductor::protocol::ResultOffer>().size == 5);
  auto framed = encode(MessageType::kResult, offer, zmq::message_t("bytes", 5));
  auto with = decode(framed);
  REQUIRE(with.payload().has_value());
  CHECK(with.payload()->to_string() == "bytes");
  CHECK(with.as<conductor::protocol::ResultOffer>().item == "0a1b");
}

TEST_CASE("WELCOME's inline_result_bytes reads 0 from a server that does not send it") {
  conductor::protocol::Welcome welcome;
  welcome.inline_result_bytes = 262144;
  auto frames = encode(MessageType::kWelcome, welcome);
  CHECK(decode(frames).as<conductor::protocol::Welcome>().inline_result_bytes == 262144);
  // A map without the key, as an older server writes it.
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> packer(buffer);
  packer.pack_map(2);
  packer.pack(std::string("session"));
  packer.pack(std::string("s"));
  packer.pack(std::string("slots"));
  packer.pack(2);
  std::vector<zmq::message_t> old;
  old.push_back(conductor::protocol::signature(MessageType::kWelcome));
  old.emplace_back(buffer.data(), buffer.size());
  const auto decoded = decode(old).as<conductor::protocol::Welcome>();
  CHECK(decoded.slots == 2);
  CHECK(decoded.inline_result_bytes == 0);
}

TEST_CASE("HELLO's model_archives and ASSIGN's model read as none from an older peer") {
  // Maps without the keys, as an older client and server write them.
  auto old_message = [](MessageType type, const std::string& key, const std::string& value) {
    msgpack::sbuffer buffer;
    msgpack::packer<msgpack::sbuffer> packer(buffer);
    packer.pack_map(1);
    packer.pack(key);
    packer.pack(value);
    std::vector<zmq::message_t> frames;
    frames.push_back(conductor::protocol::signature(type));
    frames.emplace_back(buffer.data(), buffer.size());
    return frames;
  };
  auto hello = old_message(MessageType::kHello, "client_id", "c-1");
  const auto old_hello = decode(hello).as<conductor::protocol::Hello>();
  CHECK(old_hello.client_id == "c-1");
  CHECK_FALSE(old_hello.model_archives);
  auto assign = old_message(MessageType::kAssign, "item", "0a1b");
  const auto old_assign = decode(assign).as<Assign>();
  CHECK(old_assign.item == "0a1b");
  CHECK(old_assign.model.empty());
  CHECK(old_assign.model_size == 0);

  conductor::protocol::Hello current;
  current.model_archives = true;
  auto frames = encode(MessageType::kHello, current);
  CHECK(decode(frames).as<conductor::protocol::Hello>().model_archives);
}
