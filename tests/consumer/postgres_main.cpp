// The consumer of fasteners::postgres: computes a key (no server needed) and checks it.
#include <fasteners/postgres.hpp>

#include <cstdio>

int main() {
  // The first 8 bytes of SHA-256(""), e3b0c44298fc1c14, as a signed 64-bit integer.
  const std::int64_t key = fasteners::postgres_key("");
  fasteners::postgres_lock lock("", "consumer");
  if (key != -2039914840885289964 || lock.acquired() || lock.name() != "consumer") {
    std::printf("consumer_postgres: wrong key %lld\n", static_cast<long long>(key));
    return 1;
  }
  std::printf("consumer_postgres: postgres_key(\"\") = %lld\n", static_cast<long long>(key));
  return 0;
}
