#include "lakehouse/iceberg_manifest_reader.hpp"

#include <avro.h>

#include <cstdio>
#include <functional>
#include <map>
#include <memory>

namespace dosql::lakehouse::iceberg {

namespace {

// One Avro object-container file, read record by record with Avro C's generic values.
class avro_file {
 public:
  ~avro_file() {
    if (have_value_) avro_value_decref(&value_);
    if (iface_) avro_value_iface_decref(iface_);
    if (schema_) avro_schema_decref(schema_);
    if (reader_) avro_file_reader_close(reader_);
  }
  error open(const std::string& path) {
    path_ = path;
    if (avro_file_reader(path.c_str(), &reader_) != 0) {
      reader_ = nullptr;
      return error(ec::corruption, "cannot open the Avro file " + path + ": " + avro_strerror());
    }
    schema_ = avro_file_reader_get_writer_schema(reader_);
    iface_ = avro_generic_class_from_schema(schema_);
    if (!iface_ || avro_generic_value_new(iface_, &value_) != 0)
      return error(ec::corruption, "the Avro file " + path + ": " + avro_strerror());
    have_value_ = true;
    return {};
  }
  /// False at the end; an error for a damaged record.
  result<bool> next() {
    int rc = avro_file_reader_read_value(reader_, &value_);
    if (rc == EOF) return false;
    if (rc != 0) return error(ec::corruption, "the Avro file " + path_ + ": " + avro_strerror());
    return true;
  }
  avro_value_t& value() { return value_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  avro_file_reader_t reader_ = nullptr;
  avro_schema_t schema_ = nullptr;
  avro_value_iface_t* iface_ = nullptr;
  avro_value_t value_{};
  bool have_value_ = false;
};

struct field_error {
  std::string what;
};

avro_value_t field(avro_value_t& rec, const char* name) {
  avro_value_t f;
  if (avro_value_get_by_name(&rec, name, &f, nullptr) != 0) throw field_error{std::string("no field ") + name};
  return f;
}
// A union ["null", T]: its branch, or nothing for null.
bool branch(avro_value_t& u, avro_value_t& out) {
  if (avro_value_get_type(&u) != AVRO_UNION) {
    out = u;
    return true;
  }
  int disc = 0;
  if (avro_value_get_discriminant(&u, &disc) != 0) throw field_error{"bad union"};
  if (avro_value_get_current_branch(&u, &out) != 0) throw field_error{"bad union"};
  return avro_value_get_type(&out) != AVRO_NULL;
}
int64_t get_long(avro_value_t& rec, const char* name) {
  auto f = field(rec, name);
  int64_t v = 0;
  if (avro_value_get_type(&f) == AVRO_INT32) {
    int32_t i = 0;
    if (avro_value_get_int(&f, &i) != 0) throw field_error{std::string("bad ") + name};
    return i;
  }
  if (avro_value_get_long(&f, &v) != 0) throw field_error{std::string("bad ") + name};
  return v;
}
std::optional<int64_t> get_optional_long(avro_value_t& rec, const char* name) {
  auto f = field(rec, name);
  avro_value_t b;
  if (!branch(f, b)) return std::nullopt;
  int64_t v = 0;
  if (avro_value_get_long(&b, &v) != 0) throw field_error{std::string("bad ") + name};
  return v;
}
std::string get_string(avro_value_t& rec, const char* name) {
  auto f = field(rec, name);
  const char* p = nullptr;
  size_t n = 0;
  if (avro_value_get_string(&f, &p, &n) != 0) throw field_error{std::string("bad ") + name};
  return std::string(p, n ? n - 1 : 0);  // n counts the terminating NUL
}

template <class T>
result<std::vector<T>> read_all(const std::string& path, const std::function<T(avro_value_t&)>& decode) {
  avro_file f;
  if (auto e = f.open(path)) return e;
  std::vector<T> out;
  try {
    for (;;) {
      auto more = f.next();
      if (!more) return more.err();
      if (!*more) break;
      out.push_back(decode(f.value()));
    }
  } catch (const field_error& e) {
    return error(ec::corruption, "the Avro file " + path + ", record " + std::to_string(out.size()) + ": " + e.what);
  }
  return out;
}

}  // namespace

std::string local_path(const std::string& uri) {
  constexpr std::string_view scheme = "file://";
  return uri.starts_with(scheme) ? uri.substr(scheme.size()) : uri;
}

result<std::vector<manifest_file>> read_manifest_list(const std::string& path) {
  return read_all<manifest_file>(path, [](avro_value_t& r) {
    manifest_file m;
    m.path = get_string(r, "manifest_path");
    m.length = get_long(r, "manifest_length");
    m.partition_spec_id = static_cast<int32_t>(get_long(r, "partition_spec_id"));
    m.content = static_cast<int32_t>(get_long(r, "content"));
    m.sequence_number = get_long(r, "sequence_number");
    m.min_sequence_number = get_long(r, "min_sequence_number");
    m.added_snapshot_id = get_long(r, "added_snapshot_id");
    m.added_files = static_cast<int32_t>(get_long(r, "added_files_count"));
    m.existing_files = static_cast<int32_t>(get_long(r, "existing_files_count"));
    m.deleted_files = static_cast<int32_t>(get_long(r, "deleted_files_count"));
    m.added_rows = get_long(r, "added_rows_count");
    m.existing_rows = get_long(r, "existing_rows_count");
    m.deleted_rows = get_long(r, "deleted_rows_count");
    return m;
  });
}

result<std::vector<manifest_entry>> read_manifest(const std::string& path, const manifest_file& from) {
  return read_all<manifest_entry>(path, [&](avro_value_t& r) {
    manifest_entry e;
    e.status = static_cast<entry_status>(get_long(r, "status"));
    e.snapshot_id = get_optional_long(r, "snapshot_id");
    e.sequence_number = get_optional_long(r, "sequence_number");
    e.file_sequence_number = get_optional_long(r, "file_sequence_number");
    // Inheritance (spec: only ADDED entries may leave these null).
    if (!e.snapshot_id) e.snapshot_id = from.added_snapshot_id;
    if (!e.sequence_number) e.sequence_number = from.sequence_number;
    if (!e.file_sequence_number) e.file_sequence_number = from.sequence_number;
    auto df = field(r, "data_file");
    e.file.content = static_cast<file_content>(get_long(df, "content"));
    e.file.path = get_string(df, "file_path");
    e.file.record_count = get_long(df, "record_count");
    e.file.file_size_in_bytes = get_long(df, "file_size_in_bytes");
    // Column metrics: maps int -> long / bytes, written as arrays of {key, value} records.
    std::map<int32_t, column_metrics> ms;
    auto read_map = [&](const char* name, auto&& set) {
      avro_value_t arr, f = field(df, name);
      if (!branch(f, arr)) return;
      size_t n = 0;
      avro_value_get_size(&arr, &n);
      for (size_t i = 0; i < n; ++i) {
        avro_value_t kv, k, v;
        int32_t key = 0;
        if (avro_value_get_by_index(&arr, i, &kv, nullptr) != 0 || avro_value_get_by_name(&kv, "key", &k, nullptr) != 0 ||
            avro_value_get_int(&k, &key) != 0 || avro_value_get_by_name(&kv, "value", &v, nullptr) != 0)
          throw field_error{std::string("bad ") + name};
        auto& m = ms[key];
        m.field_id = key;
        set(m, v);
      }
    };
    auto as_long = [&](avro_value_t& v) {
      int64_t x = 0;
      if (avro_value_get_long(&v, &x) != 0) throw field_error{"bad metric"};
      return x;
    };
    auto as_bytes = [&](avro_value_t& v) {
      const void* p = nullptr;
      size_t n = 0;
      if (avro_value_get_bytes(&v, &p, &n) != 0) throw field_error{"bad bound"};
      return std::string(static_cast<const char*>(p), n);
    };
    read_map("column_sizes", [&](column_metrics& m, avro_value_t& v) { m.bytes = as_long(v); });
    read_map("value_counts", [&](column_metrics& m, avro_value_t& v) { m.values = as_long(v); });
    read_map("null_value_counts", [&](column_metrics& m, avro_value_t& v) { m.nulls = as_long(v); });
    read_map("nan_value_counts", [&](column_metrics& m, avro_value_t& v) { m.nans = as_long(v); });
    read_map("lower_bounds", [&](column_metrics& m, avro_value_t& v) { m.lower = as_bytes(v); });
    read_map("upper_bounds", [&](column_metrics& m, avro_value_t& v) { m.upper = as_bytes(v); });
    for (auto& [id, m] : ms) e.file.metrics.push_back(std::move(m));
    auto eq = field(df, "equality_ids");
    avro_value_t arr;
    if (branch(eq, arr)) {
      size_t n = 0;
      avro_value_get_size(&arr, &n);
      for (size_t i = 0; i < n; ++i) {
        avro_value_t el;
        int32_t id = 0;
        if (avro_value_get_by_index(&arr, i, &el, nullptr) != 0 || avro_value_get_int(&el, &id) != 0)
          throw field_error{"bad equality_ids"};
        e.file.equality_ids.push_back(id);
      }
    }
    avro_value_t so, sof;  // (optional in the spec: a manifest of another writer may lack it)
    if (avro_value_get_by_name(&df, "sort_order_id", &sof, nullptr) == 0 && branch(sof, so)) {
      int32_t id = 0;
      if (avro_value_get_int(&so, &id) != 0) throw field_error{"bad sort_order_id"};
      e.file.sort_order_id = id;
    }
    return e;
  });
}

}  // namespace dosql::lakehouse::iceberg
