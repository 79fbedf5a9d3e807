// Key checks and the SQLite state store (usage that survives reopening; hashed keys).
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <random>

#include "server/auth.h"
#include "server/state_store.h"
#include "util/sha256.h"
#include "util/error.h"

using namespace pensieve::server;
using pensieve::sha256_hex;
namespace fs = std::filesystem;

namespace {
fs::path temp_dir() {
  auto dir = fs::temp_directory_path() / ("pensieve-state-" + std::to_string(std::random_device{}()));
  fs::remove_all(dir);
  return dir;
}
}  // namespace

TEST(Auth, PresentedKeyFromEitherHeader) {
  EXPECT_EQ(presented_key("k1", ""), "k1");
  EXPECT_EQ(presented_key("", "Bearer k2"), "k2");
  EXPECT_EQ(presented_key("", "bearer  k3 "), "k3");
  EXPECT_EQ(presented_key("", "Basic abc"), "");
  EXPECT_EQ(presented_key("", ""), "");
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "abcd"));
}

TEST(Auth, StaticKeys) {
  Authenticator none({}, nullptr);
  EXPECT_FALSE(none.required());
  Authenticator a({"secret-1", "secret-2"}, nullptr);
  EXPECT_TRUE(a.required());
  EXPECT_EQ(a.identify("secret-2").value(), "key-2");
  EXPECT_FALSE(a.identify("secret-3").has_value());
  EXPECT_FALSE(a.identify("").has_value());
}

TEST(StateStore, KeysAreStoredHashedAndRevocable) {
  fs::path dir = temp_dir();
  std::string key;
  {
    StateStore store(dir);
    Authenticator auth({}, &store);
    EXPECT_FALSE(auth.required());
    key = store.add_key("ci");
    EXPECT_EQ(key.rfind("psk-", 0), 0u);
    EXPECT_THROW(store.add_key("ci"), pensieve::Error);
    EXPECT_TRUE(auth.required());
    EXPECT_EQ(auth.identify(key).value(), "ci");
    EXPECT_FALSE(auth.identify(key + "x").has_value());
  }
  // The plain key is nowhere in the database file.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir / "pensieve.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "SELECT hash FROM api_keys", -1, &st, nullptr);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))), sha256_hex(key));
  sqlite3_finalize(st);
  sqlite3_close(db);
  {
    StateStore store(dir);
    auto keys = store.list_keys();
    ASSERT_EQ(keys.size(), 1u);
    EXPECT_EQ(keys[0].prefix, key.substr(0, 12));
    EXPECT_TRUE(store.revoke_key("ci"));
    EXPECT_FALSE(store.revoke_key("ci"));
    Authenticator auth({}, &store);
    EXPECT_FALSE(auth.identify(key).has_value());
    EXPECT_FALSE(auth.required());
  }
  fs::remove_all(dir);
}

// A database written before the prefix-cache and decode columns existed gains them on open and
// keeps its rows.
TEST(StateStore, OlderDatabaseGainsTheNewColumns) {
  fs::path dir = temp_dir();
  fs::create_directories(dir);
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir / "pensieve.db").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "CREATE TABLE usage (key_name TEXT NOT NULL, model TEXT NOT NULL,"
                           " requests INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0,"
                           " input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,"
                           " generation_seconds REAL NOT NULL DEFAULT 0, PRIMARY KEY (key_name, model));"
                           "INSERT INTO usage VALUES ('alice', 'm1', 4, 0, 40, 20, 2.0);",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  StateStore store(dir);
  store.record_usage({"alice", "m1", true, 10, 5, 0.5, 6, 4, 0.4});
  UsageTotals t = store.totals();
  EXPECT_EQ(t.requests, 5);
  EXPECT_EQ(t.input_tokens, 50);
  EXPECT_EQ(t.cached_input_tokens, 6);
  EXPECT_EQ(t.decode_tokens, 4);
  fs::remove_all(dir);
}

TEST(Auth, RevocationNeverTurnsAuthenticationOff) {
  fs::path dir = temp_dir();
  StateStore store(dir);
  Authenticator open({}, &store);  // loopback, no key yet
  EXPECT_FALSE(open.required());
  store.add_key("a");
  EXPECT_TRUE(open.required());
  EXPECT_TRUE(store.revoke_key("a"));
  EXPECT_FALSE(open.has_keys());
  EXPECT_TRUE(open.required());
  Authenticator bound_beyond_loopback({}, &store, true);
  EXPECT_FALSE(bound_beyond_loopback.has_keys());
  EXPECT_TRUE(bound_beyond_loopback.required());
  EXPECT_FALSE(bound_beyond_loopback.identify("").has_value());
  fs::remove_all(dir);
}

TEST(Auth, LoopbackHosts) {
  EXPECT_TRUE(is_loopback_host("127.0.0.1"));
  EXPECT_TRUE(is_loopback_host("127.1.2.3"));
  EXPECT_TRUE(is_loopback_host("::1"));
  EXPECT_TRUE(is_loopback_host("localhost"));
  EXPECT_FALSE(is_loopback_host("0.0.0.0"));
  EXPECT_FALSE(is_loopback_host("::"));
  EXPECT_FALSE(is_loopback_host("192.168.1.2"));
  EXPECT_FALSE(is_loopback_host("example.com"));
}

TEST(StateStore, UsageSurvivesReopening) {
  fs::path dir = temp_dir();
  {
    StateStore store(dir);
    store.record_usage({"alice", "m1", true, 10, 5, 0.5});
    store.record_usage({"alice", "m1", true, 1, 2, 0.5, 1, 1, 0.25});
    store.record_usage({"bob", "m1", false, 0, 0, 0});
  }
  StateStore store(dir);
  UsageTotals t = store.totals();
  EXPECT_EQ(t.requests, 3);
  EXPECT_EQ(t.errors, 1);
  EXPECT_EQ(t.input_tokens, 11);
  EXPECT_EQ(t.output_tokens, 7);
  EXPECT_DOUBLE_EQ(t.generation_seconds, 1.0);
  EXPECT_EQ(t.cached_input_tokens, 1);
  EXPECT_EQ(t.decode_tokens, 1);
  EXPECT_DOUBLE_EQ(t.decode_seconds, 0.25);
  auto by_key = store.usage_by_key();
  ASSERT_EQ(by_key.size(), 2u);
  EXPECT_EQ(by_key[0].first, "alice");
  EXPECT_EQ(by_key[0].second.requests, 2);
  fs::remove_all(dir);
}
