// The slot manager's typed protocol (actors/protocol.hpp): replies are slot_info /
// slot_listing / nothing, and failures are caf::errors in the dosql category whose code and
// message come back whole through from_caf (no msgpack [code, message] strings).
#include <catch2/catch.hpp>

#include <caf/all.hpp>

#include "actors/errors.hpp"
#include "actors/protocol.hpp"
#include "actors/slot_manager.hpp"
#include "test_util.hpp"
#include "wal/file.hpp"

using namespace dosql;
namespace da = dosql::actors;

namespace {

struct config : caf::actor_system_config {
  config() { da::register_protocol(*this); }
};

template <class T, class... Ts>
result<T> ask(caf::actor_system& sys, const da::slot_manager_actor& m, Ts&&... xs) {
  caf::scoped_actor self{sys};
  result<T> out = error(ec::io_error, "no answer");
  self->request(m, std::chrono::seconds(30), std::forward<Ts>(xs)...)
      .receive([&](T& r) { out = std::move(r); },
               [&](caf::error& e) {
                 CHECK(e.category() == da::error_category);  // a dosql error, not a string
                 out = da::from_caf(e);
               });
  return out;
}

error ask_void(caf::actor_system& sys, const da::slot_manager_actor& m, auto&&... xs) {
  caf::scoped_actor self{sys};
  error out(ec::io_error, "no answer");
  self->request(m, std::chrono::seconds(30), xs...).receive([&] { out = {}; }, [&](caf::error& e) { out = da::from_caf(e); });
  return out;
}

}  // namespace

TEST_CASE("slot manager: typed replies, dosql errors as caf::errors", "[actors][slots]") {
  test::temp_dir d;
  {
    auto log = test::open_log(d / "wal");
    test::append_n(*log, 1, 10);
  }
  config cfg;
  caf::actor_system sys{cfg};
  da::slot_host host;
  host.dir = d.path();
  host.wal_dir = d / "wal";
  host.durable_lsn = [] { return uint64_t{10}; };
  host.active_segment = [] { return wal::log::active_usage{}; };
  host.apply_retention = [] { return result<wal::compact_report>(wal::compact_report{}); };
  cdc::slot_config sc;
  sc.check_interval = std::chrono::milliseconds(0);  // no timer: the test asks
  auto m = da::spawn_slot_manager(sys, host, sc);

  cdc::slot_filter f;
  f.tables = {"users"};
  f.operations = {op_type::insert, op_type::del};
  auto s = ask<cdc::slot_info>(sys, m, da::slot_create_atom::value, std::string("s1"), uint64_t{4}, f);
  REQUIRE(s);
  CHECK(s->name == "s1");
  CHECK(s->acked_lsn == 4);
  CHECK(s->filter.tables == f.tables);
  CHECK(s->filter.operations == f.operations);

  auto dup = ask<cdc::slot_info>(sys, m, da::slot_create_atom::value, std::string("s1"), uint64_t{4}, f);
  REQUIRE_FALSE(dup);
  CHECK(dup.err().code() == ec::slot_exists);
  CHECK_THAT(dup.err().message(), Catch::Contains("'s1'"));

  auto beyond = ask<cdc::slot_info>(sys, m, da::slot_ack_atom::value, std::string("s1"), uint64_t{11});
  REQUIRE_FALSE(beyond);
  CHECK(beyond.err().code() == ec::invalid_argument);
  CHECK_THAT(beyond.err().message(), Catch::Contains("11"));

  auto acked = ask<cdc::slot_info>(sys, m, da::slot_ack_atom::value, std::string("s1"), uint64_t{7});
  REQUIRE(acked);
  CHECK(acked->acked_lsn == 7);

  auto got = ask<cdc::slot_info>(sys, m, caf::get_atom::value, std::string("s1"));
  REQUIRE(got);
  CHECK(got->acked_lsn == 7);
  auto missing = ask<cdc::slot_info>(sys, m, caf::get_atom::value, std::string("nope"));
  REQUIRE_FALSE(missing);
  CHECK(missing.err().code() == ec::slot_not_found);

  // A damaged slot file: the listing still has the good slot and names the damaged one.
  test::write_file(d / "slots/bad.slot", "garbage");
  auto m2 = da::spawn_slot_manager(sys, host, sc);
  auto list = ask<da::slot_listing>(sys, m2, da::slot_list_atom::value);
  REQUIRE(list);
  REQUIRE(list->slots.size() == 1);
  CHECK(list->slots[0].name == "s1");
  auto problem = da::from_caf(list->problem);
  CHECK(problem.code() == ec::decode_error);
  CHECK_THAT(problem.message(), Catch::Contains("bad.slot"));

  CHECK_FALSE(ask_void(sys, m2, da::slot_drop_atom::value, std::string("s1")));
  CHECK(ask_void(sys, m2, da::slot_drop_atom::value, std::string("s1")).code() == ec::slot_not_found);
  CHECK_FALSE(ask_void(sys, m2, da::slot_drop_atom::value, std::string("bad")));
  CHECK_FALSE(ask_void(sys, m2, da::slot_check_atom::value));
  auto empty = ask<da::slot_listing>(sys, m2, da::slot_list_atom::value);
  REQUIRE(empty);
  CHECK(empty->slots.empty());
  CHECK_FALSE(empty->problem);

  caf::anon_send_exit(m, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(m2, caf::exit_reason::user_shutdown);
}
