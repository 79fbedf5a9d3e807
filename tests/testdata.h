// Where the reference data lives (tests/data of the source tree, or $PENSIEVE_TESTDATA), and the
// check that every test needing it starts with: absent data is a failure that names the path,
// never a skip.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace pensieve::test {

inline std::filesystem::path testdata_dir() {
  if (const char* env = std::getenv("PENSIEVE_TESTDATA"); env && *env) return env;
  return std::filesystem::path(PENSIEVE_SOURCE_DIR) / "tests" / "data";
}

inline std::string pensieve_binary() { return PENSIEVE_BINARY; }

}  // namespace pensieve::test

// Fails the current test, naming the path, when the test data is absent.
#define PENSIEVE_REQUIRE_TESTDATA()                                                              \
  do {                                                                                           \
    if (!std::filesystem::exists(::pensieve::test::testdata_dir() / "README.md"))                \
      GTEST_FAIL() << "test data not found: no " << ::pensieve::test::testdata_dir() / "README.md" \
                   << " (the tests read tests/data of the source tree, or $PENSIEVE_TESTDATA)";  \
  } while (0)
