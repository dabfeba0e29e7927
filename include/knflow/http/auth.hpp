#pragma once

#include <array>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace knflow::http {

// The most a token file may hold: 1 MiB, thousands of tokens; a larger file (or /dev/zero) is
// refused without being read to its end.
inline constexpr std::size_t kMaxTokenFileBytes = std::size_t{1} << 20;

// The tokens of a token file's text: one per line, surrounding whitespace trimmed; comments (from
// a '#' that starts a line or follows a space or tab) and blank lines skipped. nullopt, with
// `error` naming the line, when a token holds a character no bearer token can (a space, a control
// character, a non-ASCII one). What the server accepts and what the CLI sends agree because both
// read files with this.
std::optional<std::vector<std::string>> token_lines(std::string_view text, std::string& error);

// The tokens of a token file (token_lines), or nullopt with `error` saying why it could not be
// read ("cannot read token file F: why", larger than kMaxTokenFileBytes included) or used
// ("token file F: line N holds ...").
std::optional<std::vector<std::string>> read_token_file(const std::filesystem::path& file,
                                                        std::string& error);

// The bearer tokens the server accepts. Tokens are kept only as SHA-256 digests and compared in
// constant time; they are never logged. Immutable after construction, so thread-safe.
class TokenSet {
 public:
  TokenSet() = default;
  // Reads a token file: one token per line; blank lines and lines starting with '#' are skipped;
  // surrounding whitespace is trimmed. Fails (nullopt, with `error` set) when the file cannot be
  // read or holds no token.
  static std::optional<TokenSet> load(const std::filesystem::path& file, std::string& error);
  static TokenSet from_tokens(const std::vector<std::string>& tokens);

  // Accepts one more token (before the server starts; not thread-safe).
  void add(const std::string& token);

  // True when the Authorization header value is "Bearer <token>" for an accepted token.
  bool accepts(std::string_view authorization_header) const;
  bool empty() const { return digests_.empty(); }

 private:
  std::vector<std::array<unsigned char, 32>> digests_;
};

// Tokens for processes the daemon starts itself (local functions): the token of namespace `ns`
// lets its bearer post events to that namespace's broker and nothing else (Access::broker
// routes). A token is HMAC-SHA256(key, ns) in hex, under a random key made by the constructor:
// nothing is stored, and every token ends with the process. Immutable, so thread-safe.
class BrokerTokens {
 public:
  BrokerTokens();
  std::string issue(std::string_view namespace_) const;
  // True when the Authorization header value is "Bearer <token>" for `namespace_`'s token.
  bool accepts(std::string_view authorization_header, std::string_view namespace_) const;

 private:
  std::array<unsigned char, 32> key_{};
};

// 32 random bytes from OpenSSL as 64 hex characters.
std::string generate_token();

}  // namespace knflow::http
