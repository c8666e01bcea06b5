// The semaphore checks every platform and backend shares: slots passing between two objects, and
// an object whose N the semaphore does not have.
#pragma once

#include <chrono>
#include <string>
#include <system_error>
#include <thread>

#include "common/test_support.hpp"

namespace fasteners_test {

// `sem` holds every slot (3) of a semaphore, and `other`, an object of the same one, none: a
// slot that `sem` gives back from another thread goes to `other`; then both give everything back,
// and a release with none held throws operation_not_permitted that `names_it(e)` finds right.
template <class Semaphore, class Check>
void expect_slots_to_pass_between_objects(Semaphore& sem, Semaphore& other, Check names_it) {
  ASSERT_EQ(sem.held(), 3u);
  EXPECT_FALSE(sem.try_acquire());
  EXPECT_FALSE(other.try_acquire());
  std::thread([&] { sem.release(); }).join();
  EXPECT_EQ(sem.held(), 2u);
  EXPECT_TRUE(other.try_acquire());
  EXPECT_FALSE(sem.try_acquire());
  other.release();
  sem.release();
  sem.release();
  EXPECT_EQ(sem.held(), 0u);
  try {
    sem.release();
    ADD_FAILURE() << "release() with no slot held did not throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::operation_not_permitted);
    EXPECT_TRUE(names_it(e)) << e.what();
  }
}

// Checks that every kind of acquire of `sem`, whose N the semaphore does not have, throws
// std::system_error(invalid_argument) that `says_both(e)` finds right; 0 if so.
template <class Semaphore, class Check>
int expect_wrong_n(Semaphore& sem, Check says_both) {
  using namespace std::chrono_literals;
  for (int how = 0; how < 3; ++how) {
    try {
      if (how == 0) sem.acquire();
      if (how == 1) sem.try_acquire();
      if (how == 2) sem.try_acquire_for(100ms);
      return fail(1, "an acquire with another N did not throw");
    } catch (const std::system_error& e) {
      if (e.code() != std::errc::invalid_argument || !says_both(e)) {
        return fail(2, std::string("wrong error for another N: ") + e.what());
      }
    }
  }
  return sem.held() == 0 ? 0 : fail(3, "held() after failed acquires");
}

}  // namespace fasteners_test
