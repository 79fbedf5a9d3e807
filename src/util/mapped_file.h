// A read-only memory map of a whole file. Model weights are used in place from the map, so loading a
// multi-gigabyte model costs page-table setup, not a copy.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace pensieve {

class MappedFile {
 public:
  // Throws Error naming the path when the file cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Maps the pages under [p, p + n) in one call instead of one fault at a time, for a range about to
// be read once from start to end (a no-op before Linux 5.14).
void populate_pages(const void* p, size_t n);
// Drops this process's whole pages under [p, p + n) and says whether there was one: a file's are
// read again from the page cache if touched; anonymous ones read back as zeros.
bool release_pages(const void* p, size_t n);

}  // namespace pensieve
