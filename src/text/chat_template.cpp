#include "text/chat_template.h"

#include "text/jinja_interpreter.h"
#include "text/jinja_parser.h"

namespace pensieve {

struct ChatTemplate::Parsed {
  jinja::Body body;
};

ChatTemplate::ChatTemplate(std::string source)
    : source_(std::move(source)), parsed_(std::make_unique<Parsed>()) {
  parsed_->body = jinja::parse_template(source_);
}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

void ChatTemplate::set_clock(Clock clock) { clock_ = std::move(clock); }

namespace {

std::string render_value(const jinja::Body& body, const jinja::Value& context,
                         const ChatTemplate::Clock& clock) {
  jinja::RenderOptions options;
  if (clock) options.now = clock;
  jinja::Interpreter interpreter(options);
  return interpreter.render(body, context);
}

}  // namespace

std::string ChatTemplate::render(const nlohmann::json& context) const {
  return render_value(parsed_->body, jinja::from_json(context), clock_);
}

std::string ChatTemplate::render(const nlohmann::ordered_json& context) const {
  return render_value(parsed_->body, jinja::from_json(context), clock_);
}

}  // namespace pensieve
