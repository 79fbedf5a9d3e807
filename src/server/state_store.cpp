#include "server/state_store.h"

#include <sqlite3.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>

#include "util/sha256.h"
#include "util/error.h"

namespace pensieve::server {

namespace fs = std::filesystem;

namespace {

int64_t now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

// A prepared statement that finalizes itself.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK)
      throw Error(std::string("state database: ") + sqlite3_errmsg(db));
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement& bind(int i, const std::string& s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); return *this; }
  Statement& bind(int i, double v) { sqlite3_bind_double(stmt_, i, v); return *this; }
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw Error(std::string("state database: ") + sqlite3_errmsg(db_));
  }
  int64_t i64(int c) const { return sqlite3_column_int64(stmt_, c); }
  double f64(int c) const { return sqlite3_column_double(stmt_, c); }
  bool is_null(int c) const { return sqlite3_column_type(stmt_, c) == SQLITE_NULL; }
  std::string text(int c) const {
    auto p = sqlite3_column_text(stmt_, c);
    return p ? reinterpret_cast<const char*>(p) : "";
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

std::string random_key() {
  std::random_device rd;
  static const char* digits = "0123456789abcdef";
  std::string key = "psk-";
  for (int i = 0; i < 48; ++i) key += digits[rd() & 15];
  return key;
}

}  // namespace

fs::path default_state_dir() {
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg && *xdg) return fs::path(xdg) / "pensieve";
  if (const char* home = std::getenv("HOME"); home && *home)
    return fs::path(home) / ".local" / "state" / "pensieve";
  return fs::path(".pensieve-state");
}

StateStore::StateStore(const fs::path& dir) : path_(dir / "pensieve.db") {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("state directory " + dir.string() + ": " + ec.message());
  if (sqlite3_open(path_.c_str(), &db_) != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    throw Error("state database " + path_.string() + ": " + msg);
  }
  sqlite3_busy_timeout(db_, 5000);  // the CLI's `keys` commands may write while the server runs
  try {
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    exec("CREATE TABLE IF NOT EXISTS usage (key_name TEXT NOT NULL, model TEXT NOT NULL,"
         " requests INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0,"
         " input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,"
         " generation_seconds REAL NOT NULL DEFAULT 0, PRIMARY KEY (key_name, model))");
    // Columns added after the first release: older databases get them on open.
    for (const char* column : {"cached_input_tokens INTEGER NOT NULL DEFAULT 0",
                               "decode_tokens INTEGER NOT NULL DEFAULT 0", "decode_seconds REAL NOT NULL DEFAULT 0"}) {
      const std::string name(column, std::strchr(column, ' '));
      Statement probe(db_, "SELECT COUNT(*) FROM pragma_table_info('usage') WHERE name = ?1");
      probe.bind(1, name);
      if (probe.step() && probe.i64(0) == 0) exec(("ALTER TABLE usage ADD COLUMN " + std::string(column)).c_str());
    }
    exec("CREATE TABLE IF NOT EXISTS api_keys (id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
         " prefix TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL,"
         " revoked_at INTEGER)");
  } catch (...) {
    sqlite3_close(db_);
    throw;
  }
}

StateStore::~StateStore() { sqlite3_close(db_); }

void StateStore::exec(const char* sql) const {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw Error("state database " + path_.string() + ": " + msg);
  }
}

void StateStore::record_usage(const UsageRecord& r) {
  std::lock_guard lock(mu_);
  Statement s(db_,
              "INSERT INTO usage (key_name, model, requests, errors, input_tokens, output_tokens,"
              " generation_seconds, cached_input_tokens, decode_tokens, decode_seconds)"
              " VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
              " ON CONFLICT(key_name, model) DO UPDATE SET requests = requests + 1,"
              " errors = errors + ?3, input_tokens = input_tokens + ?4,"
              " output_tokens = output_tokens + ?5, generation_seconds = generation_seconds + ?6,"
              " cached_input_tokens = cached_input_tokens + ?7, decode_tokens = decode_tokens + ?8,"
              " decode_seconds = decode_seconds + ?9");
  s.bind(1, r.key_name).bind(2, r.model).bind(3, int64_t(r.ok ? 0 : 1)).bind(4, int64_t(r.input_tokens))
      .bind(5, int64_t(r.output_tokens)).bind(6, r.generation_seconds).bind(7, int64_t(r.cached_input_tokens))
      .bind(8, int64_t(r.decode_tokens)).bind(9, r.decode_seconds);
  s.step();
}

UsageTotals StateStore::totals() const {
  UsageTotals t;
  for (const auto& [key, u] : usage_by_key()) {
    t.requests += u.requests, t.errors += u.errors;
    t.input_tokens += u.input_tokens, t.output_tokens += u.output_tokens;
    t.generation_seconds += u.generation_seconds;
    t.cached_input_tokens += u.cached_input_tokens, t.decode_tokens += u.decode_tokens;
    t.decode_seconds += u.decode_seconds;
  }
  return t;
}

std::vector<std::pair<std::string, UsageTotals>> StateStore::usage_by_key() const {
  std::lock_guard lock(mu_);
  Statement s(db_,
              "SELECT key_name, SUM(requests), SUM(errors), SUM(input_tokens), SUM(output_tokens),"
              " SUM(generation_seconds), SUM(cached_input_tokens), SUM(decode_tokens), SUM(decode_seconds)"
              " FROM usage GROUP BY key_name ORDER BY key_name");
  std::vector<std::pair<std::string, UsageTotals>> out;
  while (s.step())
    out.push_back({s.text(0), {s.i64(1), s.i64(2), s.i64(3), s.i64(4), s.f64(5), s.i64(6), s.i64(7), s.f64(8)}});
  return out;
}

std::string StateStore::add_key(const std::string& name) {
  if (name.empty()) throw Error("key name must not be empty");
  std::lock_guard lock(mu_);
  Statement taken(db_, "SELECT 1 FROM api_keys WHERE name = ?1 AND revoked_at IS NULL");
  taken.bind(1, name);
  if (taken.step()) throw Error("an active API key named '" + name + "' already exists");
  std::string key = random_key();
  Statement s(db_, "INSERT INTO api_keys (name, prefix, hash, created_at) VALUES (?1, ?2, ?3, ?4)");
  s.bind(1, name).bind(2, key.substr(0, 12)).bind(3, sha256_hex(key)).bind(4, now_unix());
  s.step();
  return key;
}

std::vector<KeyInfo> StateStore::list_keys() const {
  std::lock_guard lock(mu_);
  Statement s(db_, "SELECT name, prefix, created_at, revoked_at FROM api_keys ORDER BY id");
  std::vector<KeyInfo> out;
  while (s.step()) {
    KeyInfo k{s.text(0), s.text(1), s.i64(2), std::nullopt};
    if (!s.is_null(3)) k.revoked_at = s.i64(3);
    out.push_back(std::move(k));
  }
  return out;
}

bool StateStore::revoke_key(const std::string& name_or_prefix) {
  if (name_or_prefix.empty()) return false;
  std::lock_guard lock(mu_);
  Statement s(db_, "UPDATE api_keys SET revoked_at = ?2 WHERE revoked_at IS NULL AND"
                   " (name = ?1 OR prefix = ?1)");
  s.bind(1, name_or_prefix).bind(2, now_unix());
  s.step();
  return sqlite3_changes(db_) > 0;
}

std::vector<StateStore::ActiveKey> StateStore::active_keys() const {
  std::lock_guard lock(mu_);
  Statement s(db_, "SELECT name, hash FROM api_keys WHERE revoked_at IS NULL");
  std::vector<ActiveKey> out;
  while (s.step()) out.push_back({s.text(0), s.text(1)});
  return out;
}

}  // namespace pensieve::server
