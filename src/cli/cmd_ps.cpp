// `pensieve ps`: the models a running server has loaded now (GET /v1/models?loaded=true): memory,
// requests using them, and when keep_alive unloads them.
#include <curl/curl.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "util/error.h"

namespace pensieve::cli {
namespace {

struct PsArgs {
  std::string url = "http://127.0.0.1:7777", api_key;
};

size_t append(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

int run_ps(const PsArgs& a) {
  std::string key = a.api_key;
  if (key.empty())
    if (const char* e = std::getenv("PENSIEVE_API_KEY")) key = e;
  const std::string url = a.url + "/v1/models?loaded=true";
  std::unique_ptr<CURL, void (*)(CURL*)> h(curl_easy_init(), curl_easy_cleanup);
  if (!h) throw Error("libcurl: cannot create a handle");
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> headers(nullptr, curl_slist_free_all);
  if (!key.empty()) headers.reset(curl_slist_append(nullptr, ("x-api-key: " + key).c_str()));
  std::string body;
  curl_easy_setopt(h.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(h.get(), CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(h.get(), CURLOPT_WRITEFUNCTION, append);
  curl_easy_setopt(h.get(), CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(h.get(), CURLOPT_TIMEOUT, 30L);
  const CURLcode rc = curl_easy_perform(h.get());
  if (rc != CURLE_OK) throw Error("cannot reach the server at " + a.url + ": " + curl_easy_strerror(rc));
  long code = 0;
  curl_easy_getinfo(h.get(), CURLINFO_RESPONSE_CODE, &code);
  if (code != 200) throw Error(url + ": HTTP " + std::to_string(code) + ": " + body.substr(0, 300));
  const auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.contains("data")) throw Error(url + ": not a model list: " + body.substr(0, 300));
  std::printf("%-56s %10s %8s  %-20s  %s\n", "NAME", "MEMORY", "REQUESTS", "LOADED", "UNTIL");
  for (const auto& m : j["data"]) {
    const std::string until = m["expires_at"].is_string() ? m["expires_at"].get<std::string>()
                              : m.value("requests", 0) > 0 ? "in use" : "forever";
    std::printf("%-56s %7.2f GB %8d  %-20s  %s\n", m.value("id", "?").c_str(), m.value("memory_bytes", 0.0) / 1e9,
                m.value("requests", 0), m.value("loaded_at", "").c_str(), until.c_str());
  }
  return 0;
}

const CommandRegistrar ps_command{
    "ps", "List the models a running server has loaded", [](CLI::App& sub) -> std::function<int()> {
      auto a = std::make_shared<PsArgs>();
      sub.add_option("--url", a->url, "The server (default http://127.0.0.1:7777)");
      sub.add_option("--api-key", a->api_key, "API key (default $PENSIEVE_API_KEY)");
      return [a] { return run_ps(*a); };
    }};

}  // namespace
}  // namespace pensieve::cli
