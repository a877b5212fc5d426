// dosql::lakehouse::streamer (include/dosql/lakehouse/streamer.hpp) on a real database.
//  - Against the REAL receiver (dosql::lakehouse::receiver, in this process): batches land,
//    start after the receiver's watermark, reconnect after the receiver restarts, the slot is
//    acknowledged only up to the watermark the receiver confirmed.
//  - Against a SCRIPTED WebSocket server (below) for what the real receiver cannot be made to
//    do on demand: a nack of a given batch (the retry must reuse its sequence number), and chosen
//    buffer utilisations (the backpressure signals pause / slow_down / resume). It also checks
//    the exact shape of the frames the streamer sends.
// Every read of the scripted server has a real deadline (async operations + run_for); nothing
// asserts on time.
#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include <dosql/database.hpp>
#include <dosql/lakehouse/receiver.hpp>
#include <dosql/lakehouse/streamer.hpp>
#include <dosql/slots.hpp>

#include "common/scratch.hpp"

using namespace dosql;
using json = nlohmann::json;
using test::must;
namespace lh = dosql::lakehouse;

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

// A scripted WebSocket server on 127.0.0.1: the test accepts connections and reads / writes
// frames one at a time, each bounded by a deadline.
class scripted_server {
 public:
  scripted_server() : acc_(ioc_, tcp::endpoint(net::ip::address_v4::loopback(), 0)) {}
  uint16_t port() const { return acc_.local_endpoint().port(); }
  std::string url() const { return "ws://127.0.0.1:" + std::to_string(port()); }

  /// Accepts the next connection and its upgrade; false on timeout.
  bool accept(std::chrono::milliseconds t = std::chrono::seconds(20)) {
    ws_.reset();
    tcp::socket s(ioc_);
    bool ok = false;
    acc_.async_accept(s, [&](beast::error_code ec) { ok = !ec; });
    if (!run(t, ok)) {
      acc_.cancel();
      drain();
      return false;
    }
    ws_ = std::make_unique<websocket::stream<beast::tcp_stream>>(std::move(s));
    bool up = false;
    ws_->async_accept([&](beast::error_code ec) { up = !ec; });
    return run(t, up);
  }

  /// The next frame as JSON; nullopt on timeout or a closed connection.
  std::optional<json> recv(std::chrono::milliseconds t = std::chrono::seconds(20)) {
    if (!ws_) return std::nullopt;
    beast::flat_buffer b;
    bool ok = false, done = false;
    ws_->async_read(b, [&](beast::error_code ec, size_t) {
      ok = !ec;
      done = true;
    });
    if (!run(t, done)) {
      beast::get_lowest_layer(*ws_).close();
      drain();
      return std::nullopt;
    }
    if (!ok) return std::nullopt;
    return json::parse(beast::buffers_to_string(b.data()));
  }
  /// The next frame of `type` (heartbeats in between are answered with `hb_util`).
  std::optional<json> recv_type(const std::string& type, double hb_util = 0.1) {
    for (int i = 0; i < 200; ++i) {
      auto m = recv();
      if (!m) return std::nullopt;
      if ((*m)["type"] == type) return m;
      if ((*m)["type"] == "heartbeat")
        send({{"type", "heartbeat_ack"}, {"sourceId", (*m)["sourceId"]}, {"watermark", watermark},
              {"bufferUtilization", hb_util}, {"suggestedDelayMs", 0}});
    }
    return std::nullopt;
  }
  void send(const json& j) {
    if (!ws_) return;
    bool done = false;
    std::string text = j.dump();
    ws_->text(true);
    ws_->async_write(net::buffer(text), [&](beast::error_code, size_t) { done = true; });
    run(std::chrono::seconds(10), done);
  }
  void close() {
    if (!ws_) return;
    beast::get_lowest_layer(*ws_).close();
    drain();
    ws_.reset();
  }
  void welcome(const std::string& source, uint64_t wm, uint64_t next_seq) {
    watermark = wm;
    send({{"type", "welcome"}, {"protocol", 1}, {"sourceId", source}, {"watermark", wm}, {"nextSequence", next_seq},
          {"maxFrameBytes", 16 << 20}});
  }
  void ack(const json& batch, double util = 0.1, uint64_t delay = 0) {
    watermark = batch["lastLsn"].get<uint64_t>();
    send({{"type", "ack"}, {"batchId", batch["batchId"]}, {"sequenceNumber", batch["sequenceNumber"]},
          {"lastLsn", batch["lastLsn"]}, {"duplicate", false}, {"watermark", watermark},
          {"bufferUtilization", util}, {"suggestedDelayMs", delay}});
  }
  uint64_t watermark = 0;

 private:
  bool run(std::chrono::milliseconds t, const bool& flag) {
    ioc_.restart();
    auto until = std::chrono::steady_clock::now() + t;
    while (!flag && std::chrono::steady_clock::now() < until) ioc_.run_one_for(std::chrono::milliseconds(50));
    return flag;
  }
  void drain() {
    ioc_.restart();
    ioc_.run_for(std::chrono::milliseconds(200));
  }
  net::io_context ioc_;
  tcp::acceptor acc_;
  std::unique_ptr<websocket::stream<beast::tcp_stream>> ws_;
};

struct source_db {
  test::temp_dir dir;
  runtime rt;
  std::shared_ptr<database> db;
  source_db() {
    db = must(rt.open(dir / "src"));
    must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, r REAL, b BLOB)"));
  }
  ~source_db() { (void)db->close(); }
  void write(int from, int n) {
    for (int i = from; i < from + n; ++i)
      must(db->exec("INSERT INTO t VALUES(?, ?, ?, ?)",
                    {value(int64_t{i}), value(std::string("ü-") + std::to_string(i)), value(i * 0.5), value(nullptr)}));
  }
};

lh::streamer_config config(const std::string& url, const std::string& source = "src") {
  lh::streamer_config c;
  c.url = url;
  c.source_id = source;
  c.max_batch_size = 4;
  c.max_batch_age = std::chrono::milliseconds(20);
  c.retry.initial_delay_ms = 10;
  c.retry.max_delay_ms = 100;
  c.heartbeat_interval = std::chrono::milliseconds(100);
  c.io_timeout = std::chrono::seconds(5);
  return c;
}

std::unique_ptr<lh::receiver> start_receiver(const std::string& dir, uint16_t port = 0) {
  lh::receiver_options o;
  o.dir = dir;
  o.port = port;
  o.flush_ms = 20;
  for (int i = 0; i < 100; ++i) {  // the port may take a moment to be free again
    auto r = lh::receiver::start(o);
    if (r) return std::move(*r);
    if (port == 0) FAIL(r.err().to_string());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL("receiver did not start on port " << port);
  return nullptr;
}

// Waits (bounded) until the streamer's confirmed watermark reaches `lsn`.
bool wait_acked(lh::streamer& s, uint64_t lsn, std::chrono::seconds t = std::chrono::seconds(60)) {
  auto until = std::chrono::steady_clock::now() + t;
  while (std::chrono::steady_clock::now() < until) {
    if (s.checkpoint().committed_lsn >= lsn) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// The LSN of the last row change in the database.
uint64_t last_change_lsn(database& db) {
  cdc::subscribe_options so;
  so.stop_at_tail = true;
  so.filter.operations = {op_type::insert, op_type::update, op_type::del};
  auto sub = must(cdc::create_cdc(db.shared_from_this()).subscribe(so));
  uint64_t last = 0;
  for (auto& e : *sub) last = e.lsn;
  return last;
}

}  // namespace

TEST_CASE("streamer: batches in the CDCBatch shape, sequence numbers, a nack retried with the same sequence",
          "[streamer]") {
  source_db s;
  s.write(1, 6);
  scripted_server srv;
  auto st = must(lh::streamer::create(s.db, config(srv.url())));
  error connected;
  std::thread client([&] { connected = st->connect(); });
  REQUIRE(srv.accept());
  auto hello = srv.recv();
  REQUIRE(hello);
  CHECK((*hello)["type"] == "hello");
  CHECK((*hello)["protocol"] == 1);
  CHECK((*hello)["sourceId"] == "src");
  CHECK((*hello)["shardName"] == "src");
  srv.welcome("src", 0, 1);
  client.join();
  REQUIRE_FALSE(connected);
  REQUIRE_FALSE(st->start(0));

  auto b1 = srv.recv_type("batch");
  REQUIRE(b1);
  CHECK((*b1)["batchId"] == "src:1");
  CHECK((*b1)["sourceId"] == "src");
  CHECK((*b1)["sequenceNumber"] == 1);
  CHECK((*b1)["previousLsn"] == 0);
  CHECK((*b1)["isRetry"] == false);
  CHECK((*b1)["retryCount"] == 0);
  CHECK((*b1)["createdAt"].get<int64_t>() > 0);
  CHECK((*b1)["sizeBytes"].get<uint64_t>() > 0);
  auto& ev = (*b1)["events"];
  REQUIRE(ev.size() == 4);  // max_batch_size
  // The CREATE TABLE first (schema changes travel with the rows, in LSN order), with the columns.
  CHECK(ev[0]["type"] == "schema_change");
  CHECK(ev[0]["changeType"] == "create_table");
  CHECK(ev[0]["table"] == "t");
  CHECK(ev[0]["columns"].size() == 4);
  CHECK(ev[1]["type"] == "insert");
  CHECK(ev[1]["table"] == "t");
  CHECK(ev[1]["data"]["v"] == "ü-1");
  CHECK(ev[0]["lsn"] < ev[1]["lsn"]);
  CHECK((*b1)["firstLsn"] == ev[0]["lsn"]);
  CHECK((*b1)["lastLsn"] == ev[3]["lsn"]);
  // `schemas`: the columns before the table's first event in the batch (its CREATE: none); the
  // CREATE's event carries the columns after it, with the key position.
  CHECK((*b1)["schemas"]["t"] == json::array());
  CHECK(ev[0]["columns"] == json::array({{{"name", "id"}, {"type", "INTEGER"}, {"pk", 1}},
                                         {{"name", "v"}, {"type", "TEXT"}},
                                         {{"name", "r"}, {"type", "REAL"}},
                                         {{"name", "b"}, {"type", "BLOB"}}}));
  srv.ack(*b1);

  auto b2 = srv.recv_type("batch");
  REQUIRE(b2);
  CHECK((*b2)["sequenceNumber"] == 2);
  CHECK((*b2)["previousLsn"] == (*b1)["lastLsn"]);
  // A retryable nack: the streamer reconnects and sends the same batch again as a retry.
  srv.send({{"type", "nack"}, {"batchId", (*b2)["batchId"]}, {"sequenceNumber", 2}, {"retryable", true},
            {"reason", "scripted refusal"}, {"bufferUtilization", 0.2}, {"suggestedDelayMs", 0}});
  srv.close();
  REQUIRE(srv.accept());
  REQUIRE(srv.recv_type("hello"));
  srv.welcome("src", (*b1)["lastLsn"].get<uint64_t>(), 2);
  auto again = srv.recv_type("batch");
  REQUIRE(again);
  CHECK((*again)["batchId"] == (*b2)["batchId"]);
  CHECK((*again)["sequenceNumber"] == 2);
  CHECK((*again)["previousLsn"] == (*b2)["previousLsn"]);
  CHECK((*again)["firstLsn"] == (*b2)["firstLsn"]);
  CHECK((*again)["lastLsn"] == (*b2)["lastLsn"]);
  CHECK((*again)["events"] == (*b2)["events"]);
  CHECK((*again)["isRetry"] == true);
  CHECK((*again)["retryCount"] == 1);
  srv.ack(*again);
  REQUIRE(wait_acked(*st, (*b2)["lastLsn"].get<uint64_t>()));
  auto status = st->status();
  CHECK(status.total_batches_sent == 2);
  CHECK(status.total_entries_sent == 7);  // the CREATE TABLE and 6 inserts
  CHECK(status.retries >= 1);
  CHECK(status.pending_batches == 0);
  CHECK(st->checkpoint().pending_batch_ids.empty());
  st->stop();
}

TEST_CASE("streamer: acks' buffer utilisation becomes pause / slow_down / resume on on_backpressure", "[streamer]") {
  source_db s;
  s.write(1, 12);
  scripted_server srv;
  auto cfg = config(srv.url());
  cfg.max_in_flight = 1;  // one batch at a time: each ack's utilisation applies before the next
  cfg.heartbeat_interval = std::chrono::seconds(600);  // heartbeats only while paused (every 200 ms)
  auto st = must(lh::streamer::create(s.db, cfg));
  std::mutex mu;
  std::vector<std::string> signals;
  st->on_backpressure([&](const lh::backpressure_signal& b) {
    std::lock_guard<std::mutex> g(mu);
    signals.push_back(std::string(lh::to_string(b.type)));
  });
  error connected;
  std::thread client([&] { connected = st->connect(); });
  REQUIRE(srv.accept());
  REQUIRE(srv.recv_type("hello"));
  srv.welcome("src", 0, 1);
  client.join();
  REQUIRE_FALSE(connected);
  REQUIRE_FALSE(st->start(0));
  auto b1 = srv.recv_type("batch");
  REQUIRE(b1);
  srv.ack(*b1, 0.9, 30);  // slow_down
  auto b2 = srv.recv_type("batch");
  REQUIRE(b2);
  srv.ack(*b2, 1.0, 50);  // pause: nothing new is sent, only heartbeats
  // Paused: the next frames are heartbeats, answered as still full, then as drained (resume).
  for (int i = 0; i < 3; ++i) {
    auto m = srv.recv();
    REQUIRE(m);
    CHECK((*m)["type"] == "heartbeat");
    srv.send({{"type", "heartbeat_ack"}, {"sourceId", "src"}, {"watermark", srv.watermark}, {"bufferUtilization", 1.0},
              {"suggestedDelayMs", 50}});
  }
  CHECK(st->status().state == lh::streamer_state::paused);
  auto m = srv.recv_type("heartbeat");
  REQUIRE(m);
  srv.send({{"type", "heartbeat_ack"}, {"sourceId", "src"}, {"watermark", srv.watermark}, {"bufferUtilization", 0.1},
            {"suggestedDelayMs", 0}});
  auto b3 = srv.recv_type("batch");  // resumed
  REQUIRE(b3);
  CHECK((*b3)["sequenceNumber"] == 3);
  srv.ack(*b3);
  st->stop();
  std::lock_guard<std::mutex> g(mu);
  CHECK(signals == std::vector<std::string>{"slow_down", "pause", "resume"});
}

TEST_CASE("streamer -> receiver: lands, starts after the watermark, survives a receiver restart, acks the slot only "
          "up to the watermark",
          "[streamer][receiver]") {
  source_db s;
  test::temp_dir lake;
  auto slots = cdc::create_slot_manager(s.db, [] {
    cdc::slot_config c;
    c.check_interval = std::chrono::milliseconds(0);
    return c;
  }());
  cdc::create_slot_options so;
  so.start_lsn = 0;
  must(slots->create_slot("lake", so));
  s.write(1, 10);
  auto recv = start_receiver(lake.path());
  const uint16_t port = recv->port();
  auto cfg = config("ws://127.0.0.1:" + std::to_string(port));
  cfg.slot_name = "lake";
  {
    auto st = must(lh::streamer::create(s.db, cfg));
    REQUIRE_FALSE(st->connect());
    CHECK(st->checkpoint().committed_lsn == 0);
    REQUIRE_FALSE(st->start(0));
    uint64_t l1 = last_change_lsn(*s.db);
    REQUIRE(wait_acked(*st, l1));
    // The slot never goes past what the receiver confirmed.
    CHECK(must(slots->get_slot("lake")).acked_lsn <= st->checkpoint().committed_lsn);
    // The receiver goes away and comes back: the streamer reconnects and goes on.
    REQUIRE_FALSE(recv->stop());
    recv.reset();
    s.write(100, 10);
    recv = start_receiver(lake.path(), port);
    uint64_t l2 = last_change_lsn(*s.db);
    REQUIRE(wait_acked(*st, l2));
    auto status = st->status();
    CHECK(status.reconnects >= 1);
    CHECK(status.total_entries_sent == 21);  // the CREATE TABLE and 20 inserts
    st->stop();
    CHECK(must(slots->get_slot("lake")).acked_lsn <= l2);
  }
  // A new streamer from 0 starts after the receiver's watermark: it sends nothing again.
  {
    auto st = must(lh::streamer::create(s.db, config("ws://127.0.0.1:" + std::to_string(port))));
    REQUIRE_FALSE(st->connect());
    CHECK(st->checkpoint().committed_lsn == last_change_lsn(*s.db));
    REQUIRE_FALSE(st->start(0, true));
    auto done = st->wait(std::chrono::seconds(60));
    REQUIRE(done);
    CHECK_FALSE(*done);
    CHECK(st->status().total_batches_sent == 0);
  }
  REQUIRE_FALSE(recv->stop());
}

TEST_CASE("streamer -> receiver over wss:// with a bearer token; a wrong token or an untrusted certificate fails "
          "with the reason",
          "[streamer][receiver][tls]") {
  source_db s;
  test::temp_dir lake;
  const std::string cert = lake / "cert.pem", key = lake / "key.pem";
  std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
                    "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout '" + key + "' -out '" + cert +
                    "' >/dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  lh::receiver_options o;
  o.dir = lake / "L";
  o.flush_ms = 20;
  o.token = "s3cret";
  o.cert_file = cert;
  o.key_file = key;
  auto recv = must(lh::receiver::start(o));
  REQUIRE(std::string(recv->scheme()) == "wss");
  s.write(1, 5);
  auto cfg = config("wss://127.0.0.1:" + std::to_string(recv->port()));
  cfg.retry.max_attempts = 1;
  cfg.ca_file = cert;
  {
    auto wrong = cfg;
    wrong.token = "nope";
    auto st = must(lh::streamer::create(s.db, wrong));
    auto e = st->connect();
    REQUIRE(e);
    INFO(e.to_string());
    CHECK(e.to_string().find("websocket upgrade") != std::string::npos);
  }
  {
    auto untrusted = cfg;
    untrusted.token = "s3cret";
    untrusted.ca_file.clear();  // the system's CAs do not know this certificate
    auto st = must(lh::streamer::create(s.db, untrusted));
    auto e = st->connect();
    REQUIRE(e);
    INFO(e.to_string());
    CHECK(e.to_string().find("tls handshake") != std::string::npos);
  }
  cfg.token = "s3cret";
  auto st = must(lh::streamer::create(s.db, cfg));
  REQUIRE_FALSE(st->connect());
  REQUIRE_FALSE(st->start(0, true));
  auto done = st->wait(std::chrono::seconds(60));
  REQUIRE(done);
  CHECK_FALSE(*done);
  CHECK(st->checkpoint().committed_lsn == last_change_lsn(*s.db));
  CHECK(st->status().total_entries_sent == 6);  // the CREATE TABLE and 5 inserts
  REQUIRE_FALSE(recv->stop());
}
