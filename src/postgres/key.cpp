// fasteners::postgres_key: a lock name's advisory-lock key, from SHA-256 (OpenSSL's libcrypto).
#include <openssl/evp.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string_view>

#include "fasteners/postgres.hpp"

namespace fasteners {

std::int64_t postgres_key(std::string_view name) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(name.data(), name.size(), digest, &size, EVP_sha256(), nullptr) != 1 || size < 8) {
    throw std::runtime_error("fasteners: SHA-256 failed in libcrypto");
  }
  std::uint64_t bits = 0;
  for (int i = 0; i < 8; ++i) bits = (bits << 8) | digest[i];  // Big-endian.
  std::int64_t key;
  std::memcpy(&key, &bits, sizeof key);  // Two's complement, as the server's bit(64)::bigint.
  return key;
}

}  // namespace fasteners
