#include "knflow/model/schema.hpp"
#include "knflow/model/pattern.hpp"

#include "support/catch.hpp"

#include <boost/json/parse.hpp>

#include <string>

using namespace knflow::model;
namespace json = boost::json;

namespace {

// The messages of check_schema(schema, data), as "pointer: message".
std::vector<std::string> errors_of(std::string_view schema, std::string_view data) {
  std::vector<std::string> out;
  for (const auto& e : check_schema(json::parse(schema), json::parse(data))) {
    out.push_back(e.pointer + ": " + e.message);
  }
  return out;
}

using Messages = std::vector<std::string>;

}  // namespace

TEST_CASE("pattern: a long string is matched without recursion on its length", "[model][schema]") {
  // std::regex recursed per character: 15,000 of them overflowed a connection thread's stack and
  // killed the daemon.
  const std::string schema = R"({"properties":{"s":{"type":"string","pattern":"^(a|b)*$"}}})";
  CHECK(errors_of(schema, R"({"s":")" + std::string(200'000, 'a') + R"("})").empty());
  CHECK(errors_of(schema, R"({"s":")" + std::string(200'000, 'a') + R"(c"})") ==
        Messages{"/s: must match the pattern ^(a|b)*$"});
}

TEST_CASE("pattern: a backtracking pattern takes time linear in the string", "[model][schema]") {
  // std::regex took about 28 s for these 31 characters, and twice as long per character more.
  const std::string schema = R"({"properties":{"s":{"type":"string","pattern":"^(a+)+$"}}})";
  CHECK(errors_of(schema, R"({"s":")" + std::string(5'000, 'a') + R"(b"})") ==
        Messages{"/s: must match the pattern ^(a+)+$"});
}

TEST_CASE("pattern: a string whose search could take seconds is not searched", "[model][schema]") {
  // RE2 is linear in the string and in its program: `(?s)` then `.{1000}` forty times then `z` is
  // 280,005 steps a byte, and 50 KB of data held a connection's thread for 12 s.
  std::string big = "(?s)";
  for (int i = 0; i < 40; ++i) big += ".{1000}";
  big += "z";
  CHECK(CompiledPattern(big).program_size() == 280'005);
  const std::string schema =
      R"({"type":"array","items":{"type":"string","pattern":")" + big + R"("}})";
  // 2^29 steps a string: 1,916 bytes are searched, 1,917 not; each string on its own.
  const auto errors = errors_of(
      schema, "[\"" + std::string(1'916, 'a') + "\", \"" + std::string(1'917, 'a') + "\", \"az\"]");
  REQUIRE(errors.size() == 3);
  CHECK(errors[0] == "/0: must match the pattern " + big);
  CHECK(errors[1].starts_with("/1: is too long to be checked against the pattern " + big +
                              " (1917 bytes; this pattern's RE2 program is 280005 steps a byte"));
  CHECK(errors[2] == "/2: must match the pattern " + big);
  // A pattern of a usual size is not affected by a string of the largest size data may hold.
  CHECK(errors_of(R"({"type":"string","pattern":"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"})",
                  "\"" + std::string(256 * 1024, 'a') + "\"")
            .size() == 1);
  // Nor many short strings against a large Unicode class (a program of 119,401 steps a byte,
  // few of them alive): the steps charged to the whole input refused these 200 names.
  std::string names = "[";
  for (int i = 0; i < 200; ++i)
    names += std::string(i ? "," : "") + "\"Zoë" + std::string(16, 'a') + "\"";
  names += "]";
  CHECK(
      errors_of(R"({"type":"array","items":{"type":"string","pattern":"^\\p{L}{1,100}$"}})", names)
          .empty());
}

TEST_CASE("pattern: once an input's searches took their time, no string more is searched",
          "[model][schema]") {
  const std::string schema = R"({"type":"array","items":{"type":"string","pattern":"^a+$"}})";
  const auto data = json::parse(R"(["a", "b", "c", "d"])");
  std::vector<std::string> out;
  for (const auto& e : check_schema(json::parse(schema), data, PatternBudget{.time = {}})) {
    out.push_back(e.pointer + ": " + e.message);
  }
  // No time to search: the first string says so, once; the others are not looked at.
  REQUIRE(out.size() == 1);
  CHECK(out[0] ==
        "/0: cannot be checked against the pattern ^a+$: checking this input's strings against "
        "the schema's patterns took 0 ms, the most it may: send fewer or shorter strings");
}

TEST_CASE("pattern: ECMAScript spellings RE2 would not read", "[model][schema]") {
  CHECK(pattern_search(R"(^\u00e9+$)", "\xC3\xA9\xC3\xA9") == true);  // é é
  CHECK(pattern_search(R"(^[\u0041-\u005A]+$)", "ABC") == true);
  CHECK(pattern_search(R"(^[\u0041-\u005A]+$)", "abc") == false);
  CHECK(pattern_search(R"(^\uD83D\uDE00$)", "\xF0\x9F\x98\x80") == true);  // a surrogate pair
  CHECK(pattern_search(R"(^(?<year>\d{4})-\d{2}$)", "2026-12") == true);
  CHECK(pattern_search(R"(\\u0041)", "\\u0041") == true);   // an escaped backslash, then text
  CHECK(pattern_search("b", "abc") == true);                // unanchored, as JSON Schema says
  CHECK(pattern_search(R"(^.$)", "\xE2\x82\xAC") == true);  // a code point, not a byte
}

TEST_CASE("pattern: \\s is ECMAScript's white space, [^] any character", "[model][schema]") {
  // RE2's \s is ASCII without U+000B; ECMAScript's has it and the Unicode spaces.
  CHECK(pattern_search(R"(^\s$)", "\v") == true);
  CHECK(pattern_search(R"(^\s$)", "\xC2\xA0") == true);      // U+00A0
  CHECK(pattern_search(R"(^\s$)", "\xE3\x80\x80") == true);  // U+3000
  CHECK(pattern_search(R"(^\S+$)", "a\vb") == false);
  CHECK(pattern_search(R"(^[\s,]+$)", " ,\xE2\x80\xA8") == true);  // in a class; U+2028
  CHECK(pattern_search(R"(^[^\s]+$)", "ab\xC2\xA0") == false);
  CHECK(pattern_search(R"(^a[^]b$)", "a\nb") == true);
  CHECK(pattern_search(R"(^\\s$)", "\\s") == true);    // an escaped backslash, then s
  CHECK(pattern_search(R"(^[\]s]+$)", "]s") == true);  // \] inside a class
  // A `-` after `\s` in a class is a literal, as after RE2's `\d` (`[\d-a]`).
  CHECK(pattern_search(R"(^[\s-a]+$)", "- a\xC2\xA0") == true);
  CHECK(pattern_search(R"(^[\s-a]+$)", "b") == false);
  CHECK(pattern_search(R"(^[\s-]+$)", " -") == true);
  CHECK(pattern_search(R"(^[\s--/]+$)", ".") == true);  // then a range from `-` to `/`
  CHECK(!pattern_error(R"([\s-a])"));
}

TEST_CASE("pattern: what needs backtracking is refused, with RE2's reason", "[model][schema]") {
  CHECK(pattern_error("^[a-z]+(?=x)") == std::optional<std::string>("invalid perl operator: (?="));
  CHECK(pattern_error(R"(^(a)\1$)") == std::optional<std::string>("invalid escape sequence: \\1"));
  CHECK(pattern_error("([a-z") == std::optional<std::string>("missing ]: [a-z"));
  // Quoted as written, not as `\s`'s expansion (`invalid character class range: a-\t`).
  CHECK(pattern_error(R"([a-\s])") == std::optional<std::string>("invalid escape sequence: \\s"));
  CHECK(pattern_error(R"(\s{1,2000})") ==
        std::optional<std::string>("invalid repetition size: {1,2000}"));
  CHECK(!pattern_error(R"(^[a-z0-9]([-a-z0-9]*[a-z0-9])?$)"));
  CHECK(pattern_search("([a-z", "a") == std::nullopt);
  // RE2 repeats at most 1,000 times.
  CHECK(pattern_error("^[a-z]{1,2000}$") ==
        std::optional<std::string>("invalid repetition size: {1,2000}"));
  // A workflow stored before (validation refuses the pattern now) is told why at invoke.
  CHECK(errors_of(R"j({"pattern":"^(?=a)"})j", R"("a")") ==
        Messages{": the schema's pattern cannot be compiled (RE2: invalid perl operator: (?=); "
                 "the workflow needs a pattern RE2 reads"});
}

TEST_CASE("enum compares numbers by value, integer is any number without a fraction",
          "[model][schema]") {
  const std::string schema = R"({"properties":{"e":{"enum":[1,"x",{"a":[2]}]},
                                               "i":{"type":"integer"}}})";
  CHECK(errors_of(schema, R"({"e":1.0})").empty());
  CHECK(errors_of(schema, R"({"e":{"a":[2.0]}})").empty());
  CHECK(errors_of(schema, R"({"e":1.5})") == Messages{R"(/e: must be one of [1,"x",{"a":[2]}])"});
  CHECK(errors_of(schema, R"({"e":{"a":[2],"b":1}})") ==
        Messages{R"(/e: must be one of [1,"x",{"a":[2]}])"});
  CHECK(errors_of(schema, R"({"i":1e20})").empty());
  CHECK(errors_of(schema, R"({"i":100000000000000000000})").empty());
  CHECK(errors_of(schema, R"({"i":2.5})") == Messages{"/i: must be integer, not number"});
  CHECK(errors_of(R"({"enum":[18446744073709551615]})", "18446744073709551614") ==
        Messages{": must be one of [18446744073709551615]"});
}

TEST_CASE("schema: a length bound of one counts one character or item", "[model][schema]") {
  CHECK(errors_of(R"({"minLength":1})", R"("")") == Messages{": must have at least 1 character"});
  CHECK(errors_of(R"({"maxLength":1})", R"("ab")") == Messages{": must have at most 1 character"});
  CHECK(errors_of(R"({"minLength":2})", R"("a")") == Messages{": must have at least 2 characters"});
  CHECK(errors_of(R"({"minItems":1})", "[]") == Messages{": must have at least 1 item"});
  CHECK(errors_of(R"({"maxItems":2})", "[1,2,3]") == Messages{": must have at most 2 items"});
}

TEST_CASE("schema: at most 100 violations are listed, and a long enum is named by its size",
          "[model][schema]") {
  // Found by fuzzing: every element of a large array quoted the whole enum, hundreds of MB for a
  // 30 KB body; and a pattern was compiled again for every string.
  std::string values;
  for (int i = 0; i < 50; ++i)
    values += (i ? "," : "") + std::string("\"value-") + std::to_string(i) + "\"";
  std::string items;
  for (int i = 0; i < 5000; ++i) items += i ? ",\"\"" : "\"\"";
  const auto errors =
      errors_of(R"({"type":"array","items":{"enum":[)" + values + "]}}", "[" + items + "]");
  REQUIRE(errors.size() == 101);
  CHECK(errors[0] == "/0: must be one of the 50 values of the schema's enum");
  CHECK(errors[99] == "/99: must be one of the 50 values of the schema's enum");
  CHECK(errors[100] == ": and maybe more: the first 100 violations are listed");
  // A short enum is quoted as before.
  CHECK(errors_of(R"({"enum":["a","b"]})", R"("c")") == Messages{R"(: must be one of ["a","b"])"});
  // One compile for all: 5,000 strings against a pattern that takes milliseconds to compile.
  const auto matched = errors_of(R"({"type":"array","items":{"pattern":"^\\s*\\S{1,200}\\s*$"}})",
                                 "[" + items + "]");
  CHECK(matched.size() == 101);
}

TEST_CASE("schema: numeric bounds compare exactly, beyond a double's precision",
          "[model][schema]") {
  // Found by fuzzing: compared as doubles, 2^63 - 1 and 2^63 (and 2^53 and 2^53 + 1) were equal.
  CHECK(errors_of(R"({"maximum":9223372036854775807})", "9223372036854775808") ==
        Messages{": must be at most 9223372036854775807"});
  CHECK(errors_of(R"({"maximum":9007199254740992})", "9007199254740993") ==
        Messages{": must be at most 9007199254740992"});
  CHECK(errors_of(R"({"minimum":9007199254740993})", "9007199254740992") ==
        Messages{": must be at least 9007199254740993"});
  CHECK(errors_of(R"({"exclusiveMaximum":1})", "0.5").empty());
  CHECK(errors_of(R"({"exclusiveMinimum":1.5})", "1") == Messages{": must be more than 1.5"});
}
