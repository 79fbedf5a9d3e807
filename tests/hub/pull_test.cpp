// `pensieve pull` against a stand-in hub on loopback (fake_hub.h): selection of files, redirects,
// resume with Range after a dropped connection (in the same run and in a new one), digest
// mismatch, shards, private and unknown repositories, and the store's list/rm.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "../cli_util.h"
#include "fake_hub.h"
#include "hub/pull.h"
#include "util/error.h"
#include "util/sha256.h"

using namespace pensieve::hub;
using pensieve::Error;
using pensieve::hub::test::FakeHub;
namespace fs = std::filesystem;

namespace {

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = char(rng());
  return s;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class PullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("pensieve-pull-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    FakeHub::Repo gguf;
    gguf.files["tiny-Q4_K_M.gguf"] = {random_bytes(300000, 1)};
    gguf.files["tiny-Q8_0.gguf"] = {random_bytes(5000, 2)};
    gguf.files["tiny-Q4_K_S.gguf"] = {random_bytes(4000, 3)};
    gguf.files["README.md"] = {"# tiny\n", false};
    hub_.add("acme/tiny-gguf", gguf);
  }
  void TearDown() override { fs::remove_all(root_); }

  HubClient client(std::string token = "", int retries = 3) {
    HubOptions o;
    o.endpoint = hub_.endpoint();
    o.token = std::move(token);
    o.retries = retries;
    o.retry_delay_ms = 5;
    return HubClient(o);
  }
  StoredModel do_pull(const std::string& spec, const HubClient& c) {
    return pull(c, ModelStore(root_), parse_pull_spec(spec), "main", {});
  }

  FakeHub hub_;
  fs::path root_;
};

}  // namespace

TEST(PullSpec, Parses) {
  PullSpec s = parse_pull_spec("microsoft/Phi-3-mini-4k-instruct-gguf:Q4_K_M");
  EXPECT_EQ(s.repo, "microsoft/Phi-3-mini-4k-instruct-gguf");
  EXPECT_EQ(s.selector, "Q4_K_M");
  EXPECT_EQ(parse_pull_spec("Qwen/Qwen2.5-0.5B-Instruct").selector, "");
  EXPECT_THROW(parse_pull_spec("no-owner"), Error);
  EXPECT_THROW(parse_pull_spec("a/b:"), Error);
  EXPECT_THROW(parse_pull_spec("../x/y"), Error);
  EXPECT_THROW(parse_pull_spec("a/.."), Error);
}

TEST(PullPlan, PicksTheGgufAQuantNamesAndListsTheChoicesOtherwise) {
  const std::vector<RepoFile> tree = {{"m-Q4_K_M.gguf", 10, "a"}, {"m-Q4_K_S.gguf", 10, "b"},
                                      {"m-Q8_0.gguf", 10, "c"}, {"README.md", 1, ""}};
  EXPECT_EQ(plan_pull({"o/m", "q8_0"}, tree).entry, "m-Q8_0.gguf");
  EXPECT_EQ(plan_pull({"o/m", "Q4_K_M"}, tree).quant, "Q4_K_M");
  EXPECT_EQ(plan_pull({"o/m", "m-Q4_K_S.gguf"}, tree).entry, "m-Q4_K_S.gguf");  // a file name
  try {
    plan_pull({"o/m", "Q4_K"}, tree);
    FAIL() << "ambiguous";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("m-Q4_K_M.gguf"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("m-Q4_K_S.gguf"), std::string::npos) << e.what();
  }
  try {
    plan_pull({"o/m", "Q2_K"}, tree);
    FAIL() << "missing";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("m-Q8_0.gguf"), std::string::npos) << e.what();
  }
  EXPECT_THROW(plan_pull({"o/m", ""}, tree), Error);  // several GGUFs, none named
}

TEST(PullPlan, ShardsAreOneModel) {
  const std::vector<RepoFile> tree = {{"big-Q4_0-00002-of-00002.gguf", 5, "b"}, {"big-Q4_0-00001-of-00002.gguf", 5, "a"},
                                      {"big-Q8_0.gguf", 9, "c"}};
  const PullPlan p = plan_pull({"o/big", "Q4_0"}, tree);
  ASSERT_EQ(p.files.size(), 2u);
  EXPECT_EQ(p.entry, "big-Q4_0-00001-of-00002.gguf");
  EXPECT_EQ(p.quant, "Q4_0");
}

TEST(PullPlan, SafetensorsRepoTakesConfigTokenizerAndEveryShard) {
  const std::vector<RepoFile> tree = {
      {"config.json", 1, ""}, {"tokenizer.json", 1, ""}, {"tokenizer_config.json", 1, ""},
      {"model-00001-of-00002.safetensors", 5, "a"}, {"model-00002-of-00002.safetensors", 5, "b"},
      {"model.safetensors.index.json", 1, ""}, {"README.md", 1, ""}, {"onnx/model.onnx", 9, "c"}};
  const PullPlan p = plan_pull({"Qwen/Qwen2.5-0.5B-Instruct", ""}, tree);
  EXPECT_EQ(p.files.size(), 6u);
  EXPECT_EQ(p.entry, "");
  EXPECT_EQ(p.quant, "safetensors");
  EXPECT_THROW(plan_pull({"Qwen/Qwen2.5-0.5B-Instruct", "Q4_K_M"}, tree), Error);
}

TEST(PullPlan, QuantFromFileName) {
  EXPECT_EQ(quant_from_file_name("Phi-3-mini-4k-instruct-q4.gguf"), "Q4");
  EXPECT_EQ(quant_from_file_name("qwen2.5-0.5b-instruct-q4_k_m.gguf"), "Q4_K_M");
  EXPECT_EQ(quant_from_file_name("model-fp16.gguf"), "F16");
  EXPECT_EQ(quant_from_file_name("Llama-3.2-1B-Instruct-IQ4_XS.gguf"), "IQ4_XS");
  EXPECT_EQ(quant_from_file_name("model.gguf"), "");
}

TEST_F(PullTest, PullsTheQuantThroughTheRedirectAndRecordsIt) {
  const StoredModel m = do_pull("acme/tiny-gguf:q4_k_m", client());
  EXPECT_EQ(m.name, "acme/tiny-gguf:q4_k_m");
  EXPECT_EQ(m.entry, "tiny-Q4_K_M.gguf");
  EXPECT_EQ(slurp(m.load_path()), random_bytes(300000, 1));
  EXPECT_FALSE(fs::exists(m.load_path().string() + ".partial"));
  bool resolved = false, from_cdn = false;
  for (const auto& r : hub_.requests()) {
    resolved |= r.target == "/acme/tiny-gguf/resolve/main/tiny-Q4_K_M.gguf";
    from_cdn |= r.target == "/cdn/acme/tiny-gguf/tiny-Q4_K_M.gguf";
  }
  EXPECT_TRUE(resolved && from_cdn);
  const auto listed = ModelStore(root_).list();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].files[0].sha256, pensieve::sha256_hex(random_bytes(300000, 1)));
  EXPECT_EQ(listed[0].quant, "Q4_K_M");
}

TEST_F(PullTest, ResumesWithRangeAfterADroppedConnection) {
  hub_.drop_once("tiny-Q4_K_M.gguf", 100000);
  const StoredModel m = do_pull("acme/tiny-gguf:Q4_K_M", client());
  EXPECT_EQ(slurp(m.load_path()), random_bytes(300000, 1));
  bool ranged = false;
  for (const auto& r : hub_.requests()) ranged |= r.range == "bytes=100000-";
  EXPECT_TRUE(ranged) << "the second attempt asks for the rest only";
}

TEST_F(PullTest, ANewRunResumesThePartialFile) {
  hub_.drop_once("tiny-Q4_K_M.gguf", 120000);
  try {
    do_pull("acme/tiny-gguf:Q4_K_M", client("", 0));
    FAIL() << "no retries: the drop fails the pull";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("run the command again to resume"), std::string::npos) << e.what();
  }
  const fs::path partial = ModelStore(root_).folder("acme/tiny-gguf", "main") / "tiny-Q4_K_M.gguf.partial";
  ASSERT_TRUE(fs::exists(partial));
  EXPECT_EQ(fs::file_size(partial), 120000u);
  const StoredModel m = do_pull("acme/tiny-gguf:Q4_K_M", client("", 0));
  EXPECT_EQ(slurp(m.load_path()), random_bytes(300000, 1));
  bool ranged = false;
  for (const auto& r : hub_.requests()) ranged |= r.range == "bytes=120000-";
  EXPECT_TRUE(ranged);
}

TEST_F(PullTest, ADigestMismatchDeletesThePartialAndGivesBothDigests) {
  FakeHub::Repo bad;
  bad.files["bad-Q4_0.gguf"] = {random_bytes(2000, 9), true, std::string(64, 'a')};
  hub_.add("acme/bad", bad);
  try {
    do_pull("acme/bad", client());
    FAIL() << "mismatch";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(std::string(64, 'a')), std::string::npos) << msg;
    EXPECT_NE(msg.find(pensieve::sha256_hex(random_bytes(2000, 9))), std::string::npos) << msg;
  }
  const fs::path dir = ModelStore(root_).folder("acme/bad", "main");
  EXPECT_FALSE(fs::exists(dir / "bad-Q4_0.gguf.partial"));
  EXPECT_FALSE(fs::exists(dir / "bad-Q4_0.gguf"));
  EXPECT_TRUE(ModelStore(root_).list().empty());
}

TEST_F(PullTest, FetchesEveryShardAndFollowsTreePages) {
  FakeHub::Repo big;
  big.files["big-Q4_0-00001-of-00002.gguf"] = {random_bytes(3000, 4)};
  big.files["big-Q4_0-00002-of-00002.gguf"] = {random_bytes(3000, 5)};
  big.files["big-Q8_0.gguf"] = {random_bytes(10, 6)};
  big.page_size = 2;
  hub_.add("acme/big", big);
  const StoredModel m = do_pull("acme/big:Q4_0", client());
  ASSERT_EQ(m.files.size(), 2u);
  EXPECT_EQ(m.entry, "big-Q4_0-00001-of-00002.gguf");
  EXPECT_EQ(slurp(m.dir / "big-Q4_0-00002-of-00002.gguf"), random_bytes(3000, 5));
  int pages = 0;
  for (const auto& r : hub_.requests()) pages += r.target.find("/api/models/acme/big/tree/main") == 0;
  EXPECT_EQ(pages, 2);
}

TEST_F(PullTest, PrivateRepoNeedsTheTokenAndUnknownRepoIs404) {
  FakeHub::Repo priv;
  priv.is_private = true;
  priv.files["p-Q4_0.gguf"] = {random_bytes(100, 7)};
  hub_.add("acme/private", priv);
  try {
    do_pull("acme/private", client());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("401"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("HF_TOKEN"), std::string::npos) << e.what();
  }
  const size_t before = hub_.requests().size();
  const StoredModel m = do_pull("acme/private", client(hub_.token));
  EXPECT_EQ(slurp(m.load_path()), random_bytes(100, 7));
  const auto requests = hub_.requests();
  ASSERT_GT(requests.size(), before + 2);  // tree, resolve, CDN
  for (size_t i = before; i < requests.size(); ++i) EXPECT_EQ(requests[i].authorization, "Bearer " + hub_.token);
  try {
    do_pull("acme/nothing-here", client());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("404"), std::string::npos) << e.what();
  }
}

TEST_F(PullTest, RemoveKeepsFilesAnotherModelUsesAndEmptiesTheFolder) {
  do_pull("acme/tiny-gguf:Q8_0", client());
  do_pull("acme/tiny-gguf:Q4_K_S", client());
  ModelStore store(root_);
  ASSERT_EQ(store.list().size(), 2u);
  EXPECT_THROW(store.remove("acme/tiny-gguf:Q2_K"), Error);
  store.remove("acme/tiny-gguf:q8_0");  // names match case-insensitively
  const fs::path dir = store.folder("acme/tiny-gguf", "main");
  EXPECT_FALSE(fs::exists(dir / "tiny-Q8_0.gguf"));
  EXPECT_TRUE(fs::exists(dir / "tiny-Q4_K_S.gguf"));
  store.remove("acme/tiny-gguf:Q4_K_S");
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_TRUE(store.list().empty());
}

// The commands themselves: pull (plain progress lines when not on a terminal), list, rm.
TEST_F(PullTest, PullListRmCommands) {
  ::setenv("HF_ENDPOINT", hub_.endpoint().c_str(), 1);
  ::setenv("PENSIEVE_MODELS", root_.c_str(), 1);
  auto r = pensieve::test::run_pensieve("pull acme/tiny-gguf:Q4_K_M");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("pulled acme/tiny-gguf:Q4_K_M"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("tiny-Q4_K_M.gguf: 100%"), std::string::npos) << r.err;
  r = pensieve::test::run_pensieve("list");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("acme/tiny-gguf:Q4_K_M"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Q4_K_M"), std::string::npos) << r.out;
  r = pensieve::test::run_pensieve("pull acme/tiny-gguf:Q4_K");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("matches several"), std::string::npos) << r.err;
  r = pensieve::test::run_pensieve("rm acme/tiny-gguf:Q4_K_M");
  EXPECT_EQ(r.status, 0) << r.err;
  r = pensieve::test::run_pensieve("list");
  EXPECT_NE(r.out.find("no models"), std::string::npos) << r.out;
  r = pensieve::test::run_pensieve("rm acme/tiny-gguf:Q4_K_M");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no model named"), std::string::npos) << r.err;
  ::unsetenv("HF_ENDPOINT");
  ::unsetenv("PENSIEVE_MODELS");
}

// Ctrl-C during a transfer: exit status 130, the partial file kept; the next run resumes it.
TEST_F(PullTest, CtrlCKeepsAResumablePartial) {
  hub_.stall("tiny-Q4_K_M.gguf", 50000);
  ::setenv("HF_ENDPOINT", hub_.endpoint().c_str(), 1);
  ::setenv("PENSIEVE_MODELS", root_.c_str(), 1);
  const std::string binary = pensieve::test::pensieve_binary();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::freopen("/dev/null", "w", stdout);
    std::freopen("/dev/null", "w", stderr);
    ::execl(binary.c_str(), binary.c_str(), "pull", "acme/tiny-gguf:Q4_K_M", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const fs::path partial = ModelStore(root_).folder("acme/tiny-gguf", "main") / "tiny-Q4_K_M.gguf.partial";
  std::error_code ec;
  for (int i = 0; i < 2000 && !(fs::exists(partial, ec) && fs::file_size(partial, ec) == 50000); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(fs::file_size(partial, ec), 50000u);
  ::kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  EXPECT_EQ(fs::file_size(partial, ec), 50000u);
  hub_.release();
  const auto r = pensieve::test::run_pensieve("pull acme/tiny-gguf:Q4_K_M");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(slurp(partial.parent_path() / "tiny-Q4_K_M.gguf"), random_bytes(300000, 1));
  bool ranged = false;
  for (const auto& q : hub_.requests()) ranged |= q.range == "bytes=50000-";
  EXPECT_TRUE(ranged);
  ::unsetenv("HF_ENDPOINT");
  ::unsetenv("PENSIEVE_MODELS");
}

// A safetensors repository (the tiny Qwen2 reference model): the model files only, then `show`
// and `list` read its config and safetensors headers.
TEST_F(PullTest, SafetensorsRepoThenShowAndList) {
  PENSIEVE_REQUIRE_TESTDATA();
  const fs::path src = pensieve::test::testdata_dir() / "models" / "tiny-qwen2-dev";
  FakeHub::Repo repo;
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors", "reference.json"})
    repo.files[f] = {slurp(src / f), std::string(f) == "model.safetensors"};
  repo.files["README.md"] = {"---\nlicense: apache-2.0\n---\n", false};
  hub_.add("acme/tiny-qwen2", repo);
  const StoredModel m = do_pull("acme/tiny-qwen2", client());
  EXPECT_EQ(m.files.size(), 3u);  // config, generation config, weights; not the README or reference.json
  EXPECT_EQ(m.load_path(), m.dir);
  EXPECT_EQ(slurp(m.dir / "model.safetensors"), slurp(src / "model.safetensors"));
  ::setenv("PENSIEVE_MODELS", root_.c_str(), 1);
  auto r = pensieve::test::run_pensieve("show acme/tiny-qwen2");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("architecture  qwen2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("parameters    0.69 M (685696)"), std::string::npos) << r.out;
  r = pensieve::test::run_pensieve("list");
  EXPECT_NE(r.out.find("safetensors"), std::string::npos) << r.out;
  ::unsetenv("PENSIEVE_MODELS");
}
