#include "server/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

namespace pensieve::server {

namespace {
std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}
std::string label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') { out += "\\n"; continue; }
    out += c;
  }
  return out;
}
void help(std::string& out, const char* name, const char* type, const char* text) {
  out += std::string("# HELP ") + name + " " + text + "\n# TYPE " + name + " " + type + "\n";
}
}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + num(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + num(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : ttft_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      token_gap_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}),
      latency_({0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}) {}

void Metrics::record_request(const std::string& route, int status, double seconds) {
  std::lock_guard lock(mu_);
  ++requests_[{route, status}];
  latency_.observe(seconds);
}

void Metrics::record_tokens(int prompt, int generated, int cached_prompt) {
  std::lock_guard lock(mu_);
  prompt_tokens_ += prompt;
  generated_tokens_ += generated;
  prefix_hit_tokens_ += cached_prompt;
}

void Metrics::record_first_token(double seconds) {
  std::lock_guard lock(mu_);
  ttft_.observe(seconds);
}

void Metrics::record_token_gap(double seconds) {
  std::lock_guard lock(mu_);
  token_gap_.observe(seconds);
}

std::string Metrics::render(const LiveGauges& g) const {
  std::lock_guard lock(mu_);
  std::string out;
  help(out, "pensieve_requests_total", "counter", "HTTP requests by route and status");
  for (const auto& [key, n] : requests_)
    out += "pensieve_requests_total{route=\"" + key.first + "\",status=\"" + std::to_string(key.second) +
           "\"} " + std::to_string(n) + "\n";
  help(out, "pensieve_prompt_tokens_total", "counter", "Prompt tokens processed");
  out += "pensieve_prompt_tokens_total " + std::to_string(prompt_tokens_) + "\n";
  help(out, "pensieve_prefix_cache_hit_tokens_total", "counter", "Prompt tokens read from the prefix cache");
  out += "pensieve_prefix_cache_hit_tokens_total " + std::to_string(prefix_hit_tokens_) + "\n";
  help(out, "pensieve_generated_tokens_total", "counter", "Tokens generated");
  out += "pensieve_generated_tokens_total " + std::to_string(generated_tokens_) + "\n";
  help(out, "pensieve_time_to_first_token_seconds", "histogram", "From request arrival to the first generated text");
  ttft_.render(out, "pensieve_time_to_first_token_seconds");
  help(out, "pensieve_time_between_tokens_seconds", "histogram", "Gap between successive streamed pieces of text");
  token_gap_.render(out, "pensieve_time_between_tokens_seconds");
  help(out, "pensieve_request_duration_seconds", "histogram", "Request latency, arrival to last byte");
  latency_.render(out, "pensieve_request_duration_seconds");
  help(out, "pensieve_connections_open", "gauge", "Client connections open now");
  out += "pensieve_connections_open " + std::to_string(g.connections) + "\n";
  help(out, "pensieve_requests_running", "gauge", "Generations running now");
  out += "pensieve_requests_running " + std::to_string(g.running) + "\n";
  help(out, "pensieve_requests_waiting", "gauge", "Generations waiting for the model");
  out += "pensieve_requests_waiting " + std::to_string(g.waiting) + "\n";
  help(out, "pensieve_kv_cache_usage_ratio", "gauge", "Fraction of the KV cache blocks held by running sequences");
  out += "pensieve_kv_cache_usage_ratio " + num(g.kv_cache_usage) + "\n";
  help(out, "pensieve_kv_cache_cached_blocks", "gauge", "KV cache blocks kept only for the prefix cache");
  out += "pensieve_kv_cache_cached_blocks " + std::to_string(g.kv_blocks_cached) + "\n";
  help(out, "pensieve_preemptions_total", "counter", "Sequences preempted (requeued) because the KV cache was full");
  out += "pensieve_preemptions_total " + std::to_string(g.preemptions) + "\n";
  help(out, "pensieve_model_load_seconds", "gauge", "Time taken to load each model");
  for (const auto& [model, s] : g.model_load_seconds)
    out += "pensieve_model_load_seconds{model=\"" + label(model) + "\"} " + num(s) + "\n";
  help(out, "pensieve_models_loaded", "gauge", "Models loaded now");
  out += "pensieve_models_loaded " + std::to_string(g.models_loaded) + "\n";
  help(out, "pensieve_model_loads_total", "counter", "Model loads, by model");
  for (const auto& [model, c] : g.model_counters)
    out += "pensieve_model_loads_total{model=\"" + label(model) + "\"} " + std::to_string(c.loads) + "\n";
  help(out, "pensieve_model_load_failures_total", "counter", "Model loads that failed, by model");
  for (const auto& [model, c] : g.model_counters)
    out += "pensieve_model_load_failures_total{model=\"" + label(model) + "\"} " + std::to_string(c.load_failures) + "\n";
  help(out, "pensieve_model_unloads_total", "counter", "Model unloads, by model and reason (lru, memory, expired)");
  for (const auto& [model, c] : g.model_counters)
    for (const auto& [reason, n] : c.unloads)
      out += "pensieve_model_unloads_total{model=\"" + label(model) + "\",reason=\"" + reason + "\"} " + std::to_string(n) + "\n";
  help(out, "process_resident_memory_bytes", "gauge", "Resident memory of the server process");
  out += "process_resident_memory_bytes " + std::to_string(resident_memory_bytes()) + "\n";
  return out;
}

uint64_t resident_memory_bytes() {
  std::ifstream f("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  if (!(f >> size >> resident)) return 0;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

uint64_t peak_resident_memory_bytes() {
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return static_cast<uint64_t>(ru.ru_maxrss) * 1024;
}

}  // namespace pensieve::server
