// Broken model files: each must be a pensieve::Error whose message names the file and what is
// wrong, never a crash. Small broken files are generated in a temp folder from a valid one.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>

#include "formats/gguf_export.h"
#include "formats/model_loader.h"
#include "formats/model_tensors.h"
#include "formats/synth.h"
#include "testdata.h"
#include "util/error.h"

namespace fs = std::filesystem;
using namespace pensieve;

namespace {

fs::path temp_dir() {
  fs::path dir = fs::temp_directory_path() / ("pensieve_bad_file_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(s.data(), std::streamsize(s.size()));
}

ModelConfig small_llama() {
  ModelConfig c = synth_custom("llama", 2, 64, 128, 4, 2, 256);
  c.n_vocab = 64;
  return c;
}

// A valid small model, optionally edited: the tensor list (drop one, change a shape) and metadata.
fs::path write_model(const std::string& name,
                     const std::function<void(std::vector<ExportTensor>&)>& edit_tensors = {},
                     const std::function<void(GgufWriter&)>& edit_meta = {}) {
  const fs::path path = temp_dir() / name;
  const ModelConfig c = small_llama();
  GgufWriter w(path.string());
  set_model_metadata(w, c, *quant_recipe("f32"));
  if (edit_meta) edit_meta(w);
  std::vector<ExportTensor> tensors;
  for (const TensorSpec& s : model_tensor_specs(c)) {
    if (s.optional) continue;
    ExportTensor t;
    t.name = s.name;
    t.ne = s.ne;
    t.type = GgmlType::F32;
    tensors.push_back(t);
  }
  if (edit_tensors) edit_tensors(tensors);
  for (auto& t : tensors) {
    const int64_t cols = t.ne[0];
    t.fill = [cols](int64_t r0, int64_t r1, float* dst) {
      for (int64_t i = 0; i < (r1 - r0) * cols; ++i) dst[i] = 0.01f * float(i % 7);
    };
  }
  write_tensors_streaming(w, tensors, 1);
  return path;
}

// Position of a tensor's info record (just after its name) in a GGUF file's bytes.
size_t tensor_info_pos(const std::string& bytes, const std::string& name) {
  std::string key(8, '\0');
  const uint64_t n = name.size();
  std::memcpy(key.data(), &n, 8);
  key += name;
  const size_t at = bytes.find(key);
  EXPECT_NE(at, std::string::npos) << name;
  return at + key.size();
}

template <typename T>
void poke(std::string& bytes, size_t pos, T v) {
  std::memcpy(bytes.data() + pos, &v, sizeof(T));
}

// load_model must throw an Error mentioning every fragment.
void expect_error(const fs::path& p, std::initializer_list<std::string> fragments) {
  try {
    load_model(p.string());
    ADD_FAILURE() << p << ": loaded without error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
}

fs::path mutated(const fs::path& good, const std::string& name, const std::function<void(std::string&)>& edit) {
  std::string bytes = read_bytes(good);
  edit(bytes);
  const fs::path p = temp_dir() / name;
  write_bytes(p, bytes);
  return p;
}

}  // namespace

TEST(BadFile, ValidBaselineLoads) {
  const fs::path good = write_model("good.gguf");
  LoadedModel m = load_model(good.string());
  EXPECT_EQ(m.config.n_layers, 2);
  EXPECT_EQ(m.config.n_vocab, 64);
}

// general.alignment 1 is legal: tensors then sit at odd addresses and are copied, not misread.
TEST(BadFile, UnalignedTensorDataIsCopied) {
  const fs::path p = write_model("align1.gguf", {}, [](GgufWriter& w) {
    w.set("general.alignment", GgufValue::of(uint64_t(1), GgufType::UINT32));
    w.set("general.name", GgufValue::of(std::string("odd")));  // 3 bytes: shifts what follows
  });
  const LoadedModel m = load_model(p.string());
  const LoadedModel ref = load_model(write_model("align_ref.gguf").string());
  bool any_odd = false;
  for (const Tensor& t : m.gguf->tensors()) any_odd |= reinterpret_cast<uintptr_t>(t.data) % 4 != 0;
  EXPECT_TRUE(any_odd);
  for (const auto& [name, t] : m.weights.tensors()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 4, 0u) << name;
    EXPECT_EQ(std::memcmp(t.data, ref.weights.require(name).data, t.nbytes), 0) << name;
  }
}

TEST(BadFile, TruncatedAnywhere) {
  const fs::path good = write_model("good.gguf");
  const std::string bytes = read_bytes(good);
  std::vector<size_t> cuts = {0, 3, 4, 7, 8, 15, 23, 24, bytes.size() / 2, bytes.size() - 1};
  for (size_t c = 25; c < 3000 && c < bytes.size(); c += 37) cuts.push_back(c);
  for (size_t cut : cuts) {
    SCOPED_TRACE(cut);
    const fs::path p = temp_dir() / "truncated.gguf";
    write_bytes(p, bytes.substr(0, cut));
    expect_error(p, {p.string()});
  }
}

TEST(BadFile, WrongMagicAndVersion) {
  const fs::path good = write_model("good.gguf");
  expect_error(mutated(good, "magic.gguf", [](std::string& b) { b[0] = 'X'; }), {"magic"});
  expect_error(mutated(good, "version.gguf", [](std::string& b) { poke<uint32_t>(b, 4, 99); }),
               {"version 99"});
  expect_error(mutated(good, "v1.gguf", [](std::string& b) { poke<uint32_t>(b, 4, 1); }),
               {"version 1"});
}

TEST(BadFile, TensorDataOutOfBounds) {
  const fs::path good = write_model("good.gguf");
  const fs::path p = mutated(good, "oob.gguf", [](std::string& b) {
    const size_t at = tensor_info_pos(b, "blk.1.ffn_down.weight");
    poke<uint64_t>(b, at + 4 + 16 + 4, uint64_t(1) << 40);  // n_dims, 2 dims, type, offset
  });
  expect_error(p, {"blk.1.ffn_down.weight", "outside the file"});
}

TEST(BadFile, OverflowingSizes) {
  const fs::path good = write_model("good.gguf");
  const fs::path dims = mutated(good, "overflow.gguf", [](std::string& b) {
    const size_t at = tensor_info_pos(b, "blk.0.attn_q.weight");
    poke<uint64_t>(b, at + 4, uint64_t(1) << 40);
    poke<uint64_t>(b, at + 12, uint64_t(1) << 40);
  });
  expect_error(dims, {"blk.0.attn_q.weight", "overflow"});
  const fs::path negative = mutated(good, "negative.gguf", [](std::string& b) {
    poke<uint64_t>(b, tensor_info_pos(b, "blk.0.attn_q.weight") + 4, ~uint64_t(0));
  });
  expect_error(negative, {"blk.0.attn_q.weight", "dimension"});
  const fs::path count = mutated(good, "count.gguf", [](std::string& b) { poke<uint64_t>(b, 8, ~uint64_t(0)); });
  expect_error(count, {"tensor count"});
  const fs::path rank = mutated(good, "rank.gguf", [](std::string& b) {
    poke<uint32_t>(b, tensor_info_pos(b, "blk.0.attn_q.weight"), 9);
  });
  expect_error(rank, {"blk.0.attn_q.weight", "rank 9"});
}

TEST(BadFile, UnknownTypeAndPartialBlock) {
  const fs::path good = write_model("good.gguf");
  const fs::path type = mutated(good, "type.gguf", [](std::string& b) {
    poke<uint32_t>(b, tensor_info_pos(b, "output.weight") + 4 + 16, 99);
  });
  expect_error(type, {"output.weight", "type id 99"});
  const fs::path ours = mutated(good, "q8a.gguf", [](std::string& b) {
    poke<uint32_t>(b, tensor_info_pos(b, "output.weight") + 4 + 16, 1000);  // Q8_A is not GGUF
  });
  expect_error(ours, {"output.weight", "type id 1000"});
  // A 48-wide F32 tensor relabelled Q4_0: its rows are not whole 32-blocks.
  const fs::path p = write_model("odd.gguf", [](std::vector<ExportTensor>& ts) {
    ts.push_back({"extra.weight", {48, 2}, GgmlType::F32, {}, {}, nullptr});
  });
  const fs::path partial = mutated(p, "partial.gguf", [](std::string& b) {
    poke<uint32_t>(b, tensor_info_pos(b, "extra.weight") + 4 + 16, uint32_t(GgmlType::Q4_0));
  });
  expect_error(partial, {"extra.weight", "not a multiple"});
}

TEST(BadFile, BrokenMetadata) {
  const fs::path good = write_model("good.gguf");
  const fs::path key = mutated(good, "keylen.gguf", [](std::string& b) { poke<uint64_t>(b, 24, uint64_t(1) << 50); });
  expect_error(key, {"past the end"});
  const fs::path arch = write_model("arch.gguf", {}, [](GgufWriter& w) {
    w.set("general.architecture", GgufValue::of(std::string("gpt5")));
  });
  expect_error(arch, {"unsupported architecture 'gpt5'"});
  const fs::path arch_type = write_model("arch_type.gguf", {}, [](GgufWriter& w) {
    w.set("general.architecture", GgufValue::of(int64_t(3)));
  });
  expect_error(arch_type, {"general.architecture"});
  const fs::path missing = write_model("nokey.gguf", {}, [](GgufWriter& w) {
    w.set("llama.block_count", GgufValue::of(std::string("two")));
  });
  expect_error(missing, {"llama.block_count"});
  const fs::path wide = write_model("wide.gguf", {}, [](GgufWriter& w) {
    w.set("llama.attention.key_length", GgufValue::of(uint64_t(4096), GgufType::UINT32));
  });
  expect_error(wide, {"head dimension 4096"});
  const fs::path array = write_model("array.gguf", {}, [](GgufWriter& w) {
    w.set("zz.array", GgufValue::of(std::vector<int32_t>{1, 2, 3}));
  });
  const fs::path huge = mutated(array, "huge_array.gguf", [](std::string& b) {
    const size_t at = b.find("zz.array") + 8 + 4 + 4;  // key, value type, element type
    poke<uint64_t>(b, at, uint64_t(1) << 61);
  });
  expect_error(huge, {"zz.array", "does not fit"});
}

TEST(BadFile, MissingTensorAndWrongShape) {
  const fs::path missing = write_model("missing.gguf", [](std::vector<ExportTensor>& ts) {
    std::erase_if(ts, [](const ExportTensor& t) { return t.name == "blk.1.ffn_gate.weight"; });
  });
  expect_error(missing, {missing.string(), "missing tensor 'blk.1.ffn_gate.weight'"});
  const fs::path shape = write_model("shape.gguf", [](std::vector<ExportTensor>& ts) {
    for (auto& t : ts)
      if (t.name == "blk.0.attn_k.weight") t.ne = {64, 48};
  });
  expect_error(shape, {shape.string(), "blk.0.attn_k.weight", "[64, 48]", "expected [64, 32]"});
}

TEST(BadFile, BrokenSafetensorsAndConfig) {
  PENSIEVE_REQUIRE_TESTDATA();
  const fs::path src = test::testdata_dir() / "models" / "tiny-llama-dev";
  const std::string config = read_bytes(src / "config.json");
  const std::string model = read_bytes(src / "model.safetensors");
  uint64_t header_len;
  std::memcpy(&header_len, model.data(), 8);
  const std::string header = model.substr(8, size_t(header_len));
  auto folder = [&](const std::string& name, const std::string& cfg, const std::string& st) {
    const fs::path d = temp_dir() / name;
    fs::create_directories(d);
    write_bytes(d / "config.json", cfg);
    write_bytes(d / "model.safetensors", st);
    return d;
  };
  auto with_header = [&](std::string h) {
    h.resize(size_t(header_len), ' ');
    return model.substr(0, 8) + h + model.substr(8 + size_t(header_len));
  };
  auto replace = [](std::string s, const std::string& from, const std::string& to) {
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  std::string huge_len = model;
  poke<uint64_t>(huge_len, 0, uint64_t(1) << 40);
  expect_error(folder("st_len", config, huge_len), {"model.safetensors", "header length"});
  expect_error(folder("st_short", config, model.substr(0, 5)), {"too short"});
  expect_error(folder("st_json", config, with_header("{\"a\": [1, 2")), {"not valid JSON"});
  expect_error(folder("st_trunc", config, model.substr(0, model.size() - 100)), {"data_offsets"});
  expect_error(folder("st_dtype", config, with_header(replace(header, "\"F32\"", "\"Q99\""))),
               {"unknown dtype 'Q99'"});
  expect_error(folder("st_i32", config, with_header(replace(header, "\"F32\"", "\"I32\""))),
               {"dtype I32"});
  expect_error(folder("st_shape", config, with_header(replace(header, "[512,128]", "[512,127]"))),
               {"span"});
  expect_error(folder("cfg_json", "{ not json", model), {"config.json", "invalid JSON"});
  expect_error(folder("cfg_arch", replace(config, "\"llama\"", "\"gpt2\""), model),
               {"unsupported architecture 'gpt2'"});
  expect_error(folder("cfg_field", replace(config, "\"hidden_size\": 128", "\"hidden_size\": \"x\""), model),
               {"hidden_size"});
  expect_error(folder("cfg_shape", replace(config, "\"intermediate_size\": 352", "\"intermediate_size\": 350"), model),
               {"blk.0.ffn_gate.weight", "expected [128, 350]"});
  expect_error(folder("cfg_rope", replace(config, "\"default\"", "\"yarn\""), model), {"yarn"});
  const fs::path empty = temp_dir() / "empty_folder";
  fs::create_directories(empty);
  expect_error(empty, {"no config.json"});
  expect_error(temp_dir() / "does-not-exist.gguf", {"does-not-exist.gguf"});
}

TEST(BadFile, BrokenMlxQuantization) {
  PENSIEVE_REQUIRE_TESTDATA();
  const fs::path src = test::testdata_dir() / "models" / "tiny-phi3-mlx4-dev";
  std::string config = read_bytes(src / "config.json");
  const fs::path d = temp_dir() / "mlx3";
  fs::create_directories(d);
  fs::copy_file(src / "model.safetensors", d / "model.safetensors", fs::copy_options::overwrite_existing);
  const size_t at = config.find("\"bits\": 4");
  ASSERT_NE(at, std::string::npos);
  write_bytes(d / "config.json", std::string(config).replace(at, 9, "\"bits\": 3"));
  expect_error(d, {"3-bit"});
  const size_t g = config.find("\"group_size\": 32");
  ASSERT_NE(g, std::string::npos);
  write_bytes(d / "config.json", std::string(config).replace(g, 16, "\"group_size\": 64"));
  expect_error(d, {"scales shape"});
}

// Random corruptions of a valid file (bounded count, fixed seed): every outcome is a load or an
// Error, never a crash or another exception type. Run under the sanitizers in CI.
TEST(BadFile, RandomCorruptionsNeverCrash) {
  const fs::path good = write_model("good.gguf");
  const std::string bytes = read_bytes(good);
  const size_t header_end = tensor_info_pos(bytes, "blk.1.ffn_down.weight") + 32;
  std::mt19937_64 rng(1234);
  int errors = 0;
  for (int iter = 0; iter < 300; ++iter) {
    std::string b = bytes;
    const int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      const size_t pos = rng() % header_end;
      switch (rng() % 3) {
        case 0: b[pos] = char(rng()); break;
        case 1: b[pos] = char(0xff); break;
        default: b[pos] = char(b[pos] ^ (1 << (rng() % 8))); break;
      }
    }
    if (rng() % 8 == 0) b.resize(rng() % b.size());
    const fs::path p = temp_dir() / "fuzz.gguf";
    write_bytes(p, b);
    try {
      load_model(p.string());
    } catch (const Error&) {
      ++errors;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "iteration " << iter << ": non-Error exception: " << e.what();
    }
  }
  EXPECT_GT(errors, 100);
}

// The same for safetensors headers (JSON) and config.json: byte corruptions give a load or an Error.
TEST(BadFile, RandomSafetensorsCorruptionsNeverCrash) {
  PENSIEVE_REQUIRE_TESTDATA();
  const fs::path src = test::testdata_dir() / "models" / "tiny-qwen2-dev";
  const std::string model = read_bytes(src / "model.safetensors");
  const std::string config = read_bytes(src / "config.json");
  uint64_t header_len;
  std::memcpy(&header_len, model.data(), 8);
  const fs::path d = temp_dir() / "st_fuzz";
  fs::create_directories(d);
  std::mt19937_64 rng(99);
  int errors = 0;
  for (int iter = 0; iter < 200; ++iter) {
    std::string st = model, cfg = config;
    std::string& target = iter % 4 == 0 ? cfg : st;
    const size_t span = iter % 4 == 0 ? cfg.size() : size_t(8 + header_len);
    for (int k = 0, n = 1 + int(rng() % 3); k < n; ++k) {
      const size_t pos = rng() % span;
      target[pos] = rng() % 2 ? char(rng()) : "0123456789[]{}\",:-e"[rng() % 19];
    }
    write_bytes(d / "model.safetensors", st);
    write_bytes(d / "config.json", cfg);
    try {
      load_model(d.string());
    } catch (const Error&) {
      ++errors;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "iteration " << iter << ": non-Error exception: " << e.what();
    }
  }
  EXPECT_GT(errors, 50);
}

TEST(BadFile, CommandLineExitsNonZeroWithTheMessage) {
  PENSIEVE_REQUIRE_TESTDATA();
  const fs::path good = write_model("good.gguf");
  const fs::path bad = mutated(good, "cli_bad.gguf", [](std::string& b) { b.resize(b.size() / 3); });
  const fs::path err = temp_dir() / "stderr.txt";
  const std::string bin = test::pensieve_binary();
  // `synth --vocab` reads a GGUF; `logits --model` loads a model (when that command is built).
  std::vector<std::string> cmds = {bin + " synth --preset tiny --vocab " + bad.string() + " --out " +
                                   (temp_dir() / "unused.gguf").string()};
  const fs::path help = temp_dir() / "help.txt";
  std::system((bin + " --help >" + help.string() + " 2>&1").c_str());
  if (read_bytes(help).find(" logits ") != std::string::npos)
    cmds.push_back(bin + " logits --model " + bad.string() + " --ids 1,2 --out " +
                   (temp_dir() / "logits.f32").string());
  for (const auto& cmd : cmds) {
    SCOPED_TRACE(cmd);
    const int rc = std::system((cmd + " >/dev/null 2>" + err.string()).c_str());
    EXPECT_NE(rc, 0);
    const std::string msg = read_bytes(err);
    EXPECT_NE(msg.find("error:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cli_bad.gguf"), std::string::npos) << msg;
  }
}
