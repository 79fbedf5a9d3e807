// The local model store: models pulled from a hub, one folder per repository and revision
// (ROOT/OWNER/NAME/REVISION/) holding the files and a manifest.json that lists the models pulled
// into it (a repository may hold several quantizations) with each file's size and sha256.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace pensieve::hub {

struct StoredFile {
  std::string path;    // relative to the model's folder
  uint64_t size = 0;
  std::string sha256;  // "" when the hub published none (small non-LFS files)
};

struct StoredModel {
  std::string name;      // what it is served and removed as: REPO[:SELECTOR][@REVISION]
  std::string repo, revision, selector, quant;
  std::string source;    // the hub endpoint it came from
  std::string entry;     // the file to load (a .gguf, its first shard), or "" for the folder
  std::vector<StoredFile> files;
  std::string pulled_at;  // RFC 3339, UTC
  std::filesystem::path dir;  // filled in when read from the store

  // What ModelInstance::load is given: the entry file, or the folder (safetensors, MLX).
  std::filesystem::path load_path() const { return entry.empty() ? dir : dir / entry; }
  uint64_t size_bytes() const;
};

// The name a pull is stored under.
std::string model_name(const std::string& repo, const std::string& selector, const std::string& revision);

class ModelStore {
 public:
  explicit ModelStore(std::filesystem::path root);
  // $PENSIEVE_MODELS, else $XDG_DATA_HOME/pensieve/models, else ~/.local/share/pensieve/models.
  static std::filesystem::path default_root();

  const std::filesystem::path& root() const { return root_; }
  // The folder of a repository at a revision (not created). Error for a malformed repo id.
  std::filesystem::path folder(const std::string& repo, const std::string& revision) const;

  // Every model of every manifest, sorted by name. A manifest that cannot be read is skipped and
  // its error appended to `problems` (when given).
  std::vector<StoredModel> list(std::vector<std::string>* problems = nullptr) const;
  // By name (case-insensitive); nullopt when absent.
  std::optional<StoredModel> find(const std::string& name) const;
  // Adds the model to its folder's manifest (replacing one of the same name).
  void save(const StoredModel& model) const;
  // Deletes the model's files that no other model of its folder uses, and its manifest entry
  // (the folder too once empty). Error naming the model when it is not in the store.
  StoredModel remove(const std::string& name) const;

 private:
  std::filesystem::path root_;
};

// Checks a hub repository id: OWNER/NAME of letters, digits, '-', '_', '.' (not "." or "..").
void check_repo_id(const std::string& repo);

}  // namespace pensieve::hub
