// `pensieve pull REPO[:QUANT|:FILE]`: which files of a repository make the model (pure, tested
// without a network), and the pull itself (disk-space check, downloads, the store's manifest).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "hub/hub_client.h"
#include "hub/model_store.h"

namespace pensieve::hub {

struct PullSpec {
  std::string repo;      // OWNER/NAME
  std::string selector;  // a quantization (case-insensitive substring of a GGUF name) or a file; may be ""
};

// "OWNER/NAME[:SELECTOR]"; Error for a malformed one.
PullSpec parse_pull_spec(const std::string& text);

struct PullPlan {
  std::vector<RepoFile> files;
  std::string entry;  // the .gguf to load (first shard), "" for a safetensors/MLX folder
  std::string quant;  // for `list`: Q4_K_M, F16, safetensors, ...
};

// GGUF: the file (or shard set) the selector picks; with no selector the only GGUF of the repo.
// Safetensors/MLX (no GGUF, or no selector and no GGUF): config, tokenizer files and every
// *.safetensors at the top level. Error listing what the repository has when the choice is
// missing or ambiguous.
PullPlan plan_pull(const PullSpec& spec, const std::vector<RepoFile>& tree);

// The quantization named in a GGUF file name (Q4_K_M, IQ4_XS, F16, ...), or "".
std::string quant_from_file_name(const std::string& name);

struct PullEvents {
  std::function<void(const std::string&)> log;  // one line: what is being done
  ProgressFn progress;
};

// Lists the repository, plans, checks the free disk space, downloads every file (resuming
// partial ones, skipping complete ones whose size matches the manifest), and records the model in
// the store. Returns it.
StoredModel pull(const HubClient& client, const ModelStore& store, const PullSpec& spec,
                 const std::string& revision, const PullEvents& events);

}  // namespace pensieve::hub
