#pragma once

// A UTF-8 check shared by the parts that take text from outside (model's documents, the API's
// event data, the HTTP server's paths and query parameters). Header-only, so a part that depends
// on nothing else of model can use it.

#include <cstddef>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

namespace knflow::model {

// The offset of the first byte of the first sequence that is not valid UTF-8 (RFC 3629: stray
// continuation bytes, overlong forms, surrogates, code points above U+10FFFF, truncated
// sequences), or npos when the whole text is valid. Hand-written: none of the project's libraries
// offers a validator on its own.
inline std::size_t find_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t length = 0;
    unsigned char low = 0x80;  // allowed range of the second byte
    unsigned char high = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      length = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      length = 3;
      if (c == 0xE0) low = 0xA0;   // overlong
      if (c == 0xED) high = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      length = 4;
      if (c == 0xF0) low = 0x90;   // overlong
      if (c == 0xF4) high = 0x8F;  // above U+10FFFF
    } else {
      return i;  // continuation byte, overlong C0/C1 lead, or F5..FF
    }
    if (i + length > n || s[i + 1] < low || s[i + 1] > high) return i;
    for (std::size_t k = 2; k < length; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
    }
    i += length;
  }
  return std::string_view::npos;
}

// `text` with every byte that does not belong to a valid UTF-8 sequence replaced by U+FFFD: text
// from outside (a function's answer, its output) made fit for JSON. JSON text repaired so stays
// the same JSON, as such bytes can only be inside its strings.
inline std::string repaired_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t at; (at = find_invalid_utf8(text)) != std::string_view::npos;) {
    out.append(text.substr(0, at));
    out += "\xEF\xBF\xBD";
    text.remove_prefix(at + 1);
  }
  out.append(text);
  return out;
}

// The longest prefix of `text` of at most `max` bytes that does not end inside a character (it
// backs up at most three bytes: text that is not UTF-8 there is cut at `max`).
inline std::string_view utf8_prefix(std::string_view text, std::size_t max) {
  if (text.size() <= max) return text;
  std::size_t cut = max;
  while (cut > 0 && max - cut < 3 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) {
    --cut;
  }
  if ((static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) cut = max;
  return text.substr(0, cut);
}

// `text` when it has at most `max` bytes; else its longest prefix of at most `max` bytes that does
// not end inside a character, then `ellipsis` and " (N bytes in all)": a message kept bounded
// that says it was cut, and how much there was.
inline std::string cut_noting_size(std::string_view text, std::size_t max,
                                   std::string_view ellipsis) {
  if (text.size() <= max) return std::string(text);
  std::string out(utf8_prefix(text, max));
  out += ellipsis;
  out += " (" + std::to_string(text.size()) + " bytes in all)";
  return out;
}

// How many bytes at the end of `text` (0 to 3) begin a character that more bytes would complete:
// what text read in pieces carries over to the next piece so as not to cut a character in two.
inline std::size_t utf8_incomplete_tail(std::string_view text) {
  for (std::size_t back = 1; back <= 3 && back <= text.size(); ++back) {
    const auto byte = static_cast<unsigned char>(text[text.size() - back]);
    if ((byte & 0xC0) == 0x80) continue;  // a continuation byte: its first byte is further back
    const std::size_t length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1;
    return length > back ? back : 0;
  }
  return 0;
}

// The longest suffix of `text` of at most `max` bytes that does not start inside a character.
inline std::string_view utf8_suffix(std::string_view text, std::size_t max) {
  if (text.size() <= max) return text;
  std::size_t from = text.size() - max;
  while (from < text.size() && (static_cast<unsigned char>(text[from]) & 0xC0) == 0x80) ++from;
  return text.substr(from);
}

// The character that begins at byte `at` of `text`: that byte and the continuation bytes after
// it, so that a message quoting it stays UTF-8 ("PTéS" has "é", not half of it).
inline std::string_view utf8_character_at(std::string_view text, std::size_t at) {
  std::size_t end = at + 1;
  while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
  return text.substr(at, end - at);
}

// The first character of `text` (valid UTF-8) that CloudEvents 1.0 forbids in a String
// attribute (spec "Type System": the controls U+0000-U+001F and U+007F-U+009F, and the Unicode
// noncharacters U+FDD0-U+FDEF and U+xFFFE, U+xFFFF; surrogates cannot be in valid UTF-8), as
// "U+XXXX at byte N", or nullopt. Here, not in the engine's codec, so that validation can refuse
// an `emit` whose literal attributes could never be sent.
inline std::optional<std::string> cloudevents_forbidden_character(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  for (std::size_t i = 0; i < text.size();) {
    char32_t cp = s[i];
    std::size_t length = 1;
    if (cp >= 0xF0) {
      length = 4;
      cp &= 0x07;
    } else if (cp >= 0xE0) {
      length = 3;
      cp &= 0x0F;
    } else if (cp >= 0xC0) {
      length = 2;
      cp &= 0x1F;
    }
    for (std::size_t k = 1; k < length && i + k < text.size(); ++k) {
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || (cp >= 0xFDD0 && cp <= 0xFDEF) ||
        (cp & 0xFFFE) == 0xFFFE) {
      char code[16];
      std::snprintf(code, sizeof code, "U+%04X", static_cast<unsigned>(cp));
      return std::string(code) + " at byte " + std::to_string(i);
    }
    i += length;
  }
  return std::nullopt;
}

}  // namespace knflow::model
