// dosql::error as a CAF error category (actors/errors.hpp): code, message and LSNs cross an actor
// boundary intact, render like error::to_string(), and CAF's own errors map to the codes a
// caller expects.
#include <catch2/catch.hpp>

#include <caf/all.hpp>

#include "actors/errors.hpp"
#include <dosql/database.hpp>

using namespace dosql;

TEST_CASE("dosql errors cross actors whole; CAF's own become CLOSED or IO_ERROR", "[actors][errors]") {
  error e(ec::lsn_not_found, "lsn 5 was compacted away");
  e.lsn = 5;
  e.oldest_lsn = 100;
  auto c = actors::to_caf(e);
  CHECK(c.category() == actors::error_category);
  auto back = actors::from_caf(c);
  CHECK(back.code() == ec::lsn_not_found);
  CHECK(back.message() == e.message());
  CHECK(back.lsn == 5);
  CHECK(back.oldest_lsn == 100);
  CHECK_FALSE(actors::to_caf(error{}));
  CHECK_FALSE(actors::from_caf(caf::error{}));

  runtime rt;  // registers the category's renderer
  auto& sys = rt.system();
  CHECK(sys.render(c) == "LSN_NOT_FOUND: lsn 5 was compacted away");
  // Through a real request and reply.
  // (Spawned with an argument: for a function without any, CAF 0.17 binds a null argument
  // tuple, which UBSan reports.)
  auto replier = sys.spawn([](caf::event_based_actor*, error what) -> caf::behavior {
    return {[what](int) -> caf::result<int> { return actors::to_caf(what); }};
  }, e);
  caf::scoped_actor self{sys};
  error got;
  self->request(replier, std::chrono::seconds(10), 1).receive([](int) {}, [&](caf::error& x) { got = actors::from_caf(x); });
  CHECK(got.code() == ec::lsn_not_found);
  CHECK(got.lsn == 5);
  CHECK(got.oldest_lsn == 100);
  CHECK(got.message() == e.message());
  // A receiver that is gone: CLOSED, saying what was asked.
  self->send_exit(replier, caf::exit_reason::kill);
  self->wait_for(replier);
  error gone;
  self->request(replier, std::chrono::seconds(10), 1).receive([](int) {}, [&](caf::error& x) {
    gone = actors::from_caf(x, "the replier");
  });
  CHECK(gone.code() == ec::closed);
  CHECK(gone.message().rfind("the replier: ", 0) == 0);
  // A timeout (any other CAF error): IO_ERROR with CAF's words.
  auto silent = sys.spawn([](caf::event_based_actor*, int) -> caf::behavior {
    return {[](int) -> caf::result<int> { return caf::delegated<int>(); }};
  }, 0);
  error late;
  self->request(silent, std::chrono::milliseconds(1), 1).receive([](int) {}, [&](caf::error& x) {
    late = actors::from_caf(x, "the silent one");
  });
  CHECK(late.code() == ec::io_error);
  CHECK(late.message().find("timeout") != std::string::npos);
  self->send_exit(silent, caf::exit_reason::kill);
}
