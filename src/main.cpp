#include "knflow/cli/main.hpp"

int main(int argc, char** argv) { return knflow::cli::run(argc, argv); }
