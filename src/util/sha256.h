// SHA-256 (FIPS 180-4): API keys are stored hashed, and downloaded model files are checked against
// the digest the hub publishes. Written here (tested against the FIPS vectors) rather than taken
// from a crypto library, which nothing else in Pensieve needs.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pensieve {

// Incremental: update() any number of times, then finish() (which also resets it).
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  std::array<uint8_t, 32> finish();
  std::string finish_hex();
  void reset();

 private:
  uint32_t state_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t length_ = 0;
};

std::array<uint8_t, 32> sha256(std::string_view data);
std::string sha256_hex(std::string_view data);
std::string to_hex(const std::array<uint8_t, 32>& digest);

}  // namespace pensieve
