// The CUDA backend against the CPU one: every op x weight type on random inputs of real and odd
// shapes (each error printed), then the reference models end to end. Skips, saying why, on a
// build without CUDA or a machine without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "reference.h"
#include "solo_decode.h"
#include "testdata.h"

namespace pensieve {
namespace {

namespace fs = std::filesystem;

#define REQUIRE_GPU()                                                                   \
  do {                                                                                  \
    if (!cuda_compiled()) GTEST_SKIP() << "built without the CUDA backend";             \
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU visible on this machine"; \
  } while (0)

// ||a - b|| / ||b||; NaN anywhere fails.
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// A weight tensor of `type` quantized from random floats, with the storage it points into.
struct HostWeight {
  Tensor t;
  std::vector<uint8_t> bytes;
  std::vector<float> deq;  // what the CPU dequantizes it to: the reference's weights
};

HostWeight make_weight(GgmlType type, int rows, int cols, std::mt19937& rng) {
  HostWeight w;
  w.t.name = "w";
  w.t.type = type;
  w.t.n_dims = 2;
  w.t.ne[0] = cols;
  w.t.ne[1] = rows;
  const std::vector<float> src = random_floats(size_t(rows) * cols, rng, 0.05f);
  w.bytes.resize(row_size(type, cols) * size_t(rows));
  for (int r = 0; r < rows; ++r)
    kernels::quantize_row(type, src.data() + size_t(r) * cols, w.bytes.data() + row_size(type, cols) * r, cols);
  w.t.data = w.bytes.data();
  w.t.nbytes = w.bytes.size();
  w.deq.resize(src.size());
  for (int r = 0; r < rows; ++r) kernels::dequantize_row(type, w.t.row(r), w.deq.data() + size_t(r) * cols, cols);
  return w;
}

// x (n rows, ldx apart, `cols` used) with each 32-value block rounded as the GPU's int8 GEMV does:
// q = round-to-even(v * (127 / max|v|)), value q * (max|v| / 127).
std::vector<float> int8_blocks(const std::vector<float>& x, int n, int64_t ldx, int cols) {
  std::vector<float> out = x;
  for (int t = 0; t < n; ++t)
    for (int b = 0; b + 32 <= cols; b += 32) {
      const float* v = x.data() + t * ldx + b;
      float amax = 0.0f;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[i]));
      const float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
      for (int i = 0; i < 32; ++i) out[size_t(t * ldx + b + i)] = std::nearbyint(v[i] * id) * d;
    }
  return out;
}

ModelConfig small_config() {
  ModelConfig c;
  c.n_vocab = 100;
  c.dim = 96;
  c.n_layers = 2;
  c.n_heads = 6;
  c.n_kv_heads = 2;
  c.head_dim = 48;
  c.ff_dim = 160;
  c.rope.n_rot = 32;  // partial rotary: the last 16 dims of each head stay
  c.rope.style = RopeStyle::RotateHalf;
  return c;
}

TEST(CudaOps, MatmulEveryTypeMatchesTheCpu) {
  REQUIRE_GPU();
  std::mt19937 rng(7);
  const GgmlType types[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1,
                            GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q8_A, GgmlType::Q4_A,
                            GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};
  // (rows, cols): odd row counts, one K-quant super-block, Phi-3's attention output shape,
  // (Q4_0 / Q8_0) a row of 13 blocks of 32 (the Q4_0 GEMM's steps of 4 blocks and a partial one),
  // and (Q4_0) a row of 257 blocks (a one-token GEMV of 8 blocks a lane: a second, partial round).
  const std::pair<int, int> shapes[] = {{37, 256}, {130, 512}, {3072, 3072}, {45, 416}, {41, 8224}};
  const int token_counts[] = {1, 3, 5, 9, 40, 100};
  // Batches of 17..128 tokens on Q4_0 take the fp16 tensor-core GEMM that dequantizes in registers
  // where the weight has no fp16 copy: tested here on every batch (PENSIEVE_CUDA_Q4_GEMM=2).
  setenv("PENSIEVE_CUDA_Q4_GEMM", "2", 1);
  ModelConfig cfg = small_config();
  for (GgmlType type : types) {
    for (auto [rows, cols] : shapes) {
      if (rows == 3072 && type != GgmlType::Q4_0 && type != GgmlType::Q4_K && type != GgmlType::Q6_K &&
          type != GgmlType::Q8_0 && type != GgmlType::F16)
        continue;
      if (cols == 416 && type != GgmlType::Q4_0 && type != GgmlType::Q8_0) continue;
      if (cols == 8224 && type != GgmlType::Q4_0) continue;
      HostWeight w = make_weight(type, rows, cols, rng);
      // Q4_K and Q5_K: the int8 GEMV on the repacked copy, and on the file layout (a GPU without
      // the room for the copy, PENSIEVE_CUDA_KPACK=0).
      const bool k45 = type == GgmlType::Q4_K || type == GgmlType::Q5_K;
      for (const char* kpack : {"1", "0"}) {
        if (!k45 && kpack[0] == '0') continue;
        setenv("PENSIEVE_CUDA_KPACK", kpack, 1);
        auto gpu = make_cuda_backend(cfg, 0);
        unsetenv("PENSIEVE_CUDA_KPACK");
        const int id = gpu->add_weight(w.t, WeightUse::Matmul);
        gpu->finish_load();
        ThreadPool pool(1);
        for (int n : token_counts) {
          if (kpack[0] == '0' && n > 16) continue;  // the GEMM paths do not read the copy
          if (n == 100 && rows == 3072) continue;  // two token tiles of the Q4_0 GEMM: the small shapes suffice
          // Strides wider than the rows, as in the model; n = 3 takes an unaligned one (staged copy).
          const int64_t ldx = n == 3 ? cols + 1 : cols + 4, ldy = rows + 3;
          const std::vector<float> x = random_floats(size_t(n) * ldx, rng);
          // The serving GEMV on Q4_0 / Q8_0 / Q4_K / Q5_K / Q6_K takes x rounded to int8 per 32-value block (scale
          // max|x| / 127, ties to even): its reference multiplies by that rounded x.
          const std::vector<float> xi8 = int8_blocks(x, n, ldx, cols);
          auto reference = [&](const std::vector<float>& xs) {
            std::vector<float> ref(size_t(n) * rows);
            for (int t = 0; t < n; ++t)
              for (int r = 0; r < rows; ++r) {
                double s = 0;
                for (int c = 0; c < cols; ++c) s += double(w.deq[size_t(r) * cols + c]) * xs[size_t(t) * ldx + c];
                ref[size_t(t) * rows + r] = float(s);
              }
            return ref;
          };
          const std::vector<float> ref_f32 = reference(x), ref_i8 = reference(xi8);
          for (bool exact : {true, false}) {
            auto pass = gpu->begin_pass({}, pool);
            float* dx = pass->buffer(Act::XN, x.size());
            float* dy = pass->buffer(Act::Tmp, size_t(n) * ldy);
            pass->write(dx, x.data(), x.size());
            std::vector<float> poison(size_t(n) * ldy, NAN);
            pass->write(dy, poison.data(), poison.size());
            pass->matmul(id, dx, ldx, n, dy, ldy, exact);
            std::vector<float> got(size_t(n) * ldy), packed(size_t(n) * rows);
            pass->read(dy, got.data(), got.size());
            for (int t = 0; t < n; ++t)
              std::copy_n(got.begin() + t * ldy, rows, packed.begin() + size_t(t) * rows);
            // GEMV: float32 arithmetic (on int8-rounded x for the serving Q4_0 / Q8_0 / Q4_K / Q5_K / Q6_K path); the
            // cuBLAS path rounds weights and activations to fp16.
            // Batches of 5..128 tokens on Q4_0: the fp16 tensor-core GEMM, which rounds as the cuBLAS path does;
            // of more than 6 on the other types: cuBLAS (CudaBackend::gemv_max).
            const bool gemm = !exact && n > (type == GgmlType::Q4_0 ? 4 : 6);
            const bool q4 = gemm && n <= 128 && type == GgmlType::Q4_0;
            const bool i8 = !exact && !gemm && (type == GgmlType::Q4_0 || type == GgmlType::Q8_0 || type == GgmlType::Q4_K ||
                                                type == GgmlType::Q5_K || type == GgmlType::Q6_K);
            const double err = rel_err(packed, i8 ? ref_i8 : ref_f32);
            const double bound = gemm ? 3e-3 : 1e-5;
            std::printf("[ matmul %-5s %4dx%-4d n=%-3d %s%s ] rel err %.3g\n", std::string(type_name(type)).c_str(),
                        rows, cols, n, q4 ? "gemm-q4" : gemm ? "gemm" : i8 ? "gemv-i8" : "gemv",
                        k45 && i8 ? (kpack[0] == '1' ? " repacked" : " file layout") : "", err);
            EXPECT_LT(err, bound) << type_name(type) << " " << rows << "x" << cols << " n=" << n << " KPACK=" << kpack;
            // The int8 rounding itself stays within what the CPU's 8-bit serving path loses.
            if (i8) {
              EXPECT_LT(rel_err(packed, ref_f32), 2e-2) << type_name(type) << " " << rows << "x" << cols;
            }
          }
        }
      }
    }
  }
  unsetenv("PENSIEVE_CUDA_Q4_GEMM");
}

// A matrix stacked from parts (Backend::add_stacked: separate q, k, v or gate and up) gives each
// part's rows as the part alone does: the same bits for one token (each row's sums are its own),
// within float32 rounding for a batch (a GEMM may split its k range by the matrix's size). Parts
// that do not stack (another width or type) are refused, and the CPU backend stacks nothing (its
// weights stay mapped).
TEST(CudaOps, StackedMatrixEqualsItsParts) {
  REQUIRE_GPU();
  std::mt19937 rng(17);
  const ModelConfig cfg = small_config();
  const int cols = 512, part_rows[] = {96, 64, 32};
  for (GgmlType type : {GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::F16}) {
    std::vector<HostWeight> parts;
    for (int r : part_rows) parts.push_back(make_weight(type, r, cols, rng));
    const Tensor* const ptrs[] = {&parts[0].t, &parts[1].t, &parts[2].t};
    HostWeight other = make_weight(type, 32, cols + 256, rng);
    const Tensor* const mismatched[] = {&parts[0].t, &other.t};
    auto cpu = make_cpu_backend(cfg);
    EXPECT_EQ(cpu->add_stacked(ptrs, WeightUse::Matmul), -1);
    auto gpu = make_cuda_backend(cfg, 0);
    EXPECT_EQ(gpu->add_stacked(mismatched, WeightUse::Matmul), -1);
    const int stacked = gpu->add_stacked(ptrs, WeightUse::Matmul);
    ASSERT_GE(stacked, 0);
    int ids[3];
    for (int i = 0; i < 3; ++i) ids[i] = gpu->add_weight(parts[size_t(i)].t, WeightUse::Matmul);
    gpu->finish_load();
    ThreadPool pool(1);
    const int rows = 96 + 64 + 32;
    for (int n : {1, 9}) {
      const std::vector<float> x = random_floats(size_t(n) * cols, rng);
      auto pass = gpu->begin_pass({}, pool);
      float* dx = pass->buffer(Act::XN, x.size());
      float* dy = pass->buffer(Act::Tmp, size_t(n) * rows);
      float* dp = pass->buffer(Act::FFB, size_t(n) * rows);
      pass->write(dx, x.data(), x.size());
      pass->matmul(stacked, dx, cols, n, dy, rows, false);
      for (int i = 0, r0 = 0; i < 3; r0 += part_rows[i], ++i)
        pass->matmul(ids[i], dx, cols, n, dp + r0, rows, false);
      std::vector<float> whole(size_t(n) * rows), apart(size_t(n) * rows);
      pass->read(dy, whole.data(), whole.size());
      pass->read(dp, apart.data(), apart.size());
      if (n == 1) {
        EXPECT_TRUE(whole == apart) << type_name(type) << ": one token";
      } else {
        EXPECT_LT(rel_err(whole, apart), 1e-5) << type_name(type) << ": " << n << " tokens";
      }
    }
  }
}

// One decode token through the chain of a layer's feed-forward half and the next norm, as the
// model runs it: rmsnorm -> gate+up matmul -> silu_mul -> down matmul -> add into the residual ->
// rmsnorm -> matmul, on each int8-GEMV type. The fused kernels (add + rmsnorm, rmsnorm or silu_mul
// + int8 rounding) and the silu_mul + int8 rounding in the gate + up GEMV's store (with or without
// the norm's factor) give the separate ops' results (PENSIEVE_CUDA_FUSE=0) bit for bit (and leaving
// the silu_mul kernel out then changes nothing: the store ran); the add +
// rmsnorm done in the down GEMV's store (NormEpi, on by default) changes them (so it ran); all
// stay within 3e-3 of a float64 reference that rounds each GEMV's input to int8 as the GPU does
// (an int8 rounding that flips between float32 and float64 costs ~1e-3; none: ~1e-7).
TEST(CudaOps, FusedDecodeChainMatchesTheCpu) {
  REQUIRE_GPU();
  std::mt19937 rng(13);
  const int dim = 512, ff = 768;
  const GgmlType types[] = {GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};
  // PENSIEVE_CUDA_FUSE, PENSIEVE_CUDA_NORM_EPI, PENSIEVE_CUDA_SILU_EPI, PENSIEVE_CUDA_DEBUG_SKIP; the
  // last two leave any silu_mul kernel out (results wrong unless the GEMV's store did it).
  const char* const configs[][4] = {{"1", "1", "1", "0"}, {"1", "0", "1", "0"}, {"0", "0", "0", "0"},
                                    {"1", "1", "0", "0"}, {"1", "1", "1", "4"}, {"1", "1", "0", "4"}};
  constexpr size_t kChecked = 4;  // configurations compared with the reference
  for (GgmlType type : types) {
    HostWeight up = make_weight(type, 2 * ff, dim, rng), down = make_weight(type, dim, ff, rng);
    const std::vector<float> gain = random_floats(dim, rng), x0 = random_floats(dim, rng, 2.0f);
    // The reference, in float64 on int8-rounded inputs.
    auto norm = [&](const std::vector<float>& x) {
      double ss = 0;
      for (float v : x) ss += double(v) * v;
      const double scale = 1.0 / std::sqrt(ss / dim + 1e-5);
      std::vector<float> y(dim);
      for (int i = 0; i < dim; ++i) y[size_t(i)] = float(x[size_t(i)] * scale * gain[size_t(i)]);
      return int8_blocks(y, 1, dim, dim);
    };
    auto matvec = [](const HostWeight& w, int rows, int cols, const std::vector<float>& x) {
      std::vector<float> y(static_cast<size_t>(rows));
      for (int r = 0; r < rows; ++r) {
        double s = 0;
        for (int c = 0; c < cols; ++c) s += double(w.deq[size_t(r) * cols + c]) * x[size_t(c)];
        y[size_t(r)] = float(s);
      }
      return y;
    };
    std::vector<float> ref_x = x0;
    const std::vector<float> gu = matvec(up, 2 * ff, dim, norm(ref_x));
    std::vector<float> h(static_cast<size_t>(ff));
    for (int i = 0; i < ff; ++i) {
      const double a = gu[size_t(i)];
      h[size_t(i)] = float(a / (1.0 + std::exp(-a)) * gu[size_t(ff + i)]);
    }
    const std::vector<float> d = matvec(down, dim, ff, int8_blocks(h, 1, ff, ff));
    for (int i = 0; i < dim; ++i) ref_x[size_t(i)] += d[size_t(i)];
    const std::vector<float> ref_out = matvec(up, 2 * ff, dim, norm(ref_x));

    std::vector<std::vector<float>> outs, xs;
    for (const auto& c : configs) {
      setenv("PENSIEVE_CUDA_FUSE", c[0], 1);
      setenv("PENSIEVE_CUDA_NORM_EPI", c[1], 1);
      setenv("PENSIEVE_CUDA_SILU_EPI", c[2], 1);
      setenv("PENSIEVE_CUDA_DEBUG_SKIP", c[3], 1);
      auto gpu = make_cuda_backend(small_config(), 0);
      unsetenv("PENSIEVE_CUDA_FUSE");
      unsetenv("PENSIEVE_CUDA_NORM_EPI");
      unsetenv("PENSIEVE_CUDA_SILU_EPI");
      unsetenv("PENSIEVE_CUDA_DEBUG_SKIP");
      const int id_up = gpu->add_weight(up.t, WeightUse::Matmul), id_down = gpu->add_weight(down.t, WeightUse::Matmul);
      ASSERT_EQ(gpu->add_vector(gain), 0);
      gpu->finish_load();
      ThreadPool pool(1);
      std::vector<float> out(size_t(2) * ff), x(static_cast<size_t>(dim));
      // Twice: the second pass replays the first one's CUDA graph.
      for (int rep = 0; rep < 2; ++rep) {
        auto pass = gpu->begin_pass({}, pool);
        float* dx = pass->buffer(Act::X, size_t(dim));
        float* dxn = pass->buffer(Act::XN, size_t(dim));
        float* dtmp = pass->buffer(Act::Tmp, size_t(dim));
        float* dff = pass->buffer(Act::FFB, size_t(2) * ff);
        float* dout = pass->buffer(Act::Logits, size_t(2) * ff);
        pass->write(dx, x0.data(), x0.size());
        pass->rmsnorm(dx, 0, dxn, 1, dim, 1e-5f);
        pass->matmul(id_up, dxn, dim, 1, dff, 2 * ff, false);
        pass->silu_mul(dff, 1, ff);
        pass->matmul(id_down, dff, 2 * ff, 1, dtmp, dim, false);
        pass->add(dx, dtmp, size_t(dim));
        pass->rmsnorm(dx, 0, dxn, 1, dim, 1e-5f);
        pass->matmul(id_up, dxn, dim, 1, dout, 2 * ff, false);
        pass->read(dout, out.data(), out.size());
        pass->read(dx, x.data(), x.size());
      }
      outs.push_back(out);
      xs.push_back(x);
    }
    EXPECT_TRUE(outs[1] == outs[2] && xs[1] == xs[2]) << type_name(type) << ": fused differs from separate";
    EXPECT_TRUE(outs[0] == outs[3] && xs[0] == xs[3]) << type_name(type) << ": the silu_mul store differs";
    // Leaving the silu_mul kernel out changes nothing where the store does its work, and breaks
    // the kernel's chain.
    EXPECT_TRUE(outs[4] == outs[0] && xs[4] == xs[0]) << type_name(type) << ": the silu_mul store did not run";
    EXPECT_TRUE(xs[5] != xs[3]) << type_name(type) << ": PENSIEVE_CUDA_DEBUG_SKIP=4 left nothing out";
    EXPECT_TRUE(outs[0] != outs[1]) << type_name(type) << ": the norm in the down GEMV's store did not run";
    EXPECT_TRUE(xs[0] == xs[1]) << type_name(type) << ": the residual differs";  // the same add
    for (size_t i = 0; i < kChecked; ++i) {
      const double err_x = rel_err(xs[i], ref_x), err = rel_err(outs[i], ref_out);
      std::printf("[ fused decode chain %-5s FUSE=%s NORM_EPI=%s SILU_EPI=%s ] rel err residual %.3g, output %.3g\n",
                  std::string(type_name(type)).c_str(), configs[i][0], configs[i][1], configs[i][2], err_x, err);
      EXPECT_LT(err_x, 3e-3) << type_name(type);
      EXPECT_LT(err, 3e-3) << type_name(type);
    }
  }
}

TEST(CudaOps, VectorOpsMatchTheCpu) {
  REQUIRE_GPU();
  std::mt19937 rng(11);
  const ModelConfig cfg = small_config();
  auto cpu = make_cpu_backend(cfg);
  auto gpu = make_cuda_backend(cfg, 0);
  const int rows = 5, dim = 3000, ff = 777;
  const std::vector<float> w = random_floats(dim, rng), bias = random_floats(dim, rng);
  for (Backend* b : {cpu.get(), gpu.get()}) {
    ASSERT_EQ(b->add_vector(w), 0);
    ASSERT_EQ(b->add_vector(bias), 1);
    b->finish_load();
  }
  const std::vector<float> x = random_floats(size_t(rows) * dim, rng, 3.0f);
  const std::vector<float> y = random_floats(size_t(rows) * dim, rng);
  const std::vector<float> g = random_floats(size_t(rows) * 2 * ff, rng, 2.0f);
  ThreadPool pool(1);
  auto run = [&](Backend& b, const char* op) {
    auto pass = b.begin_pass({}, pool);
    float* dx = pass->buffer(Act::X, x.size());
    float* dy = pass->buffer(Act::XN, x.size());
    float* dg = pass->buffer(Act::FFB, g.size());
    pass->write(dx, x.data(), x.size());
    pass->write(dy, y.data(), y.size());
    pass->write(dg, g.data(), g.size());
    std::vector<float> out;
    const std::string o = op;
    if (o == "rmsnorm") pass->rmsnorm(dx, 0, dy, rows, dim, 1e-5f);
    if (o == "add") pass->add(dy, dx, x.size());
    if (o == "add_bias") pass->add_bias(dy, dim, rows, 1);
    if (o == "silu_mul") {
      pass->silu_mul(dg, rows, ff);
      out.resize(g.size());
      pass->read(dg, out.data(), out.size());
      return out;
    }
    out.resize(y.size());
    pass->read(dy, out.data(), out.size());
    return out;
  };
  for (const char* op : {"rmsnorm", "add", "add_bias", "silu_mul"}) {
    const double err = rel_err(run(*gpu, op), run(*cpu, op));
    std::printf("[ %-8s ] rel err %.3g\n", op, err);
    EXPECT_LT(err, 1e-6) << op;
  }
}

// RoPE (both pair layouts, LongRoPE's two factor sets), the KV store and paged attention: two
// sequences of different lengths (the longer one spans several 64-key tiles), their blocks
// interleaved in one pool, prefilled in one pass (the tiled kernels), then a second pass with a
// decode token (the split kernel) and a 3-token continuation (a tile); with PENSIEVE_CUDA_ATTN=0
// the one-block-a-token kernel does all, with 2 the float32 tiles serve the fp16 cache too.
constexpr KvType kKvTypes[] = {KvType::F16, KvType::F32, KvType::Q8};

TEST(CudaOps, RopeKvAndAttentionMatchTheCpu) {
  REQUIRE_GPU();
  // "split": the tiles on tensor cores and every lone token's attention split over a block a 32-key
  // chunk (flash decoding; the 150-position sequence's decode token over 5 blocks, some empty).
  for (const char* mode : {"1", "2", "0", "split"}) {
    const bool split = std::strcmp(mode, "split") == 0;
    const char* attn = split ? "1" : mode;
    setenv("PENSIEVE_CUDA_ATTN", attn, 1);
    setenv("PENSIEVE_CUDA_SPLIT_CHUNKS", split ? "1" : "8", 1);
    for (int variant = 0; variant < 3; ++variant) {
      std::mt19937 rng(100 + variant);
      ModelConfig cfg = small_config();
      if (variant == 1) cfg.rope.style = RopeStyle::Interleaved;
      if (variant == 2) {
        cfg.rope.scaling = RopeScaling::LongRope;
        cfg.rope.original_ctx = 20;
        cfg.rope.short_factor = random_floats(16, rng);
        cfg.rope.long_factor = random_floats(16, rng);
        for (float& f : cfg.rope.short_factor) f = 1.0f + std::fabs(f);
        for (float& f : cfg.rope.long_factor) f = 1.0f + 4.0f * std::fabs(f);
        cfg.rope.attn_factor = 1.19f;
        cfg.sliding_window = 13;
      }
      const int q_dim = cfg.n_heads * cfg.head_dim, kv_dim = cfg.n_kv_heads * cfg.head_dim;
      const int qkv_dim = q_dim + 2 * kv_dim;
      const int lens[] = {150, 37};
      int T = 0;
      for (int n : lens) T += n;
      const std::vector<float> qkv = random_floats(size_t(T) * qkv_dim, rng);
      // The second pass: one decode token of the first sequence and three tokens of the second (a
      // lone token and a tile in one pass).
      const int n_dec[] = {1, 3};
      const std::vector<float> qkv_dec = random_floats(size_t(n_dec[0] + n_dec[1]) * qkv_dim, rng);
      std::vector<std::vector<float>> outs, rotated, decs;
      for (bool use_gpu : {false, true}) {
        auto b = use_gpu ? make_cuda_backend(cfg, 0) : make_cpu_backend(cfg);
        b->finish_load();
        for (KvType kt : kKvTypes) {
          KvPool kv(cfg, 60, 4, kt);
          std::vector<std::unique_ptr<SequenceState>> seqs;
          for (int s = 0; s < 2; ++s) seqs.push_back(std::make_unique<SequenceState>(kv));
          for (int i = 0; i < 60; ++i) seqs[size_t(i % 5 == 1 ? 1 : 0)]->blocks.push_back(i);
          ThreadPool pool(2);
          {
            std::vector<PassSlot> slots;
            for (int s = 0; s < 2; ++s)
              for (int p = 0; p < lens[s]; ++p) slots.push_back({seqs[size_t(s)].get(), p, variant == 2 && s == 0});
            auto pass = b->begin_pass(slots, pool);
            float* d_qkv = pass->buffer(Act::QKV, qkv.size());
            float* d_out = pass->buffer(Act::Att, size_t(T) * q_dim);
            pass->write(d_qkv, qkv.data(), qkv.size());
            for (int layer = 0; layer < cfg.n_layers; ++layer) pass->rope_and_store_kv(layer, d_qkv);
            pass->attention(1, d_qkv, d_out);
            std::vector<float> out(size_t(T) * q_dim), rot(qkv.size());
            pass->read(d_out, out.data(), out.size());
            pass->read(d_qkv, rot.data(), rot.size());
            outs.push_back(out);
            rotated.push_back(rot);
          }
          {
            std::vector<PassSlot> slots;
            for (int s = 0; s < 2; ++s)
              for (int i = 0; i < n_dec[s]; ++i)
                slots.push_back({seqs[size_t(s)].get(), lens[s] + i, variant == 2 && s == 0});
            const size_t n = slots.size();
            auto pass = b->begin_pass(slots, pool);
            float* d_qkv = pass->buffer(Act::QKV, qkv_dec.size());
            float* d_out = pass->buffer(Act::Att, n * q_dim);
            pass->write(d_qkv, qkv_dec.data(), qkv_dec.size());
            for (int layer = 0; layer < cfg.n_layers; ++layer) pass->rope_and_store_kv(layer, d_qkv);
            pass->attention(1, d_qkv, d_out);
            std::vector<float> out(n * q_dim);
            pass->read(d_out, out.data(), out.size());
            decs.push_back(out);
          }
        }
      }
      // The rope ran once per layer on the same buffer (twice rotated): compare both backends.
      const size_t nk = std::size(kKvTypes);
      for (size_t f = 0; f < nk; ++f) {
        const double e_rope = rel_err(rotated[nk + f], rotated[f]);
        const double e_att = rel_err(outs[nk + f], outs[f]);
        const double e_dec = rel_err(decs[nk + f], decs[f]);
        std::printf("[ rope+attention kernels %s variant %d kv %s ] rope rel err %.3g, attention rel err %.3g, "
                    "decode attention rel err %.3g\n",
                    mode, variant, kv_type_name(kKvTypes[f]), e_rope, e_att, e_dec);
        EXPECT_LT(e_rope, 1e-5);
        // An fp16 or Q8 cache's tiles run on tensor cores, q, the probabilities and Q8's widened
        // rows rounded to fp16; a Q8 row rounded from a key or value the backends' RoPE left one
        // bit apart may round to a neighbouring int8 value.
        const bool q8 = kKvTypes[f] == KvType::Q8;
        const double tile_bound = q8 ? 2e-3 : kKvTypes[f] == KvType::F16 && attn[0] == '1' ? 1e-3 : 1e-5;
        EXPECT_LT(e_att, tile_bound);
        EXPECT_LT(e_dec, tile_bound);
      }
    }
  }
  unsetenv("PENSIEVE_CUDA_ATTN");
  unsetenv("PENSIEVE_CUDA_SPLIT_CHUNKS");
}

// Decode steps of many lone tokens (windows of one to 22 32-key chunks, a sliding window, LongRoPE,
// grouped and plain heads, head dims 64 to 128) against the CPU, with the tokens' RoPE and KV store done by
// the attention kernel and by the RoPE kernel (PENSIEVE_CUDA_ROPE_ATTN=0). The second step has one
// sequence twice, its tokens apart in the pass, so that its later token's window holds a row the
// same pass wrote (which keeps the RoPE kernel); the third has three tokens (the kernels of steps
// of at most kSplitEarly tokens).
TEST(CudaOps, DecodeAttentionOfLoneTokensMatchesTheCpu) {
  REQUIRE_GPU();
  struct Shape {
    int head_dim, n_heads, n_kv_heads, window, block_size;
    bool long_rope;  // LongRoPE factors, the even sequences with the long ones
  };
  for (const Shape sh :
       {Shape{96, 4, 4, 0, 16, false}, Shape{64, 8, 2, 150, 16, true}, Shape{128, 2, 1, 0, 4, false}}) {
    ModelConfig cfg = small_config();
    cfg.head_dim = sh.head_dim;
    cfg.n_heads = sh.n_heads;
    cfg.n_kv_heads = sh.n_kv_heads;
    cfg.dim = sh.head_dim * sh.n_heads;
    cfg.rope.n_rot = sh.head_dim;
    cfg.sliding_window = sh.window;
    if (sh.long_rope) {
      std::mt19937 frng(31);
      cfg.rope.scaling = RopeScaling::LongRope;
      cfg.rope.original_ctx = 20;
      cfg.rope.short_factor = random_floats(size_t(sh.head_dim / 2), frng);
      cfg.rope.long_factor = random_floats(size_t(sh.head_dim / 2), frng);
      for (float& f : cfg.rope.short_factor) f = 1.0f + std::fabs(f);
      for (float& f : cfg.rope.long_factor) f = 1.0f + 4.0f * std::fabs(f);
      cfg.rope.attn_factor = 1.19f;
    }
    auto long_of = [&](int s) { return sh.long_rope && s % 2 == 0; };
    const int q_dim = cfg.n_heads * cfg.head_dim, kv_dim = cfg.n_kv_heads * cfg.head_dim;
    const int qkv_dim = q_dim + 2 * kv_dim;
    const std::vector<int> lens = {1, 3, 17, 64, 127, 128, 129, 300, 700};
    const int n_seq = int(lens.size());
    std::vector<int> needed;  // blocks a sequence needs (its prompt and three tokens more)
    int blocks_needed = 0;
    for (int n : lens) {
      needed.push_back((n + 4 + sh.block_size - 1) / sh.block_size);
      blocks_needed += needed.back();
    }
    // step 0: every sequence's next token; step 1: every sequence's next but the last's, which
    // comes first and last in the pass; step 2: three sequences' next (the short steps' kernels).
    std::vector<std::vector<std::pair<int, int>>> steps(3);  // (sequence, position)
    for (int s = 0; s < n_seq; ++s) steps[0].push_back({s, lens[size_t(s)]});
    steps[1].push_back({n_seq - 1, lens.back() + 1});
    for (int s = 0; s < n_seq - 1; ++s) steps[1].push_back({s, lens[size_t(s)] + 1});
    steps[1].push_back({n_seq - 1, lens.back() + 2});
    steps[2] = {{0, lens[0] + 2}, {4, lens[4] + 2}, {n_seq - 1, lens.back() + 3}};
    std::mt19937 rng(7 + sh.head_dim);
    int total = 0;
    for (int n : lens) total += n;
    const std::vector<float> qkv_prompt = random_floats(size_t(total) * qkv_dim, rng);
    std::vector<std::vector<float>> qkv_steps;
    for (const auto& st : steps) qkv_steps.push_back(random_floats(st.size() * qkv_dim, rng));
    // outs[variant][kv type][step]: variant 0 the CPU, 1 the GPU, 2 the GPU with the RoPE kernel.
    std::vector<std::vector<std::vector<std::vector<float>>>> outs(3);
    for (int variant = 0; variant < 3; ++variant) {
      setenv("PENSIEVE_CUDA_ROPE_ATTN", variant == 2 ? "0" : "1", 1);
      auto b = variant == 0 ? make_cpu_backend(cfg) : make_cuda_backend(cfg, 0);
      b->finish_load();
      for (KvType kt : kKvTypes) {
        KvPool kv(cfg, blocks_needed, sh.block_size, kt);
        std::vector<std::unique_ptr<SequenceState>> seqs;
        for (int s = 0; s < n_seq; ++s) seqs.push_back(std::make_unique<SequenceState>(kv));
        // Blocks handed out round-robin, so that no long sequence's blocks are contiguous.
        for (int i = 0, s = 0; i < blocks_needed; s = (s + 1) % n_seq)
          if (int(seqs[size_t(s)]->blocks.size()) < needed[size_t(s)]) seqs[size_t(s)]->blocks.push_back(i++);
        ThreadPool pool(2);
        {
          std::vector<PassSlot> slots;
          for (int s = 0; s < n_seq; ++s)
            for (int p = 0; p < lens[size_t(s)]; ++p) slots.push_back({seqs[size_t(s)].get(), p, long_of(s)});
          auto pass = b->begin_pass(slots, pool);
          float* d_qkv = pass->buffer(Act::QKV, qkv_prompt.size());
          float* d_out = pass->buffer(Act::Att, size_t(total) * q_dim);
          pass->write(d_qkv, qkv_prompt.data(), qkv_prompt.size());
          pass->rope_and_store_kv(0, d_qkv);
          pass->attention(0, d_qkv, d_out);
          std::vector<float> out(size_t(total) * q_dim);
          pass->read(d_out, out.data(), out.size());
        }
        std::vector<std::vector<float>> per_step;
        for (size_t k = 0; k < steps.size(); ++k) {
          std::vector<PassSlot> slots;
          for (const auto& [s, p] : steps[k]) slots.push_back({seqs[size_t(s)].get(), p, long_of(s)});
          auto pass = b->begin_pass(slots, pool);
          float* d_qkv = pass->buffer(Act::QKV, qkv_steps[k].size());
          float* d_out = pass->buffer(Act::Att, slots.size() * q_dim);
          pass->write(d_qkv, qkv_steps[k].data(), qkv_steps[k].size());
          pass->rope_and_store_kv(0, d_qkv);
          pass->attention(0, d_qkv, d_out);
          std::vector<float> out(slots.size() * q_dim);
          pass->read(d_out, out.data(), out.size());
          per_step.push_back(out);
        }
        outs[size_t(variant)].push_back(per_step);
      }
    }
    unsetenv("PENSIEVE_CUDA_ROPE_ATTN");
    for (size_t f = 0; f < std::size(kKvTypes); ++f)
      for (size_t k = 0; k < steps.size(); ++k) {
        const double e_cpu = rel_err(outs[1][f][k], outs[0][f][k]);
        const double e_rope = rel_err(outs[1][f][k], outs[2][f][k]);
        std::printf("[ decode attention of %zu tokens, head_dim %d, %d/%d heads, window %d%s, kv %s, step %zu ] rel "
                    "err %.3g against the CPU, %.3g against the RoPE kernel's\n",
                    steps[k].size(), sh.head_dim, sh.n_heads, sh.n_kv_heads, sh.window, sh.long_rope ? ", LongRoPE" : "",
                    kv_type_name(kKvTypes[f]), k, e_cpu, e_rope);
        // fp16 / Q8: rows rounded from keys and values the backends' RoPE left a bit apart may
        // round to neighbouring values (as in RopeKvAndAttentionMatchTheCpu).
        EXPECT_LT(e_cpu, kKvTypes[f] == KvType::Q8 ? 2e-3 : kKvTypes[f] == KvType::F16 ? 1e-3 : 1e-5);
        // The same rotated rows and q; a token split over blocks (the 700-position one) may differ
        // in a last bit, the kernel that also rotates compiling the blocks' merge to other roundings.
        EXPECT_LT(e_rope, 1e-6);
      }
  }
}

// ---------------------------------------------------------------------------------------------
// Reference models: the GPU gives the CPU's logits within tolerance, the same greedy tokens with
// float32 activations and KV cache, and batched decoding equals solo decoding.

std::vector<std::string> model_dirs() {
  std::vector<std::string> out;
  const fs::path root = test::testdata_dir();
  for (const char* sub : {"models", "gguf"}) {
    if (!fs::exists(root / sub)) continue;
    for (const auto& e : fs::directory_iterator(root / sub))
      if (fs::exists(e.path() / "reference.json")) out.push_back(std::string(sub) + "/" + e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  if (out.empty()) out.push_back("none");
  return out;
}

std::string model_path(const std::string& name) {
  const fs::path dir = test::testdata_dir() / name;
  return (fs::exists(dir / "model.gguf") ? dir / "model.gguf" : dir).string();
}

class CudaModel : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaModel, SameLogitsAndGreedyTokensAsTheCpu) {
  PENSIEVE_REQUIRE_TESTDATA();
  REQUIRE_GPU();
  const auto cpu = Model::load(model_path(GetParam()), "cpu");
  const auto gpu = Model::load(model_path(GetParam()), "cuda");
  const ModelConfig& cfg = cpu->config();
  ThreadPool pool(2);
  for (const auto& ref : test::read_references(test::testdata_dir() / GetParam())) {
    for (const test::Mode& mode : test::kModes) {
      const bool exact = mode.exact;
      std::vector<std::vector<float>> logits;
      std::vector<std::vector<int32_t>> greedy;
      for (const Model* m : {cpu.get(), gpu.get()}) {
        SequenceState st(cfg, int(ref.input_ids.size()) + 16, mode.kv);
        st.exact_activations = exact;
        std::vector<float> l;
        m->forward(st, ref.input_ids, true, l, pool);
        logits.push_back(l);
        std::vector<float> last(l.end() - cfg.n_vocab, l.end());
        std::vector<int32_t> g;
        for (int i = 0; i < 8; ++i) {
          const int32_t next = int32_t(std::max_element(last.begin(), last.end()) - last.begin());
          g.push_back(next);
          m->forward(st, std::span<const int32_t>(&next, 1), false, last, pool);
        }
        greedy.push_back(g);
      }
      const double err = rel_err(logits[1], logits[0]);
      std::printf("[ %s %s %s ] GPU vs CPU logits rel err %.3g, greedy %s\n", GetParam().c_str(), ref.name.c_str(),
                  mode.name, err, greedy[0] == greedy[1] ? "equal" : "DIFFERENT");
      // Exact: both float32 up to summation order. Serving: the CPU quantizes activations to 8
      // bits and the GPU's prefill rounds to fp16, each ~1e-3 per matmul. Q8 cache: the same int8
      // rows but where the backends' keys and values, a bit apart, round to neighbouring values,
      // and the GPU's prefill widens the rows to fp16.
      const bool q8 = mode.kv == KvType::Q8;
      EXPECT_LT(err, q8 ? 1e-2 : exact ? 1e-4 : 5e-2) << ref.name;
      if (exact && !q8) {
        EXPECT_EQ(greedy[0], greedy[1]) << ref.name;
      }
    }
  }
}

TEST_P(CudaModel, BatchedDecodeEqualsSoloDecode) {
  PENSIEVE_REQUIRE_TESTDATA();
  REQUIRE_GPU();
  const auto model = Model::load(model_path(GetParam()), "cuda");
  const ModelConfig& cfg = model->config();
  const size_t vocab = size_t(cfg.n_vocab);
  ThreadPool pool(1);
  const auto refs = test::read_references(test::testdata_dir() / GetParam());
  const std::vector<int32_t> longest = test::longest_prompt(refs);
  ASSERT_GE(longest.size(), 12u);
  const std::vector<std::vector<int32_t>> prompts = test::batch_prompts(longest, 12);
  constexpr int kSteps = 5;
  for (const test::Mode& mode : test::kModes) {
    SCOPED_TRACE(mode.name);
    const bool exact = mode.exact;
    const auto solo = test::solo_greedy_logits(*model, prompts, kSteps, exact, pool, mode.kv);
    // The same prompts prefilled together, then decoded together, from one shared pool.
    KvPool kv(cfg, 64, 4, mode.kv);
    BlockManager blocks(64);
    const auto seqs = test::pool_sequences(kv, prompts.size(), exact);
    std::vector<std::vector<int32_t>> tokens = prompts;
    double worst = 0;
    for (int step = 0; step < kSteps; ++step) {
      const std::vector<BatchItem> items = test::batch_step(seqs, tokens, blocks);
      std::vector<float> logits(prompts.size() * vocab);
      model->forward_batch(items, logits.data(), pool);
      for (size_t s = 0; s < prompts.size(); ++s) {
        const std::vector<float> l(logits.begin() + s * vocab, logits.begin() + (s + 1) * vocab);
        if (exact) {
          ASSERT_TRUE(l == solo[s][size_t(step)]) << "sequence " << s << " step " << step;
        }
        worst = std::max(worst, rel_err(l, solo[s][size_t(step)]));
        tokens[s].push_back(int32_t(std::max_element(solo[s][size_t(step)].begin(), solo[s][size_t(step)].end()) -
                                    solo[s][size_t(step)].begin()));
      }
    }
    std::printf("[ %s batched vs solo %s ] worst rel err %.3g\n", GetParam().c_str(), mode.name, worst);
    // Serving: a batch's prefill may take the fp16 GEMM path where a lone one takes the GEMV,
    // which on Q4_0 / Q8_0 rounds activations to int8 (as the CPU's serving path does): the two
    // roundings differ by up to ~4e-2 on these 256-wide models, as far as GPU and CPU may differ.
    if (exact) {
      EXPECT_EQ(worst, 0.0);
    } else {
      EXPECT_LT(worst, 5e-2);
    }
  }
}

// The fused kernels (add + rmsnorm, rmsnorm or silu_mul + int8 rounding, the RoPE + KV store in
// the int8 qkv GEMV of every int8 type, the silu_mul in the gate + up GEMV's store) give the
// separate ops' results bit for bit: a prompt and a few decode steps with fusion on and off.
TEST_P(CudaModel, FusedOpsEqualSeparateOps) {
  PENSIEVE_REQUIRE_TESTDATA();
  REQUIRE_GPU();
  const auto refs = test::read_references(test::testdata_dir() / GetParam());
  const std::vector<int32_t> prompt = test::longest_prompt(refs);
  ThreadPool pool(1);
  // A Q8 cache too: fused, the decode attention rounds and stores the token's rows (not the RoPE
  // kernel).
  for (KvType kv : {KvType::F16, KvType::Q8}) {
    SCOPED_TRACE(kv_type_name(kv));
    // Separate, fused, and fused with the add + rmsnorm in the o / down GEMVs' store (NormEpi: the
    // norm's sum of squares added in another order, its factor applied to the next GEMV's sums).
    std::vector<std::vector<std::vector<float>>> runs;
    for (const char* fuse : {"0", "1", "epi"}) {
      setenv("PENSIEVE_CUDA_FUSE", fuse[0] == '0' ? "0" : "1", 1);
      setenv("PENSIEVE_CUDA_NORM_EPI", fuse[0] == 'e' ? "1" : "0", 1);
      const auto model = Model::load(model_path(GetParam()), "cuda");
      runs.push_back(test::solo_greedy_logits(*model, prompt, 4, /*exact=*/false, pool, kv));
    }
    unsetenv("PENSIEVE_CUDA_FUSE");
    unsetenv("PENSIEVE_CUDA_NORM_EPI");
    ASSERT_EQ(runs[0].size(), runs[1].size());
    ASSERT_EQ(runs[0].size(), runs[2].size());
    double worst = 0;
    for (size_t i = 0; i < runs[0].size(); ++i) {
      EXPECT_TRUE(runs[0][i] == runs[1][i]) << "step " << i;
      worst = std::max(worst, rel_err(runs[2][i], runs[1][i]));
    }
    std::printf("[ %s %s fused norm vs norm kernel ] worst rel err %.3g\n", GetParam().c_str(), kv_type_name(kv),
                worst);
    EXPECT_LT(worst, 5e-2);
  }
}

// A decode step shaped as the one before launches that step's graph as soon as its token ids are
// up and records its ops while it runs (Backend::launch_stats): the same logits, bit for bit, as
// recording first, and in a steady decode no launch is wasted.
TEST_P(CudaModel, EarlyLaunchEqualsRecordedLaunch) {
  PENSIEVE_REQUIRE_TESTDATA();
  REQUIRE_GPU();
  const auto refs = test::read_references(test::testdata_dir() / GetParam());
  const std::vector<int32_t> prompt = test::longest_prompt(refs);
  ThreadPool pool(1);
  constexpr int kSteps = 8;
  for (KvType kv : {KvType::F16, KvType::Q8}) {
    SCOPED_TRACE(kv_type_name(kv));
    std::vector<std::vector<std::vector<float>>> runs;
    std::vector<Backend::LaunchStats> stats;
    bool gathered = false;  // embedding rows gathered on the host (odd widths): no early launch
    for (const char* early : {"0", "1"}) {
      setenv("PENSIEVE_CUDA_EARLY_LAUNCH", early, 1);
      const auto model = Model::load(model_path(GetParam()), "cuda");
      unsetenv("PENSIEVE_CUDA_EARLY_LAUNCH");
      gathered = model->config().dim % 32 != 0;
      runs.push_back(test::solo_greedy_logits(*model, prompt, kSteps, /*exact=*/false, pool, kv));
      stats.push_back(model->backend().launch_stats());
    }
    ASSERT_EQ(runs[0].size(), runs[1].size());
    for (size_t i = 0; i < runs[0].size(); ++i) EXPECT_TRUE(runs[0][i] == runs[1][i]) << "step " << i;
    std::printf("[ %s %s early launch ] graph passes %lld, launched early %lld, wasted %lld\n", GetParam().c_str(),
                kv_type_name(kv), (long long)stats[1].graph_passes, (long long)stats[1].early,
                (long long)stats[1].early_wasted);
    EXPECT_EQ(stats[0].early, 0);
    // Decode steps 1 and 2 record and capture the step's graph; the later ones replay it.
    EXPECT_GE(stats[1].graph_passes, kSteps - 2);
    EXPECT_GE(stats[1].early, gathered ? 0 : stats[1].graph_passes - 1);
    EXPECT_EQ(stats[1].early_wasted, 0);
  }
}

// Logits read into the backend's own host memory (written there by a kernel of the pass, from its
// graph once decode steps replay one) are the ones a copy into ordinary memory gives: a prompt and
// greedy decode steps, read both ways from the same passes' results.
TEST_P(CudaModel, LogitsWrittenIntoHostMemoryEqualCopiedOnes) {
  PENSIEVE_REQUIRE_TESTDATA();
  REQUIRE_GPU();
  const auto refs = test::read_references(test::testdata_dir() / GetParam());
  const std::vector<int32_t> prompt = test::longest_prompt(refs);
  const auto model = Model::load(model_path(GetParam()), "cuda");
  ThreadPool pool(1);
  constexpr int kSteps = 6;
  HostFloats host(model->backend());
  const auto copied = test::solo_greedy_logits(*model, prompt, kSteps, /*exact=*/false, pool, KvType::F16);
  const auto written = test::solo_greedy_logits(*model, prompt, kSteps, /*exact=*/false, pool, KvType::F16,
                                                host.get(size_t(model->config().n_vocab)));
  ASSERT_EQ(copied.size(), written.size());
  for (size_t step = 0; step < copied.size(); ++step) EXPECT_TRUE(copied[step] == written[step]) << "step " << step;
}

// A batch decoding from a shared paged pool whose sequences' block tables grow as they go (the
// scheduler's way, a block every 4 positions here): launched early, its steps give the logits they
// give recorded first, and none is wasted, since no pointer a step's graph holds depends on how long
// the tables are.
TEST_P(CudaModel, EarlyLaunchWhileTablesGrow) {
  PENSIEVE_REQUIRE_TESTDATA();
  REQUIRE_GPU();
  const auto refs = test::read_references(test::testdata_dir() / GetParam());
  const std::vector<int32_t> longest = test::longest_prompt(refs);
  ASSERT_GE(longest.size(), 12u);
  const std::vector<std::vector<int32_t>> prompts = test::batch_prompts(longest, 12);
  ThreadPool pool(1);
  constexpr int kSteps = 14;
  std::vector<std::vector<float>> runs[2];
  Backend::LaunchStats stats[2];
  bool gathered = false;  // embedding rows gathered on the host (odd widths): no early launch
  for (int early = 0; early < 2; ++early) {
    setenv("PENSIEVE_CUDA_EARLY_LAUNCH", early ? "1" : "0", 1);
    const auto model = Model::load(model_path(GetParam()), "cuda");
    unsetenv("PENSIEVE_CUDA_EARLY_LAUNCH");
    const ModelConfig& cfg = model->config();
    gathered = cfg.dim % 32 != 0;
    const size_t vocab = size_t(cfg.n_vocab);
    KvPool kv(cfg, 64, 4, KvType::F16);
    BlockManager blocks(64);
    const auto seqs = test::pool_sequences(kv, prompts.size(), false);
    std::vector<std::vector<int32_t>> tokens = prompts;
    for (int step = 0; step < kSteps; ++step) {
      const std::vector<BatchItem> items = test::batch_step(seqs, tokens, blocks);
      std::vector<float> logits(prompts.size() * vocab);
      model->forward_batch(items, logits.data(), pool);
      for (size_t s = 0; s < prompts.size(); ++s) {
        const auto row = logits.begin() + std::ptrdiff_t(s * vocab);
        tokens[s].push_back(int32_t(std::max_element(row, row + std::ptrdiff_t(vocab)) - row));
      }
      runs[early].push_back(std::move(logits));
    }
    stats[early] = model->backend().launch_stats();
  }
  for (int step = 0; step < kSteps; ++step) EXPECT_TRUE(runs[0][size_t(step)] == runs[1][size_t(step)]) << "step " << step;
  std::printf("[ %s early launch, growing tables ] graph passes %lld, launched early %lld, wasted %lld\n",
              GetParam().c_str(), (long long)stats[1].graph_passes, (long long)stats[1].early,
              (long long)stats[1].early_wasted);
  EXPECT_EQ(stats[0].early, 0);
  // Step 0 is the prefill; decode steps 1 and 2 record and capture the step's graph.
  EXPECT_GE(stats[1].graph_passes, kSteps - 3);
  EXPECT_GE(stats[1].early, gathered ? 0 : stats[1].graph_passes - 1);
  EXPECT_EQ(stats[1].early_wasted, 0);
}

INSTANTIATE_TEST_SUITE_P(TestData, CudaModel, ::testing::ValuesIn(model_dirs()),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace_if(n.begin(), n.end(), [](char c) { return !std::isalnum(uint8_t(c)); }, '_');
                           return n;
                         });

}  // namespace
}  // namespace pensieve
