// Finds stop strings in streamed text, including ones that straddle token boundaries: text that
// could still become the start of a stop string is held back until it is decided.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace pensieve {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);

  // Appends text. Returns what may be emitted now; sets `matched` (and stops emitting) when a stop
  // string completes — the text before it is still returned.
  std::string push(std::string_view text);
  // Text held back at the end of generation (no stop matched).
  std::string flush();

  bool matched() const { return matched_ >= 0; }
  const std::string& matched_string() const;

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  int matched_ = -1;
};

}  // namespace pensieve
