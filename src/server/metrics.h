// Server metrics in the Prometheus text format: counters and histograms fed by the request path,
// gauges read at scrape time. One path feeds /metrics and /v1/stats.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime/model_manager.h"

namespace pensieve::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  // Appends NAME_bucket{le=...}, NAME_sum and NAME_count lines (labels: extra label text or "").
  void render(std::string& out, const std::string& name) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative
  double sum_ = 0;
  uint64_t count_ = 0;
};

struct LiveGauges {
  int connections = 0;
  int running = 0;
  int waiting = 0;
  double kv_cache_usage = 0;  // fraction of the KV cache blocks held by running sequences
  int kv_blocks_cached = 0;   // blocks no sequence holds, kept for the prefix cache
  int64_t preemptions = 0;
  std::vector<std::pair<std::string, double>> model_load_seconds;
  int models_loaded = 0;
  std::vector<std::pair<std::string, ModelCounters>> model_counters;  // loads and unloads per model
};

class Metrics {
 public:
  Metrics();
  void record_request(const std::string& route, int status, double seconds);
  void record_tokens(int prompt, int generated, int cached_prompt);
  void record_first_token(double seconds);
  void record_token_gap(double seconds);
  std::string render(const LiveGauges& gauges) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  uint64_t prompt_tokens_ = 0, generated_tokens_ = 0, prefix_hit_tokens_ = 0;
  Histogram ttft_, token_gap_, latency_;
};

// The process's resident and peak resident memory in bytes (0 where unknown).
uint64_t resident_memory_bytes();
uint64_t peak_resident_memory_bytes();

}  // namespace pensieve::server
