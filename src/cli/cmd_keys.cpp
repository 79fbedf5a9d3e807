// `pensieve keys add|list|revoke`: API keys in the server's state store, kept as SHA-256 hashes.
// A running server sees changes at once (it reads the store on each check).
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>

#include "cli/command.h"
#include "server/state_store.h"
#include "util/error.h"

namespace pensieve::cli {
namespace {

struct KeysArgs {
  std::string state_dir, name;
};

std::filesystem::path state_dir_of(const KeysArgs& a) {
  if (!a.state_dir.empty()) return a.state_dir;
  if (const char* env = std::getenv("PENSIEVE_STATE_DIR"); env && *env) return env;
  return server::default_state_dir();
}

std::string date_of(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

int list_keys(const KeysArgs& a) {
  server::StateStore store(state_dir_of(a));
  auto keys = store.list_keys();
  if (keys.empty()) {
    std::printf("no API keys in %s\n", store.path().c_str());
    return 0;
  }
  std::printf("%-20s %-14s %-22s %s\n", "NAME", "PREFIX", "CREATED", "STATUS");
  for (const auto& k : keys)
    std::printf("%-20s %-14s %-22s %s\n", k.name.c_str(), k.prefix.c_str(), date_of(k.created_at).c_str(),
                k.revoked_at ? ("revoked " + date_of(*k.revoked_at)).c_str() : "active");
  return 0;
}

const CommandRegistrar keys_command{
    "keys", "Manage the API keys of `pensieve serve` (stored hashed in the state directory)",
    [](CLI::App& sub) -> std::function<int()> {
      auto args = std::make_shared<KeysArgs>();
      sub.require_subcommand(1);
      auto* add = sub.add_subcommand("add", "Create a key and print it once");
      add->add_option("name", args->name, "A name for the key (shown in usage statistics)")->required();
      auto* list = sub.add_subcommand("list", "List keys (names and prefixes, never the keys)");
      auto* revoke = sub.add_subcommand("revoke", "Revoke a key by name or prefix");
      revoke->add_option("name", args->name, "The key's name or its prefix")->required();
      for (auto* s : {add, list, revoke})
        s->add_option("--state-dir", args->state_dir,
                      "State directory (default: $PENSIEVE_STATE_DIR, else $XDG_STATE_HOME/pensieve)");
      return [args, add, list, revoke]() -> int {
        if (add->parsed()) {
          server::StateStore store(state_dir_of(*args));
          std::string key = store.add_key(args->name);
          std::printf("%s\n", key.c_str());
          std::fprintf(stderr, "Created API key '%s'. It is shown only this once; the server stores its hash.\n",
                       args->name.c_str());
          return 0;
        }
        if (list->parsed()) return list_keys(*args);
        if (revoke->parsed()) {
          server::StateStore store(state_dir_of(*args));
          if (!store.revoke_key(args->name)) throw Error("no active API key named or prefixed '" + args->name + "'");
          std::printf("revoked '%s'\n", args->name.c_str());
          return 0;
        }
        return 1;
      };
    }};

}  // namespace
}  // namespace pensieve::cli
