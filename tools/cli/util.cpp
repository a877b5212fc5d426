// Shared helpers of the dosql CLI: one-line errors, JSON strings, timestamps, text tables.
#include <sqlite3.h>

#include <pthread.h>

#include <charconv>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>

#include "tools/cli/cli.hpp"
#include <dosql/json.hpp>
#include "wal/file.hpp"
#include "wal/sqlite_util.hpp"

namespace dosql::cli {

std::string one_line(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
      size_t j = i;
      bool newline = false;
      while (j < s.size() && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r')) newline |= s[j] == '\n' || s[j] == '\r', ++j;
      if (newline) {
        if (!out.empty() && j < s.size()) out += ' ';
      } else {
        out.append(s.substr(i, j - i));
      }
      i = j;
    } else {
      out += s[i++];
    }
  }
  return out;
}

int fail(std::string_view text) {
  std::string line = "dosql: " + one_line(text) + "\n";
  std::fflush(stdout);
  std::fwrite(line.data(), 1, line.size(), stderr);
  return 1;
}

sigset_t block_stop_signals() {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  return sigs;
}

int fail(const error& e) { return fail(e.to_string()); }

std::string json_string(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}


std::string display(const value& v) {
  if (auto* d = std::get_if<double>(&v)) {
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, *d);
    std::string s(buf, ec == std::errc{} ? end : buf);
    if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // 2 -> 2.0 (n: inf, nan)
    return s;
  }
  if (auto* s = std::get_if<std::string>(&v)) {
    std::string out;  // keep one row per line
    for (char c : *s) {
      if (c == '\n') out += "\\n";
      else if (c == '\r') out += "\\r";
      else if (c == '\t') out += "\\t";
      else out += c;
    }
    return out;
  }
  return to_string(v);
}

namespace {

size_t width(std::string_view s) {  // display width, counting UTF-8 code points
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

void pad(std::string& out, std::string_view s, size_t w, bool right, bool last) {
  size_t n = width(s);
  if (right) out.append(w > n ? w - n : 0, ' ');
  out.append(s);
  if (!right && !last) out.append(w > n ? w - n : 0, ' ');
}

}  // namespace

std::string render_table(const std::vector<std::string>& columns, const std::vector<std::vector<value>>& rows) {
  const size_t n = columns.size();
  std::vector<size_t> w(n);
  std::vector<bool> numeric(n, true);
  std::vector<std::vector<std::string>> cells;
  cells.reserve(rows.size());
  for (size_t c = 0; c < n; ++c) w[c] = width(columns[c]);
  for (auto& r : rows) {
    auto& out = cells.emplace_back();
    for (size_t c = 0; c < n; ++c) {
      const value& v = c < r.size() ? r[c] : value{nullptr};
      out.push_back(display(v));
      w[c] = std::max(w[c], width(out.back()));
      if (!std::holds_alternative<int64_t>(v) && !std::holds_alternative<double>(v) && !is_null(v))
        numeric[c] = false;
    }
  }
  for (size_t c = 0; c < n; ++c)
    if (rows.empty()) numeric[c] = false;
  std::string s;
  for (size_t c = 0; c < n; ++c) {
    if (c) s += " | ";
    pad(s, columns[c], w[c], false, c + 1 == n);
  }
  s += '\n';
  for (size_t c = 0; c < n; ++c) {
    if (c) s += "-+-";
    s.append(w[c], '-');
  }
  s += '\n';
  for (auto& r : cells) {
    for (size_t c = 0; c < n; ++c) {
      if (c) s += " | ";
      pad(s, r[c], w[c], numeric[c], c + 1 == n);
    }
    s += '\n';
  }
  return s;
}

result<std::string> wal_dir_of(const std::string& dir) {
  if (!wal::path_exists(dir)) return error(ec::io_error, dir + " does not exist");
  auto w = wal::join(dir, "wal");
  if (!wal::path_exists(w))
    return error(ec::io_error, dir + " is not a dosql data directory (it has no wal/ directory)");
  return w;
}

void write_out(const std::string& s) { std::fwrite(s.data(), 1, s.size(), stdout); }

bool parse_where_args(const std::vector<std::string>& args, std::map<std::string, std::string>& out) {
  for (auto& w : args) {
    auto colon = w.find(':');
    if (colon == std::string::npos || colon == 0 || w.find_first_not_of(" \t", colon + 1) == std::string::npos) {
      fail("--where: '" + w + "' is not TABLE:EXPR (a table name, a colon, a SQL expression)");
      return false;
    }
    auto table = w.substr(0, colon);
    if (out.count(table)) {
      fail("--where: table '" + table + "' is given twice (combine the expressions with AND)");
      return false;
    }
    out[table] = w.substr(colon + 1);
  }
  return true;
}

// A table's columns from the data directory's SQLite file, opened read-only (beside an owner).
std::optional<std::vector<std::string>> sqlite_columns(const std::string& dir, const std::string& table) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2((dir + "/db.sqlite").c_str(), &raw, SQLITE_OPEN_READONLY, nullptr);
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> db(raw, sqlite3_close);
  if (rc != SQLITE_OK) return std::nullopt;
  auto st = detail::prepare(db.get(), "SELECT * FROM " + detail::quote_ident(table) + " LIMIT 0");
  if (!st) return std::nullopt;  // no such table (or view)
  std::vector<std::string> cols;
  for (int i = 0; i < sqlite3_column_count(st->get()); ++i) cols.push_back(sqlite3_column_name(st->get(), i));
  return cols;
}

result<std::string> read_token_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return error(ec::invalid_argument, "cannot read the token file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto s = ss.str();
  auto b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  if (b == std::string::npos) return error(ec::invalid_argument, "the token file " + path + " is empty");
  return s.substr(b, e - b + 1);
}

}  // namespace dosql::cli
