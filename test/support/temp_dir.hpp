#pragma once

#include <filesystem>

namespace knflow::test {

// A fresh directory under the system temporary directory, removed with everything in it when the
// object goes out of scope.
class TempDir {
 public:
  TempDir();
  explicit TempDir(const std::filesystem::path& base);  // made inside `base`
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace knflow::test
