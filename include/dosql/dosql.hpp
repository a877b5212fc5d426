// dosql's public API, all of it: `#include <dosql/dosql.hpp>`.
//
// dosql is an embedded SQL database (SQLite underneath) whose every committed change is
// captured in its own durable, LSN-ordered write-ahead log and streamed to consumers.
//   <dosql/database.hpp>   runtime, database, transactions, queries, snapshots, options
//   <dosql/value.hpp>      values and rows; codec::decode_row for raw row images
//   <dosql/entry.hpp>      the change stream's raw entry (the guide's WALEntry), LSN helpers
//   <dosql/error.hpp>      error codes (the guide's CDCErrorCode), error, result<T>
//   <dosql/filter.hpp>     filters: tables, operations, txn ids, column masks, SQL row filters
//   <dosql/cdc.hpp>        subscriptions: iterators, typed events, JSON, the WAL capturer
//   <dosql/stream.hpp>     callback streams and consumer actors (backpressure, pause/resume)
//   <dosql/slots.hpp>      durable replication slots
//   <dosql/reliability.hpp> retry, dead-letter queue, exactly-once sink, rate limiter
// Invariants every header keeps: no internal (wal::, actors::) types, no spdlog or msgpack;
// only committed transactions reach a subscriber unless it asks for uncommitted ones.
#pragma once

#include <dosql/cdc.hpp>
#include <dosql/config.hpp>
#include <dosql/database.hpp>
#include <dosql/entry.hpp>
#include <dosql/error.hpp>
#include <dosql/filter.hpp>
#include <dosql/json.hpp>
#include <dosql/reliability.hpp>
#include <dosql/slots.hpp>
#include <dosql/stream.hpp>
#include <dosql/subscribe_options.hpp>
#include <dosql/value.hpp>
