#include "runtime/stop_matcher.h"

#include <gtest/gtest.h>

namespace pensieve {
namespace {

std::string feed(StopMatcher& m, const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& p : pieces) out += m.push(p);
  return out;
}

TEST(StopMatcher, PassesTextThroughWithoutStops) {
  StopMatcher m({});
  EXPECT_EQ(feed(m, {"Hello", ", ", "world"}), "Hello, world");
  EXPECT_FALSE(m.matched());
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, StopStraddlingTokensIsFoundAndNotEmitted) {
  StopMatcher m({"\nUser:"});
  EXPECT_EQ(feed(m, {"Sure", ".\nU", "se", "r: next"}), "Sure.");
  EXPECT_TRUE(m.matched());
  EXPECT_EQ(m.matched_string(), "\nUser:");
  EXPECT_EQ(m.push("more"), "");
}

TEST(StopMatcher, HeldBackPrefixIsReleasedWhenItDiverges) {
  StopMatcher m({"STOP"});
  EXPECT_EQ(m.push("ab ST"), "ab ");
  EXPECT_EQ(m.push("OP"), "");
  EXPECT_TRUE(m.matched());

  StopMatcher n({"STOP"});
  EXPECT_EQ(n.push("ab ST"), "ab ");
  EXPECT_EQ(n.push("ART"), "START");
  EXPECT_FALSE(n.matched());
}

TEST(StopMatcher, FlushReturnsHeldTextAtTheEnd) {
  StopMatcher m({"</s>"});
  EXPECT_EQ(m.push("done </"), "done ");
  EXPECT_EQ(m.flush(), "</");
}

TEST(StopMatcher, EarliestOfSeveralStopsWins) {
  StopMatcher m({"world", "lo"});
  EXPECT_EQ(m.push("hello world"), "hel");
  EXPECT_EQ(m.matched_string(), "lo");
}

}  // namespace
}  // namespace pensieve
