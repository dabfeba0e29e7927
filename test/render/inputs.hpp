#pragma once

// The workflows the render and CRD tests run over: every example, every Workflow block in the
// docs, and the test's own inputs (test/render/inputs/). Test code.

#include "knflow/model/document.hpp"

#include <boost/json/value.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace knflow::test {

inline const std::filesystem::path kSourceDir = KNFLOW_SOURCE_DIR;

struct Input {
  std::string id;      // golden file stem: example-<stem>, docs-<page>-<name>, input-<stem>
  std::string origin;  // file (and line) it came from, for messages
  std::string text;    // YAML as written
};

std::string read_text(const std::filesystem::path& path);
void write_text(const std::filesystem::path& path, const std::string& text);

// examples/*.yaml (not examples/broken), docs/*.md Workflow blocks, test/render/inputs/*.yaml;
// each sorted by file name.
std::vector<Input> examples();
std::vector<Input> docs_workflows();
std::vector<Input> test_inputs();

// Parses one YAML document; a parse error fails the calling test.
boost::json::value parse_yaml(const std::string& text);

}  // namespace knflow::test
