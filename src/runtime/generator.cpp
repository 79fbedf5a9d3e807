#include "runtime/generator.h"

#include <chrono>
#include <filesystem>
#include <mutex>

#include "engine/model.h"
#include "runtime/sampler.h"
#include "runtime/stop_matcher.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "util/cpu.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace pensieve {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Used only when a model carries no chat template: the documented formats of the families we load.
const char* kPhi3Template =
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}";
const char* kChatMlTemplate =
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
const char* kLlama3Template =
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{{ m.content | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

std::string default_id(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();  // trailing slash
  return p.has_extension() && p.extension() == ".gguf" ? p.stem().string() : p.filename().string();
}

}  // namespace

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::EndOfTurn: return "end_turn";
    case StopReason::MaxTokens: return "max_tokens";
    case StopReason::StopString: return "stop_sequence";
    case StopReason::Cancelled: return "cancelled";
  }
  return "?";
}

struct ModelInstance::Impl {
  std::string path, id;
  std::shared_ptr<const Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ChatTemplate> chat_template;
  std::vector<int32_t> stop_ids;
  int context = 0;
  bool kv_f32 = false;
  double load_seconds = 0;
  std::unique_ptr<ThreadPool> pool;
  mutable std::mutex mu;  // one generation at a time
};

std::shared_ptr<ModelInstance> ModelInstance::load(const std::string& path, const EngineOptions& opts) {
  const auto t0 = Clock::now();
  auto inst = std::shared_ptr<ModelInstance>(new ModelInstance());
  inst->impl_ = std::make_unique<Impl>();
  Impl& m = *inst->impl_;
  m.path = path;
  m.id = opts.id.empty() ? default_id(path) : opts.id;
  m.model = Model::load(path);
  const LoadedModel& files = m.model->files();
  const ModelConfig& cfg = m.model->config();
  if (files.gguf && files.gguf->find("tokenizer.ggml.model"))
    m.tokenizer = Tokenizer::from_gguf(*files.gguf);
  else if (!files.dir.empty() && std::filesystem::exists(std::filesystem::path(files.dir) / "tokenizer.json"))
    m.tokenizer = Tokenizer::from_hf_dir(files.dir);

  std::string tmpl = m.tokenizer ? m.tokenizer->chat_template() : "";
  if (tmpl.empty() && m.tokenizer) {
    if (cfg.arch == Arch::Phi3) tmpl = kPhi3Template;
    else if (cfg.arch == Arch::Qwen2) tmpl = kChatMlTemplate;
    else if (m.tokenizer->encode("<|start_header_id|>", false).size() == 1) tmpl = kLlama3Template;
  }
  if (!tmpl.empty()) m.chat_template = std::make_unique<ChatTemplate>(tmpl);

  for (int id : cfg.stop_ids) m.stop_ids.push_back(id);
  if (cfg.eos_id >= 0) m.stop_ids.push_back(cfg.eos_id);
  if (m.tokenizer)
    for (int32_t id : m.tokenizer->stop_ids()) m.stop_ids.push_back(id);

  const int trained = cfg.ctx_train > 0 ? cfg.ctx_train : 4096;
  m.context = opts.context > 0 ? opts.context : std::min(trained, 4096);
  m.kv_f32 = opts.kv_f32;
  m.pool = std::make_unique<ThreadPool>(opts.threads > 0 ? opts.threads : physical_core_count());
  m.load_seconds = seconds_since(t0);
  return inst;
}

ModelInstance::~ModelInstance() = default;

const std::string& ModelInstance::id() const { return impl_->id; }
const ModelConfig& ModelInstance::config() const { return impl_->model->config(); }
int ModelInstance::context_length() const { return impl_->context; }
double ModelInstance::load_seconds() const { return impl_->load_seconds; }
const std::string& ModelInstance::path() const { return impl_->path; }

const Tokenizer& ModelInstance::tokenizer() const {
  if (!impl_->tokenizer)
    throw Error(impl_->path + ": the model has no tokenizer (no tokenizer.ggml.* metadata or tokenizer.json)");
  return *impl_->tokenizer;
}

std::string ModelInstance::render_chat(const ChatPrompt& prompt) const {
  const Tokenizer& tok = tokenizer();
  if (!impl_->chat_template)
    throw Error(impl_->path + ": the model has no chat template and none is known for its family");
  nlohmann::ordered_json ctx;
  ctx["messages"] = nlohmann::ordered_json::array();
  for (const auto& m : prompt.messages) ctx["messages"].push_back({{"role", m.role}, {"content", m.content}});
  ctx["add_generation_prompt"] = prompt.add_generation_prompt;
  ctx["bos_token"] = tok.bos_token();
  ctx["eos_token"] = tok.eos_token();
  if (!prompt.tools.is_null()) ctx["tools"] = prompt.tools;
  return impl_->chat_template->render(ctx);
}

std::vector<int32_t> ModelInstance::chat_tokens(const ChatPrompt& prompt) const {
  const std::string text = render_chat(prompt);
  const Tokenizer& tok = tokenizer();
  // The template may already start with the BOS text; never add it twice.
  const bool template_has_bos = !tok.bos_token().empty() && text.rfind(tok.bos_token(), 0) == 0;
  return tok.encode(text, tok.add_bos_default() && !template_has_bos, true);
}

std::vector<int32_t> ModelInstance::text_tokens(std::string_view text, bool add_bos) const {
  return tokenizer().encode(text, add_bos, true);
}

GenerateResult ModelInstance::generate(const GenerateRequest& req, const TextCallback& on_text) const {
  const Impl& m = *impl_;
  const Tokenizer& tok = tokenizer();
  const ModelConfig& cfg = m.model->config();
  GenerateResult res;
  res.prompt_tokens = int(req.prompt.size());
  if (req.prompt.empty()) throw Error("the prompt has no tokens");
  if (res.prompt_tokens >= m.context)
    throw Error("the prompt has " + std::to_string(res.prompt_tokens) +
                " tokens, more than fit the context of " + std::to_string(m.context) + " tokens");
  const int max_new = std::max(0, std::min(req.max_tokens, m.context - res.prompt_tokens));

  std::lock_guard<std::mutex> lock(m.mu);
  const auto t0 = Clock::now();
  SequenceState st(cfg, res.prompt_tokens + max_new, m.kv_f32);
  Sampler sampler(req.sampling);
  StreamDecoder decoder(tok, /*skip_special=*/true);
  StopMatcher stops(req.stop_strings);
  std::vector<int32_t> history = req.prompt;
  std::vector<float> logits;

  // Prefill in pieces so that a long prompt can be cancelled between them.
  constexpr size_t kPrefillPiece = 512;
  const std::span<const int32_t> prompt(req.prompt);
  for (size_t at = 0; at < prompt.size(); at += kPrefillPiece) {
    if (req.cancelled && req.cancelled()) {
      res.reason = StopReason::Cancelled;
      return res;
    }
    m.model->forward(st, prompt.subspan(at, std::min(kPrefillPiece, prompt.size() - at)), false,
                     logits, *m.pool);
  }
  res.prefill_seconds = seconds_since(t0);
  const auto t_decode = Clock::now();

  auto emit = [&](const std::string& text) { return text.empty() || on_text(text); };
  res.reason = StopReason::MaxTokens;
  bool finished_text = false;
  for (int i = 0; i < max_new; ++i) {
    const int32_t id = sampler.sample(logits, history);
    if (i == 0) res.first_token_seconds = seconds_since(t0);
    if (req.stop_at_eos &&
        std::find(m.stop_ids.begin(), m.stop_ids.end(), id) != m.stop_ids.end()) {
      res.reason = StopReason::EndOfTurn;
      break;
    }
    history.push_back(id);
    ++res.completion_tokens;
    if (!emit(stops.push(decoder.push(id)))) {
      res.reason = StopReason::Cancelled;
      finished_text = true;
      break;
    }
    if (stops.matched()) {
      res.reason = StopReason::StopString;
      res.stop_string = stops.matched_string();
      finished_text = true;
      break;
    }
    if (i + 1 == max_new) break;
    if (req.cancelled && req.cancelled()) {
      res.reason = StopReason::Cancelled;
      finished_text = true;
      break;
    }
    m.model->forward(st, std::span<const int32_t>(&id, 1), false, logits, *m.pool);
  }
  if (!finished_text) {
    std::string tail = stops.push(decoder.flush());
    if (stops.matched()) {
      res.reason = StopReason::StopString;
      res.stop_string = stops.matched_string();
    } else {
      tail += stops.flush();
    }
    emit(tail);
  }
  res.decode_seconds = seconds_since(t_decode);
  return res;
}

}  // namespace pensieve
