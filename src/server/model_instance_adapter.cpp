#include "server/model_instance_adapter.h"

#include <sys/stat.h>

#include <filesystem>
#include "runtime/chat_format.h"

namespace pensieve::server {

namespace {

class InstanceModel : public ServedModel {
 public:
  explicit InstanceModel(std::shared_ptr<ModelInstance> m) : m_(std::move(m)) {
    struct stat st {};
    if (::stat(m_->path().c_str(), &st) == 0) created_ = st.st_mtime;
    std::error_code ec;
    namespace fs = std::filesystem;
    if (fs::is_directory(m_->path(), ec)) {
      for (const auto& e : fs::directory_iterator(m_->path(), ec))
        if (e.is_regular_file(ec)) files_ += e.file_size(ec);
    } else {
      files_ = fs::file_size(m_->path(), ec);
      if (ec) files_ = 0;
    }
  }
  const std::string& id() const override { return m_->id(); }
  int context_length() const override { return m_->context_length(); }
  double load_seconds() const override { return m_->load_seconds(); }
  int64_t created_unix() const override { return created_; }
  std::vector<int32_t> chat_tokens(const ChatPrompt& p) const override { return m_->chat_tokens(p); }
  std::vector<int32_t> text_tokens(const std::string& t) const override { return m_->text_tokens(t, false); }
  ToolCallFormat tool_call_format() const override {
    const ChatFormatter* f = m_->chat_formatter();
    return f ? f->tool_format() : ToolCallFormat::Generic;
  }
  GenerationService& service() const override { return *service_; }
  uint64_t memory_bytes() const override { return files_ + service_->stats().kv_cache_bytes; }

 private:
  std::shared_ptr<ModelInstance> m_;
  std::shared_ptr<GenerationService> service_ = m_->service();
  int64_t created_ = 0;
  uint64_t files_ = 0;  // the weights are mapped from these
};

}  // namespace

std::shared_ptr<ServedModel> serve_instance(std::shared_ptr<ModelInstance> instance) {
  return std::make_shared<InstanceModel>(std::move(instance));
}

std::shared_ptr<ServedModel> load_served_model(const std::string& path, const EngineOptions& opts) {
  return serve_instance(ModelInstance::load(path, opts));
}

}  // namespace pensieve::server
