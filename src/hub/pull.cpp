#include "hub/pull.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>
#include <map>
#include <regex>
#include <set>

#include "util/error.h"

namespace pensieve::hub {

namespace fs = std::filesystem;

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && lower(s.substr(s.size() - tail.size())) == tail;
}

std::string base_name(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// A shard set (NAME-00001-of-00003.gguf) is one model: keyed by NAME and the count; a single file
// is keyed by its path.
const std::regex kShard(R"((.*)-(\d{5})-of-(\d{5})\.gguf$)", std::regex::icase);

std::string gguf_group(const std::string& path) {
  std::smatch m;
  if (std::regex_match(path, m, kShard)) return m[1].str() + "-*-of-" + m[3].str() + ".gguf";
  return path;
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "(nothing)" : out;
}

bool is_model_support_file(const std::string& path) {
  if (path.find('/') != std::string::npos) return false;
  static const std::set<std::string> names = {
      "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
      "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "chat_template.json",
      "chat_template.jinja", "model.safetensors.index.json"};
  return names.count(path) > 0 || ends_with(path, ".safetensors");
}

std::string now_rfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", double(bytes) / double(1ull << 30));
  return buf;
}

}  // namespace

PullSpec parse_pull_spec(const std::string& text) {
  PullSpec s;
  const size_t colon = text.find(':');
  s.repo = text.substr(0, colon);
  if (colon != std::string::npos) {
    s.selector = text.substr(colon + 1);
    if (s.selector.empty()) throw Error("'" + text + "': nothing after ':' (expected REPO:QUANT or REPO:FILE)");
  }
  check_repo_id(s.repo);
  return s;
}

std::string quant_from_file_name(const std::string& name) {
  static const std::regex q(R"((^|[-._])((I?Q[1-8](_[0-9A-Z]+)*)|BF16|F16|F32|FP16|FP32)(?=[-._]|$))", std::regex::icase);
  std::smatch m;
  const std::string stem = base_name(name);
  std::string found;
  for (auto it = std::sregex_iterator(stem.begin(), stem.end(), q); it != std::sregex_iterator(); ++it) found = (*it)[2].str();
  for (char& c : found) c = char(std::toupper(static_cast<unsigned char>(c)));
  if (found == "FP16") found = "F16";
  if (found == "FP32") found = "F32";
  return found;
}

PullPlan plan_pull(const PullSpec& spec, const std::vector<RepoFile>& tree) {
  std::map<std::string, std::vector<RepoFile>> groups;  // GGUF models, each one file or a shard set
  std::vector<std::string> all_names;
  for (const auto& f : tree) {
    all_names.push_back(f.path);
    if (ends_with(f.path, ".gguf")) groups[gguf_group(f.path)].push_back(f);
  }
  std::vector<std::string> gguf_names;
  for (const auto& [name, _] : groups) gguf_names.push_back(name);

  auto plan_group = [&](const std::string& key) {
    PullPlan p;
    p.files = groups[key];
    std::sort(p.files.begin(), p.files.end(), [](const RepoFile& a, const RepoFile& b) { return a.path < b.path; });
    p.entry = p.files.front().path;
    p.quant = quant_from_file_name(p.entry);
    if (p.quant.empty()) p.quant = "GGUF";
    return p;
  };

  if (!spec.selector.empty()) {
    if (groups.empty())
      throw Error(spec.repo + " has no GGUF files to pick '" + spec.selector + "' from; pull it without ':" + spec.selector +
                  "' to fetch its safetensors (it has: " + join_names(all_names) + ")");
    std::vector<std::string> matches;
    const std::string sel = lower(spec.selector);
    for (const auto& [key, files] : groups) {
      bool hit = false;
      for (const auto& f : files)
        if (lower(f.path) == sel || lower(base_name(f.path)) == sel) hit = true;
      if (hit) return plan_group(key);  // an exact file name wins
      if (lower(base_name(key)).find(sel) != std::string::npos) matches.push_back(key);
    }
    if (matches.size() == 1) return plan_group(matches.front());
    if (matches.empty())
      throw Error("no GGUF file of " + spec.repo + " matches '" + spec.selector + "'; it has: " + join_names(gguf_names));
    throw Error("'" + spec.selector + "' matches several GGUF files of " + spec.repo + ": " + join_names(matches) +
                "; name one of them (" + spec.repo + ":FILE)");
  }

  PullPlan p;
  for (const auto& f : tree)
    if (is_model_support_file(f.path)) p.files.push_back(f);
  const bool has_safetensors =
      std::any_of(p.files.begin(), p.files.end(), [](const RepoFile& f) { return ends_with(f.path, ".safetensors"); });
  if (has_safetensors) {
    p.quant = "safetensors";
    return p;
  }
  if (groups.size() == 1) return plan_group(groups.begin()->first);
  if (groups.size() > 1)
    throw Error(spec.repo + " has several GGUF files: pick one as " + spec.repo + ":QUANT or " + spec.repo +
                ":FILE; it has: " + join_names(gguf_names));
  throw Error(spec.repo + " has no GGUF or safetensors model files; it has: " + join_names(all_names));
}

StoredModel pull(const HubClient& client, const ModelStore& store, const PullSpec& spec, const std::string& revision,
                 const PullEvents& events) {
  auto log = [&](const std::string& s) {
    if (events.log) events.log(s);
  };
  log("listing " + spec.repo + " at " + revision + " (" + client.options().endpoint + ")");
  const std::vector<RepoFile> tree = client.tree(spec.repo, revision);
  const PullPlan plan = plan_pull(spec, tree);
  const fs::path dir = store.folder(spec.repo, revision);
  fs::create_directories(dir);

  // What is still to fetch: complete files of the right size are kept, partial ones resumed.
  uint64_t needed = 0, total = 0;
  for (const auto& f : plan.files) {
    total += f.size;
    std::error_code ec;
    const fs::path dest = dir / f.path;
    if (fs::is_regular_file(dest, ec) && fs::file_size(dest, ec) == f.size) continue;
    const uint64_t have = fs::is_regular_file(dest.string() + ".partial", ec) ? fs::file_size(dest.string() + ".partial", ec) : 0;
    needed += f.size > have ? f.size - have : 0;
  }
  struct statvfs vfs {};
  if (::statvfs(dir.c_str(), &vfs) == 0) {
    const uint64_t free_bytes = uint64_t(vfs.f_bavail) * uint64_t(vfs.f_frsize);
    if (needed > free_bytes)
      throw Error("not enough disk space in " + dir.string() + ": " + gib(needed) + " to download, " + gib(free_bytes) + " free");
  }
  log(std::to_string(plan.files.size()) + " file(s), " + gib(total) + " (" + gib(needed) + " to download) into " + dir.string());

  StoredModel m;
  m.repo = spec.repo;
  m.revision = revision;
  m.selector = spec.selector;
  m.name = model_name(spec.repo, spec.selector, revision);
  m.quant = plan.quant;
  m.source = client.options().endpoint;
  m.entry = plan.entry;
  m.dir = dir;
  // Files already in place (from an earlier pull of this model or another of the repo) are
  // trusted when their size and the manifest's sha256 agree with the hub's.
  std::map<std::string, std::string> recorded;
  for (const auto& other : store.list())
    if (other.dir == dir)
      for (const auto& f : other.files) recorded[f.path] = f.sha256;
  for (const auto& f : plan.files) {
    const fs::path dest = dir / f.path;
    std::error_code ec;
    std::string digest;
    const bool in_place = fs::is_regular_file(dest, ec) && fs::file_size(dest, ec) == f.size;
    if (in_place && recorded.count(f.path) && (f.sha256.empty() || recorded[f.path] == f.sha256)) {
      digest = recorded[f.path];
      log(f.path + ": already here");
    } else {
      if (in_place) fs::remove(dest, ec);  // not recorded, or a different version: fetch again
      digest = client.download(spec.repo, revision, f, dest, events.progress);
    }
    m.files.push_back({f.path, f.size, digest});
  }
  m.pulled_at = now_rfc3339();
  store.save(m);
  return m;
}

}  // namespace pensieve::hub
