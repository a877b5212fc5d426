// The Order aggregate (the guide's OrderAggregate, with all five events and their rules) and the
// command handler that loads an order, runs a command and appends its events.
//
// Lifecycle: (none) --OrderCreated--> pending --OrderConfirmed--> confirmed --OrderShipped--> shipped
//            pending/confirmed --OrderCancelled--> cancelled; OrderItemAdded only while pending.
// Every refused command is a rule_violation (or invalid_input for malformed arguments) whose
// message names the order, the command and the state that refuses it; nothing is written.
// Events (payloads keep the guide's field names):
//   OrderCreated   {customerId, items: [{productId, quantity, price}], shippingAddress}
//   OrderItemAdded {productId, quantity, price}
//   OrderConfirmed {}
//   OrderShipped   {trackingNumber, carrier, shippedAt}
//   OrderCancelled {reason}
#pragma once

#include <string>
#include <vector>

#include "event_store.hpp"

namespace es {

inline constexpr const char* order_type = "Order";

struct order_item {
  std::string product_id;
  int64_t quantity = 0;
  double price = 0;
  json to_json() const { return json{{"productId", product_id}, {"quantity", quantity}, {"price", price}}; }
};

enum class order_status : uint8_t { none, pending, confirmed, shipped, cancelled };
std::string_view to_string(order_status s) noexcept;

/// The state an order's events fold into (also its snapshot, as JSON).
struct order_state {
  std::string id;
  std::string customer_id;
  std::vector<order_item> items;
  order_status status = order_status::none;
  std::string shipping_address;
  std::string tracking_number, carrier, cancel_reason;
  int64_t shipped_at = 0, created_at = 0, updated_at = 0;
  int64_t version = 0;

  double total() const;
  json to_json() const;
  static result<order_state> from_json(const json& j);
  /// Folds one event in; an event that does not fit (wrong order, unknown type) is
  /// invalid_input naming it (a stream the rules never produce).
  error apply(const stored_event& e);
};

/// Rebuilds an order from what load() gave (snapshot, then the events after it).
result<order_state> fold(const std::string& id, const loaded_stream& s);

// ---- commands: each checks the rules against the current state and returns the events ------

/// Checks a line item (product id non-empty, quantity >= 1, price finite and >= 0).
error validate_item(const std::string& order_id, const order_item& it);
result<std::vector<new_event>> create_order(const order_state& s, const std::string& customer_id,
                                            const std::vector<order_item>& items, const std::string& shipping_address);
result<std::vector<new_event>> add_items(const order_state& s, const std::vector<order_item>& items);
result<std::vector<new_event>> confirm_order(const order_state& s);
result<std::vector<new_event>> ship_order(const order_state& s, const std::string& tracking_number, const std::string& carrier);
result<std::vector<new_event>> cancel_order(const order_state& s, const std::string& reason);

/// Runs commands against the store: load (snapshot + newer events), decide, append with the
/// loaded version as the expected one (a concurrent append makes it a conflict), and write a
/// snapshot with the append whenever the version crosses a multiple of `snapshot_every`.
class order_service {
 public:
  using decide_fn = std::function<result<std::vector<new_event>>(const order_state&)>;
  /// `store` must outlive this object. snapshot_every 0: no snapshots.
  explicit order_service(event_store& store, int64_t snapshot_every = 10) : store_(&store), every_(snapshot_every) {}
  result<order_state> load(const std::string& order_id);
  /// Loads the order, calls `decide` on its state, appends the events (with `meta` on each).
  /// `expected_version` >= 0: the caller's version, checked against the stored one (-1: the
  /// loaded one, so only a concurrent append conflicts).
  result<append_result> execute(const std::string& order_id, const decide_fn& decide, const metadata& meta = {},
                                int64_t expected_version = -1);
  event_store& store() { return *store_; }

 private:
  event_store* store_;
  int64_t every_;
};

}  // namespace es
