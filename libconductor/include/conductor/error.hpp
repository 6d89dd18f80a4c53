// Error types thrown across libconductor's public API.
// Every failure at the API throws conductor::Error or a subclass; the message names
// what was refused (file and line, id, path) and why. Expected outcomes (a poll timeout,
// a command exiting non-zero) are values, not exceptions.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace conductor {

enum class ErrorCode {
  kConfig = 1,    // configuration or version XML is missing, malformed or invalid
  kProtocol = 2,  // a message does not follow docs/protocol.md
  kPackage = 3,   // an archive could not be packed or was refused on extraction
  kProcess = 4,   // a command could not be parsed or started
  kIo = 5,        // the file system refused an operation
  kTransport = 6, // a socket could not be bound or connected
  kArgument = 7,  // a caller passed an invalid value
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& message) : Error(ErrorCode::kConfig, message) {}
};

class ProtocolError : public Error {
 public:
  explicit ProtocolError(const std::string& message) : Error(ErrorCode::kProtocol, message) {}
};

class PackageError : public Error {
 public:
  explicit PackageError(const std::string& message) : Error(ErrorCode::kPackage, message) {}
};

class ProcessError : public Error {
 public:
  explicit ProcessError(const std::string& message) : Error(ErrorCode::kProcess, message) {}
};

class IoError : public Error {
 public:
  explicit IoError(const std::string& message) : Error(ErrorCode::kIo, message) {}
};

// The file system has too little room left for what was to be written (a reserve such as
// ExtractLimits::min_free_bytes): a condition that may pass, not a fault of the data.
class NoSpaceError : public IoError {
 public:
  // `needed`: the free bytes, beyond any reserve, that the refused work was found to need when
  // that is known (at least that many; 0 when unknown).
  explicit NoSpaceError(const std::string& message, std::uint64_t needed = 0)
      : IoError(message), needed_(needed) {}
  std::uint64_t needed() const { return needed_; }

 private:
  std::uint64_t needed_;
};

class TransportError : public Error {
 public:
  explicit TransportError(const std::string& message) : Error(ErrorCode::kTransport, message) {}
};

}  // namespace conductor
