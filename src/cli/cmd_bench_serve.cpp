// `pensieve bench-serve`: a load generator for any Anthropic Messages or OpenAI chat-completions
// endpoint (this server or another, e.g. llama-server). For each concurrency level it streams
// --requests requests with at most that many in flight and prints throughput and latency figures;
// the exit status is 1 when any request failed.
#include <sys/resource.h>

#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "server/bench_client.h"

namespace pensieve::cli {
namespace {

using namespace pensieve::server::bench;

struct BenchServeArgs {
  BenchOptions opt;
  std::string api = "anthropic";
  bool json = false;
};

// Each request in flight holds a socket: lift the soft limit on open files to the hard one so that
// levels of about a thousand fit.
void raise_open_file_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

int run_bench_serve(BenchServeArgs& a) {
  raise_open_file_limit();
  a.opt.api = a.api == "openai" ? Api::openai : Api::anthropic;
  const BenchReport report = run_bench(a.opt);
  if (a.json)
    std::printf("%s\n", report_json(a.opt, report).dump(2).c_str());
  else
    std::printf("%s", report_text(a.opt, report).c_str());
  return report.any_failed() ? 1 : 0;
}

const CommandRegistrar bench_serve_command(
    "bench-serve", "Load-test an Anthropic or OpenAI endpoint with concurrent streaming requests",
    [](CLI::App& sub) -> std::function<int()> {
      auto a = std::make_shared<BenchServeArgs>();
      a->opt.url = "http://127.0.0.1:7777";
      sub.add_option("--url", a->opt.url, "Server address (http://host:port[/prefix]) or the full endpoint URL")
          ->capture_default_str();
      sub.add_option("--api", a->api, "Which API to speak")
          ->check(CLI::IsMember({"anthropic", "openai"}))
          ->capture_default_str();
      sub.add_option("--concurrency,-c", a->opt.concurrency, "Requests in flight, one level per value (1,8,64)")
          ->delimiter(',')
          ->capture_default_str();
      sub.add_option("--requests,-n", a->opt.requests,
                     "Requests per level (default: max(2 x concurrency, 16))");
      sub.add_option("--prompt-tokens,-p", a->opt.prompt_tokens, "Prompt length in words (about one token each)")
          ->capture_default_str();
      sub.add_option("--max-tokens,-g", a->opt.max_tokens, "max_tokens of each request")->capture_default_str();
      sub.add_option("--shared-prefix-tokens", a->opt.shared_prefix_tokens,
                     "Leading words identical in every request (prefix-cache test)")
          ->capture_default_str();
      sub.add_option("--model", a->opt.model, "Model name to send (default: the first of GET /v1/models)");
      sub.add_option("--api-key", a->opt.api_key, "Key sent as x-api-key (anthropic) or Bearer (openai)")
          ->envname("PENSIEVE_API_KEY");
      sub.add_option("--timeout-s", a->opt.timeout_s, "Per-request timeout, seconds")->capture_default_str();
      sub.add_option("--seed", a->opt.seed, "Seed of the prompt words")->capture_default_str();
      sub.add_flag("--json", a->json, "Print one JSON document");
      return [a] { return run_bench_serve(*a); };
    });

}  // namespace
}  // namespace pensieve::cli
