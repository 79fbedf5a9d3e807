#include "runtime/generator.h"

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>

#include "model/model.h"
#include "runtime/scheduler.h"
#include "runtime/chat_format.h"
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

}  // namespace

std::string default_model_id(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();  // trailing slash
  return p.has_extension() && p.extension() == ".gguf" ? p.stem().string() : p.filename().string();
}

double decode_tokens_per_second(int completion_tokens, double decode_seconds) {
  return completion_tokens > 1 && decode_seconds > 0 ? (completion_tokens - 1) / decode_seconds : 0.0;
}

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
  std::unique_ptr<ChatFormatter> chat;
  std::vector<int32_t> stop_ids;
  int context = 0;
  double load_seconds = 0;
  std::shared_ptr<ThreadPool> pool;
  std::shared_ptr<Scheduler> scheduler;  // last: stopped before what it uses goes
};

std::shared_ptr<ModelInstance> ModelInstance::load(const std::string& path, const EngineOptions& opts) {
  const auto t0 = Clock::now();
  auto inst = std::shared_ptr<ModelInstance>(new ModelInstance());
  inst->impl_ = std::make_unique<Impl>();
  Impl& m = *inst->impl_;
  m.path = path;
  m.id = opts.id.empty() ? default_model_id(path) : opts.id;
  m.model = Model::load(path, opts.device);
  const LoadedModel& files = m.model->files();
  const ModelConfig& cfg = m.model->config();
  if (files.gguf && files.gguf->find("tokenizer.ggml.model"))
    m.tokenizer = Tokenizer::from_gguf(*files.gguf);
  else if (!files.dir.empty() && std::filesystem::exists(std::filesystem::path(files.dir) / "tokenizer.json"))
    m.tokenizer = Tokenizer::from_hf_dir(files.dir);

  std::string tmpl = m.tokenizer ? m.tokenizer->chat_template() : "";
  if (!opts.chat_template_file.empty()) {
    std::ifstream in(opts.chat_template_file, std::ios::binary);
    if (!in) throw Error(opts.chat_template_file + ": cannot read the chat template file");
    tmpl.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (tmpl.empty()) throw Error(opts.chat_template_file + ": the chat template file is empty");
  }
  if (tmpl.empty() && m.tokenizer) {
    if (cfg.arch == Arch::Phi3) tmpl = kPhi3Template;
    else if (cfg.arch == Arch::Qwen2) tmpl = kChatMlTemplate;
    else if (m.tokenizer->encode("<|start_header_id|>", false).size() == 1) tmpl = kLlama3Template;
  }
  if (!tmpl.empty() && m.tokenizer) {
    try {
      m.chat = std::make_unique<ChatFormatter>(tmpl, m.tokenizer->bos_token(), m.tokenizer->eos_token());
    } catch (const Error& e) {
      const std::string& from = opts.chat_template_file.empty() ? path : opts.chat_template_file;
      throw Error(from + ": the chat template does not parse: " + e.what());
    }
  }

  for (int id : cfg.stop_ids) m.stop_ids.push_back(id);
  if (cfg.eos_id >= 0) m.stop_ids.push_back(cfg.eos_id);
  if (m.tokenizer)
    for (int32_t id : m.tokenizer->stop_ids()) m.stop_ids.push_back(id);

  const int trained = cfg.ctx_train > 0 ? cfg.ctx_train : 4096;
  m.context = opts.context > 0 ? opts.context : std::min(trained, 4096);
  m.pool = opts.pool ? opts.pool : std::make_shared<ThreadPool>(opts.threads > 0 ? opts.threads : physical_core_count());
  if (m.tokenizer) {
    SchedulerOptions so;
    so.max_running = opts.max_running;
    so.max_waiting = opts.max_waiting;
    so.max_batch_tokens = opts.max_batch_tokens;
    so.kv_cache_bytes = opts.kv_cache_bytes;
    so.kv_type = opts.kv_type;
    m.scheduler = std::make_shared<Scheduler>(m.model, *m.tokenizer, m.stop_ids, m.context, *m.pool, so);
  }
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
  tokenizer();
  if (!impl_->chat)
    throw Error(impl_->path + ": the model has no chat template and none is known for its family");
  return impl_->chat->render(prompt);
}

const ChatFormatter* ModelInstance::chat_formatter() const { return impl_->chat.get(); }

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

std::shared_ptr<GenerationService> ModelInstance::service() const {
  tokenizer();  // the scheduler exists exactly when the tokenizer does
  return impl_->scheduler;
}

GenerateResult ModelInstance::generate(const GenerateRequest& req, const TextCallback& on_text) const {
  auto svc = service();
  auto job = std::make_shared<GenerationJob>();
  job->request = req;
  std::mutex mu;
  std::condition_variable cv;
  std::optional<GenerateResult> result;
  std::optional<std::string> error;
  bool caller_stopped = false;
  GenerationJob* raw = job.get();
  job->sink = [&, raw](GenerationEvent&& e) {
    switch (e.kind) {
      case GenerationEvent::Kind::Started: return;
      case GenerationEvent::Kind::Text:
        if (!caller_stopped && !on_text(e.text)) {
          caller_stopped = true;
          raw->cancelled = true;
        }
        return;
      case GenerationEvent::Kind::Done:
      case GenerationEvent::Kind::Failed: {
        std::lock_guard lock(mu);
        if (e.kind == GenerationEvent::Kind::Done) result = e.result;
        else error = e.message;
        cv.notify_all();
        return;
      }
    }
  };
  if (!svc->submit(job)) throw Error("the model is busy: too many generations are waiting");
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return result || error; });
  if (error) throw Error(*error);
  return *result;
}

}  // namespace pensieve
