// `knflow controller`: the cluster controller alone, for tests and for trying it out without the
// daemon (docs/controller.md). `knflow serve` will own a Controller the same way.

#include "commands.hpp"

#include "knflow/asio/run_loop.hpp"
#include "knflow/controller/controller.hpp"
#include "knflow/engine/jq_worker_pool.hpp"
#include "knflow/http/server.hpp"
#include "knflow/kube/client.hpp"
#include "knflow/kube/config.hpp"
#include "knflow/log/log.hpp"
#include "knflow/metrics/metrics.hpp"
#include "knflow/model/json_text.hpp"
#include "knflow/model/validate.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/program_options.hpp>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <thread>

namespace knflow::cli {
namespace {

namespace asio = boost::asio;
namespace po = boost::program_options;
namespace json = boost::json;

std::chrono::milliseconds seconds_of(const po::variables_map& vm, const char* name) {
  return std::chrono::milliseconds(static_cast<long long>(vm[name].as<double>() * 1000.0));
}

}  // namespace

int controller(const std::vector<std::string>& args) {
  tune_allocator_for_daemon();
  po::options_description desc(
      "Usage: knflow controller [--kubeconfig FILE] [--context NAME] [options]\n\n"
      "Runs the cluster controller alone: watches Workflow custom resources and keeps their\n"
      "Knative objects and status true, on the cluster the kubeconfig names. With leader\n"
      "election (the default) only the replica holding the Lease reconciles. Serves Prometheus\n"
      "metrics and /healthz on --metrics-listen. SIGTERM or SIGINT stops it, releasing the\n"
      "Lease. See docs/controller.md.\n\nOptions");
  desc.add_options()("help,h", "print this help")(
      "kubeconfig", po::value<std::string>()->default_value(""),
      "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")(
      "context", po::value<std::string>()->default_value(""),
      "kubeconfig context (default: current-context)")(
      "namespace,n", po::value<std::string>()->default_value(""),
      "watch Workflows in this namespace only (default: every namespace)")(
      "workers", po::value<std::size_t>()->default_value(2), "reconcile workers")(
      "resync", po::value<double>()->default_value(600),
      "seconds between full resyncs of every Workflow (0: never)")(
      "identity", po::value<std::string>()->default_value(""),
      "holderIdentity in the Lease (default: hostname_<random>)")(
      "lease-namespace", po::value<std::string>()->default_value("default"),
      "namespace of the leader election Lease")(
      "lease-name", po::value<std::string>()->default_value("knflow-controller"),
      "name of the leader election Lease (default with --namespace NS: knflow-controller-NS)")(
      "channel-kind", po::value<std::string>()->default_value("InMemoryChannel"),
      "channel kind of every Sequence and Parallel (as knflow render's)")(
      "channel-api-version", po::value<std::string>()->default_value("messaging.knative.dev/v1"),
      "apiVersion of that channel kind")("lease-duration", po::value<double>()->default_value(15),
                                         "seconds")(
      "renew-deadline", po::value<double>()->default_value(10), "seconds")(
      "retry-period", po::value<double>()->default_value(2), "seconds")(
      "no-leader-election", po::bool_switch(), "reconcile at once, without a Lease")(
      "qps", po::value<double>()->default_value(20), "client rate limit: requests per second")(
      "burst", po::value<int>()->default_value(30), "client rate limit: burst")(
      "metrics-listen", po::value<std::string>()->default_value("127.0.0.1:0"),
      "HOST:PORT for /metrics and /healthz (port 0: any free port, logged)")(
      "threads", po::value<unsigned>()->default_value(2), "threads running the event loop")(
      "expression-timeout", po::value<double>()->default_value(1),
      "seconds jq may take to compile one expression before validation refuses it")(
      "log-level", po::value<std::string>()->default_value("info"), "debug, info, warn or error")(
      "status-write-delay", po::value<double>()->default_value(0),
      "tests only: seconds to wait between reading a Workflow and writing its status");
  po::variables_map vm;
  if (auto exit_code = parse_command_line(desc, args, vm, "controller")) return *exit_code;
  log::Level level;
  if (!log::parse_level(vm["log-level"].as<std::string>(), level)) {
    std::cerr << "knflow controller: --log-level must be debug, info, warn or error\n";
    return kExitUsage;
  }
  log::set_level(level);

  if (!check_seconds_options(vm,
                             {"resync", "lease-duration", "renew-deadline", "retry-period",
                              "status-write-delay", "expression-timeout"},
                             "controller")) {
    return kExitUsage;
  }
  if (const double qps = vm["qps"].as<double>(); !std::isfinite(qps) || qps < 0) {
    std::cerr << "knflow controller: --qps must be a number from 0, got " << qps << "\n";
    return kExitUsage;
  }
  controller::ControllerSettings settings;
  settings.workers = std::max<std::size_t>(1, vm["workers"].as<std::size_t>());
  settings.resync = seconds_of(vm, "resync");
  settings.watch_namespace = vm["namespace"].as<std::string>();
  settings.leader_election = !vm["no-leader-election"].as<bool>();
  settings.election.identity = vm["identity"].as<std::string>();
  settings.election.lease_namespace = vm["lease-namespace"].as<std::string>();
  settings.election.lease_name = lease_name(vm["lease-name"], settings.watch_namespace);
  settings.channel_template = {vm["channel-api-version"].as<std::string>(),
                               vm["channel-kind"].as<std::string>()};
  settings.election.lease_duration = seconds_of(vm, "lease-duration");
  settings.election.renew_deadline = seconds_of(vm, "renew-deadline");
  settings.election.retry_period = seconds_of(vm, "retry-period");
  settings.status_write_delay = seconds_of(vm, "status-write-delay");
  if (!check_count_option(vm, "threads", kMaxThreads, "controller")) return kExitUsage;
  if (const double t = vm["expression-timeout"].as<double>(); !(t >= 0.1 && t <= 3600)) {
    std::cerr << "knflow controller: --expression-timeout must be from 0.1 to 3600 seconds "
                 "(compiling takes 10 to 20 ms of it)\n";
    return kExitUsage;
  }
  const auto& e = settings.election;
  if (settings.leader_election &&
      !(e.retry_period.count() > 0 && e.retry_period < e.renew_deadline &&
        e.renew_deadline < e.lease_duration)) {
    std::cerr << "knflow controller: leader election needs 0 < --retry-period < "
                 "--renew-deadline < --lease-duration\n";
    return kExitUsage;
  }
  if (!settings.watch_namespace.empty() && !model::is_dns1123_label(settings.watch_namespace)) {
    std::cerr << "knflow controller: --namespace \"" << settings.watch_namespace
              << "\" is not a valid namespace\n";
    return kExitUsage;
  }
  if (settings.channel_template.kind.empty() || settings.channel_template.api_version.empty()) {
    std::cerr << "knflow controller: --channel-kind and --channel-api-version must not be empty\n";
    return kExitUsage;
  }

  asio::ip::tcp::endpoint listen;
  {
    const std::string text = vm["metrics-listen"].as<std::string>();
    const auto colon = text.rfind(':');
    boost::system::error_code ec;
    asio::ip::address address;
    unsigned long port = 0;
    if (colon != std::string::npos) {
      std::string host = text.substr(0, colon);
      if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
      }
      address = asio::ip::make_address(host, ec);
      try {
        port = std::stoul(text.substr(colon + 1));
      } catch (const std::exception&) {
        port = 65536;
      }
    }
    if (colon == std::string::npos || ec || port > 65535) {
      std::cerr << "knflow controller: --metrics-listen must be HOST:PORT, not \"" << text
                << "\"\n";
      return kExitUsage;
    }
    listen = {address, static_cast<unsigned short>(port)};
  }

  kube::KubeconfigOptions kubeconfig{vm["kubeconfig"].as<std::string>(),
                                     vm["context"].as<std::string>()};
  auto config = kube::load_kubeconfig(kubeconfig);
  if (!config) {
    std::cerr << "knflow controller: " << config.error().message << "\n";
    return kExitUsage;
  }

  asio::io_context ioc(static_cast<int>(vm["threads"].as<unsigned>()));
  kube::ClientSettings client_settings;
  client_settings.qps = vm["qps"].as<double>();
  client_settings.burst = vm["burst"].as<int>();
  auto client = kube::Client::create(ioc.get_executor(), *config, client_settings);
  if (!client) {
    std::cerr << "knflow controller: " << client.error().message << "\n";
    return kExitUsage;
  }

  metrics::Metrics metrics;
  settings.metrics = &metrics;
  // Validation compiles expressions on a jq worker process, as `knflow serve` does: off the
  // event loop, without $HOME/.jq, with jq's compile time bounded (docs/expressions.md). The
  // worker is this very binary: /proc/self/exe names it even if the file was moved.
  std::error_code self_ec;
  auto self_exe = std::filesystem::read_symlink("/proc/self/exe", self_ec);
  if (self_ec) self_exe = "/proc/self/exe";
  engine::JqWorkerPool validation_jq(ioc.get_executor(),
                                     engine::JqWorkerSettings{
                                         .executable = self_exe,
                                         .workers = 1,
                                         .time_limit = seconds_of(vm, "expression-timeout"),
                                     });
  settings.compile_expression = compile_on_worker(validation_jq);
  controller::Controller controller(ioc.get_executor(), **client, settings);

  http::Router router;
  router.add({"GET", "/metrics", http::Access::metrics,
              [&metrics](http::Request&) -> asio::awaitable<http::Response> {
                co_return http::make_response(200, "text/plain; version=0.0.4",
                                              metrics.serialize());
              },
              "Prometheus metrics"});
  router.add({"GET", "/healthz", http::Access::health,
              [&controller](http::Request&) -> asio::awaitable<http::Response> {
                const auto stats = controller.stats();
                json::object body{{"identity", controller.identity()},
                                  {"leader", controller.is_leader()},
                                  {"synced", controller.synced()},
                                  {"reconciles", stats.reconciles},
                                  {"applies", stats.applies},
                                  {"prunes", stats.prunes},
                                  {"statusWrites", stats.status_writes},
                                  {"conflicts", stats.conflicts}};
                co_return http::make_response(200, "application/json", model::json_text(body));
              },
              "controller state"});
  http::ServerSettings server_settings;
  server_settings.listen = listen;
  server_settings.anonymous_health = true;
  server_settings.anonymous_metrics = true;
  http::Server server(ioc.get_executor(), router, http::TokenSet{}, &metrics, server_settings);
  asio::ip::tcp::endpoint bound;
  try {
    bound = server.start();
  } catch (const boost::system::system_error& ex) {
    std::cerr << "knflow controller: cannot listen on " << vm["metrics-listen"].as<std::string>()
              << ": " << ex.code().message() << "\n";
    return kExitUsage;
  }
  const std::string address = bound.address().to_string() + ":" + std::to_string(bound.port());
  log::info("Started the controller",
            {{"identity", controller.identity()},
             {"cluster", (*client)->config().server},
             {"metrics", address},
             {"leaderElection", settings.leader_election ? "on" : "off"}});
  controller.start();

  bool stopping = false;
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int signal) {
    if (ec || stopping) return;
    stopping = true;
    log::info("Received signal, stopping", {{"signal", signal == SIGTERM ? "SIGTERM" : "SIGINT"}});
    controller.stop([&] {
      validation_jq.shutdown();
      server.stop([&] {
        (*client)->shutdown();
        ioc.stop();
      });
    });
  });

  std::vector<std::thread> pool;
  for (unsigned i = 1; i < vm["threads"].as<unsigned>(); ++i) {
    pool.emplace_back([&] { io::run(ioc, std::chrono::microseconds{0}, log::handler_failed); });
  }
  io::run(ioc, std::chrono::microseconds{0}, log::handler_failed);
  for (auto& t : pool) t.join();
  return kExitOk;
}

}  // namespace knflow::cli
