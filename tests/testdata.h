// Where the shared reference data lives, and the skip that every test needing it uses when a
// checkout has no ../shared/testdata beside it.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

namespace pensieve::test {

inline std::filesystem::path testdata_dir() {
  if (const char* env = std::getenv("PENSIEVE_TESTDATA")) return env;
  return std::filesystem::path(PENSIEVE_SOURCE_DIR) / ".." / "shared" / "testdata";
}

inline std::string pensieve_binary() { return PENSIEVE_BINARY; }

}  // namespace pensieve::test

// Skips the current test with a clear message when the shared test data is absent.
#define PENSIEVE_REQUIRE_TESTDATA()                                                        \
  do {                                                                                     \
    if (!std::filesystem::exists(::pensieve::test::testdata_dir() / "README.md"))          \
      GTEST_SKIP() << "shared test data not found at " << ::pensieve::test::testdata_dir() \
                   << " (set PENSIEVE_TESTDATA); skipping";                                \
  } while (0)
