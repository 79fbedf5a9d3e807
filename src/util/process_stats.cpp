#include "util/process_stats.h"

#include <fstream>
#include <string>

namespace pensieve {

static size_t status_kb(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string prefix = std::string(key) + ":";
  while (std::getline(in, line))
    if (line.rfind(prefix, 0) == 0) return size_t(std::stoull(line.substr(prefix.size()))) * 1024;
  return 0;
}

size_t peak_rss_bytes() { return status_kb("VmHWM"); }
size_t current_rss_bytes() { return status_kb("VmRSS"); }

}  // namespace pensieve
