// ChatTemplate against the golden renders of real model templates (made by Python jinja2 in
// transformers' environment), its API (clock, key order, errors, limits) and the `template` CLI.
#include "text/chat_template.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "testdata.h"
#include "text/jinja_render.h"
#include "text/jinja_interpreter.h"
#include "text/jinja_parser.h"

namespace pensieve {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path templates_dir() { return test::testdata_dir() / "templates"; }

std::vector<std::string> golden_names() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(templates_dir() / "goldens", ec))
    if (entry.path().extension() == ".txt") names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  if (names.empty()) names.push_back("");  // one case that fails, naming the folder
  return names;
}

class TemplateGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(TemplateGolden, RendersExactlyLikeJinja2) {
  PENSIEVE_REQUIRE_TESTDATA();
  const std::string name = GetParam();
  ASSERT_FALSE(name.empty()) << "no goldens under " << templates_dir();
  size_t sep = name.find("--");
  ASSERT_NE(sep, std::string::npos) << name;
  fs::path source = templates_dir() / "src" / (name.substr(0, sep) + ".jinja");
  fs::path context = templates_dir() / "contexts" / (name.substr(sep + 2) + ".json");
  std::string golden = read_text(templates_dir() / "goldens" / (name + ".txt"));

  std::string got;
  try {
    ChatTemplate tmpl(read_text(source));
    tmpl.set_clock(test::pinned_date);
    got = tmpl.render(nlohmann::ordered_json::parse(read_text(context)));
  } catch (const TemplateError& e) {
    got = "ERROR: " + e.kind() + ": " + e.what();
  }
  EXPECT_EQ(got, golden);
}

INSTANTIATE_TEST_SUITE_P(Goldens, TemplateGolden, ::testing::ValuesIn(golden_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param.empty() ? "none" : info.param;
                           for (char& c : n)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(ChatTemplate, StrftimeNowUsesTheInjectedClock) {
  ChatTemplate tmpl("{{ strftime_now('%d %b %Y') }}");
  tmpl.set_clock(test::pinned_date);
  EXPECT_EQ(tmpl.render(nlohmann::json::object()), "26 Jul 2024");
}

TEST(ChatTemplate, OrderedContextKeepsKeyOrderForToJson) {
  ChatTemplate tmpl("{{ tool | tojson }}");
  const char* json = R"({"tool": {"name": "f", "description": "d", "parameters": {}}})";
  EXPECT_EQ(tmpl.render(nlohmann::ordered_json::parse(json)),
            R"({"name": "f", "description": "d", "parameters": {}})");
  // nlohmann::json sorts keys on parse; the overload renders what it is given.
  EXPECT_EQ(tmpl.render(nlohmann::json::parse(json)),
            R"({"description": "d", "name": "f", "parameters": {}})");
}

TEST(ChatTemplate, RendersConcurrentlyFromOneParse) {
  ChatTemplate tmpl("{% for m in messages %}{{ m.content }}{% endfor %}");
  auto ctx = nlohmann::ordered_json::parse(R"({"messages": [{"content": "a"}, {"content": "b"}]})");
  EXPECT_EQ(tmpl.render(ctx), "ab");
  EXPECT_EQ(tmpl.render(ctx), "ab");  // rendering leaves the parsed template unchanged
}

std::string error_of(const std::string& source, const char* context = "{}") {
  try {
    ChatTemplate tmpl(source);
    tmpl.render(nlohmann::ordered_json::parse(context));
  } catch (const TemplateError& e) {
    return e.kind() + ": " + e.what();
  }
  return "no error";
}

TEST(ChatTemplate, SyntaxErrorsNameTheLine) {
  EXPECT_EQ(error_of("a\n{% if %}"),
            "TemplateSyntaxError: Expected an expression, got 'end of statement block' (line 2)");
  EXPECT_EQ(error_of("\n\n{% endif %}"), "TemplateSyntaxError: Encountered unknown tag 'endif'. (line 3)");
  EXPECT_EQ(error_of("{% if true %}x"),
            "TemplateSyntaxError: Unexpected end of template. Jinja was looking for the following "
            "tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be closed is "
            "'if'. (line 1)");
  EXPECT_EQ(error_of("{{ 1 + }}"), "TemplateSyntaxError: unexpected 'end of print statement' (line 1)");
  EXPECT_EQ(error_of("{{ 'abc }}"), "TemplateSyntaxError: unexpected end of string literal (line 1)");
  EXPECT_EQ(error_of("{{ x "), "TemplateSyntaxError: Unexpected end of template: missing '}}' (line 1)");
  EXPECT_EQ(error_of("{# x"), "TemplateSyntaxError: Missing end of comment tag (line 1)");
  EXPECT_EQ(error_of("{% break %}"), "TemplateSyntaxError: 'break' outside of a loop (line 1)");
  EXPECT_EQ(error_of("{{ a ) }}"), "TemplateSyntaxError: unexpected ')' (line 1)");
}

TEST(ChatTemplate, UntrustedTemplatesHitLimitsNotCrashes) {
  EXPECT_EQ(error_of("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"),
            "RecursionError: maximum recursion depth exceeded");
  EXPECT_EQ(error_of("{{ range(100001) }}"),
            "OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  EXPECT_EQ(error_of("{{ 'x' * 1000000000 }}"), "MemoryError: string repetition result too large");
  EXPECT_EQ(error_of("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}").substr(0, 50),
            "TemplateSyntaxError: expression nesting too deep (");
}

TEST(ChatTemplate, RunawayLoopsStopAtTheStepBudget) {
  jinja::RenderOptions options;
  options.max_steps = 100000;
  jinja::Body body = jinja::parse_template(
      "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}");
  jinja::Interpreter interpreter(options);
  try {
    interpreter.render(body, jinja::Value::dict());
    FAIL() << "expected the step budget to stop the render";
  } catch (const TemplateError& e) {
    EXPECT_STREQ(e.what(), "template rendering exceeded its step budget (runaway loop?)");
  }
}

TEST(ChatTemplate, GenerationBlockRendersItsBody) {
  ChatTemplate tmpl("{% generation %}kept {{ 1 }}{% endgeneration %}");
  EXPECT_EQ(tmpl.render(nlohmann::json::object()), "kept 1");
}

TEST(ChatTemplate, ImmutableSandboxRefusesMutation) {
  EXPECT_EQ(error_of("{% set l = [] %}{{ l.append(1) }}"),
            "SecurityError: access to attribute 'append' of 'list' object is unsafe.");
  EXPECT_EQ(error_of("{{ {}.update({}) }}"),
            "SecurityError: access to attribute 'update' of 'dict' object is unsafe.");
}

// ---- the CLI ----

struct CliResult {
  int status;
  std::string out, err;
};

CliResult run_cli(const std::string& tmpl, const std::string& context) {
  fs::path dir = fs::temp_directory_path() / ("pensieve_tmpl_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "t.jinja") << tmpl;
  std::ofstream(dir / "c.json") << context;
  std::string cmd = test::pensieve_binary() + " template --template " + (dir / "t.jinja").string() +
                    " --context " + (dir / "c.json").string() + " > " + (dir / "out").string() +
                    " 2> " + (dir / "err").string();
  int raw = std::system(cmd.c_str());
  CliResult r{WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, read_text(dir / "out"), read_text(dir / "err")};
  fs::remove_all(dir);
  return r;
}

TEST(TemplateCli, PrintsTheRender) {
  CliResult r = run_cli("{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}",
                        R"({"bos_token": "<s>", "messages": [{"role": "user", "content": "Hi é"}]})");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "<s><user>Hi é\n");
}

TEST(TemplateCli, TemplateErrorExitsThreeWithTheMessage) {
  CliResult r = run_cli("{{ raise_exception('System role not supported') }}", "{}");
  EXPECT_EQ(r.status, 3);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("TemplateError: System role not supported"), std::string::npos) << r.err;
}

TEST(TemplateCli, BadContextIsAnErrorNotACrash) {
  CliResult r = run_cli("x", "{not json");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("invalid JSON"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pensieve
