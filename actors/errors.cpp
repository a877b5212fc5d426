#include "actors/errors.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>

namespace dosql::actors {

caf::error to_caf(const error& e) {
  if (!e) return caf::error{};
  return caf::error(static_cast<uint8_t>(e.code()), error_category, caf::make_message(e.message(), e.lsn, e.oldest_lsn));
}

error from_caf(const caf::error& e, std::string_view what) {
  if (!e) return {};
  if (e.category() == error_category) {
    auto& ctx = e.context();
    error out(static_cast<ec>(e.code()),
              ctx.match_elements<std::string, uint64_t, uint64_t>() ? ctx.get_as<std::string>(0) : std::string());
    if (ctx.match_elements<std::string, uint64_t, uint64_t>()) {
      out.lsn = ctx.get_as<uint64_t>(1);
      out.oldest_lsn = ctx.get_as<uint64_t>(2);
    }
    return out;
  }
  std::string msg(what);
  if (!msg.empty()) msg += ": ";
  msg += caf::to_string(e);
  bool gone = e.category() == caf::atom("system") &&
              (e == caf::sec::request_receiver_down || e == caf::sec::invalid_argument /* dead handle */);
  return error(gone ? ec::closed : ec::io_error, std::move(msg));
}

void register_error_category(caf::actor_system_config& cfg) {
  cfg.add_error_category(error_category, [](uint8_t code, caf::atom_value, const caf::message& ctx) -> std::string {
    std::string s(to_string(static_cast<ec>(code)));
    if (ctx.match_elements<std::string, uint64_t, uint64_t>()) {
      s += ": ";
      s += ctx.get_as<std::string>(0);
    }
    return s;
  });
}

}  // namespace dosql::actors
