// Token files and the bounded file reader under them (knflow/log/file.hpp): /dev/zero, a huge
// file or a directory given as a token file is refused with the reason, never read to its end.

#include "support/catch.hpp"
#include "support/temp_dir.hpp"

#include "knflow/http/auth.hpp"
#include "knflow/log/file.hpp"

#include <fstream>
#include <sstream>
#include <string>

using knflow::test::TempDir;

namespace {

void write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

}  // namespace

TEST_CASE("a file is read to its bound, and refused past it", "[http][auth][file]") {
  TempDir dir;
  const auto path = dir.path() / "f";
  write(path, std::string(100, 'x'));
  SECTION("at the bound: the whole text") {
    auto read = knflow::log::read_file(path, 100);
    REQUIRE(read.text);
    CHECK(*read.text == std::string(100, 'x'));
    CHECK_FALSE(read.too_large);
  }
  SECTION("one byte past it: refused") {
    auto read = knflow::log::read_file(path, 99);
    CHECK_FALSE(read.text);
    CHECK(read.too_large);
    CHECK(read.error == "it holds more than 99 bytes");
  }
  SECTION("an endless file stops at the bound") {
    auto read = knflow::log::read_file("/dev/zero", 1 << 20);
    CHECK_FALSE(read.text);
    CHECK(read.too_large);
  }
  SECTION("a stream, a missing file, a directory") {
    std::istringstream in("abc");
    CHECK(knflow::log::read_stream(in, 3).text == "abc");
    auto missing = knflow::log::read_file(dir.path() / "nope", 100);
    CHECK_FALSE(missing.text);
    CHECK(missing.error == "No such file or directory");
    auto folder = knflow::log::read_file(dir.path(), 100);
    CHECK_FALSE(folder.text);
    CHECK(folder.error == "Is a directory");
    CHECK_FALSE(folder.too_large);
  }
}

TEST_CASE("token files: one token per line, at most 1 MiB", "[http][auth][file]") {
  TempDir dir;
  std::string error;
  SECTION("lines trimmed, blank and # lines skipped, CRLF too") {
    write(dir.path() / "tokens",
          "# rotated monthly\r\n  first \r\n\n\tsecond\nlast-without-newline");
    auto tokens = knflow::http::read_token_file(dir.path() / "tokens", error);
    REQUIRE(tokens);
    CHECK(*tokens == std::vector<std::string>{"first", "second", "last-without-newline"});
    CHECK(knflow::http::TokenSet::load(dir.path() / "tokens", error));
  }
  SECTION("a comment after a token; a token no client could send is refused, naming its line") {
    // `token # prod` was taken whole: no client sent it, and every request got a 401.
    write(dir.path() / "tokens", "first # prod\nsecond\t#ci\nthird#not-a-comment\n");
    auto tokens = knflow::http::read_token_file(dir.path() / "tokens", error);
    REQUIRE(tokens);
    CHECK(*tokens == std::vector<std::string>{"first", "second", "third#not-a-comment"});
    for (const std::string bad : {"to ken", "tok\x01en", "tok\x7f", "t\xc3\xa9"}) {
      write(dir.path() / "bad", "# fine\nfine\n" + bad + "\n");
      CHECK_FALSE(knflow::http::TokenSet::load(dir.path() / "bad", error));
      CHECK(error == "token file " + (dir.path() / "bad").string() +
                         ": line 3 holds a character a bearer token cannot have (a space, a "
                         "control character or a non-ASCII one; `#` after a space starts a "
                         "comment)");
    }
  }
  SECTION("/dev/zero was read until memory ran out; now it is refused") {
    CHECK_FALSE(knflow::http::TokenSet::load("/dev/zero", error));
    CHECK(error == "cannot read token file /dev/zero: it holds more than 1048576 bytes");
  }
  SECTION("a directory, a missing file, a file without tokens") {
    CHECK_FALSE(knflow::http::TokenSet::load(dir.path(), error));
    CHECK(error == "cannot read token file " + dir.path().string() + ": Is a directory");
    CHECK_FALSE(knflow::http::TokenSet::load(dir.path() / "nope", error));
    CHECK(error == "cannot read token file " + (dir.path() / "nope").string() +
                       ": No such file or directory");
    write(dir.path() / "empty", "# none yet\n\n");
    CHECK_FALSE(knflow::http::TokenSet::load(dir.path() / "empty", error));
    CHECK(error ==
          "token file " + (dir.path() / "empty").string() + " holds no token (one per line)");
  }
}
