// Replays every input that once crashed a fuzz target (tests/fuzz/regressions/<target>/*, kept by
// scripts/fuzz.sh) through the same entry function, in the normal build: a fix that regresses
// fails here, under ASan in the sanitizer build.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "fuzz_targets.h"

namespace fs = std::filesystem;

namespace {

const fs::path kRegressions = fs::path(PENSIEVE_SOURCE_DIR) / "tests" / "fuzz" / "regressions";

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST(FuzzRegressions, EveryFolderNamesATarget) {
  ASSERT_TRUE(fs::is_directory(kRegressions)) << kRegressions;
  for (const auto& dir : fs::directory_iterator(kRegressions))
    EXPECT_NE(pensieve::fuzz::find_target(dir.path().filename().string()), nullptr)
        << dir.path() << " is not a fuzz target";
}

TEST(FuzzRegressions, EveryInputIsHandled) {
  int replayed = 0;
  for (const auto& target : pensieve::fuzz::targets()) {
    const fs::path dir = kRegressions / target.name;
    if (!fs::is_directory(dir)) continue;
    for (const auto& file : fs::directory_iterator(dir)) {
      const std::string bytes = read_all(file.path());
      SCOPED_TRACE(file.path().string());
      EXPECT_NO_THROW(target.run(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
      ++replayed;
    }
  }
  EXPECT_GT(replayed, 0) << "no regression input under " << kRegressions;
}
