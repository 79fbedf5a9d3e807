// Subcommands register themselves: each cmd_*.cpp defines one static CommandRegistrar, so a new
// subcommand is a new file and main.cpp never changes. The files compile in unity batches (one
// parse of CLI11 for several; CMakeLists.txt), so the registrar is named after its command.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace pensieve::cli {

// Called with the subcommand's CLI11 app to declare its options; returns the function that runs it
// after parsing (its return value is the process exit status).
using CommandSetup = std::function<std::function<int()>(CLI::App& sub)>;

struct CommandInfo {
  std::string name;
  std::string description;
  CommandSetup setup;
};

std::vector<CommandInfo>& command_registry();

struct CommandRegistrar {
  CommandRegistrar(std::string name, std::string description, CommandSetup setup) {
    command_registry().push_back({std::move(name), std::move(description), std::move(setup)});
  }
};

}  // namespace pensieve::cli
