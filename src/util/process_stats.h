// Memory figures of this process, from /proc/self/status.
#pragma once
#include <cstddef>

namespace pensieve {

size_t peak_rss_bytes();     // VmHWM
size_t current_rss_bytes();  // VmRSS

}  // namespace pensieve
