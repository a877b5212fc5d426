// The Iceberg REST catalog's operations over a lakehouse directory L (the subset of apache/iceberg
// open-api/rest-catalog-open-api.yaml needed to read and append; docs/LAKEHOUSE.md, "REST
// catalog"), without the network: lakehouse/catalog.cpp puts a Boost.Beast HTTP server in front.
//
// Layout (the receiver's, lakehouse/iceberg_table.hpp): a namespace is a directory L/<ns> (one
// level), its properties are L/<ns>/.namespace-properties.json (absent: none); a table is a
// directory L/<ns>/<table> holding metadata/vN.metadata.json. Names are 1-128 of [A-Za-z0-9_.-],
// not starting with '.' (namespaces not with '_' either: L/_dosql is the receiver's state).
// Tables created here are ordinary file-system tables; tables the receiver writes are listed and
// loaded like any other.
//
// Invariants:
// - A commit (table create or POST commit) writes metadata version N+1 from version N with
//   iceberg::commit_metadata's link(2) compare-and-swap: it never overwrites a version; another
//   writer's version N+1 (a lost race) is 409 CommitFailedException and writes nothing visible.
// - Requirements are checked against version N before any update is applied; a failed one is 409
//   CommitFailedException, an unknown requirement or update type (or an invalid one) 400
//   BadRequestException; in both cases nothing is written.
// - Every error body has the spec's shape {"error": {"message", "type", "code"}}.
// Not thread-safe (the server calls it from its one I/O thread; other processes are fenced by the
// compare-and-swap).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace dosql::lakehouse::rest {

struct request {
  std::string method;  ///< GET, HEAD, POST, DELETE
  std::string target;  ///< path and query, as received ("/v1/namespaces/a%1Fb/tables?x=1")
  std::string body;
};

struct response {
  unsigned status = 200;
  nlohmann::json body;  ///< null: no body (204, HEAD)
  std::string route;    ///< the route template matched ("GET /v1/namespaces/{namespace}"), for metrics
  bool commit = false;    ///< a table commit (create or POST commit) was attempted
  bool conflict = false;  ///< ... and failed with 409 (a requirement or the compare-and-swap)
};

/// The spec's error body.
nlohmann::json error_body(unsigned code, const std::string& type, const std::string& message);

class service {
 public:
  /// `dir`: the lakehouse directory (must exist). `now_ms`: the clock (tests may fix it).
  explicit service(std::string dir, std::function<int64_t()> now_ms = {});
  response handle(const request& r);

 private:
  std::string dir_;
  std::function<int64_t()> now_ms_;
};

}  // namespace dosql::lakehouse::rest
