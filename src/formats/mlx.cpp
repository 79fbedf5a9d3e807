#include "formats/mlx.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <cstring>
#include <algorithm>
#include <map>
#include <thread>


#include "formats/hf_config.h"
#include "util/error.h"
#include "util/fp16.h"
#include "util/mapped_file.h"

namespace pensieve {

using nlohmann::json;

MlxQuant parse_mlx_quantization(const json& q, const std::string& source) {
  if (!q.is_object()) throw Error(source + ": field 'quantization' must be an object");
  MlxQuant m;
  auto get = [&](const char* k, int def) {
    if (!q.contains(k)) return def;
    if (!q[k].is_number_integer()) throw Error(source + ": quantization." + k + " must be an integer");
    return q[k].get<int>();
  };
  m.group_size = get("group_size", 64);
  m.bits = get("bits", 4);
  if (m.bits != 4 && m.bits != 8)
    throw Error(source + ": MLX " + std::to_string(m.bits) +
                "-bit quantization is not supported (supported: 4 and 8 bits)");
  if (m.group_size <= 0 || m.group_size % QK != 0)
    throw Error(source + ": MLX group size " + std::to_string(m.group_size) +
                " is not supported (must be a multiple of 32)");
  return m;
}

GgmlType mlx_block_type(const MlxQuant& q) {
  if (q.bits == 8) return GgmlType::Q8_A;
  return q.group_size % QK_A == 0 ? GgmlType::Q4_A : GgmlType::Q4_1;
}

namespace {

// 32 MLX nibbles (16 bytes: byte i holds values 2i low and 2i + 1 high) to the Q4_1 half-block
// order (byte i holds values i low and i + 16 high).
inline void mlx_nibbles_to_q4(const uint32_t* words, uint8_t* out) {
#if defined(__SSE2__)
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(words));
  const __m128i m4 = _mm_set1_epi8(0x0F);
  const __m128i even = _mm_and_si128(v, m4), odd = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
  // Values in order: 0..15 then 16..31; each byte < 16, so a 16-bit shift moves no bit across bytes.
  const __m128i first = _mm_unpacklo_epi8(even, odd), second = _mm_unpackhi_epi8(even, odd);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_or_si128(first, _mm_slli_epi16(second, 4)));
#else
  for (int i = 0; i < 8; ++i) {
    out[i] = uint8_t(((words[0] >> (4 * i)) & 0xF) | (((words[2] >> (4 * i)) & 0xF) << 4));
    out[i + 8] = uint8_t(((words[1] >> (4 * i)) & 0xF) | (((words[3] >> (4 * i)) & 0xF) << 4));
  }
#endif
}

}  // namespace

void mlx_repack_row(const uint32_t* words, const uint16_t* scales, const uint16_t* biases,
                    int64_t cols, const MlxQuant& q, void* dst) {
  const int64_t blocks_per_group = q.group_size / QK;
  if (mlx_block_type(q) == GgmlType::Q4_A) {
    // 64 values = 8 words; a group of 128 or more gives each of its Q4_A blocks the same scale.
    auto* out = static_cast<block_q4_a*>(dst);
    const int64_t per_group = q.group_size / QK_A;
    for (int64_t b = 0; b < cols / QK_A; ++b, words += 8) {
      out[b].d = scales[b / per_group];
      out[b].m = biases[b / per_group];
      mlx_nibbles_to_q4(words, out[b].qs);
      mlx_nibbles_to_q4(words + 4, out[b].qs + 16);
    }
    return;
  }
  if (q.bits == 4) {
    // 32 values = 4 words of 8 nibbles; Q4_1 byte i holds value i (low) and value i + 16 (high).
    auto* out = static_cast<block_q4_1*>(dst);
    for (int64_t b = 0; b < cols / QK; ++b, words += 4) {
      const int64_t g = b / blocks_per_group;
      out[b].d = scales[g];
      out[b].m = biases[g];
      mlx_nibbles_to_q4(words, out[b].qs);
    }
    return;
  }
  // 8 bits: 32 values = 8 words of 4 bytes, little-endian, so the bytes are the values in order.
  auto* out = static_cast<block_q8_a*>(dst);
  for (int64_t b = 0; b < cols / QK; ++b, words += 8) {
    const int64_t g = b / blocks_per_group;
    out[b].d = f16_to_f32(scales[g]);
    // w = s*q + b = s*(q - 128) + (b + 128 s): the int8 form our kernels take.
    out[b].m = f16_to_f32(biases[g]) + 128.0f * out[b].d;
    uint8_t bytes[QK];
    std::memcpy(bytes, words, QK);
    for (int i = 0; i < QK; ++i) out[b].qs[i] = int8_t(int(bytes[i]) - 128);
  }
}

namespace {

struct Located {
  const SafetensorsFile* file;
  const SafetensorsTensor* tensor;
};

// The quantization of one module: a per-module override in config.json, else the folder's.
MlxQuant module_quant(const json& quantization, const std::string& module, const MlxQuant& base,
                      const std::string& source) {
  if (quantization.contains(module) && quantization[module].is_object())
    return parse_mlx_quantization(quantization[module], source + " (" + module + ")");
  return base;
}

// One quantized module to repack: its three file tensors (views into mappings the weight store
// keeps), its quantization, where it goes.
struct RepackJob {
  std::string module, canonical, path;
  SafetensorsTensor wt, sc, bi;
  MlxQuant q;
  int64_t rows = 0, cols = 0;
  size_t offset = 0;  // into the arena
};

// Checks the dtypes and shapes of a job's tensors and sets its rows and cols.
void check_job(RepackJob& job) {
  const std::string& module = job.module;
  const MlxQuant& q = job.q;
  const std::string& path = job.path;
  auto bad = [&](const std::string& what) {
    return Error(path + ": MLX tensor '" + module + "': " + what);
  };
  const SafetensorsTensor& W = job.wt;
  const SafetensorsTensor& S = job.sc;
  const SafetensorsTensor& B = job.bi;
  if (W.dtype != "U32") throw bad("packed weight has dtype " + W.dtype + ", expected U32");
  const bool bf16 = S.dtype == "BF16";
  if ((S.dtype != "F16" && !bf16) || B.dtype != S.dtype)
    throw bad("scales/biases have dtype " + S.dtype + "/" + B.dtype + ", expected F16 or BF16 (both alike)");
  if (W.shape.size() != 2 || S.shape.size() != 2 || B.shape != S.shape)
    throw bad("expected 2-D weight, scales and biases of equal shape");
  const int64_t rows = W.shape[0];
  const int64_t cols = W.shape[1] * (32 / q.bits);
  if (S.shape[0] != rows || cols % q.group_size != 0 || S.shape[1] != cols / q.group_size)
    throw bad("scales shape [" + std::to_string(S.shape[0]) + ", " + std::to_string(S.shape[1]) +
              "] does not match " + std::to_string(rows) + " rows of " + std::to_string(cols) +
              " inputs in groups of " + std::to_string(q.group_size));
  job.rows = rows;
  job.cols = cols;
}

void repack_tensor(const RepackJob& job, uint8_t* dst) {
  const SafetensorsTensor& W = job.wt;
  const SafetensorsTensor& S = job.sc;
  const SafetensorsTensor& B = job.bi;
  const MlxQuant& q = job.q;
  const bool bf16 = S.dtype == "BF16";
  const int64_t rows = job.rows, cols = job.cols;
  const GgmlType type = mlx_block_type(q);
  const size_t row_bytes = row_size(type, cols);
  const auto* words = reinterpret_cast<const uint32_t*>(W.data);
  const auto* scales = reinterpret_cast<const uint16_t*>(S.data);
  const auto* biases = reinterpret_cast<const uint16_t*>(B.data);
  const int64_t wpr = W.shape[1], gpr = S.shape[1];
  // The mmap'd words may be unaligned (safetensors offsets are arbitrary): such rows, and bf16
  // scales, are copied a row at a time; aligned f16 rows (the usual case) are read in place.
  auto aligned = [](const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; };
  const bool in_place = !bf16 && aligned(words, 4) && aligned(scales, 2) && aligned(biases, 2);
  auto repack_rows = [&](int64_t r0, int64_t r1) {
    populate_pages(words + r0 * wpr, size_t((r1 - r0) * wpr) * 4);
    if (in_place) {
      for (int64_t r = r0; r < r1; ++r)
        mlx_repack_row(words + r * wpr, scales + r * gpr, biases + r * gpr, cols, q, dst + size_t(r) * row_bytes);
      return;
    }
    std::vector<uint32_t> wrow(static_cast<size_t>(wpr));
    std::vector<uint16_t> srow(static_cast<size_t>(gpr)), brow(static_cast<size_t>(gpr));
    for (int64_t r = r0; r < r1; ++r) {
      std::memcpy(wrow.data(), words + r * wpr, size_t(wpr) * 4);
      std::memcpy(srow.data(), scales + r * gpr, size_t(gpr) * 2);
      std::memcpy(brow.data(), biases + r * gpr, size_t(gpr) * 2);
      if (bf16)  // exact in f16 for |x| in [6e-5, 65504]; smaller scales lose low bits
        for (int64_t g = 0; g < gpr; ++g) {
          srow[size_t(g)] = f32_to_f16(bf16_to_f32(srow[size_t(g)]));
          brow[size_t(g)] = f32_to_f16(bf16_to_f32(brow[size_t(g)]));
        }
      mlx_repack_row(wrow.data(), srow.data(), brow.data(), cols, q, dst + size_t(r) * row_bytes);
    }
  };
  // Loading a multi-gigabyte MLX model is this loop: spread it over the cores.
  const int64_t n_threads =
      std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()), std::max<int64_t>(1, rows / 64));
  std::vector<std::thread> pool;
  for (int64_t k = 1; k < n_threads; ++k)
    pool.emplace_back(repack_rows, rows * k / n_threads, rows * (k + 1) / n_threads);
  repack_rows(0, rows / n_threads);
  for (auto& t : pool) t.join();
  // The file's pages were read once and are not needed again: the resident size stays one copy.
  for (const SafetensorsTensor* t : {&W, &S, &B}) release_pages(t->data, t->nbytes);
}

}  // namespace

void load_mlx_weights(const std::vector<SafetensorsFile>& files, const json& quantization,
                      const std::string& source, WeightStore& w, bool defer) {
  const MlxQuant base = parse_mlx_quantization(quantization, source);
  std::map<std::string, Located> all;
  for (const auto& f : files)
    for (const auto& t : f.tensors()) all[t.name] = {&f, &t};
  auto suffixed = [&](const std::string& module, const char* s) -> const Located* {
    auto it = all.find(module + s);
    return it == all.end() ? nullptr : &it->second;
  };
  std::vector<RepackJob> jobs;
  for (const auto& [name, loc] : all) {
    const size_t dot = name.rfind('.');
    if (dot == std::string::npos) continue;
    const std::string module = name.substr(0, dot), suffix = name.substr(dot);
    if (suffix != ".weight" && suffix != ".bias") continue;
    const auto canonical = canonical_tensor_name(name);
    if (!canonical) continue;
    const Located* sc = suffix == ".weight" ? suffixed(module, ".scales") : nullptr;
    if (!sc) {
      if (loc.tensor->dtype == "U32")
        throw Error(loc.file->path() + ": MLX tensor '" + name + "' is packed but has no " +
                    module + ".scales");
      add_safetensors_weight(*loc.file, *loc.tensor, *canonical, w);
      continue;
    }
    const Located* bi = suffixed(module, ".biases");
    if (!bi) throw Error(loc.file->path() + ": MLX tensor '" + module + "' has scales but no biases");
    RepackJob job{module, *canonical, loc.file->path(), *loc.tensor, *sc->tensor, *bi->tensor,
                  module_quant(quantization, module, base, source)};
    check_job(job);
    jobs.push_back(std::move(job));
  }
  // One buffer for every repacked matrix, on 2 MB pages: a 2 GB model then costs a thousand page
  // faults at load, not half a million, and no per-tensor tail page is wasted.
  size_t total = 0;
  for (RepackJob& job : jobs) {
    job.offset = total;
    total += (row_size(mlx_block_type(job.q), job.cols) * size_t(job.rows) + 63) / 64 * 64;
  }
  uint8_t* arena = total ? w.add_buffer(total, AlignedBuffer::Pages::Huge) : nullptr;
  for (const RepackJob& job : jobs) {
    Tensor t;
    t.name = job.canonical;
    t.type = mlx_block_type(job.q);
    t.n_dims = 2;
    t.ne[0] = job.cols;
    t.ne[1] = job.rows;
    t.data = arena + job.offset;
    t.nbytes = row_size(t.type, job.cols) * size_t(job.rows);
    if (defer) {
      w.add_deferred(std::move(t), [job, dst = arena + job.offset] { repack_tensor(job, dst); });
    } else {
      repack_tensor(job, arena + job.offset);
      w.add(std::move(t));
    }
  }
  if (defer)
    for (const auto& f : files) w.keep_alive(f.mapping());
}

}  // namespace pensieve
