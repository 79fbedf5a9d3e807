// A client of the Hugging Face hub's HTTP API, as huggingface_hub uses it: the file list from
// GET {endpoint}/api/models/{repo}/tree/{revision}?recursive=true, files from
// GET {endpoint}/{repo}/resolve/{revision}/{path} (redirects followed). Transfers go through
// libcurl; a file is written to NAME.partial, resumed with Range after a dropped connection or a
// restart, checked against its sha256, and only then renamed into place.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "util/error.h"

namespace pensieve::hub {

struct RepoFile {
  std::string path;
  uint64_t size = 0;
  std::string sha256;  // lfs.oid: set for LFS files (weights), "" for small git files
};

struct HubOptions {
  std::string endpoint = "https://huggingface.co";  // no trailing slash
  std::string token;                                // sent as Authorization: Bearer
  int retries = 4;                                  // per file, after a dropped or failed transfer
  int retry_delay_ms = 1000;                        // doubled after each retry
  std::function<bool()> interrupted;                // polled during transfers (Ctrl-C)
};

// $HF_ENDPOINT (default the public hub) and $HF_TOKEN.
HubOptions hub_options_from_environment();

// Thrown when `interrupted` asked a transfer to stop; the partial file is kept.
class Interrupted : public Error {
 public:
  using Error::Error;
};

// (file, bytes of it present, its size); called often during a transfer.
using ProgressFn = std::function<void(const RepoFile&, uint64_t done, uint64_t total)>;

class HubClient {
 public:
  explicit HubClient(HubOptions options);
  const HubOptions& options() const { return opts_; }

  // Every file of the repository at the revision. Error: 401/403 (private or gated repository, or
  // a bad token), 404 (no such repository or revision), anything else with its status.
  std::vector<RepoFile> tree(const std::string& repo, const std::string& revision) const;

  // Downloads `file` to `dest` through `dest`.partial (resuming what is there). The sha256 is
  // compared with file.sha256, else with the X-Linked-Etag/ETag the hub sends when that is a
  // sha256; on a mismatch the partial file is deleted and Error gives both digests. Returns the
  // sha256 of what was written.
  std::string download(const std::string& repo, const std::string& revision, const RepoFile& file,
                       const std::filesystem::path& dest, const ProgressFn& progress) const;

  // The URL of a file (for messages and tests).
  std::string resolve_url(const std::string& repo, const std::string& revision, const std::string& path) const;

 private:
  HubOptions opts_;
};

// Percent-encodes everything but unreserved characters (and '/' when keep_slash).
std::string url_encode(const std::string& s, bool keep_slash);

}  // namespace pensieve::hub
