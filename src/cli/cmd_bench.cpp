// `pensieve bench`: prefill (pp) and decode (tg) speed of a model file as mean ± sd over
// repetitions after a warm-up, with load time, peak RSS, and the machine's read bandwidth measured
// in the same run, so decode speed is shown as the fraction of the memory limit it reaches.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "cli/command.h"
#include "backend/cuda/cuda_backend.h"
#include "kernels/bandwidth.h"
#include "model/model.h"
#include "util/cpu.h"
#include "util/error.h"
#include "util/process_stats.h"

namespace pensieve::cli {
namespace {

struct BenchArgs {
  std::string model;
  std::string device = "cpu";
  int pp = 512, tg = 128, reps = 3, threads = 0;
  int streams = 0;  // parallel sequences for the batched-decode test (0: skip)
  std::string kv_type = "f16";
  int depth = 0;  // tokens in the cache before the decode test
  bool json = false;
};

struct Stat {
  double mean = 0, sd = 0;
};

Stat mean_sd(const std::vector<double>& v) {
  Stat s;
  if (v.empty()) return s;
  for (double x : v) s.mean += x;
  s.mean /= double(v.size());
  if (v.size() > 1) {
    for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
    s.sd = std::sqrt(s.sd / double(v.size() - 1));
  }
  return s;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Prompt-processing speed: one forward pass over n random tokens from an empty cache.
double run_pp(const Model& m, const std::vector<int32_t>& toks, KvType kv, ThreadPool& pool) {
  SequenceState st(m.config(), int(toks.size()) + 1, kv);
  std::vector<float> logits;
  const auto t0 = std::chrono::steady_clock::now();
  m.forward(st, toks, false, logits, pool);
  return double(toks.size()) / seconds_since(t0);
}

// Generation speed: n single-token forward passes after `context` (untimed; none: an empty cache).
double run_tg(const Model& m, const std::vector<int32_t>& toks, KvType kv, ThreadPool& pool,
              const std::vector<int32_t>& context = {}) {
  SequenceState st(m.config(), int(context.size() + toks.size()) + 1, kv);
  HostFloats logits(m.backend());  // as the scheduler's
  float* out = logits.get(size_t(m.config().n_vocab));
  if (!context.empty()) m.forward(st, context, false, out, pool);
  const auto t0 = std::chrono::steady_clock::now();
  for (int32_t t : toks) m.forward(st, std::span<const int32_t>(&t, 1), false, out, pool);
  return double(toks.size()) / seconds_since(t0);
}

// Batched decode: `streams` sequences each prefilled with `prompt` tokens (one pass for all), then
// `gen` steps in which every sequence decodes one token in a single batched pass. Returns
// generated tokens per second over the decode steps.
double run_streams(const Model& m, int streams, int prompt, int gen, KvType kv_type, std::mt19937& rng,
                   ThreadPool& pool) {
  const ModelConfig& cfg = m.config();
  std::uniform_int_distribution<int32_t> pick(1, cfg.n_vocab - 1);
  const int bs = KvPool::kDefaultBlockSize;
  const int per_seq = (prompt + gen + bs) / bs;
  KvPool kv(cfg, per_seq * streams, bs, kv_type);
  std::vector<std::unique_ptr<SequenceState>> seqs;
  std::vector<std::vector<int32_t>> toks(static_cast<size_t>(streams));
  for (int s = 0; s < streams; ++s) {
    seqs.push_back(std::make_unique<SequenceState>(kv));
    for (int b = 0; b < per_seq; ++b) seqs.back()->blocks.push_back(s * per_seq + b);
    for (int i = 0; i < prompt + gen; ++i) toks[size_t(s)].push_back(pick(rng));
  }
  HostFloats logits_buf(m.backend());
  float* logits = logits_buf.get(size_t(streams) * size_t(cfg.n_vocab));
  std::vector<BatchItem> items(static_cast<size_t>(streams));
  for (int s = 0; s < streams; ++s)
    items[size_t(s)] = {seqs[size_t(s)].get(), std::span<const int32_t>(toks[size_t(s)]).first(size_t(prompt)),
                        BatchItem::Logits::Last};
  for (int s0 = 0; s0 < streams; s0 += 4)  // prefill 4 sequences a pass (512 tokens at 128 each)
    m.forward_batch(std::span<const BatchItem>(items).subspan(size_t(s0), size_t(std::min(4, streams - s0))), logits,
                    pool);
  const auto t0 = std::chrono::steady_clock::now();
  for (int step = 0; step < gen; ++step) {
    for (int s = 0; s < streams; ++s)
      items[size_t(s)].tokens = std::span<const int32_t>(toks[size_t(s)]).subspan(size_t(prompt + step), 1);
    m.forward_batch(items, logits, pool);
  }
  return double(streams) * gen / seconds_since(t0);
}

int run_bench(const BenchArgs& a) {
  if (a.pp < 0 || a.tg < 0 || a.reps < 1) throw Error("bench: -p and -n must be >= 0 and -r >= 1");
  const int threads = a.threads > 0 ? a.threads : physical_core_count();
  const auto t_load = std::chrono::steady_clock::now();
  const auto model = Model::load(a.model, a.device);
  const double load_s = seconds_since(t_load);
  // What the backend does after the load (on the CPU: repacking the weights, in the background
  // while a server already takes requests) is timed apart and finished before anything is measured.
  const auto t_prepare = std::chrono::steady_clock::now();
  model->backend().wait_prepared();
  const double prepare_s = seconds_since(t_prepare);
  const bool gpu = model->backend().name() != "cpu";
  const ModelConfig& cfg = model->config();
  if (a.pp + 1 > cfg.ctx_train && cfg.ctx_train > 0 && a.pp > 0)
    std::fprintf(stderr, "note: -p %d exceeds the model's training context %d\n", a.pp, cfg.ctx_train);
  ThreadPool pool(threads);

  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> pick(1, cfg.n_vocab - 1);
  auto random_tokens = [&](int n) {
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (auto& t : v) t = pick(rng);
    return v;
  };
  // Warm-up: page the weights in and settle the thread pool; on a GPU a prefill of the measured
  // size, so that its one-time costs (buffers, the GEMM library's choice of kernels for the shape)
  // stay out of the first repetition.
  const KvType kv = parse_kv_type(a.kv_type);
  run_pp(*model, random_tokens(gpu && a.pp > 0 ? a.pp : std::min(a.pp > 0 ? a.pp : 16, 32)), kv, pool);
  run_tg(*model, random_tokens(4), kv, pool);

  // Decode is judged against the fastest plain read of the very bytes it reads: the same weight
  // matrices, in the same order, split the same way over the same threads, probed right after each
  // decode repetition. The bandwidth a VM gets moves with its neighbours (this class has read 22 to
  // 61 GB/s within an hour), so each repetition is paired with its own probe; a fresh buffer's
  // figure is printed for context.
  const auto weights = model->weights_read_per_token();
  const double bytes_per_tok = double(model->weight_bytes_per_token());
  std::vector<double> pp, tg, bw, frac;
  // On a GPU the probe is a device-to-device copy of the weights' size, counting bytes read and
  // written (the card's practical ceiling for streaming the weights).
  auto probe = [&] {
    if (!gpu) return measure_read_bandwidth_gbs(pool, weights, 2);
    const int dev = parse_device(model->backend().name()).index;
    return cuda_copy_bandwidth(dev, size_t(bytes_per_tok)) / 1e9;
  };
  std::vector<double> streams;
  for (int r = 0; r < a.reps; ++r) {
    if (a.pp > 0) pp.push_back(run_pp(*model, random_tokens(a.pp), kv, pool));
    if (a.tg > 0) {
      tg.push_back(run_tg(*model, random_tokens(a.tg), kv, pool, random_tokens(a.depth)));
      bw.push_back(probe());
      frac.push_back(bw.back() > 0 ? tg.back() * bytes_per_tok / (bw.back() * 1e9) : 0.0);
    }
    if (a.streams > 0) streams.push_back(run_streams(*model, a.streams, 128, a.tg > 0 ? a.tg : 128, kv, rng, pool));
  }
  const Stat ss = mean_sd(streams);
  const std::string gpu_memory = gpu ? model->backend().memory_report() : "";
  // Peak RSS is read before the buffer probe, whose 512 MiB are not the model's.
  const double rss_mb = double(peak_rss_bytes()) / 1e6;
  const double bw_buffer = gpu ? 0.0 : measure_read_bandwidth_gbs(pool);
  const Stat ps = mean_sd(pp), ts = mean_sd(tg), bws = mean_sd(bw), fs = mean_sd(frac);

  if (a.json) {
    nlohmann::json j = {{"model", a.model},          {"threads", threads},
                        {"n_prompt", a.pp},          {"n_gen", a.tg},           {"depth", a.depth},
                        {"repetitions", a.reps},     {"pp_tok_s", ps.mean},
                        {"pp_sd", ps.sd},            {"tg_tok_s", ts.mean},
                        {"tg_sd", ts.sd},            {"load_s", load_s},           {"prepare_s", prepare_s},
                        {"peak_rss_mb", rss_mb},     {"bandwidth_gbs", bws.mean},
                        {"buffer_bandwidth_gbs", bw_buffer},
                        {"weight_bytes_per_token", bytes_per_tok},
                        {"decode_bandwidth_fraction", fs.mean},
                        {"decode_bandwidth_fraction_sd", fs.sd},
                        {"device", model->backend().name()},
                        {"streams", a.streams},      {"streams_tok_s", ss.mean},
                        {"streams_sd", ss.sd},       {"gpu_memory", gpu_memory},
                        {"kv_type", a.kv_type}};
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("model        %s (%.2f GB of weights read per token)\n", a.model.c_str(), bytes_per_tok / 1e9);
  std::printf("device       %s\n", model->backend().name().c_str());
  if (!gpu) std::printf("threads      %d\n", threads);
  if (a.kv_type != "f16") std::printf("KV cache     %s\n", a.kv_type.c_str());
  std::printf("load         %.3f s (then %.3f s preparing the weights)\n", load_s, prepare_s);
  if (a.pp > 0) std::printf("pp%-4d       %8.2f ± %.2f tok/s\n", a.pp, ps.mean, ps.sd);
  if (a.tg > 0 && a.depth > 0)
    std::printf("tg%-4d @ d%-6d %8.2f ± %.2f tok/s (after %d tokens of context)\n", a.tg, a.depth, ts.mean, ts.sd,
                a.depth);
  else if (a.tg > 0)
    std::printf("tg%-4d       %8.2f ± %.2f tok/s\n", a.tg, ts.mean, ts.sd);
  if (a.streams > 0)
    std::printf("%d streams   %8.2f ± %.2f generated tok/s (128 prompt + %d new each, one batched pass a step)\n",
                a.streams, ss.mean, ss.sd, a.tg > 0 ? a.tg : 128);
  if (a.tg > 0 && !gpu)
    std::printf("bandwidth    %.1f ± %.1f GB/s reading the weights (%.1f GB/s on a fresh 512 MiB buffer)\n"
                "decode       %.0f ± %.0f%% of the bandwidth measured after each repetition\n",
                bws.mean, bws.sd, bw_buffer, 100.0 * fs.mean, 100.0 * fs.sd);
  if (a.tg > 0 && gpu)
    std::printf("bandwidth    %.0f ± %.0f GB/s device-to-device copy (read + write) of the weights' size\n"
                "decode       %.0f ± %.0f%% of that bandwidth (tg tok/s x weight bytes per token / copy rate)\n",
                bws.mean, bws.sd, 100.0 * fs.mean, 100.0 * fs.sd);
  if (gpu) std::printf("GPU memory   %s\n", gpu_memory.c_str());
  std::printf("peak RSS     %.0f MB\n", rss_mb);
  return 0;
}

const CommandRegistrar bench_command(
    "bench", "Measure prefill and decode speed, load time, peak RSS and memory-bandwidth use",
    [](CLI::App& sub) -> std::function<int()> {
      auto a = std::make_shared<BenchArgs>();
      sub.add_option("--model,-m", a->model, "Model file (.gguf) or folder")->required();
      sub.add_option("-p,--n-prompt", a->pp, "Prompt tokens for the prefill test (0: skip)")->capture_default_str();
      sub.add_option("-n,--n-gen", a->tg, "Tokens for the decode test (0: skip)")->capture_default_str();
      sub.add_option("-r,--repetitions", a->reps, "Repetitions of each test")->capture_default_str();
      sub.add_option("-t,--threads", a->threads, "Threads (default: physical cores)");
      sub.add_option("--device", a->device, "auto, cpu, cuda or cuda:N")->capture_default_str();
      sub.add_option("--streams", a->streams,
                     "Parallel sequences for a batched-decode test, 128 prompt tokens each (0: skip)")
          ->capture_default_str();
      sub.add_option("-d,--depth", a->depth, "Tokens in the cache before the decode test (its context; default 0)")
          ->check(CLI::NonNegativeNumber)
          ->capture_default_str();
      sub.add_option("--kv-type", a->kv_type, "What the KV cache holds: f16, f32 or q8 (int8, a scale a head row)")
          ->check(CLI::IsMember({"f16", "f32", "q8"}))
          ->capture_default_str();
      sub.add_flag("--json", a->json, "Print one JSON object");
      return [a] { return run_bench(*a); };
    });

}  // namespace
}  // namespace pensieve::cli
