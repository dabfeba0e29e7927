#pragma once

namespace knflow::cli {

// Parses the command line (serve | validate | version | help) and runs the command; returns the
// process exit code. Runs on the main thread.
int run(int argc, char** argv);

}  // namespace knflow::cli
