// Micro-benchmarks of the CPU kernels at Phi-3-mini shapes: decode matvec (n_tok = 1, reported as
// weight bytes/s, comparable with the read bandwidth measured alongside) and prefill matmul
// (n_tok = 64, reported as tokens/s and int8 MAC/s), each also from the 16-row packed layout
// (kernels/packed.h) where the CPU has AVX-512 VNNI. Run: build/pensieve_microbench
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "kernels/bandwidth.h"
#include "kernels/kernels.h"
#include "kernels/packed.h"
#include "util/cpu.h"
#include "util/thread_pool.h"

namespace pensieve {
namespace {

struct Shape {
  const char* name;
  int64_t in, out;
};
const Shape kShapes[] = {{"o_proj", 3072, 3072}, {"qkv", 3072, 9216}, {"gate_up", 3072, 16384},
                         {"down", 8192, 3072},   {"stream", 3072, 3072 * 128}};
const GgmlType kTypes[] = {GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K,
                           GgmlType::Q6_K, GgmlType::F16,  GgmlType::Q4_1, GgmlType::Q5_0,
                           GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::BF16, GgmlType::F32};

// A weight tensor of real blocks: 64 distinct quantized rows repeated (quantizing every row of a
// 50M-element matrix would dominate the run; the footprint, which is what matters, is the same).
struct BenchWeights {
  Tensor t;
  std::unique_ptr<uint8_t[]> data;
  BenchWeights(GgmlType type, int64_t in, int64_t out) {
    const size_t rb = row_size(type, in);
    data.reset(new (std::align_val_t(64)) uint8_t[rb * size_t(out)]);
    std::mt19937 rng(1);
    std::normal_distribution<float> g(0.0f, 0.02f);
    std::vector<float> row(static_cast<size_t>(in));
    for (int64_t r = 0; r < std::min<int64_t>(64, out); ++r) {
      for (auto& v : row) v = g(rng);
      kernels::quantize_row(type, row.data(), data.get() + size_t(r) * rb, in);
    }
    for (int64_t r = 64; r < out; ++r) std::memcpy(data.get() + size_t(r) * rb, data.get() + size_t(r % 64) * rb, rb);
    t.name = "bench";
    t.type = type;
    t.n_dims = 2;
    t.ne[0] = in;
    t.ne[1] = out;
    t.data = data.get();
    t.nbytes = rb * size_t(out);
  }
};

void matmul_bench(benchmark::State& state) {
  const GgmlType type = kTypes[state.range(0)];
  const Shape& s = kShapes[state.range(1)];
  const int threads = int(state.range(2)), n_tok = int(state.range(3));
  const bool packed = state.range(4) != 0;
  if (packed && (!kernels::packable(type) || !cpu_features().use_vnni())) {
    state.SkipWithError("no packed kernel for this type on this CPU");
    return;
  }
  BenchWeights W(type, s.in, s.out);
  ThreadPool pool(threads);
  const auto P = packed ? kernels::pack_matrix(W.t, pool) : nullptr;
  std::vector<float> x(size_t(s.in * n_tok)), y(size_t(s.out * n_tok));
  std::mt19937 rng(2);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (auto& v : x) v = g(rng);
  for (auto _ : state) {
    if (P) kernels::matmul_packed(*P, x.data(), s.in, n_tok, y.data(), s.out, pool);
    else kernels::matmul(W.t, x.data(), s.in, n_tok, y.data(), s.out, pool);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(std::string(type_name(type)) + (packed ? " packed " : " ") + s.name + " t" + std::to_string(threads) +
                 " n_tok " + std::to_string(n_tok));
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(W.t.nbytes));
  state.counters["tok/s"] = benchmark::Counter(double(state.iterations()) * n_tok, benchmark::Counter::kIsRate);
  state.counters["MAC/s"] = benchmark::Counter(double(state.iterations()) * n_tok * double(s.in * s.out),
                                               benchmark::Counter::kIsRate);
}

// Read bandwidth: every thread sums its share of a 512 MiB buffer with wide loads.
void read_bandwidth(benchmark::State& state) {
  ThreadPool pool(int(state.range(0)));
  double gbs = 0;
  for (auto _ : state) gbs = measure_read_bandwidth_gbs(pool, size_t(512) << 20, 3);
  state.counters["GB/s"] = gbs;
}

BENCHMARK(read_bandwidth)->Arg(1)->Arg(2)->Iterations(1)->Unit(benchmark::kMillisecond);

void decode_args(benchmark::internal::Benchmark* b) {
  for (int type = 0; type < int(std::size(kTypes)); ++type)
    for (int shape = 0; shape < 4; ++shape)
      for (int threads : {1, 2})
        for (int packed : {0, 1}) b->Args({type, shape, threads, 1, packed});
}
void prefill_args(benchmark::internal::Benchmark* b) {
  for (int type = 0; type < int(std::size(kTypes)); ++type)
    for (int shape : {0, 3})
      for (int threads : {1, 2})
        for (int packed : {0, 1}) b->Args({type, shape, threads, 64, packed});
}
// Decode over weights far larger than any cache (1.2-2.3 GB): what a real decode step streams.
void stream_args(benchmark::internal::Benchmark* b) {
  for (int type : {0, 1, 2, 4})
    for (int threads : {1, 2})
      for (int packed : {0, 1}) b->Args({type, 4, threads, 1, packed});
}
BENCHMARK(matmul_bench)->Name("matvec_dram")->Apply(stream_args)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(matmul_bench)->Name("matvec")->Apply(decode_args)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(matmul_bench)->Name("matmul")->Apply(prefill_args)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace pensieve

BENCHMARK_MAIN();
