#include <dosql/json.hpp>

#include <climits>
#include <ctime>

#include <charconv>
#include <cmath>

namespace dosql {
namespace {

// Length of the valid UTF-8 sequence at s[i] (lead byte >= 0x80), or 0 if it is invalid.
size_t utf8_len(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  auto cont = [&](size_t k) { return i + k < s.size() && (b(k) & 0xC0) == 0x80; };
  unsigned char c = b(0);
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xE0 && b(1) < 0xA0) return 0;   // overlong
    if (c == 0xED && b(1) > 0x9F) return 0;   // surrogates
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xF0 && b(1) < 0x90) return 0;   // overlong
    if (c == 0xF4 && b(1) > 0x8F) return 0;   // above U+10FFFF
    return 4;
  }
  return 0;
}

void append_base64(std::string& out, std::string_view b) {
  static const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  out.reserve(out.size() + (b.size() + 2) / 3 * 4);
  for (size_t i = 0; i < b.size(); i += 3) {
    auto at = [&](size_t k) { return uint32_t{static_cast<unsigned char>(b[k])}; };
    uint32_t n = at(i) << 16 | (i + 1 < b.size() ? at(i + 1) << 8 : 0) | (i + 2 < b.size() ? at(i + 2) : 0);
    out += tbl[n >> 18 & 63];
    out += tbl[n >> 12 & 63];
    out += i + 1 < b.size() ? tbl[n >> 6 & 63] : '=';
    out += i + 2 < b.size() ? tbl[n & 63] : '=';
  }
}

void append_double(std::string& out, double d) {
  if (!std::isfinite(d)) {
    out += "null";
    return;
  }
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, d);  // shortest text that reads back as d
  std::string_view t(buf, static_cast<size_t>(r.ptr - buf));
  out += t;
  if (t.find_first_of(".e") == std::string_view::npos) out += ".0";  // 100 -> 100.0: still a REAL
}

}  // namespace

bool is_valid_utf8(std::string_view s) noexcept {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
    } else if (size_t n = utf8_len(s, i)) {
      i += n;
    } else {
      return false;
    }
  }
  return true;
}

void append_json_string(std::string& out, std::string_view s) {
  static const char* hex = "0123456789abcdef";
  out += '"';
  size_t run = 0;  // start of the pending run of bytes copied as they are
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      if (size_t n = utf8_len(s, i)) {
        i += n;
        continue;
      }
    }
    out.append(s.data() + run, i - run);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += "\xEF\xBF\xBD";  // U+FFFD for a byte of an invalid UTF-8 sequence
        }
    }
    run = ++i;
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

void append_json(std::string& out, const value& v, const json_options& o) {
  switch (v.index()) {
    case 1: {
      char buf[24];
      auto r = std::to_chars(buf, buf + sizeof buf, std::get<int64_t>(v));
      out.append(buf, static_cast<size_t>(r.ptr - buf));
      break;
    }
    case 2: append_double(out, std::get<double>(v)); break;
    case 3: {
      const auto& s = std::get<std::string>(v);
      if (o.lossless_text && !is_valid_utf8(s)) {
        out += "{\"$text_base64\":\"";
        append_base64(out, s);
        out += "\"}";
      } else {
        append_json_string(out, s);
      }
      break;
    }
    case 4: {
      const auto& b = std::get<bytes>(v);
      out += "{\"$base64\":\"";
      append_base64(out, std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
      out += "\"}";
      break;
    }
    default: out += "null";
  }
}

void append_json(std::string& out, const row& r, const json_options& o) {
  out += '{';
  for (size_t i = 0; i < r.size(); ++i) {
    if (i) out += ',';
    append_json_string(out, r.columns[i]);
    out += ':';
    append_json(out, r.values[i], o);
  }
  out += '}';
}

std::string to_json(const value& v, const json_options& o) {
  std::string s;
  append_json(s, v, o);
  return s;
}

std::string to_json(const row& r, const json_options& o) {
  std::string s;
  append_json(s, r, o);
  return s;
}

void append_iso_time(std::string& out, int64_t unix_ms) {
  // The seconds part is formatted once per second per thread: this is on the delivery path.
  thread_local int64_t cached_secs = INT64_MIN;
  thread_local char ts[40];
  thread_local size_t ts_len = 0;
  int64_t secs = unix_ms >= 0 ? unix_ms / 1000 : (unix_ms - 999) / 1000;
  if (secs != cached_secs) {
    std::time_t t = static_cast<std::time_t>(secs);
    std::tm tm{};
    gmtime_r(&t, &tm);
    ts_len = std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_secs = secs;
  }
  int ms = static_cast<int>(unix_ms - secs * 1000);
  out.append(ts, ts_len);
  out += '.';
  out += static_cast<char>('0' + ms / 100);
  out += static_cast<char>('0' + ms / 10 % 10);
  out += static_cast<char>('0' + ms % 10);
  out += 'Z';
}

std::string iso_time(int64_t unix_ms) {
  std::string s;
  append_iso_time(s, unix_ms);
  return s;
}

}  // namespace dosql
