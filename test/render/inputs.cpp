#include "inputs.hpp"

#include "support/catch.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace knflow::test {

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> files_in(const fs::path& dir, std::string_view extension) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file() && entry.path().extension() == extension)
      out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<Input> yaml_files(const fs::path& dir, const std::string& prefix) {
  std::vector<Input> out;
  for (const auto& path : files_in(dir, ".yaml")) {
    out.push_back(
        {prefix + path.stem().string(), fs::relative(path, kSourceDir).string(), read_text(path)});
  }
  return out;
}

}  // namespace

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  INFO("reading " << path);
  REQUIRE(in.good());
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  INFO("writing " << path);
  REQUIRE(out.good());
}

std::vector<Input> examples() { return yaml_files(kSourceDir / "examples", "example-"); }

std::vector<Input> test_inputs() { return yaml_files(kSourceDir / "test/render/inputs", "input-"); }

std::vector<Input> docs_workflows() {
  std::vector<Input> out;
  for (const auto& path : files_in(kSourceDir / "docs", ".md")) {
    std::istringstream in(read_text(path));
    std::string line;
    std::string block;
    bool inside = false;
    std::size_t line_number = 0;
    std::size_t block_start = 0;
    while (std::getline(in, line)) {
      ++line_number;
      if (!inside && line.starts_with("```yaml")) {
        inside = true;
        block.clear();
        block_start = line_number;
      } else if (inside && line.starts_with("```")) {
        inside = false;
        // The same rule as the model's docs test: a block that is a Workflow.
        if (block.find("\nkind: Workflow") == std::string::npos &&
            !block.starts_with("kind: Workflow")) {
          continue;
        }
        const auto doc = model::parse_document(block, model::Format::yaml);
        const auto* value = std::get_if<boost::json::value>(&doc);
        std::string name = "unnamed";
        if (value != nullptr && value->is_object()) {
          if (const auto* n = value->as_object().if_contains("metadata")) {
            if (n->is_object() && n->as_object().contains("name") &&
                n->as_object().at("name").is_string()) {
              name = std::string(n->as_object().at("name").get_string());
            }
          }
        }
        out.push_back({"docs-" + path.stem().string() + "-" + name,
                       "docs/" + path.filename().string() + ":" + std::to_string(block_start),
                       block});
      } else if (inside) {
        block += line + "\n";
      }
    }
  }
  return out;
}

boost::json::value parse_yaml(const std::string& text) {
  auto parsed = model::parse_document(text, model::Format::yaml);
  if (const auto* e = std::get_if<model::ParseError>(&parsed)) FAIL(e->to_string());
  return std::get<boost::json::value>(std::move(parsed));
}

}  // namespace knflow::test
