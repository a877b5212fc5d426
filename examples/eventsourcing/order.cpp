#include "order.hpp"

#include <cmath>

namespace es {

std::string_view to_string(order_status s) noexcept {
  switch (s) {
    case order_status::none: return "none";
    case order_status::pending: return "pending";
    case order_status::confirmed: return "confirmed";
    case order_status::shipped: return "shipped";
    case order_status::cancelled: return "cancelled";
  }
  return "unknown";
}

namespace {

std::optional<order_status> parse_status(const std::string& s) {
  for (auto st : {order_status::none, order_status::pending, order_status::confirmed, order_status::shipped, order_status::cancelled})
    if (to_string(st) == s) return st;
  return std::nullopt;
}

result<order_item> item_from_json(const json& j) {
  if (!j.is_object()) return error(errc::invalid_input, "an item is not a JSON object");
  auto p = j.find("productId"), q = j.find("quantity"), pr = j.find("price");
  if (p == j.end() || !p->is_string() || q == j.end() || !q->is_number_integer() || pr == j.end() || !pr->is_number())
    return error(errc::invalid_input, "an item needs productId (string), quantity (integer) and price (number): " + j.dump());
  return order_item{p->get<std::string>(), q->get<int64_t>(), pr->get<double>()};
}

template <class T>
bool get_field(const json& j, const char* name, T& out) {
  auto it = j.find(name);
  if (it == j.end()) return false;
  try {
    out = it->get<T>();
  } catch (const json::exception&) {
    return false;
  }
  return true;
}

std::string quoted(const std::string& id) { return "order " + id; }

}  // namespace

double order_state::total() const {
  double t = 0;
  for (const auto& i : items) t += i.price * static_cast<double>(i.quantity);
  return t;
}

json order_state::to_json() const {
  json items_j = json::array();
  for (const auto& i : items) items_j.push_back(i.to_json());
  json j{{"orderId", id},
         {"customerId", customer_id},
         {"status", std::string(to_string(status))},
         {"items", items_j},
         {"totalAmount", total()},
         {"shippingAddress", shipping_address},
         {"createdAt", created_at},
         {"updatedAt", updated_at},
         {"version", version}};
  if (!tracking_number.empty()) j["trackingNumber"] = tracking_number;
  if (!carrier.empty()) j["carrier"] = carrier;
  if (shipped_at) j["shippedAt"] = shipped_at;
  if (!cancel_reason.empty()) j["cancelReason"] = cancel_reason;
  return j;
}

result<order_state> order_state::from_json(const json& j) {
  order_state s;
  std::string status;
  if (!j.is_object() || !get_field(j, "orderId", s.id) || !get_field(j, "customerId", s.customer_id) ||
      !get_field(j, "status", status) || !get_field(j, "shippingAddress", s.shipping_address) ||
      !get_field(j, "createdAt", s.created_at) || !get_field(j, "updatedAt", s.updated_at) ||
      !get_field(j, "version", s.version) || !j.contains("items") || !j["items"].is_array())
    return error(errc::invalid_input, "order snapshot is malformed: " + j.dump());
  auto st = parse_status(status);
  if (!st) return error(errc::invalid_input, "order snapshot has an unknown status '" + status + "'");
  s.status = *st;
  for (const auto& i : j["items"]) {
    auto it = item_from_json(i);
    if (!it) return it.err();
    s.items.push_back(*it);
  }
  get_field(j, "trackingNumber", s.tracking_number);
  get_field(j, "carrier", s.carrier);
  get_field(j, "shippedAt", s.shipped_at);
  get_field(j, "cancelReason", s.cancel_reason);
  return s;
}

error order_state::apply(const stored_event& e) {
  auto bad = [&](const std::string& why) {
    return error(errc::invalid_input, quoted(e.aggregate_id) + ", version " + std::to_string(e.version) + " (" + e.event_type +
                                          "): " + why);
  };
  if (e.version != version + 1) return bad("expected version " + std::to_string(version + 1));
  const json& p = e.payload;
  if (e.event_type == "OrderCreated") {
    if (status != order_status::none) return bad("the order exists already");
    id = e.aggregate_id;
    if (!get_field(p, "customerId", customer_id) || !get_field(p, "shippingAddress", shipping_address) || !p.contains("items") ||
        !p["items"].is_array())
      return bad("malformed payload " + p.dump());
    items.clear();
    for (const auto& i : p["items"]) {
      auto it = item_from_json(i);
      if (!it) return bad(it.err().message());
      items.push_back(*it);
    }
    status = order_status::pending;
    created_at = e.timestamp;
  } else if (status == order_status::none) {
    return bad("the order was not created");
  } else if (e.event_type == "OrderItemAdded") {
    auto it = item_from_json(p);
    if (!it) return bad(it.err().message());
    items.push_back(*it);
  } else if (e.event_type == "OrderConfirmed") {
    status = order_status::confirmed;
  } else if (e.event_type == "OrderShipped") {
    if (!get_field(p, "trackingNumber", tracking_number) || !get_field(p, "carrier", carrier) || !get_field(p, "shippedAt", shipped_at))
      return bad("malformed payload " + p.dump());
    status = order_status::shipped;
  } else if (e.event_type == "OrderCancelled") {
    if (!get_field(p, "reason", cancel_reason)) return bad("malformed payload " + p.dump());
    status = order_status::cancelled;
  } else {
    return bad("unknown event type");
  }
  version = e.version;
  updated_at = e.timestamp;
  return {};
}

result<order_state> fold(const std::string& id, const loaded_stream& s) {
  order_state st;
  if (s.snap) {
    auto r = order_state::from_json(s.snap->state);
    if (!r) return r.err();
    st = std::move(*r);
    if (st.id != id || st.version != s.snap->version)
      return error(errc::invalid_input, "snapshot of " + quoted(id) + " does not match its row (version " +
                                            std::to_string(s.snap->version) + ")");
  }
  st.id = id;
  for (const auto& e : s.events)
    if (auto err = st.apply(e)) return err;
  return st;
}

// ---- commands -------------------------------------------------------------------------------

namespace {

error rule(const order_state& s, const std::string& what) { return error(errc::rule_violation, "cannot " + what + " " + quoted(s.id) + ": " + "it is " + std::string(to_string(s.status))); }

error must_exist(const order_state& s) {
  if (s.status == order_status::none) return error(errc::not_found, quoted(s.id) + " does not exist");
  return {};
}

error required(const order_state& s, const char* what, const std::string& v) {
  if (v.empty()) return error(errc::invalid_input, quoted(s.id) + ": " + what + " is empty");
  return {};
}

}  // namespace

error validate_item(const std::string& order_id, const order_item& it) {
  if (it.product_id.empty()) return error(errc::invalid_input, quoted(order_id) + ": an item has an empty productId");
  if (it.quantity < 1)
    return error(errc::invalid_input, quoted(order_id) + ": item " + it.product_id + " has quantity " + std::to_string(it.quantity) +
                                          " (at least 1)");
  if (!std::isfinite(it.price) || it.price < 0)
    return error(errc::invalid_input, quoted(order_id) + ": item " + it.product_id + " has price " + std::to_string(it.price) +
                                          " (a finite number >= 0)");
  return {};
}

result<std::vector<new_event>> create_order(const order_state& s, const std::string& customer_id,
                                            const std::vector<order_item>& items, const std::string& shipping_address) {
  if (s.status != order_status::none)
    return error(errc::rule_violation, "cannot create " + quoted(s.id) + ": it exists already (version " + std::to_string(s.version) + ")");
  if (auto e = required(s, "customerId", customer_id)) return e;
  if (auto e = required(s, "shippingAddress", shipping_address)) return e;
  if (items.empty()) return error(errc::invalid_input, quoted(s.id) + ": an order needs at least one item");
  json items_j = json::array();
  for (const auto& i : items) {
    if (auto e = validate_item(s.id, i)) return e;
    items_j.push_back(i.to_json());
  }
  return std::vector<new_event>{{"OrderCreated", json{{"customerId", customer_id}, {"items", items_j}, {"shippingAddress", shipping_address}}, {}}};
}

result<std::vector<new_event>> add_items(const order_state& s, const std::vector<order_item>& items) {
  if (auto e = must_exist(s)) return e;
  if (s.status != order_status::pending) return rule(s, "add items to");
  if (items.empty()) return error(errc::invalid_input, quoted(s.id) + ": no item to add");
  std::vector<new_event> out;
  for (const auto& i : items) {
    if (auto e = validate_item(s.id, i)) return e;
    out.push_back({"OrderItemAdded", i.to_json(), {}});
  }
  return out;
}

result<std::vector<new_event>> confirm_order(const order_state& s) {
  if (auto e = must_exist(s)) return e;
  if (s.status != order_status::pending) return rule(s, "confirm");
  return std::vector<new_event>{{"OrderConfirmed", json::object(), {}}};
}

result<std::vector<new_event>> ship_order(const order_state& s, const std::string& tracking_number, const std::string& carrier) {
  if (auto e = must_exist(s)) return e;
  if (s.status != order_status::confirmed)
    return s.status == order_status::pending
               ? error(errc::rule_violation, "cannot ship " + quoted(s.id) + ": it is pending (not confirmed)")
               : rule(s, "ship");
  if (auto e = required(s, "trackingNumber", tracking_number)) return e;
  if (auto e = required(s, "carrier", carrier)) return e;
  return std::vector<new_event>{
      {"OrderShipped", json{{"trackingNumber", tracking_number}, {"carrier", carrier}, {"shippedAt", dosql::now_ms()}}, {}}};
}

result<std::vector<new_event>> cancel_order(const order_state& s, const std::string& reason) {
  if (auto e = must_exist(s)) return e;
  if (s.status != order_status::pending && s.status != order_status::confirmed) return rule(s, "cancel");
  if (auto e = required(s, "reason", reason)) return e;
  return std::vector<new_event>{{"OrderCancelled", json{{"reason", reason}}, {}}};
}

// ---- the service ----------------------------------------------------------------------------

result<order_state> order_service::load(const std::string& order_id) {
  if (order_id.empty()) return error(errc::invalid_input, "the order id is empty");
  auto s = store_->load(order_id);
  if (!s) return s.err();
  return fold(order_id, *s);
}

result<append_result> order_service::execute(const std::string& order_id, const decide_fn& decide, const metadata& meta,
                                             int64_t expected_version) {
  auto st = load(order_id);
  if (!st) return st.err();
  if (expected_version >= 0 && expected_version != st->version)
    return error(errc::conflict, "concurrency conflict on aggregate " + order_id + ": expected version " +
                                     std::to_string(expected_version) + ", actual version " + std::to_string(st->version));
  auto evs = decide(*st);
  if (!evs) return evs.err();
  // The snapshot, when this append crosses a multiple of snapshot_every: the state with the
  // new events folded in, as they are stored (ids, versions, timestamps).
  int64_t every = every_;
  order_state base = *st;
  auto snap = [every, base](const std::vector<stored_event>& stored) -> result<std::optional<json>> {
    if (every <= 0 || stored.empty() || stored.back().version / every == base.version / every) return std::optional<json>{};
    order_state next = base;
    for (const auto& e : stored)
      if (auto err = next.apply(e)) return err;
    return std::optional<json>(next.to_json());
  };
  for (auto& e : *evs) e.meta = meta;
  return store_->append({order_id, order_type}, st->version, *evs, snap);
}

}  // namespace es
