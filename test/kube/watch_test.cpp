// The watch stream decoder, the reflector's decisions and the informer's store: pure logic fed
// with events, checked against the actions client-go would take.

#include "knflow/kube/watch.hpp"
#include "knflow/kube/client.hpp"
#include "knflow/kube/reflector.hpp"

#include "support/catch.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace {

namespace json = boost::json;
using knflow::kube::Backoff;
using knflow::kube::BackoffSettings;
using knflow::kube::Delta;
using knflow::kube::Error;
using knflow::kube::ErrorKind;
using knflow::kube::EventType;
using knflow::kube::ReflectorLogic;
using knflow::kube::ReflectorStep;
using knflow::kube::SteadyClock;
using knflow::kube::Store;
using knflow::kube::WatchDecoder;
using knflow::kube::WatchEvent;
using Action = ReflectorStep::Action;
using namespace std::chrono_literals;

json::object cm(const std::string& ns, const std::string& name, const std::string& rv) {
  return json::parse(R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"namespace":")" + ns +
                     R"(","name":")" + name + R"(","resourceVersion":")" + rv +
                     R"("},"data":{"k":"v"}})")
      .as_object();
}

std::string event_line(const std::string& type, const json::object& object) {
  return R"({"type":")" + type + R"(","object":)" + json::serialize(object) + "}\n";
}

const std::string kStream =
    event_line("ADDED", cm("ns", "a", "10")) + event_line("MODIFIED", cm("ns", "a", "11")) +
    R"({"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"15"}}})"
    "\n" +
    event_line("DELETED", cm("ns", "a", "16")) +
    R"js({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 5 (16)","reason":"Expired","code":410}})js"
    "\n";

std::vector<WatchEvent> drain(WatchDecoder& d) {
  std::vector<WatchEvent> out;
  while (auto e = d.next()) out.push_back(std::move(*e));
  return out;
}

void check_stream(const std::vector<WatchEvent>& events) {
  REQUIRE(events.size() == 5);
  CHECK(events[0].type == EventType::added);
  CHECK(knflow::kube::resource_version_of(events[0].object) == "10");
  CHECK(events[1].type == EventType::modified);
  CHECK(knflow::kube::resource_version_of(events[1].object) == "11");
  CHECK(events[2].type == EventType::bookmark);
  CHECK(knflow::kube::resource_version_of(events[2].object) == "15");
  CHECK(events[3].type == EventType::deleted);
  CHECK(events[4].type == EventType::error);
  auto error = knflow::kube::watch_error(events[4], "GET /api/v1/configmaps");
  CHECK(error.is_gone());
  CHECK(error.reason == "Expired");
  CHECK(error.message.find("too old resource version") != std::string::npos);
}

SteadyClock::time_point at(std::chrono::milliseconds ms) { return SteadyClock::time_point{} + ms; }

Error api_error(unsigned code, std::string reason = {}) {
  Error e;
  e.kind = ErrorKind::api;
  e.code = code;
  e.reason = std::move(reason);
  return e;
}

Error connection_error() { return knflow::kube::make_error(ErrorKind::connection, "refused"); }

}  // namespace

TEST_CASE("watch events decode whole, whatever the boundaries of the pieces", "[kube][watch]") {
  SECTION("all at once") {
    WatchDecoder d;
    REQUIRE(d.feed(kStream));
    check_stream(drain(d));
    CHECK_FALSE(d.partial());
  }
  SECTION("split at every byte boundary into two pieces") {
    for (std::size_t cut = 0; cut <= kStream.size(); ++cut) {
      INFO("cut at " << cut);
      WatchDecoder d;
      std::vector<WatchEvent> events;
      REQUIRE(d.feed(std::string_view(kStream).substr(0, cut)));
      for (auto& e : drain(d)) events.push_back(std::move(e));
      REQUIRE(d.feed(std::string_view(kStream).substr(cut)));
      for (auto& e : drain(d)) events.push_back(std::move(e));
      check_stream(events);
    }
  }
  SECTION("one byte at a time") {
    WatchDecoder d;
    std::vector<WatchEvent> events;
    for (char c : kStream) {
      REQUIRE(d.feed(std::string_view(&c, 1)));
      for (auto& e : drain(d)) events.push_back(std::move(e));
    }
    check_stream(events);
  }
  SECTION("no newlines between events, or extra whitespace") {
    WatchDecoder d;
    REQUIRE(d.feed(R"({"type":"ADDED","object":{"metadata":{"resourceVersion":"1"}}}{"type":)"));
    CHECK(d.partial());
    REQUIRE(d.feed(" \"ADDED\",\"object\":{}}\r\n\n  "));
    CHECK_FALSE(d.partial());
    CHECK(drain(d).size() == 2);
  }
}

TEST_CASE("undecodable watch streams are errors", "[kube][watch]") {
  struct Case {
    std::string name;
    std::string bytes;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"not JSON", "{\"type\": nope}\n", "not valid JSON"},
      {"not an object", "[1]\n", "not a JSON object"},
      {"no type", "{\"object\":{}}\n", "has no type"},
      {"unknown type", "{\"type\":\"RENAMED\",\"object\":{}}\n", "unknown type \"RENAMED\""},
      {"no object", "{\"type\":\"ADDED\"}\n", "has no object"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    WatchDecoder d;
    auto r = d.feed(c.bytes);
    REQUIRE_FALSE(r);
    CHECK(r.error().kind == ErrorKind::decode);
    CHECK(r.error().message.find(c.message) != std::string::npos);
    CHECK_FALSE(d.feed("{}"));  // unusable after a failure
  }
  SECTION("an event over the size limit, fed in pieces") {
    WatchDecoder d(100);
    REQUIRE(d.feed(R"({"type":"ADDED","object":{"data":")"));
    auto r = d.feed(std::string(200, 'x'));
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("larger than 100 bytes") != std::string::npos);
  }
}

TEST_CASE("backoff doubles from 800 ms to 30 s with jitter and resets after a quiet spell",
          "[kube][reflector]") {
  Backoff b;  // client-go's defaults
  CHECK(b.next(at(0ms), 0.0) == 800ms);
  CHECK(b.next(at(1s), 0.0) == 1600ms);
  CHECK(b.next(at(2s), 0.5) == 4800ms);  // 3.2 s × 1.5
  CHECK(b.next(at(3s), 0.0) == 6400ms);
  CHECK(b.next(at(4s), 0.0) == 12800ms);
  CHECK(b.next(at(5s), 0.0) == 25600ms);
  CHECK(b.next(at(6s), 0.0) == 30s);
  CHECK(b.next(at(7s), 0.99) == 30s);  // capped, jitter included
  // Two minutes without trouble: start over.
  CHECK(b.next(at(7s + 120s), 0.0) == 800ms);
  CHECK(b.next(at(7s + 121s), 0.0) == 1600ms);

  Backoff small(BackoffSettings{.initial = 10ms, .max = 40ms, .reset_after = 1s, .jitter = 0.0});
  CHECK(small.next(at(0ms), 0.9) == 10ms);
  CHECK(small.next(at(1ms), 0.9) == 20ms);
  CHECK(small.next(at(2ms), 0.9) == 40ms);
  CHECK(small.next(at(3ms), 0.9) == 40ms);
  small.reset();
  CHECK(small.next(at(4ms), 0.9) == 10ms);
}

TEST_CASE("the reflector lists, watches from the list's version and follows events",
          "[kube][reflector]") {
  ReflectorLogic r;
  CHECK(r.start() == ReflectorStep{Action::list, 0ms, ""});
  CHECK(r.listed("100") == ReflectorStep{Action::watch, 0ms, "100"});

  SECTION("events and bookmarks move the resourceVersion; a normal end watches again from it") {
    r.observed("101");
    r.observed("150");  // a bookmark
    CHECK(r.resource_version() == "150");
    r.observed("");  // an event without a version changes nothing
    CHECK(r.resource_version() == "150");
    CHECK(r.watch_ended(std::nullopt, 3, 300s, at(300s), 0.5) ==
          ReflectorStep{Action::watch, 0ms, "150"});
  }
  SECTION("410 Gone as an ERROR event or as the watch's answer relists at once") {
    r.observed("120");
    auto step = r.watch_ended(api_error(410, "Expired"), 1, 5s, at(5s), 0.5);
    CHECK(step == ReflectorStep{Action::list, 0ms, ""});
    CHECK(r.listed("500") == ReflectorStep{Action::watch, 0ms, "500"});
    r.observed("501");
    CHECK(r.watch_failed(api_error(410, "Gone"), at(10s), 0.0) ==
          ReflectorStep{Action::list, 0ms, ""});
    // Reason Expired with another code is the same thing.
    r.listed("600");
    r.observed("601");
    CHECK(r.watch_ended(api_error(500, "Expired"), 1, 1s, at(11s), 0.0).action == Action::list);
  }
  SECTION("a 410 before any watch made progress since the LIST backs off, not to loop") {
    auto step = r.watch_failed(api_error(410), at(1s), 0.0);
    CHECK(step.action == Action::list);
    CHECK(step.delay == 800ms);
    r.listed("700");
    auto at_once = r.watch_ended(api_error(410, "Expired"), 0, 10ms, at(2s), 0.0);
    CHECK(at_once.action == Action::list);
    CHECK(at_once.delay == 1600ms);
  }
  SECTION("a 410 after a quiet but healthy watch (a partition, then compaction) relists at once") {
    // The watch ran for a minute without events, broke, and could not be reopened for a while.
    CHECK(r.watch_ended(connection_error(), 0, 60s, at(60s), 0.0).action == Action::watch);
    CHECK(r.watch_failed(connection_error(), at(61s), 0.0).action == Action::watch);
    CHECK(r.watch_failed(api_error(410, "Expired"), at(63s), 0.0) ==
          ReflectorStep{Action::list, 0ms, ""});
  }
  SECTION("a broken connection watches again from the same version after a growing backoff") {
    r.observed("110");
    auto first = r.watch_ended(connection_error(), 1, 10s, at(10s), 0.0);
    CHECK(first == ReflectorStep{Action::watch, 800ms, "110"});
    auto second = r.watch_failed(connection_error(), at(11s), 0.0);
    CHECK(second == ReflectorStep{Action::watch, 1600ms, "110"});
    auto third = r.watch_failed(api_error(503), at(12s), 0.0);  // apiserver starting up
    CHECK(third == ReflectorStep{Action::watch, 3200ms, "110"});
    auto throttled = r.watch_failed(api_error(429), at(13s), 0.0);
    CHECK(throttled.action == Action::watch);
  }
  SECTION("a very short empty watch counts as a failure") {
    auto step = r.watch_ended(std::nullopt, 0, 10ms, at(1s), 0.0);
    CHECK(step == ReflectorStep{Action::watch, 800ms, "100"});
  }
  SECTION("other refusals and undecodable streams relist after a backoff") {
    auto forbidden = r.watch_failed(api_error(403, "Forbidden"), at(1s), 0.0);
    CHECK(forbidden == ReflectorStep{Action::list, 800ms, ""});
    auto garbage =
        r.watch_ended(knflow::kube::make_error(ErrorKind::decode, "x"), 2, 5s, at(2s), 0.0);
    CHECK(garbage.action == Action::list);
    CHECK(garbage.delay == 1600ms);
  }
  SECTION("a failed LIST is retried after a backoff") {
    auto step = r.list_failed(connection_error(), at(1s), 0.0);
    CHECK(step == ReflectorStep{Action::list, 800ms, ""});
  }
  SECTION("watch timeouts are spread between the minimum and twice it") {
    CHECK(r.watch_timeout_seconds(0.0) == 300);
    CHECK(r.watch_timeout_seconds(0.5) == 450);
    CHECK(r.watch_timeout_seconds(0.999) == 599);
    knflow::kube::ReflectorSettings settings;
    settings.min_watch_timeout = 2s;
    ReflectorLogic quick(settings);
    CHECK(quick.watch_timeout_seconds(0.0) == 2);
  }
}

TEST_CASE("the store gives back objects nested as deep as the watch decoder reads them",
          "[kube][store]") {
  // A Workflow's spec nests `do` lists, `set` objects and schemas: deeper than Boost.JSON's
  // default of 32 levels.
  auto object = cm("ns", "deep", "1");
  boost::json::value deep = 1;
  for (std::size_t i = 0; i + 8 < knflow::kube::kMaxObjectDepth; ++i) {
    deep = boost::json::object{{"v", std::move(deep)}};
  }
  object["data"] = deep;
  Store store;
  store.replace({object});
  auto got = store.get("ns/deep");
  REQUIRE(got);
  CHECK(got->at("data") == deep);
}

TEST_CASE("the store: watch events and a relist's synthetic deletes", "[kube][store]") {
  Store store;
  auto initial = store.replace({cm("ns", "a", "1"), cm("ns", "b", "2"), cm("other", "a", "3")});
  REQUIRE(initial.size() == 3);
  for (const auto& d : initial) CHECK(d.type == Delta::Type::added);
  CHECK(store.size() == 3);
  REQUIRE(store.get("ns/a"));
  CHECK(knflow::kube::resource_version_of(*store.get("ns/a")) == "1");
  CHECK(store.get("other/a"));
  CHECK_FALSE(store.get("a"));

  auto modified = store.apply({EventType::modified, cm("ns", "a", "4")});
  REQUIRE(modified);
  CHECK(modified->type == Delta::Type::updated);
  CHECK(knflow::kube::resource_version_of(*modified->old_object) == "1");
  CHECK(knflow::kube::resource_version_of(*modified->object) == "4");

  auto added = store.apply({EventType::added, cm("ns", "c", "5")});
  REQUIRE(added);
  CHECK(added->type == Delta::Type::added);
  // MODIFIED for an unknown key is an add; ADDED for a known one an update.
  CHECK(store.apply({EventType::modified, cm("ns", "d", "6")})->type == Delta::Type::added);
  CHECK(store.apply({EventType::added, cm("ns", "d", "7")})->type == Delta::Type::updated);

  auto deleted = store.apply({EventType::deleted, cm("ns", "d", "8")});
  REQUIRE(deleted);
  CHECK(deleted->type == Delta::Type::deleted);
  CHECK_FALSE(deleted->final_state_unknown);
  CHECK(knflow::kube::resource_version_of(*deleted->object) == "8");
  CHECK(knflow::kube::resource_version_of(*deleted->old_object) == "7");
  CHECK_FALSE(store.get("ns/d"));

  CHECK_FALSE(store.apply({EventType::bookmark, cm("", "", "9")}));
  CHECK(store.size() == 4);

  // A relist after a 410: ns/b and ns/c are gone, ns/a changed, other/a unchanged, ns/e new.
  auto relist = store.replace({cm("ns", "a", "10"), cm("other", "a", "3"), cm("ns", "e", "11")});
  std::map<std::string, const Delta*> by_key;
  for (const auto& d : relist) by_key[knflow::kube::object_key(*d.object)] = &d;
  REQUIRE(relist.size() == 4);
  CHECK(by_key.at("ns/a")->type == Delta::Type::updated);
  CHECK(by_key.at("ns/e")->type == Delta::Type::added);
  CHECK(by_key.at("ns/b")->type == Delta::Type::deleted);
  CHECK(by_key.at("ns/b")->final_state_unknown);
  CHECK(knflow::kube::resource_version_of(*by_key.at("ns/b")->object) == "2");
  CHECK(by_key.at("ns/c")->type == Delta::Type::deleted);
  CHECK_FALSE(by_key.contains("other/a"));  // unchanged: no event
  CHECK(store.size() == 3);
  auto all = store.list();
  REQUIRE(all.size() == 3);
  CHECK(knflow::kube::object_key(*all[0]) == "ns/a");
  CHECK(knflow::kube::object_key(*all[2]) == "other/a");

  CHECK(knflow::kube::object_key(
            json::parse(R"({"metadata":{"name":"cluster-scoped"}})").as_object()) ==
        "cluster-scoped");
}

TEST_CASE("the store keeps text: every read is a fresh parse", "[kube][store]") {
  Store store;
  REQUIRE(store.replace({cm("ns", "a", "1")}).size() == 1);
  auto first = store.get("ns/a");
  auto second = store.get("ns/a");
  REQUIRE(first);
  REQUIRE(second);
  CHECK(first != second);  // not shared: a reader may keep its copy as long as it likes
  CHECK(*first == *second);
  CHECK(*first == cm("ns", "a", "1"));
  auto updated = store.apply({EventType::modified, cm("ns", "a", "2")});
  REQUIRE(updated);
  CHECK(*updated->old_object == cm("ns", "a", "1"));
  // Unchanged resourceVersion on a relist: no event.
  CHECK(store.replace({cm("ns", "a", "2")}).empty());
  CHECK(store.keys() == std::vector<std::string>{"ns/a"});
  CHECK(store.resource_version("ns/a") == "2");
  store.replace(
      {cm("ns", "a", "3"), cm("ns", "a-b", "4"), cm("ns", "ab", "5"), cm("ns2", "a", "6")});
  CHECK(store.keys_with_prefix("ns/a") == std::vector<std::string>{"ns/a", "ns/a-b", "ns/ab"});
  CHECK(store.keys_with_prefix("ns/b").empty());
  CHECK(store.keys_with_prefix("").size() == 4);
  CHECK(store.resource_version("ns/b") == std::nullopt);
  CHECK(knflow::kube::without_managed_fields(json::parse(R"({"metadata":{"name":"x",
      "managedFields":[{"manager":"m"}]}})")
                                                 .as_object()) ==
        json::parse(R"({"metadata":{"name":"x"}})").as_object());
}
