// Reliability helpers for change-stream consumers (the guide's "Retry with Exponential
// Backoff", "Dead Letter Queue", "Handling Backpressure Signals", "Adaptive Batch
// Processing" and "Rate Limiting Consumer", plus an exactly-once recipe), one header each:
//  - <dosql/reliability/retry.hpp>             `with_retry`, `retry_delay(s)`
//  - <dosql/reliability/dead_letter_queue.hpp> `dead_letter_queue` (a durable SQLite file)
//  - <dosql/reliability/rate_limiter.hpp>      `rate_limiter` (token bucket)
//  - <dosql/reliability/adaptive_batch.hpp>    `adaptive_batch_sizer`
//  - <dosql/reliability/exactly_once.hpp>      `offset_store`, `exactly_once`,
//                                              `exactly_once_sink` (SQLite)
// This umbrella includes them all; each header states its own invariants.
#pragma once

#include <dosql/reliability/adaptive_batch.hpp>
#include <dosql/reliability/dead_letter_queue.hpp>
#include <dosql/reliability/exactly_once.hpp>
#include <dosql/reliability/rate_limiter.hpp>
#include <dosql/reliability/retry.hpp>
