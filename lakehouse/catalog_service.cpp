// Errors inside a request are thrown as `api_error` (status, spec type, message) and turned into
// the spec's error body in service::handle(), the one place a request ends; nlohmann::json's own
// exceptions (a body of the wrong shape) become 400 there too.
#include "lakehouse/catalog_service.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "lakehouse/iceberg_table.hpp"
#include "lakehouse/ids.hpp"
#include "lakehouse/receiver_store.hpp"
#include "wal/file.hpp"

namespace dosql::lakehouse::rest {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr std::string_view properties_file = ".namespace-properties.json";

struct api_error {
  unsigned status;
  std::string type, message;
};

[[noreturn]] void bad_request(const std::string& m) { throw api_error{400, "BadRequestException", m}; }
[[noreturn]] void commit_failed(const std::string& m) { throw api_error{409, "CommitFailedException", m}; }
[[noreturn]] void server_error(const error& e) { throw api_error{500, "ServiceFailureException", e.message()}; }

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      int h = i + 2 < s.size() ? hex_digit(s[i + 1]) : -1, l = i + 2 < s.size() ? hex_digit(s[i + 2]) : -1;
      if (h < 0 || l < 0) bad_request("a bad percent-encoding in the request target");
      out += static_cast<char>(h * 16 + l);
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

// The spec's namespace in a path: levels joined by the unit separator (0x1F).
std::string namespace_from_path(const std::string& seg) {
  if (seg.find('\x1f') != std::string::npos)
    bad_request("multi-level namespaces are not supported (namespace '" + seg + "'): a namespace is one directory");
  return seg;
}

void check_namespace_name(const std::string& ns) {
  if (!safe_name(ns) || ns[0] == '_')
    bad_request("namespace '" + ns + "': a namespace name is 1-128 of [A-Za-z0-9_.-], not starting with '.' or '_'");
}
void check_table_name(const std::string& t) {
  if (!safe_name(t)) bad_request("table '" + t + "': a table name is 1-128 of [A-Za-z0-9_.-], not starting with '.'");
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> subdirs(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    std::error_code ec2;
    if (e.is_directory(ec2)) out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

json object_or_empty(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return json::object();
  if (!j[key].is_object()) bad_request(std::string("'") + key + "' must be an object");
  return j[key];
}

json string_map(const json& j, const char* what) {
  if (!j.is_object()) bad_request(std::string(what) + " must be an object of strings");
  for (auto& [k, v] : j.items())
    if (!v.is_string()) bad_request(std::string(what) + ": the value of '" + k + "' is not a string");
  return j;
}

// The highest field id in an Iceberg type (nested structs, lists, maps).
int32_t max_field_id(const json& type) {
  int32_t m = 0;
  if (!type.is_object()) return 0;
  auto t = type.value("type", std::string());
  if (t == "struct") {
    for (const auto& f : type.at("fields")) {
      m = std::max(m, f.at("id").get<int32_t>());
      m = std::max(m, max_field_id(f.at("type")));
    }
  } else if (t == "list") {
    m = std::max(type.at("element-id").get<int32_t>(), max_field_id(type.at("element")));
  } else if (t == "map") {
    m = std::max({type.at("key-id").get<int32_t>(), type.at("value-id").get<int32_t>(), max_field_id(type.at("key")),
                  max_field_id(type.at("value"))});
  }
  return m;
}

// A schema from a request: a struct whose fields all have positive, unique ids.
json checked_schema(const json& s) {
  if (!s.is_object() || s.value("type", std::string()) != "struct" || !s.contains("fields") || !s["fields"].is_array())
    bad_request("a schema must be {\"type\": \"struct\", \"fields\": [...]}");
  std::set<int32_t> ids;
  std::function<void(const json&)> walk = [&](const json& type) {
    if (!type.is_object()) return;
    auto t = type.value("type", std::string());
    auto add = [&](const json& id, const std::string& what) {
      if (!id.is_number_integer() || id.get<int64_t>() <= 0 || id.get<int64_t>() > INT32_MAX)
        bad_request("schema: " + what + " needs a positive integer id");
      if (!ids.insert(id.get<int32_t>()).second) bad_request("schema: field id " + id.dump() + " is used twice");
    };
    if (t == "struct") {
      for (const auto& f : type.at("fields")) {
        if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("type") || !f.contains("required") ||
            !f["required"].is_boolean())
          bad_request("schema: every field needs id, name, type and required");
        add(f.value("id", json()), "field '" + f["name"].get<std::string>() + "'");
        walk(f["type"]);
      }
    } else if (t == "list") {
      add(type.value("element-id", json()), "a list element");
      walk(type.at("element"));
    } else if (t == "map") {
      add(type.value("key-id", json()), "a map key");
      add(type.value("value-id", json()), "a map value");
      walk(type.at("key"));
      walk(type.at("value"));
    }
  };
  walk(s);
  return s;
}

std::optional<int64_t> ref_snapshot(const json& m, const std::string& ref) {
  if (m.contains("refs") && m["refs"].contains(ref)) return m["refs"][ref].at("snapshot-id").get<int64_t>();
  if (ref == "main" && (!m.contains("refs") || m["refs"].empty())) {
    auto cur = m.value("current-snapshot-id", json());
    if (cur.is_number_integer() && cur.get<int64_t>() >= 0) return cur.get<int64_t>();
  }
  return std::nullopt;
}

std::string show(const std::optional<int64_t>& v) { return v ? std::to_string(*v) : "none"; }

// A requirement of a commit against the current metadata `m` (null: the table does not exist).
void check_requirement(const json& m, const json& r) {
  if (!r.is_object() || !r.contains("type") || !r["type"].is_string()) bad_request("a requirement needs a 'type'");
  auto type = r["type"].get<std::string>();
  auto expect_int = [&](const char* field, const char* meta_key) {
    if (!r.contains(field) || !r[field].is_number_integer()) bad_request(type + " needs an integer '" + field + "'");
    auto want = r[field].get<int64_t>();
    auto have = m.value(meta_key, json());
    if (!have.is_number_integer() || have.get<int64_t>() != want)
      commit_failed("Requirement failed: " + type + ": expected " + std::to_string(want) + ", the table has " + have.dump());
  };
  if (type == "assert-create") {
    if (!m.is_null()) commit_failed("Requirement failed: assert-create: the table already exists");
    return;
  }
  if (m.is_null()) commit_failed("Requirement failed: " + type + ": the table does not exist");
  if (type == "assert-table-uuid") {
    if (!r.contains("uuid") || !r["uuid"].is_string()) bad_request("assert-table-uuid needs a 'uuid'");
    if (m.value("table-uuid", std::string()) != r["uuid"].get<std::string>())
      commit_failed("Requirement failed: assert-table-uuid: the table's uuid is " + m.value("table-uuid", std::string()) +
                    ", not " + r["uuid"].get<std::string>());
  } else if (type == "assert-ref-snapshot-id") {
    if (!r.contains("ref") || !r["ref"].is_string()) bad_request("assert-ref-snapshot-id needs a 'ref'");
    auto ref = r["ref"].get<std::string>();
    std::optional<int64_t> want;
    if (r.contains("snapshot-id") && !r["snapshot-id"].is_null()) {
      if (!r["snapshot-id"].is_number_integer()) bad_request("assert-ref-snapshot-id: 'snapshot-id' must be an integer or null");
      want = r["snapshot-id"].get<int64_t>();
    }
    auto have = ref_snapshot(m, ref);
    if (want != have)
      commit_failed("Requirement failed: assert-ref-snapshot-id: ref '" + ref + "' is at snapshot " + show(have) +
                    ", the commit expects " + show(want));
  } else if (type == "assert-last-assigned-field-id") {
    expect_int("last-assigned-field-id", "last-column-id");
  } else if (type == "assert-current-schema-id") {
    expect_int("current-schema-id", "current-schema-id");
  } else if (type == "assert-last-assigned-partition-id") {
    expect_int("last-assigned-partition-id", "last-partition-id");
  } else if (type == "assert-default-spec-id") {
    expect_int("default-spec-id", "default-spec-id");
  } else if (type == "assert-default-sort-order-id") {
    expect_int("default-sort-order-id", "default-sort-order-id");
  } else {
    bad_request("unknown requirement type '" + type + "'");
  }
}

int32_t max_id_in(const json& arr, const char* key, int32_t floor) {
  int32_t m = floor;
  for (const auto& x : arr) m = std::max(m, x.at(key).get<int32_t>());
  return m;
}

// A partition spec from a request (spec-id assigned by the caller); field ids from 1000 if absent.
json checked_spec(const json& spec, int32_t spec_id, int32_t& last_partition_id) {
  if (!spec.is_object()) bad_request("a partition spec must be an object");
  json fields = json::array();
  if (spec.contains("fields")) {
    if (!spec["fields"].is_array()) bad_request("partition spec: 'fields' must be an array");
    for (auto f : spec["fields"]) {
      if (!f.is_object() || !f.contains("source-id") || !f.contains("transform") || !f.contains("name"))
        bad_request("partition spec: every field needs source-id, transform and name");
      if (!f.contains("field-id")) f["field-id"] = ++last_partition_id;
      last_partition_id = std::max(last_partition_id, f["field-id"].get<int32_t>());
      fields.push_back(std::move(f));
    }
  }
  return {{"spec-id", spec_id}, {"fields", std::move(fields)}};
}

// Applies one update of a commit to `m` in place. `now` stamps the snapshot log.
void apply_update(json& m, const json& u, int32_t& last_added_schema, int32_t& last_added_spec, int32_t& last_added_order) {
  if (!u.is_object() || !u.contains("action") || !u["action"].is_string()) bad_request("an update needs an 'action'");
  auto action = u["action"].get<std::string>();
  auto need = [&](const char* field) -> const json& {
    if (!u.contains(field)) bad_request(action + " needs '" + field + "'");
    return u[field];
  };
  if (action == "assign-uuid") {
    auto uuid = need("uuid").get<std::string>();
    if (m.contains("table-uuid") && m["table-uuid"] != uuid) bad_request("assign-uuid: the table's uuid is already " + m["table-uuid"].get<std::string>());
    m["table-uuid"] = uuid;
  } else if (action == "upgrade-format-version") {
    if (need("format-version").get<int>() != 2) bad_request("upgrade-format-version: this catalog writes format version 2 only");
  } else if (action == "add-schema") {
    auto s = checked_schema(need("schema"));
    int32_t id = -1, max_id = -1;
    for (const auto& x : m["schemas"]) {
      max_id = std::max(max_id, x.at("schema-id").get<int32_t>());
      if (x.at("fields") == s["fields"] && x.value("identifier-field-ids", json()) == s.value("identifier-field-ids", json()))
        id = x["schema-id"].get<int32_t>();
    }
    if (id < 0) {
      id = max_id + 1;
      s["schema-id"] = id;
      m["schemas"].push_back(s);
    }
    int32_t last = std::max(m.value("last-column-id", 0), max_field_id(s));
    if (u.contains("last-column-id") && u["last-column-id"].is_number_integer()) last = std::max(last, u["last-column-id"].get<int32_t>());
    m["last-column-id"] = last;
    last_added_schema = id;
  } else if (action == "set-current-schema") {
    auto id = need("schema-id").get<int32_t>();
    if (id == -1) {
      if (last_added_schema < 0) bad_request("set-current-schema -1: no schema was added in this commit");
      id = last_added_schema;
    }
    bool found = false;
    for (const auto& x : m["schemas"]) found = found || x.at("schema-id").get<int32_t>() == id;
    if (!found) bad_request("set-current-schema: no schema " + std::to_string(id));
    m["current-schema-id"] = id;
  } else if (action == "add-spec") {
    int32_t last = m.value("last-partition-id", 999);
    int32_t id = max_id_in(m["partition-specs"], "spec-id", -1) + 1;
    auto spec = checked_spec(need("spec"), id, last);
    for (const auto& x : m["partition-specs"])
      if (x.at("fields") == spec["fields"]) id = x["spec-id"].get<int32_t>();
    if (id == spec["spec-id"].get<int32_t>()) m["partition-specs"].push_back(spec);
    m["last-partition-id"] = last;
    last_added_spec = id;
  } else if (action == "set-default-spec") {
    auto id = need("spec-id").get<int32_t>();
    if (id == -1) id = last_added_spec;
    bool found = false;
    for (const auto& x : m["partition-specs"]) found = found || x.at("spec-id").get<int32_t>() == id;
    if (!found) bad_request("set-default-spec: no partition spec " + std::to_string(id));
    m["default-spec-id"] = id;
  } else if (action == "add-sort-order") {
    auto o = need("sort-order");
    if (!o.is_object() || !o.contains("fields") || !o["fields"].is_array()) bad_request("add-sort-order: a sort order needs 'fields'");
    int32_t id = o["fields"].empty() ? 0 : max_id_in(m["sort-orders"], "order-id", 0) + 1;
    bool exists = false;
    for (const auto& x : m["sort-orders"])
      if (x.at("fields") == o["fields"]) id = x["order-id"].get<int32_t>(), exists = true;
    if (!exists) m["sort-orders"].push_back({{"order-id", id}, {"fields", o["fields"]}});
    last_added_order = id;
  } else if (action == "set-default-sort-order") {
    auto id = need("sort-order-id").get<int32_t>();
    if (id == -1) id = last_added_order;
    bool found = false;
    for (const auto& x : m["sort-orders"]) found = found || x.at("order-id").get<int32_t>() == id;
    if (!found) bad_request("set-default-sort-order: no sort order " + std::to_string(id));
    m["default-sort-order-id"] = id;
  } else if (action == "add-snapshot") {
    auto s = need("snapshot");
    if (!s.is_object() || !s.contains("snapshot-id") || !s["snapshot-id"].is_number_integer() || !s.contains("timestamp-ms") ||
        !s["timestamp-ms"].is_number_integer() || !s.contains("manifest-list") || !s["manifest-list"].is_string() ||
        !s.contains("summary"))
      bad_request("add-snapshot: a snapshot needs snapshot-id, timestamp-ms, manifest-list and summary");
    string_map(s["summary"], "add-snapshot: the summary");
    if (!s["summary"].contains("operation")) bad_request("add-snapshot: the summary needs an 'operation'");
    auto id = s["snapshot-id"].get<int64_t>();
    for (const auto& x : m["snapshots"])
      if (x.at("snapshot-id").get<int64_t>() == id) bad_request("add-snapshot: snapshot " + std::to_string(id) + " already exists");
    auto last_seq = m.value("last-sequence-number", int64_t{0});
    if (!s.contains("sequence-number")) s["sequence-number"] = last_seq + 1;
    auto seq = s["sequence-number"].get<int64_t>();
    if (seq <= last_seq)
      bad_request("add-snapshot: sequence number " + std::to_string(seq) + " is not above the table's last sequence number " +
                  std::to_string(last_seq));
    if (s.contains("schema-id")) {
      bool found = false;
      for (const auto& x : m["schemas"]) found = found || x.at("schema-id") == s["schema-id"];
      if (!found) bad_request("add-snapshot: no schema " + s["schema-id"].dump());
    }
    m["last-sequence-number"] = seq;
    m["snapshots"].push_back(std::move(s));
  } else if (action == "set-snapshot-ref") {
    auto name = need("ref-name").get<std::string>();
    auto id = need("snapshot-id").get<int64_t>();
    auto type = need("type").get<std::string>();
    if (type != "branch" && type != "tag") bad_request("set-snapshot-ref: type must be 'branch' or 'tag'");
    if (name == "main" && type != "branch") bad_request("set-snapshot-ref: 'main' is a branch");
    const json* snap = nullptr;
    for (const auto& x : m["snapshots"])
      if (x.at("snapshot-id").get<int64_t>() == id) snap = &x;
    if (!snap) bad_request("set-snapshot-ref: no snapshot " + std::to_string(id));
    json ref = {{"snapshot-id", id}, {"type", type}};
    for (const char* k : {"max-ref-age-ms", "max-snapshot-age-ms", "min-snapshots-to-keep"})
      if (u.contains(k) && !u[k].is_null()) ref[k] = u[k];
    m["refs"][name] = ref;
    if (name == "main" && m.value("current-snapshot-id", int64_t{-1}) != id) {
      m["current-snapshot-id"] = id;
      m["snapshot-log"].push_back({{"timestamp-ms", snap->at("timestamp-ms")}, {"snapshot-id", id}});
    }
  } else if (action == "remove-snapshot-ref") {
    auto name = need("ref-name").get<std::string>();
    m["refs"].erase(name);
    if (name == "main") m["current-snapshot-id"] = -1;
  } else if (action == "set-properties") {
    const json updates = string_map(need("updates"), "set-properties: 'updates'");  // not a temporary in the range-for
    for (auto& [k, v] : updates.items()) m["properties"][k] = v;
  } else if (action == "remove-properties") {
    const auto& r = need("removals");
    if (!r.is_array()) bad_request("remove-properties: 'removals' must be an array");
    for (const auto& k : r) m["properties"].erase(k.get<std::string>());
  } else if (action == "set-location") {
    if (need("location") != m["location"]) bad_request("set-location: a table's location is its directory here (" + m["location"].get<std::string>() + ")");
  } else {
    bad_request("unknown update action '" + action + "'");
  }
}

// The metadata of a table with nothing in it yet (a create fills in schema, spec, order).
json empty_metadata(const std::string& location, int64_t now) {
  return {{"format-version", 2},
          {"table-uuid", random_uuid()},
          {"location", location},
          {"last-sequence-number", 0},
          {"last-updated-ms", now},
          {"last-column-id", 0},
          {"schemas", json::array()},
          {"current-schema-id", -1},
          {"partition-specs", json::array()},
          {"default-spec-id", 0},
          {"last-partition-id", 999},
          {"sort-orders", json::array()},
          {"default-sort-order-id", 0},
          {"properties", json::object()},
          {"current-snapshot-id", -1},
          {"refs", json::object()},
          {"snapshots", json::array()},
          {"snapshot-log", json::array()},
          {"metadata-log", json::array()}};
}

// Defaults a create leaves out: the unpartitioned spec 0 and the unsorted order 0.
void fill_defaults(json& m) {
  if (m["partition-specs"].empty()) m["partition-specs"].push_back({{"spec-id", 0}, {"fields", json::array()}});
  if (m["sort-orders"].empty()) m["sort-orders"].push_back({{"order-id", 0}, {"fields", json::array()}});
  bool order_found = false;
  for (const auto& o : m["sort-orders"]) order_found = order_found || o["order-id"] == m["default-sort-order-id"];
  if (!order_found) m["default-sort-order-id"] = m["sort-orders"][0]["order-id"];
}

}  // namespace

json error_body(unsigned code, const std::string& type, const std::string& message) {
  return {{"error", {{"message", message}, {"type", type}, {"code", code}}}};
}

service::service(std::string dir, std::function<int64_t()> now_ms) : dir_(std::move(dir)), now_ms_(std::move(now_ms)) {
  if (!now_ms_)
    now_ms_ = [] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    };
}

response service::handle(const request& r) {
  response res;
  // The method in a metrics label: one of a few (a client's invented methods are "OTHER").
  const std::string ml =
      r.method == "GET" || r.method == "HEAD" || r.method == "POST" || r.method == "DELETE" || r.method == "PUT" ? r.method : "OTHER";
  res.route = ml + " (unknown route)";
  try {
    // The target: /v1/[{prefix}/]..., percent-decoded per segment; the query as a map.
    std::string_view target = r.target;
    std::map<std::string, std::string> query;
    if (auto q = target.find('?'); q != std::string_view::npos) {
      std::string_view qs = target.substr(q + 1);
      target = target.substr(0, q);
      while (!qs.empty()) {
        auto amp = qs.find('&');
        auto kv = qs.substr(0, amp);
        auto eq = kv.find('=');
        query[percent_decode(kv.substr(0, eq), true)] = eq == std::string_view::npos ? "" : percent_decode(kv.substr(eq + 1), true);
        qs = amp == std::string_view::npos ? std::string_view() : qs.substr(amp + 1);
      }
    }
    std::vector<std::string> seg;
    for (size_t i = 0; i < target.size();) {
      if (target[i] == '/') {
        ++i;
        continue;
      }
      auto j = target.find('/', i);
      if (j == std::string_view::npos) j = target.size();
      seg.push_back(percent_decode(target.substr(i, j - i), false));
      i = j;
    }
    if (seg.empty() || seg[0] != "v1") throw api_error{404, "NoSuchRouteException", "no route for " + r.method + " " + r.target};
    seg.erase(seg.begin());
    // The optional {prefix} (iceberg-js sends /v1/<catalogName>/namespaces/...): any one segment
    // before "namespaces"; it names nothing here (one directory is one catalog).
    if (seg.size() >= 2 && seg[0] != "namespaces" && seg[0] != "config" && seg[1] == "namespaces") seg.erase(seg.begin());

    const auto& m = r.method;
    auto body = [&]() -> json {
      auto j = json::parse(r.body, nullptr, false);
      if (j.is_discarded() || !j.is_object()) bad_request("the request body is not a JSON object");
      return j;
    };
    auto ns_dir = [&](const std::string& ns) { return dir_ + "/" + ns; };
    auto need_namespace = [&](const std::string& ns) {
      check_namespace_name(ns);
      if (!is_dir(ns_dir(ns))) throw api_error{404, "NoSuchNamespaceException", "Namespace does not exist: " + ns};
    };
    auto load_table = [&](const std::string& ns, const std::string& t) -> iceberg::table {
      need_namespace(ns);
      check_table_name(t);
      auto tbl = iceberg::table::load(ns_dir(ns) + "/" + t);
      if (!tbl) server_error(tbl.err());
      if (tbl->version() == 0) throw api_error{404, "NoSuchTableException", "Table does not exist: " + ns + "." + t};
      return std::move(*tbl);
    };
    auto table_result = [&](const std::string& tdir, int64_t version, const json& meta) {
      return json{{"metadata-location", iceberg::file_uri(iceberg::metadata_path(tdir, version))}, {"metadata", meta}, {"config", json::object()}};
    };
    auto read_properties = [&](const std::string& ns) -> json {
      std::ifstream in(ns_dir(ns) + "/" + std::string(properties_file));
      if (!in) return json::object();
      auto j = json::parse(in, nullptr, false);
      if (j.is_discarded() || !j.is_object())
        server_error(error(ec::corruption, "the namespace properties " + ns_dir(ns) + "/" + std::string(properties_file) + " are not a JSON object"));
      return j;
    };
    auto write_properties = [&](const std::string& ns, const json& p) {
      if (auto e = wal::replace_file(ns_dir(ns) + "/" + std::string(properties_file), p.dump(2) + "\n")) server_error(e);
    };
    // A commit of `meta` as version base + 1; a lost race is 409.
    auto commit = [&](const std::string& tdir, int64_t base, json meta, unsigned race_status, const std::string& race_type) {
      res.commit = true;
      auto p = iceberg::commit_metadata(tdir, base, meta);
      if (!p) {
        if (p.err().code() == ec::busy) throw api_error{race_status, race_type, p.err().message()};
        server_error(p.err());
      }
      return table_result(tdir, base + 1, meta);
    };

    if (seg.size() == 1 && seg[0] == "config") {
      res.route = ml + " /v1/config";
      if (m != "GET") bad_request("GET /v1/config only");
      res.body = {{"defaults", json::object()}, {"overrides", json::object()}};
      return res;
    }
    if (seg.empty() || seg[0] != "namespaces") throw api_error{404, "NoSuchRouteException", "no route for " + r.method + " " + r.target};

    if (seg.size() == 1) {
      res.route = ml + " /v1/namespaces";
      if (m == "GET") {
        if (query.count("parent") && !query["parent"].empty()) {
          need_namespace(namespace_from_path(query["parent"]));
          res.body = {{"namespaces", json::array()}};  // one level: no children
          return res;
        }
        json list = json::array();
        for (const auto& d : subdirs(dir_))
          if (safe_name(d) && d[0] != '_') list.push_back(json::array({d}));
        res.body = {{"namespaces", list}};
        return res;
      }
      if (m == "POST") {
        auto b = body();
        if (!b.contains("namespace") || !b["namespace"].is_array() || b["namespace"].size() != 1 || !b["namespace"][0].is_string())
          bad_request("'namespace' must be an array of one name (multi-level namespaces are not supported)");
        auto ns = b["namespace"][0].get<std::string>();
        check_namespace_name(ns);
        auto props = string_map(object_or_empty(b, "properties"), "'properties'");
        if (auto e = wal::make_dirs(dir_)) server_error(e);
        if (::mkdir(ns_dir(ns).c_str(), 0755) != 0) {
          if (errno == EEXIST) throw api_error{409, "AlreadyExistsException", "Namespace already exists: " + ns};
          server_error(wal::io_error("cannot create the namespace directory", ns_dir(ns), errno));
        }
        if (!props.empty()) write_properties(ns, props);
        if (auto e = wal::sync_dir(dir_)) server_error(e);
        res.body = {{"namespace", json::array({ns})}, {"properties", props}};
        return res;
      }
      bad_request("GET or POST /v1/namespaces");
    }

    auto ns = namespace_from_path(seg[1]);
    if (seg.size() == 2) {
      res.route = ml + " /v1/namespaces/{namespace}";
      need_namespace(ns);
      if (m == "GET") {
        res.body = {{"namespace", json::array({ns})}, {"properties", read_properties(ns)}};
        return res;
      }
      if (m == "HEAD") {
        res.status = 204;
        return res;
      }
      if (m == "DELETE") {
        std::vector<std::string> left;
        std::error_code ec;
        for (auto& e : fs::directory_iterator(ns_dir(ns), ec))
          if (e.path().filename() != properties_file) left.push_back(e.path().filename().string());
        if (!left.empty())
          throw api_error{409, "NamespaceNotEmptyException", "Namespace " + ns + " is not empty: it holds " + left.front() +
                                                                 (left.size() > 1 ? " and " + std::to_string(left.size() - 1) + " more" : "")};
        auto pf = ns_dir(ns) + "/" + std::string(properties_file);
        if (wal::path_exists(pf))
          if (auto e = wal::remove_file(pf)) server_error(e);
        if (::rmdir(ns_dir(ns).c_str()) != 0) server_error(wal::io_error("cannot remove the namespace directory", ns_dir(ns), errno));
        if (auto e = wal::sync_dir(dir_)) server_error(e);
        res.status = 204;
        return res;
      }
      bad_request("GET, HEAD or DELETE /v1/namespaces/{namespace}");
    }
    if (seg.size() == 3 && seg[2] == "properties") {
      res.route = ml + " /v1/namespaces/{namespace}/properties";
      need_namespace(ns);
      if (m != "POST") bad_request("POST /v1/namespaces/{namespace}/properties");
      auto b = body();
      auto props = read_properties(ns);
      auto updates = string_map(object_or_empty(b, "updates"), "'updates'");
      json removed = json::array(), missing = json::array(), updated = json::array();
      if (b.contains("removals")) {
        if (!b["removals"].is_array()) bad_request("'removals' must be an array");
        for (const auto& k : b["removals"]) {
          if (!k.is_string()) bad_request("'removals' must be an array of strings");
          if (updates.contains(k.get<std::string>())) bad_request("property '" + k.get<std::string>() + "' is both updated and removed");
          if (props.erase(k.get<std::string>())) removed.push_back(k);
          else missing.push_back(k);
        }
      }
      for (auto& [k, v] : updates.items()) {
        props[k] = v;
        updated.push_back(k);
      }
      write_properties(ns, props);
      res.body = {{"updated", updated}, {"removed", removed}, {"missing", missing}};
      return res;
    }
    if (seg.size() == 3 && seg[2] == "tables") {
      res.route = ml + " /v1/namespaces/{namespace}/tables";
      need_namespace(ns);
      if (m == "GET") {
        json ids = json::array();
        for (const auto& d : subdirs(ns_dir(ns))) {
          if (!safe_name(d)) continue;
          auto t = iceberg::table::load(ns_dir(ns) + "/" + d);
          if (!t || t->version() > 0) ids.push_back({{"namespace", json::array({ns})}, {"name", d}});
        }
        res.body = {{"identifiers", ids}};
        return res;
      }
      if (m == "POST") {
        auto b = body();
        if (!b.contains("name") || !b["name"].is_string()) bad_request("a table create needs a 'name'");
        auto name = b["name"].get<std::string>();
        check_table_name(name);
        if (!b.contains("schema")) bad_request("a table create needs a 'schema'");
        if (b.value("stage-create", false)) bad_request("staged creates are not supported: create the table, then commit");
        auto tdir = ns_dir(ns) + "/" + name;
        auto existing = iceberg::table::load(tdir);
        if (!existing || existing->version() > 0) throw api_error{409, "AlreadyExistsException", "Table already exists: " + ns + "." + name};
        auto location = iceberg::file_uri(tdir);
        if (b.contains("location") && !b["location"].is_null() && b["location"] != location)
          bad_request("a table's location is its directory here (" + location + "), not " + b["location"].dump());
        auto meta = empty_metadata(location, now_ms_());
        auto schema = checked_schema(b["schema"]);
        schema["schema-id"] = 0;
        meta["schemas"].push_back(schema);
        meta["current-schema-id"] = 0;
        meta["last-column-id"] = max_field_id(schema);
        int32_t last_partition = 999;
        meta["partition-specs"].push_back(checked_spec(b.contains("partition-spec") && !b["partition-spec"].is_null() ? b["partition-spec"] : json::object(), 0, last_partition));
        meta["last-partition-id"] = last_partition;
        if (b.contains("write-order") && !b["write-order"].is_null()) {
          const auto& o = b["write-order"];
          if (!o.is_object() || !o.contains("fields") || !o["fields"].is_array()) bad_request("'write-order' needs 'fields'");
          if (!o["fields"].empty()) {
            meta["sort-orders"].push_back({{"order-id", 1}, {"fields", o["fields"]}});
            meta["default-sort-order-id"] = 1;
          }
        }
        meta["properties"] = string_map(object_or_empty(b, "properties"), "'properties'");
        fill_defaults(meta);
        res.body = commit(tdir, 0, std::move(meta), 409, "AlreadyExistsException");
        return res;
      }
      bad_request("GET or POST /v1/namespaces/{namespace}/tables");
    }
    if (seg.size() == 5 && seg[2] == "tables" && seg[4] == "metrics") {
      res.route = ml + " /v1/namespaces/{namespace}/tables/{table}/metrics";
      if (m != "POST") bad_request("POST .../metrics");
      load_table(ns, seg[3]);
      res.status = 204;  // scan and commit reports are accepted and not kept
      return res;
    }
    if (seg.size() == 4 && seg[2] == "tables") {
      res.route = ml + " /v1/namespaces/{namespace}/tables/{table}";
      const auto& name = seg[3];
      if (m == "GET") {
        auto t = load_table(ns, name);
        res.body = table_result(t.dir(), t.version(), t.metadata());
        return res;
      }
      if (m == "HEAD") {
        load_table(ns, name);
        res.status = 204;
        return res;
      }
      if (m == "DELETE") {
        auto t = load_table(ns, name);
        bool purge = query.count("purgeRequested") && query["purgeRequested"] == "true";
        // The table disappears at one rename (of its metadata, or with a purge of the whole
        // directory) out of the catalog's sight; then the renamed files are removed.
        auto gone = ns_dir(ns) + "/." + name + "-dropped-" + random_hex32();
        auto from = purge ? t.dir() : t.dir() + "/metadata";
        if (auto e = wal::rename_file(from, gone)) server_error(e);
        if (auto e = wal::sync_dir(ns_dir(ns))) server_error(e);
        if (!purge)
          if (auto e = wal::sync_dir(t.dir())) server_error(e);
        std::error_code ec;
        fs::remove_all(gone, ec);
        res.status = 204;
        return res;
      }
      if (m == "POST") {
        auto b = body();
        if (!b.contains("requirements") || !b["requirements"].is_array() || !b.contains("updates") || !b["updates"].is_array())
          bad_request("a commit needs 'requirements' and 'updates' arrays");
        need_namespace(ns);
        check_table_name(name);
        auto tdir = ns_dir(ns) + "/" + name;
        auto t = iceberg::table::load(tdir);
        if (!t) server_error(t.err());
        bool create = false;
        for (const auto& q : b["requirements"]) create = create || (q.is_object() && q.value("type", std::string()) == "assert-create");
        if (t->version() == 0 && !create) throw api_error{404, "NoSuchTableException", "Table does not exist: " + ns + "." + name};
        res.commit = true;
        const json base = t->version() == 0 ? json() : t->metadata();
        for (const auto& q : b["requirements"]) check_requirement(base, q);
        auto now = now_ms_();
        json meta = base.is_null() ? empty_metadata(iceberg::file_uri(tdir), now) : base;
        int32_t last_schema = -1, last_spec = -1, last_order = -1;
        for (const auto& u : b["updates"]) apply_update(meta, u, last_schema, last_spec, last_order);
        if (base.is_null()) {
          if (meta["current-schema-id"].get<int32_t>() < 0) bad_request("a create transaction must add a schema and set it current");
          fill_defaults(meta);
        } else {
          meta["metadata-log"].push_back({{"timestamp-ms", base.value("last-updated-ms", now)},
                                          {"metadata-file", iceberg::file_uri(iceberg::metadata_path(tdir, t->version()))}});
        }
        meta["last-updated-ms"] = std::max(now, base.is_null() ? now : base.value("last-updated-ms", now));
        auto out = commit(tdir, t->version(), std::move(meta), 409, "CommitFailedException");
        out.erase("config");
        res.body = std::move(out);
        return res;
      }
      bad_request("GET, HEAD, POST or DELETE /v1/namespaces/{namespace}/tables/{table}");
    }
    throw api_error{404, "NoSuchRouteException", "no route for " + r.method + " " + r.target};
  } catch (const api_error& e) {
    res.status = e.status;
    res.body = error_body(e.status, e.type, e.message);
  } catch (const json::exception& e) {
    res.status = 400;
    res.body = error_body(400, "BadRequestException", std::string("malformed request: ") + e.what());
  } catch (const std::exception& e) {
    res.status = 500;
    res.body = error_body(500, "ServiceFailureException", e.what());
  }
  res.conflict = res.commit && res.status == 409;
  return res;
}

}  // namespace dosql::lakehouse::rest
