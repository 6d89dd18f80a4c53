#include "protocol.hpp"

#include <cstring>

namespace conductor::protocol {

const char* to_string(MessageType type) noexcept {
  switch (type) {
    case MessageType::kHello: return "HELLO";
    case MessageType::kHeartbeat: return "HEARTBEAT";
    case MessageType::kReady: return "READY";
    case MessageType::kFetch: return "FETCH";
    case MessageType::kProgress: return "PROGRESS";
    case MessageType::kResult: return "RESULT";
    case MessageType::kUpload: return "UPLOAD";
    case MessageType::kFailed: return "FAILED";
    case MessageType::kBye: return "BYE";
    case MessageType::kControl: return "CONTROL";
    case MessageType::kWelcome: return "WELCOME";
    case MessageType::kAssign: return "ASSIGN";
    case MessageType::kChunk: return "CHUNK";
    case MessageType::kPull: return "PULL";
    case MessageType::kAck: return "ACK";
    case MessageType::kCancel: return "CANCEL";
    case MessageType::kError: return "ERROR";
    case MessageType::kResync: return "RESYNC";
    case MessageType::kControlReply: return "CONTROL_REPLY";
  }
  return "UNKNOWN";
}

bool is_known(std::uint8_t type) noexcept {
  return std::strcmp(to_string(static_cast<MessageType>(type)), "UNKNOWN") != 0;
}

namespace {

enum class Payload { kNone, kRequired, kOptional };

Payload payload_of(MessageType type) {
  if (type == MessageType::kChunk || type == MessageType::kUpload) return Payload::kRequired;
  // A small result travels inline with its RESULT when the server said it takes that, small
  // inputs with their ASSIGN when the client did.
  if (type == MessageType::kResult || type == MessageType::kAssign) return Payload::kOptional;
  return Payload::kNone;
}

const msgpack::unpack_limit kLimits(kMaxArrayItems, kMaxMapItems, kMaxStringBytes,
                                    kMaxStringBytes, 0, kMaxDepth);

}  // namespace

zmq::message_t signature(MessageType type) {
  const std::uint8_t bytes[kSignatureSize] = {'C', 'W', 'P', kMajorVersion,
                                              static_cast<std::uint8_t>(type)};
  return zmq::message_t(bytes, sizeof bytes);
}

Message decode(std::vector<zmq::message_t>& frames, std::size_t first) {
  if (frames.size() <= first + 1) {
    throw ProtocolError("message refused: " + std::to_string(frames.size() - first) +
                        " frame(s), at least signature and header are required");
  }
  const std::size_t count = frames.size() - first;
  if (count > kMaxFrames) {
    throw ProtocolError("message refused: " + std::to_string(count) + " frames, at most " +
                        std::to_string(kMaxFrames) + " allowed");
  }
  const auto& sig = frames[first];
  const auto* s = static_cast<const std::uint8_t*>(sig.data());
  if (sig.size() != kSignatureSize || s[0] != 'C' || s[1] != 'W' || s[2] != 'P') {
    throw ProtocolError("message refused: signature frame is not CWP");
  }
  if (s[3] != kMajorVersion) {
    throw ProtocolError("message refused: protocol major version " + std::to_string(s[3]) +
                        " is not supported (this peer speaks " + std::to_string(kMajorVersion) +
                        ")");
  }
  if (!is_known(s[4])) {
    throw ProtocolError("message refused: unknown message type " + std::to_string(s[4]));
  }
  Message message;
  message.type_ = static_cast<MessageType>(s[4]);
  const Payload rule = payload_of(message.type_);
  const bool wants_payload = count == 3;
  if ((rule == Payload::kRequired && !wants_payload) || (rule == Payload::kNone && wants_payload)) {
    throw ProtocolError(
        std::string("message refused: ") + to_string(message.type_) +
        (rule == Payload::kRequired ? " needs a payload frame" : " takes no payload frame"));
  }
  const auto& head = frames[first + 1];
  if (head.size() > kMaxHeaderBytes) {
    throw ProtocolError(std::string("message refused: ") + to_string(message.type_) +
                        " header of " + std::to_string(head.size()) + " bytes exceeds " +
                        std::to_string(kMaxHeaderBytes));
  }
  try {
    std::size_t offset = 0;
    message.header_ = msgpack::unpack(static_cast<const char*>(head.data()), head.size(), offset,
                                      nullptr, nullptr, kLimits);
    if (offset != head.size()) {
      throw ProtocolError("trailing bytes after the msgpack header");
    }
  } catch (const ProtocolError& e) {
    throw ProtocolError(std::string("message refused: ") + to_string(message.type_) + ": " +
                        e.what());
  } catch (const std::exception& e) {
    throw ProtocolError(std::string("message refused: ") + to_string(message.type_) +
                        " header is not valid msgpack within limits: " + e.what());
  }
  if (message.header_.get().type != msgpack::type::MAP) {
    throw ProtocolError(std::string("message refused: ") + to_string(message.type_) +
                        " header is not a msgpack map");
  }
  if (wants_payload) {
    if (frames[first + 2].size() > kMaxPayloadBytes) {
      throw ProtocolError("message refused: payload above " + std::to_string(kMaxPayloadBytes) +
                          " bytes");
    }
    message.payload_ = std::move(frames[first + 2]);
  }
  return message;
}

}  // namespace conductor::protocol
