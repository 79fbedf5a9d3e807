// The load generator behind `pensieve bench-serve`: streaming requests to any Anthropic Messages or
// OpenAI chat-completions endpoint (this server or another), at a fixed number in flight, timed per
// content delta. Runs on Asio coroutines on the calling thread, one HTTP/1.1 connection per request.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pensieve::server::bench {

enum class Api { anthropic, openai };

struct BenchOptions {
  std::string url;                 // http://host[:port][/prefix]; the API path is appended unless given
  Api api = Api::anthropic;
  std::vector<int> concurrency{1};
  int requests = 0;                // per level; 0: default_requests(concurrency)
  int prompt_tokens = 128;         // about this many tokens (words) per prompt
  int max_tokens = 128;
  int shared_prefix_tokens = 0;    // the first S words are the same in every request
  std::string model;               // empty: the first id of GET /v1/models, else a default name
  std::string api_key;
  double timeout_s = 300;          // per request, from connect to the end of the stream
  uint32_t seed = 1;
};

// The requests a level runs when --requests is not given.
int default_requests(int concurrency);

// One request's outcome. Times are seconds from the start of the request (before connecting).
struct RequestResult {
  bool ok = false;
  int status = 0;          // HTTP status; 0 when no response header arrived
  std::string failure;     // the tally key when !ok, e.g. "HTTP 529 overloaded_error", "connection refused"
  int prompt_tokens = -1;  // from usage; -1 when the server did not say
  int output_tokens = -1;  // from usage; -1 when the server did not say
  int deltas = 0;          // content deltas received
  double ttft_s = -1;      // first content delta
  double last_delta_s = -1;
  double total_s = 0;
  std::vector<double> gaps_s;  // between consecutive content deltas

  // Generated tokens: usage when given, otherwise the number of content deltas.
  int generated_tokens() const { return output_tokens >= 0 ? output_tokens : deltas; }
};

struct LevelResult {
  int concurrency = 0;
  int requests = 0;
  int ok = 0, failed = 0;
  std::map<std::string, int> failures;  // tally key -> count
  double wall_s = 0;
  int64_t generated_tokens = 0;  // of the requests that completed
  int64_t prompt_tokens = 0;     // of the requests that completed (usage, else the words sent)
  bool usage_reported = true;    // every completed request reported its output tokens
  double gen_tok_s = 0, prompt_tok_s = 0;
  double ttft_p50_s = 0, ttft_p99_s = 0;
  double itl_p50_s = 0, itl_p99_s = 0;
  double latency_p50_s = 0, latency_p99_s = 0;  // per request: from its start to the end of its answer
  double stream_tok_s_p50 = 0;   // per request: tokens after the first / seconds after the first
};

struct BenchReport {
  std::string endpoint;  // the URL the requests went to
  std::string model;
  std::vector<LevelResult> levels;
  bool any_failed() const;
};

// Prompt text of about `words` words: the first `shared` from a fixed seed, the rest from `seed`,
// followed by an instruction asking for a long answer (counted in `words`).
std::string build_prompt(int words, int shared, uint64_t seed);

// Percentile (0..100) with linear interpolation between sorted values; 0 for an empty set.
double percentile(std::vector<double> v, double p);

// Runs every level in order. Throws pensieve::Error for a bad URL or options.
BenchReport run_bench(const BenchOptions& opt);

// Runs `requests` requests with at most `concurrency` in flight; `level_index` varies the prompts.
LevelResult run_level(const BenchOptions& opt, const std::string& model, int concurrency, int requests,
                      int level_index);

// Folds per-request results into a level's figures.
LevelResult summarize(int concurrency, const std::vector<RequestResult>& results, double wall_s,
                      int prompt_words);

nlohmann::ordered_json report_json(const BenchOptions& opt, const BenchReport& r);
std::string report_text(const BenchOptions& opt, const BenchReport& r);

}  // namespace pensieve::server::bench
