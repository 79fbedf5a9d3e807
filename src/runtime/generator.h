// The runtime: a loaded model together with its tokenizer and chat template, and the generation
// loop (prefill, decode, sampling, stop conditions) that the CLI and the server share.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/kv_cache.h"
#include "formats/model_config.h"

namespace pensieve {

class Tokenizer;
class GenerationService;
class ThreadPool;
class ChatFormatter;
class Grammar;  // runtime/grammar.h
using GrammarPtr = std::shared_ptr<const Grammar>;

struct EngineOptions {
  int threads = 0;        // 0: physical core count
  int context = 0;        // 0: min(model's trained context, 4096)
  KvType kv_type = KvType::F16;  // what the KV cache holds
  std::string id;         // model id; default: from metadata or file name
  std::string device = "cpu";  // auto, cpu, cuda or cuda:N (model/model.h, backend/backend.h)
  // The scheduler (runtime/scheduler.h): sequences batched per step, jobs queued behind them,
  // tokens per forward pass, KV cache size in bytes (0: the context x 4, capped by free memory).
  int max_running = 64;
  int max_waiting = 1024;
  int max_batch_tokens = 512;
  size_t kv_cache_bytes = 0;
  // Compute threads shared with other models (a server's models then take turns on the cores
  // instead of oversubscribing them); null: a pool of `threads` of its own.
  std::shared_ptr<ThreadPool> pool;
  // A chat template file (Jinja source) used instead of the model file's own (`--chat-template FILE`).
  std::string chat_template_file;
};

struct SamplingParams {
  float temperature = 0.8f;  // 0: greedy
  int top_k = 40;            // 0: off
  float top_p = 0.95f;       // 1: off
  float min_p = 0.05f;       // 0: off
  float repetition_penalty = 1.0f;  // 1: off (applied over the last penalty_window tokens)
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int penalty_window = 64;
  uint64_t seed = 0;          // 0: random
};

struct GenerateRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 256;
  SamplingParams sampling;
  std::vector<std::string> stop_strings;
  bool stop_at_eos = true;   // stop on the model's end-of-turn/EOS ids
  // Constrained decoding (runtime/grammar.h): when set, every token keeps the generated text a
  // prefix of the grammar; the end-of-turn ids are allowed only once the text is a complete
  // sentence, and a complete sentence that admits no continuation ends the turn (end_turn).
  GrammarPtr grammar;
};

enum class StopReason { EndOfTurn, MaxTokens, StopString, Cancelled };
const char* stop_reason_name(StopReason r);  // "end_turn", "max_tokens", "stop_sequence", "cancelled"

struct GenerateResult {
  StopReason reason = StopReason::MaxTokens;
  std::string stop_string;       // the stop string that matched
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_tokens = 0;           // prompt tokens read from the prefix cache, not computed
  double prefill_seconds = 0;      // from admission to the first generated token
  double decode_seconds = 0;       // from the first generated token to the end
  double grammar_seconds = 0;      // spent computing grammar masks (within the two above)
};

// Decode speed: the tokens generated after the first over the time they took (the first token
// comes out of the prefill). The one definition `bench`, `run --metrics` and the server report.
double decode_tokens_per_second(int completion_tokens, double decode_seconds);

// Receives complete UTF-8 text as it is generated (text that might begin a stop string is held
// back until it is decided). Return false to cancel the generation.
using TextCallback = std::function<bool(std::string_view text)>;

// A tool call the assistant made (an Anthropic `tool_use` block, an OpenAI `tool_calls` entry).
struct ToolCall {
  std::string id;                   // toolu_… / call_…; may be empty in a parsed call
  std::string name;
  nlohmann::ordered_json arguments = nlohmann::ordered_json::object();  // always an object
};

// The output of a tool call, sent back by the client (an Anthropic `tool_result` block, an OpenAI
// `role: "tool"` message).
struct ToolResult {
  std::string tool_call_id;  // the id of the ToolCall it answers
  std::string content;       // its text
  bool is_error = false;
};

// One chat message as the runtime sees it: a role and its content blocks — the text, the tool
// calls of an assistant turn, the tool results of a user turn. The runtime renders them in the
// form each chat template expects (runtime/chat_format.h).
struct ChatMessage {
  std::string role;                      // "system", "user" or "assistant"
  std::string content;                   // the text blocks, joined
  std::vector<ToolCall> tool_calls;      // assistant turns
  std::vector<ToolResult> tool_results;  // user turns: shown to the model before `content`
};

struct ChatPrompt {
  std::vector<ChatMessage> messages;
  nlohmann::ordered_json tools;  // OpenAI function form ([{type, function: {name, description, parameters}}]); null when absent
  bool add_generation_prompt = true;
};

// The id a model is served under when none is given: the file name without .gguf, or the folder's.
std::string default_model_id(const std::string& path);

class ModelInstance {
 public:
  static std::shared_ptr<ModelInstance> load(const std::string& path, const EngineOptions& opts);
  ~ModelInstance();

  const std::string& id() const;
  const ModelConfig& config() const;
  const Tokenizer& tokenizer() const;  // throws Error when the model has no tokenizer
  int context_length() const;
  double load_seconds() const;
  const std::string& path() const;

  // Renders the chat template and tokenizes the result (BOS added once). Error when the model has
  // no chat template and no known fallback, or when the template raises.
  std::vector<int32_t> chat_tokens(const ChatPrompt& prompt) const;
  std::string render_chat(const ChatPrompt& prompt) const;
  std::vector<int32_t> text_tokens(std::string_view text, bool add_bos) const;
  // The chat template with its probed capabilities and the family's tool-call syntax; null when
  // the model has no template.
  const ChatFormatter* chat_formatter() const;

  // Runs one generation through the scheduler and waits for it; any number of threads may call
  // it at once (their sequences are batched). Error when the request is invalid or fails.
  GenerateResult generate(const GenerateRequest& req, const TextCallback& on_text) const;

  // The scheduler that runs this model's generations (continuous batching, prefix cache).
  std::shared_ptr<GenerationService> service() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pensieve
