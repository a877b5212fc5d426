// The consumer example of <dosql/consumer.hpp>, written against the public headers only, run on
// a real database: it compiles as documented, counts every change, acknowledges each batch
// (credit returns: more entries than the window get through) and hears the end.
#include <catch2/catch.hpp>

#include <caf/all.hpp>

#include <chrono>
#include <future>

#include <dosql/dosql.hpp>
#include "runtime/support.hpp"

using namespace dosql;
using namespace std::chrono_literals;

namespace {

namespace cdc = dosql::cdc;
struct counter_state {
  uint64_t changes = 0;
  std::vector<dosql::entry_view> views;
};
cdc::consumer_actor::behavior_type counter(cdc::consumer_actor::stateful_pointer<counter_state> self,
                                           std::shared_ptr<std::promise<std::pair<uint64_t, error>>> done) {
  return {
      [=](cdc::batch_atom, const cdc::batch& b) -> caf::result<uint64_t> {
        if (auto e = cdc::decode_batch(b, self->state.views)) return cdc::to_caf(e);
        self->state.changes += self->state.views.size();  // views point into b.records
        return b.last_lsn;                                 // the ack
      },
      [=](cdc::end_atom, const cdc::subscription_end& end) {
        done->set_value({self->state.changes, end.to_error()});
        self->quit();
      },
      [=](cdc::heartbeat_atom, uint64_t) {},
      [=](cdc::watch_atom, const cdc::reader_control_actor& reader) { self->monitor(reader); },
  };
}

}  // namespace

TEST_CASE("the documented consumer actor counts every change and hears the end", "[actors][consumer]") {
  test::db_fixture f;
  test::must(f.db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
  for (int i = 0; i < 50; ++i) test::must(f.db->exec("INSERT INTO t(v) VALUES('x')"));
  auto done = std::make_shared<std::promise<std::pair<uint64_t, error>>>();
  auto outcome = done->get_future();
  auto c = f.rt.system().spawn(counter, done);
  auto handle = cdc::create_cdc(f.db);
  cdc::subscribe_options opts;
  opts.stop_at_tail = true;
  opts.max_buffer_size = 8;  // fewer than the changes: only acks let them all through
  opts.batch_size = 3;
  auto sub = test::must(cdc::subscribe_actor(handle, c, opts));
  caf::anon_send(c, cdc::watch_atom::value, sub.reader());
  REQUIRE(outcome.wait_for(30s) == std::future_status::ready);  // (a hang guard, not a timing)
  auto [changes, err] = outcome.get();
  CHECK(changes == 51);  // the CREATE TABLE's SCHEMA entry and the 50 inserts
  CHECK_FALSE(err);
  // status() as the consumer acknowledged: everything, up to the last insert, nothing in flight.
  auto st = sub.status();
  CHECK(st.entries_processed == 51);
  CHECK(st.current_lsn == f.db->last_lsn() - 1);  // (the last COMMIT is not delivered)
  CHECK(st.buffered_entries == 0);
  CHECK(st.lag_entries == 0);
  CHECK(st.last_entry_at > 0);
}
