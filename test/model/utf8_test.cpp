#include "knflow/model/utf8.hpp"

#include "support/catch.hpp"

#include <string>

using namespace knflow::model;

TEST_CASE("find_invalid_utf8 finds the first byte that is not part of a character") {
  CHECK(find_invalid_utf8("plain \xE2\x82\xAC and \xF0\x9F\x98\x80") == std::string_view::npos);
  CHECK(find_invalid_utf8("ab\xFF") == 2);
  CHECK(find_invalid_utf8("\xC0\xAF") == 0);          // overlong
  CHECK(find_invalid_utf8("x\xED\xA0\x80") == 1);     // a surrogate
  CHECK(find_invalid_utf8("\xF4\x90\x80\x80") == 0);  // above U+10FFFF
  CHECK(find_invalid_utf8("ok\xE2\x82") == 2);        // cut short
}

TEST_CASE("repaired_utf8 puts U+FFFD for each byte that is not part of a character") {
  CHECK(repaired_utf8("a\xFF\xFE"
                      "b") ==
        "a\xEF\xBF\xBD\xEF\xBF\xBD"
        "b");
  CHECK(repaired_utf8("\xE2\x82\xAC") == "\xE2\x82\xAC");
}

TEST_CASE("utf8_prefix cuts before a character, backing up at most three bytes") {
  const std::string euros = "\xE2\x82\xAC\xE2\x82\xAC";
  CHECK(utf8_prefix(euros, 6) == euros);
  CHECK(utf8_prefix(euros, 5) == "\xE2\x82\xAC");
  CHECK(utf8_prefix(euros, 4) == "\xE2\x82\xAC");
  CHECK(utf8_prefix(euros, 3) == "\xE2\x82\xAC");
  CHECK(utf8_prefix(euros, 2).empty());
  // Continuation bytes only: not text, cut where asked rather than to nothing.
  const std::string stray(10, '\x80');
  CHECK(utf8_prefix(stray, 8) == std::string(8, '\x80'));
}
