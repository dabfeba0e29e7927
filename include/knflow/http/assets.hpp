#pragma once

#include <span>
#include <string_view>

namespace knflow::http {

// A file embedded into the binary at build time (cmake/embed_files.cmake): its URL path and bytes.
struct EmbeddedFile {
  std::string_view path;
  std::string_view bytes;
};

// Every embedded file: the dashboard (or its placeholder) and the OpenAPI document.
std::span<const EmbeddedFile> embedded_files();

}  // namespace knflow::http
