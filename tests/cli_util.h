// Running build/pensieve from tests: exit status and captured stdout/stderr.
#pragma once
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "testdata.h"

namespace pensieve::test {

struct CommandResult {
  int status = -1;  // exit code, or -1 when killed by a signal
  std::string out, err;
};

// `args` is appended to the binary path as-is (the caller quotes); `input` is fed on stdin.
inline CommandResult run_pensieve(const std::string& args, const std::string& input = "") {
  namespace fs = std::filesystem;
  static int counter = 0;
  const fs::path dir = fs::temp_directory_path() /
                       ("pensieve-cli-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  fs::create_directories(dir);
  std::ofstream(dir / "in", std::ios::binary) << input;
  const std::string cmd = "'" + pensieve_binary() + "' " + args + " < '" + (dir / "in").string() +
                          "' > '" + (dir / "out").string() + "' 2> '" + (dir / "err").string() + "'";
  const int raw = std::system(cmd.c_str());
  CommandResult r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  auto slurp = [](const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  r.out = slurp(dir / "out");
  r.err = slurp(dir / "err");
  fs::remove_all(dir);
  return r;
}

}  // namespace pensieve::test
