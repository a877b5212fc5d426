// The subscription reader under CAF 0.17's deterministic test coordinator (no threads, no
// sleeps): every message is processed by sched.run() on the test's thread, so each CHECK sees
// the state after everything that could happen has happened. A crafted WAL, a stand-in for the
// WAL writer (the test sends the tail notifications itself) and a test consumer that acknowledges
// only when told.
//   - the credit window: never more than max_buffer_size entries unacknowledged, and every ack
//     returns exactly its batch's credit;
//   - tail notifications: a (tail_atom, N) lets it deliver exactly the committed entries <= N;
//   - pause/resume: paused, it sends no batch (acks still count); resumed, it goes on;
//   - consumer death or failure: SUBSCRIPTION_FAILED naming the first unacknowledged LSN, and
//     the reader quits.
#include <catch2/catch.hpp>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include <deque>
#include <memory>
#include <optional>

#include "actors/errors.hpp"
#include "actors/protocol.hpp"
#include "actors/subscription_reader.hpp"
#include "test_util.hpp"

using namespace dosql;
namespace da = dosql::actors;

namespace {

using t_ack_atom = caf::atom_constant<caf::atom("t_ack")>;
using t_fail_atom = caf::atom_constant<caf::atom("t_fail")>;

// The test consumer: the consumer interface plus (t_ack_atom, n): acknowledge the n oldest
// unacknowledged batches, and (t_fail_atom): answer the next batch with an error.
using test_consumer_actor =
    da::consumer_actor::extend<caf::reacts_to<t_ack_atom, uint32_t>, caf::reacts_to<t_fail_atom>>;

struct probe {
  struct pending {
    caf::typed_response_promise<uint64_t> rp;
    uint64_t first = 0, last = 0;
    uint32_t count = 0;
  };
  std::deque<pending> unacked;
  uint64_t unacked_entries = 0, max_unacked = 0;
  std::vector<uint64_t> lsns;       // every delivered LSN, in order
  std::vector<uint32_t> batch_sizes;
  std::optional<da::subscription_end> end;
  bool fail_next = false;
  bool decode_ok = true;
};

test_consumer_actor::behavior_type test_consumer(test_consumer_actor::pointer self, std::shared_ptr<probe> p) {
  return {
      [=](da::batch_atom, const da::batch& b) -> caf::result<uint64_t> {
        std::vector<entry_view> views;
        if (da::decode_batch(b, views)) p->decode_ok = false;
        for (auto& v : views) p->lsns.push_back(v.lsn);
        p->batch_sizes.push_back(b.count);
        if (p->fail_next) return da::to_caf(error(ec::io_error, "the test consumer refuses"));
        auto rp = self->make_response_promise<uint64_t>();
        p->unacked.push_back({rp, b.first_lsn, b.last_lsn, b.count});
        p->unacked_entries += b.count;
        p->max_unacked = std::max(p->max_unacked, p->unacked_entries);
        return rp;
      },
      [=](da::end_atom, const da::subscription_end& e) {
        p->end = e;
        self->quit();
      },
      [=](da::heartbeat_atom, uint64_t) {},
      [=](da::watch_atom, const da::reader_control_actor& r) { self->monitor(r); },
      [=](t_ack_atom, uint32_t n) {
        for (uint32_t i = 0; i < n && !p->unacked.empty(); ++i) {
          auto x = p->unacked.front();
          p->unacked.pop_front();
          p->unacked_entries -= x.count;
          x.rp.deliver(x.last);
        }
      },
      [=](t_fail_atom) { p->fail_next = true; },
  };
}

// Stands in for the WAL writer: records who listens; the test sends the tail itself.
da::wal_tail_source_actor::behavior_type fake_writer(da::wal_tail_source_actor::pointer,
                                                      std::shared_ptr<std::vector<da::wal_listener_actor>> listeners) {
  return {[=](da::listen_atom, const da::wal_listener_actor& l) { listeners->push_back(l); }};
}

struct test_config : caf::actor_system_config {
  test_config() {
    set("scheduler.policy", caf::atom("testing"));
    da::register_protocol(*this);
  }
};

constexpr uint64_t txn_len = 12;  // BEGIN, 10 inserts, COMMIT

struct reader_fixture {
  test::temp_dir dir;
  test_config cfg;
  caf::actor_system sys{cfg};
  caf::scheduler::test_coordinator& sched = dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  std::shared_ptr<std::vector<da::wal_listener_actor>> listeners = std::make_shared<std::vector<da::wal_listener_actor>>();
  da::wal_tail_source_actor writer = sys.spawn(fake_writer, listeners);
  std::shared_ptr<probe> p = std::make_shared<probe>();
  test_consumer_actor consumer = sys.spawn(test_consumer, p);
  da::subscription_reader_actor reader;
  std::optional<error> finished;  // what on_finish heard
  bool reader_gone = false;

  // `txns` transactions of txn_len entries (LSNs 1..txns * txn_len); `rolled_back` lists the
  // (0-based) transactions that end in ROLLBACK instead.
  explicit reader_fixture(uint64_t txns, std::vector<uint64_t> rolled_back = {}) {
    auto log = test::open_log(dir / "wal");
    for (uint64_t t = 0; t < txns; ++t) {
      std::vector<wal_entry> es;
      auto add = [&](op_type op) {
        wal_entry e;
        e.op = op;
        e.txn_id = "txn_" + std::to_string(t);
        e.timestamp = 1000 + static_cast<int64_t>(t);
        if (is_row_change(op)) {
          e.table = "t";
          e.key = bytes{1, 2};
          e.after = bytes{3, 4, 5};
        }
        es.push_back(std::move(e));
      };
      add(op_type::begin);
      for (int i = 0; i < 10; ++i) add(op_type::insert);
      bool rb = std::find(rolled_back.begin(), rolled_back.end(), t) != rolled_back.end();
      add(rb ? op_type::rollback : op_type::commit);
      REQUIRE(log->append_batch(es));
    }
  }
  ~reader_fixture() {
    for (auto h : {caf::actor_cast<caf::actor>(reader), caf::actor_cast<caf::actor>(consumer),
                   caf::actor_cast<caf::actor>(writer)})
      if (h) caf::anon_send_exit(h, caf::exit_reason::user_shutdown);
    sched.run();
  }

  void start(cdc::subscribe_options opts) {
    auto rc = std::make_shared<da::reader_config>();
    rc->wal_dir = dir / "wal";
    rc->writer = writer;
    rc->consumer = consumer;
    rc->opts = std::move(opts);
    rc->start_lsn = 1;
    rc->on_finish = [this](const error& e) { finished = e; };
    reader = da::spawn_subscription_reader(sys, rc);
    caf::actor_cast<caf::abstract_actor*>(reader)->attach_functor([this] { reader_gone = true; });
    caf::anon_send(consumer, da::watch_atom::value, da::reader_control_actor{reader});
    sched.run();
  }
  void tail(uint64_t lsn) {
    caf::anon_send(reader, da::tail_atom::value, lsn);
    sched.run();
  }
  void ack(uint32_t batches) {
    caf::anon_send(consumer, t_ack_atom::value, batches);
    sched.run();
  }
  // The LSNs of the row changes of committed transactions in [from, to] (txn_len layout).
  static std::vector<uint64_t> changes(uint64_t from, uint64_t to, std::vector<uint64_t> rolled_back = {}) {
    std::vector<uint64_t> out;
    for (uint64_t l = from; l <= to; ++l) {
      uint64_t t = (l - 1) / txn_len, pos = (l - 1) % txn_len;
      if (pos == 0 || pos == txn_len - 1) continue;
      if (std::find(rolled_back.begin(), rolled_back.end(), t) != rolled_back.end()) continue;
      out.push_back(l);
    }
    return out;
  }
};

cdc::subscribe_options window(uint32_t max_buffer, uint32_t batch) {
  cdc::subscribe_options o;
  o.max_buffer_size = max_buffer;
  o.batch_size = batch;
  return o;
}

}  // namespace

TEST_CASE("reader: never more than max_buffer_size entries unacknowledged; each ack returns its credit",
          "[actors][reader]") {
  reader_fixture f(10);  // 100 row changes
  f.start(window(25, 10));
  REQUIRE(f.listeners->size() == 1);  // it registered with the writer
  CHECK(f.p->lsns.empty());           // nothing before the first tail notification
  f.tail(10 * txn_len);
  // The window fills: 10 + 10 + 5, then it waits for credit.
  CHECK(f.p->batch_sizes == std::vector<uint32_t>{10, 10, 5});
  CHECK(f.p->unacked_entries == 25);
  // Acknowledging one batch of 10 gives back exactly 10 entries of credit.
  f.ack(1);
  CHECK(f.p->unacked_entries == 25);
  CHECK(f.p->lsns.size() == 35);
  // A slow consumer acknowledging one batch at a time drains the whole range.
  for (int i = 0; i < 100 && f.p->lsns.size() < 100; ++i) f.ack(1);
  f.ack(100);
  CHECK(f.p->max_unacked == 25);
  CHECK(f.p->lsns == reader_fixture::changes(1, 10 * txn_len));
  CHECK(f.p->unacked_entries == 0);
  CHECK(f.p->decode_ok);
  CHECK_FALSE(f.finished);  // it follows the tail: still running
  CHECK_FALSE(f.reader_gone);
}

TEST_CASE("reader: a tail notification lets it deliver exactly the committed entries up to it",
          "[actors][reader]") {
  reader_fixture f(5, {2});  // the third transaction rolls back
  auto o = window(1000, 1000);
  o.include_transaction_control = true;
  f.start(o);
  f.tail(2 * txn_len);  // two whole transactions
  REQUIRE_FALSE(f.p->lsns.empty());
  CHECK(f.p->lsns.front() == 1);
  CHECK(f.p->lsns.back() == 2 * txn_len);  // up to the second COMMIT, nothing after
  CHECK(f.p->lsns.size() == 2 * txn_len);
  // A tail inside the fourth transaction: the third (rolled back) is skipped whole, the
  // fourth is undecided: nothing is delivered.
  f.tail(3 * txn_len + 5);
  CHECK(f.p->lsns.size() == 2 * txn_len);
  // The fourth commits below the new tail: exactly it.
  f.tail(4 * txn_len);
  CHECK(f.p->lsns.size() == 3 * txn_len);
  CHECK(f.p->lsns.back() == 4 * txn_len);
  CHECK(f.p->lsns[2 * txn_len] == 3 * txn_len + 1);  // the fourth's BEGIN follows the second's COMMIT
  // A tail that goes back (an old notification) changes nothing.
  f.tail(txn_len);
  CHECK(f.p->lsns.size() == 3 * txn_len);
  f.tail(5 * txn_len);
  CHECK(f.p->lsns.size() == 4 * txn_len);
  CHECK(f.p->max_unacked == 4 * txn_len);  // window 1000: nobody acked, all still in flight
}

TEST_CASE("reader: paused it sends nothing (acks still count); resumed it goes on", "[actors][reader]") {
  reader_fixture f(10);
  f.start(window(25, 10));
  caf::anon_send(f.reader, da::pause_atom::value);
  f.tail(10 * txn_len);
  CHECK(f.p->lsns.empty());
  caf::anon_send(f.reader, da::resume_atom::value);
  f.sched.run();
  CHECK(f.p->lsns.size() == 25);
  // Paused with batches in flight: their acks are taken, but no new batch goes out.
  caf::anon_send(f.reader, da::pause_atom::value);
  f.ack(3);
  CHECK(f.p->unacked_entries == 0);
  CHECK(f.p->lsns.size() == 25);
  caf::anon_send(f.reader, da::resume_atom::value);
  f.sched.run();
  CHECK(f.p->lsns.size() == 50);
  CHECK(f.p->lsns == reader_fixture::changes(1, 5 * txn_len));
  CHECK(f.p->max_unacked == 25);
}

TEST_CASE("reader: a consumer that dies ends it with SUBSCRIPTION_FAILED at the first unacknowledged LSN",
          "[actors][reader]") {
  reader_fixture f(10);
  f.start(window(25, 10));
  f.tail(10 * txn_len);
  REQUIRE(f.p->unacked.size() == 3);
  f.ack(1);  // the first batch is acknowledged, the rest is not
  uint64_t first_unacked = f.p->unacked.front().first;
  CHECK(first_unacked == f.p->lsns[10]);
  caf::anon_send_exit(f.consumer, caf::exit_reason::kill);
  f.sched.run();
  REQUIRE(f.finished);
  CHECK(f.finished->code() == ec::subscription_failed);
  CHECK(f.finished->lsn == first_unacked);
  CHECK_THAT(f.finished->message(), Catch::Contains(std::to_string(first_unacked)));
  CHECK(f.reader_gone);  // it quit: nothing waits on the dead consumer
}

TEST_CASE("reader: a consumer that answers a batch with an error ends it at that batch's first LSN",
          "[actors][reader]") {
  reader_fixture f(10);
  f.start(window(10, 10));
  f.tail(10 * txn_len);
  REQUIRE(f.p->unacked.size() == 1);
  caf::anon_send(f.consumer, t_fail_atom::value);
  f.ack(1);  // the next batch is answered with IO_ERROR
  uint64_t failed_first = f.p->lsns[10];
  REQUIRE(f.finished);
  CHECK(f.finished->code() == ec::subscription_failed);
  CHECK(f.finished->lsn == failed_first);
  CHECK_THAT(f.finished->message(), Catch::Contains("the test consumer refuses"));
  // The consumer (alive) hears the same ending, whole.
  REQUIRE(f.p->end);
  CHECK(f.p->end->code == ec::subscription_failed);
  CHECK(f.p->end->lsn == failed_first);
  CHECK(f.reader_gone);
}

TEST_CASE("reader: the writer stopping ends it with CLOSED; stop_at_tail ends it with NONE", "[actors][reader]") {
  SECTION("writer stops") {
    reader_fixture f(2);
    f.start(window(100, 100));
    f.tail(2 * txn_len);
    caf::anon_send_exit(f.writer, caf::exit_reason::user_shutdown);
    f.sched.run();
    REQUIRE(f.finished);
    CHECK(f.finished->code() == ec::closed);
    REQUIRE(f.p->end);
    CHECK(f.p->end->code == ec::closed);
    CHECK(f.reader_gone);
  }
  SECTION("stop_at_tail") {
    reader_fixture f(2);
    auto o = window(100, 100);
    o.stop_at_tail = true;
    f.start(o);
    f.tail(2 * txn_len);
    CHECK_FALSE(f.finished);  // delivered, not yet acknowledged
    f.ack(1);
    REQUIRE(f.finished);
    CHECK_FALSE(*f.finished);
    REQUIRE(f.p->end);
    CHECK(f.p->end->code == ec::none);
    CHECK(f.p->lsns == reader_fixture::changes(1, 2 * txn_len));
    CHECK(f.reader_gone);
  }
}
