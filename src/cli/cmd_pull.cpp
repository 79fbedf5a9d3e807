// `pensieve pull REPO[:QUANT|:FILE]`: downloads a model from the Hugging Face hub into the local
// store (hub/pull.h). A progress bar on a terminal, plain lines otherwise; Ctrl-C keeps the
// partial file, which the next run resumes.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "hub/pull.h"

namespace pensieve::cli {
namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted = true; }

struct PullArgs {
  std::string spec, revision = "main", token;
  int retries = 4;
};

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}

// Redraws one line on a terminal (at most 10 times a second); prints a line per 10% otherwise.
class Progress {
 public:
  Progress() : tty_(::isatty(STDERR_FILENO) == 1) {}
  void operator()(const hub::RepoFile& f, uint64_t done, uint64_t total) {
    const auto now = Clock::now();
    if (f.path != file_) {
      finish_line();
      file_ = f.path, started_ = now, start_bytes_ = done, last_ = {}, last_decile_ = -1;
    }
    const double secs = std::chrono::duration<double>(now - started_).count();
    const double rate = secs > 0 ? double(done - start_bytes_) / secs : 0;
    const double frac = total ? double(done) / double(total) : 1.0;
    if (tty_) {
      if (now - last_ < std::chrono::milliseconds(100) && done < total) return;
      last_ = now;
      const int width = 30, filled = int(frac * width);
      std::string bar(size_t(filled), '#');
      bar.resize(width, '.');
      const double eta = rate > 0 ? double(total - done) / rate : 0;
      std::fprintf(stderr, "\r%-40.40s [%s] %3.0f%% %s/%s %s/s ETA %d:%02d  ", f.path.c_str(), bar.c_str(), frac * 100,
                   human_bytes(double(done)).c_str(), human_bytes(double(total)).c_str(), human_bytes(rate).c_str(),
                   int(eta) / 60, int(eta) % 60);
      open_line_ = true;
    } else {
      const int decile = int(frac * 10);
      if (decile == last_decile_) return;
      last_decile_ = decile;
      std::fprintf(stderr, "%s: %d%% (%s of %s, %s/s)\n", f.path.c_str(), decile * 10, human_bytes(double(done)).c_str(),
                   human_bytes(double(total)).c_str(), human_bytes(rate).c_str());
    }
    std::fflush(stderr);
  }
  void finish_line() {
    if (open_line_) std::fputc('\n', stderr);
    open_line_ = false;
  }

 private:
  using Clock = std::chrono::steady_clock;
  bool tty_, open_line_ = false;
  std::string file_;
  Clock::time_point started_, last_;
  uint64_t start_bytes_ = 0;
  int last_decile_ = -1;
};

int run_pull(const PullArgs& a) {
  hub::HubOptions opts = hub::hub_options_from_environment();
  if (!a.token.empty()) opts.token = a.token;
  opts.retries = a.retries;
  opts.interrupted = [] { return g_interrupted.load(); };
  std::signal(SIGINT, on_sigint);
  const hub::PullSpec spec = hub::parse_pull_spec(a.spec);
  hub::HubClient client(opts);
  hub::ModelStore store(hub::ModelStore::default_root());
  auto progress = std::make_shared<Progress>();
  hub::PullEvents events;
  events.log = [progress](const std::string& line) {
    progress->finish_line();
    std::fprintf(stderr, "%s\n", line.c_str());
  };
  events.progress = [progress](const hub::RepoFile& f, uint64_t done, uint64_t total) { (*progress)(f, done, total); };
  try {
    const hub::StoredModel m = hub::pull(client, store, spec, a.revision, events);
    progress->finish_line();
    std::printf("pulled %s (%s, %s) into %s\n", m.name.c_str(), m.quant.c_str(), human_bytes(double(m.size_bytes())).c_str(),
                m.dir.c_str());
    return 0;
  } catch (const hub::Interrupted& e) {
    progress->finish_line();
    std::fprintf(stderr, "pensieve pull: %s\n", e.what());
    return 130;
  } catch (...) {
    progress->finish_line();
    throw;
  }
}

const CommandRegistrar pull_command{
    "pull", "Download a model from Hugging Face into the local store (REPO, REPO:QUANT or REPO:FILE)",
    [](CLI::App& sub) -> std::function<int()> {
      auto a = std::make_shared<PullArgs>();
      sub.add_option("model", a->spec, "OWNER/NAME[:QUANT|:FILE], e.g. microsoft/Phi-3-mini-4k-instruct-gguf:Q4_K_M")->required();
      sub.add_option("--revision", a->revision, "Branch, tag or commit (default main)");
      sub.add_option("--token", a->token, "Hugging Face token (default $HF_TOKEN)");
      sub.add_option("--retries", a->retries, "Retries per file after a dropped connection (default 4)")->check(CLI::NonNegativeNumber);
      return [a] { return run_pull(*a); };
    }};

}  // namespace
}  // namespace pensieve::cli
