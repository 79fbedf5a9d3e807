// One exception type for every failure a user can cause: a bad model file, a bad request, a bad
// config. The message is meant to be shown as-is, so it names the file, tensor or field involved.
#pragma once
#include <stdexcept>
#include <string>

namespace pensieve {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace pensieve
