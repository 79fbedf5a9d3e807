// GGUF reader on the real files in testdata, and the writer by round trip.
#include "formats/gguf.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "testdata.h"
#include "util/error.h"

namespace fs = std::filesystem;
using namespace pensieve;

namespace {

fs::path temp_path(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("pensieve_gguf_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

void expect_tensors_inside(const GgufFile& f) {
  const uint8_t* begin = f.mapping()->data();
  const uint8_t* end = begin + f.mapping()->size();
  for (const Tensor& t : f.tensors()) {
    const auto* p = static_cast<const uint8_t*>(t.data);
    EXPECT_GE(p, begin) << t.name;
    EXPECT_LE(p + t.nbytes, end) << t.name;
    EXPECT_EQ(t.nbytes, t.row_bytes() * size_t(t.rows())) << t.name;
    EXPECT_EQ(size_t(p - begin) % 32, 0u) << t.name;
  }
}

}  // namespace

TEST(Gguf, LoadsEveryVocabFile) {
  PENSIEVE_REQUIRE_TESTDATA();
  int n = 0;
  for (const auto& e : fs::directory_iterator(test::testdata_dir() / "vocab")) {
    if (e.path().extension() != ".gguf") continue;
    SCOPED_TRACE(e.path().string());
    GgufFile f = GgufFile::open(e.path().string());
    EXPECT_TRUE(f.version() == 2 || f.version() == 3);
    EXPECT_FALSE(f.get_string("tokenizer.ggml.model").empty());
    const GgufValue* tokens = f.find("tokenizer.ggml.tokens");
    ASSERT_NE(tokens, nullptr);
    const auto strings = tokens->as_string_array();
    EXPECT_GT(strings.size(), 100u);
    if (const GgufValue* types = f.find("tokenizer.ggml.token_type")) {
      EXPECT_EQ(types->as_int_array().size(), strings.size());
    }
    if (const GgufValue* scores = f.find("tokenizer.ggml.scores")) {
      EXPECT_EQ(scores->as_float_array().size(), strings.size());
    }
    expect_tensors_inside(f);
    ++n;
  }
  EXPECT_GE(n, 10);
}

TEST(Gguf, Phi3VocabHasItsHyperParameters) {
  PENSIEVE_REQUIRE_TESTDATA();
  GgufFile f = GgufFile::open((test::testdata_dir() / "vocab" / "ggml-vocab-phi-3.gguf").string());
  EXPECT_EQ(f.get_string("general.architecture"), "phi3");
  EXPECT_EQ(f.find("tokenizer.ggml.tokens")->as_array().items.size(), 32064u);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(f.get_int("phi3.block_count", 0), 32);
  EXPECT_EQ(f.get_int("phi3.embedding_length", 0), 3072);
  EXPECT_NE(f.get_string("tokenizer.chat_template").find("<|assistant|>"), std::string::npos);
  // Typed getters: defaults when absent, errors naming the key on a type mismatch.
  EXPECT_EQ(f.get_int("no.such.key", 42), 42);
  try {
    f.get_int("tokenizer.ggml.model", 0);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.ggml.model"), std::string::npos) << e.what();
  }
}

TEST(Gguf, LoadsEveryModelFile) {
  PENSIEVE_REQUIRE_TESTDATA();
  int n = 0;
  for (const auto& e : fs::directory_iterator(test::testdata_dir() / "gguf")) {
    const fs::path p = e.path() / "model.gguf";
    if (!fs::exists(p)) continue;
    SCOPED_TRACE(p.string());
    GgufFile f = GgufFile::open(p.string());
    const std::string arch = f.get_string("general.architecture");
    EXPECT_TRUE(arch == "llama" || arch == "phi3" || arch == "qwen2") << arch;
    const Tensor* emb = f.find_tensor("token_embd.weight");
    ASSERT_NE(emb, nullptr);
    EXPECT_EQ(emb->n_dims, 2);
    EXPECT_EQ(emb->ne[1], 512);
    EXPECT_EQ(emb->ne[0], f.get_int(arch + ".embedding_length", -1));
    EXPECT_GT(f.get_int(arch + ".block_count", 0), 0);
    EXPECT_EQ(f.find_tensor("no.such.tensor"), nullptr);
    expect_tensors_inside(f);
    ++n;
  }
  EXPECT_EQ(n, 16);
}

TEST(Gguf, WriterRoundTripsEveryValueTypeAndTensor) {
  const fs::path path = temp_path("roundtrip.gguf");
  GgufArray inner1{GgufType::INT32, {GgufValue::of(int64_t(1)), GgufValue::of(int64_t(-2))}};
  GgufArray inner2{GgufType::INT32, {GgufValue::of(int64_t(3))}};
  GgufValue nested;
  nested.type = GgufType::ARRAY;
  nested.v = GgufArray{GgufType::ARRAY, {}};
  std::get<GgufArray>(nested.v).items.push_back({GgufType::ARRAY, inner1});
  std::get<GgufArray>(nested.v).items.push_back({GgufType::ARRAY, inner2});

  std::mt19937 rng(7);
  std::vector<float> f32(3 * 64);
  for (auto& x : f32) x = std::uniform_real_distribution<float>(-1, 1)(rng);
  std::vector<uint8_t> q40(2 * 2 * sizeof(block_q4_0));
  for (auto& b : q40) b = uint8_t(rng());
  std::vector<uint8_t> q4k(4 * sizeof(block_q4_K));
  for (auto& b : q4k) b = uint8_t(rng());
  {
    GgufWriter w(path.string());
    w.set("general.architecture", GgufValue::of(std::string("llama")));
    w.set("general.alignment", GgufValue::of(uint64_t(64), GgufType::UINT32));
    w.set("t.u8", GgufValue::of(uint64_t(200), GgufType::UINT8));
    w.set("t.i8", GgufValue::of(int64_t(-100), GgufType::INT8));
    w.set("t.u16", GgufValue::of(uint64_t(60000), GgufType::UINT16));
    w.set("t.i16", GgufValue::of(int64_t(-30000), GgufType::INT16));
    w.set("t.u32", GgufValue::of(uint64_t(4000000000u), GgufType::UINT32));
    w.set("t.i32", GgufValue::of(int64_t(-2000000000), GgufType::INT32));
    w.set("t.u64", GgufValue::of(uint64_t(1) << 63, GgufType::UINT64));
    w.set("t.i64", GgufValue::of(int64_t(-1) << 62, GgufType::INT64));
    w.set("t.f32", GgufValue::of(0.25, GgufType::FLOAT32));
    w.set("t.f64", GgufValue::of(1.0 / 3.0, GgufType::FLOAT64));
    w.set("t.bool", GgufValue::of(true));
    w.set("t.str", GgufValue::of(std::string("h\xc3\xa9llo\n")));
    w.set("t.strs", GgufValue::of(std::vector<std::string>{"a", "", "ccc"}));
    w.set("t.floats", GgufValue::of(std::vector<float>{1.5f, -2.0f}));
    w.set("t.ints", GgufValue::of(std::vector<int32_t>{7, 8, 9}));
    w.set("t.nested", nested);
    w.set("t.str", GgufValue::of(std::string("replaced")));  // same key: replaced in place
    w.add_tensor("a.weight", GgmlType::F32, {64, 3});
    w.add_tensor("b.weight", GgmlType::Q4_0, {64, 2});
    w.add_tensor("c.weight", GgmlType::Q4_K, {256, 2, 2});
    w.write_header();
    w.write_tensor_data(f32.data(), f32.size() * 4);
    w.write_tensor_data(q40.data(), q40.size());
    w.write_tensor_data(q4k.data(), q4k.size());
    w.finish();
  }
  GgufFile f = GgufFile::open(path.string());
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_int("general.alignment", 0), 64);
  EXPECT_EQ(f.get_int("t.u8", 0), 200);
  EXPECT_EQ(f.find("t.u8")->type, GgufType::UINT8);
  EXPECT_EQ(f.get_int("t.i8", 0), -100);
  EXPECT_EQ(f.get_int("t.u16", 0), 60000);
  EXPECT_EQ(f.get_int("t.i16", 0), -30000);
  EXPECT_EQ(f.get_int("t.u32", 0), 4000000000ll);
  EXPECT_EQ(f.get_int("t.i32", 0), -2000000000);
  EXPECT_EQ(std::get<uint64_t>(f.find("t.u64")->v), uint64_t(1) << 63);
  EXPECT_THROW(f.get_int("t.u64", 0), Error);  // does not fit int64
  EXPECT_EQ(f.get_int("t.i64", 0), int64_t(-1) << 62);
  EXPECT_EQ(f.get_float("t.f32", 0), 0.25);
  EXPECT_EQ(f.get_float("t.f64", 0), 1.0 / 3.0);
  EXPECT_TRUE(f.get_bool("t.bool", false));
  EXPECT_EQ(f.get_string("t.str"), "replaced");
  EXPECT_EQ(f.find("t.strs")->as_string_array(), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(f.find("t.floats")->as_float_array(), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(f.find("t.ints")->as_int_array(), (std::vector<int64_t>{7, 8, 9}));
  EXPECT_THROW(f.find("t.ints")->as_string_array(), Error);
  const GgufArray& outer = f.find("t.nested")->as_array();
  ASSERT_EQ(outer.elem_type, GgufType::ARRAY);
  ASSERT_EQ(outer.items.size(), 2u);
  EXPECT_EQ(outer.items[0].as_int_array(), (std::vector<int64_t>{1, -2}));
  EXPECT_EQ(outer.items[1].as_int_array(), (std::vector<int64_t>{3}));

  ASSERT_EQ(f.tensors().size(), 3u);
  const Tensor* a = f.find_tensor("a.weight");
  const Tensor* b = f.find_tensor("b.weight");
  const Tensor* c = f.find_tensor("c.weight");
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(a->shape_string(), "[64, 3]");
  EXPECT_EQ(c->shape_string(), "[256, 2, 2]");
  EXPECT_EQ(c->type, GgmlType::Q4_K);
  EXPECT_EQ(std::memcmp(a->data, f32.data(), f32.size() * 4), 0);
  EXPECT_EQ(std::memcmp(b->data, q40.data(), q40.size()), 0);
  EXPECT_EQ(std::memcmp(c->data, q4k.data(), q4k.size()), 0);
  for (const Tensor& t : f.tensors())
    EXPECT_EQ(size_t(static_cast<const uint8_t*>(t.data) - f.mapping()->data()) % 64, 0u);

  // Version 2 has the same layout for these types: the reader must accept it.
  {
    std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(4);
    const uint32_t v2 = 2;
    io.write(reinterpret_cast<const char*>(&v2), 4);
  }
  EXPECT_EQ(GgufFile::open(path.string()).version(), 2u);
  fs::remove(path);
}

TEST(Gguf, WriterRejectsMisuse) {
  const fs::path path = temp_path("misuse.gguf");
  {
    GgufWriter w(path.string());
    EXPECT_THROW(w.add_tensor("x", GgmlType::Q4_0, {33, 2}), Error);  // not a whole block
    EXPECT_THROW(w.add_tensor("x", GgmlType::Q8_A, {32}), Error);     // not a GGUF type
    w.add_tensor("x", GgmlType::F32, {4});
    w.write_header();
    float data[3] = {};
    EXPECT_THROW(w.write_tensor_data(data, sizeof data), Error);  // wrong size
    // Destroyed without finish(): the partial file is removed.
  }
  EXPECT_FALSE(fs::exists(path));
}
