#include "lakehouse/parquet_writer.hpp"

#include <fcntl.h>
#include <zstd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <set>

#include "lakehouse/thrift_compact.hpp"
#include "wal/file.hpp"
#include "wal/file_io.hpp"

namespace dosql::lakehouse {

static_assert(std::endian::native == std::endian::little, "PLAIN encoding below assumes a little-endian host");

namespace {

// parquet.thrift enum values used below.
constexpr int32_t type_boolean = 0, type_int32 = 1, type_int64 = 2, type_double = 5, type_byte_array = 6;
constexpr int32_t rep_required = 0, rep_optional = 1;
constexpr int32_t converted_utf8 = 0, converted_timestamp_micros = 10;
constexpr int32_t enc_plain = 0, enc_rle = 3;
constexpr int32_t page_data = 0;
constexpr std::string_view magic = "PAR1";

int32_t physical(column_type t) {
  switch (t) {
    case column_type::boolean: return type_boolean;
    case column_type::int32: return type_int32;
    case column_type::int64:
    case column_type::timestamp: return type_int64;
    case column_type::float64: return type_double;
    case column_type::string:
    case column_type::binary: return type_byte_array;
  }
  return type_byte_array;
}

template <class T>
void put_le(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

// Unsigned byte-wise order (parquet's order for BYTE_ARRAY, STRING included).
bool bytes_less(std::string_view a, std::string_view b) noexcept {
  size_t n = std::min(a.size(), b.size());
  int c = n ? std::memcmp(a.data(), b.data(), n) : 0;  // memcmp compares as unsigned char
  return c < 0 || (c == 0 && a.size() < b.size());
}

// ---- RLE / bit-packed hybrid, bit width 1 (definition levels of a flat optional column) ----
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

// Bit-packed runs of at most 63 groups of 8 values (a one-byte header); the last run of the
// page may be padded with zeros (readers stop at the page's value count).
void put_bitpacked(std::string& out, const uint8_t* v, size_t n) {
  while (n > 0) {
    size_t m = std::min<size_t>(n, 63 * 8);
    size_t groups = (m + 7) / 8;
    put_varint(out, (groups << 1) | 1);
    for (size_t g = 0; g < groups; ++g) {
      uint8_t byte = 0;
      for (size_t j = 0; j < 8 && g * 8 + j < m; ++j) byte |= static_cast<uint8_t>((v[g * 8 + j] & 1) << j);
      out.push_back(static_cast<char>(byte));
    }
    v += m;
    n -= m;
  }
}

void put_rle_run(std::string& out, size_t count, uint8_t value) {
  put_varint(out, static_cast<uint64_t>(count) << 1);
  out.push_back(static_cast<char>(value));
}

// Appends the hybrid encoding of `lv` (each 0 or 1). Runs of >= 8 equal values become RLE runs;
// the rest is bit-packed. Invariant: a bit-packed run that is followed by another run holds a
// multiple of 8 values (only the last one is padded).
void encode_levels(const std::vector<uint8_t>& lv, std::string& out) {
  size_t n = lv.size(), i = 0, lit = 0;  // literals pending: lv[lit, i)
  while (i < n) {
    size_t run = 1;
    while (i + run < n && lv[i + run] == lv[i]) ++run;
    size_t pad = (8 - (i - lit) % 8) % 8;  // values the literals need to end on a group boundary
    if (run >= pad + 8) {
      put_bitpacked(out, lv.data() + lit, i + pad - lit);
      put_rle_run(out, run - pad, lv[i]);
      i += run;
      lit = i;
    } else {
      i += run;
    }
  }
  put_bitpacked(out, lv.data() + lit, n - lit);
}

}  // namespace

bool valid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return false;
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

std::string_view to_string(column_type t) noexcept {
  switch (t) {
    case column_type::boolean: return "BOOLEAN";
    case column_type::int32: return "INT32";
    case column_type::int64: return "INT64";
    case column_type::float64: return "DOUBLE";
    case column_type::string: return "STRING";
    case column_type::binary: return "BINARY";
    case column_type::timestamp: return "TIMESTAMP";
  }
  return "?";
}

error validate(const schema& s) {
  if (s.columns.empty()) return {ec::invalid_argument, "parquet schema: no columns"};
  std::set<std::string> names;
  std::set<int32_t> ids;
  for (size_t i = 0; i < s.columns.size(); ++i) {
    const auto& c = s.columns[i];
    if (c.name.empty()) return {ec::invalid_argument, "parquet schema: column " + std::to_string(i) + " has no name"};
    if (!names.insert(c.name).second)
      return {ec::invalid_argument, "parquet schema: column name '" + c.name + "' appears twice"};
    if (c.field_id <= 0)
      return {ec::invalid_argument, "parquet schema: column '" + c.name + "' has field id " +
                                        std::to_string(c.field_id) + " (must be > 0)"};
    if (!ids.insert(c.field_id).second)
      return {ec::invalid_argument, "parquet schema: field id " + std::to_string(c.field_id) + " of column '" +
                                        c.name + "' appears twice"};
  }
  return {};
}

namespace {

// Column-chunk statistics, accumulated over one row group.
struct stats {
  int64_t null_count = 0;
  int64_t nan_count = 0;
  bool any = false;  // a non-NULL (non-NaN for DOUBLE) value seen
  bool too_long = false;  // a byte array longer than max_stat_bytes seen
  int64_t imin = 0, imax = 0;
  double dmin = 0, dmax = 0;
  std::string smin, smax;
};

struct chunk_meta {
  int64_t num_values = 0;
  int64_t uncompressed = 0;  // page headers included
  int64_t compressed = 0;
  int64_t data_page_offset = 0;
  int64_t null_count = 0;
  std::optional<int64_t> nan_count;
  std::optional<std::string> min, max;  // PLAIN, no length prefix
};

struct row_group_meta {
  std::vector<chunk_meta> columns;
  int64_t num_rows = 0;
  int64_t total_byte_size = 0;
  int64_t total_compressed = 0;
  int64_t file_offset = 0;
};

struct column_state {
  column_spec spec;
  // the open page
  std::string values;           // PLAIN bytes (BOOLEAN: unused)
  std::vector<uint8_t> bools;   // BOOLEAN values of the page, one per byte
  std::vector<uint8_t> levels;  // definition levels (OPTIONAL columns)
  int64_t page_values = 0;      // rows in the page, NULLs included
  // the column chunk of the open row group
  std::string chunk;  // page headers + (compressed) page bodies
  int64_t chunk_values = 0, chunk_uncompressed = 0;
  stats st;
  // the whole file so far (column_metrics)
  stats file_st;
  int64_t file_values = 0, file_bytes = 0;
};

}  // namespace

struct parquet_writer::impl {
  std::string path, tmp;
  schema sch;
  writer_options opt;
  wal::unique_fd fd;
  uint64_t pos = 0;  // bytes written to tmp
  uint64_t rows = 0, group_rows = 0, group_bytes = 0;
  std::vector<column_state> cols;
  std::vector<row_group_meta> groups;
  std::vector<column_metrics> metrics;  // filled by finish()
  ZSTD_CCtx* cctx = nullptr;
  bool done = false;  // finished (or failed): nothing more is accepted
  error failed;
  std::string scratch, compressed;

  ~impl() {
    if (cctx) ZSTD_freeCCtx(cctx);
    if (fd || (!done && !tmp.empty())) {
      fd.reset();
      (void)wal::io().unlink(tmp.c_str());
    }
  }

  error fail(error e) {
    failed = e;
    done = true;
    fd.reset();
    (void)wal::io().unlink(tmp.c_str());
    return e;
  }

  error check(const value& v, const column_spec& c, uint64_t row) const {
    auto bad = [&](std::string why) {
      return error(ec::invalid_argument, "parquet: column '" + c.name + "' (" + std::string(to_string(c.type)) +
                                             "), row " + std::to_string(row) + ": " + why);
    };
    if (is_null(v)) return c.optional ? error{} : bad("NULL in a REQUIRED column");
    auto kind = [&]() -> std::string {
      switch (v.index()) {
        case 1: return "an INTEGER";
        case 2: return "a REAL";
        case 3: return "a TEXT";
        default: return "a BLOB";
      }
    };
    switch (c.type) {
      case column_type::boolean: {
        auto* i = std::get_if<int64_t>(&v);
        if (!i) return bad("expected 0 or 1, got " + kind());
        if (*i != 0 && *i != 1) return bad("expected 0 or 1, got " + std::to_string(*i));
        return {};
      }
      case column_type::int32: {
        auto* i = std::get_if<int64_t>(&v);
        if (!i) return bad("expected an INTEGER, got " + kind());
        if (*i < std::numeric_limits<int32_t>::min() || *i > std::numeric_limits<int32_t>::max())
          return bad(std::to_string(*i) + " is out of INT32 range");
        return {};
      }
      case column_type::int64:
      case column_type::timestamp:
        return std::holds_alternative<int64_t>(v) ? error{} : bad("expected an INTEGER, got " + kind());
      case column_type::float64:
        return std::holds_alternative<double>(v) ? error{} : bad("expected a REAL, got " + kind());
      case column_type::string: {
        auto* s = std::get_if<std::string>(&v);
        if (!s) return bad("expected a TEXT, got " + kind());
        if (s->size() > std::numeric_limits<int32_t>::max()) return bad("value longer than 2 GiB");
        if (!valid_utf8(*s)) return bad("not valid UTF-8");
        return {};
      }
      case column_type::binary: {
        size_t n;
        if (auto* b = std::get_if<bytes>(&v)) n = b->size();
        else if (auto* s = std::get_if<std::string>(&v)) n = s->size();
        else return bad("expected a BLOB, got " + kind());
        if (n > std::numeric_limits<int32_t>::max()) return bad("value longer than 2 GiB");
        return {};
      }
    }
    return {};
  }

  void add(column_state& c, const value& v) {
    ++c.page_values;
    if (c.spec.optional) c.levels.push_back(is_null(v) ? 0 : 1);
    if (is_null(v)) {
      ++c.st.null_count;
      return;
    }
    auto& st = c.st;
    switch (c.spec.type) {
      case column_type::boolean: {
        int64_t i = std::get<int64_t>(v);
        c.bools.push_back(static_cast<uint8_t>(i));
        group_bytes += 1;
        if (!st.any || i < st.imin) st.imin = i;
        if (!st.any || i > st.imax) st.imax = i;
        st.any = true;
        return;
      }
      case column_type::int32:
      case column_type::int64:
      case column_type::timestamp: {
        int64_t i = std::get<int64_t>(v);
        if (c.spec.type == column_type::int32) put_le(c.values, static_cast<int32_t>(i));
        else put_le(c.values, i);
        group_bytes += 8;
        if (!st.any || i < st.imin) st.imin = i;
        if (!st.any || i > st.imax) st.imax = i;
        st.any = true;
        return;
      }
      case column_type::float64: {
        double d = std::get<double>(v);
        put_le(c.values, d);
        group_bytes += 8;
        if (std::isnan(d)) {
          ++st.nan_count;
          return;
        }
        if (!st.any || d < st.dmin) st.dmin = d;
        if (!st.any || d > st.dmax) st.dmax = d;
        st.any = true;
        return;
      }
      case column_type::string:
      case column_type::binary: {
        std::string_view s;
        if (auto* b = std::get_if<bytes>(&v)) s = {reinterpret_cast<const char*>(b->data()), b->size()};
        else s = std::get<std::string>(v);
        put_le(c.values, static_cast<uint32_t>(s.size()));
        c.values.append(s);
        group_bytes += 4 + s.size();
        if (s.size() > opt.max_stat_bytes) st.too_long = true;
        if (!st.too_long) {
          if (!st.any || bytes_less(s, st.smin)) st.smin.assign(s);
          if (!st.any || bytes_less(st.smax, s)) st.smax.assign(s);
        }
        st.any = true;
        return;
      }
    }
  }

  // Encodes the open page of `c` into its chunk (PageHeader + body, compressed).
  error seal_page(column_state& c) {
    if (c.page_values == 0) return {};
    auto& body = scratch;
    body.clear();
    if (c.spec.optional) {
      body.append(4, '\0');
      encode_levels(c.levels, body);
      uint32_t len = static_cast<uint32_t>(body.size() - 4);
      std::memcpy(body.data(), &len, 4);
    }
    if (c.spec.type == column_type::boolean) {
      size_t start = body.size();
      body.append((c.bools.size() + 7) / 8, '\0');
      for (size_t i = 0; i < c.bools.size(); ++i)
        if (c.bools[i]) body[start + i / 8] = static_cast<char>(body[start + i / 8] | (1 << (i % 8)));
    } else {
      body.append(c.values);
    }
    if (body.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
      return {ec::invalid_argument, "parquet: a page of column '" + c.spec.name + "' exceeds 2 GiB"};
    std::string_view out = body;
    if (opt.compression == compression_codec::zstd) {
      compressed.resize(ZSTD_compressBound(body.size()));
      size_t n = ZSTD_compressCCtx(cctx, compressed.data(), compressed.size(), body.data(), body.size(), opt.zstd_level);
      if (ZSTD_isError(n))
        return {ec::io_error, "parquet: zstd compression of column '" + c.spec.name + "' failed: " + ZSTD_getErrorName(n)};
      out = std::string_view(compressed.data(), n);
    }
    std::string header;
    thrift::compact_encoder e(header);
    e.field_i32(1, page_data);
    e.field_i32(2, static_cast<int32_t>(body.size()));
    e.field_i32(3, static_cast<int32_t>(out.size()));
    e.begin_struct_field(5);  // DataPageHeader
    e.field_i32(1, static_cast<int32_t>(c.page_values));
    e.field_i32(2, enc_plain);
    e.field_i32(3, enc_rle);
    e.field_i32(4, enc_rle);
    e.end_struct();
    e.end_struct();
    c.chunk += header;
    c.chunk.append(out);
    c.chunk_uncompressed += static_cast<int64_t>(header.size() + body.size());
    c.chunk_values += c.page_values;
    c.page_values = 0;
    c.values.clear();
    c.bools.clear();
    c.levels.clear();
    return {};
  }

  error write(std::string_view data) {
    if (auto e = wal::pwrite_full(fd.get(), data.data(), data.size(), pos, tmp)) return e;
    pos += data.size();
    return {};
  }

  // The PLAIN min/max of `st` (absent: no non-NULL value, a NaN, or a byte array too long).
  static std::optional<std::pair<std::string, std::string>> bounds(column_type type, const stats& st) {
    // A NaN leaves min/max out (nan_count stays): readers that ignore nan_count (DuckDB 1.5
    // does) would otherwise prune NaN rows away, e.g. for `d = 'NaN'` or `d > x`. DuckDB's own
    // writer does the same.
    if (!st.any || st.too_long || st.nan_count != 0) return std::nullopt;
    std::string lo, hi;
    switch (type) {
      case column_type::boolean:
        lo.push_back(static_cast<char>(st.imin));
        hi.push_back(static_cast<char>(st.imax));
        break;
      case column_type::int32:
        put_le(lo, static_cast<int32_t>(st.imin));
        put_le(hi, static_cast<int32_t>(st.imax));
        break;
      case column_type::int64:
      case column_type::timestamp:
        put_le(lo, st.imin);
        put_le(hi, st.imax);
        break;
      case column_type::float64:
        // parquet.thrift, ColumnOrder: a zero min is written as -0.0, a zero max as +0.0.
        put_le(lo, st.dmin == 0 ? -0.0 : st.dmin);
        put_le(hi, st.dmax == 0 ? 0.0 : st.dmax);
        break;
      case column_type::string:
      case column_type::binary:
        lo = st.smin;
        hi = st.smax;
        break;
    }
    return std::make_pair(std::move(lo), std::move(hi));
  }

  // Folds a row group's statistics into the file's.
  static void merge(stats& f, const stats& st) {
    f.null_count += st.null_count;
    f.nan_count += st.nan_count;
    f.too_long = f.too_long || st.too_long;
    if (!st.any) return;
    if (!f.any || st.imin < f.imin) f.imin = st.imin;
    if (!f.any || st.imax > f.imax) f.imax = st.imax;
    if (!f.any || st.dmin < f.dmin) f.dmin = st.dmin;
    if (!f.any || st.dmax > f.dmax) f.dmax = st.dmax;
    if (!f.any || bytes_less(st.smin, f.smin)) f.smin = st.smin;
    if (!f.any || bytes_less(f.smax, st.smax)) f.smax = st.smax;
    f.any = true;
  }

  chunk_meta finish_stats(column_state& c) {
    chunk_meta m;
    auto& st = c.st;
    m.null_count = st.null_count;
    if (c.spec.type == column_type::float64) m.nan_count = st.nan_count;
    if (auto b = bounds(c.spec.type, st)) {
      m.min = std::move(b->first);
      m.max = std::move(b->second);
    }
    merge(c.file_st, st);
    st = stats{};
    return m;
  }

  error flush_row_group() {
    if (group_rows == 0) return {};
    row_group_meta g;
    g.num_rows = static_cast<int64_t>(group_rows);
    g.file_offset = static_cast<int64_t>(pos);
    for (auto& c : cols) {
      if (auto e = seal_page(c)) return e;
      chunk_meta m = finish_stats(c);
      m.num_values = c.chunk_values;
      m.uncompressed = c.chunk_uncompressed;
      m.compressed = static_cast<int64_t>(c.chunk.size());
      c.file_values += m.num_values;
      c.file_bytes += m.compressed;
      m.data_page_offset = static_cast<int64_t>(pos);
      if (auto e = write(c.chunk)) return e;
      g.total_byte_size += m.uncompressed;
      g.total_compressed += m.compressed;
      g.columns.push_back(std::move(m));
      c.chunk.clear();
      c.chunk.shrink_to_fit();
      c.chunk_values = c.chunk_uncompressed = 0;
    }
    groups.push_back(std::move(g));
    group_rows = group_bytes = 0;
    return {};
  }

  std::string footer() const {
    std::string out;
    thrift::compact_encoder e(out);
    e.field_i32(1, 1);  // version
    e.begin_list_field(2, thrift::ctype::structure, sch.columns.size() + 1);
    e.begin_list_struct();  // the root
    e.field_binary(4, "schema");
    e.field_i32(5, static_cast<int32_t>(sch.columns.size()));
    e.end_struct();
    for (const auto& c : sch.columns) {
      e.begin_list_struct();
      e.field_i32(1, physical(c.type));
      e.field_i32(3, c.optional ? rep_optional : rep_required);
      e.field_binary(4, c.name);
      if (c.type == column_type::string) e.field_i32(6, converted_utf8);
      if (c.type == column_type::timestamp) e.field_i32(6, converted_timestamp_micros);
      e.field_i32(9, c.field_id);
      if (c.type == column_type::string) {
        e.begin_struct_field(10);  // LogicalType
        e.empty_struct_field(1);   // STRING
        e.end_struct();
      } else if (c.type == column_type::timestamp) {
        e.begin_struct_field(10);  // LogicalType
        e.begin_struct_field(8);   // TIMESTAMP
        e.field_bool(1, true);     // isAdjustedToUTC
        e.begin_struct_field(2);   // unit
        e.empty_struct_field(2);   // MICROS
        e.end_struct();
        e.end_struct();
        e.end_struct();
      }
      e.end_struct();
    }
    e.field_i64(3, static_cast<int64_t>(rows));
    e.begin_list_field(4, thrift::ctype::structure, groups.size());
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      const auto& g = groups[gi];
      e.begin_list_struct();
      e.begin_list_field(1, thrift::ctype::structure, g.columns.size());
      for (size_t ci = 0; ci < g.columns.size(); ++ci) {
        const auto& m = g.columns[ci];
        const auto& c = sch.columns[ci];
        e.begin_list_struct();  // ColumnChunk
        e.field_i64(2, 0);      // file_offset (deprecated)
        e.begin_struct_field(3);  // ColumnMetaData
        e.field_i32(1, physical(c.type));
        e.begin_list_field(2, thrift::ctype::i32, 2);
        e.list_i32(enc_plain);
        e.list_i32(enc_rle);
        e.begin_list_field(3, thrift::ctype::binary, 1);
        e.list_binary(c.name);
        e.field_i32(4, static_cast<int32_t>(opt.compression));
        e.field_i64(5, m.num_values);
        e.field_i64(6, m.uncompressed);
        e.field_i64(7, m.compressed);
        e.field_i64(9, m.data_page_offset);
        e.begin_struct_field(12);  // Statistics
        e.field_i64(3, m.null_count);
        if (m.max) e.field_binary(5, *m.max);
        if (m.min) e.field_binary(6, *m.min);
        if (m.max) e.field_bool(7, true);
        if (m.min) e.field_bool(8, true);
        if (m.nan_count) e.field_i64(9, *m.nan_count);
        e.end_struct();
        e.end_struct();  // ColumnMetaData
        e.end_struct();  // ColumnChunk
      }
      e.field_i64(2, g.total_byte_size);
      e.field_i64(3, g.num_rows);
      e.field_i64(5, g.file_offset);
      e.field_i64(6, g.total_compressed);
      e.field_i16(7, static_cast<int16_t>(gi));
      e.end_struct();
    }
    if (!opt.key_value_metadata.empty()) {
      e.begin_list_field(5, thrift::ctype::structure, opt.key_value_metadata.size());
      for (const auto& [k, v] : opt.key_value_metadata) {
        e.begin_list_struct();
        e.field_binary(1, k);
        e.field_binary(2, v);
        e.end_struct();
      }
    }
    e.field_binary(6, opt.created_by);
    e.begin_list_field(7, thrift::ctype::structure, sch.columns.size());
    for (size_t i = 0; i < sch.columns.size(); ++i) {
      e.begin_list_struct();  // ColumnOrder
      e.empty_struct_field(1);  // TYPE_ORDER
      e.end_struct();
    }
    e.end_struct();
    return out;
  }
};

parquet_writer::parquet_writer(std::unique_ptr<impl> p) : p_(std::move(p)) {}
parquet_writer::parquet_writer(parquet_writer&&) noexcept = default;
parquet_writer& parquet_writer::operator=(parquet_writer&&) noexcept = default;
parquet_writer::~parquet_writer() = default;

result<parquet_writer> parquet_writer::create(std::string path, schema s, writer_options o) {
  if (auto e = validate(s)) return e;
  if (path.empty()) return error(ec::invalid_argument, "parquet: empty file path");
  if (o.max_rows_per_row_group == 0 || o.target_page_bytes == 0 || o.max_row_group_bytes == 0 || o.max_page_rows == 0 ||
      o.max_page_rows > static_cast<uint64_t>(std::numeric_limits<int32_t>::max()))
    return error(ec::invalid_argument, "parquet: row group and page limits must be > 0");
  if (o.compression != compression_codec::zstd && o.compression != compression_codec::uncompressed)
    return error(ec::invalid_argument, "parquet: unknown codec");
  if (o.compression == compression_codec::zstd && (o.zstd_level < ZSTD_minCLevel() || o.zstd_level > ZSTD_maxCLevel()))
    return error(ec::invalid_argument, "parquet: zstd level " + std::to_string(o.zstd_level) + " out of range");
  auto p = std::make_unique<impl>();
  p->path = std::move(path);
  p->tmp = p->path + ".tmp";
  p->sch = std::move(s);
  p->opt = std::move(o);
  for (const auto& c : p->sch.columns) {
    column_state cs;
    cs.spec = c;
    p->cols.push_back(std::move(cs));
  }
  if (p->opt.compression == compression_codec::zstd) {
    p->cctx = ZSTD_createCCtx();
    if (!p->cctx) return error(ec::io_error, "parquet: cannot create a zstd context");
  }
  auto fd = wal::open_file(p->tmp, O_WRONLY | O_CREAT | O_TRUNC);
  if (!fd) {
    p->tmp.clear();  // nothing of ours to remove
    return fd.err();
  }
  p->fd = std::move(*fd);
  if (auto e = p->write(magic)) return p->fail(e);
  return parquet_writer(std::move(p));
}

error parquet_writer::append(std::span<const value> row) {
  auto& p = *p_;
  if (p.failed) return p.failed;
  if (p.done) return {ec::closed, "parquet: " + p.path + " is finished; append refused"};
  if (row.size() != p.cols.size())
    return {ec::invalid_argument, "parquet: row " + std::to_string(p.rows) + " has " + std::to_string(row.size()) +
                                      " values, the schema " + std::to_string(p.cols.size()) + " columns"};
  for (size_t i = 0; i < row.size(); ++i)
    if (auto e = p.check(row[i], p.cols[i].spec, p.rows)) return e;
  for (size_t i = 0; i < row.size(); ++i) {
    auto& c = p.cols[i];
    p.add(c, row[i]);
    if (c.values.size() + c.bools.size() / 8 >= p.opt.target_page_bytes || c.page_values >= static_cast<int64_t>(p.opt.max_page_rows))
      if (auto e = p.seal_page(c)) return p.fail(e);
  }
  ++p.rows;
  ++p.group_rows;
  if (p.group_rows >= p.opt.max_rows_per_row_group || p.group_bytes >= p.opt.max_row_group_bytes)
    if (auto e = p.flush_row_group()) return p.fail(e);
  return {};
}

error parquet_writer::finish() {
  auto& p = *p_;
  if (p.failed) return p.failed;
  if (p.done) return {ec::closed, "parquet: " + p.path + " is already finished"};
  if (auto e = p.flush_row_group()) return p.fail(e);
  std::string tail = p.footer();
  put_le(tail, static_cast<uint32_t>(tail.size()));
  tail.append(magic);
  if (auto e = p.write(tail)) return p.fail(e);
  p.metrics.clear();
  for (const auto& c : p.cols) {
    column_metrics m;
    m.field_id = c.spec.field_id;
    m.values = c.file_values;
    m.nulls = c.file_st.null_count;
    if (c.spec.type == column_type::float64) m.nans = c.file_st.nan_count;
    m.bytes = c.file_bytes;
    if (auto b = impl::bounds(c.spec.type, c.file_st)) {
      m.lower = std::move(b->first);
      m.upper = std::move(b->second);
    }
    p.metrics.push_back(std::move(m));
  }
  if (auto e = wal::sync_data(p.fd.get(), p.tmp)) return p.fail(e);
  p.fd.reset();
  if (auto e = wal::rename_file(p.tmp, p.path)) return p.fail(e);
  p.done = true;
  auto slash = p.path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : p.path.substr(0, slash);
  if (auto e = wal::sync_dir(dir)) {
    p.failed = e;  // the file is complete under its name; its directory entry may not be durable
    return e;
  }
  return {};
}

uint64_t parquet_writer::rows() const noexcept { return p_->rows; }
uint64_t parquet_writer::bytes_written() const noexcept { return p_->pos; }
const std::string& parquet_writer::path() const noexcept { return p_->path; }
const schema& parquet_writer::file_schema() const noexcept { return p_->sch; }
const std::vector<column_metrics>& parquet_writer::metrics() const noexcept { return p_->metrics; }

error write_parquet_file(const std::string& path, const schema& s, std::span<const std::vector<value>> rows,
                         const writer_options& o, std::vector<column_metrics>* metrics) {
  auto w = parquet_writer::create(path, s, o);
  if (!w) return w.err();
  for (const auto& r : rows)
    if (auto e = w->append(r)) return e;  // ~parquet_writer removes the temporary file
  if (auto e = w->finish()) return e;
  if (metrics) *metrics = w->metrics();
  return {};
}

}  // namespace dosql::lakehouse
