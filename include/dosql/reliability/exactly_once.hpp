// Exactly-once processing (the guide's exactly-once recipe): a consumer's output for an event
// and the event's LSN commit together, in the output's own commit, so after a crash the output
// holds exactly the events up to the stored LSN, and events redelivered after a restart
// (lsn <= the stored one) are skipped.
//  - `offset_store`: where a sink keeps its per-source position, committed in the same unit
//    as its output. Any store whose "transaction" is its own commit can implement it: a
//    SQLite transaction, an Iceberg snapshot that carries the LSN, a Redis MULTI/EXEC under
//    WATCH.
//  - `exactly_once`: the rule, written once over any offset_store.
//  - `exactly_once_sink`: the offset_store of a consumer writing to its own SQLite file
//    (table `_dosql_applied`).
//
// Invariants:
//  - The work for an LSN and the stored LSN commit together or not at all; `apply` runs the
//    work at most once per (source, lsn) ever committed, and never for an lsn <= the source's
//    last applied one. LSNs start at 1 (lsn 0 is rejected).
// Thread safety: exactly_once_sink may be used from any thread (it serialises its own
// state); exactly_once is as thread-safe as its store.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <dosql/error.hpp>

namespace dosql::reliability {

/// A sink's per-source position, kept in the sink's own commit.
class offset_store {
 public:
  /// What a unit's body decided.
  enum class unit_action {
    commit,  ///< record the unit's LSN and commit it with the body's effects
    skip,    ///< nothing to do: end the unit, changing nothing
  };
  /// A unit's body: called once with the source's last applied LSN as the unit reads it
  /// (0: none). An error (or an exception) ends the unit keeping nothing the body did.
  using unit_body = std::function<result<unit_action>(uint64_t last_applied)>;

  virtual ~offset_store() = default;

  /// The last LSN committed for `source`; 0 if none.
  virtual result<uint64_t> last_applied(const std::string& source) const = 0;

  /// Runs one atomic unit for `source`: reads the source's last applied LSN inside the
  /// unit, calls `body` with it, and on `commit` records `lsn` as the source's position and
  /// makes the body's effects and the position durable together, returning the commit's
  /// error if that fails (then neither is kept). On `skip`, an error or an exception from
  /// `body`, nothing the body did and no position is kept (the error or exception is passed
  /// on). No other unit for `source` may commit between this unit's read and its commit: an
  /// implementation holds a lock across the unit, or fails the commit when the position
  /// changed since its read (an optimistic store).
  virtual error commit(const std::string& source, uint64_t lsn, const unit_body& body) = 0;

 protected:
  offset_store() = default;
  offset_store(const offset_store&) = default;
  offset_store& operator=(const offset_store&) = default;
};

/// The exactly-once rule over any offset_store.
class exactly_once {
 public:
  /// `store` must outlive this object.
  explicit exactly_once(offset_store& store) noexcept : store_(&store) {}

  /// The last LSN applied for `source`; 0 if none.
  result<uint64_t> last_applied(const std::string& source) const { return store_->last_applied(source); }
  /// If lsn <= the source's last applied LSN (as read inside the store's unit): returns
  /// success without running `work`. Otherwise runs `work` in one unit of the store and
  /// records lsn with its effects; if `work` fails (or throws), or the store's commit fails,
  /// that error is returned (the exception passed on) and neither the work's effects nor the
  /// LSN are kept. lsn 0 is an invalid_argument error and runs nothing.
  error apply(const std::string& source, uint64_t lsn, const std::function<error()>& work);

 private:
  offset_store* store_;
};

/// Exactly-once effects for a consumer writing to its own SQLite database: the consumer's
/// writes for an event and the event's LSN (per source, table `_dosql_applied`) commit in
/// one transaction, so after a crash the output holds exactly the events up to
/// `last_applied(source)`; redelivered events (lsn <= last applied) are skipped.
class exactly_once_sink final : public offset_store {
 public:
  /// Opens (creating if missing) the consumer's database at `path` (WAL mode,
  /// synchronous=FULL) and creates `_dosql_applied(source TEXT PRIMARY KEY, lsn INTEGER)`.
  static result<std::unique_ptr<exactly_once_sink>> open(const std::string& path);
  ~exactly_once_sink() override;
  exactly_once_sink(const exactly_once_sink&) = delete;
  exactly_once_sink& operator=(const exactly_once_sink&) = delete;

  /// The last LSN applied for `source`; 0 if none.
  result<uint64_t> last_applied(const std::string& source) const override;
  /// exactly_once's rule (see there) with the work run on db(): in one BEGIN IMMEDIATE
  /// transaction, runs `work(db())` and records lsn for source; if `work` fails (or throws)
  /// nothing it wrote is kept and the LSN is not recorded. `work` must not end the
  /// transaction itself (SAVEPOINTs are fine) nor call back into this sink (its lock is
  /// held). lsn must be > 0.
  error apply(const std::string& source, uint64_t lsn, const std::function<error(sqlite3*)>& work);
  /// The offset_store unit: one BEGIN IMMEDIATE transaction on db() (the sink's lock held
  /// throughout); the body's writes go through db(). An error if called inside an open
  /// transaction, or if the body ended the transaction itself.
  error commit(const std::string& source, uint64_t lsn, const unit_body& body) override;
  /// The connection, for the consumer's queries (and its schema set-up). Do not use it
  /// from another thread while `apply` runs.
  sqlite3* db() const noexcept { return db_; }
  const std::string& path() const noexcept { return path_; }

 private:
  exactly_once_sink(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}

  mutable std::mutex mu_;
  sqlite3* db_;
  std::string path_;
};

}  // namespace dosql::reliability
