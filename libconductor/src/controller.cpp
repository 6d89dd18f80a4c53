#include "conductor/controller.hpp"

#include <nlohmann/json.hpp>

#include <thread>

#include "conductor/error.hpp"
#include "conductor/keys.hpp"
#include "curve.hpp"
#include "conductor/package.hpp"
#include "conductor/sha256.hpp"
#include "file_io.hpp"
#include "package_cache.hpp"
#include "protocol.hpp"
#include "random_id.hpp"
#include "transport.hpp"

namespace conductor {

namespace fs = std::filesystem;
using protocol::MessageType;

class Controller::Impl {
 public:
  Impl(const std::string& server, std::chrono::milliseconds timeout, const std::string& server_key,
       const fs::path& key_file)
      : endpoint_(transport::normalize_endpoint(server)),
        timeout_(timeout),
        socket_(context_, zmq::socket_type::dealer) {
    transport::CurveClientKeys curve;
    if (!server_key.empty()) {
      if (!is_z85_key(server_key)) {
        throw Error(ErrorCode::kArgument,
                    "server key '" + server_key + "' refused: a CURVE public key is 40 Z85 characters");
      }
      KeyPair keys = load_or_create_keypair(key_file.empty() ? default_operator_key_file() : key_file);
      curve = {server_key, keys.public_key, keys.secret_key};
    }
    transport::connect_dealer(socket_, endpoint_, curve);
  }

  std::string call(const std::string& command, const std::map<std::string, std::string>& args) {
    const std::string request = random_uuid();
    send(MessageType::kControl, protocol::Control{request, command, args});
    return await_reply(request, [](protocol::Message&) {});
  }

  std::string add_version(const fs::path& folder, const std::string& name) {
    const std::string request = random_uuid();
    fs::path archive = fs::temp_directory_path() / ("conductorctl-" + request + ".tar");
    struct Remove {
      fs::path path;
      ~Remove() {
        std::error_code ec;
        fs::remove(path, ec);
      }
    } cleanup{archive};
    pack_directory(folder, archive, kNonPayloadFolders,
                   {.compression = Compression::kAuto, .sync = false});  // removed when sent
    const auto size = fs::file_size(archive);
    std::string version = name.empty() ? folder.lexically_normal().filename().string() : name;
    if (version.empty()) version = folder.lexically_normal().parent_path().filename().string();
    send(MessageType::kControl,
         protocol::Control{request, "add-version",
                           {{"name", version}, {"size", std::to_string(size)}, {"sha256", sha256_file(archive)}}});
    // The server pulls the archive chunk by chunk, then replies.
    return await_reply(request, [&](protocol::Message& message) {
      if (message.type() != MessageType::kPull) return;
      auto pull = message.as<protocol::Pull>();
      if (pull.item != request || pull.offset >= size || pull.length == 0 ||
          pull.length > protocol::kMaxPayloadBytes) {
        return;
      }
      auto length = std::min<std::uint64_t>(pull.length, size - pull.offset);
      zmq::message_t payload(length);
      read_at(archive, pull.offset, payload.data(), length);
      send(MessageType::kUpload, protocol::Upload{request, 0, pull.offset}, std::move(payload));
    });
  }

 private:
  // Waits for the CONTROL_REPLY of `request`, handing every other message to `other`. The
  // timeout counts from the last message received, so a long upload never times out.
  template <typename Other>
  std::string await_reply(const std::string& request, Other&& other) {
    auto deadline = std::chrono::steady_clock::now() + timeout_;
    while (std::chrono::steady_clock::now() < deadline) {
      zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
      transport::poll(items, 1, std::chrono::milliseconds(100));
      while (auto received = transport::receive(socket_, protocol::kMaxFrames)) {
        deadline = std::chrono::steady_clock::now() + timeout_;
        if (received->oversized) continue;
        auto message = protocol::decode(received->frames);
        if (message.type() == MessageType::kError) {
          throw Error(ErrorCode::kArgument,
                      "server refused the request: " + message.as<protocol::ErrorMessage>().message);
        }
        if (message.type() != MessageType::kControlReply) {
          other(message);
          continue;
        }
        auto reply = message.as<protocol::ControlReply>();
        if (reply.request != request) continue;  // a late answer to an earlier request
        if (!reply.ok) throw Error(ErrorCode::kArgument, reply.error);
        return reply.body;
      }
    }
    throw TransportError("no reply from " + endpoint_ + " within " +
                         std::to_string(timeout_.count()) + " ms (is a conductor-server running there?)");
  }

  template <typename T>
  void send(MessageType type, const T& header, std::optional<zmq::message_t> payload = std::nullopt) {
    auto frames = protocol::encode(type, header, std::move(payload));
    transport::send(socket_, frames);
  }

  std::string endpoint_;
  std::chrono::milliseconds timeout_;
  zmq::context_t context_;
  zmq::socket_t socket_;
};

Controller::Controller(const std::string& server, std::chrono::milliseconds timeout,
                       const std::string& server_key, const fs::path& key_file)
    : impl_(std::make_unique<Impl>(server, timeout, server_key, key_file)) {}

Controller::~Controller() = default;

std::string Controller::call(const std::string& command, const std::map<std::string, std::string>& args) {
  return impl_->call(command, args);
}

std::string Controller::add_version(const fs::path& folder, const std::string& name) {
  return impl_->add_version(folder, name);
}

std::string Controller::predict(const std::string& csv_rows, std::map<std::string, std::string> args,
                                std::chrono::milliseconds wait) {
  if (csv_rows.size() > protocol::kMaxStringBytes - 1024) {
    throw Error(ErrorCode::kArgument, "prediction rows refused: " + std::to_string(csv_rows.size()) +
                                          " bytes, at most about 1 MiB per request");
  }
  args["rows"] = csv_rows;
  auto started = nlohmann::json::parse(impl_->call("predict", args));
  const std::string request = started.at("request").get<std::string>();
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (true) {
    std::string body = impl_->call("prediction", {{"request", request}});
    if (nlohmann::json::parse(body).value("complete", false)) return body;
    if (std::chrono::steady_clock::now() >= deadline) {
      throw TransportError("prediction " + request + " not complete after " +
                           std::to_string(wait.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace conductor
