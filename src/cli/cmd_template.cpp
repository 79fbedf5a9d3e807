// `pensieve template --template FILE --context FILE.json`: renders a chat template the way
// transformers' apply_chat_template would, for checking a model's prompt format by hand.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/command.h"
#include "text/chat_template.h"

namespace pensieve::cli {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int run_template(const std::string& template_path, const std::string& context_path) {
  std::string source = read_file(template_path);
  nlohmann::ordered_json context;
  try {
    context = nlohmann::ordered_json::parse(read_file(context_path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(context_path + ": invalid JSON: " + e.what());
  }
  if (!context.is_object()) throw Error(context_path + ": the context must be a JSON object");
  try {
    ChatTemplate tmpl(std::move(source));
    std::string out = tmpl.render(context);
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  } catch (const TemplateError& e) {
    std::fprintf(stderr, "%s: %s: %s\n", template_path.c_str(), e.kind().c_str(), e.what());
    return 3;
  }
}

const CommandRegistrar template_command(
    "template", "Render a chat template with a JSON context (like apply_chat_template)",
    [](CLI::App& sub) -> std::function<int()> {
      auto template_path = std::make_shared<std::string>();
      auto context_path = std::make_shared<std::string>();
      sub.add_option("--template", *template_path, "Jinja chat template file")->required();
      sub.add_option("--context", *context_path,
                     "JSON object of variables: messages, add_generation_prompt, bos_token, ...")
          ->required();
      return [template_path, context_path] { return run_template(*template_path, *context_path); };
    });

}  // namespace
}  // namespace pensieve::cli
