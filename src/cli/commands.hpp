#pragma once

// The CLI's commands; each returns the process exit code. Main thread only.

#include <string>
#include <vector>

namespace knflow::cli {

// Exit codes shared by every command.
inline constexpr int kExitOk = 0;
inline constexpr int kExitInvalid = 1;  // the input was read and is invalid (validate, render)
inline constexpr int kExitUsage = 2;    // bad flags, unreadable files, refused configuration
inline constexpr int kExitFailed = 3;   // the daemon failed at run time

int serve(const std::vector<std::string>& args);
int validate(const std::vector<std::string>& args);
int render(const std::vector<std::string>& args);
int invoke(const std::vector<std::string>& args);
int runs(const std::vector<std::string>& args);
int controller(const std::vector<std::string>& args);  // internal: the cluster controller alone
int version();
void print_usage();

}  // namespace knflow::cli
