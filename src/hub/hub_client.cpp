#include "hub/hub_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "util/sha256.h"

namespace pensieve::hub {

namespace fs = std::filesystem;

namespace {

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlHandle {
  CURL* h = curl_easy_init();
  curl_slist* headers = nullptr;
  ~CurlHandle() {
    curl_slist_free_all(headers);
    if (h) curl_easy_cleanup(h);
  }
};

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_sha256_hex(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

// Response headers of every response of a transfer (redirects included), lower-cased names.
struct Headers {
  std::vector<std::pair<std::string, std::string>> all;
  std::string get(const std::string& name) const {
    for (auto it = all.rbegin(); it != all.rend(); ++it)
      if (it->first == name) return it->second;
    return "";
  }
};

size_t on_header(char* data, size_t size, size_t n, void* user) {
  std::string line(data, size * n);
  const size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string value = line.substr(colon + 1);
    while (!value.empty() && std::isspace(static_cast<unsigned char>(value.front()))) value.erase(0, 1);
    while (!value.empty() && std::isspace(static_cast<unsigned char>(value.back()))) value.pop_back();
    static_cast<Headers*>(user)->all.emplace_back(lower(line.substr(0, colon)), value);
  }
  return size * n;
}

// Everything that every request shares: auth, redirects, timeouts, a user agent.
void setup(CurlHandle& c, const HubOptions& o, const std::string& url, Headers& headers) {
  if (!c.h) throw Error("libcurl: cannot create a handle");
  curl_easy_setopt(c.h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c.h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c.h, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(c.h, CURLOPT_USERAGENT, "pensieve");
  curl_easy_setopt(c.h, CURLOPT_CONNECTTIMEOUT, 30L);
  // A stalled transfer (under 1 byte/s for 60 s) fails and is retried.
  curl_easy_setopt(c.h, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c.h, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(c.h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c.h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c.h, CURLOPT_HEADERDATA, &headers);
  // libcurl drops the Authorization header when a redirect leaves the host (the CDN never sees it).
  if (!o.token.empty()) c.headers = curl_slist_append(c.headers, ("Authorization: Bearer " + o.token).c_str());
  curl_easy_setopt(c.h, CURLOPT_HTTPHEADER, c.headers);
}

long status_of(CurlHandle& c) {
  long code = 0;
  curl_easy_getinfo(c.h, CURLINFO_RESPONSE_CODE, &code);
  return code;
}

// The message for a failed HTTP status: what it means for a hub request.
std::string status_message(long code, const std::string& what, const HubOptions& o) {
  if (code == 401 || code == 403)
    return what + ": access denied (HTTP " + std::to_string(code) + "): the repository is private or gated, or the token is wrong" +
           (o.token.empty() ? " (no token given: set HF_TOKEN or pass --token)" : "");
  if (code == 404) return what + ": not found (HTTP 404): check the repository id, the revision and the file name";
  return what + ": HTTP " + std::to_string(code);
}

size_t append_body(char* data, size_t size, size_t n, void* user) {
  auto* s = static_cast<std::string*>(user);
  if (s->size() > (64u << 20)) return 0;  // a file list is never that large
  s->append(data, size * n);
  return size * n;
}

// The next page of a paginated listing: Link: <URL>; rel="next".
std::string next_link(const std::string& link) {
  const size_t rel = link.find("rel=\"next\"");
  if (rel == std::string::npos) return "";
  const size_t open = link.rfind('<', rel), close = link.find('>', open);
  if (open == std::string::npos || close == std::string::npos || close > rel) return "";
  return link.substr(open + 1, close - open - 1);
}

// State of one file transfer, shared with libcurl's callbacks.
struct Transfer {
  std::FILE* out = nullptr;
  Sha256 hash;
  uint64_t have = 0;        // bytes in the partial file (and in `hash`)
  uint64_t total = 0;
  bool checked_status = false;
  bool write_failed = false;  // the disk refused
  bool too_long = false;      // the server sent more than the listed size
  CurlHandle* handle = nullptr;
  const RepoFile* file = nullptr;
  const ProgressFn* progress = nullptr;
  const HubOptions* opts = nullptr;
  bool interrupted = false;
  fs::path partial;
};

size_t on_data(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t bytes = size * n;
  if (!t->checked_status) {
    t->checked_status = true;
    long code = status_of(*t->handle);
    if (code == 200 && t->have > 0) {
      // The server ignored the Range: start over.
      if (std::fseek(t->out, 0, SEEK_SET) != 0 || ::ftruncate(fileno(t->out), 0) != 0) return 0;
      t->have = 0;
      t->hash.reset();
    } else if (code != 200 && code != 206) {
      return bytes;  // an error body: discarded, the status is reported after the transfer
    }
  }
  const long code = status_of(*t->handle);
  if (code != 200 && code != 206) return bytes;
  if (t->have + bytes > t->total) {
    t->too_long = true;  // not the file the list describes
    return 0;
  }
  if (std::fwrite(data, 1, bytes, t->out) != bytes) {
    t->write_failed = true;
    return 0;
  }
  t->hash.update(data, bytes);
  t->have += bytes;
  return bytes;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  if (t->opts->interrupted && t->opts->interrupted()) {
    t->interrupted = true;
    return 1;
  }
  if (*t->progress) (*t->progress)(*t->file, t->have, t->total);
  return 0;
}

// Hashes what a partial file already holds.
uint64_t hash_existing(std::FILE* f, Sha256& h) {
  std::vector<char> buf(1 << 20);
  uint64_t n = 0;
  size_t got;
  while ((got = std::fread(buf.data(), 1, buf.size(), f)) > 0) {
    h.update(buf.data(), got);
    n += got;
  }
  return n;
}

void check_relative_path(const std::string& p) {
  if (p.empty() || p.front() == '/' || p.find('\\') != std::string::npos) throw Error("unsafe file name in the repository: '" + p + "'");
  for (const auto& part : fs::path(p))
    if (part == ".." || part == ".") throw Error("unsafe file name in the repository: '" + p + "'");
}

}  // namespace

HubOptions hub_options_from_environment() {
  HubOptions o;
  if (const char* e = std::getenv("HF_ENDPOINT"); e && *e) o.endpoint = e;
  while (!o.endpoint.empty() && o.endpoint.back() == '/') o.endpoint.pop_back();
  if (const char* t = std::getenv("HF_TOKEN"); t && *t) o.token = t;
  return o;
}

std::string url_encode(const std::string& s, bool keep_slash) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) out += char(c);
    else out += '%', out += hex[c >> 4], out += hex[c & 15];
  }
  return out;
}

HubClient::HubClient(HubOptions options) : opts_(std::move(options)) {
  global_init();
  while (!opts_.endpoint.empty() && opts_.endpoint.back() == '/') opts_.endpoint.pop_back();
}

std::string HubClient::resolve_url(const std::string& repo, const std::string& revision, const std::string& path) const {
  return opts_.endpoint + "/" + repo + "/resolve/" + url_encode(revision, false) + "/" + url_encode(path, true);
}

std::vector<RepoFile> HubClient::tree(const std::string& repo, const std::string& revision) const {
  std::vector<RepoFile> files;
  std::string url = opts_.endpoint + "/api/models/" + repo + "/tree/" + url_encode(revision, false) + "?recursive=true";
  const std::string what = repo + " at revision '" + revision + "'";
  for (int page = 0; !url.empty(); ++page) {
    if (page > 1000) throw Error(what + ": the file list does not end");
    CurlHandle c;
    Headers headers;
    std::string body;
    setup(c, opts_, url, headers);
    curl_easy_setopt(c.h, CURLOPT_WRITEFUNCTION, append_body);
    curl_easy_setopt(c.h, CURLOPT_WRITEDATA, &body);
    const CURLcode rc = curl_easy_perform(c.h);
    if (rc != CURLE_OK) throw Error(what + ": cannot list the files at " + url + ": " + curl_easy_strerror(rc));
    const long code = status_of(c);
    if (code != 200) throw Error(status_message(code, what, opts_));
    try {
      const auto j = nlohmann::json::parse(body);
      if (!j.is_array()) throw Error(what + ": the hub's file list is not a JSON array");
      for (const auto& e : j) {
        if (e.value("type", "file") != "file") continue;
        RepoFile f;
        f.path = e.at("path").get<std::string>();
        f.size = e.value("size", uint64_t(0));
        if (e.contains("lfs") && e["lfs"].is_object()) {
          f.sha256 = lower(e["lfs"].value("oid", ""));
          f.size = e["lfs"].value("size", f.size);
        }
        files.push_back(std::move(f));
      }
    } catch (const nlohmann::json::exception& e) {
      throw Error(what + ": malformed file list from " + url + ": " + e.what());
    }
    url = next_link(headers.get("link"));
  }
  return files;
}

std::string HubClient::download(const std::string& repo, const std::string& revision, const RepoFile& file,
                                const fs::path& dest, const ProgressFn& progress) const {
  check_relative_path(file.path);
  fs::create_directories(dest.parent_path());
  const fs::path partial = dest.string() + ".partial";
  const std::string url = resolve_url(repo, revision, file.path);

  Transfer t;
  t.total = file.size;
  t.file = &file;
  t.progress = &progress;
  t.opts = &opts_;
  t.partial = partial;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> out(std::fopen(partial.c_str(), "a+b"), std::fclose);
  if (!out) throw Error(partial.string() + ": cannot open for writing");
  t.out = out.get();
  // Unbuffered: what came over the wire is on disk at once, so an interrupted run leaves all of it.
  std::setvbuf(t.out, nullptr, _IONBF, 0);
  std::fseek(t.out, 0, SEEK_SET);
  t.have = hash_existing(t.out, t.hash);
  if (t.have > t.total) {  // longer than the file: not a prefix of it
    if (::ftruncate(fileno(t.out), 0) != 0) throw Error(partial.string() + ": cannot truncate");
    t.have = 0;
    t.hash.reset();
  }
  std::fseek(t.out, 0, SEEK_END);

  std::string linked_etag;
  int delay = opts_.retry_delay_ms;
  for (int attempt = 0; t.have < t.total; ++attempt) {
    CurlHandle c;
    Headers headers;
    setup(c, opts_, url, headers);
    t.handle = &c;
    t.checked_status = false;
    t.write_failed = t.too_long = false;
    curl_easy_setopt(c.h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c.h, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c.h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c.h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c.h, CURLOPT_XFERINFODATA, &t);
    if (t.have > 0) curl_easy_setopt(c.h, CURLOPT_RESUME_FROM_LARGE, curl_off_t(t.have));
    const CURLcode rc = curl_easy_perform(c.h);
    std::fflush(t.out);
    for (const char* h : {"x-linked-etag", "etag"}) {
      std::string v = headers.get(h);
      if (v.rfind("W/", 0) == 0) v.erase(0, 2);
      v.erase(std::remove(v.begin(), v.end(), '"'), v.end());
      if (is_sha256_hex(v) && linked_etag.empty()) linked_etag = lower(v);
    }
    if (t.interrupted) throw Interrupted(file.path + ": interrupted at " + std::to_string(t.have) + " of " +
                                         std::to_string(t.total) + " bytes; run the command again to resume");
    const long code = status_of(c);
    if (rc == CURLE_OK && (code == 200 || code == 206)) {
      if (t.have == t.total) break;
      // A complete response that is shorter than the listed size: retried like a drop.
    } else if (rc == CURLE_OK || rc == CURLE_HTTP_RETURNED_ERROR) {
      if (code == 416) {  // the Range is past the end: the partial is not this file
        if (::ftruncate(fileno(t.out), 0) != 0) throw Error(partial.string() + ": cannot truncate");
        t.have = 0;
        t.hash.reset();
      } else if (code < 500 && code != 429) {
        throw Error(status_message(code, url, opts_));
      }
    } else if (t.too_long) {
      throw Error(url + ": the server sent more than the " + std::to_string(t.total) + " bytes the file list gives");
    } else if (t.write_failed) {
      throw Error(partial.string() + ": cannot write (disk full?)");
    }
    if (attempt >= opts_.retries)
      throw Error(file.path + ": download failed after " + std::to_string(attempt + 1) + " attempts (" +
                  (rc != CURLE_OK ? std::string(curl_easy_strerror(rc)) : "HTTP " + std::to_string(code)) + ", " +
                  std::to_string(t.have) + " of " + std::to_string(t.total) + " bytes kept in " + partial.string() +
                  "; run the command again to resume)");
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    delay *= 2;
  }
  if (progress) progress(file, t.have, t.total);

  const std::string got = t.hash.finish_hex();
  const std::string want = !file.sha256.empty() ? file.sha256 : linked_etag;
  if (!want.empty() && got != want) {
    out.reset();
    std::error_code ec;
    fs::remove(partial, ec);
    throw Error(file.path + ": sha256 mismatch: expected " + want + ", got " + got + " (the partial download was deleted)");
  }
  out.reset();
  fs::rename(partial, dest);
  return got;
}

}  // namespace pensieve::hub
