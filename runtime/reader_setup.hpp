// (Internal) From subscribe options to a subscription reader's configuration: the start
// position (from_lsn, from_time, from_oldest), the LSN_NOT_FOUND check and the compiled
// filter. Shared by cdc_handle::subscribe and subscribe_actor; defined in runtime/cdc.cpp.
#pragma once

#include <memory>

#include <dosql/cdc.hpp>
#include <dosql/slots.hpp>

#include "actors/slot_manager.hpp"
#include "actors/subscription_reader.hpp"

namespace dosql::cdc {

/// The reader configuration for a subscription (start position, LSN_NOT_FOUND
/// check); shared by cdc_handle::subscribe and subscribe_actor. Defined in runtime/cdc.cpp.
/// Fills st.lag_entries / st.lag_ms after st.current_lsn as a slot's lag: the entries a consumer
/// with `selection`'s filter and row filters would still receive up to the durable end, and the age of the oldest commit
/// among them (the WAL is read: call it outside any lock). The one lag of every status().
void fill_lag(database& db, const subscribe_options& selection, subscription_status& st);

/// Every `where` expression compiles against its table's current columns: INVALID_ARGUMENT
/// naming the table and the expression otherwise (subscribe, create_slot).
error check_where(database& db, const std::map<std::string, std::string>& where);

result<std::shared_ptr<actors::reader_config>> make_reader_config(cdc_handle& cdc, subscribe_options opts);

/// The options of a subscription resuming after slot `s` (its filter, heartbeats on; `extra`'s
/// from_lsn counts when above the slot's); LSN_NOT_FOUND if the slot was invalidated. Defined
/// in runtime/slots.cpp; used by slot_manager::subscribe_from_slot and the remote service.
result<subscribe_options> slot_subscribe_options(const slot_info& s, subscribe_options extra);
/// The actor behind a slot_manager facade (the remote service shares the application's).
struct slot_manager_access {
  static actors::slot_manager_actor actor_of(slot_manager& m);
};

}  // namespace dosql::cdc
