// `pensieve logits` end to end: the file it writes and the ids it prints, against the reference.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "reference.h"

namespace pensieve {
namespace {

namespace fs = std::filesystem;

std::string join(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

TEST(CliLogits, WritesEveryPositionAndPrintsGreedyIds) {
  PENSIEVE_REQUIRE_TESTDATA();
  const fs::path dir = test::testdata_dir() / "models" / "tiny-qwen2-dev";
  const fs::path out = fs::temp_directory_path() / ("pensieve-logits-" + std::to_string(::getpid()));
  for (const auto& ref : test::read_references(dir)) {
    const auto r = test::run_pensieve("logits --model " + dir.string() + " --ids " + join(ref.input_ids) +
                                      " --out " + out.string() + " --generate 16");
    ASSERT_EQ(r.status, 0) << r.err;
    std::ifstream f(out, std::ios::binary | std::ios::ate);
    std::vector<float> got(size_t(f.tellg()) / sizeof(float));
    f.seekg(0);
    f.read(reinterpret_cast<char*>(got.data()), std::streamsize(got.size() * sizeof(float)));
    ASSERT_EQ(got.size(), ref.logits.size());
    const auto c = test::compare_logits(got, ref.logits, 512);
    EXPECT_LE(c.rel_l2, 1e-4);
    EXPECT_EQ(c.argmax_mismatches, 0);
    EXPECT_EQ(nlohmann::json::parse(r.out).get<std::vector<int32_t>>(), ref.greedy_next16);
  }
  fs::remove(out);
}

TEST(CliLogits, BadInputIsAClearErrorAndNonZeroExit) {
  const auto missing = test::run_pensieve("logits --model /nonexistent/model.gguf --ids 1,2 --out /dev/null");
  EXPECT_NE(missing.status, 0);
  EXPECT_NE(missing.err.find("/nonexistent/model.gguf"), std::string::npos) << missing.err;

  PENSIEVE_REQUIRE_TESTDATA();
  const fs::path dir = test::testdata_dir() / "models" / "tiny-llama-dev";
  const auto bad_ids = test::run_pensieve("logits --model " + dir.string() + " --ids 1,x --out /dev/null");
  EXPECT_NE(bad_ids.status, 0);
  EXPECT_NE(bad_ids.err.find("'x'"), std::string::npos) << bad_ids.err;
  const auto out_of_vocab = test::run_pensieve("logits --model " + dir.string() + " --ids 1,999999 --out /dev/null");
  EXPECT_NE(out_of_vocab.status, 0);
  EXPECT_NE(out_of_vocab.err.find("999999"), std::string::npos) << out_of_vocab.err;
}

}  // namespace
}  // namespace pensieve
