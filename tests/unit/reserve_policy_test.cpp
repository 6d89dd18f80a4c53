#include "conductor/reserve_policy.hpp"

#include <doctest/doctest.h>

#include "conductor/error.hpp"

using conductor::ReservePolicy;

TEST_CASE("reserve fraction 0 reserves nobody") {
  ReservePolicy policy(0.0);
  for (std::size_t clients = 0; clients <= 10; ++clients) CHECK(policy.reserved_count(clients) == 0);
}

TEST_CASE("reserve count follows the original's rule for 1..10 clients") {
  // n = floor(fraction x clients), at least 1 when fraction > 0.
  struct Case {
    double fraction;
    std::size_t expected[10];  // for 1..10 clients
  };
  const Case cases[] = {
      {0.2, {1, 1, 1, 1, 1, 1, 1, 1, 1, 2}},
      {0.25, {1, 1, 1, 1, 1, 1, 1, 2, 2, 2}},
      {0.5, {1, 1, 1, 2, 2, 3, 3, 4, 4, 5}},
      {1.0, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
      {0.3, {1, 1, 1, 1, 1, 1, 2, 2, 2, 3}},
  };
  for (const auto& c : cases) {
    ReservePolicy policy(c.fraction);
    for (std::size_t clients = 1; clients <= 10; ++clients) {
      CAPTURE(c.fraction);
      CAPTURE(clients);
      CHECK(policy.reserved_count(clients) == c.expected[clients - 1]);
    }
    CHECK(policy.reserved_count(0) == 0);
  }
}

TEST_CASE("the first clients in connection order are the reserve") {
  ReservePolicy policy(0.25);
  CHECK(policy.is_reserved(0, 4));
  CHECK_FALSE(policy.is_reserved(1, 4));
  CHECK_FALSE(policy.is_reserved(3, 4));
  CHECK(policy.is_reserved(1, 8));
  CHECK_FALSE(policy.is_reserved(2, 8));
}

TEST_CASE("a reserve fraction outside 0..1 is refused") {
  CHECK_THROWS_AS(ReservePolicy(-0.1), conductor::Error);
  CHECK_THROWS_AS(ReservePolicy(1.5), conductor::Error);
  CHECK_THROWS_WITH_AS(ReservePolicy(2.0), doctest::Contains("must lie in [0, 1]"), conductor::Error);
}
