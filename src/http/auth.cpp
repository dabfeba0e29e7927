#include "knflow/http/auth.hpp"

#include "knflow/log/file.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <algorithm>

#include <stdexcept>

namespace knflow::http {
namespace {

std::array<unsigned char, 32> digest(std::string_view token) {
  // Fetched once: OpenSSL 3's one-shot SHA256() looks the algorithm up on every call.
  static EVP_MD* const kSha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  std::array<unsigned char, 32> out{};
  unsigned int size = 0;
  if (kSha256 == nullptr ||
      EVP_Digest(token.data(), token.size(), out.data(), &size, kSha256, nullptr) != 1) {
    SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), out.data());
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// The token of "Bearer <token>" (the scheme is case-insensitive, RFC 9110 section 11.1).
std::optional<std::string_view> bearer(std::string_view header) {
  constexpr std::string_view kScheme = "Bearer ";
  if (header.size() <= kScheme.size()) return std::nullopt;
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(header[i])) !=
        std::tolower(static_cast<unsigned char>(kScheme[i]))) {
      return std::nullopt;
    }
  }
  return trim(header.substr(kScheme.size()));
}

std::string hex(const unsigned char* bytes, std::size_t size) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(kHex[bytes[i] >> 4]);
    out.push_back(kHex[bytes[i] & 0xf]);
  }
  return out;
}

}  // namespace

std::optional<std::vector<std::string>> token_lines(std::string_view text, std::string& error) {
  std::vector<std::string> tokens;
  for (std::size_t line = 1; !text.empty(); ++line) {
    const auto end = text.find('\n');
    auto token = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    // A comment: a line's first '#', or one after a space or tab (`token  # ci`), which no token
    // can hold.
    for (std::size_t hash = token.find('#'); hash != std::string_view::npos;
         hash = token.find('#', hash + 1)) {
      if (hash == 0 || token[hash - 1] == ' ' || token[hash - 1] == '\t') {
        token = token.substr(0, hash);
        break;
      }
    }
    token = trim(token);
    if (token.empty()) continue;
    if (std::any_of(token.begin(), token.end(), [](char c) { return c <= ' ' || c > '~'; })) {
      // Never accepted (no client could send it): said, without the token itself.
      error = "line " + std::to_string(line) +
              " holds a character a bearer token cannot have (a space, a control character or a "
              "non-ASCII one; `#` after a space starts a comment)";
      return std::nullopt;
    }
    tokens.emplace_back(token);
  }
  return tokens;
}

std::optional<std::vector<std::string>> read_token_file(const std::filesystem::path& file,
                                                        std::string& error) {
  auto read = log::read_file(file, kMaxTokenFileBytes);
  if (!read.text) {
    error = "cannot read token file " + file.string() + ": " + read.error;
    return std::nullopt;
  }
  std::string why;
  auto tokens = token_lines(*read.text, why);
  if (!tokens) error = "token file " + file.string() + ": " + why;
  return tokens;
}

std::optional<TokenSet> TokenSet::load(const std::filesystem::path& file, std::string& error) {
  auto tokens = read_token_file(file, error);
  if (!tokens) return std::nullopt;
  if (tokens->empty()) {
    error = "token file " + file.string() + " holds no token (one per line)";
    return std::nullopt;
  }
  return from_tokens(*tokens);
}

TokenSet TokenSet::from_tokens(const std::vector<std::string>& tokens) {
  TokenSet set;
  for (const auto& t : tokens) set.digests_.push_back(digest(t));
  return set;
}

void TokenSet::add(const std::string& token) { digests_.push_back(digest(token)); }

bool TokenSet::accepts(std::string_view header) const {
  const auto token = bearer(header);
  if (!token) return false;
  const auto given = digest(*token);
  // Compare against every token without stopping early, each comparison in constant time.
  bool found = false;
  for (const auto& d : digests_) {
    found |= CRYPTO_memcmp(d.data(), given.data(), d.size()) == 0;
  }
  return found;
}

BrokerTokens::BrokerTokens() {
  if (RAND_bytes(key_.data(), static_cast<int>(key_.size())) != 1) {
    throw std::runtime_error("OpenSSL RAND_bytes failed");
  }
}

std::string BrokerTokens::issue(std::string_view namespace_) const {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
           reinterpret_cast<const unsigned char*>(namespace_.data()), namespace_.size(), mac,
           &size) == nullptr) {
    throw std::runtime_error("OpenSSL HMAC failed");
  }
  return hex(mac, size);
}

bool BrokerTokens::accepts(std::string_view header, std::string_view namespace_) const {
  const auto token = bearer(header);
  if (!token || namespace_.empty()) return false;
  const auto expected = issue(namespace_);
  return token->size() == expected.size() &&
         CRYPTO_memcmp(token->data(), expected.data(), expected.size()) == 0;
}

std::string generate_token() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    throw std::runtime_error("OpenSSL RAND_bytes failed");
  }
  return hex(bytes, sizeof bytes);
}

}  // namespace knflow::http
