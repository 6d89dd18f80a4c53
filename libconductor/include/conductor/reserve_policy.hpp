// ReservePolicy: the original's rule for keeping clients free for prediction work.
// A value: immutable after construction, safe to share between threads.
#pragma once

#include <cstddef>

namespace conductor {

// n = floor(fraction x connected) clients are reserved, at least one whenever fraction > 0 and a
// client is connected, never more than are connected. The first n clients in connection order are
// the reserve: they take only prediction items. All others take the first queued item of any type.
class ReservePolicy {
 public:
  // Throws Error(kArgument) unless 0 <= fraction <= 1.
  explicit ReservePolicy(double fraction = 0.2);

  double fraction() const noexcept { return fraction_; }
  std::size_t reserved_count(std::size_t connected) const noexcept;
  // Whether the client at `connection_index` (0 = connected first) among `connected` is reserved.
  bool is_reserved(std::size_t connection_index, std::size_t connected) const noexcept;

 private:
  double fraction_;
};

}  // namespace conductor
