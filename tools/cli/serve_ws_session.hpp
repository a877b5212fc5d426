// `dosql serve` on Boost.Beast, part 2 of 3: the WebSocket session, one subscription on its own
// cdc::cursor, with the byte-bounded outgoing queue, the ack window and the pause/release of the
// cursor (the invariants are in serve_server.hpp's header).
#pragma once

#include "tools/cli/serve_server.hpp"

namespace dosql::cli::serve {

// ---- the WebSocket session: one subscription ---------------------------------------------

template <class Stream>
class ws_session : public std::enable_shared_from_this<ws_session<Stream>>, public closable {
 public:
  /// REQUIRES: the stream was counted (registry::try_add_stream); this session uncounts it.
  ws_session(server& srv, Stream&& stream, const token_scope& scope)
      : srv_(srv), scope_(scope), ws_(std::move(stream)), ex_(ws_.get_executor()), poll_(ex_) {
    ++srv_.reg.connections;
  }
  ~ws_session() override {
    --srv_.reg.connections;
    --srv_.reg.streams;
    if (stats_) srv_.reg.remove_subscription(stats_->id);
  }

  void run(request req) {
    srv_.track(this->shared_from_this());
    beast::get_lowest_layer(ws_).expires_never();  // the WebSocket's own timeouts from here on
    auto t = websocket::stream_base::timeout::suggested(beast::role_type::server);  // pings when idle
    t.idle_timeout = std::chrono::seconds(srv_.o.idle_timeout_s);
    ws_.set_option(t);
    ws_.read_message_max(srv_.o.max_message_bytes);  // larger: Beast closes with 1009
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "dosql"); }));
    ws_.async_accept(req, beast::bind_front_handler(&ws_session::on_accept, this->shared_from_this()));
  }

  void shutdown() override {
    net::post(ex_, [self = this->shared_from_this()] {
      if (!self->accepted_) return beast::get_lowest_layer(self->ws_).close();
      self->close_now(websocket::close_code::going_away, "server shutting down");
    });
  }

 private:
  struct frame {
    std::string text;
    uint64_t lsn = 0;
    bool event = false;  // a change or transaction event (counted, windowed), not a control message
  };

  void on_accept(beast::error_code ec) {
    if (ec) return;
    accepted_ = true;
    do_read();
  }

  void do_read() {
    ws_.async_read(in_, beast::bind_front_handler(&ws_session::on_read, this->shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t) {
    if (ec) {  // closed by either side, too big (Beast sent 1009), or the connection broke
      finished_ = true;
      poll_.cancel();
      return;
    }
    if (!closing_) on_message();
    in_.consume(in_.size());
    do_read();  // until the close handshake ends
  }

  void on_message() {
    if (!ws_.got_text()) return close_now(websocket::close_code::unknown_data, "binary frames are not accepted");
    if (close_after_drain_) return;  // the error message is on its way, then the close
    auto m = parse_client_message(beast::buffers_to_string(in_.data()));
    if (!m) return close_now(websocket::close_code::protocol_error, m.err().message());
    if (m->type == client_message::kind::subscribe) {
      if (cursor_) return close_now(websocket::close_code::protocol_error, "already subscribed");
      return subscribe(m->subscribe);
    }
    if (!cursor_) return close_now(websocket::close_code::protocol_error, "ack before subscribe");
    if (m->ack_lsn > sent_lsn_)  // acknowledging what it never received would open the window
      return close_now(websocket::close_code::policy_error,
                       "ack for lsn " + std::to_string(m->ack_lsn) + ", which was not sent (the last event sent is lsn " +
                           std::to_string(sent_lsn_) + ")");
    while (!inflight_.empty() && inflight_.front() <= m->ack_lsn) inflight_.pop_front();
    do_write();
  }

  // The token's scope applied to a request: no tables asked means every table the token may read.
  result<subscribe_request> scoped(subscribe_request r) const {
    if (!scope_.tables) return r;
    if (scope_.tables->empty()) return error(ec::invalid_argument, "this token may read no table");
    if (r.tables.empty()) {
      r.tables = *scope_.tables;
      return r;
    }
    for (auto& t : r.tables)
      if (!scope_.may_read(t)) {
        std::string allowed;
        for (auto& a : *scope_.tables) allowed += (allowed.empty() ? "" : ", ") + a;
        return error(ec::invalid_argument, "table \"" + t + "\" is outside this token's scope (tables: " + allowed + ")");
      }
    return r;
  }

  void subscribe(const subscribe_request& asked) {
    auto sr = scoped(asked);
    if (!sr) {
      enqueue({error_message("FORBIDDEN", sr.err().message()), 0, false});
      close_after_drain_.emplace(websocket::close_code::policy_error, sr.err().message());
      return do_write();
    }
    const subscribe_request& r = *sr;
    auto now = scan_wal(srv_.wal_dir);
    if (!now) return close_with_error(now.err());
    uint64_t from = r.from_lsn;
    if (r.from_oldest) {
      from = now->oldest_lsn ? now->oldest_lsn - 1 : 0;
    } else if (auto err = check_lsn_not_beyond(from, std::min(cdc::durable_limit(srv_.wal_dir), now->last_lsn),
                                               "from_lsn")) {  // an LSN that does not exist yet: an error
      return close_with_error(err);
    }
    if (!r.where.empty()) {  // checked now against the tables, never at the first event
      cdc::filter_spec spec;
      spec.where = r.where;
      auto compiled = cdc::compile_where(spec, [&](const std::string& t) { return sqlite_columns(srv_.o.dir, t); });
      if (!compiled) return close_with_error(error(compiled.err().code(), "where: " + compiled.err().message()));
    }
    auto co = change_cursor_options(from, r.include_transactions, r.tables, r.operations, r.format, r.where);
    co.columns = scope_.columns;
    co.reader_buffer_bytes = reader_buffer_bytes;
    co.step = pump_budget;
    auto c = cdc::cursor::open(srv_.wal_dir, std::move(co));  // LSN_NOT_FOUND if compacted away
    if (!c) return close_with_error(c.err());
    cursor_ = std::move(*c);
    limit_ = cdc::durable_limit(srv_.wal_dir);  // only what the owner made durable
    cursor_->set_limit(limit_);
    renderer_.emplace(r.format, r.include_transactions, json_options{.lossless_text = r.lossless_text});
    window_ = r.window;
    stats_ = srv_.reg.add_subscription(cdc::slot_filter{r.tables, r.operations, {}, {}, r.where});
    stats_->position = from;
    auto st = scan_wal(srv_.wal_dir);
    enqueue({subscribed_message(stats_->id, r, st ? st->last_lsn : 0), 0, false});
    pump();
  }

  // What a queued frame holds in memory: its string's allocation, not only its text (a rendered
  // event's capacity can be nearly twice its length), so the queue bound bounds the memory.
  static size_t cost(const frame& f) { return f.text.capacity() + frame_overhead; }

  void enqueue(frame f) {
    queued_bytes_ += cost(f);
    if (stats_) {
      if (f.event) ++stats_->queued;
      stats_->queued_bytes = queued_bytes_;
    }
    out_.push_back(std::move(f));
  }

  // Reads the WAL into the queue until the tail (then polls), a full queue (resumed by on_write)
  // or the turn's budget (then yields).
  void pump() {
    // (a timer that had already fired, or a post, may still run after a close)
    if (closing_ || finished_ || close_after_drain_ || !cursor_ || failed_) return;
    entry_view e;
    for (size_t n = 0; n < pump_budget; ++n) {
      if (queued_bytes_ >= srv_.o.max_queue_bytes) {
        paused_ = true;
        cursor_->release();  // the readers' buffers and files, until the queue drains
        return do_write();
      }
      auto st = cursor_->next(e);
      if (st == cdc::cursor::status::more) break;  // bounded work: yield to other connections
      if (st == cdc::cursor::status::tail) {
        if (uint64_t lim = cdc::durable_limit(srv_.wal_dir); lim != limit_) {  // the owner synced more
          cursor_->set_limit(limit_ = lim);
          continue;
        }
        do_write();
        settle();
        poll_.expires_after(std::chrono::milliseconds(srv_.o.poll_ms));
        poll_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
          if (!ec) self->pump();
        });
        return;
      }
      if (st == cdc::cursor::status::error) return close_with_error(cursor_->last_error());
      auto line = renderer_->render(e);
      if (!line) return close_with_error(line.err());
      if (!line->empty()) enqueue({std::move(*line), e.lsn, true});
    }
    do_write();
    net::post(ex_, [self = this->shared_from_this()] { self->pump(); });
  }

  // With nothing left to write, the position is where the cursor has settled.
  void settle() {
    if (out_.empty() && !writing_ && stats_)
      stats_->position = std::max(stats_->position.load(), cursor_->settled_lsn());
  }

  void do_write() {
    if (writing_) return;
    if (out_.empty()) {
      if (close_after_drain_) close_now(close_after_drain_->first, close_after_drain_->second);
      return;
    }
    if (closing_) return;
    auto& f = out_.front();
    if (f.event && window_ && inflight_.size() >= window_) return;  // an ack resumes
    writing_ = true;
    // The client may read this event and ack it before on_write runs: it is sent, and in flight,
    // from here (counting it in on_write lost such an ack and left the window full for good).
    if (f.event) {
      sent_lsn_ = std::max(sent_lsn_, f.lsn);
      if (window_) inflight_.push_back(f.lsn);
    }
    ws_.text(true);
    ws_.async_write(net::buffer(f.text), beast::bind_front_handler(&ws_session::on_write, this->shared_from_this()));
  }

  void on_write(beast::error_code ec, size_t) {
    writing_ = false;
    if (ec) {
      finished_ = true;
      poll_.cancel();
      return;
    }
    frame f = std::move(out_.front());
    out_.pop_front();
    queued_bytes_ -= cost(f);
    if (stats_) stats_->queued_bytes = queued_bytes_;
    if (f.event) {
      --stats_->queued;
      ++stats_->delivered;
      stats_->position = std::max(stats_->position.load(), f.lsn);
    }
    settle();
    if (paused_ && queued_bytes_ <= srv_.o.max_queue_bytes / 2) {
      paused_ = false;
      pump();
    }
    do_write();
  }

  // A server-side failure (LSN_NOT_FOUND, corruption, I/O): the error message, then close.
  void close_with_error(const error& err) {
    drop_unsent();
    enqueue({error_message(err), 0, false});
    // The client asked for something that does not exist or is not valid (a position, a row
    // filter): 1008 and 1002 as for other refused requests; anything else is the server's.
    auto code = err.code() == ec::lsn_not_found      ? websocket::close_code::policy_error
                : err.code() == ec::invalid_argument ? websocket::close_code::protocol_error
                                                     : websocket::close_code::internal_error;
    close_after_drain_.emplace(code, err.to_string());
    poll_.cancel();
    paused_ = false;
    failed_ = true;
    if (cursor_) cursor_->release();
    do_write();
  }

  // Closes at once (unsent events are dropped); the read loop runs until the handshake ends.
  void close_now(websocket::close_code code, std::string reason) {
    if (closing_ || finished_) return;
    closing_ = true;
    poll_.cancel();
    drop_unsent();
    ws_.async_close(websocket::close_reason(code, close_reason_text(std::move(reason))),
                    [self = this->shared_from_this()](beast::error_code) { self->finished_ = true; });
  }

  void drop_unsent() {
    size_t keep = writing_ ? 1 : 0;  // the frame being written stays until its handler runs
    while (out_.size() > keep) {
      if (out_.back().event) --stats_->queued;
      queued_bytes_ -= cost(out_.back());
      out_.pop_back();
    }
    if (stats_) stats_->queued_bytes = queued_bytes_;
  }

  server& srv_;
  const token_scope& scope_;
  websocket::stream<Stream> ws_;
  net::any_io_executor ex_;  // the connection's strand
  net::steady_timer poll_;
  beast::flat_buffer in_;
  std::deque<frame> out_;
  size_t queued_bytes_ = 0;
  std::deque<uint64_t> inflight_;  // LSNs of events handed to the WebSocket and not acknowledged (with a window)
  uint32_t window_ = 0;
  uint64_t sent_lsn_ = 0;  // the highest LSN of an event handed to the WebSocket (acks may not exceed it)
  std::unique_ptr<cdc::cursor> cursor_;  // its readers released while paused
  uint64_t limit_ = UINT64_MAX;  // the cursor's limit: the owner's published durable LSN
  std::optional<event_renderer> renderer_;
  std::shared_ptr<subscription_stats> stats_;
  std::optional<std::pair<websocket::close_code, std::string>> close_after_drain_;
  bool accepted_ = false, writing_ = false, paused_ = false, closing_ = false, finished_ = false;
  bool failed_ = false;  // closed with an error: the cursor reads no more
};

}  // namespace dosql::cli::serve

