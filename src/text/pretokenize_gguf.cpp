// The pre-tokenizer each GGUF `tokenizer.ggml.pre` name stands for, written as the Hugging Face
// pre-tokenizer sequence of the model it was converted from (so that GGUF and tokenizer.json give
// the same pieces).
#include "text/pretokenize.h"
#include "util/error.h"

namespace pensieve {

namespace {

// Llama 3 and Qwen2 patterns; they differ only in how many digits form one piece.
std::string llama3_style_pattern(const char* digits) {
  return std::string(R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})") + digits +
         R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
}

// DeepSeek LLM's letter class: the cased letters of many scripts, spelled as code point ranges.
const char* const kDeepseekLetters =
    R"([A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293})"
    R"(\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A})"
    R"(\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556})"
    R"(\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF})"
    R"(\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D})"
    R"(\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D})"
    R"(\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3})"
    R"(\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107})"
    R"(\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D})"
    R"(\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184})"
    R"(\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D})"
    R"(\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF})"
    R"(\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F})"
    R"(\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2})"
    R"(\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}])";
const char* const kCjkRun = R"([\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+)";

PreTokenStep split_step(const std::string& pattern, SplitBehavior b = SplitBehavior::Isolated) {
  return PreTokenStep::split(pattern, b);
}

PreTokenStep byte_level_step(bool use_regex) { return PreTokenStep::byte_level(use_regex); }

}  // namespace

PreTokenizer PreTokenizer::for_gguf_pre(const std::string& pre) {
  std::vector<PreTokenStep> s;
  if (pre.empty() || pre == "default" || pre == "gpt-2" || pre == "gpt2" || pre == "mpt" ||
      pre == "olmo" || pre == "jais" || pre == "gpt-neox") {
    s.push_back(byte_level_step(true));
  } else if (pre == "llama-bpe" || pre == "llama3" || pre == "dbrx" || pre == "smaug-bpe") {
    s.push_back(split_step(llama3_style_pattern("{1,3}")));
    s.push_back(byte_level_step(false));
  } else if (pre == "qwen2" || pre == "deepseek-r1-qwen" || pre == "stablelm2" || pre == "megrez") {
    s.push_back(split_step(llama3_style_pattern("")));
    s.push_back(byte_level_step(false));
  } else if (pre == "chatglm-bpe") {
    s.push_back(split_step(llama3_style_pattern("{1,3}")));
    s.push_back(byte_level_step(false));
  } else if (pre == "tekken") {
    s.push_back(split_step(
        R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|)"
        R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}|)"
        R"( ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"));
    s.push_back(byte_level_step(false));
  } else if (pre == "gpt-4o") {
    const std::string contraction = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)?)";
    s.push_back(split_step(
        R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+)" + contraction +
        R"(|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*)" + contraction +
        R"(|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"));
    s.push_back(byte_level_step(false));
  } else if (pre == "deepseek-v3") {
    s.push_back(split_step(R"(\p{N}{1,3})"));
    s.push_back(split_step(R"([\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+)"));
    s.push_back(split_step(
        R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|)"
        R"( ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"));
    s.push_back(byte_level_step(false));
  } else if (pre == "deepseek-llm") {
    s.push_back(split_step(R"([\r\n])"));
    s.push_back(split_step(std::string(R"(\s?)") + kDeepseekLetters + "+"));
    s.push_back(split_step(R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)"));
    s.push_back(split_step(R"(\s+$)"));
    s.push_back(split_step(kCjkRun));
    s.push_back(split_step(R"(\p{N}+)"));
    s.push_back(byte_level_step(false));
  } else if (pre == "deepseek-coder") {
    s.push_back(split_step(R"([\r\n])"));
    s.push_back(split_step(R"(\s?\p{L}+)"));
    s.push_back(split_step(R"(\s?\p{P}+)"));
    s.push_back(split_step(kCjkRun));
    s.push_back(split_step(R"(\p{N})"));
    s.push_back(byte_level_step(false));
  } else if (pre == "falcon") {
    s.push_back(split_step(kPunctuationPattern, SplitBehavior::Contiguous));
    s.push_back(byte_level_step(true));
    s.push_back(split_step(R"(\p{N}+)"));
    s.push_back(split_step(R"([0-9][0-9][0-9])"));
  } else if (pre == "starcoder" || pre == "refact" || pre == "command-r" || pre == "smollm" ||
             pre == "codeshell" || pre == "exaone") {
    s.push_back(split_step(R"(\p{N})"));
    s.push_back(byte_level_step(true));
  } else {
    throw Error("tokenizer.ggml.pre: unsupported pre-tokenizer '" + pre + "'");
  }
  return PreTokenizer(std::move(s));
}

}  // namespace pensieve
