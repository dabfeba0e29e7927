#include "knflow/controller/status.hpp"

#include "knflow/controller/apply_diff.hpp"
#include "knflow/kube/json_fields.hpp"
#include "knflow/model/codec.hpp"
#include "knflow/model/utf8.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>

namespace knflow::controller {
namespace {

namespace json = boost::json;

using kube::object_at;

std::optional<std::string> string_at(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end() || !it->value().is_string()) return std::nullopt;
  return std::string(it->value().get_string());
}

std::optional<std::int64_t> int_at(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) return std::nullopt;
  if (it->value().is_int64()) return it->value().get_int64();
  if (it->value().is_uint64()) return static_cast<std::int64_t>(it->value().get_uint64());
  return std::nullopt;
}

// The condition of `type` in an object's status.conditions.
const json::object* find_condition(const json::object* status, std::string_view type) {
  if (status == nullptr) return nullptr;
  auto it = status->find("conditions");
  if (it == status->end() || !it->value().is_array()) return nullptr;
  for (const auto& c : it->value().get_array()) {
    if (!c.is_object()) continue;
    if (string_at(c.get_object(), "type") == type) return &c.get_object();
  }
  return nullptr;
}

// A condition's message at most about 4 KiB, as validation's are: a child's own message (a
// Knative Service's, which anyone with access to its status writes) went in whole, twice (its
// KnativeReady and Ready), and one of 800 KB made every status write too large for etcd.
std::string bounded_message(const std::string& message) {
  constexpr std::size_t kMax = 4096;
  if (message.size() <= kMax) return message;
  return model::cut_noting_size(message, kMax - 64, "...");  // room for the note
}

model::Condition condition(const char* type, const Readiness& r, std::int64_t generation,
                           const StatusInput& input) {
  model::Condition c;
  c.type = type;
  c.status = r.status;
  c.reason = r.reason;
  c.message = bounded_message(r.message);
  c.observed_generation = generation;
  c.last_transition_time = input.now;
  if (const json::object* before = find_condition(input.previous, type)) {
    auto time = string_at(*before, "lastTransitionTime");
    if (string_at(*before, "status") == r.status && time && !time->empty()) {
      c.last_transition_time = *time;
    }
  }
  return c;
}

std::string describe(const Child& child, const Readiness& r) {
  std::string out = child.kind + " " + child.name;
  if (!r.reason.empty()) out += ": " + r.reason;
  if (!r.message.empty()) out += ": " + r.message;
  return out;
}

// Knative's readiness of every child, folded into KnativeReady: False when one is False (its
// reason surfaces), True when all are True, else Unknown naming what is still awaited.
Readiness knative_ready(const std::vector<Child>& children,
                        const std::map<std::string, Readiness>& by_child) {
  std::vector<std::string> waiting;
  const Child* failed = nullptr;
  const Readiness* failed_r = nullptr;
  for (const auto& child : children) {
    const Readiness& r = by_child.at(child.kind + "/" + child.name);
    if (r.status == "False" && failed == nullptr) {
      failed = &child;
      failed_r = &r;
    } else if (!r.ready()) {
      waiting.push_back(describe(child, r));
    }
  }
  Readiness out;
  if (failed != nullptr) {
    out.status = "False";
    out.reason = failed_r->reason.empty() ? "NotReady" : failed_r->reason;
    out.message = describe(*failed, *failed_r);
    return out;
  }
  if (waiting.empty()) {
    out.status = "True";
    out.reason = "Ready";
    out.message =
        std::to_string(children.size()) +
        (children.size() == 1 ? " Knative object is ready" : " Knative objects are ready");
    return out;
  }
  out.status = "Unknown";
  out.reason = "Pending";
  out.message = "waiting for ";
  constexpr std::size_t kShown = 3;
  for (std::size_t i = 0; i < waiting.size() && i < kShown; ++i) {
    if (i > 0) out.message += "; ";
    out.message += waiting[i];
  }
  if (waiting.size() > kShown) {
    out.message += "; and " + std::to_string(waiting.size() - kShown) + " more";
  }
  return out;
}

}  // namespace

Readiness child_readiness(const json::object& object) {
  Readiness r;
  const json::object* meta = object_at(object, "metadata");
  const json::object* status = object_at(object, "status");
  const auto generation = meta ? int_at(*meta, "generation") : std::nullopt;
  const auto observed = status ? int_at(*status, "observedGeneration") : std::nullopt;
  if (!generation || !observed || *generation != *observed) {
    r.reason = "NotObserved";
    r.message = "generation " + (generation ? std::to_string(*generation) : std::string("?")) +
                " not observed yet (observedGeneration " +
                (observed ? std::to_string(*observed) : std::string("unset")) + ")";
    return r;
  }
  const json::object* ready = find_condition(status, "Ready");
  if (ready == nullptr) {
    r.reason = "NoReadyCondition";
    r.message = "no Ready condition yet";
    return r;
  }
  const auto s = string_at(*ready, "status").value_or("Unknown");
  r.status = (s == "True" || s == "False") ? s : "Unknown";
  r.reason = string_at(*ready, "reason").value_or("");
  r.message = string_at(*ready, "message").value_or("");
  return r;
}

model::WorkflowStatus compute_status(const StatusInput& input) {
  model::WorkflowStatus status;
  status.observed_generation = input.generation;
  if (input.invalid) {
    Readiness valid = *input.invalid;
    valid.status = "False";
    Readiness knative{"Unknown", "NotApplied",
                      "the spec is not valid for cluster mode; nothing "
                      "was applied for this generation"};
    status.conditions.push_back(condition(kConditionValid, valid, input.generation, input));
    status.conditions.push_back(
        condition(kConditionKnativeReady, knative, input.generation, input));
    status.conditions.push_back(condition(kConditionReady, valid, input.generation, input));
    // The last valid generation's objects stay as they are (nothing is applied or pruned), and
    // so does what they serve: the address and the functions' URLs. They were dropped, and the
    // Workflow showed no address while its Sequence went on receiving events.
    if (input.previous != nullptr) {
      if (const json::object* address = object_at(*input.previous, "address")) {
        if (auto url = string_at(*address, "url"); url && !url->empty()) status.address_url = url;
      }
      if (const auto* functions = input.previous->if_contains("functions");
          functions != nullptr && functions->is_array()) {
        for (const auto& f : functions->get_array()) {
          if (!f.is_object()) continue;
          model::FunctionStatus fs;
          fs.name = string_at(f.get_object(), "name").value_or("");
          fs.url = string_at(f.get_object(), "url");
          const auto* ready = f.get_object().if_contains("ready");
          fs.ready = ready != nullptr && ready->is_bool() && ready->get_bool();
          if (!fs.name.empty()) status.functions.push_back(std::move(fs));
        }
      }
    }
    return status;
  }

  std::map<std::string, Readiness> by_child;
  std::map<std::string, const Child*> by_name;  // kind/name
  for (const auto& child : input.children) {
    const std::string key = child.kind + "/" + child.name;
    by_name[key] = &child;
    if (child.observed) {
      by_child[key] = child_readiness(*child.observed);
    } else {
      by_child[key] = Readiness{"Unknown", "NotCreated", "not created yet"};
    }
  }

  Readiness knative =
      input.apply_failed ? *input.apply_failed : knative_ready(input.children, by_child);
  if (input.apply_failed) knative.status = "False";
  const Readiness valid{"True", "Valid", "the spec is valid and runs in cluster mode"};
  status.conditions.push_back(condition(kConditionValid, valid, input.generation, input));
  status.conditions.push_back(condition(kConditionKnativeReady, knative, input.generation, input));
  status.conditions.push_back(condition(kConditionReady, knative, input.generation, input));

  if (auto it = by_name.find("Sequence/" + input.entry_sequence);
      it != by_name.end() && it->second->observed) {
    if (const json::object* s = object_at(*it->second->observed, "status")) {
      if (const json::object* address = object_at(*s, "address")) {
        if (auto url = string_at(*address, "url"); url && !url->empty()) status.address_url = url;
      }
    }
  }

  for (const auto& f : input.functions) {
    model::FunctionStatus fs;
    fs.name = f.name;
    if (!f.service.empty()) {
      auto it = by_name.find("Service/" + f.service);
      if (it != by_name.end() && it->second->observed) {
        if (const json::object* s = object_at(*it->second->observed, "status")) {
          if (auto url = string_at(*s, "url"); url && !url->empty()) fs.url = url;
        }
        fs.ready = by_child["Service/" + f.service].ready();
      }
    } else {
      fs.url = f.url;
      fs.ready = true;  // an endpoint that exists already; knflow does not manage it
    }
    status.functions.push_back(std::move(fs));
  }
  return status;
}

json::object status_json(const model::WorkflowStatus& status) {
  json::value v = model::encode_status(status);
  return v.is_object() ? std::move(v.get_object()) : json::object{};
}

namespace {

// An array of objects as a map keyed by one of their fields; nullopt when it is not one.
std::optional<std::map<std::string, const json::value*>> keyed(const json::value* array,
                                                               std::string_view key) {
  std::map<std::string, const json::value*> out;
  if (array == nullptr) return out;
  if (!array->is_array()) return std::nullopt;
  for (const auto& element : array->get_array()) {
    if (!element.is_object()) return std::nullopt;
    auto k = string_at(element.get_object(), key);
    if (!k || !out.emplace(*k, &element).second) return std::nullopt;
  }
  return out;
}

const json::value* field(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  return it == o.end() ? nullptr : &it->value();
}

}  // namespace

bool same_status(const json::object& a, const json::object& b) {
  for (const auto& [list, key] : {std::pair<const char*, const char*>{"conditions", "type"},
                                  std::pair<const char*, const char*>{"functions", "name"}}) {
    auto x = keyed(field(a, list), key);
    auto y = keyed(field(b, list), key);
    if (!x || !y || x->size() != y->size()) return false;
    for (const auto& [k, v] : *x) {
      auto it = y->find(k);
      if (it == y->end() || !json_equal(*v, *it->second)) return false;
    }
  }
  std::size_t others_a = 0;
  for (const auto& kv : a) {
    if (kv.key() == "conditions" || kv.key() == "functions") continue;
    ++others_a;
    const json::value* other = field(b, kv.key());
    if (other == nullptr || !json_equal(kv.value(), *other)) return false;
  }
  std::size_t others_b = 0;
  for (const auto& kv : b) {
    if (kv.key() != "conditions" && kv.key() != "functions") ++others_b;
  }
  return others_a == others_b;
}

std::string errors_message(const model::Errors& errors, std::size_t max_bytes) {
  std::string out = std::to_string(errors.size()) + (errors.size() == 1 ? " error: " : " errors: ");
  for (std::size_t i = 0; i < errors.size(); ++i) {
    std::string item =
        std::string(model::pointer_label(errors[i].pointer)) + ": " + errors[i].message;
    if (i > 0) item = "; " + item;
    if (out.size() + item.size() > max_bytes) {
      out += "; and " + std::to_string(errors.size() - i) + " more";
      break;
    }
    out += item;
  }
  return out;
}

std::string now_rfc3339() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

}  // namespace knflow::controller
