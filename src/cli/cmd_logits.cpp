// `pensieve logits`: a raw model check. One forward pass over given ids, every position's logits
// written as float32 [n_ids, vocab]; optionally the ids greedy decoding appends (EOS not special).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli/command.h"
#include "model/model.h"
#include "util/cpu.h"
#include "util/error.h"

namespace pensieve::cli {
namespace {

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument(item);
      ids.push_back(int32_t(v));
    } catch (const std::exception&) {
      throw Error("--ids: '" + item + "' is not a token id");
    }
  }
  if (ids.empty()) throw Error("--ids: no token ids given");
  return ids;
}

struct LogitsOptions {
  std::string model, ids, out, kv_type = "f32", activations = "exact", device = "cpu";
  int generate = 0;
  int threads = 0;
};

int run_logits(const LogitsOptions& o) {
  const std::vector<int32_t> ids = parse_ids(o.ids);
  auto model = Model::load(o.model, o.device);
  const ModelConfig& cfg = model->config();
  ThreadPool pool(o.threads > 0 ? o.threads : physical_core_count());
  SequenceState st(cfg, int(ids.size()) + std::max(0, o.generate), parse_kv_type(o.kv_type));
  st.exact_activations = o.activations == "exact";
  std::vector<float> logits;
  model->forward(st, ids, true, logits, pool);

  std::ofstream f(o.out, std::ios::binary);
  if (!f) throw Error(o.out + ": cannot open for writing");
  f.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * sizeof(float)));
  if (!f.flush()) throw Error(o.out + ": write failed");

  if (o.generate > 0) {
    const size_t vocab = size_t(cfg.n_vocab);
    std::vector<float> last(logits.end() - std::ptrdiff_t(vocab), logits.end());
    std::string json = "[";
    for (int i = 0; i < o.generate; ++i) {
      const int32_t next = int32_t(std::max_element(last.begin(), last.end()) - last.begin());
      json += (i ? "," : "") + std::to_string(next);
      if (i + 1 < o.generate) model->forward(st, std::span<const int32_t>(&next, 1), false, last, pool);
    }
    std::printf("%s]\n", json.c_str());
  }
  return 0;
}

const CommandRegistrar logits_command(
    "logits", "Run one forward pass over token ids and write every position's logits",
    [](CLI::App& app) {
      auto o = std::make_shared<LogitsOptions>();
      app.add_option("--model", o->model, "Model: a .gguf file or a safetensors/MLX folder")->required();
      app.add_option("--ids", o->ids, "Comma-separated token ids, e.g. 1,2,3")->required();
      app.add_option("--out", o->out, "Output file: float32 row-major [n_ids, vocab]")->required();
      app.add_option("--generate", o->generate, "Also print the N ids greedy decoding appends (JSON)");
      app.add_option("--threads", o->threads, "Threads (default: physical cores)");
      app.add_option("--device", o->device, "auto, cpu, cuda or cuda:N (default cpu)");
      app.add_option("--kv-type", o->kv_type, "KV cache precision (default f32 for this check)")
          ->check(CLI::IsMember({"f32", "f16", "q8"}));
      app.add_option("--activations", o->activations,
                     "exact: float32 into every matmul (default); int8: the serving path's 8-bit activations")
          ->check(CLI::IsMember({"exact", "int8"}));
      return [o] { return run_logits(*o); };
    });

}  // namespace
}  // namespace pensieve::cli
