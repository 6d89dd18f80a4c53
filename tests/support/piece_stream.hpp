// PieceStream: an archive's bytes handed out piece by piece through conductor::ArchiveStream, as
// the chunks of an upload reach a result's stream on the server. Shared by the package tests and
// the archive fuzzer's checks.
#pragma once

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string_view>

#include "conductor/error.hpp"
#include "conductor/package.hpp"

namespace conductor::test {

// Hands out `bytes` (which must outlive it) in pieces of `piece` bytes, then the end; throws
// IoError("gone") instead of the piece at `fail_at` (a byte offset), when set.
class PieceStream final : public ArchiveStream {
 public:
  PieceStream(std::string_view bytes, std::size_t piece, std::optional<std::size_t> fail_at = {})
      : bytes_(bytes), piece_(piece), fail_at_(fail_at) {}

  std::string_view next() override {
    if (fail_at_ && offset_ >= *fail_at_) throw IoError("gone");
    const std::string_view piece = bytes_.substr(offset_, piece_);
    offset_ += piece.size();
    return piece;
  }
  // Bytes handed out so far.
  std::size_t offset() const { return offset_; }

 private:
  std::string_view bytes_;
  std::size_t piece_;
  std::optional<std::size_t> fail_at_;
  std::size_t offset_ = 0;
};

}  // namespace conductor::test
