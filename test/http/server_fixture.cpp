#include "server_fixture.hpp"

#include "knflow/cache/workflow_cache.hpp"
#include "knflow/store/db.hpp"
#include "knflow/store/run_store.hpp"

#include <boost/asio/post.hpp>

#include <future>

namespace knflow::test {

ServerFixture::ServerFixture(http::ServerSettings settings, bool load)
    : api_(ioc_.get_executor(), metrics_, api::ApiSettings{}) {
  api_.register_routes(router_);
  settings.listen = {boost::asio::ip::make_address("127.0.0.1"), 0};
  server_ = std::make_unique<http::Server>(ioc_.get_executor(), router_,
                                           http::TokenSet::from_tokens({kToken}), &metrics_,
                                           settings, &connections_);
  connections_.start();
  port_ = server_->start().port();
  for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { ioc_.run(); });
  if (load) load_cache();
}

void ServerFixture::load_cache() {
  std::promise<void> loaded;
  boost::asio::post(api_.writer(), [&] {
    db_ = std::make_unique<store::Db>(dir_.path() / "knflow.db");
    api_.attach(std::make_unique<cache::WorkflowCache>(*db_, &metrics_),
                std::make_unique<store::RunStore>(*db_));
    loaded.set_value();
  });
  loaded.get_future().get();
}

ServerFixture::~ServerFixture() {
  std::promise<void> stopped;
  server_->stop([&] { stopped.set_value(); });
  stopped.get_future().get();
  std::promise<void> closed;
  boost::asio::post(api_.writer(), [&] {
    api_.detach();
    db_.reset();
    closed.set_value();
  });
  closed.get_future().get();
  work_.reset();
  ioc_.stop();
  for (auto& t : threads_) t.join();
  connections_.stop();
}

Reply ServerFixture::call(const std::string& method, const std::string& target,
                          const std::string& body, Headers headers) const {
  bool has_auth = false;
  for (const auto& [k, v] : headers) has_auth |= k == "Authorization";
  if (!has_auth) headers.emplace_back("Authorization", std::string("Bearer ") + kToken);
  if (!body.empty()) {
    bool has_type = false;
    for (const auto& [k, v] : headers) has_type |= k == "Content-Type";
    if (!has_type) headers.emplace_back("Content-Type", "application/json");
  }
  return request(port_, method, target, body, headers);
}

}  // namespace knflow::test
