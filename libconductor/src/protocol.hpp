// Wire format of the Conductor Work Protocol, version 1 (CWP/1). docs/protocol.md is the
// specification of everything here; change both together.
//
// Every message is one ZeroMQ multipart message: [signature][header][payload?]. On the server's
// ROUTER a routing-id frame comes first. Signature: "CWP", major version, message type (5 bytes).
// Header: a msgpack map with string keys (unknown keys ignored, missing keys take defaults).
// Payload: raw bytes, only in CHUNK and UPLOAD.
#pragma once

#include <msgpack.hpp>
#include <zmq.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "conductor/error.hpp"

namespace conductor::protocol {

inline constexpr std::uint8_t kMajorVersion = 1;
inline constexpr std::size_t kSignatureSize = 5;

// Limits every decoder applies. A header above kMaxHeaderBytes, a message with more frames than
// it may have, or a payload above kMaxPayloadBytes is refused before it is looked at.
inline constexpr std::size_t kMaxHeaderBytes = 2u << 20;
inline constexpr std::size_t kMaxPayloadBytes = 4u << 20;
inline constexpr std::size_t kMaxFrames = 3;  // signature, header, payload
inline constexpr std::size_t kMaxStringBytes = 1u << 20;
inline constexpr std::size_t kMaxArrayItems = 4096;
inline constexpr std::size_t kMaxMapItems = 64;
inline constexpr std::size_t kMaxDepth = 4;
inline constexpr std::size_t kMaxLogBytes = 1u << 20;   // FAILED.log is cut to its last MiB
inline constexpr std::size_t kMaxLineBytes = 16u << 10; // PROGRESS lines are cut to 16 KiB
// Socket-level cap on any single frame (ZMQ_MAXMSGSIZE): a larger frame drops the connection.
inline constexpr std::int64_t kMaxFrameBytes = static_cast<std::int64_t>(kMaxPayloadBytes) + (64 << 10);

enum class MessageType : std::uint8_t {
  // client -> server
  kHello = 0x01,
  kHeartbeat = 0x02,  // both directions
  kReady = 0x03,
  kFetch = 0x04,
  kProgress = 0x05,
  kResult = 0x06,
  kUpload = 0x07,
  kFailed = 0x08,
  kBye = 0x09,
  // operator (conductorctl, embedding programs) -> server; needs no HELLO
  kControl = 0x10,
  // server -> client
  kWelcome = 0x41,
  kAssign = 0x43,
  kChunk = 0x44,
  kPull = 0x45,
  kAck = 0x46,
  kCancel = 0x47,
  kError = 0x48,
  kResync = 0x49,
  kControlReply = 0x50,
};

const char* to_string(MessageType type) noexcept;
bool is_known(std::uint8_t type) noexcept;

// Error codes carried by ERROR (see docs/protocol.md).
enum class ErrorReply : int {
  kMalformed = 1,     // the message could not be decoded
  kUnsupported = 2,   // unknown type or protocol major
  kUnexpected = 3,    // valid message at the wrong time (e.g. before HELLO)
  kRefused = 4,       // a request the server will not serve (unknown blob, bad range)
};

// Header of messages without fields: an empty map.
struct Empty {
  template <typename Packer>
  void msgpack_pack(Packer& packer) const {
    packer.pack_map(0);
  }
  void msgpack_unpack(const msgpack::object&) {}
};

// Slots a client may run at once; HELLO.slots above this are cut to it.
inline constexpr int kMaxSlots = 64;

// An item a client still works on or holds an unacknowledged result of, and its slot.
struct RunningItem {
  std::string item;
  std::string version;
  int attempt = 0;
  std::string type;  // "training" | "prediction"
  int slot = 0;
  MSGPACK_DEFINE_MAP(item, version, attempt, type, slot)
};

struct Hello {
  int protocol = kMajorVersion;
  std::string client_id;     // persistent per client installation; identifies it across reconnects
  std::string host, os, type, version;
  // The first of `running` (lowest slot), for servers that predate slots; empty if none.
  std::string running_item;
  std::string running_version;
  int running_attempt = 0;
  std::string running_type;  // "training" | "prediction"
  int slots = 1;                     // items the client runs at once
  std::vector<std::string> gpus;     // slot i runs on gpus[i]; empty on a CPU client
  std::vector<RunningItem> running;  // every item it holds; empty from a client before slots
  // The largest inputs archive the client takes inline, as ASSIGN's payload frame (no
  // FETCH/CHUNK); 0: a client that fetches every archive.
  std::uint32_t inline_inputs_bytes = 0;
  // Whether the client unpacks ASSIGN's `model` archive: an older client is never given an
  // item that has one (it would run without the model's files).
  bool model_archives = false;
  MSGPACK_DEFINE_MAP(protocol, client_id, host, os, type, version, running_item, running_version,
                     running_attempt, running_type, slots, gpus, running, inline_inputs_bytes,
                     model_archives)
};

struct Welcome {
  std::string session;
  int heartbeat_ms = 1000;
  int liveness = 5;
  std::uint32_t chunk_size = 1u << 20;
  int window = 8;
  int slots = 0;  // the slots the server fills for this client; 0: a server that predates slots
  // The largest result the server takes inline, as RESULT's payload frame (no PULL/UPLOAD);
  // 0: a server that takes results only through PULL.
  std::uint32_t inline_result_bytes = 0;
  // The server takes RESULT's and FAILED's `ready_slot`; false: a server that predates it.
  bool ready_with_ack = false;
  MSGPACK_DEFINE_MAP(session, heartbeat_ms, liveness, chunk_size, window, slots,
                     inline_result_bytes, ready_with_ack)
};

// A free slot asks for work.
struct Ready {
  int slot = 0;
  MSGPACK_DEFINE_MAP(slot)
};

struct WireCommand {
  std::string file_name;
  std::string arguments;
  MSGPACK_DEFINE_MAP(file_name, arguments)
};

struct Assign {
  std::string item;
  int attempt = 0;
  std::string type;  // "training" | "prediction"
  std::string version;
  std::vector<WireCommand> commands;
  std::string blob;  // SHA-256 (hex) of the packed version: what FETCH asks for
  std::uint64_t blob_size = 0;
  std::string model_pattern;
  std::int64_t timeout_ms = 0;
  // A second archive unpacked over the first (prediction items: the model's files and
  // predictiondata.csv); empty when there is none.
  std::string inputs;
  std::uint64_t inputs_size = 0;
  int slot = 0;  // the client's slot that runs it (the slot whose READY it answers)
  // A prediction item of a large model: the model's own archive (content-addressed, cached
  // like a package), unpacked after the package and before `inputs`; empty when there is none.
  std::string model;
  std::uint64_t model_size = 0;
  MSGPACK_DEFINE_MAP(item, attempt, type, version, commands, blob, blob_size, model_pattern,
                     timeout_ms, inputs, inputs_size, slot, model, model_size)
};

struct Fetch {
  std::string blob;
  std::uint64_t offset = 0;
  std::uint32_t length = 0;
  MSGPACK_DEFINE_MAP(blob, offset, length)
};

struct Chunk {
  std::string blob;
  std::uint64_t offset = 0;
  MSGPACK_DEFINE_MAP(blob, offset)
};

struct Progress {
  std::string item;
  int attempt = 0;
  int epoch = 0;
  int total_epochs = 0;
  std::vector<std::string> lines;
  MSGPACK_DEFINE_MAP(item, attempt, epoch, total_epochs, lines)
};

struct ResultOffer {
  std::string item;
  int attempt = 0;
  std::uint64_t size = 0;
  std::string sha256;
  double duration = 0;  // seconds the commands ran
  int epochs = 0;
  double last_epoch = 0;
  // The slot that holds nothing and wants an item once this result's ACK is sent, as if a
  // READY followed the ACK; -1: none (the client sends READY itself).
  int ready_slot = -1;
  MSGPACK_DEFINE_MAP(item, attempt, size, sha256, duration, epochs, last_epoch, ready_slot)
};

struct Pull {
  std::string item;
  int attempt = 0;
  std::uint64_t offset = 0;
  std::uint32_t length = 0;
  MSGPACK_DEFINE_MAP(item, attempt, offset, length)
};

struct Upload {
  std::string item;
  int attempt = 0;
  std::uint64_t offset = 0;
  MSGPACK_DEFINE_MAP(item, attempt, offset)
};

struct Failed {
  std::string item;
  int attempt = 0;
  std::string reason;
  std::string log;
  double duration = 0;
  int ready_slot = -1;  // as in ResultOffer
  MSGPACK_DEFINE_MAP(item, attempt, reason, log, duration, ready_slot)
};

struct Ack {
  std::string item;
  int attempt = 0;
  std::string status;  // "stored" | "duplicate" | "rejected" | "failure-recorded"
  std::string reason;
  // The server took the RESULT's or FAILED's ready_slot as that slot's READY: the client sends
  // none. False from a server that predates ready_slot.
  bool took_ready = false;
  MSGPACK_DEFINE_MAP(item, attempt, status, reason, took_ready)
};

struct Cancel {
  std::string item;
  std::string reason;
  MSGPACK_DEFINE_MAP(item, reason)
};

struct ErrorMessage {
  int code = 0;
  std::string message;
  bool fatal = false;
  // What the refused message was about, when it named an item (RESULT, UPLOAD, FAILED) or an
  // archive (FETCH): a client with several slots gives up only that one.
  std::string item;
  std::string blob;
  MSGPACK_DEFINE_MAP(code, message, fatal, item, blob)
};

// The item and archive a message names, whatever its type (fields it lacks stay empty): what
// an ERROR about it repeats.
struct Subject {
  std::string item;
  std::string blob;
  MSGPACK_DEFINE_MAP(item, blob)
};

// An operator command (docs/protocol.md lists commands, arguments and reply bodies).
struct Control {
  std::string request;  // chosen by the sender, echoed in the reply
  std::string command;
  std::map<std::string, std::string> args;
  MSGPACK_DEFINE_MAP(request, command, args)
};

struct ControlReply {
  std::string request;
  bool ok = false;
  std::string error;  // when !ok: what was refused and why
  std::string body;   // when ok: a JSON document
  MSGPACK_DEFINE_MAP(request, ok, error, body)
};

// A decoded message: the type, its header (still msgpack, converted on demand by as<T>()) and
// the payload frame when there is one.
class Message {
 public:
  MessageType type() const noexcept { return type_; }
  const std::optional<zmq::message_t>& payload() const noexcept { return payload_; }
  std::optional<zmq::message_t>& payload() noexcept { return payload_; }

  // Throws ProtocolError when the header does not have T's shape.
  template <typename T>
  T as() const {
    T value;
    try {
      header_.get().convert(value);
    } catch (const std::exception& e) {
      throw ProtocolError(std::string("header of ") + to_string(type_) + " refused: " + e.what());
    }
    return value;
  }

 private:
  friend Message decode(std::vector<zmq::message_t>& frames, std::size_t first);
  MessageType type_ = MessageType::kHeartbeat;
  msgpack::object_handle header_;
  std::optional<zmq::message_t> payload_;
};

// Decodes frames[first..] (first = 1 on the server, where frames[0] is the routing id).
// Throws ProtocolError naming what is wrong; never reads beyond the limits above.
Message decode(std::vector<zmq::message_t>& frames, std::size_t first = 0);

zmq::message_t signature(MessageType type);

template <typename T>
zmq::message_t header(const T& value) {
  msgpack::sbuffer buffer;
  msgpack::pack(buffer, value);
  return zmq::message_t(buffer.data(), buffer.size());
}

// [signature][header][payload?], ready to send (the server prepends the routing id).
template <typename T>
std::vector<zmq::message_t> encode(MessageType type, const T& value,
                                   std::optional<zmq::message_t> payload = std::nullopt) {
  std::vector<zmq::message_t> frames;
  frames.reserve(payload ? 3 : 2);
  frames.push_back(signature(type));
  frames.push_back(header(value));
  if (payload) frames.push_back(std::move(*payload));
  return frames;
}

}  // namespace conductor::protocol
