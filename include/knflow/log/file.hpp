#pragma once

// Reading a file that a user names (a workflow file, a token file, a kubeconfig) with a bound on
// its size: a path such as /dev/zero, an endless pipe or a runaway file is refused once it holds
// more than the bound, instead of being read until memory runs out. Used by every part that reads
// such files (cli, http, kube); it lives here because `log` links nothing.

#include <cstddef>
#include <filesystem>
#include <istream>
#include <optional>
#include <string>

namespace knflow::log {

struct FileText {
  std::optional<std::string> text;  // the whole content; nullopt when it could not be read
  std::string error;                // why not: "No such file or directory", "Is a directory",
                                    // "it holds more than N bytes", ...
  bool too_large = false;           // it held more than the bound (`error` says so)
};

// The whole file, read in binary, or why not. A directory is refused (it would read as nothing).
// A FIFO no process writes to reads as empty at once (opening one waited for a writer).
FileText read_file(const std::filesystem::path& path, std::size_t max_bytes);

// The rest of `in` (standard input, say), or why not.
FileText read_stream(std::istream& in, std::size_t max_bytes);

}  // namespace knflow::log
