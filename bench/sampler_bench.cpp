// Sampling a token from a vocabulary's logits on the host, as the scheduler does for every sequence
// of every step (the defaults: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05; and greedy).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "runtime/sampler.h"

namespace pensieve {
namespace {

void sample_bench(benchmark::State& state) {
  const int vocab = int(state.range(0));
  SamplingParams p;
  p.top_k = int(state.range(1));
  if (state.range(2)) p.temperature = 0.0f;
  p.seed = 1;
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> logits(static_cast<size_t>(vocab)), work;
  for (float& l : logits) l = dist(rng);
  Sampler s(p);
  for (auto _ : state) {
    work = logits;
    benchmark::DoNotOptimize(s.sample(work, {}));
  }
}
// vocabulary (Phi-3, Llama 3), top-k (0: off), greedy
BENCHMARK(sample_bench)->Args({32064, 40, 0})->Args({128256, 40, 0})->Args({32064, 0, 0})->Args({32064, 40, 1})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace pensieve
