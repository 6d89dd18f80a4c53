#include "conductor/reserve_policy.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "conductor/error.hpp"

namespace conductor {

ReservePolicy::ReservePolicy(double fraction) : fraction_(fraction) {
  if (!(fraction >= 0.0 && fraction <= 1.0)) {
    throw Error(ErrorCode::kArgument,
                "reserve fraction " + std::to_string(fraction) + " refused: must lie in [0, 1]");
  }
}

std::size_t ReservePolicy::reserved_count(std::size_t connected) const noexcept {
  if (connected == 0 || fraction_ <= 0.0) return 0;
  // The epsilon keeps 0.3 x 10 at 3 despite 0.3 not being exact in binary.
  auto n = static_cast<std::size_t>(std::floor(fraction_ * static_cast<double>(connected) + 1e-9));
  return std::clamp<std::size_t>(n, 1, connected);
}

bool ReservePolicy::is_reserved(std::size_t connection_index, std::size_t connected) const noexcept {
  return connection_index < reserved_count(connected);
}

}  // namespace conductor
