#include "hub/model_store.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace pensieve::hub {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

constexpr const char* kManifest = "manifest.json";

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool valid_part(const std::string& s) {
  if (s.empty() || s == "." || s == ".." || s.size() > 96) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  return true;
}

// A revision becomes one folder name: '/' (branch names may hold it) is written as "--".
std::string revision_folder(const std::string& revision) {
  std::string out;
  for (char c : revision) out += c == '/' ? std::string("--") : std::string(1, c);
  if (!valid_part(out)) throw Error("invalid revision '" + revision + "'");
  return out;
}

json file_to_json(const StoredFile& f) { return {{"path", f.path}, {"size", f.size}, {"sha256", f.sha256}}; }

json model_to_json(const StoredModel& m) {
  json files = json::array();
  for (const auto& f : m.files) files.push_back(file_to_json(f));
  return {{"name", m.name}, {"repo", m.repo}, {"revision", m.revision}, {"selector", m.selector},
          {"quant", m.quant}, {"source", m.source}, {"entry", m.entry}, {"pulled_at", m.pulled_at},
          {"files", files}};
}

StoredModel model_from_json(const json& j, const fs::path& dir) {
  StoredModel m;
  m.name = j.at("name").get<std::string>();
  m.repo = j.value("repo", "");
  m.revision = j.value("revision", "main");
  m.selector = j.value("selector", "");
  m.quant = j.value("quant", "");
  m.source = j.value("source", "");
  m.entry = j.value("entry", "");
  m.pulled_at = j.value("pulled_at", "");
  for (const auto& f : j.at("files"))
    m.files.push_back({f.at("path").get<std::string>(), f.at("size").get<uint64_t>(), f.value("sha256", "")});
  m.dir = dir;
  return m;
}

json read_manifest(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw Error(file.string() + ": cannot read the manifest");
  try {
    json j = json::parse(in);
    if (!j.is_object() || !j.contains("models") || !j["models"].is_array())
      throw Error(file.string() + ": not a model manifest (no \"models\" list)");
    return j;
  } catch (const json::exception& e) {
    throw Error(file.string() + ": malformed manifest: " + e.what());
  }
}

// Written to a temporary file and renamed, so that a crash never leaves half a manifest.
void write_manifest(const fs::path& file, const json& j) {
  const fs::path tmp = file.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(2) << "\n";
    if (!out) throw Error(tmp.string() + ": cannot write the manifest");
  }
  fs::rename(tmp, file);
}

}  // namespace

uint64_t StoredModel::size_bytes() const {
  uint64_t n = 0;
  for (const auto& f : files) n += f.size;
  return n;
}

std::string model_name(const std::string& repo, const std::string& selector, const std::string& revision) {
  std::string name = repo;
  if (!selector.empty()) name += ":" + selector;
  if (!revision.empty() && revision != "main") name += "@" + revision;
  return name;
}

void check_repo_id(const std::string& repo) {
  const size_t slash = repo.find('/');
  if (slash == std::string::npos || !valid_part(repo.substr(0, slash)) || !valid_part(repo.substr(slash + 1)))
    throw Error("invalid repository id '" + repo + "': expected OWNER/NAME (letters, digits, '-', '_', '.')");
}

ModelStore::ModelStore(fs::path root) : root_(std::move(root)) {}

fs::path ModelStore::default_root() {
  if (const char* p = std::getenv("PENSIEVE_MODELS"); p && *p) return p;
  if (const char* x = std::getenv("XDG_DATA_HOME"); x && *x) return fs::path(x) / "pensieve" / "models";
  const char* home = std::getenv("HOME");
  if (!home || !*home) throw Error("cannot find the model store: set PENSIEVE_MODELS (HOME is not set)");
  return fs::path(home) / ".local" / "share" / "pensieve" / "models";
}

fs::path ModelStore::folder(const std::string& repo, const std::string& revision) const {
  check_repo_id(repo);
  const size_t slash = repo.find('/');
  return root_ / repo.substr(0, slash) / repo.substr(slash + 1) / revision_folder(revision);
}

std::vector<StoredModel> ModelStore::list(std::vector<std::string>* problems) const {
  std::vector<StoredModel> out;
  std::error_code ec;
  if (!fs::is_directory(root_, ec)) return out;
  // ROOT/OWNER/NAME/REVISION/manifest.json: exactly three levels down.
  for (const auto& owner : fs::directory_iterator(root_, ec)) {
    if (!owner.is_directory()) continue;
    for (const auto& repo : fs::directory_iterator(owner.path(), ec)) {
      if (!repo.is_directory()) continue;
      for (const auto& rev : fs::directory_iterator(repo.path(), ec)) {
        const fs::path manifest = rev.path() / kManifest;
        if (!fs::is_regular_file(manifest)) continue;
        try {
          const json j = read_manifest(manifest);
          for (const auto& m : j["models"]) out.push_back(model_from_json(m, rev.path()));
        } catch (const std::exception& e) {
          if (problems) problems->push_back(e.what());
        }
      }
    }
  }
  std::sort(out.begin(), out.end(), [](const StoredModel& a, const StoredModel& b) { return a.name < b.name; });
  return out;
}

std::optional<StoredModel> ModelStore::find(const std::string& name) const {
  for (auto& m : list())
    if (lower(m.name) == lower(name)) return m;
  return std::nullopt;
}

void ModelStore::save(const StoredModel& model) const {
  const fs::path dir = folder(model.repo, model.revision);
  fs::create_directories(dir);
  const fs::path file = dir / kManifest;
  json j = fs::exists(file) ? read_manifest(file)
                            : json{{"repo", model.repo}, {"revision", model.revision}, {"models", json::array()}};
  json models = json::array();
  for (const auto& m : j["models"])
    if (lower(m.value("name", "")) != lower(model.name)) models.push_back(m);
  models.push_back(model_to_json(model));
  j["models"] = models;
  write_manifest(file, j);
}

StoredModel ModelStore::remove(const std::string& name) const {
  std::optional<StoredModel> found = find(name);
  if (!found) throw Error("no model named '" + name + "' in the store (" + root_.string() + "); `pensieve list` shows them");
  const fs::path file = found->dir / kManifest;
  json j = read_manifest(file);
  json models = json::array();
  std::set<std::string> still_used;
  for (const auto& m : j["models"]) {
    if (lower(m.value("name", "")) == lower(found->name)) continue;
    models.push_back(m);
    for (const auto& f : m["files"]) still_used.insert(f.value("path", ""));
  }
  for (const auto& f : found->files) {
    if (still_used.count(f.path)) continue;
    std::error_code ec;
    fs::remove(found->dir / f.path, ec);
    fs::remove(found->dir / (f.path + ".partial"), ec);
  }
  if (models.empty()) {
    std::error_code ec;
    fs::remove_all(found->dir, ec);
    // The repository and owner folders go too once nothing is left in them.
    for (fs::path p = found->dir.parent_path(); p != root_ && p.has_parent_path(); p = p.parent_path())
      if (!fs::remove(p, ec)) break;
  } else {
    j["models"] = models;
    write_manifest(file, j);
  }
  return *found;
}

}  // namespace pensieve::hub
