// The render helper of the Jinja unit tests: the clock pinned to 26 Jul 2024 (as the goldens),
// errors rendered as text so that expected failures compare like renders.
#pragma once
#include <chrono>
#include <ctime>
#include <string>

#include <nlohmann/json.hpp>

#include "text/chat_template.h"

namespace pensieve::test {

// 26 Jul 2024, noon local time: the date the goldens pin strftime_now() to.
inline std::chrono::system_clock::time_point pinned_date() {
  std::tm tm{};
  tm.tm_year = 2024 - 1900;
  tm.tm_mon = 6;
  tm.tm_mday = 26;
  tm.tm_hour = 12;
  tm.tm_isdst = -1;
  return std::chrono::system_clock::from_time_t(std::mktime(&tm));
}

// Renders `source` with the JSON `context`; an error renders as "ERROR: <kind>: <message>".
inline std::string render(const std::string& source, const std::string& context = "{}") {
  try {
    ChatTemplate tmpl(source);
    tmpl.set_clock(pinned_date);
    return tmpl.render(nlohmann::ordered_json::parse(context));
  } catch (const TemplateError& e) {
    return "ERROR: " + e.kind() + ": " + e.what();
  }
}

}  // namespace pensieve::test
